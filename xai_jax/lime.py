"""Local surrogates: LIME for a whole batch of instances in one compiled program.

It explains each row of `x` by sampling a neighbourhood, calling the black box on it and fitting
a weighted linear model (KernelSHAP, the other surrogate method, is `xai_jax.kernel_shap`).
The pipeline is shaped for XLA:CPU: neighbourhoods are sampled per instance with `vmap` (one
key per row, so results do not depend on how rows are batched), the samples of a chunk of
instances are flattened into one 2-D `[rows, features]` batch for the model (a dense model runs
as one fused kernel on 2-D input, faster than rank-3 input from `vmap`), and the surrogate
solves are `vmap`-ped again. Chunks of instances keep every buffer small: a host loop over one
compiled chunk when called eagerly, `lax.map` under `jit` (`xai_jax._chunks.map_rows`).
"""

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Int, Real

from xai_jax import _chunks
from xai_jax._blackbox import as_model, mark_invalid, selected
from xai_jax._checks import (
    as_row_keys,
    check_bool,
    check_choice,
    check_positive,
    check_positive_int,
    is_traced,
)
from xai_jax._features import check_segments
from xai_jax._inputs import Target, as_feature_vector, as_rows, as_target
from xai_jax.distances import METRICS, pairwise_distances
from xai_jax.kernel_shap import kernel_shap as kernel_shap  # its old home: still importable
from xai_jax.kernels import exponential_kernel
from xai_jax.perturbations import bernoulli_perturbation, gaussian_perturbation
from xai_jax.surrogates import SELECTION_METHODS, select_features, weighted_ridge

__all__ = [
    "BernoulliNeighbourhood",
    "GaussianNeighbourhood",
    "LimeResult",
    "PERTURBATIONS",
    "fit_surrogate",
    "lime",
    "local_surrogates",
    "select",
]

PERTURBATIONS = ("gaussian", "bernoulli")


class LimeResult(NamedTuple):
    """LIME's surrogate of each explained row; a pytree, so it passes through `jit` and `vmap`.

    Attributes:
        coef: `[n, num_features]` surrogate coefficients (0 for features not selected).
        intercept: `[n]`.
        score: `[n]` weighted R^2 of the surrogate on its neighbourhood (lime's `score`).
        local_pred: `[n]` the surrogate at the instance itself, intercept included.
    """

    coef: jax.Array
    intercept: jax.Array
    score: jax.Array
    local_pred: jax.Array


# --------------------------------------------------------------------------------------------
# Neighbourhoods: `(key, x_row, extra_row) -> (Z, inputs)`, `Z` being what the surrogate is fit
# on (lime's scaled data, or the binary masks) and `inputs` what the model sees.


class GaussianNeighbourhood(NamedTuple):
    """lime's tabular sampling; `Z` is lime's scaled data `(samples - mean) / scale`."""

    num_samples: int
    scale: jax.Array  # [d]
    mean: jax.Array | None  # [d]

    def __call__(self, key, x_row, extra_row):
        samples = gaussian_perturbation(
            key, x_row, self.num_samples, scale=self.scale, mean=self.mean
        )
        centre = jnp.zeros_like(x_row) if self.mean is None else self.mean
        # scikit-learn's StandardScaler, which lime uses, divides zero-variance features by 1
        scale = jnp.where(self.scale == 0, jnp.ones_like(self.scale), self.scale)
        return (samples - centre[None]) / scale[None], samples


class BernoulliNeighbourhood(NamedTuple):
    """lime's image sampling over features or segments; `Z` is the 0/1 masks."""

    num_samples: int
    baseline: jax.Array  # [d]
    num_segments: int | None

    def __call__(self, key, x_row, segments_row):
        masks, samples = bernoulli_perturbation(
            key,
            x_row,
            self.num_samples,
            baseline=self.baseline,
            segments=segments_row,
            num_segments=self.num_segments,
        )
        return masks.astype(x_row.dtype), samples


class _ExponentialKernel(NamedTuple):
    kernel_width: Any

    def __call__(self, distances):
        return exponential_kernel(distances, self.kernel_width)


class _Config(NamedTuple):
    model: Callable
    sample: Callable  # (key, x_row, extra_row) -> (Z [S, F], inputs [S, d])
    metric: str
    kernel: Callable  # distances [S] -> weights [S]
    num_features: int
    selection: str
    alpha: Any
    fit: bool  # False: return the neighbourhood for a scikit-learn regressor
    all_outputs: bool  # surrogates of every output at once (LimeBase), no target


