"""Modified-backward-pass attributions on any JAX function: guided backprop to DeepLift and LRP.

Captum finds the nonlinearities of a model through `nn.Module` hooks, so a model calling
`F.relu` gets wrong DeepLift and guided-backprop maps without a warning. Here the backward pass
is modified on the function's jaxpr (`xai_jax._propagation`): through nested `jit`,
`custom_jvp` (`jax.nn.relu`), `custom_vjp`, `remat` and `scan`, for haiku, flax, equinox and
plain functions alike. Each rule is a `jax.custom_vjp` of its residuals, so every map is
jittable, vmappable and differentiable with respect to the model's parameters.

Rules are values (zennit's composites): `lrp(..., rule=...)` takes a name or a mapping from
primitive names to rule objects (`Epsilon`, `Gamma`, `ZPlus`, or your own with a
`backward(site, g)` method), and `propagation_gradient` runs any mapping of rules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PyTree

from xai_jax import _chunks, _eager, _paths, _propagation
from xai_jax._blackbox import mark_invalid, model_output, selected
from xai_jax._checks import check_bool, check_choice, check_scale
from xai_jax._inputs import (
    as_background,
    as_baselines,
    as_forward_kwargs,
    as_inputs,
    as_target,
)
from xai_jax._layer_split import checked_split

__all__ = [
    "Epsilon",
    "Gamma",
    "ZPlus",
    "deconvolution",
    "deeplift",
    "deeplift_shap",
    "guided_backprop",
    "layer_deeplift",
    "lrp",
    "propagation_gradient",
]

LRP_RULES = ("epsilon", "gamma", "z_plus")
_WEIGHTED = ("dot_general", "conv_general_dilated")
_POOLS = ("reduce_window_max", "reduce_window_sum", "reduce_sum")


# --------------------------------------------------------------------------------------------
# Rules: small custom_vjp functions of their residuals.


@jax.custom_vjp
def _guided_relu(z):
    return jnp.maximum(z, jnp.zeros((), z.dtype))


_guided_relu.defvjp(
    lambda z: (_guided_relu(z), z),
    lambda z, g: (jnp.maximum(g * (z > 0).astype(g.dtype), jnp.zeros((), g.dtype)),),
)


@jax.custom_vjp
def _deconv_relu(z):
    return jnp.maximum(z, jnp.zeros((), z.dtype))


_deconv_relu.defvjp(
    lambda z: (_deconv_relu(z), None),
    lambda _, g: (jnp.maximum(g, jnp.zeros((), g.dtype)),),
)


def _guided(z):
    return (_guided_relu(z[0]),)


def _deconv(z):
    return (_deconv_relu(z[0]),)


def _zeros(tree):
    return jax.tree.map(jnp.zeros_like, tree)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rescale(f, sx, sr, eps, consts):
    return f(sx, *consts)


def _rescale_fwd(f, sx, sr, eps, consts):
    return f(sx, *consts), (sx, sr, eps, consts)


def _rescale_bwd(f, res, g):
    sx, sr, eps, consts = res
    d = sx - sr
    small = jnp.abs(d) < eps
    yx, slope = jax.jvp(lambda s: f(s, *consts), (sx,), (jnp.ones_like(sx),))
    ratio = (yx - f(sr, *consts)) / jnp.where(small, jnp.ones_like(d), d)
    return (
        g * jnp.where(small, slope, ratio),
        jnp.zeros_like(sr),
        jnp.zeros_like(eps),
        _zeros(consts),
    )


_rescale.defvjp(_rescale_fwd, _rescale_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _softmax_rescale(f, ax, ar, eps, consts):
    return f(ax, *consts)


def _softmax_fwd(f, ax, ar, eps, consts):
    return f(ax, *consts), (ax, ar, eps, consts)


def _softmax_bwd(f, res, g):
    ax, ar, eps, consts = res
    d = ax - ar
    small = jnp.abs(d) < eps
    yx, vjp = jax.vjp(lambda a: f(a, *consts), ax)
    ratio = g * (yx - f(ar, *consts)) / jnp.where(small, jnp.ones_like(d), d)
    unnorm = jnp.where(small, vjp(g)[0], ratio)
    # Captum normalises over the whole tensor (every example): the mean it subtracts
    out = unnorm - jnp.mean(unnorm)
    return out, jnp.zeros_like(ar), jnp.zeros_like(eps), _zeros(consts)


_softmax_rescale.defvjp(_softmax_fwd, _softmax_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _maxpool(pool, ax, ar, eps, operands):
    return pool(ax, operands)


def _maxpool_fwd(pool, ax, ar, eps, operands):
    return pool(ax, operands), (ax, ar, eps, operands)


def _maxpool_bwd(pool, res, g):
    # Captum's maxpool rule: the cross maximum of the two pooled outputs, its deltas spread back
    # through each lane's max indices, divided by the input delta (the gradient where it is 0)
    ax, ar, eps, operands = res
    ox, vjp_x = jax.vjp(lambda a: pool(a, operands), ax)
    orf, vjp_r = jax.vjp(lambda a: pool(a, operands), ar)
    cross = jnp.maximum(ox, orf)
    spread = vjp_x(g * (cross - orf))[0] + vjp_r(g * (ox - cross))[0]
    d = ax - ar
    small = jnp.abs(d) < eps
    out = jnp.where(small, vjp_x(g)[0], spread / jnp.where(small, jnp.ones_like(d), d))
    return out, jnp.zeros_like(ar), jnp.zeros_like(eps), _zeros(operands)


_maxpool.defvjp(_maxpool_fwd, _maxpool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _passthrough(f, s, consts):
    return f(s, *consts)


_passthrough.defvjp(
    lambda f, s, consts: (f(s, *consts), consts),
    lambda f, consts, g: (g, _zeros(consts)),
)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _custom(rule, static, a, operands, hyper):
    return static[1](a, operands)


def _custom_fwd(rule, static, a, operands, hyper):
    return static[1](a, operands), (a, operands, hyper)


def _custom_bwd(rule, static, res, g):
    a, operands, hyper = res
    site = _propagation.Site(static[0], static[1], (a,), list(operands), static[2])
    return rule.backward(site, g, hyper), _zeros(operands), _zeros(hyper)


_custom.defvjp(_custom_fwd, _custom_bwd)


def _stabilised(z, epsilon):
    sign = jnp.where(z >= 0, jnp.ones_like(z), -jnp.ones_like(z))
    return z + sign * epsilon


class Epsilon(NamedTuple):
    """LRP's epsilon rule (Captum's `EpsilonRule`): `R_in = a * J^T (R / (z + eps sign z))`,
    `z` the layer's output with its bias, `J` its map; the identity rule of Captum's pooling
    layers too. `epsilon` None takes the one `lrp` is called with."""

    epsilon: float | None = None

    def backward(self, site, g, hyper):
        (a,) = site.a
        eps = hyper["epsilon"] if self.epsilon is None else self.epsilon
        z, vjp = jax.vjp(lambda u: site.apply(u, site.operands), a)
        return a * vjp(g / _stabilised(z, eps))[0]


class Gamma(NamedTuple):
    """LRP's gamma rule (Captum's `GammaRule`): the weights `w + gamma * max(w, 0)` in the
    backward pass, the bias kept. `gamma` None takes the one `lrp` is called with."""

    gamma: float | None = None

    def backward(self, site, g, hyper):
        gamma = hyper["gamma"] if self.gamma is None else self.gamma
        n = site.n_weights
        weights = [w + gamma * jnp.maximum(w, jnp.zeros((), w.dtype)) for w in site.operands[:n]]
        weights += site.operands[n:]
        return Epsilon().backward(site._replace(operands=weights), g, hyper)


class ZPlus(NamedTuple):
    """LRP's z+ rule (Captum's `Alpha1_Beta0_Rule`): only the positive weights, the bias kept."""

    def backward(self, site, g, hyper):
        n = site.n_weights
        weights = [jnp.maximum(w, jnp.zeros((), w.dtype)) for w in site.operands[:n]]
        weights += site.operands[n:]
        return Epsilon().backward(site._replace(operands=weights), g, hyper)


def _layer_rule(rule, hyper):
    def apply(site):
        static = (site.primitive, site.apply, site.n_weights)
        return (_custom(rule, static, site.a[0], list(site.operands), hyper),)

    return apply


def _deeplift_rules(eps) -> _propagation.Rules:
    def elementwise(s, f, consts):
        return (_rescale(f, s[0], s[1], eps, consts), f(s[1], *consts))

    def softmax(a, f, consts):
        return (_softmax_rescale(f, a[0], a[1], eps, consts), f(a[1], *consts))

    def maxpool(site):
        pool = site.apply
        return (
            _maxpool(pool, site.a[0], site.a[1], eps, site.operands),
            pool(site.a[1], site.operands),
        )

    return _propagation.Rules(
        lanes=2,
        elementwise=elementwise,
        softmax=softmax,
        layers=(("reduce_window_max", maxpool),),
        strict=True,
        name="deeplift",
    )


def _lrp_rules(rules: tuple, hyper) -> _propagation.Rules:
    def elementwise(s, f, consts):
        return (_passthrough(f, s[0], consts),)

    return _propagation.Rules(
        lanes=1,
        elementwise=elementwise,
        layers=tuple((name, _layer_rule(rule, hyper)) for name, _, rule in rules),
        strict=True,
        fuse=True,
        name="lrp",
    )


def _as_lrp_rules(rule) -> tuple:
    if isinstance(rule, Mapping):
        pairs = []
        for name, r in rule.items():
            if not isinstance(name, str) or not callable(getattr(r, "backward", None)):
                raise TypeError(
                    "rule must map primitive names (str) to rule objects with a "
                    f"backward(site, g, hyper) method, got {name!r}: {r!r}"
                )
            pairs.append((name, type(r), r))  # the type too: NamedTuples equal as tuples
        return tuple(pairs)
    rule = check_choice("rule", rule, LRP_RULES)
    weighted = {"epsilon": Epsilon(), "gamma": Gamma(), "z_plus": ZPlus()}[rule]
    pool = Epsilon()
    return tuple((n, type(weighted), weighted) for n in _WEIGHTED) + tuple(
        (n, Epsilon, pool) for n in _POOLS
    )


# --------------------------------------------------------------------------------------------
# The kernel: the model's jaxpr walked with the rules, differentiated once.


class _Spec(NamedTuple):
    method: str  # guided, deconv, deeplift, lrp
    lrp_rules: tuple = ()
    finish: str = "grad"  # grad (the modified gradient), deeplift, lrp (times F_t(x))
    by_inputs: bool = True  # deeplift: times x - x0
    delta: bool = False  # also the convergence delta
    n_baselines: int = 0  # deeplift_shap: every row against each of this many baselines


def _rules(spec: _Spec, hyper) -> _propagation.Rules:
    if spec.method == "guided":
        return _propagation.Rules(relu=_guided, name="guided_backprop")
    if spec.method == "deconv":
        return _propagation.Rules(relu=_deconv, name="deconvolution")
    if spec.method == "deeplift":
        return _deeplift_rules(hyper["eps"])
    return _lrp_rules(spec.lrp_rules, hyper)


@_chunks.step_jit(0, 1, 9)
def _kernel(spec: _Spec, static, arrays, x, ref, kwargs, index, valid, hyper, layer=None, la=()):
    """The attributions (and the delta, or None), finished in the same program; with `layer`
    (layer DeepLift) `x` and `ref` go through it first."""
    fn = _chunks.combine(static, arrays)
    if layer is not None:
        layer_fn = _chunks.combine(layer, la)
        x, ref = layer_fn(x, **kwargs), layer_fn(ref, **kwargs)
    batch = jax.tree.leaves(x)[0].shape[0]
    if spec.n_baselines:  # example-major pairs (x_i, b_j), as Captum's DeepLiftShap
        n = spec.n_baselines
        x = jax.tree.map(lambda v: _rows(v, n), x)
        ref = jax.tree.map(lambda v: jnp.tile(v, (batch,) + (1,) * (v.ndim - 1)), ref)
        kwargs = {k: _rows(v, n) for k, v in kwargs.items()}
        index = None if index is None else _rows(index, n)
    leaves, treedef = jax.tree.flatten(x)
    kw_leaves, kw_def = jax.tree.flatten(kwargs)
    closed = jax.make_jaxpr(
        lambda xs, ks: fn(jax.tree.unflatten(treedef, xs), **jax.tree.unflatten(kw_def, ks))
    )(leaves, kw_leaves)
    rules = _rules(spec, hyper)
    ref_leaves = None if ref is None else jax.tree.leaves(ref)
    active = [True] * len(leaves) + [False] * len(kw_leaves)

    def total(xs):
        lanes = [
            (v,) if ref_leaves is None else (v, r)
            for v, r in zip(xs, ref_leaves or xs, strict=True)
        ]
        lanes += [(k,) * rules.lanes for k in kw_leaves]
        (out,) = _propagation.propagate(rules, closed, lanes, active)
        fx = selected(out[0], index)
        fr = None if ref_leaves is None else selected(out[1], index)
        return jnp.sum(fx), (fx, fr)

    grads, (fx, fr) = jax.grad(total, has_aux=True)(leaves)
    attr = jax.tree.unflatten(treedef, grads)
    delta = None
    if spec.finish == "deeplift":
        if spec.by_inputs:
            attr = jax.tree.map(lambda g, v, r: g * (v - r), attr, x, ref)
        delta = _sum_rows(attr) - (fx - fr)
        if spec.n_baselines:  # the weighted sum over this chunk's baselines (padding: 0)
            n, w = spec.n_baselines, hyper["weights"]

            def mean(v):
                v = v.reshape(batch, n, *v.shape[1:])
                return jnp.tensordot(v, w.astype(v.dtype), axes=((1,), (0,)))

            attr = jax.tree.map(mean, attr)
            delta = delta.reshape(batch, n)
    elif spec.finish == "lrp":
        attr = jax.tree.map(lambda g: g * _per_example(fx, g), attr)
        delta = fx - _sum_rows(attr)
    attr = mark_invalid(attr, valid)
    if not spec.delta:
        return attr, None
    return attr, mark_invalid(delta, valid)


def _run(spec, fn, x, ref, kwargs, index, valid, hyper, layer_fn=None):
    static, arrays = _chunks.partition(fn)
    layer, la = (None, ()) if layer_fn is None else _chunks.partition(layer_fn)
    args = (spec, static, arrays, x, ref, kwargs, index, valid, hyper, layer, la)
    attr, delta = _chunks.call_step(_kernel, args)  # eagerly: DeepLiftShap's baseline chunks
    return (attr, delta) if spec.delta else attr


def _rows(v, n: int):
    return jnp.repeat(v, n, axis=0)


def _per_example(v, attr):
    return v.reshape(-1, *([1] * (attr.ndim - 1)))


def _sum_rows(tree):
    return sum(jnp.sum(v.reshape(v.shape[0], -1), axis=1) for v in jax.tree.leaves(tree))


# --------------------------------------------------------------------------------------------
# Public methods.


def guided_backprop(
    fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    *,
    target: ArrayLike | None = None,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Guided backpropagation (Captum's `GuidedBackprop`): the gradient with every ReLU's
    backward replaced by `relu(g * (z > 0))`.

    A ReLU is any `max(z, 0)` in `fn`'s jaxpr, however it is written (`jax.nn.relu`,
    `jnp.maximum(z, 0)`, inside nested `jit`, `custom_jvp`, `scan`); every other primitive keeps
    its ordinary derivative, as in Captum (which only sees `nn.ReLU` modules). Jittable,
    vmappable, differentiable w.r.t. what `fn` closes over.

    Args:
        fn: model mapping a batch (an array or the pytree `x`) to outputs `[batch, ...]`.
        x: inputs with a leading batch axis (integers promoted to the default float, as
            everywhere in the package; an array or a pytree).
        target: which output, as in `integrated_gradients`.
        forward_kwargs: per-example arrays passed to `fn` as keyword arguments.

    Returns:
        Attributions shaped like `x`.

    Raises:
        TypeError: a non-integer `target`.
        ValueError: target or `forward_kwargs` errors as in `integrated_gradients`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import guided_backprop
        >>> w1 = jnp.array([[1.0, -1.0], [2.0, 1.0]])
        >>> w2 = jnp.array([[1.0], [-3.0]])
        >>> fn = lambda x: jax.nn.relu(x @ w1) @ w2
        >>> guided_backprop(fn, jnp.array([[1.0, 1.0]]))  # the -3 is not let through
        Array([[1., 2.]], dtype=float32)
    """
    return _gradient_method("guided", fn, x, target, forward_kwargs)


