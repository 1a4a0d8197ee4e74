"""Chunked evaluation, the one layer for it: a kernel over N rows (or steps) in chunks of C.

Every method that bounds its memory goes through here; none writes a padding loop or a
`lax.map` of its own. Two shapes of work:

- `run`: a sum. `kernel(config, c, operands)` computes chunk `c`'s contribution and
  `finish(config, total, operands)` turns the sum into the result (IG's path points, URV's
  directions).
- `map_rows`: independent rows. `kernel(config, rows_chunk)` maps `C` rows to `C` outputs and
  the chunks are stacked (LIME's instances, finite-difference pairs); `map_traced` is its
  schedule under a trace, for a kernel that is itself already traced (KernelSHAP's coalitions
  inside one chunk of instances).

The last chunk is padded by one helper, `gather_rows` (repeating the last row: valid data, so
padding cannot produce NaN), and cut off. Two schedules compute exactly the same sum or stack:

- Called eagerly (concrete operands, no enclosing trace): a host loop over one jitted step,
  `acc + kernel(c)`. Each chunk is a separate XLA call, so peak memory is one chunk's, and every
  operation runs in XLA's fastest layout. Dispatch is asynchronous: the loop does not wait, but
  every call has XLA:CPU's fixed cost (what that costs dense models: the README's chunking
  paragraph).
- Under a trace (the caller's `jit`, `grad`, `vmap`): a `lax.scan` over chunks, so the pure
  function stays jittable and memory stays bounded inside the caller's program.

Why not always `lax.scan`: on XLA:CPU (jaxlib 0.10) the gradient of a convolution inside a loop
body is emitted with a kernel layout the fast (Eigen) convolution does not take, and falls back
to a naive loop, several times slower than the same chunk called from a host loop. Dense layers
are unaffected. Users who call a method inside their own `jit` with a convolutional model and a
finite `internal_batch_size` get the `scan` schedule; the method docstrings say so.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import _cpu_options
from xai_jax._checks import check_positive_int, is_traced


def partition(tree) -> tuple[Any, list]:
    """`(static, arrays)`: a pytree split into its array leaves and a hashable rest.

    Lets callables that are pytrees holding arrays (`jax.tree_util.Partial`, equinox modules,
    the wrappers' bound models) go through `jit` with their arrays as arguments, not baked into
    the executable as constants; plain functions are static and compared by identity.
    """
    leaves, treedef = jax.tree.flatten(tree)
    is_array = tuple(isinstance(leaf, jax.Array | np.ndarray) for leaf in leaves)
    static = tuple(None if a else leaf for a, leaf in zip(is_array, leaves, strict=True))
    arrays = [leaf for a, leaf in zip(is_array, leaves, strict=True) if a]
    return (treedef, is_array, static), arrays


def combine(static, arrays: list):
    treedef, is_array, leaves = static
    arrays = iter(arrays)
    leaves = [next(arrays) if a else v for a, v in zip(is_array, leaves, strict=True)]
    return jax.tree.unflatten(treedef, leaves)


# Model rows per compiled chunk of a perturbation method: inputs and activations of a small
# dense model stay in the ~16-32 MB where buffers are still cheap on XLA:CPU (larger ones
# page-fault).
ROWS_PER_CHUNK = 2**15
# ... and for wide rows (images) at most about this many input elements per chunk (8 MB of
# float32), for the same reason.
ELEMENTS_PER_CHUNK = 2**21


def rows_per_chunk(num_rows: int, elements_per_row: int, batch_size: int | None) -> int:
    """Model rows per chunk for `map_rows`: `batch_size` when given (checked), else
    `ROWS_PER_CHUNK`, fewer for rows wider than `ELEMENTS_PER_CHUNK / ROWS_PER_CHUNK`."""
    if batch_size is not None:
        return check_positive_int("batch_size", batch_size)
    wide = ELEMENTS_PER_CHUNK // max(elements_per_row, 1)
    return max(1, min(num_rows, ROWS_PER_CHUNK, wide))


def instances_per_chunk(num_instances: int, rows_per_instance: int, batch_size: int | None) -> int:
    """Instances per chunk for `map_rows`: `batch_size` when given (checked), else as many as
    keep a chunk near `ROWS_PER_CHUNK` model rows (at least one)."""
    if batch_size is not None:
        return check_positive_int("batch_size", batch_size)
    return max(1, min(num_instances, ROWS_PER_CHUNK // rows_per_instance))


def run(kernel: Callable, finish: Callable, config, operands, like, num_chunks: int):
    """`finish(config, sum_c kernel(config, c, operands), operands)` over `num_chunks` chunks.

    `kernel` and `finish` are module-level functions and `config`'s non-array parts are
    hashable, so the compiled executables are cached across calls. `like` gives the sum's
    shapes and dtypes (a pytree of arrays or `jax.ShapeDtypeStruct`s): one chunk needs no zero;
    the host loop's is made in NumPy and travels with the first call (no eager dispatch); the
    `scan`'s is staged in the caller's trace (not a constant the size of the sum).
    """
    static, arrays = partition(config)
    if num_chunks == 1:  # at top level the second program too (`top_level`)
        return call_step(_whole, (kernel, finish, static, operands, arrays, None, 1))
    if not is_traced((operands, arrays)):
        acc = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), like)
        args = (kernel, static, np.int32(0), acc, operands, arrays)
        step, acc = top_level(_step, args)  # options decided once per loop, on chunk 0
        for c in range(1, num_chunks):
            acc = step(kernel, static, np.int32(c), acc, operands, arrays)
        return _finish(finish, static, acc, operands, arrays)
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), like)
    return _whole(kernel, finish, static, operands, arrays, init, num_chunks)


def call(f: Callable, config, operands):
    """`f(config, operands)`, compiled and cached as the chunks are."""
    static, arrays = partition(config)
    return _call(f, static, operands, arrays)


def shape_of(f: Callable, config, operands):
    """`f(config, operands)`'s shapes and dtypes, traced once per `f`, config and input shapes
    (the cache of `call`'s executable), so an eager method's second call traces nothing."""
    static, arrays = partition(config)
    return _call.eval_shape(f, static, operands, arrays)


def step_jit(*static_argnums: int) -> Callable:
    """`jax.jit` with these static arguments, for a step that `top_level` may run compiled
    the second way (`_cpu_options.jit`): that twin is made on first use."""

    def wrap(f: Callable) -> Callable:
        jitted = jax.jit(f, static_argnums=static_argnums)
        _TWINS[jitted] = functools.partial(_cpu_options.jit, f, static_argnums)
        return jitted

    return wrap


_TWINS: dict = {}


def top_level(jitted, args: tuple) -> tuple[Callable, Any]:
    """`(program, program(*args))` for a call outside every trace of a step made by `step_jit`:
    the step itself, or its twin (`_cpu_options.jit`) where `_cpu_options.choose` picks
    it (large convolutions on CPU, the same result). Loops call the program for their later
    chunks."""
    return _cpu_options.choose(jitted, lambda: _with_options(jitted), *args)


def call_step(jitted, args: tuple) -> Any:
    """`jitted(*args)` for a step made by `step_jit`: through `top_level` outside every trace,
    as it is inside one (a nested `jit` carries no compiler options)."""
    return jitted(*args) if is_traced(args) else top_level(jitted, args)[1]


@functools.cache
def _with_options(jitted) -> Callable:
    return _TWINS[jitted]()


@functools.partial(jax.jit, static_argnums=(0, 1))
def _call(f: Callable, static, operands, arrays):
    return f(combine(static, arrays), operands)


def _add(acc, part):
    return jax.tree.map(jnp.add, acc, part)


@step_jit(0, 1)
def _step(kernel: Callable, static, c: jax.Array, acc, operands, arrays):
    return _add(acc, kernel(combine(static, arrays), c, operands))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _finish(finish: Callable, static, total, operands, arrays):
    return finish(combine(static, arrays), total, operands)


@step_jit(0, 1, 2, 6)
def _whole(kernel: Callable, finish: Callable, static, operands, arrays, init, num_chunks: int):
    config = combine(static, arrays)
    if num_chunks == 1:
        total = kernel(config, jnp.int32(0), operands)
    else:

        def body(acc: Any, c: jax.Array):
            return _add(acc, kernel(config, c, operands)), None

        total, _ = jax.lax.scan(body, init, jnp.arange(num_chunks, dtype=jnp.int32))
    return finish(config, total, operands)


def map_rows(kernel: Callable, config, rows, num_rows: int, chunk: int):
    """`kernel(config, rows_chunk)` over chunks of `chunk` rows, concatenated: `[num_rows, ...]`.

    Every leaf of `rows` (a pytree, PRNG keys included) has `num_rows` as leading axis, and
    `kernel` maps `chunk` rows to outputs with `chunk` as leading axis. The last chunk is padded
    by repeating the last row (valid data, so padding cannot produce NaN) and cut off. Same two
    schedules as `run`: a host loop over one compiled chunk when eager, `lax.map` under a trace.
    No rows give outputs with no rows (the shapes and dtypes of a one-row chunk), and no call.
    """
    static, arrays = partition(config)
    if num_rows == 0:
        one = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct((1, *leaf.shape[1:]), leaf.dtype), rows
        )
        out = jax.eval_shape(lambda r, a: kernel(combine(static, a), r), one, arrays)
        return jax.tree.map(lambda s: jnp.zeros((0, *s.shape[1:]), s.dtype), out)
    chunk = min(chunk, num_rows)
    num_chunks = -(-num_rows // chunk)
    if num_chunks > 1 and not is_traced((rows, arrays)):
        step, first = top_level(_map_step, (kernel, static, chunk, np.int32(0), rows, arrays))
        rest = range(1, num_chunks)
        parts = [first, *(step(kernel, static, chunk, np.int32(c), rows, arrays) for c in rest)]
        return jax.tree.map(lambda *p: jnp.concatenate(p)[:num_rows], *parts)
    return _map_whole(kernel, static, chunk, rows, arrays)


def gather_rows(rows, chunk: int, c: jax.Array | np.integer | int):
    """Rows `[c * chunk, (c + 1) * chunk)` of every leaf, past the end repeating the last row.

    The one padding rule of the package: a padded row is a copy of real input, so it cannot
    produce NaN or call the model on data it never sees; callers cut the padding off.
    """
    num_rows = jax.tree.leaves(rows)[0].shape[0]
    index = jnp.minimum(c * chunk + jnp.arange(chunk, dtype=jnp.int32), num_rows - 1)
    return jax.tree.map(lambda leaf: leaf[index], rows)


@step_jit(0, 1, 2)
def _map_step(kernel: Callable, static, chunk: int, c: jax.Array, rows, arrays):
    return kernel(combine(static, arrays), gather_rows(rows, chunk, c))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _map_whole(kernel: Callable, static, chunk: int, rows, arrays):
    config = combine(static, arrays)
    return map_traced(lambda r: kernel(config, r), rows, chunk)


def map_traced(kernel: Callable, rows, chunk: int):
    """`kernel(rows_chunk)` over chunks of `chunk` rows inside a trace, stacked: `[num_rows, ...]`.

    `map_rows`' schedule under a trace, for callers already inside one (a kernel that chunks
    its own work further): one `lax.map` over the chunks (one compiled body, memory of one
    chunk), the last chunk padded by `gather_rows` and cut off; one chunk is a plain call.
    """
    num_rows = jax.tree.leaves(rows)[0].shape[0]
    if chunk >= num_rows:
        return kernel(rows)
    num_chunks = -(-num_rows // chunk)
    out = jax.lax.map(
        lambda c: kernel(gather_rows(rows, chunk, c)), jnp.arange(num_chunks, dtype=jnp.int32)
    )
    return jax.tree.map(lambda v: v.reshape(-1, *v.shape[2:])[:num_rows], out)
