"""Attributions through a layer: layer integrated gradients, layer and neuron conductance.

The model is `head_fn(layer_fn(x))` (`xai_jax.haiku.split` gives the pair for a haiku model).
Layer integrated gradients integrates `head_fn` on the path between the layer's values at the
baseline and at the input; conductance runs the path in input space and follows it through
the layer (its finite differences for the layer's units, its gradient for one neuron). The
path, its chunking and the finish are `xai_jax._paths`'; these functions are also importable
from `xai_jax.integrated_gradients`.
"""

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int, PyTree

from xai_jax import _chunks, _paths
from xai_jax._blackbox import call, model_output
from xai_jax._checks import check_bool, check_positive_int
from xai_jax._inputs import as_baselines, as_forward_kwargs, as_inputs, as_target
from xai_jax._layer_split import checked_split
from xai_jax.quadrature import check_rule, rule

__all__ = ["layer_conductance", "layer_integrated_gradients", "neuron_conductance"]


def layer_integrated_gradients(
    layer_fn: Callable[..., Any],
    head_fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    baselines: PyTree[ArrayLike] | float | None = None,
    *,
    target: ArrayLike | None = None,
    method: str = "gausslegendre",
    n_steps: int | np.integer = 50,
    internal_batch_size: int | np.integer | None = None,
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
            A `layer_fn` whose output rows do not follow the input's (one per input row,
            for a batch and for twice it: rows mixed or dropped), a `head_fn` without one
            floating output row per layer row; each error names the function. A `layer_fn`
            that mixes rows but keeps their number (`h - h.mean(0)`) cannot be seen by shape
            and is not detected.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import layer_integrated_gradients
        >>> layer_fn = lambda x: jnp.tanh(2.0 * x)
        >>> head_fn = lambda h: h.sum(axis=1)
        >>> x = jnp.array([[0.5, -1.0]])
        >>> layer_integrated_gradients(layer_fn, head_fn, x)  # linear head: exactly tanh(2x)
        Array([[ 0.761..., -0.964...]], dtype=float32)
    """
    n_steps = check_rule(method, n_steps)
    by_inputs = check_bool("multiply_by_inputs", multiply_by_inputs)
    delta = check_bool("return_convergence_delta", return_convergence_delta)
    ibs = _paths.check_internal_batch_size(internal_batch_size)
    inputs = as_inputs(x)
    kwargs = as_forward_kwargs(forward_kwargs, inputs.batch)
    b = as_baselines(baselines, inputs.x)
    # the target is checked on the whole model's output shape before the layer runs
    model, _ = checked_split(layer_fn, head_fn, inputs.x, kwargs)
    as_target(target, model_output(model, inputs.x, kwargs), inputs.batch)
    both = jax.tree.map(lambda a, c: jnp.concatenate([a, c]), inputs.x, b)
    both_kwargs = {name: _paths.rows(v, 2) for name, v in kwargs.items()}
    layer = call(layer_fn, both, both_kwargs)
    layer_x = jax.tree.map(lambda v: v[: inputs.batch], layer)
    layer_b = jax.tree.map(lambda v: v[inputs.batch :], layer)
    # The layer's values are not user input: NaN/inf there (an overflowing layer) propagate
    # to the attributions rather than raise as if `x` held them.
    layer_inputs = as_inputs(layer_x, "layer_fn(x)", finite=False)
    ops = _paths.operands(head_fn, layer_inputs, layer_b, target, kwargs, finite=False)
    return _paths.integrate(
        head_fn,
        ops,
        rule(method, n_steps),
        ibs,
        multiply_by_inputs=by_inputs,
        delta=delta,
    )


# --------------------------------------------------------------------------------------------
# layer_conductance


class _ConductanceConfig(NamedTuple):
    layer_fn: Callable
    head_fn: Callable
    per_chunk: int  # differences per example and chunk (the chunk holds one point more)
    delta: bool  # also return the convergence delta


def layer_conductance(
    layer_fn: Callable[..., Any],
    head_fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    baselines: PyTree[ArrayLike] | float | None = None,
    *,
    target: ArrayLike | None = None,
    method: str = "gausslegendre",
    n_steps: int | np.integer = 50,
    internal_batch_size: int | np.integer | None = None,
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
            `layer_fn`/`head_fn` as `layer_integrated_gradients`.

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
    delta = check_bool("return_convergence_delta", return_convergence_delta)
    ibs = _paths.check_internal_batch_size(internal_batch_size)
    inputs = as_inputs(x)
    kwargs = as_forward_kwargs(forward_kwargs, inputs.batch)
    model, layer = checked_split(layer_fn, head_fn, inputs.x, kwargs)
    data = _paths.operands(model, inputs, baselines, target, kwargs)
    dtype = jax.tree.leaves(inputs.x)[0].dtype
    points = rule(method, n_steps + 1)
    table, num_chunks, per_chunk = _paths.path_table(points, inputs.batch, ibs, dtype, overlap=True)
    config = _ConductanceConfig(layer_fn, head_fn, per_chunk, delta)
    ops = _paths.PathOperands(data, table)
    return _chunks.run(_conductance_chunk, _conductance_finish, config, ops, layer, num_chunks)


def _conductance_chunk(
    config: _ConductanceConfig, c: Int[Array, ""], ops: _paths.PathOperands
) -> Any:
    """`sum_k (h(x_{k+1}) - h(x_k)) * dF_t/dh (x_k)` over the chunk's steps, per example."""
    data, steps = ops.data, config.per_chunk
    batch = _paths.batch_of(data.x)
    points = _paths.path(data.x, data.baselines, ops.table.alphas[c])
    kwargs, _ = _paths.repeated(data, steps + 1)
    layer = config.layer_fn(points, **kwargs)
    start = jax.tree.map(lambda h: h[: steps * batch], layer)
    kwargs, index = _paths.repeated(data, steps)
    grads = _paths.weighted_target_grad(
        config.head_fn, start, kwargs, index, jnp.ones(steps * batch, jnp.float32)
    )
    return jax.tree.map(
        lambda g, h: _paths.per_step_sum(g * (h[batch:] - h[:-batch]), steps), grads, layer
    )


