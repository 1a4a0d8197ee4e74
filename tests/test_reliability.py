"""Reliability: bad input fails early and clearly, non-finite data is never explained silently,
empty batches behave as documented, and dtypes follow JAX's rules.

The tables here run every public name of `xai_jax` through the same catalogue: wrong ranks,
mismatched shapes between array arguments, empty batches, NaN/inf, targets and indices out of
range, unknown names. Each bad call must raise the expected exception with a message that names
the argument, before the model runs (a `jax.debug.callback` in the black boxes tells).

NaN/inf policy (`xai_jax._checks.check_finite`): a concrete data argument holding NaN or inf
raises `ValueError: <name> contains NaN or inf (k entries, ...)`; a traced one (under `jit`)
cannot be checked, and its NaN/inf must reach the outputs of the rows it touches, never a
finite number. `test_conformance.py` already covers jit/vmap/determinism/recompilation/keys.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import xai_jax
from tests import test_conformance as conformance
from xai_jax import (
    ContrastiveResult,
    CurveResult,
    Explanation,
    ExplanationGenerator,
    IntegratedGradients,
    LimeBase,
    LimeResult,
    RidgeFit,
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

K = jax.random.key(0)
_rng = np.random.default_rng(3)
_W = _rng.standard_normal((4, 3)).astype(np.float32)
_W1 = _rng.standard_normal((4, 5)).astype(np.float32)
_W2 = _rng.standard_normal((5, 3)).astype(np.float32)

# Host-side evidence that a model ran: the black boxes below report every execution (not
# tracing: `eval_shape` of a model does not run its callbacks).
RAN: list[int] = []


def _ran():
    RAN.append(1)


def _model(z):  # [n, 4] -> [n, 3], in z's dtype
    jax.debug.callback(_ran)
    return jnp.tanh(z @ jnp.asarray(_W, z.dtype))


def _scalar_model(z):  # [n, 4] -> [n]
    jax.debug.callback(_ran)
    return jnp.tanh(z).sum(1)


def _layer(z):  # [n, 4] -> [n, 5]
    jax.debug.callback(_ran)
    return jnp.tanh(z @ jnp.asarray(_W1, z.dtype))


def _head(h):  # [n, 5] -> [n, 3]
    return h @ jnp.asarray(_W2, h.dtype)


def _dropping(z):  # a layer that keeps at most 3 rows: right for X, wrong on a longer path batch
    return _layer(z)[:3]


def _total(h):  # a head without a batch axis
    return _head(h).sum()


def _model_x(x):  # the same black box with LimeBase's keyword `x`
    return _model(x)


def _point_loss(v):  # one point [4] -> scalar
    jax.debug.callback(_ran)
    return jnp.sum(jnp.tanh(v) ** 2)


def _grad_fn(z):  # an attribution function for smoothgrad
    return jax.grad(lambda u: _model(u).sum())(z)


def _normal(*shape):
    return _rng.standard_normal(shape).astype(np.float32)


X = _normal(3, 4)  # three rows of four features
B = _normal(3, 4)  # per-row baselines
BG = _normal(5, 4)  # background rows
T = np.array([0, 2, 1])


@pytest.fixture(autouse=True)
def _no_model_run_before_errors():
    RAN.clear()
    yield


def _assert_model_did_not_run():
    jax.effects_barrier()
    assert not RAN, "the model ran before the bad input was rejected"


# --------------------------------------------------------------------------------------------
# The catalogue of bad inputs.


@dataclasses.dataclass(frozen=True)
class Bad:
    target: str  # the public name under test
    kind: str  # rank, shape, empty, value, target, name, type
    call: Callable[[], object]
    error: type[Exception]
    match: str  # the message must name the argument
    marks: tuple = ()

    def __str__(self):
        plain = re.sub(r"[\\^$]", "", self.match)  # the regex's text, for readable test ids
        return f"{self.target}-{self.kind}-{plain[:40]}"


_ig = lambda **kw: integrated_gradients(_model, X, **{"target": T, "n_steps": 4, **kw})
_lig = lambda x=X, **kw: layer_integrated_gradients(_layer, _head, x, **{"target": T, **kw})
_lc = lambda x=X, **kw: layer_conductance(_layer, _head, x, **{"target": T, **kw})
_nc = lambda idx=1, x=X, **kw: neuron_conductance(_layer, _head, x, idx, **{"target": T, **kw})
_sg = lambda x=X, **kw: smoothgrad(K, _grad_fn, x, **{"num_samples": 2, **kw})
_eg = lambda x=X, bg=BG, **kw: expected_gradients(K, _model, x, bg, **{"target": T, **kw})
_sal = lambda x=X, **kw: saliency(_model, x, **{"target": T, **kw})
_gs = lambda x=X, bg=BG, **kw: gradient_shap(K, _model, x, bg, **{"target": T, **kw})
_lgxa = lambda x=X, **kw: layer_gradient_x_activation(_layer, _head, x, **{"target": T, **kw})
_spatial = lambda z: _layer(z)[:, :, None, None]  # [n, 5, 1, 1]: channels first
_cam = lambda x=X, **kw: layer_gradcam(
    _spatial, lambda h: _head(h[:, :, 0, 0]), x, **{"target": T, **kw}
)
_ggc = lambda x=X[:, :, None, None], **kw: guided_gradcam(
    lambda z: _spatial(z[:, :, 0, 0]), lambda h: _head(h[:, :, 0, 0]), x, **{"target": T, **kw}
)
_lime = lambda x=X, **kw: lime(K, _model, x, **{"num_samples": 16, "target": T, **kw})
_shap = lambda x=X, bg=BG, **kw: kernel_shap(
    K, _model, x, bg, **{"num_samples": 8, "target": T, **kw}
)
_occ = lambda x=X, **kw: occlusion(_model, x, **{"sliding_window_shapes": (2,), "target": T, **kw})
_abl = lambda x=X, **kw: feature_ablation(_model, x, **{"target": T, **kw})
_sv = lambda x=X, **kw: shapley_values(_model, x, **{"target": T, **kw})
_svs = lambda x=X, **kw: shapley_value_sampling(K, _model, x, **{"target": T, "n_samples": 2, **kw})
_perm = lambda x=X, **kw: feature_permutation(K, _model, x, **{"target": T, **kw})
_X0 = np.zeros(4, np.float32)
_ce = lambda x0=_X0, **kw: contrastive_explanation(
    K, _point_loss, x0, **{"optimizer": optax.sgd(0.1), "num_iter": 4, "save_freq": 2, **kw}
)
_gen = lambda **kw: ExplanationGenerator(**{"num_iter": 4, "save_freq": 2, **kw})
_Y = _normal(3)
_SEG = np.array([0, 0, 1, 1])
_ONE_CLASS = lambda z: jnp.tanh(z).sum(1, keepdims=True)

_infid = lambda a=X, **kw: infidelity(
    K, _model, X, a, **{"target": T, "n_perturb_samples": 2, **kw}
)
_sens = lambda explain=_grad_fn, **kw: sensitivity_max(
    K, explain, X, **{"n_perturb_samples": 2, **kw}
)
_del = lambda a=X, **kw: deletion(_model, X, a, **{"target": T, "n_steps": 3, **kw})
_faith = lambda **kw: faithfulness_correlation(
    K, _model, X, X, **{"target": T, "subset_size": 2, **kw}
)
_PARAMS = {"w": _W}
_mprt = lambda explain=lambda p, z: z @ p["w"], **kw: randomisation_check(
    K, explain, _PARAMS, X, **kw
)
_wrong_rows = lambda k, xs: (xs[:1], xs[:1])  # a perturbation without the repeated rows

BAD = [
    # kernels
    Bad("pairwise_distances", "rank", lambda: pairwise_distances(X[0]), ValueError, r"x must be 2-D"),
    Bad("pairwise_distances", "rank", lambda: pairwise_distances(X, X[None]), ValueError, r"y must be 2-D"),
    Bad("pairwise_distances", "shape", lambda: pairwise_distances(X, _normal(2, 5)), ValueError, r"x and y must have the same number of features"),
    Bad("pairwise_distances", "name", lambda: pairwise_distances(X, metric="minkowski"), ValueError, r"metric='minkowski' is not one of \('euclidean'"),
    Bad("gaussian_perturbation", "shape", lambda: gaussian_perturbation(K, X[0], 4, scale=np.ones(3)), ValueError, r"scale of shape \(3,\) does not broadcast to x"),
    Bad("gaussian_perturbation", "shape", lambda: gaussian_perturbation(K, X[0], 4, mean=X), ValueError, r"mean of shape \(3, 4\) does not broadcast to x"),
    Bad("gaussian_perturbation", "value", lambda: gaussian_perturbation(K, X[0], 0), ValueError, r"num_samples must be >= 1"),
    Bad("bernoulli_perturbation", "shape", lambda: bernoulli_perturbation(K, X, 4, segments=_SEG), ValueError, r"segments of shape \(4,\) must match x"),
    Bad("bernoulli_perturbation", "shape", lambda: bernoulli_perturbation(K, X[0], 4, baseline=np.ones(3)), ValueError, r"baseline of shape \(3,\) does not broadcast to x"),
    Bad("bernoulli_perturbation", "empty", lambda: bernoulli_perturbation(K, np.ones(0), 4, segments=np.zeros(0, int)), ValueError, r"segments is empty"),
    Bad("bernoulli_perturbation", "target", lambda: bernoulli_perturbation(K, X[0], 4, segments=_SEG, num_segments=1), ValueError, r"segments has label 1 but num_segments=1"),
    Bad("bernoulli_perturbation", "value", lambda: bernoulli_perturbation(K, X[0], 4, p=float("nan")), ValueError, r"p must be in \[0, 1\]"),
    Bad("bernoulli_perturbation", "shape", lambda: bernoulli_perturbation(K, X[0], 4, p=np.full(4, 0.5)), ValueError, r"p must be a scalar probability in \[0, 1\], got shape \(4,\)"),
    Bad("exponential_kernel", "value", lambda: exponential_kernel(X, 0.0), ValueError, r"kernel_width must be > 0"),
    Bad("exponential_kernel", "type", lambda: exponential_kernel(X * 1j, 1.0), TypeError, r"distances must be real"),
    Bad("shapley_kernel", "target", lambda: shapley_kernel(4, [0, 5]), ValueError, r"coalition_sizes must lie in \[0, num_features=4\]"),
    Bad("shapley_kernel", "target", lambda: shapley_kernel(4, [-1, 2]), ValueError, r"coalition_sizes must lie in"),
    Bad("shapley_kernel", "type", lambda: shapley_kernel(4, [1.0, 2.0]), TypeError, r"coalition_sizes must be integers"),
    Bad("quadrature", "name", lambda: quadrature("simpson", 8), ValueError, r"method='simpson' is not one of \('riemann_left'"),
    Bad("quadrature", "value", lambda: quadrature("riemann_left", 1), ValueError, r"n_steps must be >= 2"),
    # estimators and the surrogate solver
    Bad("numerical_gradient", "rank", lambda: numerical_gradient(_model, np.float32(1.0)), ValueError, r"x must have at least 1 dimension"),
    Bad("numerical_gradient", "shape", lambda: numerical_gradient(_model, X, eps=np.ones(3)), ValueError, r"eps must be a scalar or one value per feature"),
    Bad("numerical_gradient", "value", lambda: numerical_gradient(_model, X, eps=float("inf")), ValueError, r"eps contains NaN or inf"),
    Bad("numerical_gradient", "shape", lambda: numerical_gradient(lambda z: _model(z)[:1], X), ValueError, r"fn must return one output row per input row"),
    Bad("urv_gradient", "value", lambda: urv_gradient(K, _point_loss, X[0], mu=0.0), ValueError, r"mu must be > 0"),
    Bad("urv_gradient", "value", lambda: urv_gradient(K, _point_loss, X[0], mu=float("inf")), ValueError, r"mu contains NaN or inf"),
    Bad("urv_gradient", "value", lambda: urv_gradient(K, _point_loss, X[0], step=0), ValueError, r"step must be >= 1"),
    Bad("urv_gradient", "shape", lambda: urv_gradient(K, jnp.tanh, X[0]), ValueError, r"fn must return a scalar"),
    Bad("weighted_ridge", "rank", lambda: weighted_ridge(X[0], _Y), ValueError, r"X must be 2-D"),
    Bad("weighted_ridge", "rank", lambda: weighted_ridge(X, X[..., None]), ValueError, r"y must be \[n\] or \[n, k\] with n = 3"),
    Bad("weighted_ridge", "shape", lambda: weighted_ridge(X, _Y[:2]), ValueError, r"y must be \[n\] or \[n, k\] with n = 3"),
    Bad("weighted_ridge", "shape", lambda: weighted_ridge(X, _Y, np.ones(4)), ValueError, r"sample_weight must have shape \(3,\)"),
    Bad("weighted_ridge", "empty", lambda: weighted_ridge(np.ones((0, 4)), np.ones(0)), ValueError, r"X must be 2-D \[samples, features\] with a row"),
    Bad("weighted_ridge", "value", lambda: weighted_ridge(X, _Y, -np.ones(3)), ValueError, r"sample_weight must be >= 0"),
    # integrated gradients and its variants
    Bad("integrated_gradients", "rank", lambda: integrated_gradients(_model, np.float32(1.0), target=0), ValueError, r"x must have at least 1 dimension"),
    Bad("integrated_gradients", "type", lambda: integrated_gradients(_model, X.tolist(), target=T), ValueError, r"x is a list holding Python numbers, which JAX reads as a pytree of scalars"),
    Bad("integrated_gradients", "shape", lambda: _ig(baselines=_normal(2, 4)), ValueError, r"baselines must be a scalar or of shape \(1, 4\) or \(3, 4\)"),
    Bad("integrated_gradients", "shape", lambda: _ig(baselines=_normal(3, 5)), ValueError, r"baselines must be a scalar or of shape"),
    Bad("integrated_gradients", "shape", lambda: _ig(forward_kwargs={"s": np.ones(2)}), ValueError, r"forward_kwargs\['s'\] must have the batch size 3"),
    Bad("integrated_gradients", "shape", lambda: integrated_gradients(_model, {"a": X, "b": X[:2]}, target=0), ValueError, r"every leaf of x needs the same leading batch size"),
    Bad("integrated_gradients", "empty", lambda: integrated_gradients(_model, np.ones((0, 4)), target=0), ValueError, r"x has an empty batch"),
    Bad("integrated_gradients", "target", lambda: _ig(target=3), ValueError, r"target out of range .* rows \[0, 1, 2\]"),
    Bad("integrated_gradients", "target", lambda: _ig(target=np.array([0, -1, 2])), ValueError, r"target out of range .* rows \[1\]"),
    Bad("integrated_gradients", "target", lambda: _ig(target=np.array([0, 1])), ValueError, r"target must be an int or of shape \(3,\)"),
    Bad("integrated_gradients", "target", lambda: _ig(target=None), ValueError, r"target is required"),
    Bad("integrated_gradients", "type", lambda: _ig(target=1.0), TypeError, r"target must be integer"),
    Bad("integrated_gradients", "name", lambda: _ig(method="riemann"), ValueError, r"method='riemann' is not one of \('riemann_left'"),
    Bad("integrated_gradients", "type", lambda: _ig(multiply_by_inputs="False"), TypeError, r"multiply_by_inputs must be a bool, got str 'False'"),
    Bad("integrated_gradients", "type", lambda: _ig(return_convergence_delta=1), TypeError, r"return_convergence_delta must be a bool, got int 1"),
    Bad("layer_integrated_gradients", "type", lambda: _lig(multiply_by_inputs="no"), TypeError, r"multiply_by_inputs must be a bool"),
    Bad("layer_conductance", "type", lambda: _lc(return_convergence_delta="yes"), TypeError, r"return_convergence_delta must be a bool"),
    Bad("neuron_conductance", "type", lambda: _nc(1, multiply_by_inputs="False"), TypeError, r"multiply_by_inputs must be a bool"),
    Bad("layer_integrated_gradients", "shape", lambda: _lig(baselines=_normal(2, 4)), ValueError, r"baselines must be a scalar or of shape"),
    Bad("layer_integrated_gradients", "empty", lambda: _lig(np.ones((0, 4))), ValueError, r"x has an empty batch"),
    Bad("layer_integrated_gradients", "target", lambda: _lig(target=5), ValueError, r"target out of range"),
    Bad("layer_integrated_gradients", "name", lambda: _lig(method="simpson"), ValueError, r"method='simpson' is not one of"),
    Bad("layer_integrated_gradients", "value", lambda: _lig(internal_batch_size=0), ValueError, r"internal_batch_size must be >= 1"),
    Bad("layer_conductance", "shape", lambda: _lc(baselines=_normal(3, 5)), ValueError, r"baselines must be a scalar or of shape"),
    Bad("layer_conductance", "empty", lambda: _lc(np.ones((0, 4))), ValueError, r"x has an empty batch"),
    Bad("layer_conductance", "target", lambda: _lc(target=np.array([0, 3, 0])), ValueError, r"target out of range .* rows \[1\]"),
    Bad("layer_conductance", "name", lambda: _lc(method="riemann"), ValueError, r"method='riemann' is not one of"),
    Bad("neuron_conductance", "target", lambda: _nc(5), ValueError, r"neuron_index=\(5,\) does not index one example's layer output of shape \(5,\)"),
    Bad("neuron_conductance", "target", lambda: _nc(-1), ValueError, r"neuron_index=\(-1,\) does not index"),
    Bad("neuron_conductance", "rank", lambda: _nc((0, 1)), ValueError, r"neuron_index=\(0, 1\) does not index"),
    Bad("neuron_conductance", "type", lambda: _nc(1.5), TypeError, r"neuron_index must be an int"),
    Bad("neuron_conductance", "empty", lambda: _nc(1, np.ones((0, 4))), ValueError, r"x has an empty batch"),
    Bad("neuron_conductance", "target", lambda: _nc(1, target=3), ValueError, r"target out of range"),
    Bad("smoothgrad", "name", lambda: _sg(nt_type="sg"), ValueError, r"nt_type='sg' is not one of \('smoothgrad'"),
    Bad("smoothgrad", "value", lambda: _sg(stdev=float("inf")), ValueError, r"stdev contains NaN or inf"),
    Bad("expected_gradients", "value", lambda: _eg(stdev=np.inf), ValueError, r"stdev contains NaN or inf"),
    Bad("neuron_conductance", "type", lambda: _nc(True), TypeError, r"neuron_index must be an int or a tuple of ints, got True"),
    Bad("neuron_conductance", "type", lambda: _nc((0, np.bool_(True))), TypeError, r"neuron_index must be an int or a tuple of ints"),
    # a layer_fn whose rows do not follow the batch's, a head_fn without rows: named, not baselines
    Bad("layer_integrated_gradients", "shape", lambda: layer_integrated_gradients(_dropping, _head, X, target=T), ValueError, r"layer_fn must return one output row per input row .* for 6 input rows"),
    Bad("layer_integrated_gradients", "shape", lambda: layer_integrated_gradients(_layer, _total, X), ValueError, r"head_fn must return one output row per input row"),
    Bad("layer_conductance", "shape", lambda: layer_conductance(_dropping, _head, X, target=T), ValueError, r"layer_fn must treat rows independently"),
    Bad("layer_conductance", "shape", lambda: layer_conductance(lambda z: _layer(z)[:1], _head, X, target=T), ValueError, r"layer_fn must return one output row per input row .* for 3 input rows"),
    Bad("neuron_conductance", "shape", lambda: neuron_conductance(_dropping, _head, X, 1, target=T), ValueError, r"layer_fn must treat rows independently"),
    Bad("smoothgrad", "empty", lambda: _sg(np.ones((0, 4))), ValueError, r"x has an empty batch"),
    Bad("smoothgrad", "value", lambda: _sg(stdev=-1.0), ValueError, r"stdev must be >= 0"),
    Bad("expected_gradients", "shape", lambda: _eg(bg=_normal(5, 3)), ValueError, r"background must be rows shaped like x's"),
    Bad("expected_gradients", "rank", lambda: _eg(bg=BG[0]), ValueError, r"background must be rows shaped like x's"),
    Bad("expected_gradients", "empty", lambda: _eg(bg=np.ones((0, 4))), ValueError, r"background .* at least one row"),
    Bad("expected_gradients", "empty", lambda: _eg(np.ones((0, 4))), ValueError, r"x has an empty batch"),
    Bad("expected_gradients", "target", lambda: _eg(target=np.array([0, 1, 3])), ValueError, r"target out of range .* rows \[2\]"),
    # gradient maps
    Bad("saliency", "type", lambda: _sal(abs="yes"), TypeError, r"abs must be a bool, got str 'yes'"),
    Bad("saliency", "target", lambda: _sal(target=3), ValueError, r"target out of range .* rows \[0, 1, 2\]"),
    Bad("saliency", "target", lambda: _sal(target=None), ValueError, r"target is required"),
    Bad("saliency", "empty", lambda: _sal(np.ones((0, 4))), ValueError, r"x has an empty batch"),
    Bad("saliency", "shape", lambda: _sal(forward_kwargs={"s": np.ones(2)}), ValueError, r"forward_kwargs\['s'\] must have the batch size 3"),
    Bad("input_x_gradient", "rank", lambda: input_x_gradient(_model, np.float32(1.0), target=0), ValueError, r"x must have at least 1 dimension"),
    Bad("input_x_gradient", "type", lambda: input_x_gradient(_model, X, target=1.0), TypeError, r"target must be integer"),
    Bad("gradient_shap", "value", lambda: _gs(n_samples=0), ValueError, r"n_samples must be >= 1"),
    Bad("gradient_shap", "value", lambda: _gs(stdevs=-0.1), ValueError, r"stdevs must be >= 0"),
    Bad("gradient_shap", "value", lambda: _gs(stdevs=np.inf), ValueError, r"stdevs contains NaN or inf"),
    Bad("gradient_shap", "shape", lambda: _gs(bg=_normal(5, 3)), ValueError, r"baselines must be rows shaped like x's"),
    Bad("gradient_shap", "rank", lambda: _gs(bg=BG[0]), ValueError, r"baselines must be rows shaped like x's"),
    Bad("gradient_shap", "empty", lambda: _gs(bg=np.ones((0, 4))), ValueError, r"baselines .* at least one row"),
    Bad("gradient_shap", "type", lambda: _gs(return_convergence_delta=1), TypeError, r"return_convergence_delta must be a bool"),
    Bad("gradient_shap", "target", lambda: _gs(target=np.array([0, 1, 3])), ValueError, r"target out of range .* rows \[2\]"),
    Bad("layer_activation", "shape", lambda: layer_activation(_dropping, _head, X), ValueError, r"layer_fn must treat rows independently"),
    Bad("layer_activation", "shape", lambda: layer_activation(_layer, _total, X), ValueError, r"head_fn must return one output row per input row"),
    Bad("layer_activation", "shape", lambda: layer_activation(_layer, _model, X), ValueError, r"layer_fn and head_fn do not compose: head_fn fails on layer_fn's output \(3, 5\)"),
    Bad("layer_gradient_x_activation", "type", lambda: _lgxa(multiply_by_inputs="no"), TypeError, r"multiply_by_inputs must be a bool"),
    Bad("layer_gradient_x_activation", "shape", lambda: layer_gradient_x_activation(_layer, _model, X, target=T), ValueError, r"layer_fn and head_fn do not compose"),
    Bad("layer_gradient_x_activation", "target", lambda: _lgxa(target=3), ValueError, r"target out of range"),
    Bad("layer_gradcam", "rank", lambda: layer_gradcam(_layer, _head, X, target=T), ValueError, r"layer_gradcam needs a layer with spatial axes .* shape \(3, 5\)"),
    Bad("layer_gradcam", "value", lambda: _cam(channel_axis=4), ValueError, r"channel_axis=4 is out of range for a layer of shape \(3, 5, 1, 1\)"),
    Bad("layer_gradcam", "value", lambda: _cam(channel_axis=0), ValueError, r"channel_axis=0 is out of range"),
    Bad("layer_gradcam", "value", lambda: _cam(channel_axis=-4), ValueError, r"channel_axis=-4 is out of range"),
    Bad("layer_gradcam", "type", lambda: _cam(channel_axis=1.0), TypeError, r"channel_axis must be an int"),
    Bad("guided_gradcam", "name", lambda: _ggc(interpolate_mode="bilinear"), ValueError, r"interpolate_mode='bilinear' is not one of \('nearest',\)"),
    Bad("guided_gradcam", "rank", lambda: guided_gradcam(lambda z: _spatial(z[..., 0]), lambda h: _head(h[:, :, 0, 0]), X[:, :, None], target=T), ValueError, r"guided_gradcam needs x with the layer's layout: x has shape \(3, 4, 1\), layer_fn\(x\) \(3, 5, 1, 1\)"),
    Bad("guided_gradcam", "shape", lambda: _ggc(x={"a": X}), ValueError, r"guided_gradcam takes one input array x"),
    Bad("guided_gradcam", "value", lambda: _ggc(channel_axis=0), ValueError, r"channel_axis=0 is out of range"),
    Bad("layer_gradcam", "type", lambda: _cam(relu_attributions=1), TypeError, r"relu_attributions must be a bool"),
    Bad("layer_gradcam", "type", lambda: layer_gradcam(lambda z: (_layer(z), _layer(z)), lambda h: _head(h[0]), X, target=T), TypeError, r"layer_fn must return one array for layer_gradcam"),
    Bad("layer_gradcam", "shape", lambda: layer_gradcam(_spatial, _model, X, target=T), ValueError, r"layer_fn and head_fn do not compose"),
    # local surrogates
    Bad("lime", "rank", lambda: _lime(X[0]), ValueError, r"x must be 2-D"),
    Bad("lime", "empty", lambda: _lime(np.ones((3, 0), np.float32)), ValueError, r"x must have at least one feature \(column\), got shape \(3, 0\)"),
    Bad("lime", "shape", lambda: _lime(scale=np.ones(3)), ValueError, r"scale must be a scalar or one value per feature \(4,\)"),
    Bad("lime", "shape", lambda: _lime(mean=np.ones(5)), ValueError, r"mean must be a scalar or one value per feature"),
    Bad("lime", "shape", lambda: _lime(perturbation="bernoulli", segments=np.zeros((2, 4), int)), ValueError, r"segments must have shape \(4,\) or \(3, 4\)"),
    Bad("lime", "shape", lambda: lime(jax.random.split(K, 2), _model, X, num_samples=16, target=T), ValueError, r"key must be a single PRNG key or one key per row, shape \(3,\)"),
    Bad("lime", "target", lambda: _lime(target=3), ValueError, r"target out of range"),
    Bad("lime", "value", lambda: _lime(mean=np.full(4, np.nan)), ValueError, r"mean contains NaN or inf \(4 entries"),
    Bad("lime", "value", lambda: _lime(scale=np.inf), ValueError, r"scale contains NaN or inf \(1 entry"),
    Bad("lime", "value", lambda: _lime(perturbation="bernoulli", baseline=np.array([0, np.inf, 0, 0])), ValueError, r"baseline contains NaN or inf"),
    Bad("lime", "name", lambda: _lime(perturbation="uniform"), ValueError, r"perturbation='uniform' is not one of \('gaussian', 'bernoulli'\)"),
    Bad("lime", "name", lambda: _lime(feature_selection="lars"), ValueError, r"feature_selection='lars' is not one of"),
    Bad("lime", "name", lambda: _lime(distance_metric="chebyshev"), ValueError, r"distance_metric='chebyshev' is not one of"),
    Bad("kernel_shap", "rank", lambda: _shap(X[0]), ValueError, r"x must be 2-D"),
    Bad("kernel_shap", "empty", lambda: _shap(np.ones((3, 0), np.float32), bg=np.ones((5, 0), np.float32)), ValueError, r"x must have at least one feature"),
    Bad("kernel_shap", "rank", lambda: _shap(bg=BG[0]), ValueError, r"background must be 2-D"),
    Bad("kernel_shap", "shape", lambda: _shap(bg=_normal(5, 3)), ValueError, r"background must have the 4 features of x"),
    Bad("kernel_shap", "empty", lambda: _shap(bg=np.ones((0, 4), np.float32)), ValueError, r"background"),
    Bad("kernel_shap", "target", lambda: _shap(target=-1), ValueError, r"target out of range"),
    Bad("kernel_shap", "name", lambda: _shap(sampler="optimal"), ValueError, r"sampler='optimal' is not one of \('shap', 'leverage'\)"),
    Bad("kernel_shap", "name", lambda: _shap(num_samples="many"), ValueError, r"num_samples='many' must be an int >= 1 or 'auto'"),
    Bad("kernel_shap", "value", lambda: _shap(num_samples="auto"), ValueError, r"num_samples='auto' needs a tolerance: give rtol, atol"),
    Bad("kernel_shap", "value", lambda: _shap(num_samples="auto", rtol=0.0), ValueError, r"rtol must be > 0"),
    Bad("kernel_shap", "value", lambda: _shap(num_samples="auto", atol=-1e-3), ValueError, r"atol must be > 0"),
    Bad("kernel_shap", "value", lambda: _shap(num_samples="auto", atol=0.1, max_samples=5), ValueError, r"max_samples=5 is below one round of num_samples='auto': 14 coalitions"),
    Bad("kernel_shap", "type", lambda: _shap(return_stderr="yes"), TypeError, r"return_stderr must be a bool"),
    Bad("kernel_shap", "name", lambda: _shap(estimator="quadratic"), ValueError, r"estimator='quadratic' is not one of \('linear', 'cubic'\)"),
    Bad("kernel_shap", "value", lambda: _shap(num_samples="auto", atol=0.1, estimator="cubic"), ValueError, r"num_samples='auto' pools the rounds' normal equations of estimator='linear'; estimator='cubic' takes a fixed num_samples"),
    # perturbation attributions
    Bad("occlusion", "shape", lambda: _occ(sliding_window_shapes=(5,)), ValueError, r"sliding_window_shapes \(5,\) exceeds the input's non-batch shape \(4,\)"),
    Bad("occlusion", "value", lambda: _occ(strides=0), ValueError, r"strides must be >= 1 along every axis, got \(0,\)"),
    Bad("occlusion", "value", lambda: _occ(strides=(-1,)), ValueError, r"strides must be >= 1"),
    Bad("occlusion", "value", lambda: _occ(strides=3), ValueError, r"strides \(3,\) must not exceed sliding_window_shapes \(2,\)"),
    Bad("occlusion", "rank", lambda: _occ(sliding_window_shapes=(1, 2)), ValueError, r"sliding_window_shapes must have one entry per non-batch axis"),
    Bad("occlusion", "value", lambda: _occ(sliding_window_shapes=(0,)), ValueError, r"sliding_window_shapes must be >= 1"),
    Bad("occlusion", "shape", lambda: _occ(baselines=_normal(2, 4)), ValueError, r"baselines must be a scalar or of shape"),
    Bad("occlusion", "target", lambda: _occ(target=3), ValueError, r"target out of range"),
    Bad("feature_ablation", "shape", lambda: _abl(feature_mask=np.zeros(3, int)), ValueError, r"feature_mask of shape \(3,\) does not broadcast to the input of shape \(3, 4\)"),
    Bad("feature_ablation", "value", lambda: _abl(feature_mask=np.array([0, -1, 1, 1])), ValueError, r"feature_mask ids must be >= 0, got -1"),
    Bad("feature_ablation", "type", lambda: _abl(feature_mask=np.array([0.0, 1.0, 1.0, 2.0])), TypeError, r"feature_mask must hold integer feature ids, got dtype float"),
    Bad("feature_ablation", "shape", lambda: _abl(baselines=_normal(2, 4)), ValueError, r"baselines must be a scalar or of shape"),
    Bad("feature_ablation", "empty", lambda: _abl(np.ones((0, 4), np.float32)), ValueError, r"x has an empty batch"),
    Bad("feature_ablation", "value", lambda: _abl(batch_size=0), ValueError, r"batch_size must be >= 1"),
    Bad("shapley_values", "value", lambda: shapley_values(lambda z: z.sum(1), np.ones((2, 17), np.float32)), ValueError, r"at most MAX_EXACT_FEATURES=16 feature groups, got d=17"),
    Bad("shapley_values", "shape", lambda: _sv(feature_mask=np.zeros((2, 4), int)), ValueError, r"feature_mask of shape \(2, 4\) does not broadcast"),
    Bad("shapley_values", "shape", lambda: _sv(baselines=_normal(5, 3)), ValueError, r"baselines must be rows shaped like x.s .* got \(5, 3\) for x.s \(3, 4\)"),
    Bad("shapley_values", "target", lambda: _sv(target=np.array([0, 1, 3])), ValueError, r"target out of range .* rows \[2\]"),
    Bad("shapley_value_sampling", "value", lambda: _svs(n_samples=0), ValueError, r"n_samples must be >= 1"),
    Bad("shapley_value_sampling", "type", lambda: _svs(antithetic="yes"), TypeError, r"antithetic must be a bool"),
    Bad("shapley_value_sampling", "value", lambda: _svs(feature_mask=np.array([0, 1, 1, -2])), ValueError, r"feature_mask ids must be >= 0"),
    Bad("shapley_value_sampling", "type", lambda: shapley_value_sampling(0, _model, X, target=T), TypeError, r"key must be a PRNG key"),
    Bad("feature_permutation", "value", lambda: _perm(X[:1], target=T[:1]), ValueError, r"x must have at least 2 examples to permute across, got 1"),
    Bad("feature_permutation", "shape", lambda: _perm(feature_mask=np.arange(12).reshape(3, 4)), ValueError, r"feature_mask must be one mask for every example"),
    Bad("feature_permutation", "type", lambda: _perm(feature_mask=np.ones(4, bool)), TypeError, r"feature_mask must hold integer feature ids"),
    # propagation methods
    Bad("deeplift", "shape", lambda: xai_jax.deeplift(_model, X, _normal(2, 4), target=T), ValueError, r"baselines must be a scalar or of shape \(1, 4\) or \(3, 4\)"),
    Bad("deeplift", "value", lambda: xai_jax.deeplift(_model, X, target=T, eps=-1.0), ValueError, r"eps must be >= 0"),
    Bad("deeplift", "target", lambda: xai_jax.deeplift(_model, X, target=3), ValueError, r"target out of range"),
    Bad("deeplift", "value", lambda: xai_jax.deeplift(lambda z: _model(z) * _model(z), X, target=T), ValueError, r"no rule for the primitive 'mul'"),
    Bad("deeplift_shap", "shape", lambda: xai_jax.deeplift_shap(_model, X, _normal(2, 5), target=T), ValueError, r"baselines must be rows shaped like x's"),
    Bad("deeplift_shap", "value", lambda: xai_jax.deeplift_shap(_model, X, BG, target=T, internal_batch_size=0), ValueError, r"internal_batch_size must be >= 1"),
    Bad("layer_deeplift", "shape", lambda: xai_jax.layer_deeplift(_layer, _model, X, target=T), ValueError, r"layer_fn and head_fn do not compose"),
    Bad("layer_deeplift", "shape", lambda: xai_jax.layer_deeplift(lambda z: _layer(z).sum(), _head, X, target=T), ValueError, r"layer_fn"),
    Bad("guided_backprop", "target", lambda: xai_jax.guided_backprop(_model, X), ValueError, r"target is required"),
    Bad("deconvolution", "shape", lambda: xai_jax.deconvolution(_model, X, target=T, forward_kwargs={"s": np.ones(2)}), ValueError, r"forward_kwargs\['s'\] must have the batch size 3"),
    Bad("lrp", "name", lambda: xai_jax.lrp(_model, X, target=T, rule="alpha_beta"), ValueError, r"rule='alpha_beta' is not one of \('epsilon', 'gamma', 'z_plus'\)"),
    Bad("lrp", "type", lambda: xai_jax.lrp(_model, X, target=T, rule={"dot_general": 1}), TypeError, r"rule must map primitive names"),
    Bad("lrp", "value", lambda: xai_jax.lrp(_model, X, target=T, epsilon=-1.0), ValueError, r"epsilon must be >= 0"),
    Bad("propagation_gradient", "type", lambda: xai_jax.propagation_gradient(_model, X, [xai_jax.Epsilon()], target=T), TypeError, r"rules must be a mapping"),
    Bad("Epsilon", "type", lambda: xai_jax.Epsilon(1.0, 2.0), TypeError, r"takes from 1 to 2 positional arguments"),
    Bad("Gamma", "type", lambda: xai_jax.Gamma(1.0, 2.0), TypeError, r"takes from 1 to 2 positional arguments"),
    Bad("ZPlus", "type", lambda: xai_jax.ZPlus(1.0), TypeError, r"takes 1 positional argument"),
    # evaluation metrics
    Bad("infidelity", "shape", lambda: _infid(a=X[:, :3]), ValueError, r"attributions must have the structure and shapes of x \(3, 4\)"),
    Bad("infidelity", "shape", lambda: _infid(a={"a": X}), ValueError, r"attributions must have the structure and shapes of x"),
    Bad("infidelity", "value", lambda: _infid(n_perturb_samples=0), ValueError, r"n_perturb_samples must be >= 1"),
    Bad("infidelity", "shape", lambda: _infid(perturb=_wrong_rows), ValueError, r"perturb must return \(perturbation, perturbed_xs\) with the structure and shapes of xs \(6, 4\)"),
    Bad("infidelity", "shape", lambda: _infid(perturb=lambda k, xs: xs), ValueError, r"perturb must return \(perturbation, perturbed_xs\)"),
    Bad("infidelity", "target", lambda: _infid(target=3), ValueError, r"target out of range"),
    Bad("infidelity", "value", lambda: _infid(stdev=-1.0), ValueError, r"stdev must be >= 0"),
    Bad("infidelity", "value", lambda: _infid(stdev=float("inf")), ValueError, r"stdev contains NaN or inf"),
    Bad("sensitivity_max", "shape", lambda: _sens(explain=lambda z: _model(z)), ValueError, r"explain must return attributions with the structure and shapes of its input \(3, 4\), got \(3, 3\)"),
    Bad("sensitivity_max", "shape", lambda: _sens(explain=lambda z: {"a": z}), ValueError, r"explain must return attributions with the structure and shapes of its input"),
    Bad("sensitivity_max", "shape", lambda: _sens(perturb=lambda k, xs: xs[:, :2]), ValueError, r"perturb must return perturbed_xs with the structure and shapes of xs \(6, 4\)"),
    Bad("sensitivity_max", "name", lambda: _sens(norm_ord="nuc"), ValueError, r"norm_ord='nuc' must be 'fro' or a positive order"),
    Bad("sensitivity_max", "value", lambda: _sens(n_perturb_samples=0), ValueError, r"n_perturb_samples must be >= 1"),
    Bad("sensitivity_max", "value", lambda: _sens(perturb_radius=-0.1), ValueError, r"perturb_radius must be >= 0"),
    Bad("sensitivity_max", "value", lambda: _sens(perturb_radius=float("inf")), ValueError, r"perturb_radius contains NaN or inf"),
    Bad("deletion", "value", lambda: _del(n_steps=0), ValueError, r"n_steps must be >= 1"),
    Bad("deletion", "shape", lambda: _del(a=X[:2]), ValueError, r"attributions must have the structure and shapes of x"),
    Bad("deletion", "shape", lambda: _del(feature_mask=np.zeros(3, int)), ValueError, r"feature_mask of shape \(3,\) does not broadcast"),
    Bad("insertion", "value", lambda: insertion(_model, X, X, target=T, n_steps=-2), ValueError, r"n_steps must be >= 1"),
    Bad("insertion", "shape", lambda: insertion(_model, X, X[None], target=T), ValueError, r"attributions must have the structure and shapes of x"),
    Bad("faithfulness_correlation", "value", lambda: _faith(subset_size=5), ValueError, r"subset_size=5 exceeds the number of features \(groups\) 4"),
    Bad("faithfulness_correlation", "value", lambda: _faith(subset_size=3, feature_mask=np.array([0, 0, 1, 1])), ValueError, r"subset_size=3 exceeds the number of features \(groups\) 2"),
    Bad("faithfulness_correlation", "value", lambda: _faith(n_subsets=1), ValueError, r"n_subsets must be >= 2"),
    Bad("faithfulness_correlation", "type", lambda: _faith(subset_size=None), TypeError, r"subset_size must be an int"),
    Bad("completeness", "shape", lambda: completeness(_model, X, X[:, :2], target=T), ValueError, r"attributions must have the structure and shapes of x"),
    Bad("completeness", "shape", lambda: completeness(_model, X, X, _normal(2, 4), target=T), ValueError, r"baselines must be a scalar or of shape"),
    Bad("randomisation_check", "name", lambda: _mprt(layers=["conv"]), ValueError, r"layers \['conv'\] are not keys of params \['w'\]"),
    Bad("randomisation_check", "name", lambda: _mprt(similarity="ssim"), ValueError, r"similarity='ssim' is not one of \('spearman', 'pearson', 'cosine'\)"),
    Bad("randomisation_check", "shape", lambda: _mprt(explain=lambda p, z: (z @ p["w"]).sum()), ValueError, r"explain must return one map per example \(leading axis 3\)"),
    Bad("randomisation_check", "type", lambda: randomisation_check(K, lambda p, z: z, [_W], X), ValueError, r"params must be a non-empty dict of layers"),
    Bad("CurveResult", "shape", lambda: CurveResult(X), TypeError, r"missing 1 required positional argument: 'auc'"),
    # contrastive explanations and optimizers
    Bad("cem_loss", "name", lambda: cem_loss("PQ", _model, X[0]), ValueError, r"mode='PQ' is not one of \('PN', 'PP'\)"),
    Bad("cem_loss", "shape", lambda: cem_loss("PN", _ONE_CLASS, X[0]), ValueError, r"predict_fn must be a classifier returning \[batch, classes >= 2\]"),
    Bad("cem_loss", "value", lambda: cem_loss("PN", _model, X[0], kappa=-1.0), ValueError, r"kappa must be >= 0"),
    Bad("contrastive_explanation", "name", lambda: _ce(gradient="adam"), ValueError, r"gradient='adam' is not one of \('autodiff', 'urv', 'numerical'\)"),
    Bad("contrastive_explanation", "shape", lambda: _ce(lower=np.zeros(3)), ValueError, r"lower must be a scalar or of x0's shape \(4,\)"),
    Bad("contrastive_explanation", "value", lambda: _ce(lower=1.0, upper=0.0), ValueError, r"lower must not exceed upper"),
    Bad("contrastive_explanation", "value", lambda: _ce(save_freq=5), ValueError, r"save_freq=5 exceeds num_iter=4"),
    Bad("aoexpgrad", "value", lambda: aoexpgrad(-0.1), ValueError, r"l1 must be >= 0"),
    Bad("aoexpgrad", "value", lambda: aoexpgrad(lower=float("nan")), ValueError, r"lower must not be NaN"),
    Bad("aoexpgrad", "shape", lambda: aoexpgrad(lower=np.zeros(2), upper=np.ones(3)), ValueError, r"lower and upper must broadcast together"),
    Bad("elastic_net_fista", "value", lambda: elastic_net_fista(beta=0.0), ValueError, r"beta must be > 0"),
    Bad("elastic_net_fista", "value", lambda: elastic_net_fista(-1.0), ValueError, r"learning_rate must be > 0"),
    # surface: wrappers and result containers
    Bad("IntegratedGradients", "name", lambda: IntegratedGradients(_model, method="simpson"), ValueError, r"method='simpson' is not one of"),
    Bad("IntegratedGradients", "type", lambda: IntegratedGradients(_model, layer=3), TypeError, r"layer must be None, a haiku module name or a \(layer_fn, head_fn\) pair"),
    Bad("IntegratedGradients", "empty", lambda: IntegratedGradients(_model).explain(np.ones((0, 4)), target=0), ValueError, r"X has an empty batch"),
    Bad("IntegratedGradients", "rank", lambda: IntegratedGradients(_model).explain(np.float32(1.0), target=0), ValueError, r"X must have at least 1 dimension"),
    Bad("IntegratedGradients", "target", lambda: IntegratedGradients(_model).explain(X, target=3), ValueError, r"target out of range"),
    Bad("LimeBase", "name", lambda: LimeBase(_model_x, pairwise_distances_metric="hamming"), ValueError, r"pairwise_distances_metric='hamming' is not one of"),
    Bad("LimeBase", "rank", lambda: LimeBase(_model_x).attribute(X[0]), ValueError, r"X must be 2-D"),
    Bad("LimeBase", "value", lambda: LimeBase(_model_x).attribute(X, num_samples=0), ValueError, r"num_samples must be >= 1"),
    Bad("ExplanationGenerator", "name", lambda: _gen(loss="hinge"), ValueError, r"loss='hinge' is not one of \('cem',\)"),
    Bad("ExplanationGenerator", "name", lambda: _gen(optimizer="sgd"), ValueError, r"optimizer='sgd' is not one of \('aoexpgrad', 'elastic_net_fista'\)"),
    Bad("ExplanationGenerator", "name", lambda: _gen(gradient="exact"), ValueError, r"gradient='exact' is not one of"),
    Bad("ExplanationGenerator", "value", lambda: _gen().run(X[0]), ValueError, r"no classifier: pass inference_call"),
    Bad("Explanation", "type", lambda: Explanation(["name"], {}), TypeError, r"meta must be a dict, got list"),
    Bad("Explanation", "type", lambda: Explanation({}, None), TypeError, r"data must be a dict, got NoneType"),
    Bad("LimeResult", "shape", lambda: LimeResult(X, _Y, _Y), TypeError, r"missing 1 required positional argument: 'local_pred'"),
    Bad("RidgeFit", "shape", lambda: RidgeFit(X[0], 1.0), TypeError, r"missing 1 required positional argument: 'score'"),
    Bad("ContrastiveResult", "shape", lambda: ContrastiveResult(X[0], 1.0, True, X), TypeError, r"missing 1 required positional argument: 'losses'"),
]  # fmt: skip

PUBLIC = sorted(name for name in xai_jax.__all__ if callable(getattr(xai_jax, name)))


def test_every_public_callable_has_a_bad_input_entry():
    assert {case.target for case in BAD} == set(PUBLIC)


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=c.marks, id=str(c)) for c in BAD]
)  # fmt: skip
def test_bad_input_raises_a_clear_error_before_the_model_runs(case):
    with pytest.raises(case.error, match=case.match):
        case.call()
    _assert_model_did_not_run()


# --------------------------------------------------------------------------------------------
# NaN and inf: raise on concrete data, propagate (never a finite number) under jit.


def _floating(tree):
    return [
        np.asarray(leaf)
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)
    ]


def _rows(i: int, transpose: bool = False):
    """Row `i` of every floating output is non-finite somewhere; every other row is finite."""

    def check(out, arrays):
        for leaf in _floating(out):
            leaf = leaf.T if transpose else leaf
            ok = np.isfinite(leaf.reshape(leaf.shape[0], -1)).all(axis=1)
            assert not ok[i], f"row {i} is finite: {leaf[i]}"
            assert np.delete(ok, i).all(), "a row without non-finite input is not finite"

    return check


def _every_row(out, arrays):
    """Every row of every floating output (a scalar counts as one row) is non-finite somewhere."""
    for leaf in _floating(out):
        rows = leaf.reshape(leaf.shape[0] if leaf.ndim else 1, -1)
        assert (~np.isfinite(rows)).any(axis=1).all()


def _somewhere(out, arrays):
    for leaf in _floating(out):
        assert not np.isfinite(leaf).all()


def _row_and_column(i: int):
    def check(out, arrays):
        out = np.asarray(out)
        bad = ~np.isfinite(out)
        assert bad[i].all() and bad[:, i].all()
        assert not np.delete(np.delete(bad, i, 0), i, 1).any()

    return check


def _samples_keeping(j: int, kept: bool):
    """Bernoulli samples are non-finite exactly where feature `j` is kept (or switched off)."""

    def check(out, arrays):
        masks, samples = (np.asarray(a) for a in out)
        expect = masks[:, j] if kept else ~masks[:, j]
        np.testing.assert_array_equal(~np.isfinite(samples).all(axis=1), expect)

    return check


def _all_but_row_zero(out, arrays):
    ok = np.isfinite(np.asarray(out)).all(axis=1)
    assert ok[0] and not ok[1:].any()


@dataclasses.dataclass(frozen=True)
class Poison:
    target: str
    name: str  # the argument the error must name
    call: Callable  # (*arrays) -> outputs
    arrays: tuple
    arg: int  # which array holds the non-finite entry
    at: tuple  # where
    spreads: Callable  # (outputs, arrays) -> None: how NaN must reach the outputs
    jit: bool = True
    # False where the black box maps inf to a finite value (tanh(inf) = 1, a saturated layer):
    # the explanation is then that of a finite output. NaN always spreads.
    inf_spreads: bool = True

    def __str__(self):
        return f"{self.target}-{self.name}"


_seg_lime = lambda x: lime(K, _model, x, num_samples=32, target=T, perturbation="bernoulli")
_ig_x = lambda x: integrated_gradients(_model, x, target=T, n_steps=4)
_gen_run = lambda img: _gen(loss_kwargs={"mode": "PN"}).run(img, inference_call=_model)

POISON = [
    Poison("pairwise_distances", "x", lambda x: pairwise_distances(x, BG), (X,), 0, (1, 2), _rows(1)),
    Poison("pairwise_distances", "x", lambda x: pairwise_distances(x, BG, metric="cosine"), (X,), 0, (1, 2), _rows(1)),
    Poison("pairwise_distances", "y", lambda y: pairwise_distances(X, y, metric="sqeuclidean"), (BG,), 0, (3, 0), _rows(3, transpose=True)),
    Poison("pairwise_distances", "y", lambda y: pairwise_distances(X, y, metric="manhattan"), (BG,), 0, (3, 0), _rows(3, transpose=True)),
    Poison("pairwise_distances", "x", lambda x: pairwise_distances(x), (BG,), 0, (2, 1), _row_and_column(2)),
    Poison("pairwise_distances", "x", lambda x: pairwise_distances(x, metric="cosine"), (BG,), 0, (2, 1), _row_and_column(2)),
    Poison("gaussian_perturbation", "x", lambda x: gaussian_perturbation(K, x, 6), (X[0],), 0, (2,), _every_row),
    Poison("gaussian_perturbation", "mean", lambda m: gaussian_perturbation(K, X[0], 6, mean=m), (X[1],), 0, (2,), _all_but_row_zero),
    Poison("bernoulli_perturbation", "x", lambda x: bernoulli_perturbation(K, x, 16), (X[0],), 0, (2,), _samples_keeping(2, kept=True)),
    Poison("bernoulli_perturbation", "baseline", lambda b: bernoulli_perturbation(K, X[0], 16, baseline=b), (X[1],), 0, (2,), _samples_keeping(2, kept=False)),
    Poison("exponential_kernel", "distances", lambda d: exponential_kernel(d, 1.0), (X,), 0, (1, 0), _rows(1), inf_spreads=False),
    Poison("numerical_gradient", "x", lambda x: numerical_gradient(_model, x), (X,), 0, (1, 3), _rows(1)),
    Poison("urv_gradient", "x", lambda x: urv_gradient(K, _point_loss, x, num_samples=8), (X[0],), 0, (1,), _every_row, inf_spreads=False),
    Poison("weighted_ridge", "X", lambda A: weighted_ridge(A, BG[:, 0]), (BG,), 0, (4, 1), _every_row),
    Poison("weighted_ridge", "y", lambda y: weighted_ridge(BG, y), (BG[:, 0],), 0, (2,), _every_row),
    Poison("weighted_ridge", "sample_weight", lambda w: weighted_ridge(BG, BG[:, 1], w), (np.abs(BG[:, 2]),), 0, (0,), _every_row),
    Poison("integrated_gradients", "x", _ig_x, (X,), 0, (1, 2), _rows(1)),
    Poison("integrated_gradients", "baselines", lambda b: integrated_gradients(_model, X, b, target=T, n_steps=4), (B,), 0, (2, 0), _rows(2)),
    Poison("layer_integrated_gradients", "x", lambda x: _lig(x, n_steps=4), (X,), 0, (1, 0), _rows(1), inf_spreads=False),
    Poison("layer_conductance", "x", lambda x: _lc(x, n_steps=4), (X,), 0, (0, 3), _rows(0), inf_spreads=False),
    Poison("neuron_conductance", "baselines", lambda b: _nc(2, baselines=b, n_steps=4), (B,), 0, (1, 1), _rows(1)),
    Poison("smoothgrad", "x", lambda x: _sg(x, stdev=0.1), (X,), 0, (2, 2), _rows(2), inf_spreads=False),
    Poison("expected_gradients", "x", lambda x: _eg(x, num_samples=4), (X,), 0, (1, 1), _rows(1)),
    Poison("expected_gradients", "background", lambda bg: _eg(bg=bg, num_samples=4), (BG[:1],), 0, (0, 3), _every_row),
    Poison("saliency", "x", lambda x: _sal(x), (X,), 0, (1, 2), _rows(1), inf_spreads=False),
    Poison("input_x_gradient", "x", lambda x: input_x_gradient(_model, x, target=T), (X,), 0, (2, 1), _rows(2)),
    Poison("gradient_shap", "x", lambda x: _gs(x, n_samples=3), (X,), 0, (1, 1), _rows(1)),
    Poison("gradient_shap", "baselines", lambda bg: _gs(bg=bg, n_samples=3), (BG[:1],), 0, (0, 3), _every_row),
    Poison("lime", "x", lambda x: _lime(x, num_samples=32), (X,), 0, (1, 2), _rows(1)),
    Poison("lime", "x", _seg_lime, (X,), 0, (2, 0), _rows(2), inf_spreads=False),
    Poison("kernel_shap", "x", lambda x: _shap(x), (X,), 0, (1, 2), _rows(1), inf_spreads=False),
    Poison("kernel_shap", "background", lambda bg: _shap(bg=bg), (BG,), 0, (3, 3), _every_row, inf_spreads=False),
    Poison("cem_loss", "x", lambda x, d: cem_loss("PN", _model, x)(d), (X[0], X[1]), 0, (2,), _every_row, inf_spreads=False),
    Poison("contrastive_explanation", "x0", lambda x0: _ce(x0=x0), (X[0],), 0, (1,), _somewhere, inf_spreads=False),
    Poison("LimeBase", "X", lambda x: LimeBase(_model_x).attribute(x, num_samples=32), (X,), 0, (1, 0), _rows(1)),
    Poison("IntegratedGradients", "X", lambda x: IntegratedGradients(_model, n_steps=4).explain(x, target=T).attributions, (X,), 0, (2, 3), _rows(2)),
    Poison("ExplanationGenerator", "image", _gen_run, (X[0] ** 2 / 10,), 0, (0,), _somewhere, jit=False),
]  # fmt: skip


def _poisoned(case: Poison, value: float) -> tuple:
    arrays = [np.array(a, copy=True) for a in case.arrays]
    arrays[case.arg][case.at] = value
    return tuple(arrays)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("case", POISON, ids=str)
def test_non_finite_concrete_data_raises_naming_the_argument(case, value):
    with pytest.raises(ValueError, match=rf"^{re.escape(case.name)} contains NaN or inf \(1 entry"):
        case.call(*_poisoned(case, value))
    _assert_model_did_not_run()


def test_the_error_counts_entries_and_points_at_the_first():
    x = np.array(X, copy=True)
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    with pytest.raises(
        ValueError, match=r"x contains NaN or inf \(2 entries, the first at index \(1, 2\)\)"
    ):
        _ig_x(x)


@pytest.mark.parametrize("case", [c for c in POISON if c.jit], ids=str)
def test_traced_non_finite_data_reaches_the_affected_outputs(case):
    """Under jit nothing can raise: NaN and inf must come out in the rows they touch."""
    fn = jax.jit(case.call)
    clean = fn(*case.arrays)
    assert all(np.isfinite(leaf).all() for leaf in _floating(clean))
    for value in (np.nan, np.inf) if case.inf_spreads else (np.nan,):  # one compilation
        arrays = _poisoned(case, value)
        case.spreads(fn(*arrays), arrays)


def test_host_data_is_checked_as_converted():
    """NumPy data is checked on the host, in the dtype it gets: a float64 or Python float past
    float32's range is inf once converted (x64 off) and raises; finite data passes unchanged."""
    from xai_jax._checks import as_float_array

    for value in (np.array([1.0, 1e39]), 1e39, np.float64(-1e39)):
        with pytest.raises(ValueError, match=r"^v contains NaN or inf \(1 entry"):
            as_float_array("v", value)
    out = as_float_array("v", np.array([1.0, 3e38]))
    assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()
    assert as_float_array("v", np.array([np.inf]), finite=False).dtype == jnp.float32


