"""Incremental inference for occlusion (`xai_jax._incremental`): the same numbers as the full
occluded rows on every layout and geometry it takes, the full rows where it does not apply,
and the switch to it actually made where it pays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import _incremental, occlusion

RNG = np.random.default_rng(0)
W1 = jnp.asarray(RNG.normal(size=(8, 3, 3, 3)), jnp.float32)  # OIHW
B1 = jnp.asarray(RNG.normal(size=8), jnp.float32)
W2 = jnp.asarray(RNG.normal(size=(16, 8, 3, 3)) * 0.3, jnp.float32)
HEAD = jnp.asarray(RNG.normal(size=(16 * 36, 4)) * 0.05, jnp.float32)


def _conv(h, w, strides, padding, dn=("NCHW", "OIHW", "NCHW"), dilation=None):
    return jax.lax.conv_general_dilated(
        h, w, strides, padding, rhs_dilation=dilation, dimension_numbers=dn
    )


def cnn(x):  # the benchmark's shape: two strided VALID convolutions, a dense head
    h = jax.nn.relu(_conv(x, W1, (2, 2), "VALID") + B1[None, :, None, None])
    h = jax.nn.relu(_conv(h, W2, (2, 2), "VALID"))
    return h.reshape(h.shape[0], -1) @ HEAD


def nhwc(x):  # channels last, SAME and asymmetric padding, dilation, a scale, a global mean
    w1 = jnp.transpose(W1, (2, 3, 1, 0))  # HWIO
    h = jnp.tanh(
        _conv(x, w1, (1, 1), "SAME", ("NHWC", "HWIO", "NHWC")) * 1.5 + B1[None, None, None]
    )
    w2 = jnp.transpose(W2, (2, 3, 1, 0))
    h = jax.nn.gelu(_conv(h, w2, (2, 2), ((1, 2), (0, 1)), ("NHWC", "HWIO", "NHWC"), (2, 1)))
    return h.mean(axis=(1, 2)) @ HEAD[:16]


def residual(x):  # a sum of two different boxes: written out, the rest in full
    h = jax.nn.relu(_conv(x, W1, (1, 1), "SAME"))
    h = h + jax.nn.relu(_conv(h, W2[:8], (1, 1), "SAME"))
    return jnp.stack([h.sum(axis=(1, 2, 3)), h.max(axis=(1, 2, 3))], axis=1)


def positional(x):  # a full-shape constant added after the convolution: cut to each box
    h = _conv(x, W1, (2, 2), "VALID")
    h = jax.nn.sigmoid(h + jnp.linspace(-1, 1, h[0].size).reshape(1, *h.shape[1:]))
    return h.reshape(h.shape[0], -1)[:, :4]  # 4 outputs, as the others


def head_transposed(x):  # dense weights stored [outputs, inputs], then a bias and a tanh
    h = jax.nn.relu(_conv(x, W1, (2, 2), "VALID"))
    h = jax.nn.relu(_conv(h, W2, (2, 2), "VALID"))
    out = jax.lax.dot_general(h.reshape(h.shape[0], -1), HEAD_T, (((1,), (1,)), ((), ())))
    return jnp.tanh(out + 0.5)


def wide(x):  # a stride-1 SAME convolution: too many box positions for the head's weight table
    h = jax.nn.relu(_conv(x, W1, (1, 1), "SAME"))
    return h.reshape(h.shape[0], -1) @ HEAD_WIDE


X = RNG.normal(size=(3, 3, 28, 28)).astype(np.float32)
T = np.array([0, 3, 1])
HEAD_T = jnp.asarray(RNG.normal(size=(4, 16 * 36)) * 0.05, jnp.float32)
HEAD_WIDE = jnp.asarray(RNG.normal(size=(8 * 28 * 28, 4)) * 0.02, jnp.float32)

CASES = {
    "cnn 4x4/2": (cnn, X, dict(sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2))),
    "cnn uneven": (cnn, X, dict(sliding_window_shapes=(3, 5, 5), strides=(1, 3, 3))),
    "cnn baselines": (
        cnn,
        X,
        dict(sliding_window_shapes=(2, 6, 3), strides=(1, 4, 2), baselines=X[::-1] * 0.5),
    ),
    "nhwc": (
        nhwc,
        np.moveaxis(X, 1, 3),
        dict(sliding_window_shapes=(3, 5, 1), strides=(2, 4, 1), baselines=0.25),
    ),
    "residual": (residual, X, dict(sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4))),
    "positional": (positional, X, dict(sliding_window_shapes=(1, 3, 3), strides=(1, 3, 3))),
    "head [out, in]": (head_transposed, X, dict(sliding_window_shapes=(3, 4, 4), strides=2)),
    "wide": (wide, X, dict(sliding_window_shapes=(1, 3, 3), strides=(1, 3, 3))),
}


def _full_rows(monkeypatch, f, x, kw, **more):
    monkeypatch.setattr(_incremental, "ENABLED", False)
    out = occlusion(f, x, **kw, **more)
    monkeypatch.setattr(_incremental, "ENABLED", True)
    return np.asarray(out)


def _close(ours, full):
    scale = max(np.abs(full).max(), 1e-12)
    np.testing.assert_allclose(np.asarray(ours), full, rtol=0, atol=2e-5 * scale)


@pytest.mark.parametrize("name", list(CASES))
def test_same_numbers_as_the_full_rows(monkeypatch, name):
    f, x, kw = CASES[name]
    kw = dict(kw, target=np.array([0, 1, 1]) if name == "residual" else T)
    _close(occlusion(f, x, **kw), _full_rows(monkeypatch, f, x, kw))


@pytest.mark.parametrize("batch_size", [1, 7, 200])
def test_chunks_across_examples(monkeypatch, batch_size):
    # chunks that start and end inside an example, and that hold several examples
    f, x, kw = CASES["cnn uneven"]
    kw = dict(kw, target=T, batch_size=batch_size)
    _close(occlusion(f, x, **kw), _full_rows(monkeypatch, f, x, kw))


def test_taken_where_it_pays(monkeypatch):
    results = []
    real = _incremental.occluded_outputs

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        results.append(out is not None)
        return out

    monkeypatch.setattr(_incremental, "occluded_outputs", spy)
    jax.clear_caches()  # the kernels trace again, through the spy
    f, x, kw = CASES["cnn 4x4/2"]
    occlusion(f, x, target=T, **kw)
    assert results == [True]
    results.clear()
    # a window as large as the input changes everything: the full rows
    occlusion(f, x, target=T, sliding_window_shapes=(3, 28, 28))
    assert results == [False]
    results.clear()
    # no convolution: the full rows
    dense = jnp.asarray(RNG.normal(size=(3 * 28 * 28, 2)), jnp.float32)
    mlp = lambda z: jnp.tanh(z.reshape(z.shape[0], -1) @ dense)
    occlusion(
        mlp, x, target=np.array([0, 1, 0]), sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4)
    )
    assert results == [False]


@pytest.mark.parametrize(
    ("name", "taken"), [("cnn 4x4/2", True), ("head [out, in]", True), ("wide", False)]
)
def test_dense_head_contracts_the_change_where_its_table_is_small(monkeypatch, name, taken):
    seen = []
    real = _incremental._affine_head

    def spy(*args):
        out = real(*args)
        seen.append(out is not None)
        return out

    monkeypatch.setattr(_incremental, "_affine_head", spy)
    jax.clear_caches()
    f, x, kw = CASES[name]
    occlusion(f, x, target=T, **kw)
    assert seen and set(seen) == {taken}


def test_a_convolution_inside_a_jit_runs_in_full(monkeypatch):
    inner = jax.jit(lambda x: _conv(x, W1, (2, 2), "VALID"))
    f = lambda x: jax.nn.relu(inner(x)).reshape(x.shape[0], -1)[:, :3]
    kw = dict(sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4), target=np.array([0, 1, 2]))
    _close(occlusion(f, X, **kw), _full_rows(monkeypatch, f, X, kw))


def test_jit_and_parameter_gradient(monkeypatch):
    kw = dict(sliding_window_shapes=(1, 6, 6), strides=(1, 5, 5), target=T)

    def loss(w):
        model = lambda x: jax.nn.relu(_conv(x, w, (2, 2), "VALID")).sum(axis=(2, 3)) @ HEAD[:8]
        return jnp.sum(occlusion(model, X, **kw) ** 2)

    ours = jax.jit(jax.grad(loss))(W1)
    monkeypatch.setattr(_incremental, "ENABLED", False)
    full = jax.jit(jax.grad(loss))(W1)
    _close(ours, np.asarray(full))
