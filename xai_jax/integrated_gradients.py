"""Integrated gradients and its layer, neuron, noise-tunnel and expected-gradients variants.

All of them evaluate the model on many points between a baseline and the input. The points of
all examples of one chunk of steps go to the model as one batch of rows (`[steps * batch, ...]`,
step-major as in Captum), which is what XLA:CPU runs fastest (integrated gradients runs the
path past the model's affine prefix, `xai_jax._affine`), and the chunks are summed by
`xai_jax._chunks.run`: a host loop over one compiled chunk when called eagerly, a `lax.scan`
under the caller's `jit`. Peak memory is one chunk's, whatever `n_steps` or `num_samples`.
"""

import numbers
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PyTree

from xai_jax import _affine, _chunks
from xai_jax._blackbox import call, mark_invalid, model_output, selected, shape_of
from xai_jax._checks import (
    as_key,
    check_choice,
    check_positive,
    check_positive_int,
    is_traced,
)
from xai_jax._inputs import (
    Inputs,
    as_background,
    as_baselines,
    as_forward_kwargs,
    as_inputs,
    as_target,
)
from xai_jax.quadrature import check_rule, rule

__all__ = [
    "NT_TYPES",
    "expected_gradients",
    "integrated_gradients",
    "layer_conductance",
    "layer_integrated_gradients",
    "neuron_conductance",
    "smoothgrad",
]

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


# --------------------------------------------------------------------------------------------
# Inputs, baselines, targets: checked once at the boundary.


def _check_internal_batch_size(internal_batch_size) -> int | None:
    if internal_batch_size is None:
        return None
    return check_positive_int("internal_batch_size", internal_batch_size)


def _chunking(
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


# --------------------------------------------------------------------------------------------
# Shared kernel pieces.


def _rows(value: jax.Array, k: int) -> jax.Array:
    """`[batch, ...]` repeated `k` times step-major: `[k * batch, ...]`."""
    return jnp.broadcast_to(value[None], (k, *value.shape)).reshape(-1, *value.shape[1:])


def _path(x, baselines, alphas: jax.Array):
    """Points `b + a_k (x - b)` of every example for each alpha, as `[k * batch, ...]` rows."""

    def one(xi, bi):
        a = alphas.astype(xi.dtype).reshape(-1, *([1] * xi.ndim))
        return (bi[None] + a * (xi - bi)[None]).reshape(-1, *xi.shape[1:])

    return jax.tree.map(one, x, baselines)


def _per_step_sum(tree, k: int):
    return jax.tree.map(lambda v: v.reshape(k, -1, *v.shape[1:]).sum(0), tree)


def _weighted_target_grad(fn: Callable, points, kwargs: dict, index, row_weights):
    """Gradient of `sum_r w_r F_target(points_r)` w.r.t. the points (per row: `w_r dF/dx`)."""

    def total(p):
        out = fn(p, **kwargs)
        return jnp.sum(selected(out, index) * row_weights.astype(out.dtype))

    return jax.grad(total)(points)


def _rows_of(ops: dict, k: int):
    """Keyword arguments and target indices repeated for `k` steps."""
    kwargs = {name: _rows(v, k) for name, v in ops["kwargs"].items()}
    index = None if ops["index"] is None else _rows(ops["index"], k)
    return kwargs, index


def _leaf_sums(tree, batch: int) -> jax.Array:
    return sum(leaf.reshape(batch, -1).sum(axis=1) for leaf in jax.tree.leaves(tree))


def _end_difference(model: Callable, ops: dict) -> jax.Array:
    """`F_target(x) - F_target(baseline)` per example, in one model call on `[x; baseline]`."""
    batch = jax.tree.leaves(ops["x"])[0].shape[0]
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ops["x"], ops["baselines"])
    kwargs, index = _rows_of(ops, 2)
    f = selected(model(both, **kwargs), index)
    return f[:batch] - f[batch:]


def _add_path_tables(
    ops: dict, method: str, n: int, batch: int, ibs: int | None, overlap: bool = False
) -> tuple[int, int]:
    """Put the chunked quadrature into `ops` as `alphas`, `weights` `[num_chunks, per_chunk]`
    (alphas `per_chunk + 1` wide with `overlap`); return `(num_chunks, per_chunk)`.

    Padding repeats the last alpha with weight 0 (a real path point, so it cannot add NaN);
    with `overlap` (conductance: `n + 1` points, weights unused) chunk `c` also holds the first
    point of chunk `c + 1`.
    """
    num_chunks, per_chunk = _chunking(n, batch, ibs, overlap=int(overlap))
    alphas, weights = rule(method, n + 1 if overlap else n)
    total = num_chunks * per_chunk + (1 if overlap else 0)
    pad = total - len(alphas)
    alphas = np.concatenate([alphas, np.full(pad, alphas[-1])])
    weights = np.concatenate([weights, np.zeros(pad)])[: num_chunks * per_chunk]
    starts = np.arange(num_chunks)[:, None] * per_chunk
    width = per_chunk + (1 if overlap else 0)
    dtype = jax.tree.leaves(ops["x"])[0].dtype  # NumPy tables: they travel with the call
    ops["alphas"] = np.asarray(alphas[starts + np.arange(width)], dtype)
    ops["weights"] = np.asarray(weights.reshape(num_chunks, per_chunk), dtype)
    return num_chunks, per_chunk