def test_bounds_may_be_infinite():
    res = _ce(lower=-np.inf, upper=np.full(4, np.inf, np.float32))
    assert np.isfinite(np.asarray(res.explanation)).all()
    opt = aoexpgrad(lower=-np.inf, upper=np.inf)
    assert opt.init(jnp.zeros(3)).count == 0


def test_infinite_distances_have_zero_weight_under_jit():
    out = jax.jit(exponential_kernel, static_argnums=1)(jnp.array([0.0, jnp.inf]), 1.0)
    np.testing.assert_array_equal(np.asarray(out), [1.0, 0.0])


def test_constants_met_while_tracing_are_checked_and_tracers_are_not():
    from xai_jax._checks import check_finite

    bad = jnp.array([0.0, jnp.nan])
    with pytest.raises(
        ValueError, match=r"c contains NaN or inf \(1 entry, the first at index \(1,\)"
    ):
        jax.jit(lambda v: (check_finite("c", bad), v)[1])(1.0)
    out = jax.jit(lambda v: (check_finite("v", v), v)[1])(bad)
    assert np.isnan(np.asarray(out)[1])
    check_finite("i", np.array([1, 2]))  # integers cannot hold NaN
    check_finite("e", np.ones((0, 3), np.float32))


# --------------------------------------------------------------------------------------------
# Empty batches: a correctly shaped empty result where that is natural (errors are in BAD).

