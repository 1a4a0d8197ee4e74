"""The flax (linen, nnx) and equinox front ends of the layer split: the same network written in
haiku, linen, nnx and equinox, with identical weights, gives the same layer attributions, and
the torch fixtures' twins give Captum's; grads through them, batch norm in inference mode,
nnx.jit/eqx.filter_jit callers, the wrappers, and the errors."""

import itertools
import re
from pathlib import Path

import equinox as eqx
import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import xai_jax.equinox
import xai_jax.flax
import xai_jax.haiku
from xai_jax import layer_conductance, layer_integrated_gradients, neuron_conductance

# float32 throughout; the four libraries order their dots differently (eqx: W @ x per example)
RTOL, ATOL = 1e-5, 1e-6
_rng = np.random.default_rng(0)


def _normal(*shape, scale=1.0):
    return jnp.asarray(scale * _rng.standard_normal(shape), jnp.float32)


def _close(a, b, rtol=RTOL, atol=ATOL):
    jax.tree.map(
        lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol),
        a,
        b,
    )


# ---- the MLP 4 -> 8 -> 6 -> 3 (relu), four ways ---------------------------------------------

MLP_SIZES = (4, 8, 6, 3)
MLP_W = [
    (_normal(i, o, scale=1 / np.sqrt(i)), _normal(o, scale=0.1))
    for i, o in itertools.pairwise(MLP_SIZES)
]
X_MLP = _normal(5, 4)


def _haiku_mlp():
    model = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP(MLP_SIZES[1:])(x)))
    params = {f"mlp/~/linear_{i}": {"w": w, "b": b} for i, (w, b) in enumerate(MLP_W)}
    return model, params


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        for size in MLP_SIZES[1:-1]:
            x = nn.relu(nn.Dense(size)(x))
        return nn.Dense(MLP_SIZES[-1])(x)


def _linen_params():
    return {"params": {f"Dense_{i}": {"kernel": w, "bias": b} for i, (w, b) in enumerate(MLP_W)}}


class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [nnx.Linear(i, o, rngs=rngs) for i, o in itertools.pairwise(MLP_SIZES)]
        )

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def _nnx_mlp():
    model = NnxMLP(nnx.Rngs(0))
    for layer, (w, b) in zip(model.layers, MLP_W, strict=True):
        layer.kernel[...] = w
        layer.bias[...] = b
    return model


class EqxMLP(eqx.Module):
    layers: list

    def __init__(self, key):
        keys = jax.random.split(key, len(MLP_SIZES) - 1)
        self.layers = [
            eqx.nn.Linear(i, o, key=k)
            for i, o, k in zip(MLP_SIZES[:-1], MLP_SIZES[1:], keys, strict=True)
        ]

    def __call__(self, x):  # one example, as equinox models are written
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def _eqx_mlp():
    model = EqxMLP(jax.random.key(0))
    return eqx.tree_at(
        lambda m: [leaf for layer in m.layers for leaf in (layer.weight, layer.bias)],
        model,
        [leaf for w, b in MLP_W for leaf in (w.T, b)],
    )


# ---- a small CNN: conv 3x3 (2 -> 4 channels, SAME) -> relu -> flatten -> dense 3 --------------

CONV_W, CONV_B = _normal(3, 3, 2, 4, scale=0.3), _normal(4, scale=0.1)  # HWIO
DENSE_W, DENSE_B = _normal(6 * 6 * 4, 3, scale=0.1), _normal(3, scale=0.1)
X_CNN = _normal(2, 6, 6, 2)  # NHWC


class HaikuCNN(hk.Module):
    def __call__(self, x):
        h = jax.nn.relu(hk.Conv2D(4, kernel_shape=3)(x))
        return hk.Linear(3)(hk.Flatten()(h))


def _haiku_cnn():
    model = hk.without_apply_rng(hk.transform(lambda x: HaikuCNN()(x)))
    params = {
        "haiku_cnn/conv2_d": {"w": CONV_W, "b": CONV_B},
        "haiku_cnn/linear": {"w": DENSE_W, "b": DENSE_B},
    }
    return model, params


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), padding="SAME")(x))
        return nn.Dense(3)(h.reshape(h.shape[0], -1))


LINEN_CNN_PARAMS = {
    "params": {
        "Conv_0": {"kernel": CONV_W, "bias": CONV_B},
        "Dense_0": {"kernel": DENSE_W, "bias": DENSE_B},
    }
}


class NnxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(2, 4, (3, 3), padding="SAME", rngs=rngs)
        self.dense = nnx.Linear(6 * 6 * 4, 3, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.conv(x))
        return self.dense(h.reshape(h.shape[0], -1))


def _nnx_cnn():
    model = NnxCNN(nnx.Rngs(0))
    model.conv.kernel[...], model.conv.bias[...] = CONV_W, CONV_B
    model.dense.kernel[...], model.dense.bias[...] = DENSE_W, DENSE_B
    return model


