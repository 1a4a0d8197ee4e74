"""Every dm-haiku model form through every wrapper and `haiku.split`: `hk.transform` with and
without apply rng, with an explicit rng where the model draws one, and `hk.transform_with_state`
with its state (inference mode: the state is read, never updated)."""

import types

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import (
    Explanation,
    ExplanationGenerator,
    IntegratedGradients,
    LimeBase,
    integrated_gradients,
    layer_integrated_gradients,
)
from xai_jax.haiku import split

_rng = np.random.default_rng(0)
X = jnp.asarray(_rng.standard_normal((3, 4)), jnp.float32)
KEY = jax.random.key(7)
STATE_SCALE = 3.0  # the state given to the explainers; the model's init would give 2


class _Tanh(hk.Module):
    def __call__(self, x):
        return jnp.tanh(x)


def _body(x, *, stateful, draws):
    out = hk.Linear(3, name="lin1")(_Tanh(name="tanh")(hk.Linear(6, name="lin0")(x)))
    if draws:  # an rng-dependent output scale: the attributions see the key
        out = out * (1.0 + 0.5 * jax.random.uniform(hk.next_rng_key(), (1, 3), jnp.float32))
    if stateful:
        scale = hk.get_state("scale", (), jnp.float32, init=lambda *_: jnp.full((), 2.0))
        hk.set_state("scale", scale + 1.0)  # an update that inference must not keep
        out = out * scale
    return out


def _make(name):
    """`(form, reference model, (layer_fn, head_fn) by hand)` of the form called `name`."""
    stateful, draws = "state" in name, "rng" in name and "without" not in name
    f = lambda x: _body(x, stateful=stateful, draws=draws)
    transformed = hk.transform_with_state(f) if stateful else hk.transform(f)
    if "without_apply_rng" in name:
        transformed = hk.without_apply_rng(transformed)
    shapes = jax.eval_shape(hk.transform_with_state(f).init, KEY, X)[0]
    params = jax.tree.map(lambda a: jnp.asarray(_rng.standard_normal(a.shape), a.dtype), shapes)
    state = {"~": {"scale": jnp.float32(STATE_SCALE)}}
    rng = KEY if draws else None
    form = (transformed, params) + ((state,) if stateful else ()) + ((rng,) if draws else ())
    factor = jnp.ones((3,), jnp.float32)
    if draws:
        # apply's first hk.next_rng_key() is the first key of hk.PRNGSequence(rng)
        factor = 1.0 + 0.5 * jax.random.uniform(next(hk.PRNGSequence(KEY)), (3,), jnp.float32)
    if stateful:
        factor = factor * STATE_SCALE

    def ref(x):
        if stateful:
            args = (params, state) if "without_apply_rng" in name else (params, state, rng)
            return transformed.apply(*args, x)[0]
        args = (params,) if "without_apply_rng" in name else (params, rng)
        return transformed.apply(*args, x)

    lin0, lin1 = params["lin0"], params["lin1"]
    layer_fn = lambda x: jnp.tanh(x @ lin0["w"] + lin0["b"][None])
    head_fn = lambda h: (h @ lin1["w"] + lin1["b"][None]) * factor[None]
    return form, ref, (layer_fn, head_fn)


NEW_FORMS = [
    "transform_rng",
    "without_apply_rng",
    "with_state",
    "with_state_rng",
    "with_state_without_apply_rng",
]
ALL_FORMS = ["transform", *NEW_FORMS]  # plain hk.transform: only wrappers that refused it


def _close(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=atol)


@pytest.mark.parametrize("name", ALL_FORMS)
def test_hand_pair_is_the_reference_model(name):
    """The test's own references agree: the hand-made pair computes the form's model."""
    _, ref, (layer_fn, head_fn) = _make(name)
    _close(head_fn(layer_fn(X)), ref(X))


@pytest.mark.parametrize("name", NEW_FORMS)
def test_integrated_gradients_without_layer(name):
    form, ref, _ = _make(name)
    explanation = IntegratedGradients(form, n_steps=8).explain(X, target=1)
    _close(explanation.attributions[0], integrated_gradients(ref, X, target=1, n_steps=8))
    _close(explanation.predictions, ref(X))  # the given state (3), not the update (4)


