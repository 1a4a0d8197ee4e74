"""The affine prefix that integrated gradients evaluates once per example (xai_jax._affine).

The hoisted path must give the attributions of the path in input space: held to an IG written
here from its definition (one gradient per path point), in float64, for models whose prefix is
a dense layer, a convolution, a normalisation, a residual branch, a masked input, a pytree of
inputs; and the models it must leave alone (no matrix product before the first non-affine
operation, rows not on the leading axis) still give the right numbers.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import _affine, integrated_gradients, quadrature

_rng = np.random.default_rng(0)


def _w(*shape):
    return jnp.asarray(_rng.normal(size=shape) / np.sqrt(shape[0]))


MODELS = [
    "mlp",
    "jitted",
    "normalised input",
    "residual",
    "masked by a forward kwarg",
    "convolution",
    "pytree of inputs",
    "tanh first",
    "no matrix product before tanh",
    "rows not leading",
]


def _conv(x, w):
    dims = ("NCHW", "OIHW", "NCHW")
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)


def _models():
    """`name -> (fn(x, **kwargs), x, kwargs, cut shapes per row or None)` (float64 under x64)."""
    w1, w2, w3 = _w(6, 8), _w(8, 4), _w(6, 4)
    mu, sigma = jnp.linspace(-1.0, 1.0, 6), jnp.linspace(0.5, 2.0, 6)
    k1, k2 = _w(4, 2, 3, 3), _w(18, 3)
    x = jnp.asarray(_rng.normal(size=(5, 6)))
    images = jnp.asarray(_rng.normal(size=(5, 2, 3, 3)))
    mask = jnp.asarray(_rng.integers(0, 2, size=(5, 6)).astype(np.float64))
    return {
        "mlp": (lambda v: jnp.tanh(v @ w1 + 0.1) @ w2, x, {}, [(8,)]),
        "normalised input": (
            lambda v: jax.nn.relu(((v - mu[None]) / sigma[None]) @ w1) @ w2,
            x,
            {},
            [(8,)],
        ),
        "residual": (lambda v: jnp.tanh(v @ w1) @ w2 + jnp.sin(v) @ w3, x, {}, [(8,), (6,)]),
        "masked by a forward kwarg": (
            lambda v, mask: jnp.tanh((v * mask) @ w1) @ w2,
            x,
            {"mask": mask},
            [(8,)],
        ),
        "convolution": (
            lambda v: jnp.tanh(_conv(v, k1) * 0.5).reshape(v.shape[0], -1)[:, :18] @ k2,
            images,
            {},
            [(4, 3, 3)],
        ),
        "pytree of inputs": (
            lambda v: jnp.tanh(v["a"] @ w1) @ w2 + jnp.tanh(v["b"]) @ w2,
            {"a": x, "b": jnp.asarray(_rng.normal(size=(5, 8)))},
            {},
            [(8,), (8,)],
        ),
        "jitted": (jax.jit(lambda v: jnp.tanh(v @ w1 + 0.1) @ w2), x, {}, [(8,)]),
        "tanh first": (lambda v: jnp.tanh(v) @ w3, x, {}, None),
        "no matrix product before tanh": (lambda v: jnp.tanh(2.0 * v + 1.0) @ w3, x, {}, None),
        "rows not leading": (lambda v: jnp.tanh(w1.T @ v.T).T @ w2, x, {}, None),
    }


def _reference_ig(fn, x, baselines, kwargs, target, method, n_steps):
    """IG from its definition: one gradient per path point, weighted, times `x - b`."""
    alphas, weights = quadrature(method, n_steps)

    def target_output(point, row_kwargs):
        expanded = jax.tree.map(lambda v: v[None], row_kwargs)
        out = fn(jax.tree.map(lambda v: v[None], point), **expanded)
        return out[0, target]

    def one(xi, bi, kw):
        def weighted_grad(alpha, weight):
            point = jax.tree.map(lambda a, b: b + alpha * (a - b), xi, bi)
            return jax.tree.map(lambda g: weight * g, jax.grad(target_output)(point, kw))

        grads = [weighted_grad(a, w) for a, w in zip(alphas, weights, strict=True)]
        total = jax.tree.map(lambda *g: sum(g), *grads)
        return jax.tree.map(lambda t, a, b: t * (a - b), total, xi, bi)

    return jax.vmap(one)(x, baselines, kwargs)


@pytest.mark.x64
@pytest.mark.parametrize("name", MODELS)
def test_split_cuts_where_the_first_non_affine_operation_reads(name):
    fn, x, kwargs, cut = _models()[name]
    split = _affine.split(fn, x, kwargs)
    if cut is None:
        assert split is None
        return
    hidden = split.prefix(x, kwargs)
    assert [h.shape[1:] for h in hidden] == cut
    np.testing.assert_allclose(split.rest(hidden, kwargs), fn(x, **kwargs), rtol=1e-12)


@pytest.mark.x64
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    ("method", "internal_batch_size"), [("gausslegendre", None), ("riemann_trapezoid", 10)]
)
def test_hoisted_path_gives_the_input_space_attributions(name, method, internal_batch_size):
    fn, x, kwargs, _ = _models()[name]
    baselines = jax.tree.map(lambda v: 0.3 * jnp.ones_like(v), x)
    kw = dict(target=1, method=method, n_steps=7, internal_batch_size=internal_batch_size)
    expected = _reference_ig(fn, x, baselines, kwargs, 1, method, 7)
    attr, delta = integrated_gradients(
        fn, x, baselines, forward_kwargs=kwargs or None, return_convergence_delta=True, **kw
    )
    traced = jax.jit(
        lambda x, b: integrated_gradients(fn, x, b, forward_kwargs=kwargs or None, **kw)
    )(x, baselines)
    for got in (attr, traced):
        jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12),
                     got, expected)  # fmt: skip
    ends = fn(x, **kwargs)[:, 1] - fn(baselines, **kwargs)[:, 1]
    total = sum(v.reshape(5, -1).sum(1) for v in jax.tree.leaves(attr))
    np.testing.assert_allclose(delta, total - ends, rtol=1e-10, atol=1e-12)


def test_hoisting_removes_the_first_layer_from_every_step():
    # MLP 64-256-10, 20 steps: the first layer is 86% of the FLOPs of each path point, and the
    # compiled IG does it (and its transpose) on the two end points only
    w1, w2 = _w(64, 256).astype(jnp.float32), _w(256, 10).astype(jnp.float32)
    fn = lambda v: jnp.tanh(v @ w1) @ w2
    x = jnp.ones((8, 64), jnp.float32)

    def flops(f, *args):
        return jax.jit(f).lower(*args).compile().cost_analysis()["flops"]

    ours = flops(lambda x: integrated_gradients(fn, x, target=1, n_steps=20), x)
    points = jnp.ones((20 * 8, 64), jnp.float32)
    every_point = flops(jax.grad(lambda p: fn(p)[:, 1].sum()), points)
    assert ours < 0.35 * every_point


@pytest.mark.x64
def test_hoisted_attributions_are_differentiable_in_the_parameters():
    # an attribution prior: the gradient w.r.t. the first layer's weights goes through the
    # prefix (end points and transpose), matched by central differences
    x = jnp.asarray(_rng.normal(size=(4, 6)))
    w1, w2 = _w(6, 8), _w(8, 3)

    def loss(w1):
        attr = integrated_gradients(lambda v: jnp.tanh(v @ w1) @ w2, x, target=2, n_steps=8)
        return jnp.sum(attr[:, 0] ** 2)

    assert _affine.split(lambda v: jnp.tanh(v @ w1) @ w2, x, {}) is not None
    grad = jax.jit(jax.grad(loss))(w1)
    eps = 1e-6
    direction = jnp.asarray(_rng.normal(size=(6, 8)))
    numeric = (loss(w1 + eps * direction) - loss(w1 - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(grad * direction), numeric, rtol=1e-6)