def deconvolution(
    fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    *,
    target: ArrayLike | None = None,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Deconvolution (Captum's `Deconvolution`): the gradient with every ReLU's backward
    replaced by `relu(g)` (the forward mask dropped).

    ReLUs are found as in `guided_backprop`; every other primitive keeps its derivative.

    Args:
        fn: model mapping a batch to outputs `[batch, ...]`.
        x: inputs with a leading batch axis (integers promoted to the default float, as
            everywhere in the package; an array or a pytree).
        target: which output, as in `integrated_gradients`.
        forward_kwargs: per-example arrays passed to `fn` as keyword arguments.

    Returns:
        Attributions shaped like `x`.

    Raises:
        TypeError: a non-integer `target`.
        ValueError: target or `forward_kwargs` errors as in `integrated_gradients`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import deconvolution
        >>> w1 = jnp.array([[1.0, -1.0], [2.0, 1.0]])
        >>> w2 = jnp.array([[1.0], [3.0]])
        >>> fn = lambda x: jax.nn.relu(x @ w1) @ w2
        >>> deconvolution(fn, jnp.array([[1.0, 1.0]]))  # the second unit is off, yet counted
        Array([[-2.,  5.]], dtype=float32)
    """
    return _gradient_method("deconv", fn, x, target, forward_kwargs)


def _gradient_method(method, fn, x, target, forward_kwargs):
    arrays = dict(x=x, target=target, forward_kwargs=forward_kwargs, hyper={})
    return _eager.call(_prepare_gradient, fn, arrays, dict(spec=_Spec(method)))


def _prepare_gradient(fn, x, target, forward_kwargs, hyper, spec):
    """`_eager`'s protocol for the methods without baselines (guided backprop, deconvolution,
    `propagation_gradient`); a later call re-checks NaN/inf in `x` and the target's range."""
    ops, out = _paths.operands_at(fn, x, target, forward_kwargs)
    hyper = {k: jnp.asarray(v) for k, v in hyper.items()}
    run = functools.partial(_run, spec, fn, ops.x, None, ops.kwargs, ops.index, ops.valid, hyper)
    return _eager.Prepared(run, _eager.value_checks(out, _paths.batch_of(ops.x), ("x",)))


def deeplift(
    fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    baselines: PyTree[ArrayLike] | float | None = None,
    *,
    target: ArrayLike | None = None,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    eps: ArrayLike = 1e-10,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]] | tuple[PyTree[Float[Array, " batch ..."]], Array]:
    """DeepLift with the rescale rule (Captum's `DeepLift`), on any JAX function.

    `fn` runs on `x` and on the baselines in one walk of its jaxpr; every elementwise
    nonlinearity of one input (ReLU, tanh, sigmoid, softplus, ELU, GELU, SiLU, any elementwise
    unary primitive or region of them, wherever they appear) back-propagates the multiplier
    `(f(z) - f(z0)) / (z - z0)` (its derivative where `|z - z0| < eps`), max pooling
    (`reduce_window_max`) Captum's rule (the cross maximum of the pooled outputs spread back
    through each side's max indices), `jax.nn.softmax` Captum's treatment (the rescale
    multiplier minus its mean over the whole tensor, every example: Captum's choice, so with a
    softmax inside, the rows are not independent); linear primitives keep their transpose. A
    primitive that is neither raises. `attr = (x - x0) * m`; completeness:
    `sum(attr) = F_t(x) - F_t(x0)` (the `delta`). Jittable, vmappable and differentiable
    w.r.t. the parameters `fn` closes over; `eps` may be traced.

    Args:
        fn: model mapping a batch to outputs `[batch, ...]`.
        x: inputs with a leading batch axis (integers promoted to the default float, as
            everywhere in the package; an array or a pytree).
        baselines: None (zeros), a scalar, or `x`'s structure with `[1, ...]` or full leaves.
        target: which output, as in `integrated_gradients`.
        multiply_by_inputs: return `(x - x0) * m` (True, Captum's default) or `m`.
        return_convergence_delta: also return `delta = sum(attr) - (F_t(x) - F_t(x0))`.
        eps: where `|z - z0| < eps` the rescale multiplier is the gradient.
        forward_kwargs: per-example arrays passed to `fn` as keyword arguments.

    Returns:
        Attributions shaped like `x`, or `(attributions, delta [batch])`.

    Raises:
        TypeError: a non-integer `target`.
        ValueError: `baselines` not shaped like `x`, a primitive DeepLift has no rule for
            (naming it), target and `forward_kwargs` errors as in `integrated_gradients`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import deeplift
        >>> w = jnp.array([[1.0], [-2.0]])
        >>> fn = lambda x: jnp.tanh(x) @ w
        >>> attr, delta = deeplift(fn, jnp.array([[1.0, 0.5]]), return_convergence_delta=True)
        >>> attr
        Array([[ 0.7615..., -0.9242...]], dtype=float32)
        >>> bool(abs(delta[0]) < 1e-6)
        True
    """
    by_inputs, delta = multiply_by_inputs, return_convergence_delta
    return _deeplift_call(fn, x, baselines, target, forward_kwargs, eps, by_inputs, delta)