@pytest.mark.parametrize("name", NEW_FORMS)
def test_integrated_gradients_layer_by_name(name):
    form, _, (layer_fn, head_fn) = _make(name)
    explainer = IntegratedGradients(form, layer="tanh", n_steps=8)
    got = explainer.explain(X, target=2).attributions[0]
    _close(got, layer_integrated_gradients(layer_fn, head_fn, X, target=2, n_steps=8))
    inputs = explainer.explain(X, target=2, attribute_to_layer_inputs=True).attributions[0]
    assert inputs.shape == (3, 6)


@pytest.mark.parametrize("name", NEW_FORMS)
def test_integrated_gradients_layer_pair(name):
    form, _, pair = _make(name)
    got = IntegratedGradients(form, layer=pair, n_steps=8).explain(X, target=0).attributions[0]
    _close(got, layer_integrated_gradients(*pair, X, target=0, n_steps=8))


@pytest.mark.parametrize("name", ALL_FORMS)
def test_layer_pair_is_checked_once_against_the_model(name):
    form, ref, (layer_fn, head_fn) = _make(name)
    wrong = (layer_fn, lambda h: 1.01 * head_fn(h))
    with pytest.raises(ValueError, match=r"does not split this model: head_fn\(layer_fn\(X\)\)"):
        IntegratedGradients(form, layer=wrong, n_steps=4).explain(X, target=0)
    with pytest.raises(ValueError, match="has shape"):
        IntegratedGradients(ref, layer=(layer_fn, lambda h: h), n_steps=4).explain(X, target=0)
    calls = []

    def counted(v):
        calls.append(1)
        return head_fn(v)

    explainer = IntegratedGradients(form, layer=(layer_fn, counted), n_steps=4)
    explainer.explain(X, target=0)
    traced = len(calls)
    explainer.explain(X, target=0)  # checked already: no further trace of the pair
    assert len(calls) == traced


@pytest.mark.parametrize("name", ALL_FORMS)
def test_lime_base(name):
    form, ref, _ = _make(name)
    got = LimeBase(form).attribute(X, num_samples=64)
    want = LimeBase(ref).attribute(X, num_samples=64)
    for a, b in zip(got, want, strict=True):
        _close(a, b)


@pytest.mark.parametrize("name", ALL_FORMS)
def test_explanation_generator(name):
    form, ref, _ = _make(name)
    options = dict(loss_kwargs={"mode": "PN", "c": 1.0, "K": 0.1}, num_iter=20, save_freq=10)
    x = jnp.abs(X[0]) / 4.0
    _, want = ExplanationGenerator(**options).run(x, inference_call=ref)
    _, got = ExplanationGenerator(**options).run(x, inference_call=form)
    _close(got["explanation"], want["explanation"])
    in_kwargs = dict(options, loss_kwargs=dict(options["loss_kwargs"], inference=form))
    _, got = ExplanationGenerator(**in_kwargs).run(x)
    _close(got["explanation"], want["explanation"])


@pytest.mark.parametrize("inputs", [False, True], ids=["outputs", "inputs"])
@pytest.mark.parametrize("name", NEW_FORMS)
def test_split(name, inputs):
    form, ref, (layer_fn_by_hand, _) = _make(name)
    transformed, params, *rest = form
    stateful = isinstance(transformed, hk.TransformedWithState)
    state = rest[0] if stateful else None
    rng = rest[-1] if len(rest) > int(stateful) else None
    layer_fn, head_fn = split(
        transformed, params, "tanh", attribute_to_inputs=inputs, rng=rng, state=state
    )
    h = jax.jit(layer_fn)(X)
    if not inputs:
        _close(h, layer_fn_by_hand(X))
    _close(jax.jit(head_fn)(h), ref(X))
    _close(head_fn(jnp.concatenate([h, h])), jnp.concatenate([ref(X), ref(X)]))


