"""pairwise_distances against scikit-learn, and its edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import pairwise_distances as sk_pairwise_distances

from xai_jax import pairwise_distances

SK_NAMES = {
    "euclidean": "euclidean",
    "l2": "euclidean",
    "sqeuclidean": "sqeuclidean",
    "cosine": "cosine",
    "manhattan": "manhattan",
    "l1": "manhattan",
    "cityblock": "manhattan",
}


def _data(rng, n, d, offset=0.0):
    return (rng.standard_normal((n, d)) + offset).astype(np.float32)


@pytest.mark.parametrize("metric", list(SK_NAMES))
@pytest.mark.parametrize("same", [False, True])
def test_matches_sklearn_float32(rng, metric, same):
    x = _data(rng, 37, 29)
    y = None if same else _data(rng, 23, 29)
    expected = sk_pairwise_distances(
        x.astype(np.float64), None if same else y.astype(np.float64), metric=SK_NAMES[metric]
    )
    got = np.asarray(pairwise_distances(x, y, metric=metric))
    assert got.dtype == np.float32
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("metric", list(SK_NAMES))
def test_matches_sklearn_float64(x64, rng, metric):
    x = rng.standard_normal((31, 17))
    y = rng.standard_normal((13, 17))
    got = pairwise_distances(x, y, metric=metric)
    assert got.dtype == jnp.float64
    expected = sk_pairwise_distances(x, y, metric=SK_NAMES[metric])
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)


def test_offset_data_keeps_precision(rng):
    # Pixel-like data far from the origin: centring keeps float32 accurate.
    x = _data(rng, 50, 784, offset=100.0)
    y = _data(rng, 40, 784, offset=100.0)
    expected = sk_pairwise_distances(x.astype(np.float64), y.astype(np.float64))
    got = np.asarray(pairwise_distances(x, y))
    assert np.abs(got - expected).max() <= 1e-4 * expected.max()


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "manhattan"])
@pytest.mark.parametrize("d", [1, 3, 64, 784, 3000])
@pytest.mark.parametrize("offset", [0.0, 0.5, 1e3])
def test_identical_rows_are_exactly_zero(rng, metric, d, offset):
    x = _data(rng, 40, d, offset)
    y = np.concatenate([x[::-1], _data(rng, 5, d, offset)])  # rows of x in another order
    out = np.asarray(jax.jit(pairwise_distances, static_argnames="metric")(x, y, metric=metric))
    assert (out[np.arange(40), 39 - np.arange(40)] == 0).all()
    assert (out >= 0).all()


def test_near_duplicates_still_separate(rng):
    x = _data(rng, 1, 784)
    y = x + np.float32(0.05) * _data(rng, 1, 784)  # true distance ~1.4, norms ~28
    got = float(pairwise_distances(x, y)[0, 0])
    expected = float(np.linalg.norm(x.astype(np.float64) - y.astype(np.float64)))
    assert abs(got - expected) <= 1e-4 * np.linalg.norm(x)


@pytest.mark.parametrize("same", [False, True])
def test_cosine_zero_vectors_as_sklearn(rng, same):
    x = _data(rng, 6, 5)
    x[[1, 4]] = 0
    y = None if same else np.concatenate([_data(rng, 3, 5), np.zeros((1, 5), np.float32)])
    expected = sk_pairwise_distances(x, y, metric="cosine")
    got = np.asarray(pairwise_distances(x, y, metric="cosine"))
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("metric", list(SK_NAMES))
def test_gradients_finite_at_zero_distance_and_zero_vectors(metric):
    x = jnp.array([[0.0, 0.0], [1.0, 2.0], [1.0, 2.0]])

    def total(a):
        return pairwise_distances(a, x, metric=metric).sum()

    g = jax.grad(total)(x)
    assert jnp.isfinite(g).all()
    g_self = jax.grad(lambda a: pairwise_distances(a, metric=metric).sum())(x)
    assert jnp.isfinite(g_self).all()


def test_gradient_matches_analytic_away_from_zero(rng):
    x = jnp.asarray(_data(rng, 3, 4))
    y = jnp.asarray(_data(rng, 2, 4))
    g = jax.grad(lambda a: pairwise_distances(a, y).sum())(x)
    diff = x[:, None, :] - y[None, :, :]
    expected = (diff / jnp.linalg.norm(diff, axis=-1, keepdims=True)).sum(1)
    np.testing.assert_allclose(np.asarray(g), np.asarray(expected), rtol=1e-4, atol=1e-5)


def test_integer_input_is_promoted():
    out = pairwise_distances(np.array([[0, 0], [3, 4]]))
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), [[0, 5], [5, 0]])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": np.ones((2, 3)), "metric": "minkowski"}, ValueError, r"metric='minkowski'.*euclid"),
        ({"x": np.ones((2, 3)), "y": np.ones((2, 4))}, ValueError, "same number of features"),
        ({"x": np.ones(3)}, ValueError, "x must be 2-D"),
        ({"x": np.ones((2, 3)), "y": np.ones((1, 2, 3))}, ValueError, "y must be 2-D"),
        ({"x": np.ones((2, 3)) * 1j}, TypeError, "x must be real"),
    ],
)
def test_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        pairwise_distances(**kwargs)


finite = st.floats(-1e3, 1e3, width=32)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(3, 6), st.integers(1, 8)), elements=finite))
@example(np.array([[0.0], [1.0], [769.0]], np.float32))
def test_metric_axioms(x):
    for metric in ("euclidean", "manhattan"):
        d = np.asarray(pairwise_distances(x, metric=metric), np.float64)
        # The documented resolution: squared euclidean distances are exact to 64 ulps of
        # |x - c|^2 + |y - c|^2 (and snapped to 0 below that), so a distance is good to
        # sqrt(64 eps * 2 R^2) ~ 4e-3 R with R the largest |x - c| <= 2 sqrt(d) max|x|.
        # (x = [[0], [1], [769]] puts d(0, 1) at that limit: it is snapped to 0.)
        spread = np.abs(x - x.mean(0)).max() * np.sqrt(x.shape[1])
        tol = 1e-3 * (1 + np.abs(x).max()) * np.sqrt(x.shape[1]) + 4e-3 * spread
        assert (d >= 0).all()
        assert (np.diag(d) == 0).all()
        np.testing.assert_allclose(d, d.T, atol=tol)
        # triangle inequality d(i, k) <= d(i, j) + d(j, k)
        assert (d[:, None, :] <= d[:, :, None] + d[None, :, :] + tol).all()