def _neighbourhoods(config: _Config, rows: dict):
    """Samples, model labels and kernel weights of a chunk of `m` instances."""
    extra = rows.get("extra")
    Z, inputs = jax.vmap(config.sample)(rows["key"], rows["x"], extra)
    m, s = inputs.shape[:2]
    out = config.model(inputs.reshape(m * s, *inputs.shape[2:]))
    index = None if rows["index"] is None else jnp.repeat(rows["index"], s)
    y = out.reshape(m, s, -1) if config.all_outputs else selected(out, index).reshape(m, s)
    distances = jax.vmap(lambda z: pairwise_distances(z, z[:1], metric=config.metric)[:, 0])(Z)
    weights = config.kernel(distances)
    return Z, y, weights


def select(Z, y, weights, *, num_features: int | None, feature_selection: str) -> jax.Array:
    """lime's feature selection for one neighbourhood: a `[F]` mask (all True for `none`)."""
    if feature_selection == "none":
        return jnp.ones(Z.shape[1], bool)
    # a discrete choice: no gradient flows through it (and LARS's while_loop has no reverse mode)
    Z, y, weights = jax.lax.stop_gradient((Z, y, weights))
    return select_features(Z, y, weights, num_features=num_features, method=feature_selection)


def fit_surrogate(Z, y, weights, keep, *, alpha) -> LimeResult:
    """lime's final `Ridge(alpha)` on the kept features of one neighbourhood.

    `Z [S, F]` (row 0 the instance), `y [S]` (or `[S, k]`), `weights [S]`, `keep [F]`.
    Zeroed columns get exactly zero coefficients, so this is the fit on the kept columns alone.
    """
    design = Z * keep.astype(Z.dtype)[None]
    fit = weighted_ridge(design, y, weights, alpha=alpha)
    local = fit.coef @ design[0] + fit.intercept
    return _unless_weighted(LimeResult(fit.coef, fit.intercept, fit.score, local), weights)


def _unless_weighted(result: LimeResult, weights) -> LimeResult:
    """NaN for a neighbourhood where fewer than two samples carry kernel weight (all the others
    underflowed: a tiny `kernel_width`): a fit through one point is no explanation."""
    few = jnp.sum(weights > 0, axis=-1) < 2
    return jax.tree.map(
        lambda a: jnp.where(few.reshape(few.shape + (1,) * (a.ndim - few.ndim)), jnp.nan, a),
        result,
    )


def _lime_chunk(config: _Config, rows: dict):
    Z, y, weights = _neighbourhoods(config, rows)
    keep = jax.vmap(
        lambda z, t, w: select(
            z, t, w, num_features=config.num_features, feature_selection=config.selection
        )
    )(Z, y, weights)
    if not config.fit:
        return Z, y, weights, keep
    return jax.vmap(lambda *a: fit_surrogate(*a, alpha=config.alpha))(Z, y, weights, keep)


def _fit_regressor(regressor, Z, y, weights, keep) -> LimeResult:
    """Fit a clone of a scikit-learn regressor per instance, on its selected features.

    `y` is `[n, S]` or `[n, S, k]`; `score` is the weighted R^2 of each output.
    """
    import sklearn.base  # loaded only when a scikit-learn regressor is used
    from sklearn.metrics import r2_score

    Z, y, weights, keep = (np.asarray(a) for a in (Z, y, weights, keep))
    tail = y.shape[2:]
    if Z.shape[0] == 0:  # no rows: an empty result of the right shapes
        coef, rest = np.zeros((0, *tail, Z.shape[2])), np.zeros((0, *tail))
        return LimeResult(*(jnp.asarray(a, Z.dtype) for a in (coef, rest, rest, rest)))
    parts = []
    for z, t, w, k in zip(Z, y, weights, keep, strict=True):
        reg = sklearn.base.clone(regressor).fit(z[:, k], t, sample_weight=w)
        if not (hasattr(reg, "coef_") and hasattr(reg, "intercept_")):
            raise TypeError(
                "regressor must be a linear model: lime's explanation is the surrogate's "
                f"coef_ and intercept_, which a fitted {type(reg).__name__} does not have "
                "(use e.g. sklearn.linear_model.Ridge)"
            )
        pred = np.reshape(reg.predict(z[:, k]), t.shape)
        coef = np.zeros((*tail, z.shape[1]))
        coef[..., k] = np.reshape(reg.coef_, (*tail, -1))
        intercept = np.broadcast_to(reg.intercept_, tail)
        score = r2_score(t, pred, sample_weight=w, multioutput="raw_values").reshape(tail)
        parts.append((coef, intercept, score, pred[0]))
    return LimeResult(*(jnp.asarray(np.stack(p), Z.dtype) for p in zip(*parts, strict=True)))


