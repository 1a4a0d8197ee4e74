"""`IntegratedGradients` (alibi's explainer) and `Explanation`; haiku splits with Captum's numbers."""

import json

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_integrated_gradients import FIXTURES, _close
from xai_jax import (
    Explanation,
    IntegratedGradients,
    LimeBase,
    bernoulli_perturbation,
    integrated_gradients,
    layer_conductance,
    layer_integrated_gradients,
    neuron_conductance,
)
from xai_jax.haiku import split


class _Tanh(hk.Module):
    def __call__(self, x):
        return jnp.tanh(x)


def _captum_mlp_in_haiku():
    """The Captum fixture MLP as a haiku model with a named module at PyTorch's `model[1]`."""
    d = dict(np.load(FIXTURES / "captum_mlp.npz"))

    def forward(x, scale=None):
        h = hk.Linear(16, name="linear_0")(x)
        h = _Tanh(name="tanh_1")(h)
        h = jnp.tanh(hk.Linear(16, name="linear_2")(h))
        out = hk.Linear(3, name="linear_4")(h)
        return out if scale is None else out * scale

    params = {
        f"linear_{i}": {"w": jnp.asarray(d[f"w_{i}_weight"]).T, "b": jnp.asarray(d[f"w_{i}_bias"])}
        for i in (0, 2, 4)
    }
    return d, hk.transform(forward), params


def test_haiku_split_reproduces_captums_layer_numbers():
    d, model, params = _captum_mlp_in_haiku()
    layer_fn, head_fn = split(model, params, "tanh_1")
    kw = dict(target=d["target"], n_steps=int(d["n_steps"]))
    _close(layer_integrated_gradients(layer_fn, head_fn, d["x"], d["baselines"], **kw),
           d["lig_gausslegendre"])  # fmt: skip
    _close(layer_conductance(layer_fn, head_fn, d["x"], d["baselines"], **kw),
           d["lc_gausslegendre"])  # fmt: skip
    _close(neuron_conductance(layer_fn, head_fn, d["x"], 5, d["baselines"], **kw),
           d["nc_riemann_trapezoid"])  # fmt: skip


def test_explainer_matches_the_pure_function_and_fills_alibis_fields():
    d, model, params = _captum_mlp_in_haiku()
    explainer = IntegratedGradients(
        (model, params), target_fn=lambda p: jnp.argmax(p, axis=1), n_steps=20,
        internal_batch_size=8,
    )  # fmt: skip
    explanation = explainer.explain(d["x"], baselines=d["baselines"], target=d["target"])
    _close(explanation.attributions[0], d["ig_gausslegendre"])
    _close(explanation.deltas, d["ig_gausslegendre_delta"], 1.0)
    np.testing.assert_allclose(explanation.predictions, d["logits"], rtol=1e-5, atol=1e-6)
    assert set(explanation.data) == {
        "attributions", "X", "forward_kwargs", "baselines", "predictions", "deltas", "target"
    }  # fmt: skip
    assert explanation.meta["name"] == "IntegratedGradients"
    assert explanation.meta["params"]["n_steps"] == 20
    decoded = json.loads(explanation.to_json())
    assert np.allclose(decoded["data"]["attributions"][0], explanation.attributions[0])
    # target_fn when no target is given
    chosen = explainer.explain(d["x"])
    np.testing.assert_array_equal(chosen.target, np.argmax(d["logits"], axis=1))
    assert isinstance(chosen, Explanation)


def test_layers_by_name_by_pair_and_to_inputs():
    d, model, params = _captum_mlp_in_haiku()
    x, target = d["x"], d["target"]
    by_name = IntegratedGradients((model, params), layer="tanh_1", n_steps=20)
    _close(by_name.explain(x, baselines=d["baselines"], target=target).attributions[0],
           d["lig_gausslegendre"])  # fmt: skip
    pair = split(model, params, "tanh_1")
    by_pair = IntegratedGradients(model=lambda v: model.apply(params, None, v), layer=pair,
                                  n_steps=20)  # fmt: skip
    _close(by_pair.explain(x, baselines=d["baselines"], target=target).attributions[0],
           d["lig_gausslegendre"])  # fmt: skip
    inputs = by_name.explain(x, target=target, attribute_to_layer_inputs=True)
    layer_fn, head_fn = split(model, params, "tanh_1", attribute_to_inputs=True)
    expected = layer_integrated_gradients(layer_fn, head_fn, x, target=target, n_steps=20)
    np.testing.assert_allclose(inputs.attributions[0], expected, rtol=1e-6)
    assert inputs.attributions[0].shape == (4, 16)


def test_forward_kwargs_multi_input_and_reset_predictor():
    d, model, params = _captum_mlp_in_haiku()
    scale = np.linspace(0.5, 2.0, 4, dtype=np.float32)[:, None]
    explainer = IntegratedGradients((model, params), n_steps=10)
    got = explainer.explain(d["x"], forward_kwargs={"scale": scale}, target=1).attributions[0]
    plain = explainer.explain(d["x"], target=1).attributions[0]
    np.testing.assert_allclose(got, plain * scale, rtol=1e-5, atol=1e-7)

    two = lambda xs: jnp.tanh(xs[0] @ jnp.ones((6, 2)) + xs[1] @ jnp.ones((3, 2)))
    xs = [d["x"], d["x"][:, :3]]
    explanation = IntegratedGradients(two, n_steps=10).explain(xs, target=0)
    assert [a.shape for a in explanation.attributions] == [(4, 6), (4, 3)]
    expected = integrated_gradients(two, xs, target=0, n_steps=10)
    np.testing.assert_allclose(explanation.attributions[1], expected[1], rtol=1e-6)

    explainer.reset_predictor(lambda v: 2.0 * model.apply(params, None, v))
    np.testing.assert_allclose(explainer.explain(d["x"], target=1).attributions[0], 2 * plain,
                               rtol=1e-5, atol=1e-7)  # fmt: skip


