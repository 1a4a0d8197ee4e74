"""LIME, KernelSHAP and LimeBase: lime/shap parity, recovered linear models, exact Shapley
values, non-JAX black boxes, batching, and errors. jit/vmap/determinism/no-retrace are in
test_conformance.py."""

import itertools
import math
import sys
import warnings
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.tree import DecisionTreeRegressor

from xai_jax import (
    LimeBase,
    bernoulli_perturbation,
    exponential_kernel,
    kernel_shap,
    lime,
)
from xai_jax.lime import fit_surrogate, select

FIXTURES = Path(__file__).parent / "fixtures"
MODES = ("none", "highest_weights", "forward_selection", "lasso_path", "auto")


# --------------------------------------------------------------------------------------------
# Surrogate parity with lime (fixtures from tests/fixtures/make_lime_fixtures.py)


@pytest.fixture(scope="module")
def lime_fixture():
    return dict(np.load(FIXTURES / "lime_surrogates.npz"))


@pytest.mark.parametrize(
    ("case", "mode", "k"), list(itertools.product(("gauss", "masks"), MODES, (3, 5)))
)
def test_surrogate_matches_lime(x64, lime_fixture, case, mode, k):
    f = lime_fixture
    Z, y = jnp.asarray(f[f"{case}_data"]), jnp.asarray(f[f"{case}_labels"][:, 1])
    weights = exponential_kernel(jnp.asarray(f[f"{case}_distances"]), float(f[f"{case}_width"]))
    keep = select(Z, y, weights, num_features=k, feature_selection=mode)
    res = jax.jit(partial(fit_surrogate, alpha=1.0))(Z, y, weights, keep)
    key = f"{case}_{mode}_{k}"
    np.testing.assert_array_equal(np.asarray(keep), f[f"{key}_coef"] != 0)
    np.testing.assert_allclose(res.coef, f[f"{key}_coef"], rtol=1e-9, atol=1e-12)
    for name in ("intercept", "score", "local_pred"):
        np.testing.assert_allclose(getattr(res, name), f[f"{key}_{name}"], rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# LIME on models with known answers


@settings(max_examples=10, deadline=None)
@given(
    w=st.lists(st.floats(-3, 3), min_size=4, max_size=4),
    c=st.floats(-5, 5),
    seed=st.integers(0, 2**31 - 1),
)
@example(w=[0.0, 0.0, 0.0, 0.0], c=3.0, seed=0)
def test_lime_recovers_a_linear_model(w, c, seed):
    w = jnp.asarray(w, jnp.float32)
    x = jax.random.normal(jax.random.key(seed), (3, 4))
    res = lime(jax.random.key(seed), lambda z: z @ w + c, x, num_samples=2000)
    # ridge(alpha=1) on ~1e3 effective samples shrinks by ~1e-3 relative; no sampling noise
    np.testing.assert_allclose(res.coef, jnp.broadcast_to(w, (3, 4)), rtol=5e-3, atol=5e-3)
    np.testing.assert_allclose(res.intercept, jnp.full(3, c), rtol=5e-3, atol=2e-2)
    np.testing.assert_allclose(res.local_pred, x @ w + c, rtol=1e-3, atol=1e-2)
    if float(jnp.max(jnp.abs(w))) > 1e-3:  # R^2 of a constant model is 1 or 0 by round-off
        assert np.all(np.asarray(res.score) > 0.999)


def test_lime_coefficients_are_per_scale_unit_around_the_mean():
    w = jnp.array([1.0, -2.0, 0.5])
    mean, scale = jnp.array([1.0, 2.0, 3.0]), jnp.array([0.5, 2.0, 0.0])
    x = jnp.array([[0.0, 1.0, 3.0], [2.0, 2.0, 3.0]])
    res = lime(jax.random.key(0), lambda z: z @ w, x, mean=mean, scale=scale, alpha=0.0)
    # lime's scaled space (z - mean) / scale; a zero scale is treated as 1 and never varies
    np.testing.assert_allclose(res.coef[:, :2], jnp.tile(w[:2] * scale[:2], (2, 1)), rtol=1e-4)
    np.testing.assert_allclose(res.coef[:, 2], jnp.zeros(2), atol=1e-5)
    np.testing.assert_allclose(res.intercept, jnp.full(2, mean @ w), rtol=1e-4)
    np.testing.assert_allclose(res.local_pred, x @ w, rtol=1e-4, atol=1e-4)


def test_lime_bernoulli_fits_on_masks_and_segments():
    w = jnp.array([1.0, -2.0, 0.5, 3.0])
    x = jnp.array([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 2.0, 1.0]])
    f = lambda z: z @ w
    res = lime(jax.random.key(0), f, x, num_samples=500, perturbation="bernoulli", alpha=0.0)
    np.testing.assert_allclose(res.coef, x * w[None], rtol=1e-4, atol=1e-4)  # f(mask) is linear
    np.testing.assert_allclose(res.score, jnp.ones(2), rtol=1e-5)
    per_row = jnp.array([[0, 0, 1, 1], [1, 0, 0, 1]])
    res = lime(jax.random.key(0), f, x, num_samples=500, perturbation="bernoulli", alpha=0.0,
               segments=per_row, baseline=1.0)  # fmt: skip
    contrib = (x - 1.0) * w[None]
    expected = jnp.stack([contrib[0, :2].sum(), contrib[0, 2:].sum()])
    np.testing.assert_allclose(res.coef[0], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        res.coef[1], jnp.stack([contrib[1, 1:3].sum(), contrib[1, [0, 3]].sum()]), rtol=1e-4
    )


