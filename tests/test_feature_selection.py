"""select_features against a NumPy/scikit-learn transcription of lime's feature selection.

lime is not a test dependency, so `_lime_reference` below does what `LimeBase.feature_selection`
does (lime 0.2): scikit-learn `Ridge` fits for highest_weights and forward selection, and
`lars_path(method="lasso")` on the weighted-centred data for lasso_path.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge, lars_path

from xai_jax.surrogates import (
    _lars_init,
    _lars_pass,
    _weighted_centred_moments,
    select_features,
)


def _lime_weights(X, width):
    """lime's exponential kernel on the Euclidean distance to row 0 (the explained instance)."""
    distance = np.sqrt(np.sum((X - X[0]) ** 2, axis=1))
    return np.exp(-(distance**2) / (2 * width**2))


def _problem(rng, design, n, d):
    if design == "gaussian":  # lime tabular: scaled samples around the instance
        X = rng.standard_normal((n, d))
        coef = rng.standard_normal(d) * (rng.uniform(size=d) < 0.6)
        y = X @ coef + 0.5 * np.sin(X[:, 0] * X[:, 1]) + 0.3 * rng.standard_normal(n)
        return X, y, _lime_weights(X, 0.75 * np.sqrt(d))
    if design == "mask":  # lime image/text: 0/1 masks, row 0 all ones, a model probability
        X = (rng.uniform(size=(n, d)) < rng.uniform(0.2, 0.9, (n, 1))).astype(np.float64)
        X[0] = 1.0
        y = 1 / (1 + np.exp(-(X @ rng.standard_normal(d) - 0.5)))
        return X, y, _lime_weights(X, 0.25 * np.sqrt(d))
    # Feature 2 follows features 0 and 1 but enters y with the opposite sign: it joins the lasso
    # path first, and its coefficient crosses zero later, where the path drops it.
    X = rng.standard_normal((n, d))
    X[:, 2] = 0.7 * (X[:, 0] + X[:, 1]) + 0.3 * X[:, 2]
    y = X[:, 0] + X[:, 1] - 0.5 * X[:, 2] + X[:, 3:] @ (0.2 * rng.standard_normal(d - 3))
    return X, y + 0.3 * rng.standard_normal(n), _lime_weights(X, 0.75 * np.sqrt(d))


def _batch(rng, designs, n, d):
    X, y, w = zip(*[_problem(rng, design, n, d) for design in designs], strict=True)
    return np.stack(X), np.stack(y), np.stack(w)


def _lars_knots(X, y, w):
    """scikit-learn's lasso path on lime's weighted-centred data: `[d, knots]`."""
    Xw = (X - np.average(X, axis=0, weights=w)) * np.sqrt(w)[:, None]
    yw = (y - np.average(y, weights=w)) * np.sqrt(w)
    with warnings.catch_warnings():
        # lars_path warns and stops early when round-off makes alpha grow; lime ignores it
        warnings.simplefilter("ignore", ConvergenceWarning)
        return lars_path(Xw, yw, method="lasso")[2]


def _lime_reference(X, y, w, k, method, *, exact_drops=False):
    """The features lime selects, as a mask (the `*_selection` logic of `lime.lime_base`).

    `exact_drops` zeroes the round-off residue scikit-learn can leave at the knot where a
    variable leaves the lasso path (lime would count it as nonzero; select_features does not).
    """
    d = X.shape[1]
    if method == "auto":
        method = "forward_selection" if k <= 6 else "highest_weights"
    if method == "none":
        chosen = list(range(d))
    elif method == "highest_weights":
        coef = Ridge(alpha=0.01).fit(X, y, sample_weight=w).coef_
        # Python's sort is stable: equal magnitudes keep the lower index first
        chosen = sorted(range(d), key=lambda j: abs(coef[j] * X[0, j]), reverse=True)[:k]
    elif method == "forward_selection":
        chosen = []
        for _ in range(k):
            best, best_score = 0, -1e8
            for j in range(d):
                if j in chosen:
                    continue
                cols = [*chosen, j]
                fit = Ridge(alpha=0.0).fit(X[:, cols], y, sample_weight=w)
                score = fit.score(X[:, cols], y, sample_weight=w)
                if score > best_score:
                    best, best_score = j, score
            chosen.append(best)
    else:
        coefs = _lars_knots(X, y, w)
        if exact_drops:
            coefs = np.where(np.abs(coefs) > 1e-12 * np.abs(coefs).max(), coefs, 0.0)
        chosen = list(range(d))  # a path without a step keeps every feature
        for knot in range(coefs.shape[1] - 1, 0, -1):
            chosen = np.flatnonzero(coefs[:, knot])
            if len(chosen) <= k:
                break
    mask = np.zeros(d, bool)
    mask[np.asarray(chosen, dtype=int)] = True
    return mask


