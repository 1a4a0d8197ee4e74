"""What the integrated-gradients family shares: path points, their sums, and the chunking.

Integrated gradients, its layer and neuron variants and expected gradients evaluate the model on
many points between a baseline and the input. The points of all examples of one chunk of steps
go to the model as one batch of rows (`[steps * batch, ...]`, step-major as in Captum), which is
what XLA:CPU runs fastest, and the chunks are summed by `xai_jax._chunks.run`: a host loop over
one compiled chunk when called eagerly, a `lax.scan` under the caller's `jit`. Peak memory is one
chunk's, whatever `n_steps` or `num_samples`.

This module holds the checked operands (`Operands`, `operands`), the chunked quadrature
(`chunking`, `PathTable`, `path_table`), the path and its gradient (`path`,
`weighted_target_grad`, `per_step_sum`), the common finish (times the inputs, NaN rows for
traced out-of-range targets, the convergence delta), one key per random sample (`sample_keys`,
`noise`), and integrated gradients' own kernel (`integrate`), which the layer variant runs in
the layer's space: the kernels are module-level functions of `(config, chunk, operands)`, each
`config` a NamedTuple of one variant's static options and its model.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PyTree, Shaped

from xai_jax import _affine, _blackbox, _chunks
from xai_jax._checks import check_positive_int, is_traced
from xai_jax._inputs import Inputs, as_baselines, as_forward_kwargs, as_inputs, as_target

# --------------------------------------------------------------------------------------------
# Options and operands, checked once at the boundary.


def check_internal_batch_size(internal_batch_size: Any) -> int | None:
    if internal_batch_size is None:
        return None
    return check_positive_int("internal_batch_size", internal_batch_size)


def chunking(
    n: int, batch: int, internal_batch_size: int | None, overlap: int = 0
) -> tuple[int, int]:
    """`(num_chunks, per_chunk)` with at most `internal_batch_size` rows (at least one step of
    every example per chunk, as Captum; `overlap` extra points per chunk), the `n` items spread
    evenly so that padding wastes less than one item per chunk."""
    limit = n
    if internal_batch_size is not None:
        limit = max(1, internal_batch_size // batch - overlap)
    num_chunks = -(-n // limit)
    return num_chunks, -(-n // num_chunks)


class Operands(NamedTuple):
    """The checked data of one call: every leaf has the examples as leading axis."""

    x: Any  # pytree of float arrays [batch, ...]
    baselines: Any  # x's structure and shapes
    index: jax.Array | None  # flat target index per example, [batch] int32
    valid: jax.Array | None  # [batch] bool, only for a traced target
    kwargs: dict  # forward kwargs, [batch, ...] each


def operands(
    model: Callable,
    inputs: Inputs,
    baselines: Any,
    target: Any,
    forward_kwargs: Any,
    *,
    finite: bool = True,
) -> Operands:
    """Forward kwargs, baselines (None: zeros) and the target checked on `model`'s output."""
    kwargs = as_forward_kwargs(forward_kwargs, inputs.batch)
    b = as_baselines(baselines, inputs.x, finite=finite)
    t = as_target(target, _blackbox.model_output(model, inputs.x, kwargs), inputs.batch)
    return Operands(inputs.x, b, t.index, t.valid, kwargs)


def operands_at(
    model: Callable, x: Any, target: Any, forward_kwargs: Any
) -> tuple[Operands, jax.ShapeDtypeStruct]:
    """The checked operands of a map at `x` alone (no baselines: `baselines` is None) and the
    model's output shape, which a plan's target check needs (`_eager.value_checks`)."""
    inputs = as_inputs(x)
    kwargs = as_forward_kwargs(forward_kwargs, inputs.batch)
    out = _blackbox.model_output(model, inputs.x, kwargs)
    t = as_target(target, out, inputs.batch)
    return Operands(inputs.x, None, t.index, t.valid, kwargs), out


def batch_of(tree: PyTree[Shaped[Array, " batch ..."]]) -> int:
    return jax.tree.leaves(tree)[0].shape[0]