def test_lime_feature_selection_keeps_the_strong_features():
    w = jnp.array([3.0, 0.0, -2.0, 0.01, 0.0, 0.02])
    x = jnp.ones((2, 6))
    for mode in MODES[1:]:
        res = lime(jax.random.key(1), lambda z: z @ w, x, num_features=2, feature_selection=mode)
        assert (np.asarray(res.coef) != 0).sum(axis=1).tolist() == [2, 2], mode
        np.testing.assert_allclose(res.coef[:, [0, 2]], jnp.tile(w[jnp.array([0, 2])], (2, 1)),
                                   rtol=1e-2)  # fmt: skip


def test_lime_result_does_not_depend_on_batching():
    x = jax.random.normal(jax.random.key(3), (5, 4))
    f = lambda z: jnp.tanh(z).sum(1)
    whole = lime(jax.random.key(0), f, x, num_samples=300)
    for batch_size in (1, 2, 5):
        parts = lime(jax.random.key(0), f, x, num_samples=300, batch_size=batch_size)
        for a, b in zip(whole, parts, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # other fusions
    one = lime(jax.random.key(0), f, x[2:3], num_samples=300)
    assert not np.allclose(one.coef[0], whole.coef[2])  # row i's key is split(key, n)[i]


def test_lime_eager_calls_compile_once():
    traces = []

    def f(z):
        traces.append(z.shape)
        return jnp.tanh(z).sum(1)

    x = jnp.ones((7, 3))
    lime(jax.random.key(0), f, x, num_samples=100, batch_size=3)
    after_first = len(traces)
    lime(jax.random.key(1), f, x + 1, num_samples=100, batch_size=3)
    assert len(traces) == after_first


def test_lime_is_differentiable_inside_jit():
    x = jax.random.normal(jax.random.key(0), (2, 3))

    def loss(w):
        return jnp.sum(lime(jax.random.key(0), lambda z: jnp.tanh(z @ w), x, num_samples=200).coef)

    w = jnp.array([0.5, -1.0, 2.0])
    grad = jax.jit(jax.grad(loss))(w)
    eps = 1e-2
    fd = [(loss(w.at[i].add(eps)) - loss(w.at[i].add(-eps))) / (2 * eps) for i in range(3)]
    np.testing.assert_allclose(grad, jnp.stack(fd), rtol=2e-2, atol=2e-3)


# --------------------------------------------------------------------------------------------
# Non-JAX black boxes and scikit-learn regressors


@pytest.fixture(scope="module")
def classifier():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 5)).astype(np.float32)
    clf = LogisticRegression().fit(X, (X[:, 0] + 2 * X[:, 1] > 0).astype(int))

    def jax_proba(z):  # the same model in JAX
        p = jax.nn.sigmoid(z @ jnp.asarray(clf.coef_[0], z.dtype) + float(clf.intercept_[0]))
        return jnp.stack([1 - p, p], axis=1)

    return clf, jax_proba, X


