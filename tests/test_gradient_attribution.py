"""Gradient maps: Captum parity (fixtures, and live where torch is installed), GradientSHAP's
draws and delta, Grad-CAM layouts, torch's nearest upsampling, the noise tunnel around every
map, and gradients of the maps with respect to the model's parameters."""

import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import (
    expected_gradients,
    gradient_shap,
    guided_gradcam,
    input_x_gradient,
    layer_activation,
    layer_gradcam,
    layer_gradient_x_activation,
    saliency,
    smoothgrad,
)
from xai_jax._upsample import nearest

FIXTURES = Path(__file__).parent / "fixtures"
D = dict(np.load(FIXTURES / "captum_gradient.npz"))
GS_SEED, GS_SAMPLES, GS_STDEVS = 7, 4, 0.1  # make_gradient_fixtures' GradientShap run


# ---------------------------------------------------------------------------------------------
# The fixture's PyTorch models rebuilt in JAX from its weights.


def _linear(d, name, h):
    return h @ jnp.asarray(d[f"{name}_weight"]).T + jnp.asarray(d[f"{name}_bias"])[None]


def _conv(d, name, h):
    out = jax.lax.conv_general_dilated(
        h, jnp.asarray(d[f"{name}_weight"]), (1, 1), "VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )  # fmt: skip
    return out + jnp.asarray(d[f"{name}_bias"])[None, :, None, None]


def _pool(h, op):
    init = -jnp.inf if op is jax.lax.max else 0.0
    out = jax.lax.reduce_window(h, init, op, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    return out if op is jax.lax.max else out / 4


def _models(d):
    """`{name: (layer_fn, head_fn)}`: the mlp at its Tanh, the cnn at its conv and first ReLU."""

    def mlp_layer(x):
        return jnp.tanh(_linear(d, "mlp_w_2", jax.nn.relu(_linear(d, "mlp_w_0", x))))

    def mlp_head(h):
        return _linear(d, "mlp_w_6", jax.nn.sigmoid(_linear(d, "mlp_w_4", h)))

    conv = lambda x: _conv(d, "cnn_w_0", x)

    def cnn_head(h):  # from the first ReLU's output
        h = _pool(jax.nn.relu(_conv(d, "cnn_w_3", _pool(h, jax.lax.max))), jax.lax.add)
        return _linear(d, "cnn_w_7", h.reshape(h.shape[0], -1))

    relu = lambda x: jax.nn.relu(conv(x))
    return {
        "mlp": (mlp_layer, mlp_head),
        "cnn": (relu, cnn_head),
        "cnn_conv": (conv, lambda h: cnn_head(jax.nn.relu(h))),
    }


def _ours(d) -> dict:
    """Our maps for every Captum result of the fixture."""
    models = _models(d)
    out = {}
    for name in ("mlp", "cnn"):
        layer_fn, head_fn = models[name]
        fn = lambda v, lf=layer_fn, hf=head_fn: hf(lf(v))
        x, t, bg = d[f"{name}_x"], d[f"{name}_target"], d[f"{name}_baselines"]
        out[f"{name}_sal"] = saliency(fn, x, target=t)
        out[f"{name}_sal_signed"] = saliency(fn, x, target=t, abs=False)
        out[f"{name}_ixg"] = input_x_gradient(fn, x, target=t)
        attr, delta = gradient_shap(
            jax.random.key(GS_SEED), fn, x, bg, n_samples=GS_SAMPLES, stdevs=GS_STDEVS,
            target=t, return_convergence_delta=True,
        )  # fmt: skip
        out[f"{name}_gs"], out[f"{name}_gs_delta"] = attr, delta.reshape(-1)  # Captum's order
        out[f"{name}_lact"] = layer_activation(layer_fn, head_fn, x)
        out[f"{name}_lgxa"] = layer_gradient_x_activation(layer_fn, head_fn, x, target=t)
        out[f"{name}_lgrad"] = layer_gradient_x_activation(
            layer_fn, head_fn, x, target=t, multiply_by_inputs=False
        )
    x, t = d["cnn_x"], d["cnn_target"]
    out["cnn_gradcam_conv"] = layer_gradcam(*models["cnn_conv"], x, target=t, channel_axis=1)
    out["cnn_gradcam_relu"] = layer_gradcam(*models["cnn"], x, target=t, channel_axis=1)
    out["cnn_gradcam_relu_pos"] = layer_gradcam(
        *models["cnn"], x, target=t, channel_axis=1, relu_attributions=True
    )
    out["cnn_gradcam_up"] = nearest(out["cnn_gradcam_relu"], (12, 12), (2, 3))
    out["cnn_ggc_conv"] = guided_gradcam(*models["cnn_conv"], x, target=t, channel_axis=1)
    out["cnn_ggc_relu"] = guided_gradcam(*models["cnn"], x, target=t, channel_axis=1)
    for key in [k for k in d if k.startswith("up_") and not k.endswith("_x")]:
        out[key] = nearest(jnp.asarray(d[f"{key}_x"]), d[key].shape[2:], (2, 3))
    return out


RESULT_KEYS = [k for k in D if not k.endswith(("_x", "_target", "_baselines")) and "_w_" not in k]


def _close(ours, theirs, rtol=1e-5):
    """Agreement to float32 round-off, relative to the attribution scale."""
    theirs = np.asarray(theirs)
    assert np.shape(ours) == theirs.shape
    scale = max(np.abs(theirs).max(), 1e-12)
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=rtol * scale)


@pytest.fixture(scope="module")
def ours():
    return _ours(D)


@pytest.mark.parametrize("key", RESULT_KEYS)
def test_matches_captum_fixture(ours, key):
    _close(ours[key], D[key])


def test_matches_captum_live():
    """Captum run now (GradientShap on our key's draws, see the fixture script) against ours."""
    pytest.importorskip("torch")
    pytest.importorskip("captum")
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_gradient_fixtures
    finally:
        sys.path.pop(0)
    with warnings.catch_warnings():  # GuidedGradCam announces its ReLU hooks
        warnings.filterwarnings("ignore", "Setting backward hooks on ReLU", UserWarning)
        live = make_gradient_fixtures.build()
    assert (make_gradient_fixtures.GS_SEED, make_gradient_fixtures.GS_SAMPLES) == (
        GS_SEED,
        GS_SAMPLES,
    )
    mine = _ours(live)
    for key in RESULT_KEYS:
        _close(mine[key], live[key])


# ---------------------------------------------------------------------------------------------
# Properties.

_rng = np.random.default_rng(5)
_W1 = jnp.asarray(_rng.normal(size=(4, 5)), jnp.float32)
_W2 = jnp.asarray(_rng.normal(size=(5, 3)), jnp.float32)
_X = jnp.asarray(_rng.normal(size=(3, 4)), jnp.float32)
_T = jnp.array([0, 2, 1])
_layer = lambda x: jnp.tanh(x @ _W1)
_head = lambda h: jnp.tanh(h) @ _W2
_mlp = lambda x: _head(_layer(x))


def test_gradient_shap_uses_expected_gradients_draws_and_its_delta_is_completeness():
    key, bg = jax.random.key(3), jnp.asarray(_rng.normal(size=(6, 4)), jnp.float32)
    kw = dict(target=_T)
    attr, delta = gradient_shap(key, _mlp, _X, bg, n_samples=7, stdevs=0.2,
                                return_convergence_delta=True, **kw)  # fmt: skip
    same = expected_gradients(key, _mlp, _X, bg, num_samples=7, stdev=0.2, **kw)
    np.testing.assert_allclose(attr, same, rtol=1e-6, atol=1e-7)
    assert delta.shape == (3, 7)
    # on a linear model every sample's term sums exactly to F(x_s) - F(b_s): delta ~ 0
    linear = lambda v: v @ _W2[:4]
    _, delta = gradient_shap(key, linear, _X, bg, n_samples=7, stdevs=0.2,
                             return_convergence_delta=True, **kw)  # fmt: skip
    np.testing.assert_allclose(delta, 0.0, atol=1e-5)


def test_input_x_gradient_sums_to_the_output_of_a_linear_model():
    attr = input_x_gradient(lambda v: v @ _W2[:4], _X, target=_T)
    np.testing.assert_allclose(attr.sum(1), (_X @ _W2[:4])[np.arange(3), _T], rtol=1e-5)


def test_pytree_inputs_and_forward_kwargs():
    def fn(t, scale):
        return jnp.tanh(t["a"] @ _W1[:2] + t["b"] @ _W1[2:]) @ _W2 * scale

    x = {"a": _X[:, :2], "b": _X[:, 2:]}
    scale = jnp.asarray(_rng.normal(size=(3, 1)), jnp.float32)
    got = saliency(fn, x, target=_T, abs=False, forward_kwargs={"scale": scale})
    want = jax.grad(lambda t: fn(t, scale)[np.arange(3), _T].sum())(x)
    for k in x:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6)
    ixg = input_x_gradient(fn, x, target=_T, forward_kwargs={"scale": scale})
    np.testing.assert_allclose(ixg["b"], want["b"] * x["b"], rtol=1e-6)