def test_split_state_errors():
    with_state, params, state = _make("with_state")[0]
    plain, plain_params = _make("transform")[0]
    with pytest.raises(TypeError, match=r"hk\.TransformedWithState without state"):
        split(with_state, params, "tanh")
    with pytest.raises(ValueError, match=r"state must be None for an hk\.Transformed"):
        split(plain, plain_params, "tanh", state=state)
    without, params2, state2 = _make("with_state_without_apply_rng")[0]
    with pytest.raises(ValueError, match="rng must be None"):
        split(without, params2, "tanh", state=state2, rng=KEY)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: _make("with_state")[0][:2], TypeError, "its state is required"),
        (lambda: _make("transform")[0][0], TypeError, "bare Transformed"),
        (lambda: (*_make("transform")[0], {"~": {}}), TypeError, "rng must be None or a PRNG"),
        (lambda: (*_make("without_apply_rng")[0], KEY), ValueError, "rng must be None"),
        (lambda: (*_make("with_state_rng")[0], KEY), TypeError, "of 5 items"),
    ],
    ids=["state_missing", "bare", "state_as_rng", "rng_without_apply_rng", "too_long"],
)
@pytest.mark.parametrize("wrapper", ["IntegratedGradients", "LimeBase", "ExplanationGenerator"])
def test_malformed_forms_are_refused_by_every_wrapper(make, error, match, wrapper):
    form = make()
    build = {
        "IntegratedGradients": lambda: IntegratedGradients(form),
        "LimeBase": lambda: LimeBase(form),
        "ExplanationGenerator": lambda: ExplanationGenerator(loss_kwargs={"inference": form}),
    }[wrapper]
    with pytest.raises(error, match=match):
        build()


def test_internal_batch_size_none_is_accepted():
    form, ref, _ = _make("without_apply_rng")
    explainer = IntegratedGradients(form, n_steps=8, internal_batch_size=None)
    assert explainer.internal_batch_size is None
    want = integrated_gradients(ref, X, target=1, n_steps=8, internal_batch_size=None)
    _close(explainer.explain(X, target=1).attributions[0], want)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda f: LimeBase(f, kernel_func=3), TypeError, "kernel_func must be callable"),
        (lambda f: LimeBase(f, perturb_func="gauss"), TypeError, "perturb_func must be callable"),
        (lambda f: LimeBase(f, additional_func_args=[1]), TypeError, "additional_func_args"),
        (lambda f: LimeBase(f, input_parameter_name="inputs"), ValueError, "positionally"),
        (lambda f: ExplanationGenerator(loss_kwargs={"mode": "NP"}), ValueError, "mode='NP'"),
        (lambda f: ExplanationGenerator(loss_kwargs={"AE": 3}), TypeError, "autoencoder"),
        (lambda f: IntegratedGradients(f, layer=""), ValueError, "layer must name"),
        (lambda f: IntegratedGradients(f).explain(X, target=0, attribute_to_layer_inputs="False"),
         TypeError, "attribute_to_layer_inputs must be a bool"),
    ],
    ids=["kernel_func", "perturb_func", "func_args", "input_name", "mode", "autoencoder",
         "empty_layer", "truthy_string"],
)  # fmt: skip
def test_constructors_check_their_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make(_make("without_apply_rng")[0])


def test_valid_calls_satisfy_the_annotations():
    """Valid arguments the annotations used to refuse (checked: the suite runs the annotation checker)."""
    form, ref, _ = _make("without_apply_rng")
    explanation = Explanation(types.MappingProxyType({"name": "x"}), types.MappingProxyType({}))
    assert explanation.name == "x" and explanation.to_json()
    explainer = IntegratedGradients(form, n_steps=np.int64(4), internal_batch_size=np.int32(8))
    explainer.explain(X, target=0, attribute_to_layer_inputs=np.bool_(False))
    LimeBase(ref, kernel_width=jnp.float32(1.5))
    ExplanationGenerator(num_iter=np.int64(20), save_freq=np.int64(10))
    transformed, params = form
    split(transformed, types.MappingProxyType(params), "tanh")


def test_valid_lime_base_calls_satisfy_the_annotations():
    lime = LimeBase(_make("transform")[1], kernel_width=np.float32(1.5))
    lime.attribute(X, num_samples=np.int64(16))