def _deeplift_call(fn, x, baselines, target, forward_kwargs, eps, by_inputs, delta, head_fn=None):
    """`deeplift` (`head_fn` None) or `layer_deeplift` (`fn` the layer), through `_eager`."""
    statics = dict(
        by_inputs=check_bool("multiply_by_inputs", by_inputs),
        delta=check_bool("return_convergence_delta", delta),
        head_fn=head_fn,
    )
    arrays = dict(x=x, baselines=baselines, target=target, forward_kwargs=forward_kwargs, eps=eps)
    return _eager.call(_prepare_deeplift, fn, arrays, statics)


def _prepare_deeplift(fn, x, baselines, target, forward_kwargs, eps, by_inputs, delta, head_fn):
    """`_eager`'s protocol: a later call re-checks NaN/inf in `x` and `baselines`, `eps` and the
    target's range. With `head_fn`, `fn` is the layer and DeepLift runs on `head_fn`."""
    check_scale("eps", eps)
    inputs = as_inputs(x)
    kwargs = as_forward_kwargs(forward_kwargs, inputs.batch)
    model, layer = fn, None
    if head_fn is not None:
        model, _ = checked_split(fn, head_fn, inputs.x, kwargs)
        fn, layer = head_fn, fn
    b = as_baselines(baselines, inputs.x)
    out = model_output(model, inputs.x, kwargs)
    t = as_target(target, out, inputs.batch)
    args = (inputs.x, b, kwargs, t.index, t.valid, eps, by_inputs, delta)
    run = functools.partial(_deeplift, fn, *args, layer=layer)
    checks = _eager.value_checks(out, inputs.batch, ("x", "baselines"), ("eps",))
    return _eager.Prepared(run, checks)


