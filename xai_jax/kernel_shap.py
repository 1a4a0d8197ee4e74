"""KernelSHAP: Shapley values of a batch of instances by weighted regression on coalitions.

The coalition design (shap's sampling scheme) and the constrained regression are in
`xai_jax._coalitions`; the Shapley kernel weights come from `xai_jax.kernels`' table. This
module evaluates the model on the coalitions: instances in chunks (`_chunks.map_rows`), and
inside a chunk the coalition-by-background rows of each instance as 2-D `[rows, d]` batches,
in pieces when one instance has more than `_MAX_ROWS_PER_CALL` of them.
"""

import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int, Real

from xai_jax import _chunks
from xai_jax._blackbox import as_model, mark_invalid, selected
from xai_jax._checks import as_row_keys, check_bool, check_positive, check_positive_int, is_traced
from xai_jax._coalitions import (
    SAMPLERS,
    Coalitions,
    bootstrap_multipliers,
    cubic_shapley,
    regression_stats,
    shapley_regression,
    solve_stats,
)
from xai_jax._inputs import as_rows, as_target

__all__ = ["kernel_shap"]

# KernelSHAP evaluates coalitions x background rows per instance (102,400 at the defaults with
# 50 rows): one call for them all is faster than smaller pieces in a `lax.map`, so an instance
# is split only beyond this many rows, to bound memory.
_MAX_ROWS_PER_CALL = 2**18


_NUM_BOOTSTRAP = 100  # replicates behind `return_stderr` and `num_samples="auto"`
_ROUND_SAMPLES = 512  # coalitions per round of `num_samples="auto"`
_MAX_SAMPLES = 2**14  # `max_samples`' default

ESTIMATORS = ("linear", "cubic")
CUBIC_MAX_FEATURES = 16  # `estimator=None` picks "cubic" up to here (the measured range)


class _ShapConfig(NamedTuple):
    model: Callable
    background: jax.Array  # [b, d]
    num_samples: int  # coalitions per instance (per round when "auto")
    per_call: int  # coalitions per model call
    sampler: Callable  # (key, num_features, num_samples) -> Coalitions
    stderr: bool
    estimator: str  # one of ESTIMATORS


def _expected_values(config: _ShapConfig, masks, x, index):
    """`E_b f(x where mask else background_b)` for every coalition: `[m, S]`.

    Runs inside a chunk of instances (already traced), so the coalitions are split into
    pieces of `per_call` with the shared layer's traced schedule (`_chunks.map_traced`).
    """
    bg = config.background
    m, _, d = masks.shape

    def piece(mask):  # [q, m, d] -> [q, m]
        q = mask.shape[0]
        mask = jnp.moveaxis(mask, 0, 1)
        inputs = jnp.where(mask[:, :, None, :], x[:, None, None, :], bg[None, None])
        out = config.model(inputs.reshape(m * q * bg.shape[0], d))
        rep = None if index is None else jnp.repeat(index, q * bg.shape[0])
        return jnp.moveaxis(selected(out, rep).reshape(m, q, bg.shape[0]).mean(axis=2), 0, 1)

    values = _chunks.map_traced(piece, jnp.moveaxis(masks, 1, 0), config.per_call)
    return jnp.moveaxis(values, 0, 1)


def _draw(sampler: Callable, key, num_features: int, num_samples: int) -> Coalitions:
    """A sampler's output as `Coalitions`: `(masks, weights)` alone are one i.i.d. draw per row."""
    out = sampler(key, num_features, num_samples)
    if len(out) == 2:
        masks, weights = out
        count = jnp.shape(masks)[0]
        draw, stratum = jnp.arange(count, dtype=jnp.int32), jnp.zeros(count, jnp.int32)
    else:
        masks, weights, draw, stratum = out
    return Coalitions(
        jnp.asarray(masks, bool),
        jnp.asarray(weights),
        jnp.asarray(draw, jnp.int32),
        jnp.asarray(stratum, jnp.int32),
    )