def in_example_blocks(attribute: Callable, ops: Operands, batch: int, ibs: int) -> Any:
    """`attribute(ops_block, block)` on blocks of at most `ibs` examples, concatenated (eager).

    With more examples than `internal_batch_size`, one step of every example per model call
    would still be `batch` rows: blocks of examples keep every call within `ibs` rows, so memory
    stays flat in the number of examples too. Each block is a whole eager call of `attribute`
    (its own host loop over chunks of steps, not a `lax.map` of compiled blocks, whose `scan`
    XLA:CPU runs several times slower for convolutions). The examples are spread evenly over
    the blocks (`chunking`, as the steps over chunks); the rows of `ops` are independent, and
    `_chunks.gather_rows` (the one padding rule) repeats the last example past the end, which
    is cut.
    """
    num_blocks, block = chunking(batch, 1, ibs)
    parts = [
        attribute(_chunks.gather_rows(ops, block, np.int32(c)), block) for c in range(num_blocks)
    ]
    return jax.tree.map(lambda *p: jnp.concatenate(p)[:batch], *parts)


# --------------------------------------------------------------------------------------------
# The quadrature, chunked.


class PathTable(NamedTuple):
    """Chunk `c`'s path points and weights: `alphas[c]`, `weights[c]` (NumPy, x's dtype: they
    travel with the call)."""

    alphas: np.ndarray  # [num_chunks, per_chunk] (+1 wide with overlap)
    weights: np.ndarray  # [num_chunks, per_chunk]


def path_table(
    points: tuple[np.ndarray, np.ndarray],
    batch: int,
    ibs: int | None,
    dtype: Any,
    *,
    overlap: bool = False,
) -> tuple[PathTable, int, int]:
    """The quadrature `points = (alphas, weights)` (`xai_jax.quadrature.rule`) chunked for
    `batch` examples and at most `ibs` rows per chunk: `(table, num_chunks, per_chunk)`.

    Padding repeats the last alpha with weight 0 (a real path point, so it cannot add NaN);
    with `overlap` (conductance: `n + 1` points, weights unused) chunk `c` also holds the first
    point of chunk `c + 1`.
    """
    alphas, weights = points
    extra = 1 if overlap else 0
    num_chunks, per_chunk = chunking(len(alphas) - extra, batch, ibs, overlap=extra)
    pad = num_chunks * per_chunk + extra - len(alphas)
    alphas = np.concatenate([alphas, np.full(pad, alphas[-1])])
    weights = np.concatenate([weights, np.zeros(pad)])[: num_chunks * per_chunk]
    starts = np.arange(num_chunks)[:, None] * per_chunk
    table = PathTable(
        np.asarray(alphas[starts + np.arange(per_chunk + extra)], dtype),
        np.asarray(weights.reshape(num_chunks, per_chunk), dtype),
    )
    return table, num_chunks, per_chunk


class PathOperands(NamedTuple):
    """What a chunk of a path method reads: the data, the quadrature, and (integrated gradients
    with an affine prefix `A`, `xai_jax._affine`) the path's ends `(A(x), A(b))`."""

    data: Operands
    table: PathTable
    hidden: tuple = ()


# --------------------------------------------------------------------------------------------
# Kernel pieces.


def rows(value: Shaped[Array, " batch *rest"], k: int) -> Shaped[Array, " rows *rest"]:
    """`[batch, ...]` repeated `k` times step-major: `[k * batch, ...]`."""
    return jnp.broadcast_to(value[None], (k, *value.shape)).reshape(-1, *value.shape[1:])


def repeated(ops: Operands, k: int) -> tuple[dict, Int[Array, " rows"] | None]:
    """Keyword arguments and target indices repeated for `k` steps."""
    kwargs = {name: rows(v, k) for name, v in ops.kwargs.items()}
    index = None if ops.index is None else rows(ops.index, k)
    return kwargs, index