def _deeplift(fn, x, b, kwargs, index, valid, eps, by_inputs, delta, n_baselines=0, layer=None):
    dtype = jax.tree.leaves(x)[0].dtype
    hyper = {"eps": jnp.asarray(eps, dtype)}
    spec = _Spec("deeplift", (), "deeplift", by_inputs, delta, n_baselines)
    return _run(spec, fn, x, b, kwargs, index, valid, hyper, layer)


def deeplift_shap(
    fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    baselines: PyTree[ArrayLike],
    *,
    target: ArrayLike | None = None,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    eps: ArrayLike = 1e-10,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
    internal_batch_size: int | np.integer | None = None,
) -> PyTree[Float[Array, " batch ..."]] | tuple[PyTree[Float[Array, " batch ..."]], Array]:
    """DeepLift SHAP (Captum's `DeepLiftShap`, shap's `DeepExplainer`): DeepLift averaged over
    a distribution of baselines.

    Every example is explained against every row of `baselines` (`deeplift` on `batch *
    n_baselines` rows, example-major as Captum) and the attributions are averaged over the
    baselines. `internal_batch_size` bounds the rows of one model call (at least every example
    against one baseline): the baselines then run in chunks, each one compiled call eagerly
    (XLA:CPU runs large convolutional batches disproportionately slower: on the benchmark CNN,
    128 rows at once took 2.5x the time of four calls of 32).

    Args:
        fn: model mapping a batch to outputs `[batch, ...]`.
        x: inputs with a leading batch axis (integers promoted to the default float, as
            everywhere in the package; an array or a pytree).
        baselines: `x`'s structure with leaves `[n_baselines, ...]` (at least one row).
        target: which output, as in `integrated_gradients`.
        multiply_by_inputs: as in `deeplift`.
        return_convergence_delta: also return the DeepLift deltas, `[batch, n_baselines]`.
        eps: as in `deeplift`.
        forward_kwargs: per-example arrays passed to `fn` as keyword arguments.
        internal_batch_size: largest number of rows per model call (None: all
            `batch * n_baselines` at once, as Captum).

    Returns:
        Attributions shaped like `x`, or `(attributions, delta [batch, n_baselines])`.

    Raises:
        TypeError: a non-integer `target`.
        ValueError: `baselines` without rows or not shaped like `x`'s rows, and as `deeplift`.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import deeplift_shap
        >>> fn = lambda x: x @ jnp.array([[1.0], [2.0]])  # linear: (x - mean baseline) * w
        >>> deeplift_shap(fn, jnp.array([[1.0, 1.0]]), jnp.array([[0.0, 0.0], [2.0, 1.0]]))
        Array([[0., 1.]], dtype=float32)
    """
    statics = dict(
        by_inputs=check_bool("multiply_by_inputs", multiply_by_inputs),
        delta=check_bool("return_convergence_delta", return_convergence_delta),
        ibs=_paths.check_internal_batch_size(internal_batch_size),
    )
    arrays = dict(x=x, baselines=baselines, target=target, forward_kwargs=forward_kwargs, eps=eps)
    return _eager.call(_prepare_deeplift_shap, fn, arrays, statics)