class EqxCNN(eqx.Module):
    conv: eqx.nn.Conv2d
    dense: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(2, 4, 3, padding=1, key=k1)
        self.dense = eqx.nn.Linear(6 * 6 * 4, 3, key=k2)

    def __call__(self, x):  # one HWC example; equinox convolves CHW
        h = jax.nn.relu(self.conv(jnp.transpose(x, (2, 0, 1))))
        return self.dense(jnp.transpose(h, (1, 2, 0)).reshape(-1))


def _eqx_cnn():
    model = EqxCNN(jax.random.key(0))
    return eqx.tree_at(
        lambda m: (m.conv.weight, m.conv.bias, m.dense.weight, m.dense.bias),
        model,
        (
            jnp.transpose(CONV_W, (3, 2, 0, 1)),
            CONV_B.reshape(4, 1, 1),
            DENSE_W.T,
            DENSE_B,
        ),
    )


def _mlp_pairs(inputs: bool = False):
    """The four `(layer_fn, head_fn)` pairs at the MLP's second linear layer."""
    haiku_model, haiku_params = _haiku_mlp()
    return {
        "haiku": xai_jax.haiku.split(
            haiku_model, haiku_params, "mlp/~/linear_1", attribute_to_inputs=inputs
        ),
        "linen": xai_jax.flax.split(
            LinenMLP(), _linen_params(), "Dense_1", attribute_to_inputs=inputs
        ),
        "nnx": xai_jax.flax.split(_nnx_mlp(), "layers.1", attribute_to_inputs=inputs),
        "equinox": xai_jax.equinox.split(
            _eqx_mlp(), lambda m: m.layers[1], attribute_to_inputs=inputs
        ),
    }


def _cnn_pairs():
    """The four pairs at the CNN's dense layer's inputs (the flattened HWC features)."""
    haiku_model, haiku_params = _haiku_cnn()
    return {
        "haiku": xai_jax.haiku.split(
            haiku_model, haiku_params, "haiku_cnn/linear", attribute_to_inputs=True
        ),
        "linen": xai_jax.flax.split(
            LinenCNN(), LINEN_CNN_PARAMS, "Dense_0", attribute_to_inputs=True
        ),
        "nnx": xai_jax.flax.split(_nnx_cnn(), "dense", attribute_to_inputs=True),
        "equinox": xai_jax.equinox.split(_eqx_cnn(), lambda m: m.dense, attribute_to_inputs=True),
    }


METHODS = {
    "layer_ig": lambda pair, x, t: layer_integrated_gradients(
        *pair, x, target=t, n_steps=16, return_convergence_delta=True
    ),
    "layer_conductance": lambda pair, x, t: layer_conductance(
        *pair, x, target=t, n_steps=16, return_convergence_delta=True
    ),
    "neuron_conductance": lambda pair, x, t: neuron_conductance(*pair, x, 2, target=t, n_steps=16),
}


@pytest.mark.parametrize("network", ["mlp", "mlp_inputs", "cnn"])
def test_four_libraries_give_the_same_attributions(network):
    pairs = {"mlp": _mlp_pairs, "mlp_inputs": lambda: _mlp_pairs(True), "cnn": _cnn_pairs}[
        network
    ]()
    x = X_CNN if network == "cnn" else X_MLP
    target = jnp.arange(x.shape[0]) % 3
    results = {lib: {} for lib in pairs}
    for library, pair in pairs.items():
        for name, method in METHODS.items():
            results[library][name] = jax.jit(lambda v, t, m=method, p=pair: m(p, v, t))(x, target)
    reference = results.pop("haiku")
    assert jnp.abs(reference["layer_ig"][0]).max() > 0.05  # not a vacuous comparison
    for library, result in results.items():
        for name in METHODS:
            try:
                _close(result[name], reference[name])
            except AssertionError as error:
                raise AssertionError(f"{library} {name}") from error


def test_pairs_compute_each_model():
    for network, pairs, x in (("mlp", _mlp_pairs(), X_MLP), ("cnn", _cnn_pairs(), X_CNN)):
        haiku_model, haiku_params = _haiku_mlp() if network == "mlp" else _haiku_cnn()
        want = haiku_model.apply(haiku_params, x)
        for library, (layer_fn, head_fn) in pairs.items():
            h = layer_fn(x)
            got = jax.jit(head_fn)(jax.tree.map(lambda a: jnp.concatenate([a, a]), h))
            try:
                _close(got, jnp.concatenate([want, want]), atol=1e-5)
            except AssertionError as error:
                raise AssertionError(f"{network} {library}") from error


# ---- gradients of a loss of layer attributions (attribution priors) -------------------------


def _prior(pair, x):
    attr = layer_integrated_gradients(*pair, x, target=0, n_steps=8)
    return jnp.sum(attr**2)


