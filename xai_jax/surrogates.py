"""Weighted ridge regression: the local surrogate lime fits, in closed form."""

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Float

from xai_jax._checks import as_float_array, check_positive, is_concrete


class RidgeFit(NamedTuple):
    """A fitted ridge model; a pytree, so it passes through `jit` and `vmap`.

    Attributes:
        coef: `[d]` for 1-D `y`, `[k, d]` for `[n, k]` `y` (scikit-learn's layout).
        intercept: `[]` or `[k]`.
        score: weighted R^2 on the training data, `[]` or one per output `[k]`
            (`score.mean()` is scikit-learn's `Ridge.score` for 2-D `y`).
    """

    coef: jax.Array
    intercept: jax.Array
    score: jax.Array


def weighted_ridge(
    X: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *k"],
    sample_weight: Float[ArrayLike, " n"] | None = None,
    *,
    alpha: float | ArrayLike = 1.0,
    fit_intercept: bool = True,
) -> RidgeFit:
    """Ridge regression with sample weights, with `sklearn.linear_model.Ridge`'s coefficients.

    Minimises `sum_i w_i (y_i - b - X_i . beta)^2 + alpha |beta|^2`. With an intercept, `X` and `y`
    are centred by their weighted means and
    `beta = (Xc' W Xc + alpha I)^-1 Xc' W yc`, `b = ybar_w - xbar_w . beta`: the fit lime uses
    for its surrogate (`Ridge(alpha=1)` with `sample_weight`). Weights are not normalised, as in
    scikit-learn. The `d x d` system is solved by Cholesky when `alpha` is a positive Python
    number; when it is 0 (lime's forward selection) or traced, by an eigendecomposition that
    gives the minimum-norm solution of a singular system, as scikit-learn's SVD fallback.
    `score` is the weighted R^2, `1 - sum w (y - yhat)^2 / sum w (y - ybar_w)^2` (1 for a
    perfect fit of constant `y`, 0 for an imperfect one, as `sklearn.metrics.r2_score`).

    Args:
        X: `[n, d]` design matrix.
        y: `[n]` or `[n, k]` targets.
        sample_weight: `[n]` non-negative weights; None weighs every row 1.
        alpha: L2 penalty (>= 0).
        fit_intercept: fit `b`; False forces it to 0 and does not centre.

    Returns:
        `RidgeFit(coef, intercept, score)`.

    Raises:
        ValueError: wrong ranks or row counts, negative `alpha`, negative or all-zero weights.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import weighted_ridge
        >>> X = jnp.array([[0.0], [1.0], [2.0], [3.0]])
        >>> fit = weighted_ridge(X, 2 * X[:, 0] + 1, alpha=0.0)
        >>> fit.coef.round(4), fit.intercept.round(4), fit.score.round(4)
        (Array([2.], dtype=float32), Array(1., dtype=float32), Array(1., dtype=float32))
    """
    X = as_float_array("X", X)
    y = as_float_array("y", y)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D [samples, features], got shape {X.shape}")
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be [n] or [n, k] with n = {X.shape[0]} rows of X, got {y.shape}")
    check_positive("alpha", alpha, allow_zero=True)
    dtype = jnp.result_type(X, y)
    if sample_weight is None:
        w = jnp.ones(X.shape[0], dtype)
    else:
        w = as_float_array("sample_weight", sample_weight)
        if w.shape != (X.shape[0],):
            raise ValueError(f"sample_weight must have shape ({X.shape[0]},), got {w.shape}")
        check_positive("sample_weight", w, allow_zero=True)
        if is_concrete(w) and not np.any(np.asarray(w) > 0):
            raise ValueError("sample_weight must have at least one positive weight")
        dtype = jnp.result_type(dtype, w)
    X, y, w = X.astype(dtype), y.astype(dtype), w.astype(dtype)
    targets = y if y.ndim == 2 else y[:, None]  # [n, k]

    w_total = jnp.sum(w)
    y_mean = (w @ targets)[None] / w_total  # [1, k]: centres y, and is R^2's baseline
    if fit_intercept:
        x_mean = (w @ X)[None] / w_total  # [1, d]
        Xc, yc = X - x_mean, targets - y_mean
    else:
        Xc, yc = X, targets
    Xw = Xc * w[:, None]
    gram = Xw.T @ Xc
    coef = _solve_psd(gram, Xw.T @ yc, alpha)  # [d, k]
    intercept = (y_mean - x_mean @ coef)[0] if fit_intercept else jnp.zeros(coef.shape[1], dtype)

    residual = targets - (X @ coef + intercept[None])
    ss_res = w @ jnp.square(residual)
    ss_tot = w @ jnp.square(targets - y_mean)
    ok = ss_tot > 0
    score = jnp.where(ok, 1 - ss_res / jnp.where(ok, ss_tot, 1), jnp.where(ss_res == 0, 1.0, 0.0))

    if y.ndim == 1:
        return RidgeFit(coef[:, 0], intercept[0], score[0].astype(dtype))
    return RidgeFit(coef.T, intercept, score.astype(dtype))


def _solve_psd(gram: jax.Array, rhs: jax.Array, alpha) -> jax.Array:
    """Solve `(gram + alpha I) beta = rhs` for a symmetric positive semi-definite `gram`."""
    eye = jnp.eye(gram.shape[0], dtype=gram.dtype)
    if isinstance(alpha, numbers.Real) and alpha > 0:
        factor = jax.scipy.linalg.cho_factor(gram + alpha * eye)
        return jax.scipy.linalg.cho_solve(factor, rhs)
    # Minimum-norm solution: drop directions whose eigenvalue is round-off.
    evals, evecs = jnp.linalg.eigh(gram + jnp.asarray(alpha, gram.dtype) * eye)
    cutoff = jnp.max(jnp.abs(evals)) * gram.shape[0] * jnp.finfo(gram.dtype).eps
    inverse = jnp.where(evals > cutoff, 1 / jnp.where(evals > cutoff, evals, 1), 0)
    return evecs @ (inverse[:, None] * (evecs.T @ rhs))