def test_lime_and_kernel_shap_call_numpy_black_boxes(classifier):
    clf, jax_proba, X = classifier
    for method in (
        partial(lime, num_samples=400, target=1),
        partial(lime, num_samples=400, target=jnp.array([0, 1, 1]), perturbation="bernoulli"),
        partial(kernel_shap, background=X[:10], num_samples=20, target=1),
    ):
        ours = method(jax.random.key(0), clf.predict_proba, X[:3])
        reference = method(jax.random.key(0), jax_proba, X[:3])
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    under_jit = jax.jit(lambda x: lime(jax.random.key(0), clf.predict_proba, x, target=1))(X[:2])
    np.testing.assert_allclose(
        under_jit.coef, lime(jax.random.key(0), jax_proba, X[:2], target=1).coef, rtol=1e-4
    )


def test_black_box_with_the_wrong_output_shape_is_reported(classifier):
    X = classifier[2]
    with pytest.raises(ValueError, match="one output row per input row"):
        lime(jax.random.key(0), lambda z: np.zeros(3), X[:2], num_samples=10)
    with pytest.raises(ValueError, match="one output row per input row"):
        lime(jax.random.key(0), lambda z: z[:-1].sum(1), X[:2], num_samples=10)
    calls = []

    def drifting(z):  # a NumPy black box: right shape when probed, wrong afterwards
        z = np.asarray(z)
        calls.append(1)
        return np.zeros(len(z) if len(calls) == 1 else 1)

    with pytest.raises(Exception, match="fn returned shape"):
        jax.block_until_ready(lime(jax.random.key(0), drifting, X[:2], num_samples=10))


def test_scikit_learn_regressor_matches_the_jax_ridge(x64, classifier):
    _, jax_proba, X = classifier
    x = jnp.asarray(X[:3], jnp.float64)
    for options in ({}, {"num_features": 2, "feature_selection": "highest_weights"}):
        ours = lime(jax.random.key(0), jax_proba, x, num_samples=300, target=1, **options)
        sk = lime(jax.random.key(0), jax_proba, x, num_samples=300, target=1,
                  regressor=Ridge(alpha=1.0), **options)  # fmt: skip
        for a, b in zip(ours, sk, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="outside jit"):
        jax.jit(lambda v: lime(jax.random.key(0), jax_proba, v, target=1, regressor=Ridge()))(x)


# --------------------------------------------------------------------------------------------
# KernelSHAP


def _brute_force_shapley(f, x, background):
    """Shapley values of v(S) = mean_b f(x_S, b_rest), by enumerating every coalition."""
    d = x.shape[0]
    masks = jnp.asarray(list(itertools.product([False, True], repeat=d)))
    inputs = jnp.where(masks[:, None, :], x[None, None], background[None])
    values = np.asarray(f(inputs.reshape(-1, d)).reshape(len(masks), -1).mean(1))
    index = {tuple(m): i for i, m in enumerate(np.asarray(masks).tolist())}
    phi = np.zeros(d)
    for m in np.asarray(masks).tolist():
        s = sum(m)
        for j in range(d):
            if not m[j]:
                weight = math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d)
                with_j = tuple(True if i == j else v for i, v in enumerate(m))
                phi[j] += weight * (values[index[with_j]] - values[index[tuple(m)]])
    return phi


@pytest.mark.parametrize("d", [2, 5, 8])
def test_kernel_shap_is_exact_with_a_full_budget(x64, d):
    key = jax.random.key(d)
    w1, w2, x, bg = (jax.random.normal(k, s) for k, s in zip(
        jax.random.split(key, 4), [(d, 7), (7, 2), (3, d), (6, d)], strict=True))  # fmt: skip
    f = lambda z: jax.nn.softmax(jnp.tanh(z @ w1) @ w2)
    phi = kernel_shap(jax.random.key(0), f, x, bg, num_samples=2**d, target=1)
    for i in range(3):
        exact = _brute_force_shapley(lambda z: f(z)[:, 1], x[i], bg)
        np.testing.assert_allclose(phi[i], exact, rtol=1e-9, atol=1e-12)


