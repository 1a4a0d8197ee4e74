"""`split` of dm-haiku models: `head_fn(layer_fn(x)) == apply(x)`, under jit/vmap/grad."""

import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax.haiku import split

ATOL = 1e-6
_rng = np.random.default_rng(0)


def _normal(*shape):
    return jnp.asarray(_rng.standard_normal(shape), jnp.float32)


class ConvNet(hk.Module):
    """Sequential conv model on NHWC input; `flatten` has no parameters."""

    def __call__(self, x):
        h = jax.nn.relu(hk.Conv2D(4, kernel_shape=3)(x))
        h = hk.Flatten()(h)
        return hk.Linear(3)(h)


def _mlp(x):
    return hk.nets.MLP([8, 6, 3])(x)


def _conv(x):
    return ConvNet()(x)


MLP = hk.transform(_mlp)
CONV = hk.transform(_conv)
X_MLP = _normal(5, 4)
X_CONV = _normal(2, 6, 6, 2)


def _init(model, x):
    """Random parameters from the shapes alone: compilations (of `init`) dominate test time."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return jax.tree.map(lambda a: _normal(*a.shape) / np.sqrt(max(a.shape[0], 1)), shapes)


P_MLP = _init(MLP, X_MLP)
P_CONV = _init(CONV, X_CONV)

SPLITS = [
    (MLP, P_MLP, X_MLP, name)
    for name in ("mlp/~/linear_0", "mlp/~/linear_1", "mlp/~/linear_2", "mlp")
] + [
    (CONV, P_CONV, X_CONV, name)
    for name in ("conv_net/conv2_d", "conv_net/flatten", "conv_net/linear")
]
SPLIT_IDS = [case[3] for case in SPLITS]


def _apply(model, params, x, rng=None):
    return jax.jit(model.apply)(params, rng, x)


def _close(a, b, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol)


@pytest.mark.parametrize("inputs", [False, True], ids=["outputs", "inputs"])
@pytest.mark.parametrize(("model", "params", "x", "name"), SPLITS, ids=SPLIT_IDS)
def test_head_of_layer_is_apply(model, params, x, name, inputs):
    layer_fn, head_fn = split(model, params, name, attribute_to_inputs=inputs)

    @jax.jit  # one compilation per case: they dominate the test time
    def run(v):
        h = layer_fn(v)
        # head_fn on a bigger batch than layer_fn saw, as the attribution methods call it
        return head_fn(h), head_fn(jnp.concatenate([h, 2 * h, h])), model.apply(params, None, v)

    out, out3, ref = run(x)
    _close(out, ref)
    assert out3.shape == (3 * x.shape[0], 3)
    _close(out3[: x.shape[0]], ref)
    _close(out3[2 * x.shape[0] :], ref)


def test_eager_matches_jit():
    layer_fn, head_fn = split(MLP, P_MLP, "mlp/~/linear_1")
    h = layer_fn(X_MLP)
    _close(h, jax.jit(layer_fn)(X_MLP))
    _close(head_fn(h), _apply(MLP, P_MLP, X_MLP))


def test_layer_fn_matches_hand_computation():
    (w0, b0), (w1, b1) = [
        (P_MLP[f"mlp/~/linear_{i}"]["w"], P_MLP[f"mlp/~/linear_{i}"]["b"]) for i in (0, 1)
    ]
    z0 = X_MLP @ w0 + b0.reshape(1, -1)
    _close(split(MLP, P_MLP, "mlp/~/linear_0")[0](X_MLP), z0)
    _close(split(MLP, P_MLP, "mlp/~/linear_0", attribute_to_inputs=True)[0](X_MLP), X_MLP)
    _close(split(MLP, P_MLP, "mlp/~/linear_1", attribute_to_inputs=True)[0](X_MLP), jax.nn.relu(z0))
    _close(
        split(MLP, P_MLP, "mlp/~/linear_1")[0](X_MLP),
        jax.nn.relu(z0) @ w1 + b1.reshape(1, -1),
        atol=1e-5,
    )

    conv = P_CONV["conv_net/conv2_d"]
    z = jax.lax.conv_general_dilated(
        X_CONV, conv["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    z = z + conv["b"].reshape(1, 1, 1, -1)
    _close(split(CONV, P_CONV, "conv_net/conv2_d")[0](X_CONV), z, atol=1e-5)
    _close(
        jax.jit(split(CONV, P_CONV, "conv_net/flatten", attribute_to_inputs=True)[0])(X_CONV),
        jax.nn.relu(z),
        atol=1e-5,
    )
    _close(
        split(CONV, P_CONV, "conv_net/flatten")[0](X_CONV),
        jax.nn.relu(z).reshape(2, -1),
        atol=1e-5,
    )


@pytest.mark.parametrize("inputs", [False, True], ids=["outputs", "inputs"])
@pytest.mark.parametrize(
    ("model", "params", "x", "name"), [SPLITS[1], SPLITS[4]], ids=[SPLIT_IDS[1], SPLIT_IDS[4]]
)
def test_vmap(model, params, x, name, inputs):
    xs = jnp.stack([x, -x])
    layer_fn, head_fn = split(model, params, name, attribute_to_inputs=inputs)
    out = jax.jit(jax.vmap(head_fn))(jax.vmap(layer_fn)(xs))
    _close(out, jax.jit(jax.vmap(lambda v: model.apply(params, None, v)))(xs))


@pytest.mark.parametrize("inputs", [False, True], ids=["outputs", "inputs"])
@pytest.mark.parametrize(
    ("model", "params", "x", "name"), [SPLITS[1], SPLITS[4]], ids=[SPLIT_IDS[1], SPLIT_IDS[4]]
)
def test_grad_wrt_params(model, params, x, name, inputs):
    def split_loss(p):
        layer_fn, head_fn = split(model, p, name, attribute_to_inputs=inputs)
        return jnp.sum(jnp.sin(head_fn(layer_fn(x))))

    want = jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(model.apply(p, None, x)))))(params)
    got = jax.jit(jax.grad(split_loss))(params)
    jax.tree.map(lambda a, b: _close(a, b, atol=1e-5), got, want)


def test_grad_wrt_layer_with_closed_over_params():
    layer_fn, head_fn = split(MLP, P_MLP, "mlp/~/linear_1")
    h = layer_fn(X_MLP)
    w2 = P_MLP["mlp/~/linear_2"]["w"]
    # head(h) = relu(h) @ w2 + b2, so d sum(head) / dh = 1[h > 0] * sum_k w2[:, k]
    got = jax.jit(jax.grad(lambda v: jnp.sum(head_fn(v))))(h)
    _close(got, jnp.where(h > 0, 1.0, 0.0) * jnp.sum(w2, axis=1).reshape(1, -1), atol=1e-5)


def test_pytree_input_and_without_apply_rng():
    def f(x):
        return hk.nets.MLP([5, 2])(jnp.concatenate([x["a"], 2 * x["b"]], axis=1))

    model = hk.without_apply_rng(hk.transform(f))
    x = {"a": _normal(3, 3), "b": _normal(3, 2)}
    params = _init(model, x)
    layer_fn, head_fn = split(model, params, "mlp/~/linear_0", attribute_to_inputs=True)
    h = jax.jit(layer_fn)(x)
    assert h.shape == (3, 5)
    _close(jax.jit(head_fn)(h), jax.jit(model.apply)(params, x))
    assert jax.jit(head_fn)(np.concatenate([h, h])).shape == (6, 2)
    with pytest.raises(ValueError, match="rng must be None"):
        split(model, params, "mlp/~/linear_0", rng=jax.random.key(0))


def _dropout(x):  # hk.dropout multiplies a bool mask, which strict dtype promotion rejects
    return jnp.where(jax.random.bernoulli(hk.next_rng_key(), 0.5, x.shape), 2 * x, 0.0)


def test_rng_sequence_matches_apply():
    # The module draws a key too: head_fn must still run it so later keys line up with apply's.
    class Block(hk.Module):
        def __call__(self, x):
            return _dropout(hk.Linear(6)(x))

    def f(x):
        return hk.Linear(2)(_dropout(Block()(_dropout(x))))

    model = hk.transform(f)
    key = jax.random.key(3)
    params = _init(model, X_MLP)
    pairs = [split(model, params, "block", attribute_to_inputs=a, rng=key) for a in (False, True)]
    run = jax.jit(
        lambda v: [model.apply(params, key, v)] + [head(layer(v)) for layer, head in pairs]
    )
    ref, *outs = run(X_MLP)
    for out in outs:
        _close(out, ref)


def test_shared_module_splits_at_first_call():
    def f(x):
        shared = hk.Linear(4)
        return hk.Linear(2)(jax.nn.relu(shared(jnp.tanh(shared(x)))))

    model = hk.transform(f)
    params = _init(model, X_MLP)
    w, b = params["linear"]["w"], params["linear"]["b"]
    ref = _apply(model, params, X_MLP)
    for inputs, want in ((False, X_MLP @ w + b.reshape(1, -1)), (True, X_MLP)):
        layer_fn, head_fn = split(model, params, "linear", attribute_to_inputs=inputs)
        h = jax.jit(layer_fn)(X_MLP)
        _close(h, want)
        _close(jax.jit(head_fn)(h), ref)


def test_module_with_two_positional_inputs():
    class Gate(hk.Module):
        def __call__(self, a, b):
            return hk.Linear(3)(a * jnp.tanh(b))

    def f(x):
        return jax.nn.relu(Gate()(hk.Linear(4)(x), hk.Linear(4)(x)))

    model = hk.transform(f)
    params = _init(model, X_MLP)
    layer_fn, head_fn = split(model, params, "gate", attribute_to_inputs=True)
    lin, lin1 = params["linear"], params["linear_1"]

    @jax.jit
    def run(v):
        a, b = layer_fn(v)
        return a, b, head_fn((a, b)), head_fn((jnp.concatenate([a, a]), jnp.concatenate([b, b])))

    a, b, out, out2 = run(X_MLP)
    _close(a, X_MLP @ lin["w"] + lin["b"].reshape(1, -1), atol=1e-5)
    _close(b, X_MLP @ lin1["w"] + lin1["b"].reshape(1, -1), atol=1e-5)
    ref = _apply(model, params, X_MLP)
    _close(out, ref)
    _close(out2, np.concatenate([ref, ref]))
    with pytest.raises(ValueError, match="tuple of the module's 2 positional inputs"):
        head_fn(a)


def _residual(x):
    return hk.Linear(4)(jax.nn.relu(hk.Linear(4)(x))) + jnp.tanh(x)


@pytest.mark.parametrize("inputs", [False, True], ids=["outputs", "inputs"])
@pytest.mark.parametrize("name", ["linear", "linear_1"])
def test_residual_model_is_rejected(name, inputs):
    model = hk.transform(_residual)
    params = _init(model, X_MLP)
    layer_fn, head_fn = split(model, params, name, attribute_to_inputs=inputs)
    h = jnp.zeros(jax.eval_shape(layer_fn, X_MLP).shape)  # records the input, compiles nothing
    with pytest.raises(ValueError, match=f"module '{name}': the module is bypassed"):
        head_fn(h)
    with pytest.raises(ValueError, match="bypassed"):
        jax.jit(head_fn)(h)


def test_bypass_check_runs_once_per_structure():
    calls = []

    def counting_apply(*args, **kwargs):
        calls.append(1)
        return MLP.apply(*args, **kwargs)

    model = hk.Transformed(MLP.init, counting_apply)
    layer_fn, head_fn = split(model, P_MLP, "mlp/~/linear_1")
    h = jax.jit(layer_fn)(X_MLP)
    assert len(calls) == 1
    head_jit = jax.jit(head_fn)
    head_jit(h)
    assert len(calls) == 3  # the check's trace, then the run
    head_jit(np.concatenate([h, h]))
    assert len(calls) == 4  # another batch size: traced again, but not checked again


def test_unknown_module_lists_called_modules():
    layer_fn, _ = split(MLP, P_MLP, "mlp/~/linear_9")
    names = "('mlp', 'mlp/~/linear_0', 'mlp/~/linear_1', 'mlp/~/linear_2')"
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"module_name='mlp/~/linear_9' was not called during the forward pass; modules called: {names}"
        ),
    ):
        layer_fn(X_MLP)
    with pytest.raises(ValueError, match="not called"):
        jax.jit(layer_fn)(X_MLP)


def test_head_fn_before_layer_fn_raises():
    _, head_fn = split(MLP, P_MLP, "mlp/~/linear_0")
    with pytest.raises(ValueError, match=r"call .*layer_fn .*before head_fn"):
        head_fn(jnp.zeros((2, 8)))


def test_head_fn_checks_h():
    layer_fn, head_fn = split(MLP, P_MLP, "mlp/~/linear_0")
    jax.jit(layer_fn)(X_MLP)
    with pytest.raises(ValueError, match="h must match the module's output"):
        head_fn(jnp.zeros((2, 7)))
    with pytest.raises(ValueError, match="leading batch axis"):
        head_fn(jnp.zeros(()))
    with pytest.raises(ValueError, match="leading batch axis"):
        layer_fn(jnp.float32(1.0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"transformed": hk.transform_with_state(_mlp)}, "transformed must be an hk.Transformed"),
        ({"transformed": _mlp}, "transformed must be an hk.Transformed"),
        ({"module_name": 0}, "module_name must be a str"),
        ({"attribute_to_inputs": 1}, "attribute_to_inputs must be a bool"),
    ],
    ids=["with_state", "function", "module_name", "attribute_to_inputs"],
)
def test_wrong_types(kwargs, match):
    with pytest.raises(TypeError, match=match):
        split(**({"transformed": MLP, "params": P_MLP, "module_name": "mlp"} | kwargs))