def _prepare_deeplift_shap(fn, x, baselines, target, forward_kwargs, eps, by_inputs, delta, ibs):
    """`_eager`'s protocol: a later call re-checks NaN/inf in `x` and `baselines`, `eps` and the
    target's range; baselines in several chunks (`internal_batch_size`) run op by op, one
    compiled call per chunk (the reason for chunking them)."""
    check_scale("eps", eps)
    ops, out = _paths.operands_at(fn, x, target, forward_kwargs)
    ops = ops._replace(baselines=as_background(baselines, ops.x, "baselines"))
    batch, n_b = _paths.batch_of(ops.x), _paths.batch_of(ops.baselines)
    num_chunks, per = _paths.chunking(n_b, batch, ibs)
    run = functools.partial(_deeplift_shap, fn, ops, eps, by_inputs, delta, num_chunks, per)
    checks = _eager.value_checks(out, batch, ("x", "baselines"), ("eps",))
    return _eager.Prepared(run, None if num_chunks > 1 else checks)


def _deeplift_shap(fn, ops: _paths.Operands, eps, by_inputs, delta, num_chunks, per):
    """DeepLift against each row of the background `ops.baselines`, averaged."""
    x, background = ops.x, ops.baselines
    n_b = _paths.batch_of(background)
    pad = num_chunks * per - n_b
    if pad:  # the last baseline repeated, with weight 0
        background = jax.tree.map(
            lambda v: jnp.concatenate([v, jnp.repeat(v[-1:], pad, axis=0)]), background
        )
    dtype = jax.tree.leaves(x)[0].dtype
    weights = np.concatenate([np.full(n_b, 1.0 / n_b), np.zeros(pad)]).astype(dtype)
    spec = _Spec("deeplift", (), "deeplift", by_inputs, True, per)
    attr, deltas = None, []
    for c in range(num_chunks):
        part = slice(c * per, (c + 1) * per)
        chunk = background if num_chunks == 1 else jax.tree.map(lambda v, p=part: v[p], background)
        hyper = {"eps": jnp.asarray(eps, dtype), "weights": weights[part]}
        a, d = _run(spec, fn, x, chunk, ops.kwargs, ops.index, ops.valid, hyper)
        attr = a if attr is None else jax.tree.map(jnp.add, attr, a)
        deltas.append(d)
    if not delta:
        return attr
    return attr, (deltas[0] if num_chunks == 1 else jnp.concatenate(deltas, axis=1)[:, :n_b])


