"""KernelSHAP's coalition design and constrained regression against brute-force Shapley values.

The reference Shapley values enumerate every subset of a small nonlinear game (a random tanh
MLP evaluated on the instance where a feature is in the coalition and on background rows where
it is not, averaged over the background), so no third-party explainer is needed.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import _coalitions
from xai_jax._coalitions import coalitions, shapley_regression


def _all_masks(num_features):
    codes = np.arange(2**num_features)
    return ((codes[:, None] >> np.arange(num_features)) & 1).astype(bool)


def _codes(masks):
    """Each mask row as the integer whose bit `j` is feature `j`."""
    masks = np.asarray(masks)
    return masks.astype(np.int64) @ (1 << np.arange(masks.shape[-1], dtype=np.int64))


def _game(rng, num_features, num_background=3, hidden=8):
    """`v[code]` for every coalition: `E_bg f(x on the coalition, bg off it) - f_null`."""
    w1 = 2 * rng.standard_normal((num_features, hidden)) / np.sqrt(num_features)
    b1, w2 = rng.standard_normal(hidden), rng.standard_normal(hidden)
    x = rng.standard_normal(num_features)
    background = rng.standard_normal((num_background, num_features))
    masks = _all_masks(num_features)
    inputs = np.where(masks[:, None, :], x, background[None])
    v = (np.tanh(inputs @ w1 + b1) @ w2).mean(axis=1)
    return v - v[0]


def _brute_force_shapley(v, num_features):
    """The Shapley formula: `sum_{S not containing i} |S|! (M-|S|-1)! / M! (v(S+i) - v(S))`."""
    codes = np.arange(2**num_features)
    sizes = _all_masks(num_features).sum(axis=1)
    factor = np.array(
        [
            math.factorial(s) * math.factorial(num_features - s - 1) / math.factorial(num_features)
            for s in range(num_features)
        ]
    )
    phi = np.zeros(num_features)
    for i in range(num_features):
        without = codes[(codes >> i) & 1 == 0]
        phi[i] = np.sum(factor[sizes[without]] * (v[without | (1 << i)] - v[without]))
    return phi


def _explain(masks, weights, v):
    """Shapley estimate from `coalitions`' output for the tabulated game `v`."""
    values = jnp.asarray(v[_codes(masks)])
    return shapley_regression(masks, values, weights, jnp.asarray(v[-1]))


def _kernel(num_features, size):
    return (num_features - 1) / (math.comb(num_features, size) * size * (num_features - size))


def test_reference_matches_permutation_definition(rng):
    m = 4
    v = _game(rng, m)
    phi = np.zeros(m)
    perms = list(itertools.permutations(range(m)))
    for order in perms:
        code = 0
        for j in order:
            phi[j] += v[code | (1 << j)] - v[code]
            code |= 1 << j
    np.testing.assert_allclose(_brute_force_shapley(v, m), phi / len(perms), rtol=1e-12)