class _Config(NamedTuple):
    fn: Callable  # the model (IG, EG) or the attribution function (smoothgrad)
    head_fn: Callable | None = None  # layer methods: model = head_fn(layer_fn(x))
    per_chunk: int = 1
    multiply_by_inputs: bool = True
    delta: bool = False
    neuron: tuple[int, ...] | None = None
    nt_type: str = "smoothgrad"
    num_samples: int = 1


# --------------------------------------------------------------------------------------------
# integrated_gradients


def integrated_gradients(
    fn: Callable[..., ArrayLike],
    x: PyTree[Float[ArrayLike, " batch ..."]],
    baselines: PyTree[ArrayLike] | float | None = None,
    *,
    target: ArrayLike | None = None,
    method: str = "gausslegendre",
    n_steps: int = 50,
    internal_batch_size: int | None = None,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]] | tuple[PyTree[Float[Array, " batch ..."]], Array]:
    """Integrated gradients of `fn` at `x`, with Captum's numbers for every quadrature rule.

    `attr = (x - b) * sum_k w_k dF_t(b + a_k (x - b))/dx` with `(a_k, w_k) = quadrature(method,
    n_steps)`, `F_t` the target output. Completeness: `sum(attr) ~= F_t(x) - F_t(b)`.

    When the model starts with an affine map `A` of its input (a dense layer, a convolution,
    a normalisation with fixed statistics: found in its jaxpr, `xai_jax._affine`), the path runs
    in `A`'s output space: `A(b + a (x - b)) = A(b) + a (A(x) - A(b))`, so `A` is evaluated on
    the two end points and its transpose applied once per example, not at every path point
    (the first layer of an MLP, the first convolution of a CNN and their gradients leave the
    per-step work). Same numbers up to float round-off; it needs `fn` to treat rows
    independently, as everything here does.

    Differentiable (attribution priors: `jax.grad` of a loss of the attributions w.r.t. the
    model's parameters), jittable and vmappable. With `internal_batch_size`, at most that many
    path points go through the model at once (at least one step of all examples, as in
    Captum), so peak memory does not grow with `n_steps`; called eagerly with more examples
    than `internal_batch_size`, the examples run in blocks of that many, so it does not grow
    with the number of examples either (under `jit`, one step of every example is one call).
    Called eagerly, the chunks run as a host loop over one compiled chunk (convolutional
    models: faster than unchunked; dense ones: a few percent slower per split, the fixed cost
    of an XLA:CPU call; README, Benchmarks); under your own `jit` they run as a
    `lax.scan`, where XLA:CPU computes the gradient of convolutions several times slower: with
    convolutional models inside `jit`, prefer `internal_batch_size=None` when memory allows.
    The default (None, as Captum's) puts every path point in one call: for large batches pass
    a bound (10,000 MNIST-sized examples at 50 steps: 9.6 GB above the baseline unbounded,
    0.3 GB and 2.2x faster at `internal_batch_size=2048`; `benchmarks/bench_memory.py`).

    Args:
        fn: model mapping a batch (an array, or the pytree `x`) to outputs `[batch, ...]`.
        x: inputs with a leading batch axis: an array or a pytree of arrays (multi-input models);
            attributions have the same structure.
        baselines: start of the path: None (zeros), a scalar, or `x`'s structure with leaves
            that are scalars, `[1, ...]` or of the leaf's full shape.
        target: which output: None for one output per example; an int or an int array
            `[batch]` for outputs `[batch, k]`; an int matrix `[batch, rank - 1]` for outputs of
            higher rank (alibi's rules). Out of range raises on concrete targets; a traced
            out-of-range target makes that example's attributions NaN.
        method: `riemann_left`, `riemann_right`, `riemann_middle`, `riemann_trapezoid`,
            `gausslegendre`.
        n_steps: number of path points.
        internal_batch_size: largest number of path points per model call (None: all at once).
        multiply_by_inputs: multiply the integrated gradient by `x - b` (Captum's default);
            False returns the integrated gradient itself.
        return_convergence_delta: also return `delta = sum(attr) - (F_t(x) - F_t(b))`.
        forward_kwargs: per-example arrays passed to `fn` as keyword arguments, repeated along
            the path and not attributed.

    Returns:
        Attributions shaped like `x`, or `(attributions, delta [batch])`.

    Raises:
        ValueError: unknown `method`, too few `n_steps`, mismatched `baselines` or
            `forward_kwargs`, missing or out-of-range `target`, an empty batch, NaN/inf in
            concrete `x` or `baselines` (traced ones give non-finite attributions in the rows
            they touch; `forward_kwargs` are not checked: a mask may hold `-inf`).
        TypeError: non-integer `target`, a model that does not return one array.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import integrated_gradients
        >>> w = jnp.array([[1.0, -1.0], [2.0, 0.5]])
        >>> fn = lambda x: jnp.tanh(x) @ w
        >>> x = jnp.array([[0.5, -1.0]])
        >>> attr, delta = integrated_gradients(fn, x, target=0, return_convergence_delta=True)
        >>> attr
        Array([[ 0.462..., -1.523...]], dtype=float32)
        >>> bool(abs(delta[0]) < 1e-5)
        True
    """
    check_rule(method, n_steps)
    ibs = _check_internal_batch_size(internal_batch_size)
    inputs = as_inputs(x)
    return _integrated_gradients(
        fn,
        inputs,
        baselines,
        target,
        method,
        n_steps,
        ibs,
        multiply_by_inputs,
        return_convergence_delta,
        forward_kwargs,
    )


