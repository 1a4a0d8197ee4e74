"""Weighted ridge regression (the local surrogate lime fits) and lime's feature selection."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Bool, Real

from xai_jax._checks import (
    as_float_array,
    check_bool,
    check_choice,
    check_positive,
    check_positive_int,
    is_concrete,
)
from xai_jax._linalg import solve_psd

__all__ = ["RidgeFit", "SELECTION_METHODS", "select_features", "weighted_ridge"]


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
    X: Real[ArrayLike, "n d"],
    y: Real[ArrayLike, " n *k"],
    sample_weight: Real[ArrayLike, " n"] | None = None,
    *,
    alpha: ArrayLike = 1.0,
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

    Static arguments: `fit_intercept`; `X`, `y`, `sample_weight` and `alpha` may be traced.

    Args:
        X: `[n, d]` design matrix.
        y: `[n]` or `[n, k]` targets.
        sample_weight: `[n]` non-negative weights; None weighs every row 1.
        alpha: L2 penalty (>= 0).
        fit_intercept: fit `b`; False forces it to 0 and does not centre.

    Returns:
        `RidgeFit(coef, intercept, score)`.

    Raises:
        ValueError: wrong ranks or row counts (at least one row), negative `alpha`, negative or
            all-zero weights, NaN/inf in a concrete `X`, `y` or `sample_weight` (traced ones
            make the whole fit NaN, score included).
        TypeError: `fit_intercept` not a bool (a string such as "False" is refused).

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
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be 2-D [samples, features] with a row, got shape {X.shape}")
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be [n] or [n, k] with n = {X.shape[0]} rows of X, got {y.shape}")
    check_positive("alpha", alpha, allow_zero=True)
    fit_intercept = check_bool("fit_intercept", fit_intercept)
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
    coef = solve_psd(gram, Xw.T @ yc, alpha)  # [d, k]
    intercept = (y_mean - x_mean @ coef)[0] if fit_intercept else jnp.zeros(coef.shape[1], dtype)

    residual = targets - (X @ coef + intercept[None])
    ss_res = w @ jnp.square(residual)
    ss_tot = w @ jnp.square(targets - y_mean)
    ok = ~(ss_tot <= 0)  # not `ss_tot > 0`: NaN from non-finite data must give a NaN score
    score = jnp.where(ok, 1 - ss_res / jnp.where(ok, ss_tot, 1), jnp.where(ss_res == 0, 1.0, 0.0))

    if y.ndim == 1:
        return RidgeFit(coef[:, 0], intercept[0], score[0].astype(dtype))
    return RidgeFit(coef.T, intercept, score.astype(dtype))


SELECTION_METHODS = ("none", "highest_weights", "forward_selection", "lasso_path", "auto")

# scikit-learn's `lars_path` defaults, which lime keeps.
_LARS_MAX_ITER = 500
# `lars_path` compares alphas and pads divisions with float32 constants whatever the data's dtype.
_LARS_ALPHA_TOL = float(np.finfo(np.float32).eps)
_LARS_TINY = float(np.finfo(np.float32).tiny)
# `lars_path` refuses a regressor whose Cholesky pivot is below 1e-7 (squared here).
_LARS_MIN_PIVOT_SQ = 1e-14


def select_features(
    X: Real[ArrayLike, "n d"],
    y: Real[ArrayLike, " n"],
    sample_weight: Real[ArrayLike, " n"],
    *,
    num_features: int,
    method: str = "auto",
) -> Bool[Array, " d"]:
    """lime's feature selection (`LimeBase.feature_selection`), as a mask; jittable and vmappable.

    Row 0 of `X` is the explained instance, as in lime. The methods:

    - `"none"`: every feature.
    - `"highest_weights"`: fit `Ridge(alpha=0.01)` with the weights on every feature and keep the
      `num_features` largest `|coef_j * X[0, j]|` (equal values: the lower index first).
    - `"forward_selection"`: greedily add, `num_features` times, the feature whose least-squares
      fit together with those already chosen has the highest weighted R^2 (the lowest index on
      ties).
    - `"lasso_path"`: the lasso path by LARS (`sklearn.linear_model.lars_path(method="lasso")`)
      on the weighted-centred data; the features of the last knot of the path with at most
      `num_features` nonzero coefficients (every feature if the path has no step, as lime).
    - `"auto"`: `"forward_selection"` if `num_features <= 6`, else `"highest_weights"`.

    The weighted Gram matrix `Xc' W Xc` is formed once; every fit after that is a `d x d`
    minimum-norm solve, so a constant column or a singular design gives no NaN. The lasso path
    follows scikit-learn's steps, tolerances and 500-iteration cap; a coefficient that leaves the
    active set is exactly 0 at that knot (scikit-learn can leave a round-off residue there that
    lime would count as nonzero). Ties and round-off can choose differently in float32.

    Args:
        X: `[n, d]` perturbed samples (interpretable representation), row 0 the instance.
        y: `[n]` model outputs for one label.
        sample_weight: `[n]` non-negative kernel weights (not all zero).
        num_features: how many features to select, `1 <= num_features <= d` (static).
        method: one of `SELECTION_METHODS` (static).

    Returns:
        `[d]` boolean mask of the selected features. `"lasso_path"` can select fewer than
        `num_features`; `"none"` selects all.

    Raises:
        ValueError: unknown `method`, `num_features` out of range, wrong ranks or row counts,
            negative or all-zero weights.
        TypeError: `num_features` not an int, complex inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax.surrogates import select_features
        >>> X = jnp.array([[1.0, 1.0, 1.0], [0, 1, 1], [1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
        >>> y = 2 * X[:, 0] - X[:, 2] + 0.1 * X[:, 1] * X[:, 2]
        >>> select_features(X, y, jnp.ones(6), num_features=2, method="forward_selection")
        Array([ True, False,  True], dtype=bool)
    """
    check_choice("method", method, SELECTION_METHODS)
    X = as_float_array("X", X)
    y = as_float_array("y", y)
    w = as_float_array("sample_weight", sample_weight)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be 2-D [samples, features] with a row, got shape {X.shape}")
    n, d = X.shape
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) (one target per row of X), got {y.shape}")
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    num_features = check_positive_int("num_features", num_features)
    if num_features > d:
        raise ValueError(f"num_features must be <= the number of features {d}, got {num_features}")
    check_positive("sample_weight", w, allow_zero=True)
    if is_concrete(w) and not np.any(np.asarray(w) > 0):
        raise ValueError("sample_weight must have at least one positive weight")
    dtype = jnp.result_type(X, y, w)
    X, y, w = X.astype(dtype), y.astype(dtype), w.astype(dtype)

    if method == "auto":
        method = "forward_selection" if num_features <= 6 else "highest_weights"
    if method == "none":
        return jnp.ones(d, bool)
    gram, xy, yy = _weighted_centred_moments(X, y, w)
    if method == "highest_weights":
        coef = solve_psd(gram, xy[:, None], 0.01)[:, 0]
        return _top_k_mask(jnp.abs(coef * X[0]), num_features)
    if method == "forward_selection":
        return _forward_selection(gram, xy, yy, num_features)
    return _lasso_path_selection(gram, xy, n, num_features)


def _weighted_centred_moments(X, y, w):
    """`Xc' W Xc`, `Xc' W yc` and `yc' W yc` for the weighted-mean-centred `X` and `y`."""
    w_total = jnp.sum(w)
    Xc = X - (w @ X)[None] / w_total
    yc = y - (w @ y) / w_total
    Xw = Xc * w[:, None]
    return Xw.T @ Xc, Xw.T @ yc, (w * yc) @ yc


def _top_k_mask(values, k):
    """Mask of the `k` largest `values`; a stable sort keeps the lower index first on ties."""
    order = jnp.argsort(-values, stable=True)
    return jnp.zeros(values.shape[0], bool).at[order[:k]].set(True)


def _masked_gram(gram, mask):
    """`gram` restricted to `mask`, with its largest diagonal entry on the other features' diagonal.

    The masked-out block is decoupled, so a solve with a right-hand side supported on `mask`
    is the solve on the sub-matrix, at a fixed shape. The fill is on the gram's own scale so
    that it does not move the minimum-norm solve's round-off cutoff.
    """
    top = jnp.max(jnp.diagonal(gram))
    fill = jnp.where(top > 0, top, 1)
    both = mask[:, None] & mask[None, :]
    return jnp.where(both, gram, 0) + jnp.diag(jnp.where(mask, 0, fill))


def _forward_selection(gram, xy, yy, num_features):
    """Greedy forward selection by the weighted R^2 of an unpenalised least-squares fit."""
    d = gram.shape[0]
    features = jnp.arange(d)

    def r2_with(used, j):
        mask = used | (features == j)
        coef = solve_psd(_masked_gram(gram, mask), jnp.where(mask, xy, 0)[:, None], 0.0)[:, 0]
        ss_res = yy - 2 * coef @ xy + coef @ (gram @ coef)
        ok = yy > 0
        # r2_score's convention for constant targets: 1 for a perfect fit, else 0
        return jnp.where(ok, 1 - ss_res / jnp.where(ok, yy, 1), jnp.where(ss_res == 0, 1.0, 0.0))

    def add_one(_, used):
        scores = jax.vmap(r2_with, (None, 0))(used, features)
        scores = jnp.where(used | jnp.isnan(scores), -jnp.inf, scores)
        return used.at[jnp.argmax(scores)].set(True)  # argmax: the first best, as lime's `>`

    return jax.lax.fori_loop(0, num_features, add_one, jnp.zeros(d, bool))


class _LarsState(NamedTuple):
    active: jax.Array  # [d] bool
    coef: jax.Array  # [d], 0 off the active set
    cov: jax.Array  # [d] X' residual, tracked (like scikit-learn) for the inactive features
    sign: jax.Array  # [d] sign of each active feature's covariance when it entered
    prev_alpha: jax.Array
    dropped: jax.Array  # the last step removed a feature: the next pass adds none
    n_iter: jax.Array  # steps taken (knots after the first)
    passes: jax.Array
    done: jax.Array
    best: jax.Array  # [d] nonzero mask of the latest knot with <= num_features nonzeros
    found: jax.Array
    first: jax.Array  # [d] nonzero mask of knot 1, lime's answer when no knot qualifies


def _min_pos(values, where):
    """Smallest positive entry of `values[where]`, or the dtype's max (scikit-learn's min_pos)."""
    big = jnp.finfo(values.dtype).max
    return jnp.min(jnp.where(where & (values > 0), values, big))


def _lars_init(xy) -> _LarsState:
    d = xy.shape[0]
    false = jnp.zeros((), bool)
    count = jnp.zeros((), jnp.int32)
    return _LarsState(
        active=jnp.zeros(d, bool),
        coef=jnp.zeros_like(xy),
        cov=xy,
        sign=jnp.zeros_like(xy),
        prev_alpha=jnp.zeros((), xy.dtype),
        dropped=false,
        n_iter=count,
        passes=count,
        done=false,
        best=jnp.ones(d, bool),
        found=false,
        first=jnp.ones(d, bool),  # lime keeps every feature when the path takes no step
    )


def _lars_pass(gram, xy, n_samples, num_features, s: _LarsState) -> _LarsState:
    """One pass of scikit-learn's `lars_path(method="lasso")` loop, on the Gram matrix.

    A pass either stops the path, refuses a degenerate entering feature (zeroing its
    covariance, as scikit-learn does, and taking no step), or takes one step: add the
    most-correlated feature unless the previous step dropped one, move along the equiangular
    direction until an inactive feature ties or an active coefficient crosses zero, and drop
    the latter.
    """
    d = gram.shape[0]
    dtype = gram.dtype
    features = jnp.arange(d)
    inactive = ~s.active
    abs_cov = jnp.where(inactive, jnp.abs(s.cov), -1)
    enter = jnp.argmax(abs_cov)
    C = jnp.where(jnp.any(inactive), abs_cov[enter], 0)
    alpha = C / n_samples
    stop = (alpha <= _LARS_ALPHA_TOL) | (s.n_iter >= _LARS_MAX_ITER) | (jnp.sum(s.active) >= d)
    adding = ~stop & ~s.dropped

    # One solve on the current active set gives its least-squares direction and, for the
    # entering column, its Schur complement; the bordered system then needs no second solve.
    column = jnp.where(s.active, gram[:, enter], 0)
    sign = jnp.where(s.active, s.sign, 0)
    sol = solve_psd(_masked_gram(gram, s.active), jnp.stack([sign, column], axis=1), 0.0)
    ls_old, u = sol[:, 0], sol[:, 1]
    pivot = gram[enter, enter]
    schur = pivot - column @ u
    # float32 round-off in the Schur complement is far above scikit-learn's float64 threshold
    tol = jnp.maximum(_LARS_MIN_PIVOT_SQ, 10 * jnp.finfo(dtype).eps * jnp.abs(pivot))
    degenerate = adding & (jnp.abs(schur) < tol)
    entering = adding & ~degenerate
    enter_sign = jnp.sign(s.cov[enter])
    x_enter = (enter_sign - u @ sign) / jnp.where(entering, schur, 1)
    is_enter = entering & (features == enter)
    ls = jnp.where(is_enter, x_enter, jnp.where(entering, ls_old - u * x_enter, ls_old))
    active = s.active | is_enter
    sign = jnp.where(is_enter, enter_sign, sign)

    # the path bails out when round-off makes alpha grow (scikit-learn's ConvergenceWarning)
    growing = (s.n_iter > 0) & (s.prev_alpha < alpha)
    finish = stop | (~degenerate & growing)
    step = ~finish & ~degenerate

    norm_sq = ls @ sign
    # scikit-learn regularises an ill-conditioned system until this is positive
    AA = 1 / jnp.sqrt(jnp.where(norm_sq > 0, norm_sq, jnp.finfo(dtype).eps))
    direction = ls * AA
    # scikit-learn rounds these (np.around) so that round-off does not reorder near-ties
    corr = jnp.round(gram @ direction, np.finfo(dtype).precision)
    inactive = ~active
    gamma = jnp.minimum(
        jnp.minimum(
            _min_pos((C - s.cov) / (AA - corr + _LARS_TINY), inactive),
            _min_pos((C + s.cov) / (AA + corr + _LARS_TINY), inactive),
        ),
        C / AA,
    )
    z = -s.coef / (direction + _LARS_TINY)
    z_pos = _min_pos(z, active)
    crossing = z_pos < gamma
    gamma = jnp.where(crossing, z_pos, gamma)
    leaving = crossing & active & (z == z_pos)
    kept = active & ~leaving
    coef = jnp.where(kept, s.coef + gamma * direction, 0)
    cov = jnp.where(inactive, s.cov - gamma * corr, s.cov)
    # a feature leaving the set gets its covariance with the new residual afresh
    cov = jnp.where(leaving, xy - gram @ coef, cov)

    knot = coef != 0
    qualifies = step & (jnp.sum(knot) <= num_features)
    return _LarsState(
        active=jnp.where(step, kept, s.active),
        coef=jnp.where(step, coef, s.coef),
        cov=jnp.where(step, cov, jnp.where(degenerate & (features == enter), 0, s.cov)),
        sign=jnp.where(step, sign, s.sign),
        prev_alpha=jnp.where(step, alpha, s.prev_alpha),
        dropped=jnp.where(step, crossing, s.dropped),
        n_iter=s.n_iter + step.astype(s.n_iter.dtype),
        passes=s.passes + 1,
        done=finish,
        best=jnp.where(qualifies, knot, s.best),
        found=s.found | qualifies,
        first=jnp.where(step & (s.n_iter == 0), knot, s.first),
    )


def _lasso_path_selection(gram, xy, n_samples, num_features):
    """Features of the last lasso-path knot with at most `num_features` nonzeros."""
    d = gram.shape[0]
    # Each pass either steps (at most max_iter times) or zeroes a distinct inactive
    # covariance, so this bound is never reached; it only makes termination explicit.
    max_passes = (_LARS_MAX_ITER + 1) * (d + 1)
    final = jax.lax.while_loop(
        lambda s: ~s.done & (s.passes < max_passes),
        lambda s: _lars_pass(gram, xy, n_samples, num_features, s),
        _lars_init(xy),
    )
    return jnp.where(final.found, final.best, final.first)
