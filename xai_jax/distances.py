"""Pairwise distances with scikit-learn's values, computed as one matrix product."""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Real

from xai_jax._checks import as_float_array, check_choice

__all__ = ["METRICS", "pairwise_distances"]

METRICS = ("euclidean", "l2", "sqeuclidean", "cosine", "manhattan", "l1", "cityblock")

# Entries of |x|^2 + |y|^2 - 2 x.y below this many units of round-off of |x|^2 + |y|^2 are
# indistinguishable from zero in the working precision: they are set to exactly 0, so that
# identical rows are at distance 0 and round-off never leaves a spurious small distance. The
# expansion's error is a few ulps times sqrt(num_features) in practice; 64 ulps covers the
# largest residual measured for identical rows (tests/test_distances.py) with margin.
_SNAP_ULPS = 64.0


def pairwise_distances(
    x: Real[ArrayLike, "n d"],
    y: Real[ArrayLike, "m d"] | None = None,
    *,
    metric: str = "euclidean",
) -> Float[Array, "n m"]:
    """Distances between the rows of `x` and of `y`, as `sklearn.metrics.pairwise_distances`.

    Euclidean, squared euclidean and cosine distances are computed with a single matrix product:
    the data are centred (distances do not change), the squared norms ride along as two extra
    columns, `[x, |x|^2, 1] . [-2y, 1, |y|^2]^T = |x - y|^2`, so the norm terms cost no extra
    pass over the `n x m` result (the figures against scikit-learn are in `benchmarks/`).
    Results smaller than the product's round-off are exactly 0, so identical rows are at
    distance exactly 0 and no value is negative. As in scikit-learn, a zero
    vector has cosine similarity 0 with everything (distance 1), and with `y=None` the diagonal
    is 0. Gradients are finite everywhere, including at zero distance (where they are 0).

    Precision: float32 inputs are computed in float32 (scikit-learn upcasts euclidean to float64).
    Absolute error on squared distances is a few ulps of `|x - c|^2 + |y - c|^2` (c the centre), so
    distances far smaller than the data's spread are resolved only to about `sqrt(eps)` of that
    spread; enable `jax_enable_x64` and pass float64 for more.

    Static arguments: `metric`; `x` and `y` may be traced.

    Args:
        x: `[n, d]` array.
        y: `[m, d]` array, or None for `y = x`.
        metric: one of `euclidean` (alias `l2`), `sqeuclidean`, `cosine`, `manhattan`
            (aliases `l1`, `cityblock`).

    Returns:
        `[n, m]` array of distances, in the floating dtype of the inputs (empty when `x` or `y`
        has no rows).

    Raises:
        ValueError: unknown `metric`, inputs that are not 2-D, different feature counts, or
            NaN/inf in a concrete `x` or `y` (traced ones give non-finite distances in their
            rows and columns, never a finite number).

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import pairwise_distances
        >>> x = jnp.array([[0.0, 0.0], [3.0, 4.0]])
        >>> pairwise_distances(x)
        Array([[0., 5.],
               [5., 0.]], dtype=float32)
        >>> pairwise_distances(x, jnp.array([[1.0, 0.0]]), metric="cosine")
        Array([[1. ],
               [0.4]], dtype=float32)
    """
    check_choice("metric", metric, METRICS)
    x = as_float_array("x", x)
    same = y is None
    y = x if same else as_float_array("y", y)
    for name, arr in (("x", x), ("y", y)):
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D [rows, features], got shape {arr.shape}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same number of features, got x {x.shape} and y {y.shape}"
        )
    dtype = jnp.result_type(x, y)
    x, y = x.astype(dtype), y.astype(dtype)

    if metric in ("manhattan", "l1", "cityblock"):
        # Fused by XLA into one reduction: the [n, m, d] difference is never materialised.
        return jnp.sum(jnp.abs(x[:, None, :] - y[None, :, :]), axis=-1)
    if metric == "cosine":
        sim = _dot_rows(_normalize_rows(x), _normalize_rows(y))
        out = jnp.clip(1 - sim, 0, 2)
    else:
        out = _squared_euclidean(x, y)
        if metric in ("euclidean", "l2"):
            out = _safe_sqrt(out)
    if same:
        # a row with NaN or inf keeps its non-finite distance to itself
        out = jnp.where(jnp.eye(out.shape[0], dtype=bool) & jnp.isfinite(out), 0, out)
    return out


def _dot_rows(a: jax.Array, b: jax.Array) -> jax.Array:
    """`a @ b.T` without materialising the transpose."""
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())))


def _squared_euclidean(x: jax.Array, y: jax.Array) -> jax.Array:
    # Centring changes no distance but shrinks the norms the expansion cancels against (pixel
    # data in [0, 1] has most of its norm in the mean). The centre is a constant of the result.
    # Non-finite entries are left out of the centre, so that they spoil only their own rows.
    finite_y = jnp.where(jnp.isfinite(y), y, jnp.zeros((), y.dtype))
    centre = jax.lax.stop_gradient(jnp.mean(finite_y, axis=0, keepdims=True))
    x_aug, xx = _augment(x, centre, 1.0, norm_column=0)
    y_aug, yy = _augment(y, centre, -2.0, norm_column=1)
    d2 = _dot_rows(x_aug, y_aug)  # |x|^2 + |y|^2 - 2 x.y, in the product's accumulator
    tol = (_SNAP_ULPS * jnp.finfo(d2.dtype).eps) * (_nan_if_inf(xx) + _nan_if_inf(yy).T)
    # NaN compares false: rows with NaN or inf (NaN tolerance) keep their non-finite d2
    return jnp.where(d2 <= tol, jnp.zeros((), d2.dtype), d2)


def _nan_if_inf(v: jax.Array) -> jax.Array:
    return jnp.where(jnp.isinf(v), jnp.nan, v)


def _augment(a: jax.Array, centre: jax.Array, scale: float, norm_column: int):
    """`[scale (a - centre), |a - centre|^2, 1]` (norm and ones swapped for `norm_column=1`).

    Built as one elementwise fusion (pad and select on the column index) rather than a
    `concatenate`, which XLA:CPU copies after materialising `a - centre`: at 4000 x 784 that
    saved a tenth of the whole distance computation.
    """
    rows, features = a.shape
    norms = jnp.sum(jnp.square(a - centre), axis=1, keepdims=True)
    column = jax.lax.broadcasted_iota(jnp.int32, (rows, features + 2), 1)
    body = jnp.pad(scale * (a - centre), ((0, 0), (0, 2)))
    extra = jnp.where(column == features + norm_column, norms, jnp.ones((), a.dtype))
    return jnp.where(column >= features, extra, body), norms


def _safe_sqrt(v: jax.Array) -> jax.Array:
    """sqrt with a zero (not infinite) gradient at 0; NaN stays NaN."""
    zero = v == 0
    return jnp.where(zero, 0, jnp.sqrt(jnp.where(zero, 1, v)))


def _normalize_rows(a: jax.Array) -> jax.Array:
    """Rows scaled to unit norm; zero rows stay zero (scikit-learn's `normalize`)."""
    sq = jnp.sum(a * a, axis=1, keepdims=True)
    zero = sq == 0  # not `sq > 0`: a row with NaN must stay NaN, not become a zero row
    return jnp.where(zero, 0, a * jax.lax.rsqrt(jnp.where(zero, 1, sq)))