@functools.partial(jax.jit, static_argnames=("num_features", "method"))
def select_batch(X, y, w, *, num_features, method):
    """select_features vmapped over problems; module-level so tests share its compilations."""
    select = functools.partial(select_features, num_features=num_features, method=method)
    return jax.vmap(select)(X, y, w)


def _drop_events(coefs):
    """How many times a variable with a nonzero coefficient is zero at the next knot."""
    nonzero = coefs != 0
    return int(np.sum(nonzero[:, :-1] & ~nonzero[:, 1:]))


# Each method on four problems (Gaussian and 0/1 mask designs) of three shapes; the
# num_features values differ per method and shape so that together they span the range.
# One compilation per row: (n, d, num_features).
CASES = {
    "highest_weights": [(200, 5, 2), (600, 12, 7), (1000, 20, 11)],
    "forward_selection": [(200, 5, 3), (600, 12, 6), (1000, 20, 4)],
    "lasso_path": [(200, 5, 1), (600, 12, 4), (1000, 20, 12)],
}


@pytest.mark.parametrize("method", list(CASES))
def test_matches_lime_reference(x64, rng, method):
    for n, d, k in CASES[method]:
        X, y, w = _batch(rng, ["gaussian", "mask", "gaussian", "mask"], n, d)
        got = np.asarray(select_batch(X, y, w, num_features=k, method=method))
        for i in range(len(X)):
            expected = _lime_reference(X[i], y[i], w[i], k, method)
            np.testing.assert_array_equal(got[i], expected, err_msg=f"{n=} {d=} {k=} {i=}")
            if method != "lasso_path":  # lasso_path may stop short of k
                assert got[i].sum() == k


@pytest.mark.parametrize(("k", "method"), [(3, "auto"), (7, "auto"), (4, "none")])
def test_auto_and_none(x64, rng, k, method):
    X, y, w = _problem(rng, "mask", 300, 8)
    got = np.asarray(select_features(X, y, w, num_features=k, method=method))
    np.testing.assert_array_equal(got, _lime_reference(X, y, w, k, method))


def test_lasso_path_knots_and_selection_through_drops(x64, rng):
    """Every knot of the path equals lars_path's, on problems where variables leave the path."""
    n, d, k = 1000, 20, 12
    X, y, w = _batch(rng, ["correlated"] * 4, n, d)
    step = jax.jit(lambda gram, xy, state: _lars_pass(gram, xy, n, k, state))
    drops = 0
    for i in range(len(X)):
        gram, xy, _ = _weighted_centred_moments(*(jnp.asarray(a[i]) for a in (X, y, w)))
        state, knots = _lars_init(xy), [np.zeros(d)]
        while not bool(state.done):
            before = int(state.n_iter)
            state = step(gram, xy, state)
            if int(state.n_iter) > before:
                knots.append(np.asarray(state.coef))
        expected = _lars_knots(X[i], y[i], w[i])
        # scikit-learn can leave a round-off residue where a variable leaves; ours is exactly 0
        expected = np.where(np.abs(expected) > 1e-12 * np.abs(expected).max(), expected, 0.0)
        np.testing.assert_allclose(np.transpose(knots), expected, rtol=1e-7, atol=1e-9)
        drops += _drop_events(expected)
    assert drops >= len(X)  # the lasso modification was exercised on every problem
    got = np.asarray(select_batch(X, y, w, num_features=k, method="lasso_path"))
    for i in range(len(X)):
        expected = _lime_reference(X[i], y[i], w[i], k, "lasso_path", exact_drops=True)
        np.testing.assert_array_equal(got[i], expected, err_msg=f"{i=}")


