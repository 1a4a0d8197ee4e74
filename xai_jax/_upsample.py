"""Nearest-neighbour upsampling with torch's index rule, for maps shown at the input's size.

`torch.nn.functional.interpolate(mode="nearest")` takes output index `d` of an axis from input
index `min(floor(d * scale), in - 1)` with `scale = in / out` computed in float32 (and `d // 2`
when `out == 2 * in`, the same numbers); Captum's `GuidedGradCam` and
`LayerAttribution.interpolate` upsample Grad-CAM maps this way. The indices are static (NumPy,
from the shapes), so the result is one gather per axis: jittable, vmappable, differentiable.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Shaped


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source index of every output index along one axis (torch's `nearest_idx`)."""
    if size_out == size_in:
        return np.arange(size_out)
    scale = np.float32(size_in) / np.float32(size_out)
    src = np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, size_in - 1)


def nearest(
    x: Shaped[Array, "..."], size: Sequence[int], axes: Sequence[int]
) -> Shaped[Array, "..."]:
    """`x` resized to `size` along `axes` (one size per axis) by torch's nearest rule."""
    if len(size) != len(axes):
        raise ValueError(f"size {tuple(size)} needs one entry per axis of {tuple(axes)}")
    for n, axis in zip(size, axes, strict=True):
        x = jnp.take(x, jnp.asarray(nearest_indices(x.shape[axis], int(n))), axis=axis)
    return x