_E = np.ones((0, 4), np.float32)

EMPTY = [
    ("pairwise_distances[x]", lambda e: pairwise_distances(e, BG), (_E,), [(0, 5)]),
    ("pairwise_distances[y]", lambda e: pairwise_distances(X, e, metric="cosine"), (_E,), [(3, 0)]),
    ("pairwise_distances[y=None]", lambda e: pairwise_distances(e, metric="manhattan"), (_E,), [(0, 0)]),
    ("gaussian_perturbation", lambda e: gaussian_perturbation(K, e[0], 5), (_E.T,), [(5, 0)]),
    ("bernoulli_perturbation", lambda e: bernoulli_perturbation(K, e[0], 5), (_E.T,), [(5, 0), (5, 0)]),
    ("exponential_kernel", lambda e: exponential_kernel(e, 1.0), (_E,), [(0, 4)]),
    ("shapley_kernel", lambda e: shapley_kernel(4, e.astype(np.int32)), (_E,), [(0, 4)]),
    ("numerical_gradient", lambda e: numerical_gradient(_model, e), (_E,), [(0, 3, 4)]),
    ("urv_gradient", lambda e: urv_gradient(K, _point_loss, e[0]), (_E.T,), [(0,)]),
    ("lime", lambda e: lime(K, _model, e, num_samples=16, target=1), (_E,), [(0, 4), (0,), (0,), (0,)]),
    ("kernel_shap", lambda e: kernel_shap(K, _model, e, BG, num_samples=8, target=1), (_E,), [(0, 4)]),
    ("LimeBase", lambda e: LimeBase(_model_x).attribute(e, num_samples=16), (_E,), [(0, 3, 4), (0, 3)]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "call", "arrays", "shapes"), EMPTY, ids=[e[0] for e in EMPTY])