def test_traced_out_of_range_target_gives_nan_rows():
    out = np.asarray(jax.jit(lambda t: saliency(_mlp, _X, target=t))(jnp.array([0, 3, 1])))
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()
    cam = jax.jit(
        lambda t: layer_gradcam(lambda v: jnp.tanh(v[:, None, :, None]), lambda h: h[:, 0, :, 0] @ _W2[:4], _X, target=t)
    )(jnp.array([5, 0, 1]))  # fmt: skip
    cam = np.asarray(cam)
    assert np.isnan(cam[0]).all() and np.isfinite(cam[1:]).all()


def test_gradcam_layouts_agree():
    """NHWC (the default channel_axis=-1) gives the NCHW map with the channel axis moved."""
    layer_fn, head_fn = _models(D)["cnn"]
    x, t = D["cnn_x"], D["cnn_target"]
    nhwc = layer_gradcam(
        lambda v: jnp.moveaxis(layer_fn(v), 1, -1),
        lambda h: head_fn(jnp.moveaxis(h, -1, 1)),
        x,
        target=t,
    )
    assert nhwc.shape == (3, 10, 10, 1)
    _close(jnp.moveaxis(nhwc, -1, 1), D["cnn_gradcam_relu"])
    negative = layer_gradcam(layer_fn, head_fn, x, target=t, channel_axis=-3)
    _close(negative, D["cnn_gradcam_relu"])