def layer_deeplift(
    layer_fn: Callable[..., Any],
    head_fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    baselines: PyTree[ArrayLike] | float | None = None,
    *,
    target: ArrayLike | None = None,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    eps: ArrayLike = 1e-10,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]] | tuple[PyTree[Float[Array, " batch ..."]], Array]:
    """DeepLift to a layer's units (Captum's `LayerDeepLift`): the model is
    `head_fn(layer_fn(x))`.

    `attr = (h(x) - h(x0)) * m` with `m` DeepLift's multipliers of `head_fn` between the layer's
    values at the input and at the baseline (`deeplift(head_fn, h(x), h(x0))`); completeness:
    `sum(attr) = F_t(x) - F_t(x0)`.

    Args:
        layer_fn: the model up to the layer: `x -> h` (one row per row of `x`).
        head_fn: the rest: `h -> outputs [batch, ...]`.
        x: inputs with a leading batch axis (integers promoted to the default float, as
            everywhere in the package).
        baselines: as in `deeplift`.
        target: which output, as in `integrated_gradients`.
        multiply_by_inputs: as in `deeplift` (False: the multipliers).
        return_convergence_delta: also return `delta = sum(attr) - (F_t(x) - F_t(x0))`.
        eps: as in `deeplift`.
        forward_kwargs: per-example arrays passed to both functions as keyword arguments.

    Returns:
        Attributions shaped like the layer's output, or `(attributions, delta [batch])`.

    Raises:
        TypeError: a non-integer `target`.
        ValueError: a `layer_fn` that does not keep one row per row, a `head_fn` that does not
            take the layer's output, and as `deeplift`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import layer_deeplift
        >>> layer_fn = lambda x: x @ jnp.array([[1.0, -1.0], [1.0, 1.0]])
        >>> head_fn = lambda h: jax.nn.relu(h) @ jnp.array([[1.0], [1.0]])
        >>> layer_deeplift(layer_fn, head_fn, jnp.array([[1.0, 2.0]]))
        Array([[3., 1.]], dtype=float32)
    """
    by_inputs, delta = multiply_by_inputs, return_convergence_delta
    return _deeplift_call(
        layer_fn, x, baselines, target, forward_kwargs, eps, by_inputs, delta, head_fn
    )