def _integrated_gradients(
    fn,
    inputs: Inputs,
    baselines,
    target,
    method: str,
    n_steps: int,
    ibs: int | None,
    multiply_by_inputs: bool,
    return_convergence_delta: bool,
    forward_kwargs,
    finite: bool = True,
):
    ops = _ig_operands(fn, inputs, baselines, target, forward_kwargs, finite)

    def attribute(ops: dict, batch: int):
        num_chunks, per_chunk = _add_path_tables(ops, method, n_steps, batch, ibs)
        config = _Config(
            fn,
            per_chunk=per_chunk,
            multiply_by_inputs=bool(multiply_by_inputs),
            delta=bool(return_convergence_delta),
        )
        hidden = _chunks.call(_hidden_ends, config, ops)
        if hidden:
            ops = {**ops, "hidden": hidden}
        like = hidden[0] if hidden else ops["x"]  # the sum's shapes
        return _chunks.run(_ig_chunk, _ig_finish, config, ops, like, num_chunks)

    if ibs is not None and inputs.batch > ibs and not is_traced((ops, fn)):
        return _in_example_blocks(attribute, ops, inputs.batch, ibs)
    return attribute(ops, inputs.batch)


def _in_example_blocks(attribute: Callable, ops: dict, batch: int, ibs: int):
    """`attribute(ops_block, block)` on blocks of at most `ibs` examples, concatenated (eager).

    With more examples than `internal_batch_size`, one step of every example per model call
    would still be `batch` rows: blocks of examples keep every call within `ibs` rows, so memory
    stays flat in the number of examples too (`benchmarks/results/scale/MEMORY.md`). The
    examples are spread evenly over the blocks (`_chunking`, as the steps over chunks); the rows
    of `ops` are independent, and the last block repeats its last example, then is cut.
    """
    num_blocks, block = _chunking(batch, 1, ibs)
    parts = [
        attribute(_chunks.gather_rows(ops, block, np.int32(c)), block) for c in range(num_blocks)
    ]
    return jax.tree.map(lambda *p: jnp.concatenate(p)[:batch], *parts)


def _ig_operands(
    model: Callable, inputs: Inputs, baselines, target, forward_kwargs, finite: bool = True
) -> dict:
    kwargs = as_forward_kwargs(forward_kwargs, inputs.batch)
    b = as_baselines(baselines, inputs.x, finite=finite)
    t = as_target(target, model_output(model, inputs.x, kwargs), inputs.batch)
    return {"x": inputs.x, "baselines": b, "index": t.index, "valid": t.valid, "kwargs": kwargs}


def _hidden_ends(config: _Config, ops: dict) -> tuple:
    """`(A(x), A(b))` for the affine prefix `A` of the model (`xai_jax._affine`), or `()`."""
    batch = jax.tree.leaves(ops["x"])[0].shape[0]
    split = _affine.hoistable(config.fn, ops["x"], ops["kwargs"], config.per_chunk * batch)
    if split is None:
        return ()
    return split.prefix(ops["x"], ops["kwargs"]), split.prefix(ops["baselines"], ops["kwargs"])


