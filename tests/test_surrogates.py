"""weighted_ridge against scikit-learn's Ridge and r2_score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from xai_jax import RidgeFit, weighted_ridge


def _problem(rng, n=200, d=6, k=None, dtype=np.float64):
    X = rng.standard_normal((n, d))
    coef = rng.standard_normal((d,) if k is None else (d, k))
    y = X @ coef + 0.3 * rng.standard_normal((n,) if k is None else (n, k)) + 1.5
    w = np.exp(-rng.uniform(0, 3, n))  # lime-like kernel weights
    return X.astype(dtype), y.astype(dtype), w.astype(dtype)


@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("alpha", [1.0, 0.01, 0.0])
def test_matches_sklearn_ridge(x64, rng, k, fit_intercept, alpha):
    X, y, w = _problem(rng, k=k)
    ref = Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X, y, sample_weight=w)
    fit = weighted_ridge(X, y, w, alpha=alpha, fit_intercept=fit_intercept)
    assert isinstance(fit, RidgeFit)
    np.testing.assert_allclose(np.asarray(fit.coef), ref.coef_, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.asarray(fit.intercept), ref.intercept_, rtol=1e-9, atol=1e-10)
    expected_score = r2_score(y, ref.predict(X), sample_weight=w, multioutput="raw_values")
    np.testing.assert_allclose(np.asarray(fit.score), expected_score.squeeze(), rtol=1e-9)
    if k is not None:  # sklearn's Ridge.score averages the outputs
        np.testing.assert_allclose(float(fit.score.mean()), ref.score(X, y, sample_weight=w))


def test_float32_close_to_sklearn(rng):
    X, y, w = _problem(rng, n=5000, d=20, dtype=np.float32)
    ref = Ridge(alpha=1.0).fit(X.astype(np.float64), y.astype(np.float64), sample_weight=w)
    fit = weighted_ridge(X, y, w)
    assert fit.coef.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(fit.coef), ref.coef_, atol=1e-4)
    np.testing.assert_allclose(float(fit.intercept), ref.intercept_, atol=1e-4)


def test_singular_system_gives_sklearns_minimum_norm_solution(x64, rng):
    X, y, w = _problem(rng, n=50, d=3)
    X = np.concatenate([X, X[:, :1]], axis=1)  # duplicated column: X'WX is singular
    ref = Ridge(alpha=0.0).fit(X, y, sample_weight=w)
    fit = weighted_ridge(X, y, w, alpha=0.0)
    np.testing.assert_allclose(np.asarray(fit.coef), ref.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(float(fit.coef[0]), float(fit.coef[3]), rtol=1e-8)


def test_traced_alpha_and_vmap_over_problems(rng):
    X, y, w = (
        np.stack(a) for a in zip(*[_problem(rng, dtype=np.float32) for _ in range(3)], strict=True)
    )
    fits = jax.jit(jax.vmap(lambda a, b, c, alpha: weighted_ridge(a, b, c, alpha=alpha)))(
        X, y, w, jnp.full(3, 1.0)
    )
    for i in range(3):
        ref = Ridge(alpha=1.0).fit(X[i], y[i], sample_weight=w[i])
        np.testing.assert_allclose(np.asarray(fits.coef[i]), ref.coef_, atol=1e-4)


def test_score_of_constant_targets_follows_r2_score():
    X = jnp.arange(8.0).reshape(4, 2)
    perfect = weighted_ridge(X, jnp.ones(4), alpha=1.0)
    assert float(perfect.score) == 1.0  # y constant and fitted exactly
    unweighted = weighted_ridge(X, jnp.arange(4.0), jnp.array([1.0, 0.0, 0.0, 0.0]))
    assert float(unweighted.score) == pytest.approx(1.0)  # one weighted point: constant target


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: weighted_ridge(jnp.ones(3), jnp.ones(3)), ValueError, "X must be 2-D"),
        (lambda: weighted_ridge(jnp.ones((3, 2)), jnp.ones(4)), ValueError, "y must be"),
        (lambda: weighted_ridge(jnp.ones((3, 2)), jnp.ones((3, 2, 2))), ValueError, "y must be"),
        (lambda: weighted_ridge(jnp.ones((3, 2)), jnp.ones(3), jnp.ones(2)), ValueError, r"sample_weight must have shape \(3,\)"),
        (lambda: weighted_ridge(jnp.ones((3, 2)), jnp.ones(3), -jnp.ones(3)), ValueError, "sample_weight must be >= 0"),
        (lambda: weighted_ridge(jnp.ones((3, 2)), jnp.ones(3), jnp.zeros(3)), ValueError, "at least one positive"),
        (lambda: weighted_ridge(jnp.ones((3, 2)), jnp.ones(3), alpha=-1.0), ValueError, "alpha must be >= 0"),
        (lambda: weighted_ridge(jnp.ones((3, 2)), jnp.ones(3), fit_intercept="False"), TypeError, "fit_intercept must be a bool, got str 'False'"),
    ],
)  # fmt: skip
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
