"""Gradient maps: saliency, input times gradient, GradientSHAP, and the layer maps Grad-CAM,
guided Grad-CAM, layer activation and layer gradient times activation.

Each is one gradient of the target output (one backward pass over the batch; GradientSHAP one
over its `n_samples * batch` random points), compiled and cached when called eagerly, inlined
under the caller's `jit`, `vmap` or `grad` (`xai_jax._chunks.call`), so every map is jittable,
vmappable, differentiable with respect to the model's parameters, and runs inside `smoothgrad`.
Captum's argument names and numbers; `target`, pytree inputs and `forward_kwargs` follow
`integrated_gradients`' rules. The layer methods take the `(layer_fn, head_fn)` split of the
other layer methods (`xai_jax.haiku.split`, `xai_jax.flax.split`, `xai_jax.equinox.split`).
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PyTree

from xai_jax import _chunks, _eager, _paths, _upsample
from xai_jax._blackbox import mark_invalid, model_output, selected, shape_of
from xai_jax._checks import as_key, check_bool, check_choice, check_positive_int, check_scale
from xai_jax._inputs import as_background, as_forward_kwargs, as_inputs, as_target
from xai_jax._layer_split import checked_split
from xai_jax.propagation import guided_backprop

__all__ = [
    "gradient_shap",
    "guided_gradcam",
    "input_x_gradient",
    "layer_activation",
    "layer_gradcam",
    "layer_gradient_x_activation",
    "saliency",
]


def _target_grad(fn: Callable, x: Any, ops: _paths.Operands) -> Any:
    """`dF_t/dx` of every row of `x` (each row's target output, `ops.index`)."""
    batch = _paths.batch_of(x)
    ones = jnp.ones(batch, jax.tree.leaves(x)[0].dtype)
    return _paths.weighted_target_grad(fn, x, ops.kwargs, ops.index, ones)


# --------------------------------------------------------------------------------------------
# saliency and input_x_gradient


class _InputConfig(NamedTuple):
    fn: Callable  # the model
    abs: bool  # saliency: the gradient's absolute value
    by_inputs: bool  # input_x_gradient: times the input


def _prepare_input_map(fn, x, target, forward_kwargs, use_abs, by_inputs):
    """`_eager`'s protocol: a later call re-checks NaN/inf in `x` and the target's range."""
    ops, out = _paths.operands_at(fn, x, target, forward_kwargs)
    run = functools.partial(_chunks.call, _input_map, _InputConfig(fn, use_abs, by_inputs), ops)
    return _eager.Prepared(run, _eager.value_checks(out, _paths.batch_of(ops.x), ("x",)))


def _input_map_call(fn, x, target, forward_kwargs, use_abs: bool, by_inputs: bool):
    arrays = dict(x=x, target=target, forward_kwargs=forward_kwargs)
    statics = dict(use_abs=use_abs, by_inputs=by_inputs)
    return _eager.call(_prepare_input_map, fn, arrays, statics)


def _input_map(config: _InputConfig, ops: _paths.Operands) -> Any:
    grads = _target_grad(config.fn, ops.x, ops)
    if config.abs:
        grads = jax.tree.map(jnp.abs, grads)
    if config.by_inputs:
        grads = jax.tree.map(jnp.multiply, grads, ops.x)
    return mark_invalid(grads, ops.valid)


def saliency(
    fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    *,
    target: ArrayLike | None = None,
    abs: bool = True,  # Captum's name, shadowing the builtin inside
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Saliency map, the target output's gradient: Captum's `Saliency`.

    `attr = |dF_t(x)/dx|` (Simonyan et al., 2013), or the signed gradient with `abs=False`.

    Args:
        fn: model mapping a batch (an array, or the pytree `x`) to outputs `[batch, ...]`.
        x: inputs with a leading batch axis: an array or a pytree of arrays; attributions have
            the same structure.
        target: which output, as in `integrated_gradients` (None for one output per example).
        abs: return the gradient's absolute value (Captum's default) or the gradient.
        forward_kwargs: per-example arrays passed to `fn` as keyword arguments, not attributed.

    Returns:
        Attributions shaped like `x`.

    Raises:
        ValueError: missing or out-of-range `target`, mismatched `forward_kwargs`, an empty
            batch, NaN/inf in a concrete `x` (traced ones give non-finite attributions in the
            rows they touch); a traced out-of-range target makes that example's map NaN.
        TypeError: non-integer `target`, a non-bool `abs`, a model that does not return one
            floating array.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import saliency
        >>> fn = lambda x: x @ jnp.array([[1.0, 0.0], [-2.0, 1.0]])
        >>> saliency(fn, jnp.array([[0.5, 3.0]]), target=0)
        Array([[1., 2.]], dtype=float32)
    """
    use_abs = check_bool("abs", abs)
    return _input_map_call(fn, x, target, forward_kwargs, use_abs, False)


def input_x_gradient(
    fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    *,
    target: ArrayLike | None = None,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Input times gradient: Captum's `InputXGradient`.

    `attr = x * dF_t(x)/dx`; on a linear model without bias it sums to `F_t(x)`.

    Args:
        fn: model mapping a batch (an array, or the pytree `x`) to outputs `[batch, ...]`.
        x: inputs with a leading batch axis: an array or a pytree of arrays.
        target: which output, as in `integrated_gradients`.
        forward_kwargs: per-example arrays passed to `fn` as keyword arguments, not attributed.

    Returns:
        Attributions shaped like `x`.

    Raises:
        ValueError, TypeError: as `saliency`.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import input_x_gradient
        >>> fn = lambda x: x @ jnp.array([[1.0, 0.0], [-2.0, 1.0]])
        >>> input_x_gradient(fn, jnp.array([[0.5, 3.0]]), target=0)
        Array([[ 0.5, -6. ]], dtype=float32)
    """
    return _input_map_call(fn, x, target, forward_kwargs, False, True)


# --------------------------------------------------------------------------------------------
# gradient_shap


class _ShapConfig(NamedTuple):
    fn: Callable  # the model
    n_samples: int
    delta: bool  # also return the convergence delta per example and sample


class _ShapOperands(NamedTuple):
    data: _paths.Operands  # x, target, kwargs (no baselines)
    baselines: Any  # x's structure, [n_baselines, ...] leaves: the distribution
    stdev: jax.Array  # scalar
    key: jax.Array  # split into one key per sample inside the compiled map


def gradient_shap(
    key: ArrayLike,
    fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    baselines: PyTree[ArrayLike],
    *,
    n_samples: int | np.integer = 5,
    stdevs: ArrayLike = 0.0,
    target: ArrayLike | None = None,
    return_convergence_delta: bool = False,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]] | tuple[PyTree[Float[Array, " batch ..."]], Array]:
    """GradientSHAP: Captum's `GradientShap` (shap's `GradientExplainer`).

    For each example and sample `s`: a baseline `b_s` drawn uniformly from the rows of
    `baselines` (the reference distribution), a noisy input `x_s = x + stdevs * N(0, 1)`, a
    point `a_s ~ U(0, 1)` on the line; the attribution is the mean over samples of
    `(x_s - b_s) * dF_t(b_s + a_s (x_s - b_s))/dx`, whose expectation is integrated gradients
    averaged over the distribution. With `return_convergence_delta`, Captum's delta of each
    sample, `delta[i, s] = sum(attr_s) - (F_t(x_s) - F_t(b_s))` with `attr_s` that sample's
    term, `[batch, n_samples]` (Captum returns the same numbers flat, example-major:
    `delta.reshape(-1)`).

    Draws: sample `s` of every example uses `k = jax.random.split(key, n_samples)[s]`, split
    into `(k_pick, k_alpha, k_noise)`: `randint(k_pick, (batch,), 0, n_baselines)`,
    `uniform(k_alpha, (batch,))`, and per leaf of `x` (keys `split(k_noise, num_leaves)`) a
    standard normal of the leaf's shape; these are `expected_gradients`' draws, so both give
    the same attributions for the same key. Captum draws with NumPy's and torch's global
    generators, so its numbers are matched by running its code on these draws (the test
    does). For a pytree `x` one baseline row is drawn per example and sample for all leaves
    (a row of the joint distribution; Captum draws an index per input tensor). All
    `n_samples * batch` points go through the model in one call (Captum's default).

    Args:
        key: PRNG key.
        fn: model mapping a batch (an array, or the pytree `x`) to outputs `[batch, ...]`.
        x: inputs with a leading batch axis: an array or a pytree of arrays.
        baselines: the reference distribution: `x`'s structure with leaves `[n_baselines,
            ...]` (any number >= 1 of rows shaped like `x`'s).
        n_samples: draws per example (static).
        stdevs: standard deviation of the Gaussian noise on the inputs (a finite float >= 0,
            one for all leaves; it may be traced).
        target: which output, as in `integrated_gradients`.
        return_convergence_delta: also return the delta `[batch, n_samples]`.
        forward_kwargs: per-example arrays passed to `fn` as keyword arguments, repeated for
            every sample and not attributed.

    Returns:
        Attributions shaped like `x`, or `(attributions, delta [batch, n_samples])`.

    Raises:
        ValueError: `n_samples < 1`, a negative or infinite concrete `stdevs`, `baselines`
            without rows or not shaped like `x`'s rows, target and `forward_kwargs` errors
            as in `integrated_gradients`, an empty batch, NaN/inf in concrete `x` or
            `baselines`.
        TypeError: `key` is not a PRNG key, non-integer `target`, a non-bool
            `return_convergence_delta`.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from xai_jax import gradient_shap
        >>> fn = lambda x: x @ jnp.array([[1.0], [2.0]])  # linear: exact for any draw
        >>> x = jnp.array([[1.0, 1.0]])
        >>> attr, delta = gradient_shap(jax.random.key(0), fn, x, jnp.zeros((3, 2)), target=0,
        ...                             return_convergence_delta=True)
        >>> attr
        Array([[1., 2.]], dtype=float32)
        >>> delta.shape
        (1, 5)
    """
    n_samples = check_positive_int("n_samples", n_samples)
    delta = check_bool("return_convergence_delta", return_convergence_delta)
    arrays = dict(key=key, x=x, baselines=baselines, target=target,
                  forward_kwargs=forward_kwargs, stdevs=stdevs)  # fmt: skip
    return _eager.call(_prepare_shap, fn, arrays, dict(n_samples=n_samples, delta=delta))