def test_grad_through_layer_attributions_matches_haiku():
    haiku_model, haiku_params = _haiku_mlp()
    want = jax.jit(
        jax.grad(lambda p: _prior(xai_jax.haiku.split(haiku_model, p, "mlp/~/linear_1"), X_MLP))
    )(haiku_params)
    want = [(want[f"mlp/~/linear_{i}"]["w"], want[f"mlp/~/linear_{i}"]["b"]) for i in range(3)]
    assert all(jnp.abs(w).max() > 0 for w, _ in want)

    # linen: jax.grad with respect to the variables, under jax.jit
    got = jax.jit(jax.grad(lambda v: _prior(xai_jax.flax.split(LinenMLP(), v, "Dense_1"), X_MLP)))(
        _linen_params()
    )["params"]
    _close([(got[f"Dense_{i}"]["kernel"], got[f"Dense_{i}"]["bias"]) for i in range(3)], want)

    # nnx: nnx.grad under an nnx.jit caller
    @nnx.jit
    def nnx_grads(model, x):
        return nnx.grad(lambda m: _prior(xai_jax.flax.split(m, "layers.1"), x))(model)

    got = nnx_grads(_nnx_mlp(), X_MLP)
    _close(
        [(got["layers"][i]["kernel"][...], got["layers"][i]["bias"][...]) for i in range(3)], want
    )

    # equinox: eqx.filter_grad under an eqx.filter_jit caller
    @eqx.filter_jit
    def eqx_grads(model, x):
        return eqx.filter_grad(
            lambda m: _prior(xai_jax.equinox.split(m, lambda n: n.layers[1]), x)
        )(model)

    got = eqx_grads(_eqx_mlp(), X_MLP)
    _close([(layer.weight.T, layer.bias) for layer in got.layers], want)


def test_nnx_jit_and_filter_jit_callers():
    target = jnp.arange(5) % 3

    @nnx.jit
    def nnx_attr(model, x):
        return layer_conductance(*xai_jax.flax.split(model, "layers.1"), x, target=target)

    @eqx.filter_jit
    def eqx_attr(model, x):
        return layer_conductance(
            *xai_jax.equinox.split(model, lambda m: m.layers[1]), x, target=target
        )

    want = layer_conductance(*_mlp_pairs()["haiku"], X_MLP, target=target)
    model = _nnx_mlp()
    _close(nnx_attr(model, X_MLP), want)
    _close(nnx_attr(model, X_MLP), want)  # a second call, and the model is not changed
    _close(eqx_attr(_eqx_mlp(), X_MLP), want)


# ---- batch norm in inference mode ------------------------------------------------------------

BN_MEAN, BN_VAR = _normal(8, scale=0.5), jnp.exp(_normal(8, scale=0.5))
BN_SCALE, BN_BIAS = 1 + _normal(8, scale=0.2), _normal(8, scale=0.2)


class LinenBN(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Dense(8)(x)))
        h = nn.relu(nn.Dense(6)(h))
        return nn.Dense(3)(h)


class NnxBN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense_0 = nnx.Linear(4, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.dense_1 = nnx.Linear(8, 6, rngs=rngs)
        self.dense_2 = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.bn(self.dense_0(x)))
        return self.dense_2(jax.nn.relu(self.dense_1(h)))


class EqxBN(eqx.Module):
    dense_0: eqx.nn.Linear
    bn: eqx.nn.BatchNorm
    dense_1: eqx.nn.Linear
    dense_2: eqx.nn.Linear

    def __init__(self, key):
        keys = jax.random.split(key, 3)
        self.dense_0 = eqx.nn.Linear(4, 8, key=keys[0])
        self.bn = eqx.nn.BatchNorm(8, axis_name="batch", mode="ema", inference=True)
        self.dense_1 = eqx.nn.Linear(8, 6, key=keys[1])
        self.dense_2 = eqx.nn.Linear(6, 3, key=keys[2])

    def __call__(self, x, state):
        h, state = self.bn(self.dense_0(x), state)
        return self.dense_2(jax.nn.relu(self.dense_1(jax.nn.relu(h)))), state