def _evaluate(config: _ShapConfig, rows: dict, keys):
    """The chunk's coalitions, their values `v(S) - v({})` `[m, S]` and totals `f(x) - v({})`."""
    d = rows["x"].shape[1]
    coal = jax.vmap(lambda k: _draw(config.sampler, k, d, config.num_samples))(keys)
    index = rows["index"]
    fx = selected(config.model(rows["x"]), index)
    out_bg = config.model(config.background).reshape(config.background.shape[0], -1)
    fnull = (out_bg[:, 0] if index is None else out_bg[:, index]).mean(axis=0)
    fnull = jnp.broadcast_to(fnull, fx.shape)
    if coal.masks.shape[1] == 0:  # one feature: efficiency alone decides
        return coal, jnp.zeros((fx.shape[0], 0), fx.dtype), fx - fnull
    values = _expected_values(config, coal.masks, rows["x"], index)
    return coal, values - fnull[:, None], fx - fnull


def _bootstrap_stats(key, coal: Coalitions, values, total):
    """Normal equations of `_NUM_BOOTSTRAP` replicates of one instance's sampled draws."""
    times = bootstrap_multipliers(key, coal.draw, coal.stratum, _NUM_BOOTSTRAP)
    return regression_stats(coal.masks, values, coal.weights, total, times)


def _shap_chunk(config: _ShapConfig, rows: dict):
    coal, values, total = _evaluate(config, rows, rows["key"])
    if coal.masks.shape[1] == 0:
        phi = total[:, None]
        return (phi, jnp.zeros_like(phi)) if config.stderr else phi
    if config.estimator == "cubic":
        if config.stderr:
            return jax.vmap(cubic_shapley)(
                coal.masks, values, coal.weights, total, coal.draw, coal.stratum
            )
        return jax.vmap(cubic_shapley)(coal.masks, values, coal.weights, total)
    phi = jax.vmap(shapley_regression)(coal.masks, values, coal.weights, total)
    if not config.stderr:
        return phi
    boot_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(rows["key"])
    gram, rhs = jax.vmap(_bootstrap_stats)(boot_keys, coal, values, total)
    replicates = jax.vmap(jax.vmap(solve_stats, (0, 0, None)))(gram, rhs, total)
    return phi, jnp.std(replicates, axis=1, ddof=1)


class _Pooled(NamedTuple):
    """Running sums over the rounds of `num_samples="auto"`, per instance."""

    gram: jax.Array  # [n, d-1, d-1]
    rhs: jax.Array  # [n, d-1]
    boot_gram: jax.Array  # [n, R, d-1, d-1]
    boot_rhs: jax.Array  # [n, R, d-1]
    total: jax.Array  # [n]


def _round_chunk(config: _ShapConfig, rows: dict) -> _Pooled:
    """One round of coalitions for a chunk of instances, added to the pooled sums."""
    keys = jax.vmap(jax.random.fold_in)(rows["key"], rows["round"])
    coal, values, total = _evaluate(config, rows, keys)
    pooled = rows["pooled"]
    if coal.masks.shape[1] == 0:
        return pooled._replace(total=total)
    gram, rhs = jax.vmap(regression_stats)(coal.masks, values, coal.weights, total)
    boot_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    boot_gram, boot_rhs = jax.vmap(_bootstrap_stats)(boot_keys, coal, values, total)
    return _Pooled(
        pooled.gram + gram,
        pooled.rhs + rhs,
        pooled.boot_gram + boot_gram,
        pooled.boot_rhs + boot_rhs,
        total,
    )


@jax.jit
def _pooled_values(pooled: _Pooled, rounds, rtol, atol):
    """Shapley values, standard errors and convergence of each instance from the sums of
    `rounds` rounds (their mean: each round's weights sum to 1)."""
    d = pooled.rhs.shape[1] + 1
    pooled = pooled._replace(
        gram=pooled.gram / rounds,
        rhs=pooled.rhs / rounds,
        boot_gram=pooled.boot_gram / rounds,
        boot_rhs=pooled.boot_rhs / rounds,
    )
    if d == 1:
        phi = pooled.total[:, None]
        return phi, jnp.zeros_like(phi), jnp.ones(phi.shape[0], bool)
    phi = jax.vmap(solve_stats)(pooled.gram, pooled.rhs, pooled.total)
    solve_boot = jax.vmap(jax.vmap(solve_stats, (0, 0, None)))
    stderr = jnp.std(solve_boot(pooled.boot_gram, pooled.boot_rhs, pooled.total), axis=1, ddof=1)
    bound = atol + rtol * jnp.max(jnp.abs(phi), axis=1, keepdims=True)
    return phi, stderr, jnp.all(stderr <= bound, axis=1)