@pytest.mark.parametrize("num_features", range(2, 11))
def test_full_budget_is_exact(x64, rng, num_features):
    v = _game(rng, num_features)
    num_samples = 2**num_features - 2 + (num_features % 3)  # more than needed is capped
    masks, weights = coalitions(jax.random.key(0), num_features, num_samples)
    phi = _explain(masks, weights, v)
    assert phi.dtype == jnp.float64
    np.testing.assert_allclose(phi, _brute_force_shapley(v, num_features), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(float(phi.sum()), v[-1], rtol=1e-12, atol=1e-14)


def test_full_budget_float32_is_close_and_efficient(rng):
    m = 8
    v = _game(rng, m)
    masks, weights = coalitions(jax.random.key(0), m, 2**m)
    assert weights.dtype == jnp.float32
    phi = shapley_regression(masks, jnp.asarray(v[_codes(masks)], jnp.float32), weights, v[-1])
    assert phi.dtype == jnp.float32
    np.testing.assert_allclose(phi, _brute_force_shapley(v, m), rtol=1e-4, atol=1e-5)
    assert abs(float(phi.sum()) - v[-1]) <= 1e-6 * max(1.0, abs(v[-1]))


def test_several_outputs_are_solved_column_by_column(x64, rng):
    m = 6
    v = np.stack([_game(rng, m), _game(rng, m)], axis=1)  # [2**M, 2]
    masks, weights = coalitions(jax.random.key(0), m, 2**m - 2)
    values = jnp.asarray(v[_codes(masks)])
    phi = shapley_regression(masks, values, weights, jnp.asarray(v[-1]))
    assert phi.shape == (m, 2)
    for j in range(2):
        single = shapley_regression(masks, values[:, j], weights, jnp.asarray(v[-1, j]))
        np.testing.assert_allclose(phi[:, j], single, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(phi.sum(axis=0), v[-1], rtol=1e-12)


@pytest.mark.parametrize("num_features", [3, 6, 9])
def test_full_budget_enumerates_every_coalition_once_with_kernel_weights(x64, num_features):
    masks, weights = coalitions(jax.random.key(1), num_features, 10**6)
    assert masks.dtype == jnp.bool_
    codes = np.sort(_codes(masks))
    np.testing.assert_array_equal(codes, np.arange(1, 2**num_features - 1))
    sizes = np.asarray(masks.sum(axis=1))
    kernel = np.array([_kernel(num_features, int(s)) for s in sizes])
    np.testing.assert_allclose(weights / kernel, weights[0] / kernel[0], rtol=1e-12)
    np.testing.assert_allclose(float(weights.sum()), 1.0, rtol=1e-12)


# (M, num_samples) -> coalitions shap's rule enumerates: whole size classes {s, M - s} while
# `left * remaining_weight[s] / count >= 1 - 1e-8`. Checked against shap's KernelExplainer
# (its maskMatrix and kernelWeights) when written; e.g. M = 20 with 2048 enumerates sizes 1, 19
# (40 coalitions) and 2, 18 (380) but not 3, 17 (2280 > the 1628 left).
ENUMERATED = {
    (2, 1): 0,
    (4, 8): 0,
    (4, 13): 8,
    (5, 20): 10,
    (7, 100): 56,
    (9, 509): 258,
    (10, 1000): 770,
    (12, 2048): 596,
    (16, 2048): 272,
    (20, 2048): 420,
    (30, 2048): 60,
}


def _class_weights(m):
    """shap's normalised weight of each size class {s, M - s}, s = 1..ceil((M-1)/2)."""
    sizes = np.arange(1, math.ceil((m - 1) / 2) + 1)
    weight = (m - 1) / (sizes * (m - sizes)) * np.where(sizes < m - sizes, 2.0, 1.0)
    return weight / weight.sum()


@pytest.mark.parametrize(("num_features", "num_samples"), sorted(ENUMERATED))
def test_enumerated_count_follows_shaps_rule(num_features, num_samples):
    design = _coalitions._design(num_features, num_samples)
    assert design.masks.shape == (ENUMERATED[(num_features, num_samples)], num_features)
    assert design.num_sampled == min(num_samples, 2**num_features - 2) - design.masks.shape[0]


@pytest.mark.parametrize(("num_features", "num_samples"), [(4, 13), (9, 509), (20, 2048)])
def test_partial_budget_enumerates_shap_classes_and_samples_pairs(x64, num_features, num_samples):
    m, s_total = num_features, num_samples
    masks, weights = (np.asarray(a) for a in coalitions(jax.random.key(2), m, s_total))
    assert masks.shape == (s_total, m) and weights.shape == (s_total,)
    n_fixed = ENUMERATED[(m, s_total)]
    class_weight = _class_weights(m)
    small = np.minimum(masks.sum(axis=1), m - masks.sum(axis=1))

    fixed_classes = np.unique(small[:n_fixed])
    np.testing.assert_array_equal(fixed_classes, np.arange(1, fixed_classes.size + 1))
    for s in fixed_classes:
        count = math.comb(m, s) * (2 if s < m - s else 1)
        rows = small[:n_fixed] == s
        assert rows.sum() == count
        assert np.unique(_codes(masks[:n_fixed][rows])).size == count
        np.testing.assert_allclose(weights[:n_fixed][rows], class_weight[s - 1] / count)

    sampled, sampled_weights = masks[n_fixed:], weights[n_fixed:]
    assert np.all(small[n_fixed:] > fixed_classes.size)  # only classes not enumerated
    np.testing.assert_array_equal(sampled[1::2], ~sampled[0:-1:2])  # set, complement
    np.testing.assert_allclose(sampled_weights, sampled_weights[0])
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)


def test_sampled_sizes_and_members_have_the_design_distribution(x64):
    m, s_total, n_fixed, num_keys = 20, 2048, 420, 48
    keys = jax.random.split(jax.random.key(3), num_keys)
    masks = np.asarray(jax.vmap(lambda k: coalitions(k, m, s_total)[0])(keys))
    sets = masks[:, n_fixed::2].reshape(-1, m)  # one row per draw, the smaller side
    sizes = sets.sum(axis=1)
    assert np.all(sizes <= m // 2)

    # each remaining class is drawn with probability proportional to its weight
    remaining = _class_weights(m)[2:]
    expected = remaining / remaining.sum() * sets.shape[0]
    observed = np.bincount(sizes, minlength=m // 2 + 1)[3:]
    z = (observed - expected) / np.sqrt(expected)
    assert np.all(np.abs(z) < 5), z

    # within a draw every feature is equally likely: feature j is in about sum(s) / M sets
    expected_hits = sizes.sum() / m
    hits = sets.sum(axis=0)
    z = (hits - expected_hits) / np.sqrt(expected_hits)
    assert np.all(np.abs(z) < 5), z


@pytest.mark.parametrize("num_features", [12, 14, 16])
def test_sampling_estimate_is_close_and_averages_closer(x64, rng, num_features):
    m, num_keys = num_features, 16
    v = _game(rng, m)
    exact = _brute_force_shapley(v, m)
    keys = jax.random.split(jax.random.key(m), num_keys)
    masks, weights = jax.vmap(lambda k: coalitions(k, m, 2048))(keys)
    values = jnp.asarray(v[_codes(masks)])
    phi = jax.vmap(shapley_regression, in_axes=(0, 0, 0, None))(
        masks, values, weights, jnp.asarray(v[-1])
    )
    phi = np.asarray(phi)
    errors = np.linalg.norm(phi - exact, axis=1) / np.linalg.norm(exact)
    error_of_mean = np.linalg.norm(phi.mean(axis=0) - exact) / np.linalg.norm(exact)
    # Relative L2 errors measured when written (6 games x M = 12, 14, 16, 8 keys each): at most
    # 4.5% per key; the error of the mean of 8 keys was 0.25 to 0.54 times the mean error, of 16
    # keys 0.16 to 0.28 (pure variance gives 1/sqrt(keys)). So 10% leaves a factor 2, and 0.5
    # still fails a biased design: halving the sampled rows' weight kept the ratio near 0.9.
    assert errors.max() < 0.1, errors
    assert error_of_mean < 0.5 * errors.mean(), (error_of_mean, errors.mean())
    np.testing.assert_allclose(phi.sum(axis=1), v[-1], rtol=1e-12)


# The tests below share one (M, num_samples) so that the program is compiled only a few times.
M_SHARED, S_SHARED, FIXED_SHARED = 9, 300, 72  # sizes 1, 8 and 2, 7 are enumerated


def test_jit_matches_eager_and_does_not_retrace():
    key = jax.random.key(4)
    eager = coalitions(key, M_SHARED, S_SHARED)
    traces = []

    @jax.jit
    def jitted(key):
        traces.append(None)
        return coalitions(key, M_SHARED, S_SHARED)

    out = jitted(key)
    jitted(jax.random.key(5))
    assert len(traces) == 1
    for a, b in zip(out, eager, strict=True):
        np.testing.assert_array_equal(a, b)


def test_vmap_matches_loop_and_keys_are_deterministic():
    keys = jax.random.split(jax.random.key(6), 4)
    masks, weights = jax.vmap(lambda k: coalitions(k, M_SHARED, S_SHARED))(keys)
    for i in range(4):
        loop_masks, loop_weights = coalitions(keys[i], M_SHARED, S_SHARED)
        np.testing.assert_array_equal(masks[i], loop_masks)
        np.testing.assert_array_equal(weights[i], loop_weights)
    again, _ = coalitions(keys[0], M_SHARED, S_SHARED)
    np.testing.assert_array_equal(again, masks[0])
    n = FIXED_SHARED
    for i in range(1, 4):  # the enumerated rows are the same, the sampled ones differ
        np.testing.assert_array_equal(masks[i, :n], masks[0, :n])
        assert not np.array_equal(masks[i, n:], masks[0, n:])


def test_legacy_key_gives_the_same_coalitions():
    legacy = jax.random.PRNGKey(7)
    a = coalitions(legacy, M_SHARED, S_SHARED)
    b = coalitions(jax.random.wrap_key_data(legacy), M_SHARED, S_SHARED)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_jitted_regression_matches_eager(rng):
    v = _game(rng, M_SHARED).astype(np.float32)
    masks, weights = coalitions(jax.random.key(8), M_SHARED, S_SHARED)
    args = (masks, jnp.asarray(v[_codes(masks)]), weights, jnp.asarray(v[-1]))
    np.testing.assert_allclose(jax.jit(shapley_regression)(*args), shapley_regression(*args))


def test_one_feature_has_no_coalitions_and_gets_the_total():
    masks, weights = coalitions(jax.random.key(0), 1, 100)
    assert masks.shape == (0, 1) and masks.dtype == jnp.bool_
    assert weights.shape == (0,)
    np.testing.assert_array_equal(
        shapley_regression(masks, jnp.zeros(0), weights, jnp.float32(2.5)), [2.5]
    )
    np.testing.assert_array_equal(
        shapley_regression(masks, jnp.zeros((0, 2)), weights, jnp.array([1.0, -1.0])),
        [[1.0, -1.0]],
    )


def test_two_features():
    v = np.array([0.0, 1.0, 3.0, 5.0])  # v({0}) = 1, v({1}) = 3, v({0, 1}) = 5
    masks, weights = coalitions(jax.random.key(0), 2, 2)
    np.testing.assert_array_equal(masks, [[True, False], [False, True]])
    np.testing.assert_allclose(weights, [0.5, 0.5])
    np.testing.assert_allclose(_explain(masks, weights, v), [1.5, 3.5])  # exact: (5 -+ 2) / 2

    # one sampled coalition: the one-permutation estimate, which still sums to the total
    masks, weights = coalitions(jax.random.key(0), 2, 1)
    assert masks.shape == (1, 2) and int(masks.sum()) == 1
    np.testing.assert_allclose(weights, [1.0])
    first = int(np.argmax(masks[0]))
    expected = [v[1], 5 - v[1]] if first == 0 else [5 - v[2], v[2]]
    np.testing.assert_allclose(_explain(masks, weights, v), expected)


def test_too_few_coalitions_give_a_finite_minimum_norm_answer(rng):
    v = _game(rng, 8)
    masks, weights = coalitions(jax.random.key(9), 8, 2**8)
    masks, weights = masks[:3], weights[:3]  # {0}, its complement, {1}: 3 rows, 7 unknowns
    phi = _explain(masks, weights, v)
    assert np.all(np.isfinite(phi))
    np.testing.assert_allclose(float(phi.sum()), v[-1], rtol=1e-5)


def test_many_features_use_the_sort_path():
    m = 40  # 301 rows enumerate nothing: 301 * 0.241 / 80 < 1 for the singletons
    masks, weights = (np.asarray(a) for a in coalitions(jax.random.key(10), m, 301))
    assert masks.shape == (301, m)
    sizes = masks[0::2].sum(axis=1)
    assert np.all((sizes >= 1) & (sizes <= m // 2))
    assert np.unique(sizes).size > 5
    np.testing.assert_array_equal(masks[1::2], ~masks[0:-1:2])
    np.testing.assert_allclose(weights, 1 / 301, rtol=1e-6)


@pytest.mark.parametrize("high", [2**32 - 1, 3])  # 3: ties everywhere
def test_both_subset_paths_take_the_smallest_words_ties_by_position(monkeypatch, rng, high):
    bits = rng.integers(0, high, size=(200, 24), endpoint=True).astype(np.uint32)
    size = rng.integers(1, 13, size=200).astype(np.int32)
    rank = np.argsort(np.argsort(bits, axis=1, kind="stable"), axis=1, kind="stable")
    expected = rank < size[:, None]
    counted = _coalitions._smallest(jnp.asarray(bits), jnp.asarray(size))
    monkeypatch.setattr(_coalitions, "_MAX_FEATURES_COUNTING_RANKS", 0)
    sorted_ = _coalitions._smallest(jnp.asarray(bits), jnp.asarray(size))
    np.testing.assert_array_equal(counted, expected)
    np.testing.assert_array_equal(sorted_, expected)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((jax.random.key(0), 0, 10), ValueError, "num_features"),
        ((jax.random.key(0), 4, 0), ValueError, "num_samples"),
        ((jax.random.key(0), 4.0, 10), TypeError, "num_features"),
        ((jax.random.key(0), 4, True), TypeError, "num_samples"),
        ((0, 4, 10), TypeError, "key"),
        ((jax.random.split(jax.random.key(0), 2), 4, 10), ValueError, "key"),
    ],
)
def test_coalitions_rejects_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        coalitions(*args)


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((6, 3), (6,), (6,), ()), None),
        (((6,), (6,), (6,), ()), "masks"),
        (((6, 3), (5,), (6,), ()), "values"),
        (((6, 3), (6,), (5,), ()), "weights"),
        (((6, 3), (6, 2), (6,), ()), "total"),
        (((6, 3), (6,), (6,), (2,)), "total"),
    ],
)
def test_regression_checks_shapes(shapes, match):
    masks, values, weights, total = (jnp.ones(shape) for shape in shapes)
    if match is None:
        assert shapley_regression(masks, values, weights, total).shape == (3,)
        return
    with pytest.raises(ValueError, match=match):
        shapley_regression(masks, values, weights, total)