def test_batch_norm_in_inference_mode():
    (w0, b0), (w1, b1), (w2, b2) = MLP_W[0], MLP_W[1], MLP_W[2]

    def bn(z):  # the batch norm of the running statistics; rows broadcast explicitly
        return (z - BN_MEAN[None]) / jnp.sqrt(BN_VAR[None] + 1e-5) * BN_SCALE[None] + BN_BIAS[None]

    def to_layer(x):
        return jax.nn.relu(bn(x @ w0 + b0[None])) @ w1 + b1[None]

    def head(z):
        return jax.nn.relu(z) @ w2 + b2[None]

    linen_vars = {
        "params": {
            "Dense_0": {"kernel": w0, "bias": b0},
            "BatchNorm_0": {"scale": BN_SCALE, "bias": BN_BIAS},
            "Dense_1": {"kernel": w1, "bias": b1},
            "Dense_2": {"kernel": w2, "bias": b2},
        },
        "batch_stats": {"BatchNorm_0": {"mean": BN_MEAN, "var": BN_VAR}},
    }
    nnx_model = NnxBN(nnx.Rngs(0))
    for layer, (w, b) in zip(
        (nnx_model.dense_0, nnx_model.dense_1, nnx_model.dense_2), MLP_W, strict=True
    ):
        layer.kernel[...], layer.bias[...] = w, b
    nnx_model.bn.mean[...], nnx_model.bn.var[...] = BN_MEAN, BN_VAR
    nnx_model.bn.scale[...], nnx_model.bn.bias[...] = BN_SCALE, BN_BIAS
    nnx_model.eval()
    eqx_model, state = eqx.nn.make_with_state(EqxBN)(jax.random.key(0))
    eqx_model = eqx.tree_at(
        lambda m: (
            m.dense_0.weight, m.dense_0.bias, m.bn.weight, m.bn.bias,
            m.dense_1.weight, m.dense_1.bias, m.dense_2.weight, m.dense_2.bias,
        ),
        eqx_model,
        (w0.T, b0, BN_SCALE, BN_BIAS, w1.T, b1, w2.T, b2),
    )  # fmt: skip
    state = state.set(eqx_model.bn.ema_state_index, (BN_MEAN, BN_VAR))

    pairs = {
        "linen": xai_jax.flax.split(LinenBN(), linen_vars, "Dense_1"),
        "nnx": xai_jax.flax.split(nnx_model, "dense_1"),
        "equinox": xai_jax.equinox.split(eqx_model, lambda m: m.dense_1, state=state),
    }
    target = jnp.arange(5) % 3
    want = layer_integrated_gradients(to_layer, head, X_MLP, target=target)
    for library, (layer_fn, head_fn) in pairs.items():
        try:
            _close(
                jax.jit(lambda v, p=(layer_fn, head_fn): p[1](p[0](v)))(X_MLP),
                head(to_layer(X_MLP)),
                atol=1e-5,
            )
            _close(
                layer_integrated_gradients(layer_fn, head_fn, X_MLP, target=target), want, atol=1e-5
            )
        except AssertionError as error:
            raise AssertionError(library) from error
    _close(nnx_model.bn.mean[...], BN_MEAN)  # the model's state is read, never updated


# ---- sharing, dropout keys, and every error ---------------------------------------------------


class NnxShared(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.first = nnx.Linear(4, 4, rngs=rngs)
        self.again = self.first  # the same module, held twice
        self.out = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.again(jnp.tanh(self.first(x)))))


def test_shared_nnx_module_splits_at_its_first_call():
    model = NnxShared(nnx.Rngs(1))
    w, b = model.first.kernel[...], model.first.bias[...]
    for where in ("again", lambda m: m.first):
        for inputs, want in ((False, X_MLP @ w + b[None]), (True, X_MLP)):
            layer_fn, head_fn = xai_jax.flax.split(model, where, attribute_to_inputs=inputs)
            h = jax.jit(layer_fn)(X_MLP)
            _close(h, want, atol=1e-6)
            _close(jax.jit(head_fn)(h), model(X_MLP), atol=1e-6)


class LinenShared(nn.Module):
    def setup(self):
        self.shared = nn.Dense(4)
        self.out = nn.Dense(2)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.shared(jnp.tanh(self.shared(x)))))


def test_shared_linen_module_splits_at_its_first_call():
    model = LinenShared()
    variables = model.init(jax.random.key(0), X_MLP)
    w, b = variables["params"]["shared"]["kernel"], variables["params"]["shared"]["bias"]
    layer_fn, head_fn = xai_jax.flax.split(model, variables, "shared")
    h = jax.jit(layer_fn)(X_MLP)
    _close(h, X_MLP @ w + b[None], atol=1e-6)
    _close(jax.jit(head_fn)(h), model.apply(variables, X_MLP), atol=1e-6)


class LinenDropout(nn.Module):
    @nn.compact
    def __call__(self, x, *, deterministic):
        h = nn.Dropout(0.5, deterministic=deterministic)(nn.Dense(6)(x))
        h = nn.Dense(6)(h)
        return nn.Dense(2)(nn.Dropout(0.5, deterministic=deterministic)(h))


def test_linen_rngs_and_flags_pass_through():
    model = LinenDropout()
    variables = model.init(jax.random.key(0), X_MLP, deterministic=True)
    rngs = {"dropout": jax.random.key(3)}
    layer_fn, head_fn = xai_jax.flax.split(
        model, variables, "Dense_1", rngs=rngs, deterministic=False
    )
    want = model.apply(variables, X_MLP, rngs=rngs, deterministic=False)
    _close(jax.jit(lambda v: head_fn(layer_fn(v)))(X_MLP), want, atol=1e-6)
    eval_pair = xai_jax.flax.split(model, variables, "Dense_1", deterministic=True)
    _close(
        eval_pair[1](eval_pair[0](X_MLP)),
        model.apply(variables, X_MLP, deterministic=True),
        atol=1e-6,
    )


class LinenResidual(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.relu(nn.Dense(4)(x))) + jnp.tanh(x)


