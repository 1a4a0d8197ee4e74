"""The data arguments every method takes, checked once at the boundary.

`x` (an array or a pytree of arrays with a leading batch axis), `baselines` (Captum's rules),
`background` rows, `forward_kwargs` (per-example keyword arrays), 2-D `[rows, features]`
inputs, per-feature vectors (`scale`, `mean`, `baseline`), and the `target` output index
(alibi's rules). Each checker raises a `ValueError`/`TypeError` that names the argument, and
returns the value in the form the methods compute with. Scalar options, keys and finiteness are
checked by `xai_jax._checks`; feature groups (segments, feature masks) by `xai_jax._features`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax._checks import as_float_array, check_finite, is_concrete


class Inputs(NamedTuple):
    x: Any  # pytree of float arrays with a common leading batch axis
    batch: int


def as_inputs(x, name: str = "x", *, finite: bool = True, allow_empty: bool = False) -> Inputs:
    """`x` as a pytree of floating arrays with one leading batch size (integers promoted)."""
    leaves, treedef = jax.tree.flatten(x)
    if not leaves:
        raise ValueError(f"{name} must be an array or a non-empty pytree of arrays")
    if treedef.num_nodes > 1 and any(isinstance(leaf, numbers.Number) for leaf in leaves):
        raise ValueError(
            f"{name} is a {type(x).__name__} holding Python numbers, which JAX reads as a pytree "
            f"of scalars without a batch axis: pass an array (e.g. jnp.asarray({name})) or a "
            "pytree of arrays, each with a leading batch axis"
        )
    leaves = [as_float_array(name, leaf, min_ndim=1, finite=finite) for leaf in leaves]
    sizes = {leaf.shape[0] for leaf in leaves}
    if len(sizes) != 1:
        shapes = [leaf.shape for leaf in leaves]
        raise ValueError(
            f"every leaf of {name} needs the same leading batch size, got shapes {shapes}"
        )
    batch = sizes.pop()
    if batch == 0 and not allow_empty:
        raise ValueError(f"{name} has an empty batch (leading axis of size 0)")
    return Inputs(jax.tree.unflatten(treedef, leaves), batch)


def as_baselines(baselines, x, name: str = "baselines", *, finite: bool = True, full: bool = True):
    """Baselines with the full shape of `x` (Captum's rules: scalar, `[1, ...]` or `x`'s shape).

    With `full=False` a scalar or a row stays one row `[1, ...]` (kernels that index the
    baseline of example `i` as row `0 if rows == 1 else i` need no `[batch, ...]` copy).
    """
    if baselines is None:
        if full:
            return jax.tree.map(jnp.zeros_like, x)
        baselines = 0.0
    treedef = jax.tree.structure(x)
    if jax.tree.structure(baselines) != treedef:
        if _is_scalar(baselines):
            baselines = jax.tree.unflatten(treedef, [baselines] * treedef.num_leaves)
        else:
            raise ValueError(
                f"{name} must be None, a scalar, or have the structure of x ({treedef}), "
                f"got {jax.tree.structure(baselines)}"
            )

    def one(b, leaf):
        b = as_float_array(name, b, finite=finite)
        if b.shape != () and b.shape not in ((1, *leaf.shape[1:]), leaf.shape):
            raise ValueError(
                f"{name} must be a scalar or of shape {(1, *leaf.shape[1:])} or {leaf.shape} "
                f"to match x, got shape {b.shape}"
            )
        if not full and b.shape != leaf.shape:
            if is_concrete(b) and b.ndim == 0:  # one host-built row: no eager device ops
                return jnp.asarray(np.full((1, *leaf.shape[1:]), b, leaf.dtype))
            return jnp.broadcast_to(b.astype(leaf.dtype), (1, *leaf.shape[1:]))
        return jnp.broadcast_to(b.astype(leaf.dtype), leaf.shape)

    return jax.tree.map(one, baselines, x)


def _is_scalar(value) -> bool:
    return isinstance(value, numbers.Number) or getattr(value, "shape", None) == ()


def as_background(background, x, name: str = "background"):
    """Rows shaped like `x`'s rows (same structure, any number >= 1 of them), in `x`'s dtype."""
    if jax.tree.structure(background) != jax.tree.structure(x):
        raise ValueError(
            f"{name} must have the structure of x ({jax.tree.structure(x)}), "
            f"got {jax.tree.structure(background)}"
        )
    background = jax.tree.map(lambda b: as_float_array(name, b, min_ndim=1), background)
    sizes = {b.shape[0] for b in jax.tree.leaves(background)}
    for b, leaf in zip(jax.tree.leaves(background), jax.tree.leaves(x), strict=True):
        if b.shape[1:] != leaf.shape[1:] or b.shape[0] == 0 or len(sizes) != 1:
            raise ValueError(
                f"{name} must be rows shaped like x's (one leading axis of the same size "
                f"for every leaf, at least one row): got {b.shape} for x's {leaf.shape}"
            )
    return jax.tree.map(lambda b, leaf: b.astype(leaf.dtype), background, x)


def as_forward_kwargs(forward_kwargs, batch: int) -> dict:
    """Per-example keyword arrays: a dict whose values have `batch` as leading axis."""
    if forward_kwargs is None:
        return {}
    if not isinstance(forward_kwargs, Mapping):
        raise TypeError(f"forward_kwargs must be a dict, got {type(forward_kwargs).__name__}")
    out = {}
    for name, value in forward_kwargs.items():
        value = jnp.asarray(value)
        if value.ndim == 0 or value.shape[0] != batch:
            raise ValueError(
                f"forward_kwargs[{name!r}] must have the batch size {batch} as leading axis, "
                f"got shape {value.shape}"
            )
        out[name] = value
    return out


def as_rows(name: str, x) -> jax.Array:
    """`x` as a floating `[rows, features]` array with at least one feature, or a ValueError
    naming it."""
    x = as_float_array(name, x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, features], got shape {x.shape}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature (column), got shape {x.shape}")
    return x


def as_feature_vector(name: str, value, x: jax.Array) -> jax.Array:
    """A scalar or one value per feature of the rows `x` `[n, d]`, as `[d]` in `x`'s dtype."""
    arr = (np if is_concrete(value) else jnp).asarray(value, x.dtype)
    if arr.ndim > 1 or arr.size not in (1, x.shape[1]):
        raise ValueError(
            f"{name} must be a scalar or one value per feature ({x.shape[1]},), got {arr.shape}"
        )
    check_finite(name, arr)
    return jnp.broadcast_to(arr, x.shape[1:])


