"""Property-based tests of the axioms, over random models, shapes and values.

Complements the hypothesis tests next to each method (distance axioms on one set in
`test_distances.py`, IG completeness improving with steps in `test_integrated_gradients.py`,
quadrature exactness on polynomials in `test_kernels_quadrature.py`, LIME recovering a linear
model from Gaussian samples in `test_lime.py`) with: IG completeness within the error bound of
each quadrature rule, distances between two different sets (symmetry, non-negativity, triangle
inequality through a third set), LIME recovering random linear models from Bernoulli masks,
and KernelSHAP's efficiency, symmetry and dummy axioms.

Models are `jax.tree_util.Partial`s of one module-level function, so their weights are traced
arguments and every example with the same shapes reuses the compiled programs; shapes are
drawn from small sets for the same reason.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.tree_util import Partial
from numpy.polynomial import polynomial as P

from xai_jax import integrated_gradients, kernel_shap, lime, pairwise_distances
from xai_jax.quadrature import METHODS

seeds = st.integers(0, 2**32 - 1)


def _net(w1, c, v, curved, x):
    """`act(x @ w1 + c) @ v` with `act = tanh` (curved = 1) or the identity (curved = 0)."""
    h = x @ w1 + c[None]
    return (curved * jnp.tanh(h) + (1 - curved) * h) @ v


def _random_net(rng, d, hidden=6, curved=True):
    w1 = rng.normal(size=(d, hidden)) / math.sqrt(d)
    c, v = rng.normal(size=hidden), rng.normal(size=hidden)
    parts = (w1, c, v, np.asarray(1.0 if curved else 0.0))
    return Partial(_net, *(jnp.asarray(p, jnp.float32) for p in parts)), parts


# --------------------------------------------------------------------------------------------
# Integrated gradients: completeness within the quadrature error bound


def _tanh_derivative_bounds(k_max: int) -> np.ndarray:
    """`T[k] >= max |tanh^(k)|`: the k-th derivative is a polynomial in t = tanh(u) on [-1, 1]."""
    t = np.linspace(-1.0, 1.0, 20001)
    poly, bounds = np.array([0.0, 1.0]), [1.0]
    for _ in range(k_max):
        poly = P.polymul(P.polyder(poly), [1.0, 0.0, -1.0])  # d/du p(t) = p'(t) (1 - t^2)
        bounds.append(1.01 * np.abs(P.polyval(t, poly)).max())
    return np.array(bounds)


_T = _tanh_derivative_bounds(2 * 12 + 1)  # up to Gauss-Legendre with 12 nodes


def _quadrature_error_bound(method: str, n: int, slopes, v, curved: bool):
    """Bound on `|sum_k w_k g'(a_k) - (g(1) - g(0))|` for `g(a) = F(b + a (x - b))`.

    For the network, `g(a) = sum_j v_j act(c_j + a s_j)` with slopes `s = (x - b) @ w1`, so
    `|g^(k)| <= sum_j |v_j| |s_j|^k T_k` (0 for k >= 2 when the activation is the identity).
    The rules' errors on `integral_0^1 f` (f = g') are those of the textbooks.
    """

    def max_derivative(k):  # bound on |g^(k)| over the path, per example
        if not curved:
            return np.zeros(slopes.shape[0])
        return (np.abs(v)[None] * np.abs(slopes) ** k).sum(axis=1) * _T[k]

    if method in ("riemann_left", "riemann_right"):
        return max_derivative(2) / (2 * n)
    if method == "riemann_middle":
        return max_derivative(3) / (24 * n**2)
    if method == "riemann_trapezoid":  # Captum's rule is (n-1)/n of the trapezoid rule
        return max_derivative(3) / (12 * (n - 1) ** 2)
    constant = math.factorial(n) ** 4 / ((2 * n + 1) * math.factorial(2 * n) ** 3)
    return constant * max_derivative(2 * n + 1)  # Gauss-Legendre, exact to degree 2n - 1


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    n_steps=st.sampled_from([3, 12]),
    d=st.sampled_from([2, 5]),
    curved=st.booleans(),
    seed=seeds,
)
def test_ig_completeness_within_the_quadrature_error_bound(method, n_steps, d, curved, seed):
    rng = np.random.default_rng(seed)
    model, (w1, _, v, _) = _random_net(rng, d, curved=curved)
    x = rng.normal(size=(3, d)).astype(np.float32)
    b = rng.normal(size=(3, d)).astype(np.float32)
    attr = integrated_gradients(model, x, b, method=method, n_steps=n_steps)
    total = np.asarray(attr, np.float64).sum(axis=1)
    if method == "riemann_trapezoid":
        total *= n_steps / (n_steps - 1)
    gap = np.asarray(model(x) - model(b), np.float64)
    slopes = (x - b).astype(np.float64) @ w1
    bound = _quadrature_error_bound(method, n_steps, slopes, v, curved)
    # float32 round-off: a few ulps of the terms summed (|v| times the path's extent)
    roundoff = 2e-5 * (1 + (np.abs(v)[None] * (1 + np.abs(slopes))).sum(axis=1))
    assert (np.abs(total - gap) <= bound + roundoff).all(), (total - gap, bound)


# --------------------------------------------------------------------------------------------
# Distances between two different sets


@jax.jit
def _all_distances(x, y, z):
    metrics = ("euclidean", "sqeuclidean", "cosine", "manhattan")
    pd = pairwise_distances
    return {
        m: (pd(x, y, metric=m), pd(y, x, metric=m), pd(x, z, metric=m), pd(y, z, metric=m))
        for m in metrics
    }


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from([(1, 4, 2), (3, 2, 3)]).flatmap(
        lambda rows: st.sampled_from([1, 5]).flatmap(
            lambda d: st.tuples(
                *(arrays(np.float32, (r, d), elements=st.floats(-100, 100, width=32)) for r in rows)
            )
        )
    )
)
def test_distances_between_two_sets_are_symmetric_non_negative_and_triangular(sets):
    x, y, z = sets
    out = {m: [np.asarray(a, np.float64) for a in v] for m, v in _all_distances(x, y, z).items()}
    union = np.concatenate([x, y, z]).astype(np.float64)
    diameter = np.linalg.norm(union[:, None] - union[None], axis=-1).max()
    # documented resolution: squared distances to 64 ulps of |x - c|^2 + |y - c|^2, c the
    # centre of one set (so |x - c| <= diameter); manhattan sums d terms
    tol = {
        "euclidean": math.sqrt(128 * 1.2e-7) * diameter + 1e-5,
        "sqeuclidean": 128 * 1.2e-7 * diameter**2 + 1e-5,
        "cosine": 1e-5,
        "manhattan": 1e-5 * (1 + np.abs(union).sum(axis=1).max()),
    }
    for metric, (xy, yx, xz, yz) in out.items():
        for dist in (xy, yx, xz, yz):
            assert (dist >= 0).all()
        np.testing.assert_allclose(xy, yx.T, rtol=0, atol=tol[metric])
        if metric == "cosine":
            assert (xy <= 2).all()
        if metric in ("euclidean", "manhattan"):  # d(x_i, z_k) <= d(x_i, y_j) + d(y_j, z_k)
            assert (xz[:, None, :] <= xy[:, :, None] + yz[None] + 2 * tol[metric]).all()
    np.testing.assert_allclose(
        out["sqeuclidean"][0], out["euclidean"][0] ** 2, rtol=1e-4, atol=2 * tol["sqeuclidean"]
    )


# --------------------------------------------------------------------------------------------
# LIME on masks recovers a linear model exactly


@settings(max_examples=10, deadline=None)
@given(d=st.sampled_from([3, 6]), seed=seeds)
def test_lime_on_masks_recovers_random_linear_models(d, seed):
    rng = np.random.default_rng(seed)
    model, (w1, c, v, _) = _random_net(rng, d, hidden=1, curved=False)
    w, offset = (w1 @ v).astype(np.float32), float(c @ v)  # f(z) = z . w + offset
    x = rng.normal(size=(2, d)).astype(np.float32)
    baseline = rng.normal(size=d).astype(np.float32)
    res = lime(jax.random.key(seed), model, x, num_samples=128, perturbation="bernoulli",
               baseline=baseline, alpha=0.0)  # fmt: skip
    # f(where(m, x, baseline)) = f(baseline) + sum_j m_j (x_j - baseline_j) w_j: linear in m
    scale = 1 + np.abs(w).sum() * (1 + np.abs(x).max() + np.abs(baseline).max())
    np.testing.assert_allclose(res.coef, (x - baseline[None]) * w[None], atol=1e-4 * scale)
    np.testing.assert_allclose(res.intercept, np.full(2, baseline @ w + offset), atol=1e-4 * scale)
    np.testing.assert_allclose(res.local_pred, np.asarray(model(x)), atol=1e-4 * scale)


# --------------------------------------------------------------------------------------------
# KernelSHAP: efficiency always, symmetry and dummy with every coalition


@settings(max_examples=12, deadline=None)
@given(d=st.sampled_from([3, 6]), num_samples=st.sampled_from([4, 24]), seed=seeds)
def test_kernel_shap_is_efficient_whatever_the_budget(d, num_samples, seed):
    rng = np.random.default_rng(seed)
    model, (_, _, v, _) = _random_net(rng, d)
    x = rng.normal(size=(3, d)).astype(np.float32)
    background = rng.normal(size=(4, d)).astype(np.float32)
    phi = kernel_shap(jax.random.key(seed), model, x, background, num_samples=num_samples)
    gap = np.asarray(model(x)) - np.asarray(model(background)).mean()
    np.testing.assert_allclose(np.asarray(phi).sum(axis=1), gap, atol=1e-5 * (1 + np.abs(v).sum()))


@settings(max_examples=10, deadline=None)
@given(d=st.sampled_from([4, 5]), seed=seeds)
def test_kernel_shap_symmetry_and_dummy_with_every_coalition(d, seed):
    """Features 0 and 1 play the same role (same weights, same values in x and every
    background row): equal values. The last feature is unused: value 0."""
    rng = np.random.default_rng(seed)
    _, (w1, c, v, curved) = _random_net(rng, d)
    w1[1], w1[-1] = w1[0], 0.0
    model = Partial(_net, *(jnp.asarray(p, jnp.float32) for p in (w1, c, v, curved)))
    x = rng.normal(size=(2, d)).astype(np.float32)
    background = rng.normal(size=(3, d)).astype(np.float32)
    x[:, 1], background[:, 1] = x[:, 0], background[:, 0]
    phi = np.asarray(kernel_shap(jax.random.key(seed), model, x, background, num_samples=2**d))
    atol = 1e-5 * (1 + np.abs(v).sum())
    np.testing.assert_allclose(phi[:, 0], phi[:, 1], atol=atol)
    np.testing.assert_allclose(phi[:, -1], 0.0, atol=atol)
    gap = np.asarray(model(x)) - np.asarray(model(background)).mean()
    np.testing.assert_allclose(phi.sum(axis=1), gap, atol=atol)