class NnxResidual(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(4, 4, rngs=rngs)
        self.b = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
        return self.b(jax.nn.relu(self.a(x))) + jnp.tanh(x)


class EqxResidual(eqx.Module):
    a: eqx.nn.Linear
    b: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.a, self.b = eqx.nn.Linear(4, 4, key=k1), eqx.nn.Linear(4, 4, key=k2)

    def __call__(self, x):
        return self.b(jax.nn.relu(self.a(x))) + jnp.tanh(x)


@pytest.mark.parametrize("inputs", [False, True], ids=["outputs", "inputs"])
def test_skip_connections_are_rejected(inputs):
    linen_vars = LinenResidual().init(jax.random.key(0), X_MLP)
    pairs = {
        "Dense_1": xai_jax.flax.split(
            LinenResidual(), linen_vars, "Dense_1", attribute_to_inputs=inputs
        ),
        "a": xai_jax.flax.split(NnxResidual(nnx.Rngs(0)), "a", attribute_to_inputs=inputs),
        "b": xai_jax.equinox.split(
            EqxResidual(jax.random.key(0)), lambda m: m.b, attribute_to_inputs=inputs
        ),
    }
    for name, (layer_fn, head_fn) in pairs.items():
        h = layer_fn(X_MLP)
        with pytest.raises(ValueError, match=f"module '{name}': the module is bypassed"):
            head_fn(h)
        with pytest.raises(ValueError, match="bypassed"):
            jax.jit(head_fn)(h)


class LinenBranch(nn.Module):
    @nn.compact
    def __call__(self, x, use_extra: bool = False):
        h = nn.Dense(4)(x)
        return nn.Dense(2, name="extra")(h) if use_extra else nn.Dense(2)(h)


def test_linen_errors():
    model = LinenBranch()
    variables = model.init(jax.random.key(0), X_MLP, use_extra=True)
    variables = {"params": {**variables["params"], "Dense_1": variables["params"]["extra"]}}
    layer_fn, _ = xai_jax.flax.split(model, variables, "extra")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "path='extra' was not called during the forward pass; modules called: ('Dense_0', 'Dense_1')"
        ),
    ):
        layer_fn(X_MLP)
    with pytest.raises(ValueError, match="path='Dense_9' was not called"):
        jax.jit(xai_jax.flax.split(model, variables, "Dense_9")[0])(X_MLP)
    _, head_fn = xai_jax.flax.split(model, variables, "Dense_0")
    with pytest.raises(ValueError, match=r"call .*layer_fn .*before head_fn"):
        head_fn(jnp.zeros((2, 4)))
    cases = [
        ((model, variables), "split(module, variables, path)", TypeError),
        ((model, [1], "Dense_0"), "variables must be the mapping", TypeError),
        ((model, variables, 0), "path must be a str", TypeError),
        ((model, variables, ""), "path must name a submodule", ValueError),
        ((lambda x: x, variables, "Dense_0"), "module must be a flax linen nn.Module", TypeError),
    ]
    for args, match, error in cases:
        with pytest.raises(error, match=re.escape(match)):
            xai_jax.flax.split(*args)
    with pytest.raises(ValueError, match="mutable is not supported"):
        xai_jax.flax.split(model, variables, "Dense_0", mutable=["batch_stats"])
    with pytest.raises(TypeError, match="attribute_to_inputs must be a bool"):
        xai_jax.flax.split(model, variables, "Dense_0", attribute_to_inputs="yes")
    with pytest.raises(TypeError, match="method must be a method name or a function"):
        xai_jax.flax.split(model, variables, "Dense_0", method=3)


class NnxBranch(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(4, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)])
        self.unused = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.layers[1](self.layers[0](x))


def test_nnx_errors():
    model = NnxBranch(nnx.Rngs(0))
    submodules = "('layers.0', 'layers.1', 'unused')"
    cases = [
        (
            "layers.5",
            ValueError,
            f"path='layers.5' is not a submodule of the model; its submodules: {submodules}",
        ),
        ("lauers.0", ValueError, "path='lauers.0' is not a submodule"),
        ("", ValueError, "path must name a submodule"),
        (3, TypeError, "path must be an attribute path (e.g. 'layers.1') or a function"),
        (lambda m: m.layers, TypeError, "it selects an nnx.List (a container of modules)"),
        (
            lambda m: m.layers[0].kernel,
            TypeError,
            "path must select an nnx.Module of the model, but it selects a Param",
        ),
        (lambda m: m, ValueError, "path selects the model itself"),
        (
            lambda m: nnx.Linear(4, 2, rngs=nnx.Rngs(0)),
            ValueError,
            "path selects a Linear that is not part of the model",
        ),
    ]
    for where, error, match in cases:
        with pytest.raises(error, match=re.escape(match)):
            xai_jax.flax.split(model, where)
    with pytest.raises(TypeError, match=re.escape("split(model, path)")):
        xai_jax.flax.split(model, {}, "layers.0")
    layer_fn, _ = xai_jax.flax.split(model, "unused")
    with pytest.raises(
        ValueError,
        match=re.escape("the submodule 'unused' (Linear) was not called during the forward pass"),
    ):
        layer_fn(X_MLP)
    named = xai_jax.flax.split(model, lambda m: m.unused)[0]
    with pytest.raises(ValueError, match="the submodule 'unused'"):
        jax.jit(named)(X_MLP)