def _prepare_shap(fn, key, x, baselines, target, forward_kwargs, stdevs, n_samples, delta):
    """`_eager`'s protocol: a later call re-checks NaN/inf in `x` and `baselines`, `stdevs`
    and the target's range."""
    key = as_key(key)
    check_scale("stdevs", stdevs)
    data, out = _paths.operands_at(fn, x, target, forward_kwargs)
    rows = as_background(baselines, data.x, "baselines")
    ops = _ShapOperands(data, rows, jnp.asarray(stdevs), key)
    run = functools.partial(_chunks.call, _shap_map, _ShapConfig(fn, n_samples, delta), ops)
    checks = _eager.value_checks(out, _paths.batch_of(data.x), ("x", "baselines"), ("stdevs",))
    return _eager.Prepared(run, checks)


def _shap_map(config: _ShapConfig, ops: _ShapOperands) -> Any:
    data, n = ops.data, config.n_samples
    x = data.x
    batch = _paths.batch_of(x)
    num_baselines = _paths.batch_of(ops.baselines)
    dtype = jax.tree.leaves(x)[0].dtype

    def draw(k):
        k_pick, k_alpha, k_noise = jax.random.split(k, 3)
        pick = jax.random.randint(k_pick, (batch,), 0, num_baselines)
        alpha = jax.random.uniform(k_alpha, (batch,), dtype)
        return pick, alpha, _paths.noise(k_noise, x, ops.stdev)

    pick, alpha, noisy = jax.vmap(draw)(jax.random.split(ops.key, n))
    # [n, batch], [n, batch], [n, *x]; the noisy inputs are materialised once (XLA would
    # otherwise recompute the random bits in every fusion that reads them)
    noisy = jax.lax.optimization_barrier(noisy)
    noisy = jax.tree.map(lambda v: v.reshape(-1, *v.shape[2:]), noisy)  # sample-major rows
    base = jax.tree.map(lambda b: b[pick.reshape(-1)], ops.baselines)
    diffs = jax.tree.map(jnp.subtract, noisy, base)

    def point(d, b):
        return b + alpha.reshape(-1, *([1] * (d.ndim - 1))).astype(d.dtype) * d

    kwargs, index = _paths.repeated(data, n)
    points = jax.tree.map(point, diffs, base)
    ones = jnp.ones(n * batch, dtype)
    grads = _paths.weighted_target_grad(config.fn, points, kwargs, index, ones)
    terms = jax.tree.map(jnp.multiply, grads, diffs)
    attr = mark_invalid(jax.tree.map(lambda t: t / n, _paths.per_step_sum(terms, n)), data.valid)
    if not config.delta:
        return attr
    sums = sum(t.reshape(n * batch, -1).sum(axis=1) for t in jax.tree.leaves(terms))
    both = jax.tree.map(lambda v, b: jnp.concatenate([v, b]), noisy, base)
    kwargs2, index2 = _paths.repeated(data, 2 * n)
    f = selected(config.fn(both, **kwargs2), index2)
    delta = sums - (f[: n * batch] - f[n * batch :])
    return attr, mark_invalid(delta.reshape(n, batch).T, data.valid)


