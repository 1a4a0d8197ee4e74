"""exponential_kernel and shapley_kernel against their formulas; quadrature against Captum."""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xai_jax import exponential_kernel, quadrature, shapley_kernel
from xai_jax.quadrature import METHODS, rule


def test_exponential_kernel_is_limes_formula(rng):
    d = rng.uniform(0, 5, size=100)
    for width in (0.25, 1.0, 0.75 * np.sqrt(20)):
        expected = np.sqrt(np.exp(-(d**2) / width**2))  # lime_tabular.kernel
        got = np.asarray(exponential_kernel(d.astype(np.float32), width))
        # float32: relative error ~ |exponent| * eps, up to ~1e-5 just above underflow
        np.testing.assert_allclose(got, expected, rtol=3e-5, atol=1e-30)


def test_exponential_kernel_does_not_underflow_early():
    # exp(-d^2/w^2) underflows float32 at d/w ~ 9.4; the kernel's value is still ~1e-20 there.
    got = float(exponential_kernel(jnp.float32(10.0), 1.0))
    np.testing.assert_allclose(got, math.exp(-50.0), rtol=1e-5)


def test_exponential_kernel_width_is_differentiable():
    g = jax.grad(lambda w: exponential_kernel(jnp.array([1.0, 2.0]), w).sum())(1.5)
    d = np.array([1.0, 2.0])
    expected = np.sum(np.exp(-(d**2) / (2 * 1.5**2)) * d**2 / 1.5**3)
    np.testing.assert_allclose(float(g), expected, rtol=1e-5)


@pytest.mark.parametrize("m", [2, 3, 7, 20])
def test_shapley_kernel_formula_and_shap_size_weights(m):
    sizes = np.arange(1, m)
    w = np.asarray(shapley_kernel(m, sizes), np.float64)
    expected = [(m - 1) / (math.comb(m, s) * s * (m - s)) for s in sizes]
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    # times the number of coalitions of each size: shap's per-size weight (M-1)/(s(M-s))
    np.testing.assert_allclose(
        w * [math.comb(m, s) for s in sizes], (m - 1) / (sizes * (m - sizes)), rtol=1e-6
    )


def test_shapley_kernel_constraints_and_large_m():
    np.testing.assert_array_equal(np.asarray(shapley_kernel(5, [0, 5])), [np.inf, np.inf])
    w = np.asarray(shapley_kernel(784, jnp.array([1, 392, 783])))
    assert np.isfinite(w).all() and w[1] == 0 and w[0] > 0  # underflows, never overflows
    np.testing.assert_allclose(w[0], 783 / (784 * 783), rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: exponential_kernel(jnp.ones(3), 0.0), ValueError, "kernel_width must be > 0"),
        (lambda: exponential_kernel(jnp.ones(3), -1.0), ValueError, "kernel_width must be > 0"),
        (lambda: exponential_kernel(jnp.ones(3), jnp.nan), ValueError, "kernel_width"),
        (lambda: shapley_kernel(0, [1]), ValueError, "num_features must be >= 1"),
        (lambda: shapley_kernel(4, [1, 5]), ValueError, r"coalition_sizes must lie in \[0, num_features=4\]"),
        (lambda: shapley_kernel(4, [1.5]), TypeError, "coalition_sizes must be integers"),
        (lambda: quadrature("riemann", 5), ValueError, r"method='riemann' is not one of \('riemann_left'"),
        (lambda: quadrature("riemann_left", 1), ValueError, "n_steps must be >= 2"),
        (lambda: quadrature("gausslegendre", 0), ValueError, "n_steps must be >= 1"),
        (lambda: quadrature("gausslegendre", 5.0), TypeError, "n_steps must be an int"),
    ],
)  # fmt: skip
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _captum_rule(method, n):
    """Captum's `approximation_parameters`, written out (Riemann nodes built in float32)."""
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return (x + 1) / 2, w / 2
    step = np.full(n, 1 / n)
    if method == "riemann_trapezoid":
        step[0] /= 2
        step[-1] /= 2
    start, stop = {
        "riemann_trapezoid": (0, 1),
        "riemann_left": (0, 1 - 1 / n),
        "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
        "riemann_right": (1 / n, 1),
    }[method]
    return np.linspace(start, stop, n, dtype=np.float32), step


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [2, 3, 7, 50, 300])
def test_quadrature_matches_captum(method, n):
    alphas, weights = quadrature(method, n)
    assert alphas.shape == weights.shape == (n,) and alphas.dtype == jnp.float32
    ref_alphas, ref_weights = _captum_rule(method, n)
    np.testing.assert_allclose(np.asarray(alphas), ref_alphas, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, rtol=1e-6)