def test_kernel_shap_matches_shap_and_exact_values():
    fx = dict(np.load(FIXTURES / "shap_kernel.npz"))
    w1, b1, w2, b2 = (jnp.asarray(fx[k], jnp.float32) for k in ("w1", "b1", "w2", "b2"))
    f = lambda z: jax.nn.softmax(jnp.tanh(z @ w1 + b1[None]) @ w2 + b2[None])
    x, bg = jnp.asarray(fx["x"], jnp.float32), jnp.asarray(fx["background"], jnp.float32)
    phi = np.asarray(kernel_shap(jax.random.key(0), f, x, bg, target=1), np.float64)
    exact, theirs = fx["exact"], fx["shap"]

    def rel(a):
        return np.linalg.norm(a - exact, axis=1) / np.linalg.norm(exact, axis=1)

    # shap is 0.6-1% off the exact values with 2048 samples; we sample the same way
    assert rel(theirs).max() < 0.015
    assert rel(phi).max() < 0.03
    np.testing.assert_allclose(phi, theirs, atol=0.05 * np.abs(exact).max())
    # efficiency: sum(phi) = f(x) - E f(background), to float32 round-off
    total = np.asarray(f(x)[:, 1] - f(bg)[:, 1].mean(), np.float64)
    np.testing.assert_allclose(phi.sum(1), total, atol=1e-6)


def test_kernel_shap_splits_many_background_rows_into_pieces(monkeypatch):
    shap_module = sys.modules["xai_jax.kernel_shap"]  # `xai_jax.kernel_shap` is the function

    x, bg = (
        jax.random.normal(jax.random.key(0), (2, 6)),
        jax.random.normal(jax.random.key(1), (9, 6)),
    )
    f = lambda z: jnp.tanh(z).prod(1)
    whole = kernel_shap(jax.random.key(0), f, x, bg, num_samples=40)
    monkeypatch.setattr(shap_module, "_MAX_ROWS_PER_CALL", 50)  # 5 coalitions per model call
    pieces = kernel_shap(jax.random.key(0), f, x, bg, num_samples=40)
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-7)


def test_kernel_shap_single_feature_is_the_total():
    f = lambda z: 3 * z[:, 0] ** 2
    phi = kernel_shap(jax.random.key(0), f, jnp.array([[2.0]]), jnp.array([[0.0], [1.0]]))
    np.testing.assert_allclose(phi, jnp.array([[12.0 - 1.5]]))


# --------------------------------------------------------------------------------------------
# LimeBase (explainax's interface)


