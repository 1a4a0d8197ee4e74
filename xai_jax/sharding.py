"""Explain a batch over a `jax.sharding.Mesh`: one device or many, one host or many.

Every explainer here treats the rows of its batch independently, so the batch axis is the axis
to split. `explain_sharded` places the rows on the mesh with a `NamedSharding` (batch axis over
the chosen mesh axes), runs the explainer once per device on its block of rows with
`jax.shard_map` inside one `jax.jit`, and returns the result with the rows in their order.
Nothing here schedules work: XLA's SPMD runtime runs the blocks, and `jax.distributed` makes the
same program span several processes (hosts). The compiled program is cached on the explainer,
the mesh and the static options, so a second call with same-shaped inputs does not recompile.

Uneven batches: the batch is padded up to a multiple of the number of blocks by repeating the
last row (valid data: padding cannot make NaN or out-of-range values), and the padded rows are
cut off the result.

Random keys: a method that draws samples gets one key per row,
`row_keys = jax.random.split(key, n)` for the whole batch of `n` rows (padded with the rows),
and each block gets the keys of its own rows. Row `i` therefore uses the same key whatever the
number of devices, and a method that accepts one key per row (`lime`, `kernel_shap`, or a
`jax.vmap` over rows of a single-row method such as `contrastive_explanation`) draws exactly
the samples of the unsharded call `method(key, ..., x)`, which also uses `split(key, n)[i]`
for row `i`; the results agree to float round-off (see `explain_sharded`).

Several processes: when the mesh spans devices of several processes (after
`jax.distributed.initialize`), every process calls `explain_sharded` with the same host (NumPy)
inputs, the global arrays are built with `jax.make_array_from_callback` (each process puts the
rows of its own devices), and the result is a global `jax.Array` whose rows live on the devices
that computed them. `jax.experimental.multihost_utils.process_allgather(result, tiled=True)`
gives every process the whole result as NumPy.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike
from jaxtyping import Array, PyTree, Shaped

from xai_jax import _chunks
from xai_jax._checks import as_row_keys, check_finite, is_concrete

__all__ = ["explain_sharded"]


def explain_sharded(
    method_fn: Callable[..., PyTree[Array]],
    x: Shaped[ArrayLike, " n ..."] | tuple[Shaped[ArrayLike, " n ..."], ...],
    *,
    mesh: Mesh,
    key: ArrayLike | None = None,
    axis_names: str | Sequence[str] | None = None,
    **kwargs: Any,
) -> PyTree[Shaped[Array, " n ..."]]:
    """Run `method_fn` on the rows of `x` split over the devices of `mesh`, as one call would.

    Each device's block of rows goes to `method_fn(*x_blocks, **kwargs)`, or, with a `key`,
    `method_fn(row_keys_block, *x_blocks, **kwargs)` where `row_keys = jax.random.split(key, n)`
    has one key per row. `method_fn` must map a block of rows to a pytree of arrays with one
    row per input row (attributions, a `LimeResult`, ...); it runs traced (inside `jit` and
    `shard_map`), so it must be jittable (non-JAX black boxes through `jax.pure_callback` are;
    `lime`'s scikit-learn `regressor` is not). Because row `i` gets the key `split(key, n)[i]`
    whatever the number of devices, `explain_sharded(lambda k, x: lime(k, f, x), x,
    mesh=mesh, key=key)` equals `lime(key, f, x)`. Equal up to float round-off: a device
    compiles a block of `n / devices` rows, which XLA may fuse differently from `n` rows, as
    `lime`'s own `batch_size` (`tests/test_sharding.py` holds `integrated_gradients` and a
    vmapped `contrastive_explanation` to bit equality on 4 host devices, `lime` and
    `kernel_shap` to `atol=1e-6`).

    The call is cached on `method_fn` (by identity: pass the same function object, not a new
    `lambda` per call), the mesh, the shapes and the static `kwargs`, so a second call with
    same-shaped inputs does not recompile. Array leaves of `kwargs` (model parameters, a
    background set) and of a pytree `method_fn` (`jax.tree_util.Partial`) are traced
    arguments, replicated on every device; other `kwargs` are static. It also works inside
    your own `jit` or `grad` (one process).

    With a mesh over several processes (`jax.distributed.initialize`), call it on every process
    with the same host (NumPy) `x` and `kwargs`; the result is a global `jax.Array` (pytree),
    and `jax.experimental.multihost_utils.process_allgather(result, tiled=True)` gives every
    process all of it.

    Args:
        method_fn: explainer of a block of rows, e.g. `lambda x: integrated_gradients(f, x,
            target=t)`, or `lambda k, x: lime(k, f, x)` with `key`.
        x: `[n, ...]` rows to explain, or a tuple of arrays sharing the leading axis `n`
            (row-aligned arguments: per-row targets, baselines, segments), passed to
            `method_fn` as separate positional arguments in this order.
        mesh: the devices; e.g. `jax.make_mesh((jax.device_count(),), ("data",))`.
        key: PRNG key for methods that sample (or one key per row, `[n]`); None: `method_fn`
            gets no keys.
        axis_names: the mesh axes (a name or a sequence) the batch is split over; None: all.
            Along other axes the rows are replicated (e.g. left for model parallelism).
        **kwargs: further arguments of `method_fn`, the same for every block.

    Returns:
        `method_fn`'s output for all `n` rows, sharded along the rows over the mesh when the
        blocks divide `n`; otherwise the padding rows are cut off and XLA places the result
        (on a 1-D mesh: replicated on every device).

    Raises:
        TypeError: `method_fn` not callable, `mesh` not a `jax.sharding.Mesh`, `x` not an array
            or a tuple of arrays, `key` not a PRNG key.
        ValueError: an `axis_names` entry not an axis of the mesh, `x` not at least 1-D or
            with an empty batch, tuple members with different numbers of rows, `key` a key
            array whose length is not `n`, a `method_fn` output without one row per input row,
            NaN/inf in a floating member of a concrete `x` (inside the sharded program
            `method_fn` sees traced blocks, where they would only propagate to their rows).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jax.sharding import Mesh
        >>> from xai_jax import integrated_gradients
        >>> from xai_jax.sharding import explain_sharded
        >>> mesh = Mesh(jax.devices()[:1], ("data",))
        >>> f = lambda z: jnp.tanh(z) @ jnp.array([[1.0, -1.0], [2.0, 0.5]])
        >>> ig = lambda z: integrated_gradients(f, z, target=0)
        >>> explain_sharded(ig, jnp.array([[0.5, -1.0], [1.0, 0.0]]), mesh=mesh)
        Array([[ 0.462..., -1.523...],
               [ 0.761...,  0.   ...]], dtype=float32)
    """
    if not callable(method_fn):
        raise TypeError(f"method_fn must be callable, got {type(method_fn).__name__}")
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    axes = _axis_names(axis_names, mesh)
    rows = _as_rows(x)
    n = rows[0].shape[0]
    blocks = math.prod(mesh.shape[a] for a in axes)
    padded = -(-n // blocks) * blocks
    multiprocess = len({d.process_index for d in mesh.devices.flat}) > 1

    impl = None
    if key is not None:
        row_keys = as_row_keys(key, n)
        impl = jax.random.key_impl(row_keys)
        rows = (jax.random.key_data(row_keys), *rows)  # keys travel as data, wrapped per block
    static, arrays = _chunks.partition((method_fn, kwargs))

    row_sharding = NamedSharding(mesh, PartitionSpec(axes))
    replicated = NamedSharding(mesh, PartitionSpec())
    rows = tuple(
        _put(_pad(leaf, padded, multiprocess), row_sharding, multiprocess) for leaf in rows
    )
    arrays = [_put(leaf, replicated, multiprocess) for leaf in arrays]
    return _explain(static, mesh, axes, impl, n, rows, arrays)


def _axis_names(axis_names, mesh: Mesh) -> tuple[str, ...]:
    if axis_names is None:
        return tuple(mesh.axis_names)
    names = (axis_names,) if isinstance(axis_names, str) else tuple(axis_names)
    if not names:
        raise ValueError(f"axis_names must name at least one of the mesh's axes {mesh.axis_names}")
    for name in names:
        if name not in mesh.axis_names:
            raise ValueError(
                f"axis_names contains {name!r}, which is not an axis of the mesh; "
                f"the mesh's axes are {tuple(mesh.axis_names)}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"axis_names must not repeat an axis, got {names}")
    return names


def _as_rows(x) -> tuple:
    """`x` as a non-empty tuple of arrays of at least one dimension with the same `n > 0` rows."""
    if isinstance(x, tuple):
        members, names = x, [f"x[{i}]" for i in range(len(x))]
    else:
        members, names = (x,), ["x"]
    if not members:
        raise ValueError("x must be an array or a non-empty tuple of arrays, got ()")
    rows = []
    for name, member in zip(names, members, strict=True):
        if not isinstance(member, jax.Array | np.ndarray):
            given = type(member).__name__
            try:
                member = np.asarray(member)
            except (TypeError, ValueError) as err:
                raise TypeError(f"{name} must be an array, got {given}") from err
            if member.dtype == object:
                raise TypeError(f"{name} must be an array, got {given}")
        if member.ndim < 1:
            raise ValueError(
                f"{name} must be at least 1-D with the batch axis first, got shape {member.shape}"
            )
        # method_fn only sees traced blocks, where its own boundary checks cannot look; a
        # global array of several processes cannot be read here, and tracers are not checked
        global_array = (
            isinstance(member, jax.Array)
            and is_concrete(member)
            and not member.is_fully_addressable
        )
        if not global_array:
            check_finite(name, member)
        if rows and member.shape[0] != rows[0].shape[0]:
            raise ValueError(
                f"every member of x needs the same number of rows: {name} has "
                f"{member.shape[0]}, x[0] has {rows[0].shape[0]}"
            )
        rows.append(member)
    if rows[0].shape[0] == 0:
        raise ValueError(f"x has an empty batch (leading axis of size 0), shape {rows[0].shape}")
    return tuple(rows)


def _pad(leaf, padded: int, multiprocess: bool):
    """`leaf` with `padded` rows, the last row repeated (valid data, so no NaN from padding)."""
    if leaf.shape[0] == padded:
        return leaf
    if multiprocess or isinstance(leaf, np.ndarray):  # host data stays on the host
        leaf = _host(leaf)
        return leaf[np.minimum(np.arange(padded), leaf.shape[0] - 1)]
    return _pad_device(leaf, padded)


@functools.partial(jax.jit, static_argnums=1)
def _pad_device(leaf: jax.Array, padded: int) -> jax.Array:
    return _chunks.gather_rows(leaf, padded, jnp.int32(0))


def _put(leaf, sharding: NamedSharding, multiprocess: bool):
    """`leaf` as a `jax.Array` with `sharding`: global (built per process) across processes."""
    if (
        isinstance(leaf, jax.Array)
        and not isinstance(leaf, jax.core.Tracer)
        and leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
    ):
        return leaf
    if not multiprocess:
        return jax.device_put(leaf, sharding)
    host = _host(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _host(leaf) -> np.ndarray:
    try:
        return np.asarray(leaf)
    except Exception as err:  # a tracer, or a global array this process cannot read
        raise TypeError(
            "with a mesh over several processes, x and the array kwargs must be host (NumPy) "
            "arrays, the same on every process, and explain_sharded must be called eagerly "
            f"(got {type(leaf).__name__})"
        ) from err


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _explain(static, mesh: Mesh, axes: tuple, impl, n: int, rows: tuple, arrays: list):
    spec = PartitionSpec(axes)
    per_block = rows[0].shape[0] // math.prod(mesh.shape[a] for a in axes)

    def block(rows, arrays):
        method_fn, kwargs = _chunks.combine(static, arrays)
        if impl is not None:
            rows = (jax.random.wrap_key_data(rows[0], impl=impl), *rows[1:])
        out = method_fn(*rows, **kwargs)
        for leaf in jax.tree.leaves(out):
            if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != per_block:
                raise ValueError(
                    "method_fn must return arrays with one row per input row: given "
                    f"{per_block} rows, it returned a leaf of shape {jnp.shape(leaf)}"
                )
        return out

    # check_vma=False: the explainers' loops start their `scan` carries from constants, which
    # the varying-axes type check rejects against carries that depend on the rows; nothing
    # here needs it (no collectives, and every output is declared sharded along the rows)
    out = jax.shard_map(
        block, mesh=mesh, in_specs=(spec, PartitionSpec()), out_specs=spec, check_vma=False
    )(rows, arrays)
    if n == rows[0].shape[0]:
        return out
    return jax.tree.map(lambda leaf: leaf[:n], out)