def lrp(
    fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    *,
    target: ArrayLike | None = None,
    rule: str | Mapping[str, Any] = "epsilon",
    epsilon: ArrayLike = 1e-9,
    gamma: ArrayLike = 0.25,
    return_convergence_delta: bool = False,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]] | tuple[PyTree[Float[Array, " batch ..."]], Array]:
    """Layer-wise relevance propagation (Captum's `LRP`) on any JAX function.

    Relevance starts as `F_t(x)` at the target and goes back through `fn`'s jaxpr: every
    `dot_general` and `conv_general_dilated` with its bias add (and other affine steps right
    after it) is a layer with the chosen `rule`, `R_in = a * J'^T (R / (z' + eps sign z'))`
    (`epsilon`: `J' = J`; `gamma`: weights `w + gamma max(w, 0)`; `z_plus`: `max(w, 0)`; the
    bias kept, as Captum), max and average pooling and sums (`reduce_window_max`,
    `reduce_window_sum`, `reduce_sum`) the epsilon rule as in Captum, elementwise
    nonlinearities pass relevance unchanged, other linear primitives their transpose.
    `rule` may also be a mapping from primitive names to rule objects (`Epsilon`, `Gamma`,
    `ZPlus`, or any object with `backward(site, g, hyper)` returning the input relevance of
    one primitive: see `propagation_gradient`), which replaces the defaults. A primitive with
    no rule that is not linear raises. Conservation: `delta = F_t(x) - sum(attr)` (Captum's
    sign). Jittable, vmappable, differentiable w.r.t. the parameters; `epsilon` and `gamma`
    may be traced.

    Args:
        fn: model mapping a batch to outputs `[batch, ...]`.
        x: inputs with a leading batch axis (integers promoted to the default float, as
            everywhere in the package; an array or a pytree).
        target: which output, as in `integrated_gradients`.
        rule: `epsilon`, `gamma`, `z_plus`, or a mapping `{primitive name: rule}`.
        epsilon: the stabiliser of every layer's denominator.
        gamma: the gamma rule's weight boost.
        return_convergence_delta: also return `delta = F_t(x) - sum(attr)`.
        forward_kwargs: per-example arrays passed to `fn` as keyword arguments.

    Returns:
        Attributions shaped like `x`, or `(attributions, delta [batch])`.

    Raises:
        ValueError: an unknown `rule` (listing the valid ones), a primitive with no rule that
            is not linear (naming it), target errors as in `integrated_gradients`.
        TypeError: a `rule` mapping of the wrong kind.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import lrp
        >>> w1, w2 = jnp.array([[1.0, 2.0], [1.0, -1.0]]), jnp.array([[1.0], [1.0]])
        >>> fn = lambda x: jax.nn.relu(x @ w1) @ w2
        >>> attr, delta = lrp(fn, jnp.array([[1.0, 0.5]]), return_convergence_delta=True)
        >>> attr
        Array([[3., 0.]], dtype=float32)
        >>> bool(abs(delta[0]) < 1e-6)
        True
    """
    delta = check_bool("return_convergence_delta", return_convergence_delta)
    spec = _Spec("lrp", _as_lrp_rules(rule), "lrp", delta=delta)
    arrays = dict(x=x, target=target, forward_kwargs=forward_kwargs, epsilon=epsilon, gamma=gamma)
    return _eager.call(_prepare_lrp, fn, arrays, dict(spec=spec))


