"""`IntegratedGradients` (alibi's explainer) and `Explanation`; haiku splits with Captum's numbers."""

import json

import haiku as hk
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_integrated_gradients import FIXTURES, _close
from xai_jax import (
    Explanation,
    IntegratedGradients,
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