def test_repeated_explains_reuse_the_compiled_model():
    traces = []
    w = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)

    def model(v):
        traces.append(v.shape)
        return jnp.tanh(v @ w)

    explainer = IntegratedGradients(model, n_steps=12, internal_batch_size=8)
    explainer.explain(np.ones((2, 5), np.float32), target=1)
    explainer.explain(np.ones((2, 5), np.float32), target=1)
    first = len(traces)
    for seed in range(3):
        x = np.random.default_rng(seed).normal(size=(2, 5)).astype(np.float32)
        explainer.explain(x, target=np.array([0, 2]))
    assert len(traces) == first


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda m, p: IntegratedGradients((m, p), method="simpson"), ValueError,
         r"method='simpson' is not one of"),
        (lambda m, p: IntegratedGradients((m, p), n_steps=0), ValueError, "n_steps must be >= 1"),
        (lambda m, p: IntegratedGradients((m, p), internal_batch_size=0), ValueError,
         "internal_batch_size must be >= 1"),
        (lambda m, p: IntegratedGradients("model"), TypeError, "model must be a JAX callable"),
        (lambda m, p: IntegratedGradients(lambda v: v, layer="tanh_1"), TypeError,
         r"\(hk.Transformed, params\) pair"),
        (lambda m, p: IntegratedGradients((m, p), layer=3), TypeError, "layer must be None"),
        (lambda m, p: IntegratedGradients((m, p), target_fn=3), TypeError, "target_fn"),
        (lambda m, p: IntegratedGradients(
            lambda v: v, layer=(lambda v: v, lambda h: h)).explain(
            np.ones((2, 3)), target=0, attribute_to_layer_inputs=True),
         ValueError, "attribute_to_layer_inputs=True needs"),
        (lambda m, p: IntegratedGradients((m, p), layer="tanh_9").explain(np.ones((2, 6)),
                                                                          target=0),
         ValueError, "tanh_1"),
    ],
)  # fmt: skip
def test_bad_arguments(make, error, match):
    _, model, params = _captum_mlp_in_haiku()
    with pytest.raises(error, match=match):
        make(model, params)


# --------------------------------------------------------------------------------------------
# LimeBase with a custom perturb_func: sample 0 is the instance, num_samples rows exactly

_W_LIN = jnp.array([1.0, -2.0, 0.5])


def _linear(x):
    return x @ _W_LIN + 3.0


def _noise(key, x, n):  # x + N(0, 1) on every row: no instance among the samples
    return x[None] + jax.random.normal(key, (n, x.shape[0]), x.dtype)


def test_limebase_refuses_a_perturb_func_without_the_instance_as_sample_0():
    X = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    explainer = LimeBase(_linear, perturb_func=_noise)
    with pytest.raises(ValueError, match=r"perturb_func must return the instance itself as "
                                         r"sample 0 .* samples\.at\[0\]\.set\(x_row\)"):  # fmt: skip
        explainer.attribute(X, num_samples=64)
    # with the instance as sample 0 the local prediction is the model's at the instance
    fixed = LimeBase(_linear, perturb_func=lambda k, x, n: _noise(k, x, n).at[0].set(x))
    coefs, preds = fixed.attribute(X, num_samples=256)
    # (lime's Ridge(alpha=1) shrinks the fit a little)
    np.testing.assert_allclose(preds[:, 0], _linear(X), rtol=0, atol=1e-2)
    np.testing.assert_allclose(coefs, jnp.broadcast_to(_W_LIN, X.shape), rtol=0.05)


def test_limebase_under_jit_gives_nan_rows_for_a_perturb_func_without_the_instance():
    explainer = LimeBase(_linear, perturb_func=_noise)
    coefs, preds = jax.jit(lambda x: explainer.attribute(x, num_samples=32))(jnp.ones((2, 3)))
    assert np.isnan(np.asarray(preds)).all() and np.isnan(np.asarray(coefs)).all()


@pytest.mark.parametrize("rows", [63, 65, 128])
@pytest.mark.parametrize("jit", [False, True])
def test_limebase_refuses_a_perturb_func_with_another_number_of_rows(rows, jit):
    def perturb(key, x, n):
        return _noise(key, x, rows).at[0].set(x)

    explainer = LimeBase(_linear, perturb_func=perturb)
    call = jax.jit(lambda x: explainer.attribute(x, num_samples=64)) if jit else (
        lambda x: explainer.attribute(x, num_samples=64))  # fmt: skip
    with pytest.raises(ValueError, match=rf"perturb_func returned samples of shape \({rows}, 3\), "
                                         r"expected \(num_samples, features\) = \(64, 3\)"):  # fmt: skip
        call(jnp.ones((2, 3)))


def test_limebase_refuses_a_representation_with_another_number_of_rows():
    def perturb(key, x, n):
        masks, samples = bernoulli_perturbation(key, x, n)
        return masks[:-1], samples

    with pytest.raises(ValueError, match=r"representation Z of shape \(63, 3\), expected "
                                         r"\(num_samples, features\) = \(64, features\)"):  # fmt: skip
        LimeBase(_linear, perturb_func=perturb).attribute(jnp.ones((2, 3)), num_samples=64)
