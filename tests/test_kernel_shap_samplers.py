"""KernelSHAP's samplers, standard errors and `num_samples="auto"`, against brute-force Shapley
values of small nonlinear games (the reference enumerates every subset; no third-party code).

jit/vmap/determinism/no-retrace of the new options are in test_conformance.py, their bad-input
rows in test_reliability.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_coalitions import _brute_force_shapley, _codes, _game
from xai_jax import _coalitions, kernel_shap, shapley_values

SAMPLERS = ("shap", "leverage")


def _mlp(seed: int, d: int):
    k1, k2 = jax.random.split(jax.random.key(seed))
    w1 = 1.5 * jax.random.normal(k1, (d, 16)) / np.sqrt(d)
    w2 = jax.random.normal(k2, (16,))
    return lambda z: jnp.tanh(z @ w1) @ w2


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("d", [2, 3, 6, 9])
def test_every_sampler_is_exact_with_a_full_budget(x64, rng, sampler, d):
    v = _game(rng, d)
    c = _coalitions.SAMPLERS[sampler](jax.random.key(d), d, 2**d)
    assert len(set(_codes(c.masks).tolist())) == 2**d - 2  # every coalition once
    assert np.all(np.asarray(c.draw) == -1)  # nothing random
    values, total = jnp.asarray(v[_codes(c.masks)]), jnp.asarray(v[-1])
    exact = _brute_force_shapley(v, d)
    phi = _coalitions.shapley_regression(c.masks, values, c.weights, total)
    np.testing.assert_allclose(phi, exact, rtol=1e-9, atol=1e-12)
    # the cubic surrogate too, whatever its ridge: its residual has Shapley value 0
    for ridge in (_coalitions.CUBIC_RIDGE, 10.0):
        phi, stderr = _coalitions.cubic_shapley(
            c.masks, values, c.weights, total, c.draw, c.stratum, ridge=ridge
        )
        np.testing.assert_allclose(phi, exact, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(stderr, 0.0)  # nothing random


@pytest.mark.parametrize("estimator", ["linear", "cubic"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_kernel_shap_exact_values_have_zero_stderr(sampler, estimator):
    d = 5
    f = _mlp(0, d)
    x = jax.random.normal(jax.random.key(1), (3, d))
    bg = jax.random.normal(jax.random.key(2), (4, d))
    exact = shapley_values(f, x, bg)
    phi, stderr = kernel_shap(
        jax.random.key(0), f, x, bg, num_samples=2**d - 2, sampler=sampler,
        estimator=estimator, return_stderr=True,
    )  # fmt: skip
    # float32: the cubic fit solves 13 unknowns instead of 4, a few ulps more round-off
    np.testing.assert_allclose(phi, exact, rtol=2e-6, atol=2e-6)
    assert float(jnp.max(stderr)) < 1e-6


def test_leverage_draws_distinct_pairs_and_equal_rows_per_size():
    d, budget = 10, 300
    c = _coalitions.leverage_sampler(jax.random.key(0), d, budget)
    masks = np.asarray(c.masks)
    codes = _codes(masks)
    assert masks.shape == (budget, d) and len(set(codes.tolist())) == budget  # no repeats
    np.testing.assert_array_equal(masks[1::2], ~masks[::2])  # complement after each set
    sizes = masks.sum(axis=1)
    counts = np.bincount(sizes, minlength=d + 1)[1:d]
    # sizes 1, 9 are enumerated (10 each); the rest share the budget equally
    assert counts[0] == counts[-1] == 10
    assert counts[1:-1].max() - counts[1:-1].min() <= 2 * 2
    np.testing.assert_allclose(float(jnp.sum(c.weights)), 1.0, rtol=1e-6)


def test_leverage_beats_shap_sampler_on_a_nonlinear_game(rng):
    d, budget = 10, 300
    v = _game(rng, d, hidden=16)
    exact = _brute_force_shapley(v, d)
    mse = {}
    for name, sampler in _coalitions.SAMPLERS.items():
        errors = []
        for seed in range(40):
            c = sampler(jax.random.key(seed), d, budget)
            phi = _coalitions.shapley_regression(
                c.masks, jnp.asarray(v[_codes(c.masks)]), c.weights, jnp.asarray(v[-1])
            )
            errors.append(np.mean((np.asarray(phi) - exact) ** 2))
        mse[name] = np.mean(errors)
    assert mse["leverage"] < mse["shap"]


def test_cubic_estimator_beats_the_linear_one_with_either_sampler(rng):
    d, budget = 10, 300
    v = _game(rng, d, hidden=16)
    exact = _brute_force_shapley(v, d)
    for sampler in _coalitions.SAMPLERS.values():
        mse = {"linear": [], "cubic": []}
        for seed in range(20):
            c = sampler(jax.random.key(seed), d, budget)
            args = (c.masks, jnp.asarray(v[_codes(c.masks)]), c.weights, jnp.asarray(v[-1]))
            for name, phi in (
                ("linear", _coalitions.shapley_regression(*args)),
                ("cubic", _coalitions.cubic_shapley(*args)),
            ):
                mse[name].append(np.mean((np.asarray(phi) - exact) ** 2))
                np.testing.assert_allclose(np.sum(phi), v[-1], rtol=1e-5)  # efficiency
        assert np.mean(mse["cubic"]) < 0.5 * np.mean(mse["linear"])


@pytest.mark.parametrize(("sampler", "estimator"), [*((s, "linear") for s in SAMPLERS),
                                                    ("leverage", "cubic")])  # fmt: skip
def test_stderr_covers_the_true_error(sampler, estimator):
    # held-out models: other seeds than anything the sampler was tuned on
    d, n = 8, 8
    inside = []
    for seed in (11, 12, 13):
        f = _mlp(seed, d)
        x = jax.random.normal(jax.random.key(seed + 100), (n, d))
        bg = jax.random.normal(jax.random.key(seed + 200), (5, d))
        exact = np.asarray(shapley_values(f, x, bg))
        phi, stderr = kernel_shap(
            jax.random.key(seed), f, x, bg, num_samples=64, sampler=sampler,
            estimator=estimator, return_stderr=True,
        )  # fmt: skip
        inside.append(np.abs(np.asarray(phi) - exact) <= 2 * np.asarray(stderr))
    assert np.mean(inside) >= 0.9


def test_a_user_sampler_is_used_and_its_strata_respected():
    calls = []

    def halves(key, num_features, num_samples):  # shap's design, drawn as one stratum
        calls.append(num_samples)
        c = _coalitions.shap_sampler(key, num_features, num_samples)
        return c.masks, c.weights, c.draw, c.stratum

    f = _mlp(0, 6)
    x = jax.random.normal(jax.random.key(1), (2, 6))
    bg = jax.random.normal(jax.random.key(2), (3, 6))
    ours = kernel_shap(jax.random.key(0), f, x, bg, num_samples=40, sampler=halves)
    np.testing.assert_array_equal(
        ours, kernel_shap(jax.random.key(0), f, x, bg, num_samples=40, sampler="shap")
    )
    assert calls and set(calls) == {40}


def test_auto_stops_at_the_tolerance_and_reuses_one_round():
    d = 11  # 2**11 - 2 coalitions: rounds of 512 are sampled
    traces = []
    g = _mlp(3, d)

    def f(z):
        traces.append(z.shape)
        return g(z)

    x = jax.random.normal(jax.random.key(1), (2, d))
    bg = jax.random.normal(jax.random.key(2), (3, d))
    exact = np.asarray(shapley_values(g, x, bg))
    loose, loose_se = kernel_shap(
        jax.random.key(0), f, x, bg, num_samples="auto", atol=0.05, sampler="leverage",
        return_stderr=True, max_samples=2048, progress=False,
    )  # fmt: skip
    first = len(traces)
    tight, tight_se = kernel_shap(
        jax.random.key(0), f, x, bg, num_samples="auto", atol=2e-3, sampler="leverage",
        return_stderr=True, max_samples=2048, progress=False,
    )  # fmt: skip
    assert len(traces) == first  # more rounds, the same compiled round: nothing traced again
    assert float(loose_se.max()) <= 0.05
    assert float(tight_se.max()) < float(loose_se.max())
    assert np.abs(np.asarray(tight) - exact).max() <= 3 * float(tight_se.max())
    assert np.abs(np.asarray(loose) - exact).max() <= 3 * float(loose_se.max())
    # efficiency holds in every round
    total = np.asarray(g(x) - g(bg).mean())
    np.testing.assert_allclose(np.asarray(tight).sum(1), total, atol=1e-5)


def test_auto_under_jit_matches_eager():
    d = 10
    f = _mlp(4, d)
    x = jax.random.normal(jax.random.key(1), (2, d))
    bg = jax.random.normal(jax.random.key(2), (3, d))
    run = lambda k, x, tol: kernel_shap(
        k, f, x, bg, num_samples="auto", rtol=tol, max_samples=1024, return_stderr=True,
        progress=False,
    )  # fmt: skip
    eager = run(jax.random.key(0), x, 0.05)
    jitted = jax.jit(run)(jax.random.key(0), x, 0.05)
    np.testing.assert_allclose(jitted[0], eager[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jitted[1], eager[1], rtol=1e-4, atol=1e-6)