def _auto(config, rows, n, d, chunk, rtol, atol, max_rounds, progress):
    """`num_samples="auto"`: rounds of `config.num_samples` coalitions, pooled, until every
    instance's standard errors are under the tolerance or `max_rounds` rounds are done. One
    compiled round (`_chunks.map_rows` of `_round_chunk`) serves every round."""
    dtype = rows["x"].dtype
    k = max(d - 1, 0)
    pooled = _Pooled(
        jnp.zeros((n, k, k), dtype),
        jnp.zeros((n, k), dtype),
        jnp.zeros((n, _NUM_BOOTSTRAP, k, k), dtype),
        jnp.zeros((n, _NUM_BOOTSTRAP, k), dtype),
        jnp.zeros(n, dtype),
    )

    def step(r, pooled):
        rows_r = {**rows, "round": jnp.full(n, r, jnp.int32), "pooled": pooled}
        pooled = _chunks.map_rows(_round_chunk, config, rows_r, n, chunk)
        return pooled, _pooled_values(pooled, jnp.asarray(r + 1, dtype), rtol, atol)

    if is_traced((rows, rtol, atol)):

        def cond(carry):
            r, _, (_, _, done) = carry
            return (r < max_rounds) & ~jnp.all(done)

        def body(carry):
            r, pooled, _ = carry
            pooled, result = step(r, pooled)
            return r + 1, pooled, result

        shapes = jax.eval_shape(lambda p: step(jnp.int32(0), p)[1], pooled)
        start = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        _, _, (phi, stderr, _) = jax.lax.while_loop(cond, body, (jnp.int32(0), pooled, start))
        return phi, stderr
    bar = None
    if progress:
        import tqdm  # loaded when a progress bar is asked for

        bar = tqdm.tqdm(total=max_rounds * config.num_samples, unit="coalitions")
    try:
        for r in range(max_rounds):
            pooled, (phi, stderr, done) = step(np.int32(r), pooled)
            if bar is not None:
                bar.update(config.num_samples)
            if bool(jnp.all(done)):
                break
    finally:
        if bar is not None:
            bar.close()
    return phi, stderr


