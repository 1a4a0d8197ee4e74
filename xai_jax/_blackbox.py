"""Calling the black box: compiled and cached calls, output shapes, and the target output.

Shared by every method that evaluates a user's model on batches of rows.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from xai_jax import _chunks
from xai_jax._checks import is_concrete, is_traced


def check_output(name: str, out, num_rows: int, given, *, floating: bool = True) -> None:
    """Raise unless `out`, the shapes `name` returned for `num_rows` input rows (shapes
    `given`), is one array with one output row per input row, of floating dtype (`floating`:
    it is differentiated) or of real numbers. The one output check of every method."""
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise TypeError(
            f"{name} must return one array with one output row per input row, got {out} for "
            f"input of shape {given}"
        )
    if out.ndim == 0 or out.shape[0] != num_rows:
        got = "no batch axis" if out.ndim == 0 else f"{out.shape[0]} rows"
        raise ValueError(
            f"{name} must return one output row per input row: it returned shape {out.shape} "
            f"({got}) for {num_rows} input rows of shape {given}"
        )
    if floating and not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(
            f"{name} must return floating outputs (they are differentiated), got dtype "
            f"{out.dtype} (shape {out.shape}) for input of shape {given}"
        )
    real = np.issubdtype(out.dtype, np.number) or out.dtype == np.bool_
    if not real or jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must return real numbers, got dtype {out.dtype}")


def _shapes(x):
    leaves = jax.tree.leaves(x)
    if len(leaves) == 1 and jax.tree.structure(x).num_nodes == 1:
        return tuple(leaves[0].shape)
    return jax.tree.map(lambda leaf: tuple(leaf.shape), x)


def model_output(fn: Callable, x, kwargs: dict, name: str = "fn") -> jax.ShapeDtypeStruct:
    """`fn(x, **kwargs)`'s shape, checked: one floating array with one row per row of `x`."""
    out = shape_of(fn, x, kwargs)
    check_output(name, out, jax.tree.leaves(x)[0].shape[0], _shapes(x))
    return out


def rows_output(fn: Callable, x, kwargs: dict, name: str):
    """`fn(x, **kwargs)`'s shapes (any pytree: a layer), checked: one row per row of `x`."""
    out = shape_of(fn, x, kwargs)
    num_rows = jax.tree.leaves(x)[0].shape[0]
    leaves = jax.tree.leaves(out)
    if not leaves or any(leaf.ndim == 0 or leaf.shape[0] != num_rows for leaf in leaves):
        raise ValueError(
            f"{name} must return one output row per input row (every leaf): it returned "
            f"{_shapes(out) if leaves else out} for {num_rows} input rows of shape {_shapes(x)}"
        )
    return out


def selected(out: jax.Array, index: jax.Array | None) -> jax.Array:
    """The target output of each row: `out[r].ravel()[index[r]]`, `[rows]`."""
    flat = out.reshape(out.shape[0], -1)
    if index is None:
        return flat[:, 0]
    hit = jnp.arange(flat.shape[1], dtype=jnp.int32)[None] == index[:, None]
    return jnp.sum(jnp.where(hit, flat, jnp.zeros((), flat.dtype)), axis=1)


def mark_invalid(tree, valid):
    if valid is None:
        return tree
    return jax.tree.map(
        lambda v: jnp.where(valid.reshape(-1, *([1] * (v.ndim - 1))), v, jnp.nan), tree
    )


def call(fn: Callable, x, kwargs: dict):
    """`fn(x, **kwargs)`, compiled (and cached) when called eagerly."""
    static, arrays = _chunks.partition(fn)
    if is_traced((x, kwargs, arrays)):
        return fn(x, **kwargs)
    return _call_jit(static, arrays, x, kwargs)


@functools.partial(jax.jit, static_argnums=0)
def _call_jit(static, arrays: list, x, kwargs: dict):
    return _chunks.combine(static, arrays)(x, **kwargs)


def shape_of(fn: Callable, x, kwargs: dict):
    """`fn(x, **kwargs)`'s shapes, traced once per function and input shapes (jit's cache)."""
    static, arrays = _chunks.partition(fn)
    return _call_jit.eval_shape(static, arrays, x, kwargs)


# Raised when a function that is not written in JAX meets a tracer (NumPy conversion, a
# Python `if` on traced data): such a black box is called through `jax.pure_callback`.
_NOT_JAX = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


