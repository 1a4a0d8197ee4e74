"""Feature groups: integer label maps that switch features on and off together.

Two readings of one kind of argument, on one id check (`_check_ids`: integer dtype, non-empty,
ids >= 0, the same messages everywhere): lime's image segments (superpixels: labels `0..n-1`
over an instance's leading axes, traced allowed with `num_segments`) by `check_segments`, and
Captum's `feature_mask` (ids broadcastable to the input, per example or shared, gaps allowed and
relabelled, concrete) by `as_feature_mask` per leaf and `as_feature_groups` over the leaves of
a pytree input (the ablation, permutation and Shapley methods' and the metrics' one parser).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax._checks import check_positive_int, is_concrete


def _check_ids(name: str, ids) -> None:
    """Integer dtype always; non-empty and every id >= 0 when `ids` is concrete."""
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name} must hold integer feature ids, got dtype {ids.dtype}")
    if is_concrete(ids):
        values = np.asarray(ids)
        if values.size == 0:
            raise ValueError(f"{name} is empty")
        if values.min() < 0:
            raise ValueError(f"{name} ids must be >= 0, got {values.min()}")


def check_segments(segments, num_segments, x):
    """`(labels, num_groups)`: an integer label map over `x`'s leading axes, labels `0..n-1`.

    Concrete labels are checked (`_check_ids`, and below `num_segments` when given, which
    defaults to the largest label + 1); traced labels need `num_segments`.
    """
    segments = jnp.asarray(segments)
    _check_ids("segments", segments)
    if segments.shape != x.shape[: segments.ndim]:
        raise ValueError(
            f"segments of shape {segments.shape} must match x {x.shape} or its leading axes"
        )
    if is_concrete(segments):
        labels = np.asarray(segments)
        if num_segments is None:
            num_segments = int(labels.max()) + 1
        elif labels.max() >= num_segments:
            raise ValueError(f"segments has label {labels.max()} but num_segments={num_segments}")
    elif num_segments is None:
        raise ValueError("num_segments is required when segments is traced (under jit)")
    return segments, check_positive_int("num_segments", num_segments)


def as_feature_mask(feature_mask, x, name: str = "feature_mask", *, shared: bool = False):
    """`(labels, num_groups)`: Captum's `feature_mask` for one input leaf `x` `[batch, ...]`.

    An integer array broadcastable to `x` (one mask for every example, or one per example with
    the batch as leading axis); None makes every scalar of an example its own feature. The ids
    need not be contiguous (Captum allows gaps): they are relabelled `0..num_groups-1` in
    increasing order. `labels` is a NumPy `[1 or batch, *x.shape[1:]]` int32 array (`shared`
    requires one mask for every example). The mask sets the number of model rows, so it must
    be concrete.
    """
    inner = x.shape[1:]
    if feature_mask is None:
        size = math.prod(inner)
        return np.arange(size, dtype=np.int32).reshape(1, *inner), size
    if not is_concrete(feature_mask):
        raise ValueError(
            f"{name} must be concrete (not traced under jit/vmap): it sets how many model rows "
            "are evaluated; close over it instead of passing it as a traced argument"
        )
    mask = np.asarray(feature_mask)
    _check_ids(name, mask)
    try:
        fits = np.broadcast_shapes(mask.shape, x.shape) == tuple(x.shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name} of shape {mask.shape} does not broadcast to the input of shape {x.shape} "
            f"(one mask {inner} or [1, ...] for every example, or [{x.shape[0]}, ...] per example)"
        )
    mask = mask.reshape((1,) * (x.ndim - mask.ndim) + mask.shape)
    per_example = mask.shape[0] != 1
    if per_example and shared:
        raise ValueError(
            f"{name} must be one mask for every example (leading axis 1 or none), got shape "
            f"{mask.shape}: the groups are permuted across the batch"
        )
    mask = np.broadcast_to(mask, (mask.shape[0], *inner))
    ids, labels = np.unique(mask, return_inverse=True)
    return labels.reshape(mask.shape).astype(np.int32), int(ids.size)


def as_feature_groups(feature_mask, x, *, shared: bool = False):
    """`(labels, num_groups)`: global group ids over the leaves of a pytree `x` (each leaf its
    own groups, numbered after the previous leaf's), each leaf's mask parsed by
    `as_feature_mask`; `feature_mask` is None, one mask (array `x`) or a pytree like `x`."""
    leaves, treedef = jax.tree.flatten(x)
    if feature_mask is None:
        masks = [None] * len(leaves)
    elif treedef.num_nodes == 1:
        masks = [feature_mask]
    else:
        if jax.tree.structure(feature_mask) != treedef:
            raise ValueError(
                f"feature_mask must be None or have the structure of x ({treedef}), got "
                f"{jax.tree.structure(feature_mask)}"
            )
        masks = jax.tree.leaves(feature_mask)
    labels, offset = [], 0
    for leaf, mask in zip(leaves, masks, strict=True):
        lab, count = as_feature_mask(mask, leaf, shared=shared)
        labels.append(lab + np.int32(offset))
        offset += count
    return jax.tree.unflatten(treedef, labels), offset