def test_quadrature_float64(x64):
    alphas, weights = quadrature("gausslegendre", 20)
    assert alphas.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(weights).sum(), 1.0, rtol=1e-14)


def test_captum_trapezoid_weights_sum_to_n_minus_1_over_n():
    for n in (2, 10, 50):
        _, w = quadrature("riemann_trapezoid", n)
        np.testing.assert_allclose(float(w.sum()), (n - 1) / n, rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    n=st.integers(2, 40),
    coeffs=st.lists(st.floats(-3, 3), min_size=1, max_size=80),
)
def test_quadrature_exact_to_its_degree(method, n, coeffs):
    """Each rule integrates polynomials up to its degree exactly (trapezoid up to n/(n-1))."""
    degree = {
        "gausslegendre": 2 * n - 1,
        "riemann_middle": 1,
        "riemann_trapezoid": 1,
        "riemann_left": 0,
        "riemann_right": 0,
    }[method]
    coeffs = np.array(coeffs[: degree + 1])
    alphas, weights = (np.asarray(a, np.float64) for a in quadrature(method, n))
    approx = np.sum(weights * np.polynomial.polynomial.polyval(alphas, coeffs))
    exact = np.sum(coeffs / np.arange(1, len(coeffs) + 1))  # integral of sum c_k a^k on [0, 1]
    if method == "riemann_trapezoid":
        approx *= n / (n - 1)
    np.testing.assert_allclose(approx, exact, atol=2e-5 * (1 + np.abs(coeffs).sum()))


def test_quadrature_is_computed_once_and_embeds_under_jit():
    from xai_jax.quadrature import rule

    rule.cache_clear()
    for _ in range(3):
        quadrature("gausslegendre", 17)
    assert rule.cache_info().misses == 1
    out = jax.jit(lambda: quadrature("riemann_middle", 4))()
    np.testing.assert_allclose(np.asarray(out[0]), [0.125, 0.375, 0.625, 0.875])


@pytest.mark.parametrize("n", [*range(1, 41), 64, 101, 256])
def test_gauss_legendre_rule_is_numpys_leggauss(n):
    # Captum builds the rule with NumPy's leggauss; ours is Newton on the recurrence. The
    # smallest (edge) weights differ by up to ~1e-11 relative, leggauss's own error (against
    # 40-digit mpmath at n=64: 5e-14 of the largest weight for leggauss, 3e-15 for ours)
    alphas, weights = rule("gausslegendre", n)
    nodes, w = np.polynomial.legendre.leggauss(n)
    np.testing.assert_allclose(alphas, (nodes + 1) / 2, rtol=0, atol=2e-16)
    np.testing.assert_allclose(weights, w / 2, rtol=1e-10)
    assert abs(weights.sum() - 1) < 1e-14


def test_many_gauss_legendre_steps_build_in_linear_memory():
    # leggauss's n x n companion matrix took 48 s at 10**4 steps and 74.5 GiB at 10**5
    start = time.perf_counter()
    alphas, weights = rule("gausslegendre", 10**4)
    assert time.perf_counter() - start < 10
    assert np.all(np.diff(alphas) > 0) and alphas[0] > 0 and alphas[-1] < 1
    assert abs(weights.sum() - 1) < 1e-13
    # exact for polynomials of degree < 2n: the integral of a degree-1999 monomial on [0, 1]
    assert abs(np.sum(weights * alphas**1999) - 1 / 2000) < 1e-15