@dataclasses.dataclass(frozen=True)
class HostFunction:
    """A NumPy black box (a scikit-learn `predict_proba`) behind `jax.pure_callback`.

    Hashable (by the wrapped function), so compiled callers are cached across calls.
    """

    fn: Callable
    out_tail: tuple[int, ...]
    dtype: np.dtype
    batched: bool = True  # fn maps rows to rows; False: one point to one output (`out_tail`)

    def __call__(self, rows: jax.Array) -> jax.Array:
        lead = (rows.shape[0],) if self.batched else ()
        spec = jax.ShapeDtypeStruct((*lead, *self.out_tail), self.dtype)
        return jax.pure_callback(self._host, spec, rows, vmap_method="sequential")

    def _host(self, rows: ArrayLike) -> np.ndarray:  # a NumPy array, or a JAX one eagerly
        out = np.asarray(self.fn(np.asarray(rows)))
        expected = (rows.shape[0], *self.out_tail) if self.batched else self.out_tail
        if out.shape != expected:
            per = f"for {rows.shape[0]} rows" if self.batched else "for a point"
            raise ValueError(
                f"fn returned shape {out.shape} {per}; it returned {self.out_tail} "
                f"{'per row ' if self.batched else ''}before, so expected {expected}"
            )
        return out.astype(self.dtype)


def as_model(fn: Callable, x: jax.Array, num_rows: int) -> tuple[Callable, jax.ShapeDtypeStruct]:
    """`(model, out)`: `fn` ready to be called on `[num_rows, *x.shape[1:]]` rows inside `jit`.

    A JAX function is returned as it is; a function that fails on tracers (NumPy, scikit-learn)
    is probed once on two rows of `x` (zeros if `x` is traced) and wrapped in a `HostFunction`.
    Either way the output must have one row per input row, checked here with a clear error.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    rows = jax.ShapeDtypeStruct((num_rows, *x.shape[1:]), x.dtype)
    if not _fails_on_tracers(fn, rows):
        return fn, _checked(shape_of(fn, rows, {}), num_rows, rows.shape)
    probe = np.zeros((2, *x.shape[1:]), x.dtype)
    if is_concrete(x) and x.shape[0]:
        probe[:] = np.asarray(x)[np.minimum(np.arange(2), x.shape[0] - 1)]
    result = np.asarray(fn(probe))
    if not np.issubdtype(result.dtype, np.number) and result.dtype != np.bool_:
        raise TypeError(f"fn must return real numbers, got dtype {result.dtype}")
    _checked(jax.ShapeDtypeStruct(result.shape, result.dtype), 2, probe.shape)
    model = HostFunction(fn, result.shape[1:], np.dtype(x.dtype))
    out = jax.ShapeDtypeStruct((num_rows, *result.shape[1:]), x.dtype)
    return model, out


def as_point_model(fn: Callable, x: jax.Array) -> tuple[Callable, jax.ShapeDtypeStruct]:
    """`(model, out)`: `fn`, a function of one point shaped like `x`, ready to be `vmap`ped
    inside `jit`. A JAX function is returned as it is; one that fails on tracers (NumPy) is
    probed once at `x` (zeros if `x` is traced) and wrapped in a point-wise `HostFunction`."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    point = jax.ShapeDtypeStruct(x.shape, x.dtype)
    if not _fails_on_tracers(fn, point):
        return fn, shape_of(fn, point, {})
    probe = np.asarray(x) if is_concrete(x) else np.zeros(x.shape, x.dtype)
    result = np.asarray(fn(probe))
    if not np.issubdtype(result.dtype, np.number) and result.dtype != np.bool_:
        raise TypeError(f"fn must return real numbers, got dtype {result.dtype}")
    model = HostFunction(fn, result.shape, np.dtype(x.dtype), batched=False)
    return model, jax.ShapeDtypeStruct(result.shape, x.dtype)


def _fails_on_tracers(fn: Callable, x: jax.ShapeDtypeStruct) -> bool:
    """Whether `fn` is not written in JAX: tracing it on `x` fails as NumPy code does. The
    answer is cached (a failed trace is not), so a black box is traced once per input shape."""
    try:
        hash(fn)
    except TypeError:
        return _trace_fails(fn, x)
    return _trace_fails_cached(fn, x)


def _trace_fails(fn: Callable, x: jax.ShapeDtypeStruct) -> bool:
    try:
        shape_of(fn, x, {})
    except _NOT_JAX:
        return True
    return False


_trace_fails_cached = functools.lru_cache(maxsize=256)(_trace_fails)


def _checked(out, num_rows: int, given) -> jax.ShapeDtypeStruct:
    check_output("fn", out, num_rows, given, floating=False)
    return out