def _ig_chunk(config: _Config, c: jax.Array, ops: dict):
    """Per example, `sum_k w_k dF_t/dx (x_k)` over the chunk's steps; with an affine prefix `A`
    (`ops["hidden"]`), the same sum of `dG_t/dh (h_k)` on the path from `A(b)` to `A(x)`."""
    alphas, weights = ops["alphas"][c], ops["weights"][c]
    batch = jax.tree.leaves(ops["x"])[0].shape[0]
    kwargs, index = _rows_of(ops, config.per_chunk)
    if "hidden" in ops:
        shaped = _affine.at_rows(ops["x"], config.per_chunk * batch)
        rest = _affine.split(config.fn, shaped, kwargs).rest
        model = lambda h, **kw: rest(h, kw)
        points = _path(*ops["hidden"], alphas)
    else:
        model, points = config.fn, _path(ops["x"], ops["baselines"], alphas)
    grads = _weighted_target_grad(model, points, kwargs, index, jnp.repeat(weights, batch))
    return _per_step_sum(grads, config.per_chunk)


def _ig_finish(config: _Config, total, ops: dict):
    if "hidden" in ops:  # back from A's output space: the transpose of A's linear part
        prefix = _affine.split(config.fn, ops["x"], ops["kwargs"]).prefix
        _, transpose = jax.vjp(lambda x: prefix(x, ops["kwargs"]), ops["x"])
        (total,) = transpose(total)
    if config.multiply_by_inputs:
        total = jax.tree.map(lambda g, x, b: g * (x - b), total, ops["x"], ops["baselines"])
    attr = mark_invalid(total, ops["valid"])
    if not config.delta:
        return attr
    batch = jax.tree.leaves(ops["x"])[0].shape[0]
    model = config.fn if config.head_fn is None else _Composed(config.fn, config.head_fn)
    return attr, _leaf_sums(attr, batch) - _end_difference(model, ops)


class _Composed(NamedTuple):
    """`head_fn(layer_fn(x))`, equal (hence a jit-cache hit) whenever both functions are."""

    layer_fn: Callable
    head_fn: Callable

    def __call__(self, x, **kwargs):
        return self.head_fn(self.layer_fn(x, **kwargs), **kwargs)


# --------------------------------------------------------------------------------------------
# Layer and neuron variants: the model is head_fn(layer_fn(x)).


def layer_integrated_gradients(
    layer_fn: Callable[..., Any],
    head_fn: Callable[..., ArrayLike],
    x: PyTree[Float[ArrayLike, " batch ..."]],
    baselines: PyTree[ArrayLike] | float | None = None,
    *,
    target: ArrayLike | None = None,
    method: str = "gausslegendre",
    n_steps: int = 50,
    internal_batch_size: int | None = None,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
):
    """Integrated gradients to a layer's units: Captum's `LayerIntegratedGradients`.

    The path runs in the layer's space, from `layer_fn(b)` to `layer_fn(x)`, and `head_fn` is
    integrated along it: this is `integrated_gradients(head_fn, layer_fn(x), layer_fn(b))`, and
    `delta = sum(attr) - (F_t(x) - F_t(b))` with `F = head_fn(layer_fn(.))`. `forward_kwargs`
    go to both functions. `xai_jax.haiku.split` gives `(layer_fn, head_fn)` for a haiku model.

    Args:
        layer_fn: input batch to the layer's activations (an array or a pytree).
        head_fn: layer activations to the model's outputs.
        x, baselines, target, method, n_steps, internal_batch_size, multiply_by_inputs,
            return_convergence_delta, forward_kwargs: as in `integrated_gradients`;
            `baselines` are in input space.

    Returns:
        Attributions shaped like `layer_fn(x)`, or `(attributions, delta [batch])`.

    Raises:
        ValueError, TypeError: as `integrated_gradients` (NaN/inf in concrete `x` or
            `baselines` raise; traced ones, or a layer that overflows, give non-finite
            attributions in the rows they touch).

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import layer_integrated_gradients
        >>> layer_fn = lambda x: jnp.tanh(2.0 * x)
        >>> head_fn = lambda h: h.sum(axis=1)
        >>> x = jnp.array([[0.5, -1.0]])
        >>> layer_integrated_gradients(layer_fn, head_fn, x)  # linear head: exactly tanh(2x)
        Array([[ 0.761..., -0.964...]], dtype=float32)
    """
    check_rule(method, n_steps)
    ibs = _check_internal_batch_size(internal_batch_size)
    inputs = as_inputs(x)
    kwargs = as_forward_kwargs(forward_kwargs, inputs.batch)
    b = as_baselines(baselines, inputs.x)
    # the target is checked on the whole model's output shape before the layer runs
    as_target(target, model_output(_Composed(layer_fn, head_fn), inputs.x, kwargs), inputs.batch)
    both = jax.tree.map(lambda a, c: jnp.concatenate([a, c]), inputs.x, b)
    both_kwargs = {name: _rows(v, 2) for name, v in kwargs.items()}
    layer = call(layer_fn, both, both_kwargs)
    layer_x = jax.tree.map(lambda v: v[: inputs.batch], layer)
    layer_b = jax.tree.map(lambda v: v[inputs.batch :], layer)
    # The layer's values are not user input: NaN/inf there (an overflowing layer) propagate
    # to the attributions rather than raise as if `x` held them.
    return _integrated_gradients(
        head_fn,
        as_inputs(layer_x, "layer_fn(x)", finite=False),
        layer_b,
        target,
        method,
        n_steps,
        ibs,
        multiply_by_inputs,
        return_convergence_delta,
        kwargs,
        finite=False,
    )