def lime(
    key: ArrayLike,
    fn: Callable,
    x: Real[ArrayLike, "n d"],
    *,
    num_samples: int = 5000,
    perturbation: str = "gaussian",
    scale: ArrayLike = 1.0,
    mean: ArrayLike | None = None,
    kernel_width: ArrayLike | None = None,
    distance_metric: str | None = None,
    alpha: ArrayLike = 1.0,
    num_features: int | None = None,
    feature_selection: str = "none",
    target: Int[ArrayLike, "*n"] | None = None,
    regressor: Any = None,
    segments: ArrayLike | None = None,
    num_segments: int | None = None,
    baseline: ArrayLike = 0.0,
    batch_size: int | None = None,
) -> LimeResult:
    """LIME: a weighted linear surrogate of `fn` around each row of `x`, as the `lime` package.

    For each row (one key each, split from `key` or given per row), `num_samples` neighbours
    are drawn (row 0 is the instance), labelled by `fn`, weighted by lime's kernel
    `sqrt(exp(-d**2 / kernel_width**2))` of their distance to the instance, and a ridge
    regression (`alpha`, intercept, sample weights; lime's `Ridge(alpha=1)`) is fit on them,
    optionally on `num_features` features chosen first by `feature_selection`.

    - `perturbation="gaussian"` (lime's tabular explainer without discretisation): neighbours
      `x + scale * N(0, 1)`, or `mean + scale * N(0, 1)` when `mean` is given (lime samples
      around the training mean by default). The surrogate is fit, and distances are measured, in
      lime's scaled space `(z - mean) / scale` (`mean` = 0 when None; a zero `scale` counts as
      1, as scikit-learn's scaler): coefficients are per `scale` unit, and with the defaults
      per unit of `x`. Default `kernel_width = 0.75 * sqrt(d)` (lime's; explainax used
      `0.75 * d`) and euclidean distances.
    - `perturbation="bernoulli"` (lime's image explainer): random 0/1 masks over the features,
      or over `segments` (an integer label map `[d]` shared by all rows or `[n, d]` per row,
      labels `0..num_segments-1`, e.g. superpixels of flattened images); switched-off features
      take `baseline` (e.g. each superpixel's mean colour). The surrogate is fit on the masks
      and `coef` has one entry per segment. Default kernel width 0.25 and cosine distances
      between each mask and the all-ones mask, as lime's image explainer.

    `fn` maps `[rows, d]` to `[rows]` or `[rows, ...]` outputs; it may be a JAX function or not
    (a scikit-learn `predict_proba`, called through `jax.pure_callback`: it then runs on the
    host, and is probed once on two rows of `x` for its output shape). All samples of a chunk
    of instances go to `fn` as one 2-D batch.

    Static arguments: `fn`, `num_samples`, `perturbation`, `distance_metric`, `num_features`,
    `feature_selection`, `regressor`, `num_segments` and `batch_size`; `key`, `x`, `scale`,
    `mean`, `kernel_width`, `alpha`, `baseline`, `segments` and `target` may be traced.

    Args:
        key: PRNG key, or one key per row: a single key gives row `i` the key
            `jax.random.split(key, n)[i]`; a key array `[n]` (or legacy uint32 `[n, 2]`) gives
            row `i` the key `key[i]`, so the rows of a split batch get the same keys
            (`xai_jax.sharding.explain_sharded`).
        fn: the black box.
        x: `[n, d]` instances to explain.
        num_samples: neighbours per instance, the instance included (lime's 5000).
        perturbation: `gaussian` or `bernoulli`.
        scale: Gaussian standard deviation, a scalar or one per feature (>= 0).
        mean: Gaussian centre per feature (e.g. training means); None samples around each row.
        kernel_width: positive width; None for lime's default (see above).
        distance_metric: a `pairwise_distances` metric; None: euclidean (gaussian) or cosine
            (bernoulli).
        alpha: ridge penalty of the surrogate (>= 0).
        num_features: features the surrogate may use (static); None: all.
        feature_selection: `none`, `highest_weights`, `forward_selection`, `lasso_path` or
            `auto`, with lime's meanings (see `xai_jax.surrogates.select_features`).
        target: which output to explain: None when `fn` returns one value per row, an int,
            or an int array `[n]` (one per row); for outputs of rank > 2 an int matrix.
        regressor: None for the JAX ridge; or a scikit-learn regressor (cloned and fit per
            instance with `sample_weight`, on the host, so not under `jit`).
        segments: integer label map for `bernoulli`, `[d]` or `[n, d]`.
        num_segments: number of segment labels; required when `segments` is traced.
        baseline: value of switched-off features for `bernoulli`, scalar or `[d]`.
        batch_size: instances per compiled chunk, not the package's unit of model rows per
            call (kept for compatibility): a chunk of `batch_size` instances calls `fn` once,
            on `batch_size * num_samples` rows. None sizes chunks to ~32k model rows. Does
            not change the result (beyond float round-off).

    Returns:
        `LimeResult(coef [n, F], intercept [n], score [n], local_pred [n])`, `F` being `d` or
        the number of segments; an empty `x` (`n = 0`) gives an empty result, `fn` not called.
        A row whose neighbourhood has fewer than two samples with nonzero kernel weight (all
        but the instance underflowed: `kernel_width` too small) is NaN, and an eager call warns
        (`RuntimeWarning`) when any row is NaN.

    Raises:
        ValueError: `x` not 2-D or without features, unknown `perturbation`/
            `feature_selection`/`distance_metric`, `num_features` outside `[1, F]` or other
            than `F` with `feature_selection='none'`, segments of the wrong shape, an option
            of the other perturbation (`scale`, `mean` for Gaussian; `segments`,
            `num_segments`, `baseline` for Bernoulli) given other than its default, a black
            box whose output does not have one row per input row, a target out of range or
            missing for a vector output, a key array whose length is not `n`, NaN/inf in a
            concrete `x`, `scale`, `mean` or `baseline` (traced ones give non-finite results
            in the rows they touch).
        TypeError: `key` is not a PRNG key, `regressor` has no `fit`/`predict` or, fitted, no
            `coef_`/`intercept_` (not a linear model).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import lime
        >>> w = jnp.array([1.0, -2.0, 0.5])
        >>> res = lime(jax.random.key(0), lambda z: z @ w + 3.0, jnp.ones((2, 3)))
        >>> res.coef.round(2)
        Array([[ 1. , -2. ,  0.5],
               [ 1. , -2. ,  0.5]], dtype=float32)
        >>> res.intercept.round(2), res.score.round(2)
        (Array([3., 3.], dtype=float32), Array([1., 1.], dtype=float32))
    """
    num_samples = check_positive_int("num_samples", num_samples)
    check_choice("perturbation", perturbation, PERTURBATIONS)
    check_choice("feature_selection", feature_selection, SELECTION_METHODS)
    x = as_rows("x", x)
    d = x.shape[1]
    gaussian = perturbation == "gaussian"
    if gaussian:
        for name, value, default in (
            ("segments", segments, None), ("num_segments", num_segments, None),
            ("baseline", baseline, 0.0),
        ):  # fmt: skip
            if not _is_default(value, default):
                raise ValueError(f"{name} is only used with perturbation='bernoulli'")
        check_positive("scale", scale, allow_zero=True)
        sample = GaussianNeighbourhood(
            num_samples,
            as_feature_vector("scale", scale, x),
            None if mean is None else as_feature_vector("mean", mean, x),
        )
        extra, num_feats = None, d
    else:
        for name, value, default in (("mean", mean, None), ("scale", scale, 1.0)):
            if not _is_default(value, default):
                raise ValueError(f"{name} is only used with perturbation='gaussian'")
        extra, num_feats = _as_segments(segments, num_segments, x)
        sample = BernoulliNeighbourhood(
            num_samples,
            as_feature_vector("baseline", baseline, x),
            None if extra is None else num_feats,
        )
    metric = distance_metric or ("euclidean" if gaussian else "cosine")
    check_choice("distance_metric", metric, METRICS)
    if kernel_width is None:
        kernel_width = 0.75 * math.sqrt(d) if gaussian else 0.25
    check_positive("kernel_width", kernel_width)
    check_positive("alpha", alpha, allow_zero=True)
    if num_features is None:
        num_features = num_feats
    num_features = check_positive_int("num_features", num_features)
    if num_features > num_feats:
        raise ValueError(f"num_features={num_features} exceeds the {num_feats} features")
    if feature_selection == "none" and num_features != num_feats:
        raise ValueError(
            f"num_features={num_features} needs a feature_selection other than 'none' (one of "
            f"{SELECTION_METHODS[1:]}); 'none' fits all {num_feats} features"
        )
    if regressor is not None and not all(hasattr(regressor, a) for a in ("fit", "predict")):
        raise TypeError(f"regressor must be a scikit-learn regressor, got {regressor!r}")

    return local_surrogates(
        key,
        fn,
        x,
        sample,
        _ExponentialKernel(kernel_width),
        num_samples=num_samples,
        metric=metric,
        num_features=num_features,
        feature_selection=feature_selection,
        alpha=alpha,
        target=target,
        regressor=regressor,
        extra=extra,
        batch_size=batch_size,
    )


