"""Repeated eager calls (`_eager`): after the first call's checks, a call with the same function,
options and argument shapes re-checks the values and runs one compiled program, with the
numbers and the errors of the op-by-op path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import (
    _eager,
    _incremental,
    deconvolution,
    deeplift,
    deeplift_shap,
    feature_ablation,
    feature_permutation,
    gradient_shap,
    guided_backprop,
    infidelity,
    input_x_gradient,
    layer_activation,
    layer_deeplift,
    layer_gradcam,
    layer_gradient_x_activation,
    lrp,
    occlusion,
    saliency,
    sensitivity_max,
    shapley_value_sampling,
    shapley_values,
)
from xai_jax._checks import check_finite_input, check_scale
from xai_jax._inputs import as_target

W = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32))


def _model(z):  # nonlinear, 3 outputs
    return jnp.tanh(z @ W) + z[:, :3] * z[:, 3:]


def _x(seed=1, n=4):
    return np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32)


def _relu_model(z):  # for the propagation rules: ReLU and tanh units
    return jax.nn.relu(z @ W) + jnp.tanh(z[:, :3])


def _layer(z):  # [batch, 3, 2]: a spatial axis of 3, 2 channels (Grad-CAM's layout)
    return jnp.tanh(1.5 * z.reshape(len(z), 3, 2))


def _head(h):
    return h.reshape(len(h), -1) @ W


def _explain(v):  # sensitivity_max's attribution function
    return saliency(_model, v, target=0)


MASK = np.array([0, 0, 1, 1, 2, 2])
KEY = jax.random.key(3)
BACKGROUND = np.random.default_rng(5).normal(size=(3, 6)).astype(np.float32)
ATTR = _x(7)
CALLS = {
    "occlusion": lambda x, **kw: occlusion(_model, x, sliding_window_shapes=(2,), **kw),
    "feature_ablation": lambda x, **kw: feature_ablation(_model, x, feature_mask=MASK, **kw),
    "shapley_values": lambda x, **kw: shapley_values(_model, x, feature_mask=MASK, **kw),
    "shapley_value_sampling": lambda x, **kw: shapley_value_sampling(
        KEY, _model, x, feature_mask=MASK, n_samples=4, **kw
    ),
    "feature_permutation": lambda x, **kw: feature_permutation(KEY, _model, x, **kw),
    "saliency": lambda x, **kw: saliency(_model, x, **kw),
    "input_x_gradient": lambda x, **kw: input_x_gradient(_model, x, **kw),
    "gradient_shap": lambda x, baselines=BACKGROUND, **kw: gradient_shap(
        KEY, _model, x, baselines, n_samples=3, stdevs=0.1, **kw
    ),
    "layer_activation": lambda x, target=None: layer_activation(_layer, _head, x),
    "layer_gradient_x_activation": lambda x, **kw: layer_gradient_x_activation(
        _layer, _head, x, **kw
    ),
    "layer_gradcam": lambda x, **kw: layer_gradcam(_layer, _head, x, **kw),
    "guided_backprop": lambda x, **kw: guided_backprop(_relu_model, x, **kw),
    "deconvolution": lambda x, **kw: deconvolution(_relu_model, x, **kw),
    "deeplift": lambda x, **kw: deeplift(_relu_model, x, **kw),
    "deeplift_shap": lambda x, baselines=BACKGROUND, **kw: deeplift_shap(
        _relu_model, x, baselines, **kw
    ),
    "layer_deeplift": lambda x, **kw: layer_deeplift(_layer, _head, x, **kw),
    "lrp": lambda x, **kw: lrp(_relu_model, x, **kw),
    "infidelity": lambda x, **kw: infidelity(KEY, _model, x, ATTR, **kw),
    "sensitivity_max": lambda x, target=None: sensitivity_max(KEY, _explain, x),
}
NO_BASELINES = {
    "feature_permutation", "saliency", "input_x_gradient", "layer_activation",
    "layer_gradient_x_activation", "layer_gradcam", "guided_backprop", "deconvolution", "lrp",
    "infidelity", "sensitivity_max",
}  # fmt: skip
NO_TARGET = {"layer_activation", "sensitivity_max"}
# A value-checked option of each method that has one: a bad value raises on a planned call too.
SCALAR_OPTIONS = {
    "gradient_shap": lambda x, v: gradient_shap(KEY, _model, x, BACKGROUND, stdevs=v, target=0),
    "deeplift": lambda x, v: deeplift(_relu_model, x, eps=v, target=0),
    "deeplift_shap": lambda x, v: deeplift_shap(_relu_model, x, BACKGROUND, eps=v, target=0),
    "lrp": lambda x, v: lrp(_relu_model, x, epsilon=v, target=0),
    "infidelity": lambda x, v: infidelity(KEY, _model, x, ATTR, stdev=v, target=0),
    "sensitivity_max": lambda x, v: sensitivity_max(KEY, _explain, x, perturb_radius=v),
}


def _op_by_op(monkeypatch, call, x, **kw):
    """The method with the compiled path off (every call prepares and runs op by op)."""
    with monkeypatch.context() as m:
        m.setattr(_eager, "call", lambda prepare, fn, arrays, statics: prepare(
            fn, **arrays, **statics).run())  # fmt: skip
        return call(x, **kw)


@pytest.mark.parametrize("name", CALLS)
def test_repeated_calls_equal_the_op_by_op_path(monkeypatch, name):
    call = CALLS[name]
    target = np.array([0, 2, 1, 0])
    monkeypatch.setattr(_eager, "_PLANS", {})
    first, second = call(_x(), target=target), call(_x(), target=target)
    assert len(_eager._PLANS) == 1  # the method is planned: the second call is compiled
    third = call(_x(2), target=target)  # new values, same signature: the compiled program
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    for ours, x in ((first, _x()), (third, _x(2))):
        ref = _op_by_op(monkeypatch, call, x, target=target)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", CALLS)
def test_a_planned_call_still_rejects_bad_values(name):
    call = CALLS[name]
    target = np.array([0, 2, 1, 0])
    call(_x(), target=target)  # the plan for this signature
    bad = _x()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or inf .* at index \(1, 2\)"):
        call(bad, target=target)
    if name not in NO_TARGET:
        with pytest.raises(ValueError, match=r"target out of range .* rows \[3\]"):
            call(_x(), target=np.array([0, 2, 1, 3]))
    if name not in NO_BASELINES:
        nan = BACKGROUND * np.nan if name in ("gradient_shap", "deeplift_shap") else float("nan")
        with pytest.raises(ValueError, match="baselines contains NaN or inf"):
            call(_x(), target=target, baselines=nan)
    # float64 host data is checked in the dtype it gets: 1e39 is inf in float32
    call(_x().astype(np.float64), target=target)
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        call(_x().astype(np.float64) * 1e39, target=target)


@pytest.mark.parametrize("name", SCALAR_OPTIONS)
def test_a_planned_call_still_rejects_bad_scalar_options(name):
    call = SCALAR_OPTIONS[name]
    first = call(_x(), 0.1)
    np.testing.assert_array_equal(np.asarray(call(_x(), 0.1)), np.asarray(first))
    with pytest.raises(ValueError, match=">= 0"):
        call(_x(), -0.1)  # a traced scalar of the same signature: the plan checks its value
    with pytest.raises(ValueError, match="NaN or inf"):
        call(_x(), float("inf"))  # every scale option: >= 0 and finite (check_scale)


def test_a_metric_rejects_nan_attributions_on_a_planned_call():
    x, t = _x(), np.array([0, 2, 1, 0])
    infidelity(KEY, _model, x, ATTR, target=t)
    bad = ATTR.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="attributions contains NaN or inf"):
        infidelity(KEY, _model, x, bad, target=t)


def test_named_tuple_options_keep_their_type():
    """A NamedTuple option (the propagation methods' spec) is hashed as a whole, not turned
    into a plain tuple on the way to the compiled program."""
    x, t = _x(), np.array([0, 2, 1, 0])
    first = lrp(_relu_model, x, target=t)
    np.testing.assert_array_equal(np.asarray(lrp(_relu_model, x, target=t)), np.asarray(first))
    assert any(key[1] is _relu_model for key in _eager._PLANS)


def test_options_and_the_incremental_switch_are_part_of_the_signature(monkeypatch):
    x, t = _x(), np.array([0, 2, 1, 0])
    a = feature_ablation(_model, x, target=t, feature_mask=MASK)
    b = feature_ablation(_model, x, target=t, feature_mask=np.array([0, 1, 1, 1, 2, 2]))
    assert not np.allclose(np.asarray(a), np.asarray(b))  # a mask is hashed by value
    np.testing.assert_array_equal(
        np.asarray(a), np.asarray(feature_ablation(_model, x, target=t, feature_mask=MASK.copy()))
    )

    def cnn(z):
        w = jnp.ones((2, 1, 3, 3), z.dtype)
        h = jax.lax.conv_general_dilated(z, w, (1, 1), "VALID")
        return jnp.tanh(h).reshape(len(z), -1) @ jnp.ones((2 * 6 * 6, 2), z.dtype)

    xs = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    seen = []
    real = _incremental.occluded_outputs
    monkeypatch.setattr(_incremental, "occluded_outputs", lambda *a: seen.append(1) or real(*a))
    kw = dict(sliding_window_shapes=(1, 2, 2), target=0)
    on = occlusion(cnn, xs, **kw)
    monkeypatch.setattr(_incremental, "ENABLED", False)
    count = len(seen)
    off = occlusion(cnn, xs, **kw)  # a new program: the full rows, not the cached boxes
    assert len(seen) == count
    np.testing.assert_allclose(np.asarray(on), np.asarray(off), rtol=1e-5, atol=1e-6)


def test_numpy_black_boxes_and_several_chunks_run_op_by_op():
    calls = []

    def host(z):
        calls.append(len(z))
        return np.tanh(np.asarray(z) @ np.asarray(W))

    x, t = _x(), np.array([0, 2, 1, 0])
    for _ in range(2):
        feature_ablation(host, x, target=t, feature_mask=MASK)
    chunked = [feature_ablation(_model, x, target=t, batch_size=4) for _ in range(2)]
    np.testing.assert_array_equal(np.asarray(chunked[0]), np.asarray(chunked[1]))
    assert not any(key[1] is host for key in _eager._PLANS)
    assert calls[-4:] == [2, 16, 2, 16]  # each call: the probe, then its 16 rows
    assert not any(
        dict(key[2]).get("batch_size") == 4 and key[1] is _model for key in _eager._PLANS
    )


def test_traced_arguments_and_unhashable_options_bypass_the_plans():
    x, t = _x(n=7), np.arange(7) % 3  # a batch size no other test uses
    before = len(_eager._PLANS)
    jax.jit(lambda z: feature_ablation(_model, z, target=t))(x)
    jax.vmap(lambda z: feature_ablation(_model, z[None], target=t[:1]))(x)
    assert len(_eager._PLANS) == before
    occlusion(_model, x, sliding_window_shapes=[2], target=t)  # a list option: frozen
    occlusion(_model, x, sliding_window_shapes=(2,), target=t)  # the same signature
    assert len(_eager._PLANS) == before + 1
    out = feature_ablation(_model, x, target=t, forward_kwargs={})  # an empty dict: an array arg
    assert out.shape == x.shape


# The plan's quick looks (`_surely_*`) may only pass what the full checks pass: every value
# here goes through both, and a quick pass with a full failure is a bug.
_FINITE_CASES = [
    0.0, -2.5, 3.0e38, 3.5e38, -1e39, float("nan"), float("inf"), 7, True, np.float32(1.0),
    np.ones((2, 3), np.float32), np.array([1.0, np.nan], np.float32),
    np.array([1.0, np.inf], np.float32), np.array([1e39]), np.arange(3),
    jnp.ones((2, 2)), jnp.array([0.0, jnp.nan]), jnp.array([1.0, -jnp.inf]), jnp.arange(3),
]  # fmt: skip
_SCALE_CASES = [
    0.0,
    -0.0,
    0.5,
    3,
    -1,
    -1e-30,
    float("nan"),
    float("inf"),
    1e39,
    True,
    np.float32(2.0),
]
_TARGET_CASES = [
    0, 2, 3, -1, True, 1.0, np.array(1), np.array([0, 1, 2, 0]), np.array([0, 1, 3, 0]),
    np.array([0, -1, 0, 0]), np.array([0, 1, 2], np.int32), np.array([[0], [1], [2], [0]]),
    np.array([0, 1, 2, 1], np.uint8), np.array([0.0, 1.0, 2.0, 1.0]), jnp.array([0, 1, 2, 2]),
    jnp.array([-1, 0, 0, 0]), jnp.array([0, 1, 2, 5]), jnp.array(2),
]  # fmt: skip


def _full_passes(check, *args) -> bool:
    try:
        check(*args)
    except (ValueError, TypeError):
        return False
    return True


@pytest.mark.parametrize("value", _FINITE_CASES, ids=repr)
def test_the_quick_finite_look_passes_only_what_the_full_check_passes(value):
    if _eager._surely_finite(value):
        assert _full_passes(check_finite_input, "x", value)


@pytest.mark.parametrize("value", _SCALE_CASES, ids=repr)
def test_the_quick_scale_look_passes_only_what_the_full_check_passes(value):
    if _eager._surely_scale(value):
        assert _full_passes(check_scale, "eps", value)


@pytest.mark.parametrize("target", _TARGET_CASES, ids=repr)
def test_the_quick_target_look_passes_only_what_the_full_check_passes(target):
    out = jax.ShapeDtypeStruct((4, 3), jnp.float32)
    if _eager._surely_in_range(target, 3, 4):
        assert _full_passes(lambda t: as_target(t, out, 4, device=False), target)


def test_the_quick_looks_pass_the_common_cases():
    """The fast path is taken where it should be (else it saves nothing)."""
    assert _eager._surely_finite(0.0) and _eager._surely_finite(np.ones(3, np.float32))
    assert _eager._surely_finite(jnp.ones(3))
    assert _eager._surely_scale(0.1) and _eager._surely_scale(0)
    assert _eager._surely_in_range(2, 3, 4) and _eager._surely_in_range(
        jnp.array([0, 1, 2, 2]), 3, 4
    )