def layer_conductance(
    layer_fn: Callable[..., Any],
    head_fn: Callable[..., ArrayLike],
    x: PyTree[Float[ArrayLike, " batch ..."]],
    baselines: PyTree[ArrayLike] | float | None = None,
    *,
    target: ArrayLike | None = None,
    method: str = "gausslegendre",
    n_steps: int = 50,
    internal_batch_size: int | None = None,
    return_convergence_delta: bool = False,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
):
    """Conductance of a layer's units: Captum's `LayerConductance`.

    The path runs in input space through `n_steps + 1` points `x_k = b + a_k (x - b)` (the
    alphas of `method` for `n_steps + 1` points; its weights are not used) and
    `attr = sum_{k < n_steps} (h(x_{k+1}) - h(x_k)) * dF_t/dh (x_k)` with `h = layer_fn`: the
    finite differences of the layer replace its input gradient, as in Captum. Chunks overlap by
    one point, so chunking changes nothing. `delta = sum(attr) - (F_t(x) - F_t(b))` with
    `F = head_fn(layer_fn(.))` is not small for rules without end points (Gauss-Legendre):
    the differences start at `a_0 > 0` and stop at `a_n < 1`, exactly as in Captum.

    Args:
        layer_fn: input batch to the layer's activations (an array or a pytree).
        head_fn: layer activations to the model's outputs.
        x, baselines, target, method, n_steps, internal_batch_size, return_convergence_delta,
            forward_kwargs: as in `integrated_gradients` (`internal_batch_size` counts the
            `n_steps + 1` points).

    Returns:
        Attributions shaped like `layer_fn(x)`, or `(attributions, delta [batch])`.

    Raises:
        ValueError, TypeError: as `integrated_gradients` (NaN/inf in concrete `x` or
            `baselines` raise; traced ones give non-finite attributions in their rows).

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import layer_conductance
        >>> layer_fn = lambda x: 3.0 * x
        >>> head_fn = lambda h: h.sum(axis=1)
        >>> x = jnp.array([[0.5, -1.0]])
        >>> layer_conductance(layer_fn, head_fn, x, method="riemann_trapezoid", n_steps=4)
        Array([[ 1.5, -3. ]], dtype=float32)
    """
    n_steps = check_positive_int("n_steps", n_steps)
    check_rule(method, n_steps + 1)
    ibs = _check_internal_batch_size(internal_batch_size)
    inputs = as_inputs(x)
    model = _Composed(layer_fn, head_fn)
    ops = _ig_operands(model, inputs, baselines, target, forward_kwargs)
    num_chunks, per_chunk = _add_path_tables(ops, method, n_steps, inputs.batch, ibs, overlap=True)
    config = _Config(
        layer_fn,
        head_fn,
        per_chunk=per_chunk,
        multiply_by_inputs=False,
        delta=bool(return_convergence_delta),
    )
    layer = shape_of(layer_fn, inputs.x, ops["kwargs"])
    return _chunks.run(_conductance_chunk, _ig_finish, config, ops, layer, num_chunks)


def _conductance_chunk(config: _Config, c: jax.Array, ops: dict):
    steps = config.per_chunk
    batch = jax.tree.leaves(ops["x"])[0].shape[0]
    points = _path(ops["x"], ops["baselines"], ops["alphas"][c])
    kwargs, _ = _rows_of(ops, steps + 1)
    layer = config.fn(points, **kwargs)
    start = jax.tree.map(lambda h: h[: steps * batch], layer)
    kwargs, index = _rows_of(ops, steps)
    grads = _weighted_target_grad(
        config.head_fn, start, kwargs, index, jnp.ones(steps * batch, jnp.float32)
    )
    return jax.tree.map(
        lambda g, h: _per_step_sum(g * (h[batch:] - h[:-batch]), steps), grads, layer
    )