def test_empty_batch_gives_an_empty_result(name, call, arrays, shapes):
    for out in (call(*arrays), jax.jit(call)(*arrays)):
        leaves = jax.tree.leaves(out)
        assert [leaf.shape for leaf in leaves] == shapes
        assert all(leaf.dtype in (jnp.float32, jnp.bool_) for leaf in leaves)
    _assert_model_did_not_run()


def test_empty_batch_with_a_scikit_learn_regressor():
    from sklearn.linear_model import Ridge

    res = lime(K, _model, _E, num_samples=16, target=1, regressor=Ridge())
    assert res.coef.shape == (0, 4) and res.coef.dtype == jnp.float32


# --------------------------------------------------------------------------------------------
# Dtypes: integers are promoted to the default float; float64 without x64 is float32 (the same
# numbers as float32 input); with x64, float64 in gives float64 out.

_XI = np.array([[1, -2, 0, 3], [2, 1, -1, 0], [0, 0, 2, -3]], np.float32)  # integer-valued
_BI = np.array([[0, 1, 1, 0]], np.float32)
_BGI = np.array([[1, 0, 0, 1], [0, -1, 2, 0]], np.float32)

DTYPE = [
    ("pairwise_distances", lambda x, y: pairwise_distances(x, y), (_XI, _BGI)),
    ("gaussian_perturbation", lambda x, s, m: gaussian_perturbation(K, x, 6, scale=s, mean=m), (_XI[0], _XI[1] ** 2, _XI[2])),
    ("bernoulli_perturbation", lambda x, b: bernoulli_perturbation(K, x, 6, baseline=b), (_XI[0], _XI[1])),
    ("exponential_kernel", lambda d: exponential_kernel(d, 2.0), (np.abs(_XI),)),
    ("weighted_ridge", lambda A, y, w: weighted_ridge(A, y, w), (_XI.T, _XI[0], np.abs(_XI[1]) + 1)),
    ("integrated_gradients", lambda x, b: integrated_gradients(_model, x, b, target=T, n_steps=4), (_XI, _BI)),
    ("expected_gradients", lambda x, bg: _eg(x, bg, num_samples=3), (_XI, _BGI)),
    ("saliency", lambda x: _sal(x, abs=False), (_XI,)),
    ("deeplift", lambda x, b: xai_jax.deeplift(_model, x, b, target=T), (_XI, _BI)),
    ("deeplift_shap", lambda x, bg: xai_jax.deeplift_shap(_model, x, bg, target=T), (_XI, _BGI)),
    ("guided_backprop", lambda x: xai_jax.guided_backprop(_model, x, target=T), (_XI,)),
    ("lrp", lambda x: xai_jax.lrp(_model, x, target=T), (_XI,)),
    ("gradient_shap", lambda x, bg: _gs(x, bg, n_samples=3), (_XI, _BGI)),
    ("lime", lambda x: _lime(x, num_samples=32), (_XI,)),
    ("kernel_shap", lambda x, bg: _shap(x, bg), (_XI, _BGI)),
    ("cem_loss", lambda x: cem_loss("PN", _model, x)(jnp.zeros(4, jnp.result_type(float))), (_XI[0],)),
    ("contrastive_explanation", lambda x0: _ce(x0=x0).explanation, (_XI[0],)),
    ("LimeBase", lambda x: LimeBase(_model_x).attribute(x, num_samples=32), (_XI,)),
    ("IntegratedGradients", lambda x: IntegratedGradients(_model, n_steps=4).explain(x, target=T).attributions, (_XI,)),
]  # fmt: skip