def test_limebase_matches_lime_and_fits_every_output():
    w = jnp.array([[1.0, 0.0], [-2.0, 1.0], [0.5, 3.0]])
    f = lambda x, shift: x @ w + shift
    X = jax.random.normal(jax.random.key(0), (4, 3))
    coefs, preds = LimeBase(f, {"shift": 1.0}).attribute(X, key=jax.random.key(2))
    assert coefs.shape == (4, 2, 3) and preds.shape == (4, 2)
    for t in (0, 1):
        ref = lime(jax.random.key(2), lambda z, t=t: f(z, 1.0)[:, t], X)
        np.testing.assert_allclose(coefs[:, t], ref.coef, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(preds[:, t], ref.local_pred, rtol=1e-5, atol=1e-6)


def test_limebase_custom_perturbation_kernel_and_regressor():
    w = jnp.array([1.0, -2.0, 0.5])
    X = jnp.array([[1.0, 2.0, 3.0]])
    masks_and_samples = partial(bernoulli_perturbation, baseline=0.0)
    explainer = LimeBase(
        lambda x: x @ w,
        model_regressor=Ridge(alpha=1e-9),
        kernel_func=lambda d, kernel_width: jnp.ones_like(d),
        perturb_func=lambda key, x, n: masks_and_samples(key, x, n),
        pairwise_distances_metric="cosine",
    )
    coefs, preds = explainer.attribute(X, num_samples=200)
    np.testing.assert_allclose(coefs, X * w[None], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(preds, (X @ w)[:, None], rtol=1e-5)


def test_limebase_accepts_explainax_misspellings_with_a_warning():
    f = lambda X: X.sum(1)
    with pytest.warns(DeprecationWarning, match="kernal_func"):
        a = LimeBase(f, kernal_func=exponential_kernel)
    with pytest.warns(DeprecationWarning, match="input_paramter_name"):
        b = LimeBase(f, input_paramter_name="X")
    assert a.kernel_func is exponential_kernel and b.input_parameter_name == "X"
    np.testing.assert_allclose(b.attribute(jnp.ones((1, 2)))[0], jnp.ones((1, 2)), rtol=1e-3)
    with pytest.raises(TypeError, match="not both"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        LimeBase(f, kernel_func=exponential_kernel, kernal_func=exponential_kernel)


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")
def test_seed_haiku_optax_example_runs_verbatim():
    """seed 004's regression example, with only the import changed.

    The seed relies on NumPy rank promotion (`pred [N, 1] - y [N]`) and float64 data, which the
    strict test settings reject: both are allowed here as in a user's session.
    """
    import haiku as hk
    import jax.random as jrand
    import optax
    from sklearn.datasets import make_regression

    from xai_jax import LimeBase as XaiLimeBase

    LimeBase = XaiLimeBase
    np.random.seed(0)  # noqa: NPY002  (make_regression draws from the global generator)
    xs, ys = make_regression(n_samples=500, n_features=20)

    def model(x):
        mlp = hk.Sequential(
            [
                hk.Linear(10),
                jax.nn.relu,
                hk.Linear(10),
                jax.nn.relu,
                hk.Linear(1),
            ]
        )
        return mlp(x)

    def init(x):
        net = hk.without_apply_rng(hk.transform(model))
        opt = optax.sgd(1e-1)
        params = net.init(jrand.PRNGKey(42), x)
        opt_state = opt.init(params)
        return net, opt, params, opt_state

    def loss(params, net, x, y):
        pred = net.apply(params, x)
        return jnp.mean((pred - y) ** 2)

    @partial(jax.jit, static_argnums=(2, 3))
    def update(params, opt_state, net, opt, x, y):
        grads = jax.grad(loss)(params, net, x, y)
        updates, opt_state = opt.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
        return params, opt_state

    def train(net, opt, params, opt_state, x, y, n_epochs=100, batch_size=32):
        n_samples = x.shape[0]
        for _ in range(n_epochs):
            for i in range(0, n_samples, batch_size):
                x_batch = x[i : i + batch_size]
                y_batch = y[i : i + batch_size]
                params, opt_state = update(params, opt_state, net, opt, x_batch, y_batch)
        return params

    def fit_a_model(X, y):
        net, opt, params, opt_state = init(X)
        params = train(net, opt, params, opt_state, X, y)
        return net, params

    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        net, params = fit_a_model(xs, ys)
    lime = LimeBase(
        func=net.apply,
        additional_func_args={"params": params},
    )
    X = xs
    coefs, preds = lime.attribute(X)
    assert coefs.shape == (500, 20) and preds.shape == (500, 1)


# --------------------------------------------------------------------------------------------
# Bad input

K = jax.random.key(0)
_x = jnp.ones((2, 4))
_f = lambda z: z.sum(1)
_vec = lambda z: jnp.stack([z.sum(1), -z.sum(1)], axis=1)
_seg = jnp.array([0, 0, 1, 1])

BAD = [
    (lambda: lime(K, _f, jnp.ones(4)), ValueError, "x must be 2-D"),
    (lambda: lime(K, _f, _x, perturbation="uniform"), ValueError, "perturbation='uniform' is not one of"),
    (lambda: lime(K, _f, _x, feature_selection="lars"), ValueError, "feature_selection='lars' is not one of"),
    (lambda: lime(K, _f, _x, num_features=5), ValueError, "num_features=5 exceeds the 4 features"),
    (lambda: lime(K, _f, _x, num_features=0), ValueError, "num_features must be >= 1"),
    (lambda: lime(K, _f, _x, distance_metric="chebyshev"), ValueError, "distance_metric='chebyshev' is not one of"),
    (lambda: lime(K, _f, _x, kernel_width=0.0), ValueError, "kernel_width must be > 0"),
    (lambda: lime(K, _f, _x, num_samples=0), ValueError, "num_samples must be >= 1"),
    (lambda: lime(K, _f, _x, alpha=-1.0), ValueError, "alpha must be >= 0"),
    (lambda: lime(K, _f, _x, scale=jnp.ones(3)), ValueError, "scale must be a scalar or one value per feature"),
    (lambda: lime(K, _f, _x, scale=-1.0), ValueError, "scale must be >= 0"),
    (lambda: lime(K, _f, _x, mean=jnp.ones(3)), ValueError, "mean must be a scalar or one value per feature"),
    (lambda: lime(K, _f, _x, segments=_seg), ValueError, "segments is only used with perturbation='bernoulli'"),
    (lambda: lime(K, _f, _x, perturbation="bernoulli", mean=jnp.ones(4)), ValueError, "mean is only used"),
    (lambda: lime(K, _f, _x, perturbation="bernoulli", segments=jnp.zeros(3, int)), ValueError, r"segments must have shape \(4,\) or \(2, 4\)"),
    (lambda: lime(K, _f, _x, perturbation="bernoulli", segments=jnp.zeros(4)), TypeError, "segments must hold integer feature ids"),
    (lambda: lime(K, _f, _x, perturbation="bernoulli", segments=_seg - 1), ValueError, "segments ids must be >= 0"),
    (lambda: lime(K, _f, _x, perturbation="bernoulli", segments=_seg, num_features=3), ValueError, "num_features=3 exceeds the 2 features"),
    (lambda: lime(K, _f, _x, perturbation="bernoulli", num_segments=2), ValueError, "num_segments is only used with segments"),
    (lambda: lime(K, _vec, _x), ValueError, "target is required"),
    (lambda: lime(K, _vec, _x, target=2), ValueError, "target out of range"),
    (lambda: lime(K, _f, _x, target=0), ValueError, "target must be None"),
    (lambda: lime(K, _f, _x, regressor=object()), TypeError, "regressor must be a scikit-learn regressor"),
    (lambda: lime(K, _f, _x, num_samples=16, regressor=DecisionTreeRegressor()), TypeError, "regressor must be a linear model: .* DecisionTreeRegressor"),
    (lambda: lime(K, "model", _x), TypeError, "fn must be callable"),
    (lambda: lime(0, _f, _x), TypeError, "key must be a PRNG key"),
    (lambda: kernel_shap(K, _f, jnp.ones(4), _x), ValueError, "x must be 2-D"),
    (lambda: kernel_shap(K, _f, _x, jnp.ones(4)), ValueError, "background must be 2-D"),
    (lambda: kernel_shap(K, _f, _x, jnp.ones((3, 5))), ValueError, "background must have the 4 features"),
    (lambda: kernel_shap(K, _f, _x, _x, num_samples=0), ValueError, "num_samples must be >= 1"),
    (lambda: kernel_shap(K, _vec, _x, _x), ValueError, "target is required"),
    (lambda: kernel_shap(K, lambda z: z[:1].sum(1), _x, _x), ValueError, "one output row per input row"),
    (lambda: LimeBase(_f, pairwise_distances_metric="hamming"), ValueError, "pairwise_distances_metric='hamming' is not one of"),
    (lambda: LimeBase(_f, kernel_width=-1.0), ValueError, "kernel_width must be > 0"),
    (lambda: LimeBase(_f, model_regressor="ridge"), TypeError, "model_regressor must be a scikit-learn regressor"),
    (lambda: LimeBase("f"), TypeError, "func must be a JAX callable"),
    (lambda: LimeBase(_f).attribute(jnp.ones(3)), ValueError, "X must be 2-D"),
    (lambda: LimeBase(_f).attribute(_x, num_samples=0), ValueError, "num_samples must be >= 1"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "match"), BAD, ids=[m for _, _, m in BAD])
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_traced_out_of_range_target_gives_nan_not_a_clamped_answer():
    explain = jax.jit(lambda t: lime(K, _vec, _x, num_samples=50, target=t).coef)
    out = np.asarray(explain(jnp.array([1, 2])))
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_features": 1}, "num_features=1 needs a feature_selection other than 'none'"),
        ({"num_segments": 2}, "num_segments is only used with perturbation='bernoulli'"),
        ({"baseline": 0.5}, "baseline is only used with perturbation='bernoulli'"),
        ({"baseline": jnp.zeros(4)}, "baseline is only used with perturbation='bernoulli'"),
        ({"perturbation": "bernoulli", "scale": 2.0}, "scale is only used with perturbation='g"),
    ],
)
def test_options_the_chosen_method_does_not_use_raise(kwargs, match):
    # they were silently ignored, while mean/segments with the wrong perturbation raised
    with pytest.raises(ValueError, match=match):
        lime(K, _f, _x, **kwargs)


def test_underflowing_kernel_weights_give_nan_and_a_warning():
    # kernel_width=1e-30: only the instance itself keeps weight; the fit used to say coef=0,
    # score=1.0
    with pytest.warns(RuntimeWarning, match="fewer than two samples with nonzero kernel weight"):
        res = lime(K, _f, _x, kernel_width=1e-30, num_samples=8)
    assert all(np.isnan(np.asarray(a)).all() for a in res)
    ok = lime(K, _f, _x, num_samples=8)  # the default width: finite, no warning
    assert all(np.isfinite(np.asarray(a)).all() for a in ok)
