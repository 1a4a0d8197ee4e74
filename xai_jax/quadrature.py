"""Quadrature rules on [0, 1] for path integrals, with Captum's alphas and weights."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from xai_jax._checks import check_choice, check_positive_int

__all__ = ["METHODS", "check_rule", "quadrature", "rule"]

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(
    method: str, n_steps: int
) -> tuple[Float[Array, " n_steps"], Float[Array, " n_steps"]]:
    """Nodes (`alphas`) and `weights` of a rule on [0, 1], as Captum's `approximation_parameters`.

    `integral_0^1 f(a) da ~= sum_k weights[k] * f(alphas[k])`. The rules:

    - `riemann_left`, `riemann_right`, `riemann_middle`: `n_steps` points spaced `1/n_steps`
      starting at 0, `1/n_steps` and `1/(2 n_steps)`; every weight is `1/n_steps`.
    - `riemann_trapezoid`: `n_steps` points from 0 to 1 inclusive, weights `1/n_steps` with the
      two end weights halved. This is Captum's (and alibi's) rule, and its weights sum to
      `(n_steps - 1) / n_steps`, not 1 (0.98 at 50 steps): the grid spacing is
      `1/(n_steps - 1)` but the step is `1/n_steps`. We keep it so that numbers match Captum;
      multiply by `n_steps / (n_steps - 1)` for the textbook trapezoid rule.
    - `gausslegendre`: the `n_steps`-point Gauss-Legendre rule mapped to [0, 1]; exact for
      polynomials of degree up to `2 n_steps - 1`.

    Computed once per `(method, n_steps)` in float64 and returned in the default float dtype
    (float32 unless `jax_enable_x64`). Captum builds the Riemann nodes in float32: they agree with
    ours to about 1e-7.

    Static arguments: `method` and `n_steps` (the rule is built once on the host).

    Args:
        method: one of `riemann_left`, `riemann_right`, `riemann_middle`, `riemann_trapezoid`,
            `gausslegendre`.
        n_steps: number of nodes; >= 2 for the Riemann rules (as in Captum), >= 1 for
            Gauss-Legendre.

    Returns:
        `(alphas, weights)`, each of shape `[n_steps]`.

    Raises:
        ValueError: unknown `method` or too few `n_steps`.

    Example:
        >>> from xai_jax import quadrature
        >>> alphas, weights = quadrature("riemann_trapezoid", 5)
        >>> alphas
        Array([0.  , 0.25, 0.5 , 0.75, 1.  ], dtype=float32)
        >>> weights
        Array([0.1, 0.2, 0.2, 0.2, 0.1], dtype=float32)
    """
    alphas, weights = rule(method, check_rule(method, n_steps))
    dtype = jnp.result_type(float)
    with jax.ensure_compile_time_eval():
        return jnp.asarray(alphas, dtype), jnp.asarray(weights, dtype)


def check_rule(method: str, n_steps) -> int:
    """Raise for an unknown `method` or too few `n_steps` (as `quadrature`); return `n_steps`."""
    check_choice("method", method, METHODS)
    return check_positive_int("n_steps", n_steps, minimum=1 if method == "gausslegendre" else 2)


@functools.lru_cache(maxsize=256)
def rule(method: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`(alphas, weights)` of a checked rule as read-only float64 NumPy arrays, cached."""
    alphas, weights = _rule_uncached(method, n)
    alphas.setflags(write=False)  # cached: nobody may change them
    weights.setflags(write=False)
    return alphas, weights


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes (ascending) and weights on [-1, 1], NumPy's `leggauss` numbers.

    Newton's method on the three-term recurrence of the Legendre polynomials, from Tricomi's
    asymptotic guesses, all positive roots at once, then only those not yet converged: O(n)
    memory and O(n^2) vectorised flops (`leggauss` builds an n x n companion matrix: O(n^2)
    memory, O(n^3) time). The weights sum to 2 to round-off.
    """
    k = np.arange(1, (n + 1) // 2 + 1)
    x = (1 - 1 / (8 * n**2) + 1 / (8 * n**3)) * np.cos(np.pi * (4 * k - 1) / (4 * n + 2))

    def legendre(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # P_n(x), P_n'(x)
        p_prev, p = np.ones_like(x), x
        for j in range(2, n + 1):
            p_prev, p = p, ((2 * j - 1) * x * p - (j - 1) * p_prev) / j
        return p, n * (x * p - p_prev) / (x * x - 1)

    active = np.arange(x.size)  # roots still moving: after one step, only those near +-1
    for _ in range(100):  # quadratic convergence: a handful of steps from Tricomi's guesses
        p, dp = legendre(x[active])
        step = p / dp
        x[active] -= step
        active = active[np.abs(step) > 4 * np.finfo(float).eps]
        if active.size == 0:
            break
    _, dp = legendre(x)
    w = 2 / ((1 - x * x) * dp * dp)
    if n % 2:  # the middle root is 0: exactly, and once
        x[-1] = 0.0
        return np.concatenate([-x, x[-2::-1]]), np.concatenate([w, w[-2::-1]])
    return np.concatenate([-x, x[::-1]]), np.concatenate([w, w[::-1]])


def _rule_uncached(method: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    if method == "gausslegendre":
        nodes, w = _gauss_legendre(n)
        return (nodes + 1) / 2, w / 2
    weights = np.full(n, 1.0 / n)
    if method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        return np.linspace(0.0, 1.0, n), weights
    start, stop = {
        "riemann_left": (0.0, 1 - 1 / n),
        "riemann_right": (1 / n, 1.0),
        "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
    }[method]
    return np.linspace(start, stop, n), weights
