"""One parametrised conformance suite over every public function.

Each case calls a public function as `call(key, *arrays)` (the key is ignored by deterministic
functions) and every case goes through the same checks: jit equals eager, vmap equals a loop,
same key gives the same bits and another key other samples, a second call with same-shaped inputs
does not retrace (under the caller's `jit`, and eagerly: no trace, no compile), outputs are
finite, and gradients through the function are finite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax._src import dispatch  # the names of the trace and compile events

import xai_jax
from xai_jax import (
    aoexpgrad,
    bernoulli_perturbation,
    cem_loss,
    completeness,
    contrastive_explanation,
    deletion,
    elastic_net_fista,
    expected_gradients,
    exponential_kernel,
    faithfulness_correlation,
    feature_ablation,
    feature_permutation,
    gaussian_perturbation,
    gradient_shap,
    guided_gradcam,
    infidelity,
    input_x_gradient,
    insertion,
    integrated_gradients,
    kernel_shap,
    layer_activation,
    layer_conductance,
    layer_gradcam,
    layer_gradient_x_activation,
    layer_integrated_gradients,
    lime,
    neuron_conductance,
    numerical_gradient,
    occlusion,
    pairwise_distances,
    quadrature,
    randomisation_check,
    saliency,
    sensitivity_max,
    shapley_kernel,
    shapley_value_sampling,
    shapley_values,
    smoothgrad,
    urv_gradient,
    weighted_ridge,
)

_rng = np.random.default_rng(42)


def _normal(*shape):
    return jnp.asarray(_rng.standard_normal(shape), jnp.float32)


_W = _normal(6, 3)


def _mlp(x):  # batched black box: [N, 6] -> [N, 3]
    return jax.nn.softmax(jnp.tanh(x @ _W))


def _loss(v):  # scalar black box of one point [6]
    return -jax.nn.log_softmax(jnp.tanh(v @ _W))[1]


def _numpy_mlp(x):  # _mlp in NumPy: a black box the estimators call through a host callback
    z = np.tanh(np.asarray(x) @ np.asarray(_W, np.asarray(x).dtype))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _numpy_loss(v):  # _loss in NumPy
    z = np.tanh(np.asarray(v) @ np.asarray(_W, np.asarray(v).dtype))
    return -(z[1] - z.max() - np.log(np.exp(z - z.max()).sum()))


_W1, _W2 = _normal(6, 5), _normal(5, 3)
_T = jnp.array([0, 2, 1])


def _layer(x):  # a model split as _head(_layer(x)): [N, 6] -> [N, 5] -> [N, 3]
    return jnp.tanh(x @ _W1)


def _head(h):
    return jax.nn.softmax(jnp.tanh(h) @ _W2)


def _two_inputs(t, scale):  # pytree input and a per-example keyword argument
    return jnp.tanh(t["a"] @ _W[:4] + t["b"].sum(1)) * scale


def _optimise(optimizer, x, steps=5):  # a few steps on a quadratic: the iterates
    target = jnp.linspace(-1.0, 1.0, x.shape[0], dtype=x.dtype)
    state = optimizer.init(x)
    for _ in range(steps):
        updates, state = optimizer.update(2 * (x - target), state, x)
        x = optax.apply_updates(x, updates)
    return x


def _ig(v):  # an attribution function for the noise tunnel: one object, as a user holds it
    return integrated_gradients(_mlp, v, target=_T, n_steps=4)


_CENTRE = _normal(6)


def _spatial_layer(x):  # [N, 6] -> [N, 3, 2, 5]: an NHWC layer for Grad-CAM
    return jnp.tanh(x.reshape(-1, 3, 2, 1) * _W1[None, None, :2, :])


def _spatial_head(h):
    return jax.nn.softmax(jnp.tanh(h.mean(axis=(1, 2))) @ _W2)


def _cam_layer(x):  # [N, 3, 2] -> [N, 3, 5]: width and channels, for guided Grad-CAM
    return jax.nn.relu(x @ _W1[:2])


def _cam_head(h):
    return jax.nn.softmax(jnp.tanh(h.mean(axis=1)) @ _W2)


def _distance(v):  # a loss for contrastive_explanation
    return jnp.sum((v - _CENTRE) ** 2)


def _image_model(x):  # [N, 1, 5, 5] -> [N, 3]: a perturbation method's image black box
    return jnp.tanh(x.reshape(x.shape[0], 25)[:, :6] @ _W) * jnp.mean(x, axis=(1, 2, 3))[:, None]


def _ig_t(v, target):  # an attribution function with a per-example target (sensitivity_max)
    return integrated_gradients(_mlp, v, target=target, n_steps=4)


def _saliency_p(p, v):  # a gradient map of the layered model under parameters p
    return jax.grad(
        lambda u: jnp.sum(jax.nn.softmax(jnp.tanh(jnp.tanh(u @ p["a"]) @ p["b"]))[:, 0])
    )(v)


def _signs_perturb(k, xs):  # a user's perturbation: random signs of a fixed size
    noise = 0.1 * jnp.sign(jax.random.normal(k, xs.shape, xs.dtype))
    return noise, xs - noise


_GROUPS = np.array([0, 0, 3, 3, 1, 5])  # a feature mask with gaps (allowed, as Captum)

_SGD = optax.sgd(0.05)  # one optimizer object, reused across calls as a user would

_X = _normal(5, 4)
# y repeats two rows of x: zero distances are part of the checks (finite gradients there)
_Y = jnp.concatenate([_X[:2], _normal(3, 4)])


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    function: Callable
    call: Callable  # (key, *arrays) -> pytree of arrays
    arrays: tuple
    random: bool = False
    grad_arg: int | None = 0  # which array to differentiate against (None: not differentiable)
    vmap: bool = True

    def __str__(self):
        return self.name


CASES = [
    *[
        Case(f"pairwise_distances[{m}]", pairwise_distances,
             lambda k, x, y, m=m: pairwise_distances(x, y, metric=m), (_X, _Y))
        for m in ("euclidean", "sqeuclidean", "cosine", "manhattan")
    ],
    Case("pairwise_distances[y=None]", pairwise_distances,
         lambda k, x: pairwise_distances(x, metric="cosine"), (_X,)),
    Case("gaussian_perturbation", gaussian_perturbation,
         lambda k, x, s: gaussian_perturbation(k, x, 16, scale=s), (_normal(4), jnp.full(4, 0.5)),
         random=True),
    Case("gaussian_perturbation[mean]", gaussian_perturbation,
         lambda k, x, m: gaussian_perturbation(k, x, 16, mean=m), (_normal(2, 3), _normal(2, 3)),
         random=True),
    Case("bernoulli_perturbation", bernoulli_perturbation,
         lambda k, x: bernoulli_perturbation(k, x, 16, p=0.3, baseline=-1.0), (_normal(6),),
         random=True),
    Case("bernoulli_perturbation[segments]", bernoulli_perturbation,
         lambda k, x, seg: bernoulli_perturbation(k, x, 16, segments=seg, num_segments=3),
         (_normal(2, 3, 2), jnp.array([[0, 1, 1], [2, 2, 0]])), random=True),
    Case("exponential_kernel", exponential_kernel,
         lambda k, d, w: exponential_kernel(d, w), (jnp.abs(_normal(7)), jnp.float32(0.7))),
    Case("shapley_kernel", shapley_kernel,
         lambda k, s: shapley_kernel(6, s), (jnp.array([1, 2, 3, 5]),), grad_arg=None),
    Case("quadrature", quadrature,
         lambda k: quadrature("gausslegendre", 8), (), grad_arg=None, vmap=False),
    Case("numerical_gradient", numerical_gradient,
         lambda k, x: numerical_gradient(_mlp, x, eps=1e-2), (_normal(3, 6),)),
    Case("urv_gradient", urv_gradient,
         lambda k, x: urv_gradient(k, _loss, x, num_samples=16), (_normal(6),), random=True),
    Case("numerical_gradient[numpy black box]", numerical_gradient,
         lambda k, x: numerical_gradient(_numpy_mlp, x, eps=1e-2), (_normal(3, 6),), grad_arg=None),
    Case("urv_gradient[numpy black box]", urv_gradient,
         lambda k, x: urv_gradient(k, _numpy_loss, x, num_samples=16), (_normal(6),), random=True,
         grad_arg=None),
    Case("urv_gradient[chunked, traced step]", urv_gradient,
         lambda k, x, t: urv_gradient(k, _loss, x, num_samples=10, step=t, batch_size=4),
         (_normal(6), jnp.float32(3.0)), random=True),
    Case("weighted_ridge", weighted_ridge,
         lambda k, X, y, w: weighted_ridge(X, y, w), (_normal(20, 3), _normal(20), jnp.exp(_normal(20)))),
    Case("integrated_gradients", integrated_gradients,
         lambda k, x, b: integrated_gradients(_mlp, x, b, target=_T, n_steps=8),
         (_normal(3, 6), _normal(3, 6))),
    Case("integrated_gradients[chunked, delta]", integrated_gradients,
         lambda k, x: integrated_gradients(_mlp, x, target=1, method="riemann_trapezoid",
                                           n_steps=9, internal_batch_size=7,
                                           return_convergence_delta=True),
         (_normal(3, 6),)),
    Case("integrated_gradients[pytree, forward_kwargs]", integrated_gradients,
         lambda k, a, b, s: integrated_gradients(_two_inputs, {"a": a, "b": b}, 0.5, target=_T,
                                                 n_steps=6, forward_kwargs={"scale": s}),
         (_normal(3, 4), _normal(3, 2, 3), _normal(3, 1))),
    Case("layer_integrated_gradients", layer_integrated_gradients,
         lambda k, x: layer_integrated_gradients(_layer, _head, x, target=_T, n_steps=8,
                                                 internal_batch_size=6),
         (_normal(3, 6),)),
    Case("layer_conductance", layer_conductance,
         lambda k, x, b: layer_conductance(_layer, _head, x, b, target=_T, n_steps=8,
                                           internal_batch_size=9, return_convergence_delta=True),
         (_normal(3, 6), _normal(1, 6))),
    Case("neuron_conductance", neuron_conductance,
         lambda k, x: neuron_conductance(_layer, _head, x, 2, target=_T, n_steps=8,
                                         internal_batch_size=6),
         (_normal(3, 6),)),
    Case("smoothgrad", smoothgrad,
         lambda k, x: smoothgrad(k, _ig, x, num_samples=5, stdev=0.2, nt_type="vargrad",
                                 batch_size=2),
         (_normal(3, 6),), random=True),
    Case("expected_gradients", expected_gradients,
         lambda k, x, bg: expected_gradients(k, _mlp, x, bg, num_samples=5, stdev=0.1,
                                             target=_T, internal_batch_size=7),
         (_normal(3, 6), _normal(4, 6)), random=True),
    Case("saliency", saliency,
         lambda k, x: saliency(_mlp, x, target=_T), (_normal(3, 6),)),
    Case("saliency[pytree, forward_kwargs, signed]", saliency,
         lambda k, a, b, s: saliency(_two_inputs, {"a": a, "b": b}, target=_T, abs=False,
                                     forward_kwargs={"scale": s}),
         (_normal(3, 4), _normal(3, 2, 3), _normal(3, 1))),
    Case("input_x_gradient", input_x_gradient,
         lambda k, x: input_x_gradient(_mlp, x, target=_T), (_normal(3, 6),)),
    Case("gradient_shap", gradient_shap,
         lambda k, x, bg: gradient_shap(k, _mlp, x, bg, n_samples=4, stdevs=0.1, target=_T,
                                        return_convergence_delta=True),
         (_normal(3, 6), _normal(4, 6)), random=True),
    Case("layer_activation", layer_activation,
         lambda k, x: layer_activation(_layer, _head, x), (_normal(3, 6),)),
    Case("layer_gradient_x_activation", layer_gradient_x_activation,
         lambda k, x: layer_gradient_x_activation(_layer, _head, x, target=_T), (_normal(3, 6),)),
    Case("layer_gradcam", layer_gradcam,
         lambda k, x: layer_gradcam(_spatial_layer, _spatial_head, x, target=_T,
                                    relu_attributions=True),
         (_normal(3, 6),)),
    Case("lime", lime,
         lambda k, x: lime(k, _mlp, x, num_samples=64, target=_T, batch_size=2), (_normal(3, 6),),
         random=True),
    Case("lime[bernoulli, segments, lasso_path]", lime,
         lambda k, x, seg: lime(k, _mlp, x, num_samples=64, perturbation="bernoulli", target=1,
                                segments=seg, num_segments=4, num_features=2,
                                feature_selection="lasso_path"),
         (_normal(3, 6), jnp.array([0, 0, 1, 2, 3, 3])), random=True),
    Case("lime[mean, scale, forward_selection]", lime,
         lambda k, x, m, s: lime(k, _mlp, x, num_samples=64, mean=m, scale=s, target=_T,
                                 num_features=3, feature_selection="forward_selection"),
         (_normal(3, 6), _normal(6), jnp.full(6, 0.5)), random=True),
    Case("kernel_shap", kernel_shap,
         lambda k, x, bg: kernel_shap(k, _mlp, x, bg, num_samples=32, target=_T, batch_size=2),
         (_normal(3, 6), _normal(4, 6)), random=True),
    Case("kernel_shap[leverage, stderr]", kernel_shap,
         lambda k, x, bg: kernel_shap(k, _mlp, x, bg, num_samples=32, target=_T, batch_size=2,
                                      sampler="leverage", return_stderr=True),
         (_normal(3, 6), _normal(4, 6)), random=True),
    Case("kernel_shap[leverage, cubic, stderr]", kernel_shap,
         lambda k, x, bg: kernel_shap(k, _mlp, x, bg, num_samples=32, target=_T, batch_size=2,
                                      sampler="leverage", estimator="cubic", return_stderr=True),
         (_normal(3, 6), _normal(4, 6)), random=True),
    Case("kernel_shap[auto]", kernel_shap,
         lambda k, x, bg: kernel_shap(k, _mlp, x, bg, num_samples="auto", atol=1e-3, target=_T,
                                      max_samples=186, return_stderr=True, progress=False),
         # 6 features: one round enumerates all (key-free); a while_loop: no reverse-mode grad
         (_normal(3, 6), _normal(4, 6)), grad_arg=None),
    Case("feature_ablation", feature_ablation,
         lambda k, x, b: feature_ablation(_mlp, x, b, target=_T, feature_mask=_GROUPS,
                                          batch_size=5),
         (_normal(3, 6), _normal(3, 6))),
    Case("feature_ablation[pytree, forward_kwargs]", feature_ablation,
         lambda k, a, b, s: feature_ablation(_two_inputs, {"a": a, "b": b}, 0.5, target=_T,
                                             forward_kwargs={"scale": s}),
         (_normal(3, 4), _normal(3, 2, 3), _normal(3, 1))),
    Case("feature_ablation[numpy black box]", feature_ablation,
         lambda k, x: feature_ablation(_numpy_mlp, x, target=_T, batch_size=4), (_normal(3, 6),),
         grad_arg=None),
    Case("occlusion", occlusion,
         lambda k, x: occlusion(_image_model, x, sliding_window_shapes=(1, 3, 3),
                                strides=(1, 2, 2), baselines=0.2, target=_T, batch_size=7),
         (_normal(3, 1, 5, 5),)),
    Case("shapley_values", shapley_values,
         lambda k, x, bg: shapley_values(_mlp, x, bg, target=_T, feature_mask=_GROUPS),
         (_normal(3, 6), _normal(4, 6))),
    Case("shapley_value_sampling", shapley_value_sampling,
         lambda k, x: shapley_value_sampling(k, _mlp, x, target=_T, n_samples=5, antithetic=True,
                                             batch_size=16),
         (_normal(3, 6),), random=True),
    Case("feature_permutation", feature_permutation,
         lambda k, x: feature_permutation(k, _mlp, x, target=1, feature_mask=_GROUPS),
         (_normal(5, 6),), random=True),
    Case("aoexpgrad", aoexpgrad,
         lambda k, x: _optimise(aoexpgrad(0.1, 0.5, lower=-2.0, upper=2.0), x), (_normal(6),)),
    Case("elastic_net_fista", elastic_net_fista,
         lambda k, x: _optimise(elastic_net_fista(0.05, 0.01), x), (_normal(6),)),
    Case("cem_loss", cem_loss,
         lambda k, x, d: cem_loss("PP", _mlp, x, c=2.0, kappa=0.1)(d), (_normal(6), _normal(6))),
    Case("contrastive_explanation", contrastive_explanation,
         lambda k, x: contrastive_explanation(k, _distance, x, optimizer=_SGD, num_iter=12,
                                              save_freq=5, upper=0.5),
         (_normal(6),)),
    Case("contrastive_explanation[urv, cem]", contrastive_explanation,
         lambda k, x: contrastive_explanation(k, cem_loss("PN", _mlp, x), jnp.zeros(6),
                                              optimizer=_SGD, gradient="urv",
                                              num_iter=6, save_freq=3, lower=-1.0, upper=1.0,
                                              gradient_kwargs={"num_samples": 8})[0],
         (_normal(6),), random=True, grad_arg=None),
    Case("weighted_ridge[2-D y, alpha=0]", weighted_ridge,
         lambda k, X, y: weighted_ridge(X, y, alpha=0.0), (_normal(20, 3), _normal(20, 2))),
    Case("infidelity", infidelity,
         lambda k, x, a: infidelity(k, _mlp, x, a, target=_T, n_perturb_samples=4, batch_size=2),
         (_normal(3, 6), _normal(3, 6)), random=True),
    Case("infidelity[normalize, perturb]", infidelity,
         lambda k, x, a: infidelity(k, _mlp, x, a, target=1, normalize=True, n_perturb_samples=3,
                                    perturb=_signs_perturb),
         (_normal(3, 6), _normal(3, 6)), random=True),
    Case("sensitivity_max", sensitivity_max,
         lambda k, x: sensitivity_max(k, _ig_t, x, n_perturb_samples=3,
                                      explain_kwargs={"target": _T}),
         (_normal(3, 6),), random=True),
    Case("deletion", deletion,
         lambda k, x, a, b: deletion(_mlp, x, a, target=_T, baselines=b, n_steps=4,
                                     feature_mask=_GROUPS, batch_size=4),
         (_normal(3, 6), _normal(3, 6), _normal(3, 6))),
    Case("insertion", insertion,
         lambda k, x, a: insertion(_mlp, x, a, target=_T, n_steps=3), (_normal(3, 6), _normal(3, 6))),
    Case("faithfulness_correlation", faithfulness_correlation,
         lambda k, x, a: faithfulness_correlation(k, _mlp, x, a, target=_T, subset_size=2,
                                                  n_subsets=8, batch_size=5),
         (_normal(3, 6), _normal(3, 6)), random=True),
    Case("completeness", completeness,
         lambda k, x, a, b: completeness(_mlp, x, a, b, target=_T), (_normal(3, 6), _normal(3, 6), _normal(1, 6))),
    Case("randomisation_check", randomisation_check,
         lambda k, x: randomisation_check(k, _saliency_p, {"a": _W1, "b": _W2}, x,
                                          similarity="pearson"),
         (_normal(3, 6),), random=True),
    Case("randomisation_check[spearman]", randomisation_check,
         lambda k, x: randomisation_check(k, _saliency_p, {"a": _W1, "b": _W2}, x, layers=["b"]),
         (_normal(3, 6),), random=True),
]  # fmt: skip


def _relu_mlp(x):  # [N, 6] -> [N, 3] with a ReLU (the propagation methods' case)
    return jax.nn.relu(x @ _W1) @ _W2


CASES += [
    Case("guided_backprop", xai_jax.guided_backprop,
         lambda k, x: xai_jax.guided_backprop(_relu_mlp, x, target=_T), (_normal(3, 6),)),
    Case("deconvolution", xai_jax.deconvolution,
         lambda k, x: xai_jax.deconvolution(_relu_mlp, x, target=_T), (_normal(3, 6),)),
    Case("deeplift", xai_jax.deeplift,
         lambda k, x, b: xai_jax.deeplift(_mlp, x, b, target=_T, return_convergence_delta=True),
         (_normal(3, 6), _normal(1, 6))),
    Case("deeplift_shap", xai_jax.deeplift_shap,
         lambda k, x, bg: xai_jax.deeplift_shap(_relu_mlp, x, bg, target=_T),
         (_normal(3, 6), _normal(4, 6))),
    Case("layer_deeplift", xai_jax.layer_deeplift,
         lambda k, x: xai_jax.layer_deeplift(_layer, _head, x, target=_T), (_normal(3, 6),)),
    Case("lrp", xai_jax.lrp,
         lambda k, x: xai_jax.lrp(_relu_mlp, x, target=_T, rule="gamma"),
         (_normal(3, 6),)),
    Case("propagation_gradient", xai_jax.propagation_gradient,
         lambda k, x: xai_jax.propagation_gradient(_relu_mlp, x, {"dot_general": xai_jax.Epsilon()},
                                                   target=_T, epsilon=1e-6),
         (_normal(3, 6),)),
    Case("guided_gradcam", guided_gradcam,
         lambda k, x: guided_gradcam(_cam_layer, _cam_head, x, target=_T),
         (_normal(3, 3, 2),)),
]  # fmt: skip

RANDOM = [c for c in CASES if c.random]
KEY, OTHER_KEY = jax.random.key(0), jax.random.key(1)


def _leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _perturbed(arrays, i):
    """The i-th member of a batch: same shapes and dtypes, other values."""
    return tuple(a + (0.1 * i) if jnp.issubdtype(a.dtype, jnp.floating) else a for a in arrays)


def test_every_public_function_is_covered():
    covered = {c.function.__name__ for c in CASES}
    public = {
        name for name in xai_jax.__all__
        if callable(getattr(xai_jax, name)) and not isinstance(getattr(xai_jax, name), type)
    }  # fmt: skip
    assert public == covered  # classes (results, wrappers) are tested where they are used


@pytest.mark.parametrize("case", CASES, ids=str)
def test_jit_matches_eager(case):
    _assert_trees_close(jax.jit(case.call)(KEY, *case.arrays), case.call(KEY, *case.arrays))


@pytest.mark.parametrize("case", [c for c in CASES if c.vmap], ids=str)
def test_vmap_matches_loop(case):
    members = [_perturbed(case.arrays, i) for i in range(3)]
    keys = jax.random.split(KEY, 3)
    stacked = tuple(jnp.stack(column) for column in zip(*members, strict=True))
    batched = jax.jit(jax.vmap(case.call))(keys, *stacked)
    looped = [case.call(keys[i], *members[i]) for i in range(3)]
    expected = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *looped)
    _assert_trees_close(batched, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_deterministic_and_keyed(case):
    fn = jax.jit(case.call)
    first, again = _leaves(fn(KEY, *case.arrays)), _leaves(fn(KEY, *case.arrays))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)  # same key, same bits
    if case.random:
        other = _leaves(fn(OTHER_KEY, *case.arrays))
        assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_second_call_does_not_recompile(case):
    traces = []

    def counted(*args):
        traces.append(1)
        return case.call(*args)

    fn = jax.jit(counted)
    jax.block_until_ready(fn(KEY, *case.arrays))
    jax.block_until_ready(fn(OTHER_KEY, *_perturbed(case.arrays, 1)))
    assert len(traces) == 1


_COMPILE_EVENTS = (dispatch.JAXPR_TRACE_EVENT, dispatch.BACKEND_COMPILE_EVENT)
_events: list[str] | None = None  # collecting while a list


def _on_event(event: str, duration: float, **kwargs) -> None:
    if _events is not None and event in _COMPILE_EVENTS:
        _events.append(event)


jax.monitoring.register_event_duration_secs_listener(_on_event)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_second_eager_call_traces_and_compiles_nothing(case):
    # Called eagerly (how the wrappers and the demo call them), the second call with the same
    # shapes, dtypes and static options reuses every cached program: no jaxpr is traced, no
    # executable compiled, however many jitted pieces a function is made of.
    global _events
    jax.block_until_ready(case.call(KEY, *case.arrays))
    arrays = jax.block_until_ready(_perturbed(case.arrays, 1))
    _events = []
    try:
        jax.block_until_ready(case.call(OTHER_KEY, *arrays))
        events = _events
    finally:
        _events = None
    assert events == []


@pytest.mark.parametrize("case", CASES, ids=str)
def test_outputs_finite(case):
    for leaf in _leaves(case.call(KEY, *case.arrays)):
        if np.issubdtype(leaf.dtype, np.floating):
            assert np.isfinite(leaf).all()


@pytest.mark.parametrize("case", [c for c in CASES if c.grad_arg is not None], ids=str)
def test_gradients_finite(case):
    def total(a):
        args = list(case.arrays)
        args[case.grad_arg] = a
        leaves = jax.tree_util.tree_leaves(case.call(KEY, *args))
        return sum(jnp.sum(leaf) for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating))

    grad = jax.jit(jax.grad(total))(case.arrays[case.grad_arg])
    assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.parametrize("case", RANDOM, ids=str)
@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_typed_keys_of_any_implementation(case, impl):
    out = _leaves(jax.jit(case.call)(jax.random.key(0, impl=impl), *case.arrays))
    reference = _leaves(case.call(KEY, *case.arrays))
    assert [(x.shape, x.dtype) for x in out] == [(x.shape, x.dtype) for x in reference]
    assert all(np.isfinite(x).all() for x in out if np.issubdtype(x.dtype, np.floating))


@pytest.mark.parametrize("case", RANDOM, ids=str)
def test_legacy_uint32_keys_equal_typed_keys(case):
    legacy = case.call(jax.random.PRNGKey(0), *case.arrays)
    typed = case.call(jax.random.key(0), *case.arrays)
    for a, b in zip(_leaves(legacy), _leaves(typed), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", RANDOM, ids=str)
@pytest.mark.parametrize(
    ("bad_key", "error"),
    [
        (0, TypeError),
        (np.zeros(2, np.float32), TypeError),
        (np.zeros(3, np.uint32), ValueError),
        (jax.random.split(jax.random.key(0), 2), ValueError),
    ],
    ids=["int", "float-array", "uint32-wrong-shape", "key-batch"],
)
def test_non_keys_are_rejected(case, bad_key, error):
    with pytest.raises(error, match="key"):
        case.call(bad_key, *case.arrays)