def as_broadcast(name: str, value, x: jax.Array) -> jax.Array:
    """`value` in `x`'s dtype, broadcast to `x`'s shape (never enlarging it); finite."""
    arr = jnp.asarray(value, dtype=x.dtype)
    check_finite(name, arr)
    try:
        fits = jnp.broadcast_shapes(arr.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name} of shape {arr.shape} does not broadcast to x of shape {x.shape}")
    return jnp.broadcast_to(arr, x.shape)


class Target(NamedTuple):
    index: jax.Array | None  # flat index into each example's output, [batch] int32
    valid: jax.Array | None  # [batch] bool, only when the target was traced (cannot raise)


def as_target(target, out: jax.ShapeDtypeStruct, batch: int, *, device: bool = True) -> Target:
    """Flat per-example output index by alibi's rules, range-checked when concrete.

    `out` is the model's output shape for `batch` rows. None only for one value per example;
    an int or an int array `[batch]` for outputs `[batch, k]`; an int matrix `[batch, rank - 1]`
    for outputs of higher rank. A traced target cannot raise: `valid` marks its rows in range.
    With `device=False` a concrete target's index stays a NumPy array (a check only).
    """
    shape = tuple(out.shape[1:])
    size = math.prod(shape)
    if target is None:
        if size != 1:
            raise ValueError(
                f"target is required: the model returns {shape} values per example; pass an "
                "int, an int array [batch]"
                + (f", or an int matrix [batch, {len(shape)}]" if len(shape) > 1 else "")
            )
        return Target(None, None)
    if not shape:
        raise ValueError("target must be None: the model returns one value per example")
    concrete = is_concrete(target)
    xp = np if concrete else jnp  # concrete targets: checks and index on the host, no dispatch
    t = xp.asarray(target)
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"target must be integer, got dtype {t.dtype}")
    if len(shape) == 1:
        if t.shape not in ((), (batch,)):
            raise ValueError(f"target must be an int or of shape ({batch},), got {t.shape}")
        t = xp.broadcast_to(t, (batch,))[:, None]
    elif t.shape != (batch, len(shape)):
        raise ValueError(
            f"target must be an int matrix of shape ({batch}, {len(shape)}) for an output of "
            f"shape {out.shape}, got {t.shape}"
        )
    dims = np.asarray(shape)
    if concrete:
        bad = (t < 0) | (t >= dims)
        if bad.any():
            rows = np.nonzero(bad.any(axis=1))[0][:5]
            raise ValueError(
                f"target out of range for an output of shape {out.shape}: rows {rows.tolist()} "
                f"have {t[rows].tolist()} (valid: 0 <= target < {shape})"
            )
        valid = None
    else:  # cannot raise on traced data: the example's attribution becomes NaN instead
        valid = jnp.all((t >= 0) & (t < jnp.asarray(dims, t.dtype)[None]), axis=1)
    strides = np.cumprod((1, *shape[:0:-1]))[::-1]
    index = xp.sum(t.astype(np.int32) * strides.astype(np.int32)[None], axis=1, dtype=np.int32)
    return Target(jnp.asarray(index) if device else index, valid)