def _conductance_finish(config: _ConductanceConfig, total: Any, ops: _paths.PathOperands) -> Any:
    model = _paths.Composed(config.layer_fn, config.head_fn)
    return _paths.finish(
        total, ops.data, multiply_by_inputs=False, delta_model=model if config.delta else None
    )


# --------------------------------------------------------------------------------------------
# neuron_conductance


class _NeuronConfig(NamedTuple):
    layer_fn: Callable
    head_fn: Callable
    per_chunk: int  # path points per example and chunk
    multiply_by_inputs: bool
    neuron: tuple[int, ...]  # the neuron's index in one example's layer output


def neuron_conductance(
    layer_fn: Callable[..., ArrayLike],
    head_fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    neuron_index: int | np.integer | Sequence[int | np.integer],
    baselines: PyTree[ArrayLike] | float | None = None,
    *,
    target: ArrayLike | None = None,
    method: str = "riemann_trapezoid",
    n_steps: int | np.integer = 50,
    internal_batch_size: int | np.integer | None = None,
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
            ones give non-finite attributions in their rows); `layer_fn`/`head_fn` as
            `layer_integrated_gradients`.
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
    n_steps = check_rule(method, n_steps)
    by_inputs = check_bool("multiply_by_inputs", multiply_by_inputs)
    ibs = _paths.check_internal_batch_size(internal_batch_size)
    inputs = as_inputs(x)
    kwargs = as_forward_kwargs(forward_kwargs, inputs.batch)
    model, layer = checked_split(layer_fn, head_fn, inputs.x, kwargs)
    data = _paths.operands(model, inputs, baselines, target, kwargs)
    if not isinstance(layer, jax.ShapeDtypeStruct):
        raise TypeError(f"layer_fn must return one array for neuron_conductance, got {layer}")
    neuron = _as_neuron_index(neuron_index, layer.shape[1:])
    dtype = jax.tree.leaves(inputs.x)[0].dtype
    table, num_chunks, per_chunk = _paths.path_table(
        rule(method, n_steps), inputs.batch, ibs, dtype
    )
    config = _NeuronConfig(layer_fn, head_fn, per_chunk, by_inputs, neuron)
    ops = _paths.PathOperands(data, table)
    return _chunks.run(_neuron_chunk, _neuron_finish, config, ops, inputs.x, num_chunks)


def _as_neuron_index(neuron_index: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = (neuron_index,) if isinstance(neuron_index, numbers.Integral) else neuron_index
    if not isinstance(index, tuple | list) or not all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool | np.bool_) for i in index
    ):
        raise TypeError(f"neuron_index must be an int or a tuple of ints, got {neuron_index!r}")
    index = tuple(int(i) for i in index)
    if len(index) != len(shape) or any(not 0 <= i < n for i, n in zip(index, shape, strict=False)):
        raise ValueError(
            f"neuron_index={index} does not index one example's layer output of shape {shape}"
        )
    return index


def _neuron_chunk(config: _NeuronConfig, c: Int[Array, ""], ops: _paths.PathOperands) -> Any:
    """`sum_k w_k dF_t/dn (x_k) * dn/dx (x_k)` over the chunk's steps, per example."""
    data, steps = ops.data, config.per_chunk
    batch = _paths.batch_of(data.x)
    points = _paths.path(data.x, data.baselines, ops.table.alphas[c])
    kwargs, index = _paths.repeated(data, steps)
    layer, layer_vjp = jax.vjp(lambda p: config.layer_fn(p, **kwargs), points)
    weights = jnp.repeat(ops.table.weights[c], batch)
    grads = _paths.weighted_target_grad(config.head_fn, layer, kwargs, index, weights)
    mask = np.zeros(layer.shape[1:], bool)
    mask[config.neuron] = True
    (input_grads,) = layer_vjp(jnp.where(jnp.asarray(mask)[None], grads, jnp.zeros_like(grads)))
    return _paths.per_step_sum(input_grads, steps)


def _neuron_finish(config: _NeuronConfig, total: Any, ops: _paths.PathOperands) -> Any:
    return _paths.finish(
        total, ops.data, multiply_by_inputs=config.multiply_by_inputs, delta_model=None
    )