def _is_default(value, default) -> bool:
    """Whether an option keeps its default: None, or a Python number equal to it (an array or
    a traced value counts as given)."""
    if default is None or value is None:
        return value is default
    return isinstance(value, int | float) and not isinstance(value, bool) and value == default


def local_surrogates(
    key,
    fn: Callable,
    x: jax.Array,
    sample: Callable,
    kernel: Callable,
    *,
    num_samples: int,
    metric: str,
    num_features: int | None = None,
    feature_selection: str = "none",
    alpha: ArrayLike = 1.0,
    target=None,
    regressor=None,
    extra=None,
    batch_size: int | None = None,
    all_outputs: bool = False,
) -> LimeResult:
    """The engine of `lime` and `LimeBase`, for checked arguments.

    `sample(key, x_row, extra_row) -> (Z [S, F], inputs [S, d])` draws one neighbourhood of
    `S = num_samples` rows (a hashable callable: a NamedTuple of options) and
    `kernel(distances [S]) -> weights [S]` weighs it. With
    `all_outputs` every output of `fn` gets a surrogate (no target, no feature selection):
    `coef [n, k, F]`, the rest `[n, k]`.
    """
    n = x.shape[0]
    keys = as_row_keys(key, n)
    if regressor is not None and is_traced((x, extra)):
        raise ValueError(
            "a scikit-learn regressor is fit on the host, outside jit: call lime eagerly, or "
            "use regressor=None (the JAX ridge)"
        )
    model, out = as_model(fn, x, num_samples)
    all_outputs = check_bool("all_outputs", all_outputs)
    t = Target(None, None) if all_outputs else as_target(target, out, n)
    config = _Config(
        model,
        sample,
        metric,
        kernel,
        num_features,
        feature_selection,
        alpha,
        regressor is None,
        all_outputs,
    )
    rows = {"key": keys, "x": x, "extra": extra, "index": t.index}
    chunk = _chunks.instances_per_chunk(n, num_samples, batch_size)
    result = _chunks.map_rows(_lime_chunk, config, rows, n, chunk)
    if regressor is not None:
        result = _unless_weighted(_fit_regressor(regressor, *result), result[2])
    result = mark_invalid(result, t.valid)
    if not is_traced(result) and bool(jnp.isnan(result.score).any()):
        warnings.warn(
            "some rows have NaN surrogates: fewer than two samples with nonzero kernel weight "
            "(kernel_width too small for the distances?) or non-finite black-box outputs",
            RuntimeWarning,
            stacklevel=3,
        )
    return result


def _as_segments(segments, num_segments, x: jax.Array):
    """Per-row label maps `[n, d]` (or None) and the number of surrogate features."""
    n, d = x.shape
    if segments is None:
        if num_segments is not None:
            raise ValueError("num_segments is only used with segments")
        return None, d
    seg = jnp.asarray(segments)
    if seg.shape not in ((d,), (n, d)):
        raise ValueError(
            f"segments must have shape ({d},) or ({n}, {d}) for x {x.shape}, got {seg.shape}"
        )
    seg, num = check_segments(seg, num_segments, jnp.zeros(seg.shape, x.dtype))
    return jnp.broadcast_to(seg, (n, d)), num