class EqxBranch(eqx.Module):
    layers: tuple
    unused: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.layers = (eqx.nn.Linear(4, 4, key=k1), eqx.nn.Linear(4, 2, key=k2))
        self.unused = eqx.nn.Linear(4, 2, key=k3)

    def __call__(self, x):
        return self.layers[1](self.layers[0](x))


def test_equinox_errors():
    model = EqxBranch(jax.random.key(0))
    cases = [
        (
            lambda m: m.layers[0].weight,
            TypeError,
            "where must select an equinox Module inside the model, but where(model) is of type",
        ),
        (lambda m: jax.nn.relu, TypeError, "where(model) is of type"),
        (lambda m: m, ValueError, "where selects the model itself"),
        (
            lambda m: eqx.nn.Linear(4, 2, key=jax.random.key(1)),
            ValueError,
            "where selects a Linear that is not part of the model",
        ),
        (
            "layers.0",
            TypeError,
            "where must be a function selecting the submodule, as in eqx.tree_at",
        ),
    ]
    for where, error, match in cases:
        with pytest.raises(error, match=re.escape(match)):
            xai_jax.equinox.split(model, where)
    with pytest.raises(TypeError, match="model must be an equinox Module"):
        xai_jax.equinox.split(lambda x: x, lambda m: m)
    with pytest.raises(TypeError, match="batched must be a bool"):
        xai_jax.equinox.split(model, lambda m: m.unused, batched=1)
    layer_fn, head_fn = xai_jax.equinox.split(model, lambda m: m.unused)
    with pytest.raises(
        ValueError,
        match=re.escape("the submodule 'unused' (Linear) was not called during the forward pass"),
    ):
        layer_fn(X_MLP)
    layer_fn, head_fn = xai_jax.equinox.split(model, lambda m: m.layers[1])
    with pytest.raises(ValueError, match=r"call .*layer_fn .*before head_fn"):
        head_fn(jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"x must be an array .* with a leading batch axis"):
        layer_fn(jnp.float32(1.0))
    h = layer_fn(X_MLP)
    with pytest.raises(ValueError, match="h must match the module's output"):
        head_fn(jnp.zeros((2, 7)))
    assert h.shape == (5, 2)


class BatchDense(eqx.Module):
    """A dense layer on a batch (eqx.nn.Linear takes one example)."""

    weight: jax.Array
    bias: jax.Array

    def __call__(self, x):
        return x @ self.weight + self.bias[None]


class Scaled(eqx.Module):  # takes the whole batch, a per-example and a fixed keyword
    dense_0: BatchDense
    dense_1: BatchDense

    def __call__(self, x, *, scale, shift=0.0):
        return self.dense_1(jnp.tanh(self.dense_0(x) * scale)) + shift


class PerExample(eqx.Module):  # the same model on one example
    inner: Scaled

    def __call__(self, x, *, scale, shift=0.0):
        return self.inner(x[None], scale=scale[None], shift=shift)[0]


def test_equinox_batched_model_and_keyword_arguments():
    (w0, b0), (w1, b1) = MLP_W[0], MLP_W[1]
    model = Scaled(BatchDense(w0, b0), BatchDense(w1, b1))
    scale = jnp.linspace(0.5, 1.5, 5)[:, None]
    want = model(X_MLP, scale=scale, shift=1.0)
    layer_fn, head_fn = xai_jax.equinox.split(model, lambda m: m.dense_0, batched=True)
    h = layer_fn(X_MLP, scale=scale)
    _close(h, X_MLP @ w0 + b0[None])
    _close(head_fn(h, scale=scale, shift=1.0), want, atol=1e-6)
    # per example: scale (an array with a batch axis) is mapped, shift (a float) is not
    layer_fn, head_fn = xai_jax.equinox.split(
        PerExample(model), lambda m: m.inner.dense_1, attribute_to_inputs=True
    )
    h = jax.jit(lambda v, s: layer_fn(v, scale=s))(X_MLP, scale)
    _close(jax.jit(lambda z, s: head_fn(z, scale=s, shift=1.0))(h, scale), want, atol=1e-6)


# ---- the wrappers take flax and equinox models ---------------------------------------------


def test_integrated_gradients_wrapper_takes_flax_and_equinox_models():
    from xai_jax import IntegratedGradients, LimeBase

    target = jnp.arange(5) % 3
    eqx_bn_free = _eqx_mlp()
    models = {
        "linen": ((LinenMLP(), _linen_params()), "Dense_1"),
        "nnx path": (_nnx_mlp(), "layers.1"),
        "nnx selector": (_nnx_mlp(), lambda m: m.layers[1]),
        "equinox": (eqx_bn_free, lambda m: m.layers[1]),
        "equinox with state": (
            (_StatefulMLP(eqx_bn_free), eqx.nn.State(eqx_bn_free)),
            lambda m: m.inner.layers[1],
        ),
    }
    want = {
        inputs: layer_integrated_gradients(
            *_mlp_pairs(inputs)["haiku"], X_MLP, target=target, n_steps=50
        )
        for inputs in (False, True)
    }
    predictions = _haiku_mlp()[0].apply(_haiku_mlp()[1], X_MLP)
    for library, (model, layer) in models.items():
        explainer = IntegratedGradients(model, layer=layer)
        try:
            for inputs in (False, True):
                explanation = explainer.explain(
                    X_MLP, target=target, attribute_to_layer_inputs=inputs
                )
                _close(explanation.attributions[0], want[inputs], atol=1e-5)
            _close(explanation.predictions, predictions, atol=1e-5)
            _close(
                IntegratedGradients(model).explain(X_MLP, target=target).predictions,
                predictions,
                atol=1e-5,
            )
        except AssertionError as error:
            raise AssertionError(library) from error
    # LimeBase calls a library model with its input positionally
    coefs, _ = LimeBase(eqx_bn_free).attribute(X_MLP[:2], key=jax.random.key(0), num_samples=64)
    assert coefs.shape == (2, 3, 4)


