"""KernelSHAP's two numerical pieces: the coalitions it evaluates and the regression it solves.

`coalitions` reproduces the sample design of shap's `KernelExplainer.explain` and
`shapley_regression` its `solve` (without the optional L1 feature selection).
`xai_jax.kernel_shap` evaluates the model on the coalitions between the two. The kernel's
weights come from `size_weight`, which `xai_jax.kernels.shapley_kernel` uses too.
"""

import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Bool, Float, Real, Shaped

from xai_jax._checks import as_float_array, as_key, check_positive_int
from xai_jax._linalg import solve_psd
from xai_jax.perturbations import random_bits


def coalitions(
    key: ArrayLike, num_features: int, num_samples: int
) -> tuple[Bool[Array, "S M"], Float[Array, " S"]]:
    """KernelSHAP's coalition masks and regression weights for one instance.

    With `M = num_features`, `S = min(num_samples, 2**M - 2)` coalitions are returned (the
    empty and full ones are the regression's constraints, not samples). As in shap, the
    coalition sizes `s` and `M - s` form one class of kernel weight
    `(M - 1) / (s (M - s))` (counted twice when `s != M - s`), normalised over the classes.
    Going from the smallest size up, every class whose coalitions all fit in what is left of the
    budget (`left * remaining_weight[s] / count >= 1 - 1e-8`) is enumerated, each coalition
    weighted `weight[s] / binom(M, s)` (halved when the class holds two sizes); this part depends
    only on `(M, num_samples)`, is built once in NumPy (float64) and is a constant under `jit`.
    The rest of the budget is sampled: a size from the remaining classes with probability
    proportional to their weight, a uniformly random subset of that size and its complement in
    the next row (the last complement is dropped when the rows left are odd). The sampled rows
    share the leftover weight equally, so the weights sum to 1. With
    `num_samples >= 2**M - 2` everything is enumerated and the regression is exact.

    Deviations from shap; neither changes how often a coalition is drawn on average:

    * A repeated draw is a repeated row with its own weight; shap merges it into the first
      one by adding weight, which gives the same regression.
    * For even `M` the class `s = M / 2` is sampled with complements too (shap draws it alone),
      so that every draw fills two rows and the number of draws is static. The class
      probabilities are set so that each class gets shap's expected share of rows; pairing a
      coalition with its complement is the antithetic ("paired") sampling shap uses for the
      other classes.

    The random bits come from one `random_bits` call (threefry, non-partitionable: faster on
    CPU) of `[D, M + 1]` uint32 words for
    the `D = ceil(sampled rows / 2)` draws (`[D, M]` when a single class is left). The extra
    word picks the draw's size class by comparison with integer thresholds `round(cdf * 2**32)`;
    the `s` smallest of the other `M` words pick the subset (ranked by `M**2` comparisons for
    `M <= 32`, by a sort beyond; exact ties of two words, probability below `M**2 / 2**33` per
    draw, are broken by feature index). No floats are drawn.

    `jit` with `num_features` and `num_samples` static; `vmap` over instances with one key per
    instance (`jax.random.split(key, n)`).

    Args:
        key: a PRNG key (typed or legacy uint32).
        num_features: `M`, the number of players (>= 1).
        num_samples: the coalition budget (>= 1), capped at `2**M - 2`.

    Returns:
        `(masks, weights)`: `[S, M]` booleans (True: the feature takes the instance's value) and
        `[S]` weights in the default float dtype, summing to 1. For `M = 1` both are empty.

    Raises:
        ValueError: `num_features < 1` or `num_samples < 1`.
        TypeError: `key` is not a PRNG key, or a count is not an int.

    Example:
        >>> import jax
        >>> from xai_jax._coalitions import coalitions
        >>> masks, weights = coalitions(jax.random.key(0), 4, 100)  # 14 coalitions: exact
        >>> masks.shape, masks.sum(axis=1).tolist(), round(float(weights.sum()), 6)
        ((14, 4), [1, 3, 1, 3, 1, 3, 1, 3, 2, 2, 2, 2, 2, 2], 1.0)
    """
    key = as_key(key)
    num_features = check_positive_int("num_features", num_features)
    num_samples = check_positive_int("num_samples", num_samples)
    return _coalitions(key, num_features, num_samples)