def _outputs(call, arrays):
    return [np.asarray(leaf) for leaf in _floating(call(*arrays))]


@pytest.mark.parametrize(("name", "call", "arrays"), DTYPE, ids=[d[0] for d in DTYPE])
def test_integers_and_float64_are_promoted_to_float32(name, call, arrays):
    reference = _outputs(call, arrays)
    assert reference and all(leaf.dtype == np.float32 for leaf in reference)
    for dtype in (np.int32, np.float64):  # float64 without x64: float32 results
        converted = tuple(a.astype(dtype) for a in arrays)
        for got, want in zip(_outputs(call, converted), reference, strict=True):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)


# float64 in, float64 out for every public function is the last test; here the wrappers and
# integers under x64
_X64 = ("pairwise_distances", "integrated_gradients", "LimeBase", "IntegratedGradients")


@pytest.mark.x64
@pytest.mark.parametrize(
    ("name", "call", "arrays"), [d for d in DTYPE if d[0] in _X64], ids=_X64
)  # fmt: skip
def test_float64_and_integers_give_float64_with_x64(name, call, arrays):
    float64 = _outputs(call, tuple(a.astype(np.float64) for a in arrays))
    assert all(leaf.dtype == np.float64 for leaf in float64)
    integers = _outputs(call, tuple(a.astype(np.int64) for a in arrays))
    for got, want in zip(integers, float64, strict=True):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------------------------