class _StatefulMLP(eqx.Module):
    inner: EqxMLP

    def __call__(self, x, state):
        return self.inner(x), state


def test_wrapper_errors_for_flax_and_equinox_models():
    from xai_jax import IntegratedGradients

    cases = [
        (
            (LinenMLP(), "Dense_1"),
            TypeError,
            "model is a bare linen LinenMLP: pass it with its variables",
        ),
        (
            ((LinenMLP(), _linen_params(), 3), "Dense_1"),
            TypeError,
            "a linen model comes as (module, variables)",
        ),
        (
            ((LinenMLP(), _linen_params()), lambda m: m),
            TypeError,
            "a linen model is split at a scope path",
        ),
        (
            (_eqx_mlp(), "layers.1"),
            TypeError,
            "an equinox model is split at a function selecting the submodule",
        ),
        (
            ((_eqx_mlp(), 3), lambda m: m.layers[1]),
            TypeError,
            "an equinox model comes as the module, or as (module, state)",
        ),
        (
            (lambda x: x, lambda m: m.layers[1]),
            TypeError,
            "layer is a function selecting a submodule, so model must be an nnx or equinox model",
        ),
        ((_nnx_mlp(), "layers.7"), ValueError, "path='layers.7' is not a submodule of the model"),
        (
            (_eqx_mlp(), lambda m: m.layers[0].weight),
            TypeError,
            "where must select an equinox Module",
        ),
    ]
    for (model, layer), error, match in cases:
        with pytest.raises(error, match=re.escape(match)):
            IntegratedGradients(model, layer=layer)


# ---- Captum's numbers on the torch twin (tests/fixtures/make_captum_fixtures.py) -----------

FIXTURES = Path(__file__).parent / "fixtures"


class LinenTwinMLP(nn.Module):  # Linear(6, 16), Tanh, Linear(16, 16), Tanh, Linear(16, 3)
    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(16)(x))
        h = jnp.tanh(nn.Dense(16)(h))  # one line each: linen names modules as they are made
        return nn.Dense(3)(h)


class NnxTwinMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [nnx.Linear(i, o, rngs=rngs) for i, o in ((6, 16), (16, 16), (16, 3))]
        )

    def __call__(self, x):
        h = jnp.tanh(self.layers[0](x))
        return self.layers[2](jnp.tanh(self.layers[1](h)))


class EqxTwinMLP(eqx.Module):
    layers: tuple

    def __call__(self, x):
        h = jnp.tanh(self.layers[0](x))
        return self.layers[2](jnp.tanh(self.layers[1](h)))


class LinenTwinCNN(nn.Module):  # Conv2d(1, 4, 3), ReLU, Conv2d(4, 6, 3), ReLU, Flatten, Linear
    @nn.compact
    def __call__(self, x):  # NCHW, as the torch model; flax convolves NHWC
        h = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(jnp.transpose(x, (0, 2, 3, 1))))
        h = nn.relu(nn.Conv(6, (3, 3), padding="VALID")(h))
        return nn.Dense(3)(jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1))


class NnxTwinCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv_0 = nnx.Conv(1, 4, (3, 3), padding="VALID", rngs=rngs)
        self.conv_1 = nnx.Conv(4, 6, (3, 3), padding="VALID", rngs=rngs)
        self.dense = nnx.Linear(96, 3, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.conv_0(jnp.transpose(x, (0, 2, 3, 1))))
        h = jax.nn.relu(self.conv_1(h))
        return self.dense(jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1))


class EqxTwinCNN(eqx.Module):
    conv_0: eqx.nn.Conv2d
    conv_1: eqx.nn.Conv2d
    dense: eqx.nn.Linear

    def __call__(self, x):  # one CHW example, torch's layout
        h = jax.nn.relu(self.conv_1(jax.nn.relu(self.conv_0(x))))
        return self.dense(h.reshape(-1))