def _prepare_lrp(fn, x, target, forward_kwargs, epsilon, gamma, spec):
    """`_eager`'s protocol: a later call re-checks NaN/inf in `x`, `epsilon`, `gamma` and the
    target's range."""
    check_scale("epsilon", epsilon)
    check_scale("gamma", gamma)
    ops, out = _paths.operands_at(fn, x, target, forward_kwargs)
    dtype = jax.tree.leaves(ops.x)[0].dtype
    hyper = {"epsilon": jnp.asarray(epsilon, dtype), "gamma": jnp.asarray(gamma, dtype)}
    run = functools.partial(_run, spec, fn, ops.x, None, ops.kwargs, ops.index, ops.valid, hyper)
    checks = _eager.value_checks(out, _paths.batch_of(ops.x), ("x",), ("epsilon", "gamma"))
    return _eager.Prepared(run, checks)


def propagation_gradient(
    fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    rules: Mapping[str, Any],
    *,
    target: ArrayLike | None = None,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
    **hyper: ArrayLike,
) -> PyTree[Float[Array, " batch ..."]]:
    """The gradient of `F_t` with your own backward rules per primitive (zennit's composites).

    `rules` maps primitive names (`"dot_general"`, `"conv_general_dilated"`,
    `"reduce_window_max"`, ...) to rule objects with a method `backward(site, g, hyper)`: at
    each equation of that primitive whose input depends on `x`, it gets the `site` (`site.a`,
    a 1-tuple with the active operand's value, `site.operands`, the other operands (the
    weights), `site.apply(a, operands)`, the primitive with the affine steps after it (the
    bias add)), the cotangent `g` of the output and `hyper` (the keyword arrays given here),
    and returns the cotangent of the active operand. Elementwise nonlinearities pass `g`
    unchanged (LRP's convention) and linear primitives their transpose; any other primitive
    raises, naming it. `lrp` is this function with its three rules, times `F_t(x)`. Rule
    objects are static configuration (hashed, compared with their type: a `NamedTuple` or a
    frozen dataclass); values to trace go in `**hyper`.

    Args:
        fn: model mapping a batch to outputs `[batch, ...]`.
        x: inputs with a leading batch axis (integers promoted to the default float, as
            everywhere in the package; an array or a pytree).
        rules: `{primitive name: rule object}`.
        target: which output, as in `integrated_gradients`.
        forward_kwargs: per-example arrays passed to `fn` as keyword arguments.
        **hyper: arrays the rules read from `hyper` (traced under `jit`).

    Returns:
        The modified gradient, shaped like `x`.

    Raises:
        TypeError: `rules` not a mapping of names to rule objects.
        ValueError: a primitive with no rule that is not linear, target errors.

    Example:
        A rule that lets only positive contributions of dense layers through:

        >>> import jax, jax.numpy as jnp
        >>> from typing import NamedTuple
        >>> from xai_jax import propagation_gradient
        >>> class PositiveOnly(NamedTuple):
        ...     def backward(self, site, g, hyper):
        ...         (a,) = site.a
        ...         _, vjp = jax.vjp(lambda u: site.apply(u, site.operands), a)
        ...         return jnp.maximum(vjp(g)[0], 0.0)
        >>> fn = lambda x: x @ jnp.array([[1.0], [-1.0]])
        >>> propagation_gradient(fn, jnp.array([[1.0, 1.0]]), {"dot_general": PositiveOnly()})
        Array([[1., 0.]], dtype=float32)
    """
    if not isinstance(rules, Mapping):
        raise TypeError(f"rules must be a mapping of primitive names to rules, got {rules!r}")
    spec = _Spec("lrp", _as_lrp_rules(dict(rules)))
    arrays = dict(x=x, target=target, forward_kwargs=forward_kwargs, hyper=hyper)
    return _eager.call(_prepare_gradient, fn, arrays, dict(spec=spec))