# float64 mode for every public function: the conformance cases, fed float64 under x64.

# jax.random.normal and .uniform draw other numbers in float64 (64 random bits per value), so
# these agree with float32 only in distribution; our own samplers draw 32-bit words and agree.
_OTHER_DRAWS = {"smoothgrad", "expected_gradients", "gradient_shap"}


def _as_float64(tree):
    return jax.tree.map(
        lambda a: (
            jnp.asarray(np.asarray(a), np.float64)
            if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
            else a
        ),
        tree,
    )


# one conformance case per public function (the first), each compiled once per dtype: the
# float32 program is the one `test_conformance.py` compiled already
_FIRST_CASES = list({case.function: case for case in reversed(conformance.CASES)}.values())[::-1]


@pytest.mark.x64
@pytest.mark.parametrize("case", _FIRST_CASES, ids=str)
def test_every_public_function_runs_in_float64(case, monkeypatch):
    with jax.enable_x64(False):
        reference = conformance._leaves(jax.jit(case.call)(conformance.KEY, *case.arrays))
    for name in ("_W", "_W1", "_W2", "_CENTRE"):  # the cases' models and loss, in float64
        monkeypatch.setattr(conformance, name, _as_float64(getattr(conformance, name)))
    out = conformance._leaves(jax.jit(case.call)(conformance.KEY, *_as_float64(case.arrays)))
    assert len(out) == len(reference)
    for got, want in zip(out, reference, strict=True):
        assert got.shape == want.shape
        if not np.issubdtype(want.dtype, np.floating):
            assert got.dtype == want.dtype
            continue
        assert got.dtype == np.float64
        assert np.isfinite(got).all()
        if case.name not in _OTHER_DRAWS:
            scale = np.abs(want).max() + 1e-6
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * scale)