def path(
    x: PyTree[Float[Array, " batch ..."]],
    baselines: PyTree[Float[Array, " batch ..."]],
    alphas: Float[Array, " k"],
) -> PyTree[Float[Array, " rows ..."]]:
    """Points `b + a_k (x - b)` of every example for each alpha, as `[k * batch, ...]` rows."""

    def one(xi, bi):
        a = alphas.astype(xi.dtype).reshape(-1, *([1] * xi.ndim))
        return (bi[None] + a * (xi - bi)[None]).reshape(-1, *xi.shape[1:])

    return jax.tree.map(one, x, baselines)


def per_step_sum(tree: PyTree[Shaped[Array, " rows ..."]], k: int) -> PyTree[Shaped[Array, " ..."]]:
    """`[k * batch, ...]` rows summed over the `k` steps: `[batch, ...]`."""
    return jax.tree.map(lambda v: v.reshape(k, -1, *v.shape[1:]).sum(0), tree)


def weighted_target_grad(
    fn: Callable,
    points: Any,
    kwargs: dict,
    index: Int[Array, " rows"] | None,
    row_weights: Float[Array, " rows"],
) -> Any:
    """Gradient of `sum_r w_r F_target(points_r)` w.r.t. the points (per row: `w_r dF/dx`)."""

    def total(p):
        out = fn(p, **kwargs)
        return jnp.sum(_blackbox.selected(out, index) * row_weights.astype(out.dtype))

    return jax.grad(total)(points)


def _leaf_sums(tree: PyTree[Float[Array, " batch ..."]], batch: int) -> Float[Array, " batch"]:
    return sum(leaf.reshape(batch, -1).sum(axis=1) for leaf in jax.tree.leaves(tree))


def _end_difference(model: Callable, ops: Operands) -> Float[Array, " batch"]:
    """`F_target(x) - F_target(baseline)` per example, in one model call on `[x; baseline]`."""
    batch = batch_of(ops.x)
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ops.x, ops.baselines)
    kwargs, index = repeated(ops, 2)
    f = _blackbox.selected(model(both, **kwargs), index)
    return f[:batch] - f[batch:]


def finish(
    total: PyTree[Float[Array, " batch ..."]],
    ops: Operands,
    *,
    multiply_by_inputs: bool,
    delta_model: Callable | None,
) -> Any:
    """Times `x - b` (when asked), NaN rows for traced out-of-range targets, and with a
    `delta_model` the pair `(attr, sum(attr) - (F_t(x) - F_t(b)))`."""
    if multiply_by_inputs:
        total = jax.tree.map(lambda g, x, b: g * (x - b), total, ops.x, ops.baselines)
    attr = _blackbox.mark_invalid(total, ops.valid)
    if delta_model is None:
        return attr
    return attr, _leaf_sums(attr, batch_of(ops.x)) - _end_difference(delta_model, ops)


class Composed(NamedTuple):
    """`head_fn(layer_fn(x))`, equal (hence a jit-cache hit) whenever both functions are."""

    layer_fn: Callable
    head_fn: Callable

    def __call__(self, x: Any, **kwargs: Any) -> Any:
        return self.head_fn(self.layer_fn(x, **kwargs), **kwargs)


# --------------------------------------------------------------------------------------------
# Random samples: one key per sample, so the chunking does not change the draws.


def sample_keys(
    keys: Shaped[Array, " num_samples"], c: Int[Array, ""], per_chunk: int
) -> tuple[Shaped[Array, " per_chunk"], Bool[Array, " per_chunk"]]:
    """Chunk `c`'s keys and a mask of the real samples (the last chunk is padded)."""
    num_samples = keys.shape[0]
    pos = c * per_chunk + jnp.arange(per_chunk, dtype=c.dtype)  # int32 with x64 too
    return keys[jnp.minimum(pos, num_samples - 1)], pos < num_samples