def kernel_shap(
    key: ArrayLike,
    fn: Callable,
    x: Real[ArrayLike, "n d"],
    background: Real[ArrayLike, "b d"],
    *,
    num_samples: int | str = 2048,
    target: Int[ArrayLike, "*n"] | None = None,
    batch_size: int | None = None,
    sampler: str | Callable = "leverage",
    return_stderr: bool = False,
    estimator: str | None = None,
    rtol: ArrayLike | None = None,
    atol: ArrayLike | None = None,
    max_samples: int = _MAX_SAMPLES,
    progress: bool | None = None,
) -> Float[Array, "n d"] | tuple[Float[Array, "n d"], Float[Array, "n d"]]:
    """KernelSHAP: Shapley values of each row of `x` by weighted regression on coalitions.

    A coalition `S` of features is valued `v(S) = mean_b f(x_S, background_b rest)`; Shapley
    values are the weighted least-squares fit of `v(S) - v({})` on the coalition masks with the
    Shapley kernel weights, with efficiency `sum(phi) = f(x) - mean f(background)` enforced
    exactly (shap's `KernelExplainer`, `l1_reg=False`). The coalitions come from a `sampler`,
    one key per row:

    * `"leverage"` (the default): Leverage SHAP (Musco & Witter, ICLR 2025): every size gets
      the same number of rows (the leverage scores of this regression are uniform over
      sizes), sizes whose coalitions all fit are enumerated, the others get a fixed number of
      pairs `{S, complement}` drawn without replacement, each row weighted by its size's
      kernel mass over its rows.
    * `"shap"`: shap's scheme. Whole coalition sizes (with their complements) are enumerated
      while the budget allows, the rest are sampled with their complements, sizes in
      proportion to the kernel. shap merges repeated draws into one weighted sample; we keep
      them as separate rows of equal weight, which is the same regression.
      `sampler="shap", estimator="linear"` is shap's `KernelExplainer(l1_reg=False)`.
    * a callable `sampler(key, num_features, num_samples)` of your own, jittable, returning
      `(masks [S, d] bool, weights [S])` (weights summing to 1; each row one independent draw
      for the standard errors), or a 4-tuple `(masks, weights, draw, stratum)`: rows with the
      same `draw[i] >= 0` are one random draw (resampled together, within their
      `stratum[i]`, an int in `[0, S)`), `draw[i] = -1` marks rows that are not random.

    The `estimator` turns the coalition values into Shapley values:

    * `"linear"`: shap's regression above.
    * `"cubic"`: the same constrained weighted least squares with the `binom(d, 3)`
      third-order interaction terms `prod_{i in T} (mask_i - 1/2)` added as ridge-penalised
      columns (ridge 0.1 of their mean Gram diagonal); the values are the fitted surrogate
      game's exact Shapley values (each term's `b_T / 12` to each of its three features). The
      draws of the built-in samplers pair each coalition with its complement, which cancels
      every even-order part of the game, so the linear fit's error comes from the odd part,
      of which these terms are the leading one. It is still exact with every coalition (the
      residual of the fit has Shapley value 0). It solves `d - 1 + binom(d, 3)` unknowns per
      instance (575 for d = 16, 1,159 for d = 20), about 14 ms per instance at d = 16 and 768
      coalitions on a 2-core CPU: worth it where the model or the error is the cost. A
      sampler of your own that does not pair its draws leaves the even-order part in the fit.
    * `None` (the default): `"cubic"` with a fixed `num_samples` and `d <= 16`
      (`CUBIC_MAX_FEATURES`, the range measured), `"linear"` otherwise (more features, or
      `num_samples="auto"`, which pools linear normal equations).

    Why this default: on the models of `bench_shapley_accuracy` (MLPs of 12 and 16 features, a
    gradient-boosting model, backgrounds of 1 and 50 rows, 256 to 2048 coalitions) the
    leverage sampler with the cubic estimator has 2.6-250x lower mean squared error than
    shap's at the same budget, and reaches shap's error at 2048 coalitions with 768 or fewer;
    shap's own design (`sampler="shap", estimator="linear"`) is 1.0-12x, leverage + linear
    1.3-22x.

    When `num_samples >= 2**d - 2` both built-in samplers enumerate every coalition and the
    values are exact Shapley values with either estimator (d <= 11 with the default
    `num_samples`). Features whose value equals every background row's are dummies with
    Shapley value 0: exact enumeration gives 0, sampling gives ~0 (shap drops them before
    sampling).

    Standard errors (`return_stderr=True`), 0 (to float round-off) when everything is
    enumerated. `"linear"`: the standard deviation of the estimate over 100 bootstrap
    replicates of the random draws (a coalition and its complement resampled together, within
    the sampler's strata; enumerated coalitions kept), from the key
    `jax.random.fold_in(row_key, 1)`. `"cubic"`: the leave-one-draw-out (jackknife, HC3-style)
    sandwich variance of the fit over the random draws within their strata: each draw's
    influence on the estimate, its residual inflated by `1 / (1 - leverage)` of the draw (a
    coalition and its complement have negated design rows and act as one row); it leaves out
    the ridge's bias. Drawing without replacement makes both slightly conservative where a
    size is sampled nearly whole; `tests/test_kernel_shap_samplers.py` checks that the true
    error lies within 2 standard errors for >= 90% of the features of held-out models.

    `num_samples="auto"` samples in rounds of 512 coalitions (fewer when `2**d - 2` is
    smaller), each with the key `jax.random.fold_in(row_key, round)`, pools the rounds (the
    mean of their normal equations: one regression on all of their rows) and stops when every
    instance has `stderr <= atol + rtol * max_j |phi_j|` for all features, or after
    `max_samples // 512` rounds. One compiled round serves every round; eagerly the rounds are
    a host loop (with a tqdm bar when `progress`), under `jit` a `lax.while_loop` (which
    `jax.grad` cannot differentiate in reverse mode; a fixed `num_samples` can).

    The model is called on `[rows, d]` batches of coalition-by-background rows (all of a chunk
    of instances at once, or pieces of ~262k rows in a `lax.map` when one instance has more);
    `fn` may be a non-JAX function (called through `jax.pure_callback`).

    Static arguments: `fn`, `num_samples`, `batch_size`, `sampler`, `return_stderr`,
    `estimator`, `max_samples` and `progress`; `key`, `x`, `background`, `target`, `rtol` and
    `atol` may be traced.

    Args:
        key: PRNG key, or one key per row: a single key gives row `i` the key
            `jax.random.split(key, n)[i]`; a key array `[n]` (or legacy uint32 `[n, 2]`) gives
            row `i` the key `key[i]`.
        fn: the black box, `[rows, d] -> [rows]` or `[rows, ...]`.
        x: `[n, d]` instances to explain.
        background: `[b, d]` rows that stand in for absent features.
        num_samples: coalitions per instance (capped at `2**d - 2`), or `"auto"`.
        target: None when `fn` returns one value per row, an int, an int array `[n]`, or for
            outputs of rank > 2 an int matrix.
        batch_size: instances per compiled chunk, not the package's unit of model rows per
            call (kept for compatibility): a chunk of `batch_size` instances evaluates
            `batch_size * min(num_samples, 2**d - 2) * b` coalition rows, in calls of at most
            ~262k rows. None sizes chunks to ~32k model rows. Does not change the result
            (beyond float round-off).
        sampler: `"leverage"`, `"shap"` or a callable (see above).
        return_stderr: also return the standard error of each value.
        estimator: `"linear"`, `"cubic"` or None (see above).
        rtol: with `num_samples="auto"`, the tolerance relative to each instance's largest
            `|phi_j|` (> 0).
        atol: with `num_samples="auto"`, the absolute tolerance (> 0); give `rtol`, `atol`
            or both.
        max_samples: with `num_samples="auto"`, the most coalitions per instance (at least
            one round).
        progress: with `num_samples="auto"` called eagerly, show a tqdm bar of the rounds;
            None shows one on a terminal.

    Returns:
        `[n, d]` Shapley values (empty for an empty `x`, `fn` not called), and with
        `return_stderr` a tuple `(values, stderr)` of two `[n, d]` arrays.

    Raises:
        ValueError: `x` or `background` not 2-D, without features or with different feature
            counts, a
            `background` without rows, `num_samples < 1` or a string other than `"auto"`, an
            unknown `sampler` or `estimator`, `"auto"` with `estimator="cubic"` or without
            `rtol` or `atol`, a tolerance `<= 0`,
            `max_samples` below one round, a black box whose output does not
            have one row per input row, a target out of range or missing for a vector output,
            a key array whose length is not `n`, NaN/inf in a concrete `x` or `background`
            (traced ones give non-finite values in the rows they touch: every row for
            `background`).
        TypeError: `key` is not a PRNG key, `return_stderr` not a bool.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import kernel_shap
        >>> f = lambda z: z[:, 0] * z[:, 1] + z[:, 2]
        >>> kernel_shap(jax.random.key(0), f, jnp.ones((1, 3)), jnp.zeros((4, 3))).round(4)
        Array([[0.5, 0.5, 1. ]], dtype=float32)

        A sampler of your own (here: uniformly random coalitions, weighted by the kernel) and
        the standard errors of its estimate:

        >>> from xai_jax import shapley_kernel
        >>> def uniform(key, num_features, num_samples):
        ...     masks = jax.random.bernoulli(key, 0.5, (num_samples, num_features))
        ...     weights = shapley_kernel(num_features, masks.sum(axis=1))
        ...     weights = jnp.where(jnp.isfinite(weights), weights, 0.0)
        ...     return masks, weights / weights.sum()
        >>> g = lambda z: jnp.tanh(z).sum(axis=1)  # additive: any sampler is exact
        >>> phi, stderr = kernel_shap(jax.random.key(0), g, jnp.ones((1, 4)), jnp.zeros((1, 4)),
        ...                           num_samples=64, sampler=uniform, return_stderr=True)
        >>> phi.round(4), bool(stderr.max() < 1e-5)
        (Array([[0.7616, 0.7616, 0.7616, 0.7616]], dtype=float32), True)
    """
    auto = isinstance(num_samples, str)
    if auto:
        if num_samples != "auto":
            raise ValueError(f"num_samples={num_samples!r} must be an int >= 1 or 'auto'")
    else:
        num_samples = check_positive_int("num_samples", num_samples)
    sampler_fn = _as_sampler(sampler)
    return_stderr = check_bool("return_stderr", return_stderr)
    if estimator is not None and (not isinstance(estimator, str) or estimator not in ESTIMATORS):
        raise ValueError(f"estimator={estimator!r} is not one of {ESTIMATORS} or None")
    if auto and estimator not in (None, "linear"):
        raise ValueError(
            f"num_samples='auto' pools the rounds' normal equations of estimator='linear'; "
            f"estimator={estimator!r} takes a fixed num_samples"
        )
    x = as_rows("x", x)
    background = as_rows("background", background)
    n, d = x.shape
    if background.shape[1] != d:
        raise ValueError(
            f"background must have the {d} features of x, got shape {background.shape}"
        )
    if background.shape[0] == 0:
        raise ValueError(f"background must have at least one row, got shape {background.shape}")
    everything = 2**d - 2 if d < 63 else None
    if auto:
        rtol, atol = _tolerances(rtol, atol, x.dtype)
        max_samples = check_positive_int("max_samples", max_samples)
        num_samples = _ROUND_SAMPLES if everything is None else min(_ROUND_SAMPLES, everything)
        num_samples = max(1, num_samples)
        if max_samples < num_samples:
            raise ValueError(
                f"max_samples={max_samples} is below one round of num_samples='auto': "
                f"{num_samples} coalitions for {d} features"
            )
        if progress is not None:
            progress = check_bool("progress", progress)
    if estimator is None:
        estimator = "linear" if auto or d > CUBIC_MAX_FEATURES else "cubic"
    background = background.astype(x.dtype)
    b = background.shape[0]
    s = min(num_samples, everything) if everything is not None else num_samples
    keys = as_row_keys(key, n)
    model, out = as_model(fn, x, max(1, s) * b)
    t = as_target(target, out, n)
    per_call = max(1, _MAX_ROWS_PER_CALL // b)
    config = _ShapConfig(
        model, background, num_samples, per_call, sampler_fn, return_stderr, estimator
    )
    chunk = _chunks.instances_per_chunk(n, max(1, s) * b, batch_size)
    rows = {"key": keys, "x": x, "index": t.index}
    if auto and n:
        if progress is None:
            progress = sys.stderr.isatty()
        phi, stderr = _auto(
            config, rows, n, d, chunk, rtol, atol, max(1, max_samples // num_samples), progress
        )
    elif auto:
        phi = stderr = jnp.zeros((0, d), x.dtype)
    else:
        phi = _chunks.map_rows(_shap_chunk, config, rows, n, chunk)
        if return_stderr:
            phi, stderr = phi
    phi = mark_invalid(phi, t.valid)
    return (phi, mark_invalid(stderr, t.valid)) if return_stderr else phi


def _as_sampler(sampler) -> Callable:
    if callable(sampler):
        return sampler
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(
            f"sampler={sampler!r} is not one of {tuple(SAMPLERS)} or a callable "
            "(key, num_features, num_samples) -> (masks, weights)"
        )
    return SAMPLERS[sampler]


def _tolerances(rtol, atol, dtype) -> tuple[jax.Array, jax.Array]:
    """`num_samples="auto"`'s tolerances as arrays (0 for the one not given)."""
    if rtol is None and atol is None:
        raise ValueError("num_samples='auto' needs a tolerance: give rtol, atol or both (> 0)")
    out = []
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is None:
            out.append(jnp.zeros((), dtype))
            continue
        check_positive(name, value)
        if jnp.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")
        out.append(jnp.asarray(value, dtype))
    return out[0], out[1]