@pytest.mark.parametrize("method", list(CASES))
def test_jit_eager_vmap_agree_without_retracing(x64, rng, method):
    n, d, k = CASES[method][0]  # the shapes of test_matches_lime_reference: shared compilations
    X, y, w = _batch(rng, ["mask", "gaussian", "mask", "gaussian"], n, d)
    traces = []

    def select(a, b, c):
        traces.append(a.shape)
        return select_features(a, b, c, num_features=k, method=method)

    jitted = jax.jit(select)
    looped = np.stack([np.asarray(jitted(X[i], y[i], w[i])) for i in range(len(X))])
    assert len(traces) == 1  # same shapes and dtypes: traced and compiled once
    np.testing.assert_array_equal(np.asarray(select_batch(X, y, w, num_features=k, method=method)), looped)  # fmt: skip
    eager = select_features(X[0], y[0], w[0], num_features=k, method=method)
    assert eager.dtype == jnp.bool_ and eager.shape == (d,)
    np.testing.assert_array_equal(np.asarray(eager), looped[0])


@pytest.mark.parametrize("method", ["forward_selection", "lasso_path"])
def test_float32_singular_design_no_nan(rng, method):
    """Unpenalised fits on a design with a constant and a duplicated column (highest_weights'
    ridge penalty keeps its system regular)."""
    n, d = 300, 10
    X = (rng.uniform(size=(n, d)) < 0.5).astype(np.float32)
    X[0] = 1.0
    X[:, 2] = 1.0  # constant column: zero after centring
    X[:, 7] = X[:, 4]  # duplicated column: a singular Gram matrix
    y = 3 * X[:, 0] - 2 * X[:, 5] + X[:, 8] + 0.5 * X[:, 4] + 0.01 * rng.standard_normal(n)
    w = _lime_weights(X, 0.25 * np.sqrt(d)).astype(np.float32)
    with jax.debug_nans(True), jax.disable_jit():  # op by op: a NaN anywhere raises
        got = select_features(X, y.astype(np.float32), w, num_features=5, method=method)
    assert got.dtype == jnp.bool_
    chosen = set(np.flatnonzero(np.asarray(got)).tolist())
    assert {0, 5, 8} <= chosen and len(chosen & {4, 7}) == 1, chosen


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"method": "lasso"},
            ValueError,
            r"method='lasso' is not one of \('none', 'highest_weights', 'forward_selection', 'lasso_path', 'auto'\)",
        ),
        ({"num_features": 0}, ValueError, "num_features must be >= 1"),
        ({"num_features": 5}, ValueError, "num_features must be <= the number of features 4"),
        ({"num_features": 2.0}, TypeError, "num_features must be an int"),
        ({"X": np.ones(6)}, ValueError, "X must be 2-D"),
        ({"y": np.ones(5)}, ValueError, r"y must have shape \(6,\)"),
        ({"y": np.ones((6, 2))}, ValueError, r"y must have shape \(6,\)"),
        ({"sample_weight": np.ones(5)}, ValueError, r"sample_weight must have shape \(6,\)"),
        ({"sample_weight": -np.ones(6)}, ValueError, "sample_weight must be >= 0"),
        (
            {"sample_weight": np.zeros(6)},
            ValueError,
            "sample_weight must have at least one positive",
        ),
        ({"X": np.ones((6, 4)) * 1j}, TypeError, "X must be real"),
    ],
)
def test_bad_inputs_raise(kwargs, error, match):
    args = {"X": np.ones((6, 4)), "y": np.ones(6), "sample_weight": np.ones(6), "num_features": 2, "method": "auto"} | kwargs  # fmt: skip
    with pytest.raises(error, match=match):
        select_features(**args)