# ---------------------------------------------------------------------------------------------
# The noise tunnel around every map: its mean equals a loop over the same noisy inputs.

_BG = jnp.asarray(_rng.normal(size=(5, 4)), jnp.float32)
_SPATIAL = lambda x: jnp.tanh(x[:, None, :, None] * _W1[None, :2, :4, None])  # [n, 2, 4, 1]
_SPATIAL_HEAD = lambda h: h.sum(axis=(1, 3)) @ _W2[:4]

MAPS = {
    "saliency": lambda v: saliency(_mlp, v, target=_T),
    "input_x_gradient": lambda v: input_x_gradient(_mlp, v, target=_T),
    "gradient_shap": lambda v: gradient_shap(
        jax.random.key(1), _mlp, v, _BG, n_samples=3, target=_T
    ),
    "layer_activation": lambda v: layer_activation(_layer, _head, v),
    "layer_gradient_x_activation": lambda v: layer_gradient_x_activation(
        _layer, _head, v, target=_T
    ),
    "layer_gradcam": lambda v: layer_gradcam(_SPATIAL, _SPATIAL_HEAD, v, target=_T, channel_axis=1),
}


@pytest.mark.parametrize("name", list(MAPS))
def test_smoothgrad_around_every_map(name):
    attribution_fn = MAPS[name]
    key, n, stdev = jax.random.key(4), 3, 0.3
    got = smoothgrad(key, attribution_fn, _X, num_samples=n, stdev=stdev)
    noisy = [
        _X + stdev * jax.random.normal(jax.random.split(k, 1)[0], _X.shape)
        for k in jax.random.split(key, n)
    ]
    want = sum(attribution_fn(v) for v in noisy) / n
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Differentiable: jit(grad) of a loss of each map w.r.t. parameters matches finite differences.


def _param_map(name, p, x):
    layer = lambda v: jnp.tanh(v @ p["w1"])
    head = lambda h: jnp.tanh(h) @ p["w2"]
    fn = lambda v: head(layer(v))
    t = jnp.array([0, 2, 1])
    if name == "saliency":
        return saliency(fn, x, target=t, abs=False)
    if name == "input_x_gradient":
        return input_x_gradient(fn, x, target=t)
    if name == "gradient_shap":
        return gradient_shap(jax.random.key(0), fn, x, x[::-1] * 0.5, n_samples=3, stdevs=0.1,
                             target=t)  # fmt: skip
    if name == "layer_activation":
        return layer_activation(layer, head, x)
    if name == "layer_gradient_x_activation":
        return layer_gradient_x_activation(layer, head, x, target=t)
    spatial = lambda v: jnp.tanh(v[:, None, :, None] * p["w1"][None, :2, :4, None])
    return layer_gradcam(spatial, lambda h: h.sum(axis=(1, 3)) @ p["w2"][:4], x, target=t,
                         channel_axis=1)  # fmt: skip


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", list(MAPS))
def test_gradient_of_a_map_loss_matches_finite_differences(name):
    rng = np.random.default_rng(11)
    params = {
        "w1": jnp.asarray(rng.normal(size=(4, 5))),
        "w2": jnp.asarray(rng.normal(size=(5, 3))),
    }
    x = jnp.asarray(rng.normal(size=(3, 4)))
    loss = lambda p: jnp.sum(_param_map(name, p, x) ** 2)
    grads = jax.jit(jax.grad(loss))(params)
    direction = jax.tree.map(lambda v: jnp.asarray(rng.normal(size=v.shape)), params)
    h = 1e-6
    shifted = lambda s: loss(jax.tree.map(lambda v, dv: v + s * h * dv, params, direction))
    fd = (shifted(1.0) - shifted(-1.0)) / (2 * h)
    analytic = sum(
        jnp.sum(g * dv)
        for g, dv in zip(jax.tree.leaves(grads), jax.tree.leaves(direction), strict=True)
    )
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The nearest-upsampling helper (for guided Grad-CAM): torch's index rule.


def test_nearest_keeps_equal_sizes_and_doubles_by_halving():
    x = jnp.arange(12.0).reshape(1, 3, 4)
    np.testing.assert_array_equal(nearest(x, (3, 4), (1, 2)), x)
    twice = nearest(x, (6,), (1,))
    np.testing.assert_array_equal(twice, jnp.repeat(x, 2, axis=1))
    with pytest.raises(ValueError, match="one entry per axis"):
        nearest(x, (6, 8), (1,))