# --------------------------------------------------------------------------------------------
# Layer maps on (layer_fn, head_fn)


class _LayerConfig(NamedTuple):
    layer_fn: Callable
    head_fn: Callable
    mode: str  # "activation", "gradient", "gradient_x_activation", "gradcam"
    channel_axis: int  # gradcam: the layer's channel axis (>= 1)
    relu: bool  # gradcam: relu of the map


def _prepare_layer(layer_fn, x, target, forward_kwargs, head_fn, mode, channel_axis, relu):
    """`_eager`'s protocol for the layer maps: the split checked first, then the target (none
    for `mode="activation"`) and Grad-CAM's layer; a later call re-checks NaN/inf in `x` and
    the target's range."""
    inputs = as_inputs(x)
    kwargs = as_forward_kwargs(forward_kwargs, inputs.batch)
    model, layer = checked_split(layer_fn, head_fn, inputs.x, kwargs)
    out = None
    ops = _paths.Operands(inputs.x, None, None, None, kwargs)
    if mode != "activation":
        out = model_output(model, inputs.x, kwargs)
        t = as_target(target, out, inputs.batch)
        ops = ops._replace(index=t.index, valid=t.valid)
    if mode == "gradcam":
        channel_axis = _gradcam_axis(layer, channel_axis)
    config = _LayerConfig(layer_fn, head_fn, mode, channel_axis, relu)
    run = functools.partial(_chunks.call, _layer_map, config, ops)
    return _eager.Prepared(run, _eager.value_checks(out, inputs.batch, ("x",)))