def noise(
    key: Shaped[Array, ""], x: PyTree[Float[Array, " ..."]], stdev: Shaped[Array, ""]
) -> PyTree[Float[Array, " ..."]]:
    """`x + stdev * N(0, 1)`, one key per leaf split from `key`."""
    leaves, treedef = jax.tree.flatten(x)
    noisy = [
        leaf + stdev.astype(leaf.dtype) * jax.random.normal(k, leaf.shape, leaf.dtype)
        for k, leaf in zip(jax.random.split(key, len(leaves)), leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, noisy)


# --------------------------------------------------------------------------------------------
# Integrated gradients' kernel: `integrated_gradients` in input space, and
# `layer_integrated_gradients` in the layer's.


class IGConfig(NamedTuple):
    fn: Callable  # the model
    per_chunk: int  # path points per example and chunk
    multiply_by_inputs: bool
    delta: bool  # also return the convergence delta


def integrate(
    fn: Callable,
    ops: Operands,
    points: tuple[np.ndarray, np.ndarray],
    ibs: int | None,
    *,
    multiply_by_inputs: bool,
    delta: bool,
) -> Any:
    """Integrated gradients of `fn` from `ops.baselines` to `ops.x` with the quadrature
    `points`, at most `ibs` rows per model call (eager calls with more examples than `ibs`
    run in blocks of examples)."""

    def attribute(ops: Operands, batch: int):
        dtype = jax.tree.leaves(ops.x)[0].dtype
        table, num_chunks, per_chunk = path_table(points, batch, ibs, dtype)
        config = IGConfig(fn, per_chunk, multiply_by_inputs, delta)
        hidden = _chunks.call(_hidden_ends, config, ops)
        like = hidden[0] if hidden else ops.x  # the sum's shapes
        path_ops = PathOperands(ops, table, hidden)
        return _chunks.run(_ig_chunk, _ig_finish, config, path_ops, like, num_chunks)

    batch = batch_of(ops.x)
    if ibs is not None and batch > ibs and not is_traced((ops, fn)):
        return in_example_blocks(attribute, ops, batch, ibs)
    return attribute(ops, batch)


def _hidden_ends(config: IGConfig, ops: Operands) -> tuple:
    """`(A(x), A(b))` for the affine prefix `A` of the model (`xai_jax._affine`), or `()`."""
    split = _affine.hoistable(config.fn, ops.x, ops.kwargs, config.per_chunk * batch_of(ops.x))
    if split is None:
        return ()
    return split.prefix(ops.x, ops.kwargs), split.prefix(ops.baselines, ops.kwargs)


def _ig_chunk(config: IGConfig, c: Int[Array, ""], ops: PathOperands) -> Any:
    """Per example, `sum_k w_k dF_t/dx (x_k)` over the chunk's steps; with an affine prefix `A`
    (`ops.hidden`), the same sum of `dG_t/dh (h_k)` on the path from `A(b)` to `A(x)`."""
    data, steps = ops.data, config.per_chunk
    alphas, weights = ops.table.alphas[c], ops.table.weights[c]
    batch = batch_of(data.x)
    kwargs, index = repeated(data, steps)
    if ops.hidden:
        shaped = _affine.at_rows(data.x, steps * batch)
        rest = _affine.split(config.fn, shaped, kwargs).rest
        model = lambda h, **kw: rest(h, kw)
        points = path(*ops.hidden, alphas)
    else:
        model, points = config.fn, path(data.x, data.baselines, alphas)
    grads = weighted_target_grad(model, points, kwargs, index, jnp.repeat(weights, batch))
    return per_step_sum(grads, steps)


def _ig_finish(config: IGConfig, total: Any, ops: PathOperands) -> Any:
    data = ops.data
    if ops.hidden:  # back from A's output space: the transpose of A's linear part
        prefix = _affine.split(config.fn, data.x, data.kwargs).prefix
        _, transpose = jax.vjp(lambda x: prefix(x, data.kwargs), data.x)
        (total,) = transpose(total)
    return finish(
        total,
        data,
        multiply_by_inputs=config.multiply_by_inputs,
        delta_model=config.fn if config.delta else None,
    )
