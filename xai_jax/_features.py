"""Feature groups: integer label maps that switch features on and off together.

lime's image segments (superpixels) are parsed here; the feature masks of the ablation and
Shapley methods to come take the same form (Captum's `feature_mask`) and the same parser.
"""

import jax.numpy as jnp
import numpy as np

from xai_jax._checks import check_positive_int, is_concrete


def check_segments(segments, num_segments, x):
    """`(labels, num_groups)`: an integer label map over `x`'s leading axes, labels `0..n-1`.

    Concrete labels are checked (integer, non-empty, >= 0, below `num_segments` when given,
    which defaults to the largest label + 1); traced labels need `num_segments`.
    """
    segments = jnp.asarray(segments)
    if not jnp.issubdtype(segments.dtype, jnp.integer):
        raise TypeError(f"segments must be an integer label map, got dtype {segments.dtype}")
    if segments.shape != x.shape[: segments.ndim]:
        raise ValueError(
            f"segments of shape {segments.shape} must match x {x.shape} or its leading axes"
        )
    if is_concrete(segments):
        labels = np.asarray(segments)
        if labels.size == 0:
            raise ValueError("segments is empty")
        if labels.min() < 0:
            raise ValueError(f"segments labels must be >= 0, got {labels.min()}")
        if num_segments is None:
            num_segments = int(labels.max()) + 1
        elif labels.max() >= num_segments:
            raise ValueError(f"segments has label {labels.max()} but num_segments={num_segments}")
    elif num_segments is None:
        raise ValueError("num_segments is required when segments is traced (under jit)")
    return segments, check_positive_int("num_segments", num_segments)