def _layer_call(layer_fn, head_fn, x, target, forward_kwargs, mode, channel_axis=0, relu=False):
    arrays = dict(x=x, target=target, forward_kwargs=forward_kwargs)
    statics = dict(head_fn=head_fn, mode=mode, channel_axis=channel_axis, relu=relu)
    return _eager.call(_prepare_layer, layer_fn, arrays, statics)


def _gradcam_axis(layer, channel_axis: int) -> int:
    """Grad-CAM's channel axis of the layer, checked and made non-negative."""
    if not isinstance(layer, jax.ShapeDtypeStruct):
        raise TypeError(f"layer_fn must return one array for layer_gradcam, got {layer}")
    if layer.ndim < 3:
        raise ValueError(
            f"layer_gradcam needs a layer with spatial axes ([batch, ..., channels, ...] of "
            f"rank >= 3), but layer_fn returns shape {layer.shape}"
        )
    axis = int(channel_axis)
    if not -layer.ndim < axis < layer.ndim or axis == 0:
        raise ValueError(
            f"channel_axis={axis} is out of range for a layer of shape {layer.shape}: it must "
            f"name a non-batch axis (1 <= channel_axis < {layer.ndim}, or -{layer.ndim - 1} "
            "<= channel_axis <= -1)"
        )
    return axis % layer.ndim


