"""numerical_gradient against alibi's num_grad_batch and autodiff; urv_gradient against autodiff
and the MAX library's loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks._max_reference import URVGradientEstimator
from xai_jax import numerical_gradient, urv_gradient

KEY = jax.random.key(0)


def num_grad_batch(func, X, eps):
    """Seed 000 (alibi.utils.gradients.num_grad_batch), re-implemented in NumPy."""
    batch, data_shape = X.shape[0], X.shape[1:]
    flat = X.reshape(batch, -1)
    dim = flat.shape[1]
    pert = np.tile(np.eye(dim) * eps, (batch, 1))
    rep = np.repeat(flat, dim, axis=0)
    pos = (rep + pert).reshape((dim * batch, *data_shape))
    neg = (rep - pert).reshape((dim * batch, *data_shape))
    preds = func(X)
    out = func(np.concatenate([pos, neg]))
    num = out[: dim * batch] - out[dim * batch :]
    num = np.reshape(np.reshape(num, (batch, -1)), (batch, preds.shape[1], -1), order="F")
    return (num / (2 * eps)).reshape(preds.shape + data_shape)


def _tanh_model(rng, d_in, d_out):
    w = rng.standard_normal((d_in, d_out)) / np.sqrt(d_in)
    b = rng.standard_normal(d_out)
    return (lambda x: np.tanh(x.reshape(len(x), -1) @ w + b)), (
        lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w + b[None])
    )


@pytest.mark.parametrize("eps_kind", ["scalar", "per_feature"])
def test_numerical_gradient_matches_alibi_seed(x64, rng, eps_kind):
    np_fn, jax_fn = _tanh_model(rng, 12, 3)
    x = rng.standard_normal((4, 2, 6))
    eps = 1e-4 if eps_kind == "scalar" else rng.uniform(1e-5, 1e-4, 12)
    expected = num_grad_batch(np_fn, x, eps)
    got = numerical_gradient(jax_fn, x, eps=eps)
    assert got.shape == expected.shape == (4, 3, 2, 6) and got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-9)


def test_numerical_gradient_feature_shaped_eps_and_args(x64, rng):
    x = rng.standard_normal((3, 2, 2))
    scale = jnp.array([1.0, 2.0, 3.0])
    fn = lambda z, s: s[None, :] * jnp.sum(z**3, axis=(1, 2))[:, None]
    got = numerical_gradient(fn, x, eps=np.full((2, 2), 1e-5), args=(scale,))
    expected = np.asarray(scale)[None, :, None, None] * 3 * x[:, None] ** 2
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-7)


def test_numerical_gradient_default_eps_works_in_float32(rng):
    _, jax_fn = _tanh_model(rng, 784, 10)
    x = jnp.asarray(rng.uniform(0, 1, (3, 784)), jnp.float32)
    got = numerical_gradient(jax_fn, x)
    exact = jax.vmap(jax.jacrev(lambda v: jax_fn(v[None])[0]))(x)
    scale = float(jnp.abs(exact).max())
    assert float(jnp.abs(got - exact).max()) < 1e-3 * scale
    # alibi's default 1e-8 is below float32 resolution (x + eps == x - eps): a 0 / 0 estimate,
    # so it raises instead of returning NaN (issue 23)
    with pytest.raises(ValueError, match="below the resolution of float32"):
        numerical_gradient(jax_fn, x, eps=1e-8)


@pytest.mark.parametrize("batch_size", [2, 6, 64, 10_000])
def test_numerical_gradient_chunking_is_exact(x64, rng, batch_size):
    # float64: in float32 a model call on a different batch may round differently by an ulp
    _, jax_fn = _tanh_model(rng, 5, 2)
    x = jnp.asarray(rng.standard_normal((7, 5)))
    reference = numerical_gradient(jax_fn, x, eps=1e-2, batch_size=2 * 35)  # one call
    got = numerical_gradient(jax_fn, x, eps=1e-2, batch_size=batch_size)
    np.testing.assert_allclose(np.asarray(got), np.asarray(reference), rtol=1e-10, atol=1e-12)


def test_numerical_gradient_output_ranks(x64, rng):
    x = rng.standard_normal((2, 3))
    scalar = numerical_gradient(lambda z: jnp.sum(z**2, axis=1), x, eps=1e-6)
    np.testing.assert_allclose(np.asarray(scalar), 2 * x, rtol=1e-8)
    matrix = numerical_gradient(lambda z: jnp.stack([z, 2 * z], axis=1), x, eps=1e-6)
    assert matrix.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(np.asarray(matrix[:, 1]), 2 * np.stack([np.eye(3)] * 2), atol=1e-8)


def test_numerical_gradient_is_differentiable(x64, rng):
    x = jnp.asarray(rng.standard_normal((2, 3)))
    # d/dx of the finite-difference slope of sum(x^3) is 6x (exact for a cubic up to O(eps^2))
    g = jax.grad(lambda z: numerical_gradient(lambda v: jnp.sum(v**3, 1), z, eps=1e-4).sum())(x)
    np.testing.assert_allclose(np.asarray(g), 6 * np.asarray(x), rtol=1e-5)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: numerical_gradient(lambda z: z, jnp.float32(1.0)), ValueError, "at least 1 dimension"),
        (lambda: numerical_gradient(lambda z: z, jnp.ones((2, 3)), eps=0.0), ValueError, "eps must be > 0"),
        (lambda: numerical_gradient(lambda z: z, jnp.ones((2, 3)), eps=-jnp.ones(3)), ValueError, "eps must be > 0"),
        (lambda: numerical_gradient(lambda z: z, jnp.ones((2, 3)), eps=jnp.ones(4)), ValueError, "one value per feature"),
        (lambda: numerical_gradient(lambda z: z, jnp.ones((2, 3)), batch_size=1), ValueError, "batch_size must be >= 2"),
        (lambda: numerical_gradient(lambda z: z.sum(), jnp.ones((2, 3))), ValueError, "one output row per input row"),
        (lambda: numerical_gradient(lambda z, s: np.asarray(z) * s, jnp.ones((2, 3)), args=(2.0,)), TypeError, "fn is not a JAX function .* passes no args"),
        (lambda: urv_gradient(KEY, lambda z: np.asarray(z), jnp.ones(3)), ValueError, "fn must return a scalar, got shape \\(3,\\)"),
        (lambda: urv_gradient(KEY, lambda z: str(np.asarray(z)), jnp.ones(3)), TypeError, "fn must return real numbers"),
        (lambda: urv_gradient(KEY, jnp.sum, jnp.ones(3), num_samples=0), ValueError, "num_samples must be >= 1"),
        (lambda: urv_gradient(KEY, jnp.sum, jnp.ones(3), mu=0.0), ValueError, "mu must be > 0"),
        (lambda: urv_gradient(KEY, jnp.sum, jnp.ones(3), step=0), ValueError, "step must be >= 1"),
        (lambda: urv_gradient(KEY, lambda z: z, jnp.ones(3)), ValueError, "fn must return a scalar"),
        (lambda: urv_gradient(jnp.ones(2), jnp.sum, jnp.ones(3)), TypeError, "key must be a PRNG key"),
        (lambda: urv_gradient(jnp.ones(3, jnp.uint32), jnp.sum, jnp.ones(3)), ValueError, "legacy key"),
    ],
)  # fmt: skip
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


_W = np.arange(8.0, dtype=np.float32).reshape(4, 2) / 8


def _numpy_model(x):
    return np.tanh(np.asarray(x) @ _W)


def _numpy_loss(v):
    return np.float32(np.sum(np.sin(np.asarray(v))))


def test_numpy_black_boxes_are_called_through_a_callback(rng):
    """The estimators are the option for black boxes: a NumPy model gives the numbers of the
    same model written in JAX (it raised a tracer conversion error before), eagerly and under
    jit (retracing and the rest: the numpy cases of tests/test_conformance.py)."""
    x = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    jax_model = lambda z: jnp.tanh(z @ _W)
    expected = numerical_gradient(jax_model, x)
    np.testing.assert_allclose(numerical_gradient(_numpy_model, x), expected, atol=5e-5)
    jitted = jax.jit(lambda z: numerical_gradient(_numpy_model, z))(x)
    np.testing.assert_allclose(jitted, expected, atol=5e-5)
    key = jax.random.key(3)
    got = urv_gradient(key, _numpy_loss, x[0], num_samples=64)
    want = urv_gradient(key, lambda v: jnp.sum(jnp.sin(v)), x[0], num_samples=64)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_urv_linear_function_scaling_is_exact():
    """For f(x) = a.x the estimate is (d/q) sum (a.u) u whatever mu: checks the d/(mu q) factor."""
    a = jnp.arange(1.0, 9.0)
    f = lambda v: v @ a
    x = jnp.zeros(8)
    small = urv_gradient(KEY, f, x, num_samples=64, mu=1e-2)
    large = urv_gradient(KEY, f, x, num_samples=64, mu=1.0)
    np.testing.assert_allclose(np.asarray(small), np.asarray(large), rtol=1e-3, atol=1e-3)


def test_urv_default_mu_follows_step():
    f = lambda v: jnp.sum(jnp.sin(v))
    x = jnp.linspace(-1, 1, 16)
    by_step = urv_gradient(KEY, f, x, num_samples=32, step=4)
    by_mu = urv_gradient(KEY, f, x, num_samples=32, mu=1 / np.sqrt(4) / np.sqrt(16))
    np.testing.assert_allclose(np.asarray(by_step), np.asarray(by_mu), rtol=1e-6)


def test_urv_unbiased_for_linear_functions():
    """Directions are isotropic: averaged over keys the estimate is the gradient."""
    a = jnp.array([1.0, -2.0, 0.5, 0.0, 3.0])
    keys = jax.random.split(KEY, 4000)
    est = jax.vmap(lambda k: urv_gradient(k, lambda v: v @ a, jnp.zeros(5), num_samples=5))(keys)
    np.testing.assert_allclose(np.asarray(est.mean(0)), np.asarray(a), atol=0.06)


def _mlp_loss(rng, d):
    w1 = jnp.asarray(rng.standard_normal((d, 32)) / np.sqrt(d), jnp.float32)
    w2 = jnp.asarray(rng.standard_normal((32, 4)) / np.sqrt(32), jnp.float32)
    return lambda v: -jax.nn.log_softmax(jnp.tanh(v @ w1) @ w2)[2]


def test_urv_converges_like_the_seed_loop(rng):
    d = 64
    loss = _mlp_loss(rng, d)
    x = jnp.asarray(rng.uniform(0, 1, d), jnp.float32)
    exact = np.asarray(jax.grad(loss)(x), np.float64)
    np_loss = lambda v: float(loss(jnp.asarray(v, jnp.float32)))
    seed = URVGradientEstimator(np_loss, x.size, num_iter=800, seed=0)(np.asarray(x, np.float64))
    ours = np.asarray(urv_gradient(KEY, loss, x, num_samples=800), np.float64)

    def rel_err(g):
        return np.linalg.norm(g - exact) / np.linalg.norm(exact)

    # Relative error of the estimator ~ sqrt(d/q) ~ 0.28 for both: same distribution.
    assert rel_err(seed) < 0.45
    assert rel_err(ours) < 0.45
    assert rel_err(ours) < 1.5 * rel_err(seed)
    big = np.asarray(urv_gradient(KEY, loss, x, num_samples=40_000, batch_size=3000))
    assert rel_err(big) < 0.07


def test_urv_chunks_cover_exactly_num_samples():
    """The last chunk's padding must not count: with chunks of 3, 9 samples fill 3 chunks and the
    10th starts a 4th; for f(x) = a.x, `10 g_10 - 9 g_9 = d (a.u) u` for that one direction u."""
    a = jnp.array([1.0, -2.0, 3.0, 0.5])
    f = lambda v: v @ a
    g9, g10 = (
        np.asarray(urv_gradient(KEY, f, jnp.zeros(4), num_samples=q, batch_size=3), np.float64)
        for q in (9, 10)
    )
    one = 10 * g10 - 9 * g9
    u = one / np.linalg.norm(one)
    np.testing.assert_allclose(one, 4 * (np.asarray(a) @ u) * u, rtol=1e-4, atol=1e-4)