def neuron_conductance(
    layer_fn: Callable[..., ArrayLike],
    head_fn: Callable[..., ArrayLike],
    x: PyTree[Float[ArrayLike, " batch ..."]],
    neuron_index: int | tuple[int, ...],
    baselines: PyTree[ArrayLike] | float | None = None,
    *,
    target: ArrayLike | None = None,
    method: str = "riemann_trapezoid",
    n_steps: int = 50,
    internal_batch_size: int | None = None,
    multiply_by_inputs: bool = True,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Conductance of the inputs through one neuron of a layer: Captum's `NeuronConductance`.

    `attr = (x - b) * sum_k w_k dF_t/dn (x_k) * dn/dx (x_k)` along `x_k = b + a_k (x - b)`,
    with `n = layer_fn(x)[neuron_index]` (Captum's default rule is `riemann_trapezoid`).

    Args:
        layer_fn: input batch to the layer's activations, one array `[batch, ...]`.
        head_fn: layer activations to the model's outputs.
        x: inputs (array or pytree) with a leading batch axis.
        neuron_index: the neuron's index in one example's activations (an int, or a tuple with
            one int per non-batch axis of the layer).
        baselines, target, method, n_steps, internal_batch_size, multiply_by_inputs,
            forward_kwargs: as in `integrated_gradients`.

    Returns:
        Attributions shaped like `x`.

    Raises:
        ValueError: a `neuron_index` outside the layer's shape, and as
            `integrated_gradients` (NaN/inf in concrete `x` or `baselines` raise; traced
            ones give non-finite attributions in their rows).
        TypeError: a `neuron_index` that is not an int or a tuple of ints, a `layer_fn`
            that does not return one array.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import neuron_conductance
        >>> layer_fn = lambda x: x * jnp.array([[2.0, 3.0]])
        >>> head_fn = lambda h: h.sum(axis=1)
        >>> x = jnp.array([[0.5, -1.0]])
        >>> neuron_conductance(layer_fn, head_fn, x, 1, method="gausslegendre", n_steps=2)
        Array([[ 0., -3.]], dtype=float32)
    """
    check_rule(method, n_steps)
    ibs = _check_internal_batch_size(internal_batch_size)
    inputs = as_inputs(x)
    model = _Composed(layer_fn, head_fn)
    ops = _ig_operands(model, inputs, baselines, target, forward_kwargs)
    layer = shape_of(layer_fn, inputs.x, ops["kwargs"])
    if not isinstance(layer, jax.ShapeDtypeStruct):
        raise TypeError(f"layer_fn must return one array for neuron_conductance, got {layer}")
    neuron = _as_neuron_index(neuron_index, layer.shape[1:])
    num_chunks, per_chunk = _add_path_tables(ops, method, n_steps, inputs.batch, ibs)
    config = _Config(
        layer_fn,
        head_fn,
        per_chunk=per_chunk,
        multiply_by_inputs=bool(multiply_by_inputs),
        neuron=neuron,
    )
    return _chunks.run(_neuron_chunk, _ig_finish, config, ops, inputs.x, num_chunks)


def _as_neuron_index(neuron_index, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = (neuron_index,) if isinstance(neuron_index, numbers.Integral) else neuron_index
    if not isinstance(index, tuple | list) or not all(
        isinstance(i, numbers.Integral) for i in index
    ):
        raise TypeError(f"neuron_index must be an int or a tuple of ints, got {neuron_index!r}")
    index = tuple(int(i) for i in index)
    if len(index) != len(shape) or any(not 0 <= i < n for i, n in zip(index, shape, strict=False)):
        raise ValueError(
            f"neuron_index={index} does not index one example's layer output of shape {shape}"
        )
    return index


def _neuron_chunk(config: _Config, c: jax.Array, ops: dict):
    steps = config.per_chunk
    batch = jax.tree.leaves(ops["x"])[0].shape[0]
    points = _path(ops["x"], ops["baselines"], ops["alphas"][c])
    kwargs, index = _rows_of(ops, steps)
    layer, layer_vjp = jax.vjp(lambda p: config.fn(p, **kwargs), points)
    weights = jnp.repeat(ops["weights"][c], batch)
    grads = _weighted_target_grad(config.head_fn, layer, kwargs, index, weights)
    mask = np.zeros(layer.shape[1:], bool)
    mask[config.neuron] = True
    (input_grads,) = layer_vjp(jnp.where(jnp.asarray(mask)[None], grads, jnp.zeros_like(grads)))
    return _per_step_sum(input_grads, steps)


# --------------------------------------------------------------------------------------------
# Noise tunnel and expected gradients: random variants, one key per sample.


def smoothgrad(
    key: ArrayLike,
    attribution_fn: Callable[[Any], Any],
    x: PyTree[Float[ArrayLike, " batch ..."]],
    *,
    num_samples: int = 5,
    stdev: float = 1.0,
    nt_type: str = "smoothgrad",
    batch_size: int | None = None,
):
    """Captum's `NoiseTunnel` around any attribution function: SmoothGrad and its variants.

    Evaluates `attribution_fn(x + stdev * N(0, 1))` for `num_samples` noise draws and returns
    their mean (`smoothgrad`), the mean of their squares (`smoothgrad_sq`) or their variance
    `E[a^2] - E[a]^2` (`vargrad`, as Captum computes it). `stdev` is absolute, as in Captum.
    Sample `s` draws its noise from `jax.random.split(key, num_samples)[s]`, so the result does
    not depend on `batch_size`, which bounds how many samples are evaluated at once (`vmap`ped;
    None: all at once).

    Args:
        key: PRNG key.
        attribution_fn: maps a batch shaped like `x` to attributions (any pytree), e.g.
            `lambda x: integrated_gradients(fn, x, target=t)`.
        x: inputs (array or pytree) with a leading batch axis.
        num_samples: number of noise draws.
        stdev: standard deviation of the noise (a float >= 0).
        nt_type: `smoothgrad`, `smoothgrad_sq` or `vargrad`.
        batch_size: samples evaluated at once.

    Returns:
        Attributions shaped like `attribution_fn(x)`.

    Raises:
        ValueError: `num_samples < 1`, unknown `nt_type`, negative `stdev`, an empty batch,
            NaN/inf in a concrete `x` (traced ones give non-finite attributions in the
            rows they touch).
        TypeError: `key` is not a PRNG key.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from xai_jax import smoothgrad
        >>> grad_fn = jax.grad(lambda x: jnp.sum(x**2))
        >>> x = jnp.array([[0.5, -1.0]])
        >>> smoothgrad(jax.random.key(0), grad_fn, x, num_samples=4, stdev=0.0)
        Array([[ 1., -2.]], dtype=float32)
    """
    key = as_key(key)
    num_samples = check_positive_int("num_samples", num_samples)
    check_choice("nt_type", nt_type, NT_TYPES)
    check_positive("stdev", stdev, allow_zero=True)
    size = num_samples if batch_size is None else check_positive_int("batch_size", batch_size)
    inputs = as_inputs(x)
    num_chunks, per_chunk = _chunking(num_samples, 1, size)
    ops = {"x": inputs.x, "stdev": jnp.asarray(stdev), "keys": jax.random.split(key, num_samples)}
    config = _Config(attribution_fn, per_chunk=per_chunk, nt_type=nt_type, num_samples=num_samples)
    out = shape_of(attribution_fn, inputs.x, {})
    return _chunks.run(_noise_chunk, _noise_finish, config, ops, (out, out), num_chunks)


def _chunk_keys(ops: dict, c: jax.Array, per_chunk: int) -> tuple[jax.Array, jax.Array]:
    """Chunk `c`'s keys and a mask of the real samples (the last chunk is padded)."""
    num_samples = ops["keys"].shape[0]
    pos = c * per_chunk + jnp.arange(per_chunk, dtype=c.dtype)  # int32 with x64 too
    return ops["keys"][jnp.minimum(pos, num_samples - 1)], pos < num_samples


def _noise(key: jax.Array, x, stdev: jax.Array):
    leaves, treedef = jax.tree.flatten(x)
    noisy = [
        leaf + stdev.astype(leaf.dtype) * jax.random.normal(k, leaf.shape, leaf.dtype)
        for k, leaf in zip(jax.random.split(key, len(leaves)), leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, noisy)


def _noise_chunk(config: _Config, c: jax.Array, ops: dict):
    keys, real = _chunk_keys(ops, c, config.per_chunk)
    attrs = jax.vmap(lambda k: config.fn(_noise(k, ops["x"], ops["stdev"])))(keys)

    def sums(a):
        a = jnp.where(real.reshape(-1, *([1] * (a.ndim - 1))), a, jnp.zeros((), a.dtype))
        return a.sum(0), (a * a).sum(0)

    first, second = zip(*(sums(a) for a in jax.tree.leaves(attrs)), strict=True)
    treedef = jax.tree.structure(attrs)
    return jax.tree.unflatten(treedef, first), jax.tree.unflatten(treedef, second)


def _noise_finish(config: _Config, total, ops: dict):
    sums, squares = total
    n = config.num_samples
    if config.nt_type == "smoothgrad":
        return jax.tree.map(lambda s: s / n, sums)
    if config.nt_type == "smoothgrad_sq":
        return jax.tree.map(lambda q: q / n, squares)
    return jax.tree.map(lambda s, q: q / n - (s / n) ** 2, sums, squares)


def expected_gradients(
    key: ArrayLike,
    fn: Callable[..., ArrayLike],
    x: PyTree[Float[ArrayLike, " batch ..."]],
    background: PyTree[Float[ArrayLike, " n ..."]],
    *,
    num_samples: int = 5,
    stdev: float = 0.0,
    target: ArrayLike | None = None,
    internal_batch_size: int | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Expected gradients (Captum's `GradientShap`): IG averaged over random baselines.

    For each example and sample: a baseline `b` drawn uniformly from the rows of `background`,
    an input `x' = x + stdev * N(0, 1)`, a point `a ~ U(0, 1)` on the path; the attribution is
    the mean over samples of `(x' - b) * dF_t(b + a (x' - b))/dx`. Its expectation is the IG
    averaged over the background distribution. Sample `s` draws from
    `jax.random.split(key, num_samples)[s]`, so `internal_batch_size` (the largest number of
    rows per model call, at least one sample of every example) does not change the result.

    Args:
        key: PRNG key.
        fn: model mapping a batch to outputs `[batch, ...]`.
        x: inputs (array or pytree) with a leading batch axis.
        background: baselines to draw from: `x`'s structure with a leading axis of any size.
        num_samples: draws per example.
        stdev: standard deviation of the noise added to the inputs (>= 0).
        target: as in `integrated_gradients`.
        internal_batch_size: largest number of rows per model call (None: all at once).

    Returns:
        Attributions shaped like `x`.

    Raises:
        ValueError: `num_samples < 1`, negative `stdev`, an empty batch, a `background`
            without rows or not shaped like `x`'s rows, target errors as in
            `integrated_gradients`, NaN/inf in concrete `x` or `background` (traced ones
            give non-finite attributions in the rows they touch: every row that drew a
            non-finite background row).
        TypeError: `key` is not a PRNG key.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from xai_jax import expected_gradients
        >>> fn = lambda x: x @ jnp.array([[1.0], [2.0]])  # linear: exact for any sample
        >>> x = jnp.array([[1.0, 1.0]])
        >>> background = jnp.zeros((3, 2))
        >>> expected_gradients(jax.random.key(0), fn, x, background, target=0)
        Array([[1., 2.]], dtype=float32)
    """
    key = as_key(key)
    num_samples = check_positive_int("num_samples", num_samples)
    check_positive("stdev", stdev, allow_zero=True)
    ibs = _check_internal_batch_size(internal_batch_size)
    inputs = as_inputs(x)
    background = as_background(background, inputs.x)
    ops = _ig_operands(fn, inputs, None, target, None)
    del ops["baselines"]
    num_chunks, per_chunk = _chunking(num_samples, inputs.batch, ibs)
    ops.update(background=background, stdev=jnp.asarray(stdev))
    ops["keys"] = jax.random.split(key, num_samples)
    config = _Config(fn, per_chunk=per_chunk, num_samples=num_samples)
    return _chunks.run(_expected_chunk, _expected_finish, config, ops, inputs.x, num_chunks)


def _expected_chunk(config: _Config, c: jax.Array, ops: dict):
    steps = config.per_chunk
    x = ops["x"]
    batch = jax.tree.leaves(x)[0].shape[0]
    num_background = jax.tree.leaves(ops["background"])[0].shape[0]
    keys, real = _chunk_keys(ops, c, steps)

    def draw(k):
        k_pick, k_alpha, k_noise = jax.random.split(k, 3)
        pick = jax.random.randint(k_pick, (batch,), 0, num_background)
        alpha = jax.random.uniform(k_alpha, (batch,), jax.tree.leaves(x)[0].dtype)
        return pick, alpha, _noise(k_noise, x, ops["stdev"])

    pick, alpha, noisy = jax.vmap(draw)(keys)  # [steps, batch], [steps, batch], [steps, *x]
    noisy = jax.tree.map(lambda v: v.reshape(-1, *v.shape[2:]), noisy)
    base = jax.tree.map(lambda bg: bg[pick.reshape(-1)], ops["background"])

    def point(n, b):
        a = alpha.reshape(-1, *([1] * (n.ndim - 1))).astype(n.dtype)
        return b + a * (n - b)

    points = jax.tree.map(point, noisy, base)
    kwargs, index = _rows_of(ops, steps)
    weights = jnp.repeat(real, batch).astype(alpha.dtype)
    grads = _weighted_target_grad(config.fn, points, kwargs, index, weights)
    return _per_step_sum(jax.tree.map(lambda g, n, b: g * (n - b), grads, noisy, base), steps)


def _expected_finish(config: _Config, total, ops: dict):
    return mark_invalid(jax.tree.map(lambda t: t / config.num_samples, total), ops["valid"])