# One compiled program instead of a dispatch per operation when called eagerly; inlined when
# the caller is jitted.
@functools.partial(jax.jit, static_argnums=(1, 2))
def _coalitions(key: jax.Array, num_features: int, num_samples: int) -> tuple[jax.Array, jax.Array]:
    design = _design(num_features, num_samples)
    dtype = jnp.result_type(float)

    fixed_masks = jnp.asarray(design.masks)
    fixed_weights = jnp.asarray(design.weights, dtype)
    if design.num_sampled == 0:
        return fixed_masks, fixed_weights

    num_draws = -(-design.num_sampled // 2)
    # One call, one word per feature and draw, plus one for the draw's size when there is a
    # choice: a single threefry program is cheaper to run and to compile than two.
    num_classes = design.sizes.size
    bits = random_bits(key, (num_draws, num_features + (num_classes > 1)))
    sizes = jnp.asarray(design.sizes, jnp.int32)
    if num_classes == 1:
        size = jnp.broadcast_to(sizes, (num_draws,))
    else:
        # the class index is the number of thresholds at or below the word
        above = bits[:, -1:] >= jnp.asarray(design.thresholds, jnp.uint32)[None, :]
        size = sizes[jnp.sum(above, axis=1, dtype=jnp.int32)]
    subsets = _smallest(bits[:, :num_features], size)
    # set and complement in consecutive rows; an odd budget drops the last complement
    sampled = jnp.stack([subsets, ~subsets], axis=1).reshape(2 * num_draws, num_features)
    sampled = sampled[: design.num_sampled]
    sampled_weights = jnp.full(design.num_sampled, design.weight_left / design.num_sampled, dtype)
    return (
        jnp.concatenate([fixed_masks, sampled], axis=0),
        jnp.concatenate([fixed_weights, sampled_weights], axis=0),
    )


def shapley_regression(
    masks: Shaped[ArrayLike, "S M"],
    values: Real[ArrayLike, " S *k"],
    weights: Real[ArrayLike, " S"],
    total: Real[ArrayLike, " *k"],
) -> Float[Array, " M *k"]:
    """Shapley values from coalition values by KernelSHAP's constrained weighted least squares.

    Solves `min sum_i w_i (values_i - masks_i . phi)^2` subject to `sum(phi) = total` exactly,
    by eliminating the last feature as shap's `solve` does:
    `phi_rest = argmin |W^(1/2) (y2 - Z phi_rest)|^2` with `y2 = values - masks[:, -1] total`
    and `Z = masks[:, :-1] - masks[:, -1:]`, then `phi_last = total - sum(phi_rest)`. The normal
    equations are solved by an eigendecomposition that gives the minimum-norm solution when too
    few coalitions make them singular (where shap falls back to `lstsq` with a warning), so the
    result is never NaN. With every coalition (`coalitions(..., num_samples >= 2**M - 2)`) the
    result is the exact Shapley value of the set function.

    Args:
        masks: `[S, M]` coalitions (booleans or 0/1), as `coalitions` returns.
        values: `[S]` or `[S, k]`: `E_bg f(coalition_i) - f_null` for each coalition (for `k`
            model outputs).
        weights: `[S]` non-negative regression weights.
        total: `f(x) - f_null`, a scalar for `[S]` values, `[k]` for `[S, k]` values.

    Returns:
        `[M]` Shapley values (`[M, k]` for `[S, k]` values) that sum to `total`, in the floating
        dtype of `values`, `weights` and `total` together.

    Raises:
        ValueError: shapes that do not fit together.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax._coalitions import coalitions, shapley_regression
        >>> masks, weights = coalitions(jax.random.key(0), 3, 6)
        >>> game = lambda m: 2.0 * m[:, 0] + m[:, 1] * m[:, 2]  # feature 0 adds 2, 1 and 2 add 1
        >>> phi = shapley_regression(masks, game(masks.astype(float)), weights, 3.0)
        >>> phi.round(4)
        Array([2. , 0.5, 0.5], dtype=float32)
    """
    masks = jnp.asarray(masks)
    values = as_float_array("values", values)
    weights = as_float_array("weights", weights)
    total = as_float_array("total", total)
    if masks.ndim != 2:
        raise ValueError(f"masks must be 2-D [coalitions, features], got shape {masks.shape}")
    num_rows = masks.shape[0]
    if values.ndim not in (1, 2) or values.shape[0] != num_rows:
        raise ValueError(f"values must be [{num_rows}] or [{num_rows}, k], got {values.shape}")
    if weights.shape != (num_rows,):
        raise ValueError(f"weights must have shape ({num_rows},), got {weights.shape}")
    if total.shape != values.shape[1:]:
        raise ValueError(
            f"total must have shape {values.shape[1:]} for values of shape {values.shape}, "
            f"got {total.shape}"
        )
    dtype = jnp.result_type(values, weights, total)
    return _shapley_regression(
        masks, values.astype(dtype), weights.astype(dtype), total.astype(dtype)
    )


@jax.jit
def _shapley_regression(
    masks: jax.Array, values: jax.Array, weights: jax.Array, total: jax.Array
) -> jax.Array:
    num_rows, num_features = masks.shape
    num_outputs = values.shape[1] if values.ndim == 2 else 1
    y = values.reshape(num_rows, num_outputs)
    total_row = total.reshape(1, num_outputs)
    if num_features == 1:
        return total_row.reshape((1, *values.shape[1:]))
    masks = masks.astype(values.dtype)
    y2 = y - masks[:, -1:] * total_row
    z = masks[:, :-1] - masks[:, -1:]  # [S, M-1]
    zw = z * weights[:, None]
    phi_rest = solve_psd(zw.T @ z, zw.T @ y2, 0.0)  # [M-1, k]
    phi_last = total_row - jnp.sum(phi_rest, axis=0, keepdims=True)
    phi = jnp.concatenate([phi_rest, phi_last], axis=0)
    return phi.reshape((num_features, *values.shape[1:]))


def _smallest(bits: jax.Array, size: jax.Array) -> jax.Array:
    """`[n, M]` masks of the `size[i]` smallest words of each row, ties broken by position."""
    num_features = bits.shape[1]
    index = jnp.arange(num_features, dtype=jnp.int32)
    if num_features <= _MAX_FEATURES_COUNTING_RANKS:
        # For few features, M**2 comparisons per row are several times faster than a sort
        # (XLA's CPU sort runs a comparator loop); past about 32 the [n, M, M] block is not.
        word_i, word_j = bits[:, None, :], bits[:, :, None]
        earlier = index[None, None, :] < index[None, :, None]
        below = (word_i < word_j) | ((word_i == word_j) & earlier)  # [n, j, i]: i before j
        rank = jnp.sum(below, axis=2, dtype=jnp.int32)
        return rank < size[:, None]
    # A one-operand sort: sorting (bits, index) pairs is about 5 times slower on CPU.
    cut = jnp.take_along_axis(jnp.sort(bits, axis=1), (size - 1)[:, None], axis=1)
    below = bits < cut
    at_cut = bits == cut
    room = size[:, None] - jnp.sum(below, axis=1, keepdims=True, dtype=jnp.int32)
    return below | (at_cut & (jnp.cumsum(at_cut, axis=1, dtype=jnp.int32) <= room))


_MAX_FEATURES_COUNTING_RANKS = 32


def size_weight(num_features: int, size: int) -> float:
    """The Shapley kernel summed over the `binom(M, s)` coalitions of one size: shap's per-size
    weight `(M - 1) / (s (M - s))`, in float64 with shap's operations, for `0 < s < M`.

    The one source of the kernel: `kernels.shapley_kernel` divides it by `binom(M, s)` (in
    log space), and the coalition design below normalises it over the size classes.
    """
    return (num_features - 1) / (size * (num_features - size))


class _Design:
    """The key-independent part of `coalitions` for one `(M, num_samples)`."""

    def __init__(self, num_features: int, num_samples: int):
        m = num_features
        budget = min(num_samples, 2**m - 2)
        num_classes = math.ceil((m - 1) / 2)
        num_paired = (m - 1) // 2  # classes {s, M - s} with s != M - s
        weight = np.array([size_weight(m, s) for s in range(1, num_classes + 1)])
        weight[:num_paired] *= 2
        weight /= np.sum(weight)

        # shap's rule, with its float operations, so that the same classes are enumerated
        left = budget
        remaining = weight.copy()
        num_full = 0
        blocks, block_weights = [], []
        for s in range(1, num_classes + 1):
            paired = s <= num_paired
            count = math.comb(m, s) * (2 if paired else 1)
            if left * remaining[s - 1] / count < 1.0 - 1e-8:
                break
            num_full += 1
            left -= count
            if remaining[s - 1] < 1.0:
                remaining /= 1 - remaining[s - 1]
            sets = _all_subsets(m, s)
            if paired:
                sets = np.stack([sets, ~sets], axis=1).reshape(-1, m)
            blocks.append(sets)
            block_weights.append(np.full(count, weight[s - 1] / count))

        self.masks = np.concatenate([np.zeros((0, m), bool), *blocks], axis=0)
        self.weights = np.concatenate([np.zeros(0), *block_weights])
        self.num_sampled = budget - self.masks.shape[0]
        self.weight_left = float(np.sum(weight[num_full:]))
        # Every sampled draw fills two rows (set and complement), so class probabilities
        # proportional to the class weights give each class shap's expected share of rows.
        self.sizes = np.arange(num_full + 1, num_classes + 1)
        cdf = np.cumsum(weight[num_full:]) / self.weight_left if self.sizes.size else np.zeros(0)
        self.thresholds = np.minimum(np.round(cdf[:-1] * 2.0**32), 2**32 - 1).astype(np.uint32)
        for array in (self.masks, self.weights, self.sizes, self.thresholds):
            array.setflags(write=False)


@functools.lru_cache(maxsize=64)
def _design(num_features: int, num_samples: int) -> _Design:
    return _Design(num_features, num_samples)


def _all_subsets(num_features: int, size: int) -> np.ndarray:
    """`[binom(M, s), M]` masks of every subset of `size` features, in lexicographic order."""
    count = math.comb(num_features, size)
    members = np.fromiter(
        itertools.chain.from_iterable(itertools.combinations(range(num_features), size)),
        dtype=np.int64,
        count=count * size,
    ).reshape(count, size)
    masks = np.zeros((count, num_features), bool)
    np.put_along_axis(masks, members, True, axis=1)
    return masks


# --------------------------------------------------------------------------------------------
# Samplers: one coalition design each, all returning `Coalitions`, and what `kernel_shap` needs
# on top of the regression to estimate its variance (the bootstrap of the random draws) and to
# pool rounds (the regression's sufficient statistics).


class Coalitions(NamedTuple):
    """One instance's coalition sample: what a sampler returns.

    `masks [S, M]` (True: the feature takes the instance's value) and `weights [S]` (the
    regression weights, summing to 1) are the design. `draw [S]` and `stratum [S]` say how it
    was drawn, for the standard errors: rows with the same `draw >= 0` came from one
    random draw (a coalition and its complement) and are resampled together, among the draws
    of the same `stratum` (an int in `[0, S)`); rows with `draw = -1` are not random (an
    enumerated part) and are kept in every bootstrap replicate.
    """

    masks: jax.Array
    weights: jax.Array
    draw: jax.Array
    stratum: jax.Array


def shap_sampler(key: jax.Array, num_features: int, num_samples: int) -> Coalitions:
    """shap's `KernelExplainer` design (`coalitions`), with its draws labelled.

    The enumerated classes are fixed rows; each sampled draw (a coalition and its complement)
    is one draw of a single stratum: the size classes are drawn at random, so the whole
    sampled part is one i.i.d. sample.
    """
    masks, weights = _coalitions(key, num_features, num_samples)
    design = _design(num_features, num_samples)
    draw, stratum = _shap_labels(design.masks.shape[0], design.num_sampled)
    return Coalitions(masks, weights, jnp.asarray(draw), jnp.asarray(stratum))


@functools.lru_cache(maxsize=64)
def _shap_labels(num_fixed: int, num_sampled: int) -> tuple[np.ndarray, np.ndarray]:
    fixed = np.full(num_fixed, -1, np.int32)
    draw = np.concatenate([fixed, np.arange(num_sampled, dtype=np.int32) // 2])
    stratum = np.concatenate([fixed, np.zeros(num_sampled, np.int32)])
    return draw, stratum


def leverage_sampler(key: jax.Array, num_features: int, num_samples: int) -> Coalitions:
    """Leverage SHAP's design (Musco & Witter, ICLR 2025), stratified by coalition size.

    The leverage scores of the Shapley kernel regression are equal for every coalition size
    `1..M-1`, so each size gets the same number of rows, `S / (M - 1)`. Pairs `{T, complement}`
    (sizes `s` and `M - s` together; for even `M` the pairs of the middle size) are the draws:
    a size class whose pairs all fit in its share is enumerated, and what it leaves is shared
    again among the others (water-filling), so small and large sizes are exact; every other
    class gets a fixed number of pairs drawn without replacement (uniformly, by ranking one
    random word per pair of the class; beyond `_MAX_RANKED_PAIRS` pairs with replacement, where
    a repeat has probability below `k**2 / (2 * pairs)`). Each row of class `c` weighs
    `W_c / (2 k_c)`, the class's Shapley kernel mass over its rows (the inverse inclusion
    probability times the kernel, as in Leverage SHAP; a fixed count per class instead of
    Bernoulli inclusion is a stratified version of the same estimator). With `S >= 2**M - 2`
    every class is enumerated and the regression is exact. An odd budget uses `S - 1` rows.
    """
    design = _leverage_design(num_features, num_samples)
    parts = [(jnp.asarray(design.fixed_masks), jnp.asarray(design.fixed_weights))]
    keys = jax.random.split(key, max(1, len(design.sampled)))
    for k, (size, num_pairs, count, weight) in zip(keys, design.sampled, strict=False):
        sets = _sample_pairs(k, num_features, size, num_pairs, count)
        rows = jnp.stack([sets, ~sets], axis=1).reshape(2 * count, num_features)
        parts.append((rows, jnp.full(2 * count, weight / (2 * count), jnp.result_type(float))))
    masks = jnp.concatenate([p[0] for p in parts], axis=0)
    weights = jnp.concatenate([p[1].astype(jnp.result_type(float)) for p in parts], axis=0)
    return Coalitions(masks, weights, jnp.asarray(design.draw), jnp.asarray(design.stratum))


SAMPLERS = {"shap": shap_sampler, "leverage": leverage_sampler}

# Drawing without replacement ranks one random word per pair of the class; past this many
# pairs (binom(20, 10) / 2 is 92,378) a repeat is rare enough to draw with replacement.
_MAX_RANKED_PAIRS = 2**17


def _sample_pairs(key, num_features: int, size: int, num_pairs: int, count: int) -> jax.Array:
    """`[count, M]` distinct coalitions of `size`, one per pair `{T, complement}` of the class."""
    middle = 2 * size == num_features
    if num_pairs > _MAX_RANKED_PAIRS:
        bits = random_bits(key, (count, num_features))
        if middle:  # the member of each pair that holds feature 0
            bits = bits.at[:, 0].set(0)
        return _smallest(bits, jnp.full(count, size, jnp.int32))
    words = random_bits(key, (num_pairs,))
    index = jnp.argsort(words)[:count].astype(jnp.int32)
    if middle:  # pair i is {0} and the i-th (size - 1)-subset of features 1..M-1
        rest = _unrank(index, num_features - 1, size - 1)
        return jnp.concatenate([jnp.ones((count, 1), bool), rest], axis=1)
    return _unrank(index, num_features, size)


def _unrank(index: jax.Array, n: int, k: int) -> jax.Array:
    """`[len(index), n]` masks of the `index`-th `k`-subsets of `n` items, lexicographic."""
    table = jnp.asarray(
        [[math.comb(a, b) for b in range(max(k, 1))] for a in range(n)], jnp.int32
    ).reshape(n, max(k, 1))
    left = index
    need = jnp.full(index.shape, k, jnp.int32)
    columns = []
    for i in range(n):
        # subsets (in order) that take item i next: binom(items after i, need - 1)
        c = jnp.where(need > 0, table[n - 1 - i, jnp.maximum(need - 1, 0)], 0)
        take = (need > 0) & (left < c)
        left = jnp.where(take | (need == 0), left, left - c)
        need = need - take.astype(jnp.int32)
        columns.append(take)
    return jnp.stack(columns, axis=1)


class _LeverageDesign:
    """The key-independent part of `leverage_sampler` for one `(M, num_samples)`."""

    def __init__(self, num_features: int, num_samples: int):
        m = num_features
        budget = min(num_samples, 2**m - 2)
        total = sum(size_weight(m, s) for s in range(1, m))
        classes = []  # (size, pairs, share, kernel mass)
        for s in range(1, m // 2 + 1):
            paired = 2 * s != m
            pairs = math.comb(m, s) if paired else math.comb(m - 1, s - 1)
            mass = size_weight(m, s) * (2 if paired else 1) / total
            classes.append((s, pairs, 2 if paired else 1, mass))
        counts = _water_fill([c[1] for c in classes], [c[2] for c in classes], budget // 2)
        fixed_masks, fixed_weights, sampled = [], [], []
        for (s, pairs, _, mass), count in zip(classes, counts, strict=True):
            if count == 0:
                continue
            if count == pairs:
                sets = _all_subsets(m, s)
                if 2 * s == m:
                    sets = sets[sets[:, 0]]
                fixed_masks.append(np.stack([sets, ~sets], axis=1).reshape(-1, m))
                fixed_weights.append(np.full(2 * pairs, mass / (2 * pairs)))
            else:
                sampled.append((s, pairs, count, mass))
        self.fixed_masks = np.concatenate([np.zeros((0, m), bool), *fixed_masks], axis=0)
        self.fixed_weights = np.concatenate([np.zeros(0), *fixed_weights])
        self.sampled = tuple(sampled)
        num_fixed = self.fixed_masks.shape[0]
        draw = [np.full(num_fixed, -1, np.int32)]
        stratum = [np.full(num_fixed, -1, np.int32)]
        first = 0
        for j, (_, _, count, _) in enumerate(sampled):
            draw.append(np.repeat(np.arange(first, first + count, dtype=np.int32), 2))
            stratum.append(np.full(2 * count, j, np.int32))
            first += count
        self.draw, self.stratum = np.concatenate(draw), np.concatenate(stratum)
        self.num_rows = num_fixed + 2 * first
        for array in (self.fixed_masks, self.fixed_weights, self.draw, self.stratum):
            array.setflags(write=False)


def _water_fill(capacity: list[int], share: list[int], total: int) -> list[int]:
    """Integer counts `<= capacity`, summing to `min(total, sum(capacity))`, proportional to
    `share` except where a capacity binds (its excess goes to the others)."""
    counts = [0] * len(capacity)
    active = list(range(len(capacity)))
    left = total
    while active and left > 0:
        unit = left / sum(share[i] for i in active)
        full = [i for i in active if capacity[i] <= unit * share[i]]
        if full:
            for i in full:
                counts[i] = capacity[i]
                left -= capacity[i]
            active = [i for i in active if i not in full]
            continue
        ideal = {i: unit * share[i] for i in active}
        for i in active:
            counts[i] = math.floor(ideal[i])
        rest = left - sum(counts[i] for i in active)
        for i in sorted(active, key=lambda i: counts[i] - ideal[i])[:rest]:
            counts[i] += 1
        break
    return counts


@functools.lru_cache(maxsize=64)
def _leverage_design(num_features: int, num_samples: int) -> _LeverageDesign:
    return _LeverageDesign(num_features, num_samples)


def _strata_of_draws(draw: jax.Array, stratum: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`of_draw [S]`, the stratum of each random draw by its index (`S` for an index no row
    draws), and `present [S]`, whether a draw of that index exists; rows with `draw = -1`
    (enumerated) belong to no draw."""
    num_rows = draw.shape[0]
    slot = jnp.where(draw >= 0, draw, num_rows)
    of_draw = jnp.full(num_rows, num_rows, jnp.int32).at[slot].set(stratum, mode="drop")
    return of_draw, of_draw < num_rows


def bootstrap_multipliers(
    key: jax.Array, draw: jax.Array, stratum: jax.Array, num_replicates: int
) -> jax.Array:
    """`[R, S]` row multiplicities of `R` bootstrap replicates: within each stratum its draws
    are resampled with replacement (a row counts as often as its draw is picked); rows with
    `draw = -1` count once in every replicate."""
    num_rows = draw.shape[0]
    valid = draw >= 0
    of_draw, present = _strata_of_draws(draw, stratum)
    order = jnp.argsort(of_draw, stable=True).astype(jnp.int32)
    counts = jnp.zeros(num_rows + 1, jnp.int32).at[of_draw].add(1)
    offsets = jnp.cumsum(counts) - counts
    size = counts[of_draw]

    def replicate(k):
        u = jax.random.uniform(k, (num_rows,))
        step = (u * size.astype(u.dtype)).astype(jnp.int32)
        pick = order[offsets[of_draw] + jnp.minimum(step, size - 1)]
        times = (
            jnp.zeros(num_rows, jnp.float32)
            .at[jnp.where(present, pick, num_rows)]
            .add(1.0, mode="drop")
        )
        return jnp.where(valid, times[jnp.maximum(draw, 0)], 1.0)

    return jax.vmap(replicate)(jax.random.split(key, num_replicates))


def regression_stats(masks, values, weights, total, multipliers=None):
    """The normal equations of `shapley_regression` for `[S]` values: `(A [.., M-1, M-1],
    b [.., M-1])`, one pair per row of `multipliers [R, S]` (times the weights) when given."""
    masks = masks.astype(values.dtype)
    z = masks[:, :-1] - masks[:, -1:]
    y2 = values - masks[:, -1] * total
    if multipliers is None:
        zw = z * weights[:, None]
        return zw.T @ z, zw.T @ y2
    w = multipliers.astype(values.dtype) * weights[None]  # [R, S]
    zz = (z[:, :, None] * z[:, None, :]).reshape(z.shape[0], -1)
    gram = (w @ zz).reshape(w.shape[0], z.shape[1], z.shape[1])
    return gram, w @ (z * y2[:, None])


def solve_stats(gram, rhs, total):
    """Shapley values `[M]` from `regression_stats`' `(A, b)` and the efficiency total."""
    phi_rest = solve_psd(gram, rhs[:, None], 0.0)[:, 0]
    return jnp.concatenate([phi_rest, (total - jnp.sum(phi_rest))[None]])


# --------------------------------------------------------------------------------------------
# The cubic estimator: the regression with third-order interaction terms (`estimator="cubic"`).
#
# A surrogate game `g(S) = sum_i a_i z_i + sum_{|T| = 3} b_T h_T(S)`, `z = mask`,
# `h_T = prod_{i in T} (z_i - 1/2) + 1/8` (0 at the empty coalition, 1/4 at the full one), is
# fitted to the coalition values by the same weighted least squares with the same exact
# efficiency constraint, the `b_T` ridge-penalised; the estimate is `g`'s exact Shapley values,
# `phi_i = a_i + sum_{T ni i} b_T / 12` (a `h_T` game is symmetric in `T` and null outside it).
# Why it is exact with every coalition: the residual `r = v - g` is orthogonal, in the kernel's
# inner product, to the unpenalised linear columns and vanishes at the empty and the full
# coalition, so KernelSHAP's regression of `r` (exact when enumerated) gives `phi(r) = 0` and
# `phi(v) = phi(g)`, whatever the ridge. Why odd (centred) third-order terms and no
# second-order ones: the built-in samplers draw a coalition with its complement, under which a
# centred product of even order is the same for both and has Shapley value 0; the error of the
# linear fit on paired draws comes from the odd part of `v` beyond the linear one, of which the
# cubic terms are the leading part (Pelegrina et al. 2023 fit the second-order Möbius terms of
# unpaired samples in the same spirit; the regression-adjusted estimators of Witter, Liu &
# Musco 2025 correct a fitted surrogate the same way).

CUBIC_RIDGE = 0.1  # relative to the mean diagonal of the cubic columns' Gram block


@functools.lru_cache(maxsize=64)
def _cubic_terms(num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """The `[T, 3]` feature triples and the `[M, M - 1 + T]` map from the reduced
    coefficients (linear `a_1..a_{M-1}`, then the `b_T`) to Shapley values (the part that does
    not depend on the total)."""
    triples = np.array(list(itertools.combinations(range(num_features), 3)), np.int32)
    triples = triples.reshape(-1, 3)
    num_triples = len(triples)
    to_phi = np.zeros((num_features, num_features - 1 + num_triples))
    to_phi[: num_features - 1, : num_features - 1] = np.eye(num_features - 1)
    to_phi[num_features - 1, : num_features - 1] = -1.0  # a_M = total - sum a - sum b / 4
    to_phi[num_features - 1, num_features - 1 :] = -0.25
    columns = num_features - 1 + np.arange(num_triples)
    for k in range(3):
        np.add.at(to_phi, (triples[:, k], columns), 1.0 / 12.0)
    return triples, to_phi


def cubic_shapley(masks, values, weights, total, draw=None, stratum=None, ridge=CUBIC_RIDGE):
    """Shapley values `[M]` of one instance by the cubic surrogate (see above), and with
    `draw`/`stratum` (as in `Coalitions`) their standard errors `[M]`.

    The standard errors are the leave-one-draw-out (jackknife, HC3-style) sandwich variance
    of the fit over the random draws, within their strata: each draw's influence on the
    estimate (its rows' summed), inflated by `1 / (1 - the draw's leverage)` for the
    on-sample residuals of a fit with many terms; enumerated rows (`draw = -1`) add nothing.
    The ridge's bias is not in them.
    """
    num_rows, num_features = masks.shape
    dtype = values.dtype
    triples, to_phi = _cubic_terms(num_features)
    # an enumerated design is a constant: keep XLA from folding its [P, P] Gram at compile
    # time (seconds in its slow constant evaluator)
    masks, weights = jax.lax.optimization_barrier((masks, weights))
    z = masks.astype(dtype)
    c = z - 0.5
    h = c[:, triples[:, 0]] * c[:, triples[:, 1]] * c[:, triples[:, 2]] + 0.125
    last = z[:, -1:]
    design = jnp.concatenate([z[:, :-1] - last, h - 0.25 * last], axis=1)  # [S, P]
    y2 = values - last[:, 0] * total
    dw = design * weights[:, None]
    gram = dw.T @ design
    diag = jnp.diagonal(gram)
    cubic = jnp.arange(gram.shape[0]) >= num_features - 1
    scale = jnp.sum(jnp.where(cubic, diag, 0)) / max(1, len(triples))
    # the cubic columns' ridge, and float round-off of jitter (at Cholesky's error bound) so
    # that the factor exists where too few coalitions leave the linear block singular
    jitter = gram.shape[0] * jnp.finfo(dtype).eps * jnp.mean(diag)
    penalty = jnp.where(cubic, ridge * scale, 0.0) + jitter
    factor = jax.scipy.linalg.cho_factor(gram + jnp.diag(penalty))
    coef = jax.scipy.linalg.cho_solve(factor, dw.T @ y2)
    to_phi = jnp.asarray(to_phi, dtype)
    # the last value from efficiency (what `to_phi`'s last row says, without its round-off
    # where too few coalitions leave large coefficients)
    phi_rest = to_phi[:-1] @ coef
    phi = jnp.concatenate([phi_rest, (total - jnp.sum(phi_rest))[None]])
    if draw is None:
        return phi
    residual = y2 - design @ coef
    inverse_rows = jax.scipy.linalg.cho_solve(factor, design.T)  # [P, S]
    leverage = weights * jnp.sum(design.T * inverse_rows, axis=0)
    influence = (to_phi @ inverse_rows).T * (weights * residual)[:, None]  # [S, M]
    slot = jnp.where(draw >= 0, draw, num_rows)
    per_draw = jnp.zeros((num_rows, num_features), dtype).at[slot].add(influence, mode="drop")
    # leave-one-draw-out: a coalition's complement has the negated design row, so the pair
    # acts as one row whose leverage is the sum of theirs; a draw the fit passes through
    # (leverage ~1, residual ~0) keeps a finite inflation
    draw_leverage = jnp.zeros(num_rows, dtype).at[slot].add(leverage, mode="drop")
    per_draw = per_draw / jnp.maximum(1.0 - draw_leverage, 1e-3)[:, None]
    of_draw, present = _strata_of_draws(draw, stratum)
    group = jnp.where(present, of_draw, num_rows)
    count = jnp.zeros(num_rows + 1, dtype).at[group].add(1.0)
    mean = jnp.zeros((num_rows + 1, num_features), dtype).at[group].add(per_draw)
    mean = mean / jnp.maximum(count, 1.0)[:, None]
    spread = jnp.where(present[:, None], (per_draw - mean[group]) ** 2, 0.0)
    scale_h = count / jnp.maximum(count - 1.0, 1.0)
    variance = jnp.sum(spread * scale_h[group][:, None], axis=0)
    return phi, jnp.sqrt(variance)