def _twin_pairs(name: str, d: dict) -> dict:
    """The torch fixture model in linen, nnx and equinox, split at the first activation's
    output (Captum's `model[1]`) as the next layer's inputs; flax's layer is NHWC."""
    w = {k[2:]: jnp.asarray(v) for k, v in d.items() if k.startswith("w_")}
    keys = jax.random.split(jax.random.key(0), 3)
    if name == "mlp":
        names = ("0", "2", "4")
        linen_vars = {
            "params": {
                f"Dense_{i}": {"kernel": w[f"{n}_weight"].T, "bias": w[f"{n}_bias"]}
                for i, n in enumerate(names)
            }
        }
        nnx_model = NnxTwinMLP(nnx.Rngs(0))
        for layer, n in zip(nnx_model.layers, names, strict=True):
            layer.kernel[...], layer.bias[...] = w[f"{n}_weight"].T, w[f"{n}_bias"]
        eqx_model = EqxTwinMLP(
            tuple(
                eqx.tree_at(
                    lambda lin: (lin.weight, lin.bias),
                    eqx.nn.Linear(*w[f"{n}_weight"].shape[::-1], key=k),
                    (w[f"{n}_weight"], w[f"{n}_bias"]),
                )
                for n, k in zip(names, keys, strict=True)
            )
        )
        return {
            "linen": xai_jax.flax.split(
                LinenTwinMLP(), linen_vars, "Dense_1", attribute_to_inputs=True
            ),
            "nnx": xai_jax.flax.split(nnx_model, "layers.1", attribute_to_inputs=True),
            "equinox": xai_jax.equinox.split(
                eqx_model, lambda m: m.layers[1], attribute_to_inputs=True
            ),
        }
    hwio = {n: jnp.transpose(w[f"{n}_weight"], (2, 3, 1, 0)) for n in ("0", "2")}
    linen_vars = {
        "params": {
            "Conv_0": {"kernel": hwio["0"], "bias": w["0_bias"]},
            "Conv_1": {"kernel": hwio["2"], "bias": w["2_bias"]},
            "Dense_0": {"kernel": w["5_weight"].T, "bias": w["5_bias"]},
        }
    }
    nnx_model = NnxTwinCNN(nnx.Rngs(0))
    nnx_model.conv_0.kernel[...], nnx_model.conv_0.bias[...] = hwio["0"], w["0_bias"]
    nnx_model.conv_1.kernel[...], nnx_model.conv_1.bias[...] = hwio["2"], w["2_bias"]
    nnx_model.dense.kernel[...], nnx_model.dense.bias[...] = w["5_weight"].T, w["5_bias"]
    eqx_model = EqxTwinCNN(
        eqx.nn.Conv2d(1, 4, 3, key=keys[0]),
        eqx.nn.Conv2d(4, 6, 3, key=keys[1]),
        eqx.nn.Linear(96, 3, key=keys[2]),
    )
    eqx_model = eqx.tree_at(
        lambda m: (m.conv_0.weight, m.conv_0.bias, m.conv_1.weight, m.conv_1.bias,
                   m.dense.weight, m.dense.bias),
        eqx_model,
        (w["0_weight"], w["0_bias"].reshape(-1, 1, 1), w["2_weight"],
         w["2_bias"].reshape(-1, 1, 1), w["5_weight"], w["5_bias"]),
    )  # fmt: skip
    return {
        "linen": xai_jax.flax.split(LinenTwinCNN(), linen_vars, "Conv_1", attribute_to_inputs=True),
        "nnx": xai_jax.flax.split(nnx_model, "conv_1", attribute_to_inputs=True),
        "equinox": xai_jax.equinox.split(eqx_model, lambda m: m.conv_1, attribute_to_inputs=True),
    }


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_layer_methods_match_captum_on_the_torch_twin(name):
    d = dict(np.load(FIXTURES / f"captum_{name}.npz"))
    kw = dict(target=d["target"], n_steps=int(d["n_steps"]), method="gausslegendre")
    neuron = tuple(int(i) for i in d["neuron"])

    def close(ours, theirs, scale=None):  # relative to the attribution scale, as Captum's test
        theirs = np.asarray(theirs)
        scale = max(np.abs(theirs).max() if scale is None else scale, 1e-12)
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=1e-5 * scale)

    for library, (layer_fn, head_fn) in _twin_pairs(name, d).items():
        # flax's layer is NHWC: its attributions and the neuron index move to torch's NCHW
        nhwc = name == "cnn" and library != "equinox"
        to_torch = (lambda a: jnp.transpose(a, (0, 3, 1, 2))) if nhwc else (lambda a: a)
        index = (neuron[1], neuron[2], neuron[0]) if nhwc else neuron
        try:
            close(jax.jit(head_fn)(layer_fn(d["x"])), d["logits"])
            for method, key in ((layer_integrated_gradients, "lig"), (layer_conductance, "lc")):
                attr, delta = method(
                    layer_fn, head_fn, d["x"], d["baselines"], return_convergence_delta=True, **kw
                )
                close(to_torch(attr), d[f"{key}_gausslegendre"])
                sums = np.abs(np.asarray(attr).reshape(len(attr), -1).sum(1)).max()
                close(delta, d[f"{key}_gausslegendre_delta"], sums)
            attr = neuron_conductance(layer_fn, head_fn, d["x"], index, d["baselines"], **kw)
            close(attr, d["nc_gausslegendre"])
        except AssertionError as error:
            raise AssertionError(library) from error