def _layer_map(config: _LayerConfig, ops: _paths.Operands) -> Any:
    layer = config.layer_fn(ops.x, **ops.kwargs)
    if config.mode == "activation":
        return layer
    grads = _target_grad(config.head_fn, layer, ops)
    if config.mode == "gradient":
        out = grads
    elif config.mode == "gradient_x_activation":
        out = jax.tree.map(jnp.multiply, grads, layer)
    else:  # Grad-CAM: channel weights = gradient averaged over the spatial axes
        axis = config.channel_axis
        spatial = tuple(a for a in range(1, layer.ndim) if a != axis)
        weights = jnp.mean(grads, axis=spatial, keepdims=True)
        out = jnp.sum(weights * layer, axis=axis, keepdims=True)
        if config.relu:
            out = jax.nn.relu(out)
    return mark_invalid(out, ops.valid)


def layer_activation(
    layer_fn: Callable[..., Any],
    head_fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    *,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """The layer's activations: Captum's `LayerActivation`.

    `layer_fn(x)`, after the same checks of the split as every layer method (`head_fn` is
    only checked: it takes the split a front end returns, so one pair serves every method).

    Args:
        layer_fn: input batch to the layer's activations (an array or a pytree).
        head_fn: layer activations to the model's outputs.
        x: inputs with a leading batch axis: an array or a pytree of arrays.
        forward_kwargs: per-example arrays passed to both functions as keyword arguments.

    Returns:
        `layer_fn(x)`: the layer's output, batch axis first.

    Raises:
        ValueError: a `layer_fn` whose output rows do not follow the input's, a `head_fn`
            without one floating output row per layer row (each error names the function),
            mismatched `forward_kwargs`, an empty batch, NaN/inf in a concrete `x`.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import layer_activation
        >>> layer_fn = lambda x: jnp.maximum(x, 0.0)
        >>> head_fn = lambda h: h.sum(axis=1)
        >>> layer_activation(layer_fn, head_fn, jnp.array([[0.5, -1.0]]))
        Array([[0.5, 0. ]], dtype=float32)
    """
    return _layer_call(layer_fn, head_fn, x, None, forward_kwargs, "activation")


def layer_gradient_x_activation(
    layer_fn: Callable[..., Any],
    head_fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    *,
    target: ArrayLike | None = None,
    multiply_by_inputs: bool = True,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Layer gradient times activation: Captum's `LayerGradientXActivation`.

    `attr = h * dF_t/dh` at `h = layer_fn(x)`, with `F = head_fn(layer_fn(.))`; with
    `multiply_by_inputs=False` the layer gradient `dF_t/dh` itself.

    Args:
        layer_fn: input batch to the layer's activations (an array or a pytree).
        head_fn: layer activations to the model's outputs.
        x: inputs with a leading batch axis: an array or a pytree of arrays.
        target: which output, as in `integrated_gradients`.
        multiply_by_inputs: multiply the gradient by the activation (Captum's default).
        forward_kwargs: per-example arrays passed to both functions as keyword arguments.

    Returns:
        Attributions shaped like `layer_fn(x)`.

    Raises:
        ValueError, TypeError: as `saliency`, and `layer_fn`/`head_fn` as
            `layer_activation`; a non-bool `multiply_by_inputs`.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import layer_gradient_x_activation
        >>> layer_fn = lambda x: 2.0 * x
        >>> head_fn = lambda h: h @ jnp.array([[1.0], [3.0]])
        >>> layer_gradient_x_activation(layer_fn, head_fn, jnp.array([[0.5, -1.0]]), target=0)
        Array([[ 1., -6.]], dtype=float32)
    """
    by_inputs = check_bool("multiply_by_inputs", multiply_by_inputs)
    mode = "gradient_x_activation" if by_inputs else "gradient"
    return _layer_call(layer_fn, head_fn, x, target, forward_kwargs, mode)


def layer_gradcam(
    layer_fn: Callable[..., ArrayLike],
    head_fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    *,
    target: ArrayLike | None = None,
    relu_attributions: bool = False,
    channel_axis: int = -1,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> Float[Array, " batch ..."]:
    """Grad-CAM at a layer: Captum's `LayerGradCam`.

    With `h = layer_fn(x)` (`[batch, ..., channels, ...]`) and `F = head_fn(layer_fn(.))`:
    per channel `c` the weight `w_c = mean_spatial dF_t/dh_c`, and the map
    `sum_c w_c h_c`, kept as a size-1 channel axis: `[batch, 1, H, W]` for NCHW
    (`channel_axis=1`, Captum's layout and numbers), `[batch, H, W, 1]` for NHWC (the default
    `channel_axis=-1`, flax's and haiku's convolutions). Every axis but the batch and channel
    axes is spatial (1-D and 3-D layers work too). Upsample the map to the input size for
    display (Captum's `LayerAttribution.interpolate`).

    Args:
        layer_fn: input batch to the layer's activations: one array with at least one spatial
            axis (`[batch, ...]` of rank >= 3).
        head_fn: layer activations to the model's outputs.
        x: inputs with a leading batch axis: an array or a pytree of arrays.
        target: which output, as in `integrated_gradients`.
        relu_attributions: apply a ReLU to the map (Grad-CAM's paper; Captum's default False).
        channel_axis: the layer's channel axis (static; negative counts from the end; not the
            batch axis).
        forward_kwargs: per-example arrays passed to both functions as keyword arguments.

    Returns:
        The map `[batch, ...]`: the layer's shape with the channel axis of size 1.

    Raises:
        ValueError: a layer without spatial axes (rank < 3: Grad-CAM's channel weights would
            be the gradient itself), `channel_axis` out of range or the batch axis, and
            `layer_fn`/`head_fn`, target and input errors as `layer_gradient_x_activation`.
        TypeError: a `layer_fn` that does not return one array, a non-int `channel_axis`, a
            non-bool `relu_attributions`.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import layer_gradcam
        >>> layer_fn = lambda x: x  # [batch, H, W, C] with H = 1, W = 2, C = 2
        >>> head_fn = lambda h: h[..., 0].sum(axis=(1, 2), keepdims=True)[:, 0]
        >>> x = jnp.array([[[[1.0, 5.0], [3.0, 7.0]]]])
        >>> layer_gradcam(layer_fn, head_fn, x, target=0)[..., 0]  # w = (1, 0)
        Array([[[1., 3.]]], dtype=float32)
    """
    relu = check_bool("relu_attributions", relu_attributions)
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, int | np.integer):
        raise TypeError(
            f"channel_axis must be an int, got {type(channel_axis).__name__} {channel_axis!r}"
        )
    axis = int(channel_axis)
    return _layer_call(layer_fn, head_fn, x, target, forward_kwargs, "gradcam", axis, relu)


_INTERPOLATE_MODES = ("nearest",)


def guided_gradcam(
    layer_fn: Callable[..., ArrayLike],
    head_fn: Callable[..., ArrayLike],
    x: ArrayLike,
    *,
    target: ArrayLike | None = None,
    channel_axis: int = -1,
    interpolate_mode: str = "nearest",
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> Float[Array, " batch ..."]:
    """Guided Grad-CAM: Captum's `GuidedGradCam`.

    `guided_backprop(F, x) * up(layer_gradcam(..., relu_attributions=True))` with
    `F = head_fn(layer_fn(.))`: the Grad-CAM map of the layer (ReLU-ed, as Captum), upsampled
    to the input's spatial size by torch's nearest rule (Captum's
    `LayerAttribution.interpolate`) and broadcast over the input's channel axis, times the
    guided-backpropagation map of the whole model (its ReLU rule found in the jaxpr, so
    functional activations count too). The input has the layer's layout: `channel_axis`
    names the channel axis of both (`1` for NCHW, Captum's numbers; `-1` for NHWC).

    Args:
        layer_fn: input batch to the layer's activations: one array with spatial axes.
        head_fn: layer activations to the model's outputs.
        x: one input array `[batch, ...]` of the layer's rank (Captum's tuple inputs are not
            taken: the map is upsampled to this array's spatial axes).
        target: which output, as in `integrated_gradients`.
        channel_axis: the channel axis of the layer and the input (static, not the batch).
        interpolate_mode: `"nearest"` (Captum's default; its bilinear modes are not offered).
        forward_kwargs: per-example arrays passed to both functions as keyword arguments.

    Returns:
        The map, shaped like `x`.

    Raises:
        ValueError: an unknown `interpolate_mode`, an `x` that is a pytree or not of the
            layer's rank, and every error of `layer_gradcam`.
        TypeError: as `layer_gradcam`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import guided_gradcam
        >>> layer_fn = lambda x: jax.nn.relu(x)  # [batch, W, C] with W = 2, C = 1
        >>> head_fn = lambda h: 3.0 * h.sum(axis=(1, 2))[:, None]
        >>> guided_gradcam(layer_fn, head_fn, jnp.array([[[1.0], [-2.0]]]), target=0)[..., 0]
        Array([[9., 0.]], dtype=float32)
    """
    mode = check_choice("interpolate_mode", interpolate_mode, _INTERPOLATE_MODES)
    if jax.tree.structure(x).num_nodes != 1:
        raise ValueError(
            "guided_gradcam takes one input array x (the map is upsampled to its spatial "
            f"axes), got a pytree {jax.tree.structure(x)}"
        )
    inputs = as_inputs(x)
    layer = shape_of(layer_fn, inputs.x, as_forward_kwargs(forward_kwargs, inputs.batch))
    if isinstance(layer, jax.ShapeDtypeStruct) and layer.ndim != inputs.x.ndim:
        raise ValueError(
            f"guided_gradcam needs x with the layer's layout: x has shape {inputs.x.shape}, "
            f"layer_fn(x) {layer.shape} (the same rank, channel_axis={channel_axis} in both)"
        )
    cam = layer_gradcam(
        layer_fn, head_fn, inputs.x, target=target, relu_attributions=True,
        channel_axis=channel_axis, forward_kwargs=forward_kwargs,
    )  # fmt: skip
    guided = guided_backprop(
        _paths.Composed(layer_fn, head_fn), inputs.x, target=target,
        forward_kwargs=forward_kwargs,
    )  # fmt: skip
    return _chunks.call(_guided_finish, _Upsample(channel_axis % cam.ndim, mode), (guided, cam))


class _Upsample(NamedTuple):
    channel_axis: int
    mode: str


def _guided_finish(config: _Upsample, operands) -> jax.Array:
    guided, cam = operands
    spatial = [a for a in range(1, cam.ndim) if a != config.channel_axis]
    up = _upsample.nearest(cam, [guided.shape[a] for a in spatial], spatial)
    return guided * up
