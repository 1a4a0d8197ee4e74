"""xai_jax.metrics: Captum parity (fixtures, and live where torch is installed), NumPy loops
from the papers' definitions, axioms on linear models, ties, randomisation on a trained model,
gradients and chunking."""

import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from xai_jax import (
    completeness,
    deletion,
    faithfulness_correlation,
    infidelity,
    insertion,
    integrated_gradients,
    randomisation_check,
    sensitivity_max,
)
from xai_jax.perturbations import random_bits

FIXTURES = Path(__file__).parent / "fixtures"
D = dict(np.load(FIXTURES / "captum_metrics.npz"))
KEY = jax.random.key(0)

# ---------------------------------------------------------------------------------------------
# Captum: the fixture twins rebuilt in JAX, handed the same perturbation arrays.


def _linear(d, name, h):
    return h @ jnp.asarray(d[f"{name}_weight"]).T + jnp.asarray(d[f"{name}_bias"])[None]


def _conv(d, name, h):
    out = jax.lax.conv_general_dilated(
        h, jnp.asarray(d[f"{name}_weight"]), (1, 1), "VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )  # fmt: skip
    return out + jnp.asarray(d[f"{name}_bias"])[None, :, None, None]


def _twin(data, name):
    w = {k[len(name) + 3 :]: v for k, v in data.items() if k.startswith(f"{name}_w_")}
    if name == "mlp":
        return lambda x: _linear(w, "4", jnp.tanh(_linear(w, "2", jnp.tanh(_linear(w, "0", x)))))

    def cnn(x):
        h = jax.nn.relu(_conv(w, "2", jax.nn.relu(_conv(w, "0", x))))
        return _linear(w, "5", h.reshape(h.shape[0], -1))

    return cnn


def _explainer(model, method):
    """`explain(x, target)`: saliency (the target logit's gradient) or integrated gradients."""
    if method == "sal":
        return lambda v, target: jax.grad(
            lambda u: jnp.take_along_axis(model(u), target[:, None], 1).sum()
        )(v)
    return lambda v, target: integrated_gradients(model, v, target=target, n_steps=20)


def _ours(data):
    out = {}
    for name in ("mlp", "cnn"):
        model, x, t = _twin(data, name), data[f"{name}_x"], data[f"{name}_target"]
        noise, shift = data[f"{name}_noise"], data[f"{name}_shift"]
        for method in ("sal", "ig"):
            explain = _explainer(model, method)
            attr = explain(jnp.asarray(x), jnp.asarray(t))
            out[f"{name}_{method}"] = attr
            for norm in (False, True):
                out[f"{name}_{method}_infid" + ("_norm" if norm else "")] = infidelity(
                    KEY, model, x, attr, target=t, n_perturb_samples=5, normalize=norm,
                    perturb=lambda k, xs, noise=noise: (noise, xs - noise),
                )  # fmt: skip
            out[f"{name}_{method}_sens"] = sensitivity_max(
                KEY, explain, x, n_perturb_samples=5, explain_kwargs={"target": t},
                perturb=lambda k, xs, shift=shift: xs + shift,
            )  # fmt: skip
    return out


RESULT_KEYS = sorted(k for k in D if k.endswith(("_sal", "_ig", "_infid", "_infid_norm", "_sens")))


def _close(ours, theirs, rtol=2e-5):
    theirs = np.asarray(theirs)
    scale = max(np.abs(theirs).max(), 1e-12)
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=rtol, atol=rtol * scale)


@pytest.fixture(scope="module")
def ours():
    return _ours(D)


def _agree(key, ours, theirs):
    if "_infid" in key:
        # a mean of squares of (I.a - (F(x) - F(x - I))), a difference of two O(|F|) numbers:
        # float32 round-off is relative to the outputs, so compare the root on that scale
        np.testing.assert_allclose(np.sqrt(ours), np.sqrt(theirs), rtol=1e-4, atol=2e-6)
    else:
        _close(ours, theirs)


@pytest.mark.parametrize("key", RESULT_KEYS)
def test_matches_captum_fixture(ours, key):
    _agree(key, ours[key], D[key])


def test_matches_captum_live():
    pytest.importorskip("torch")
    pytest.importorskip("captum")
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_metrics_fixtures
    finally:
        sys.path.pop(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum's note that inputs did not require grad
        live = make_metrics_fixtures.build()
    mine = _ours(live)
    for key in RESULT_KEYS:
        _agree(key, mine[key], live[key])


# ---------------------------------------------------------------------------------------------
# Deletion, insertion, faithfulness: NumPy loops from the papers' definitions.

_rng = np.random.default_rng(3)
_W1 = _rng.normal(size=(12, 8)).astype(np.float32)
_W2 = _rng.normal(size=(8, 3)).astype(np.float32)


def _np_model(x):
    return np.tanh(np.asarray(x, np.float64) @ _W1) @ _W2


def _jax_model(x):
    return jnp.tanh(x @ _W1) @ _W2


X = _rng.normal(size=(3, 12)).astype(np.float32)
A = _rng.normal(size=(3, 12)).astype(np.float32)
T = np.array([0, 2, 1])
B = (0.3 * _rng.normal(size=(3, 12))).astype(np.float32)
MASK = np.array([0, 0, 1, 1, 1, 4, 4, 2, 7, 7, 7, 7])  # groups with gaps: 5 groups


def _np_groups(mask):
    ids = np.unique(mask)
    return [np.flatnonzero(mask == g) for g in ids]


def _np_curve(x, a, t, b, n_steps, groups, insert):
    """RISE: rank groups by their attribution sum (stable), remove/insert floor(k G / n)."""
    out = np.zeros((len(x), n_steps + 1))
    for i in range(len(x)):
        scores = np.array([a[i, g].sum() for g in groups])
        order = sorted(range(len(groups)), key=lambda j: -scores[j])  # stable: lower id first
        for k in range(n_steps + 1):
            top = order[: k * len(groups) // n_steps]
            z = b[i].copy() if insert else x[i].copy()
            for j in top:
                z[groups[j]] = (x if insert else b)[i, groups[j]]
            out[i, k] = _np_model(z[None])[0, t[i]]
    return out


@pytest.mark.parametrize("insert", [False, True])
@pytest.mark.parametrize("mask", [None, MASK])
@pytest.mark.parametrize("n_steps", [4, 7])
def test_curves_match_a_numpy_loop(insert, mask, n_steps):
    groups = _np_groups(np.arange(12) if mask is None else mask)
    expected = _np_curve(X, A, T, B, n_steps, groups, insert)
    metric = insertion if insert else deletion
    got = metric(_jax_model, X, A, target=T, baselines=B, n_steps=n_steps, feature_mask=mask)
    np.testing.assert_allclose(got.curve, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.auc, np.trapezoid(expected, dx=1 / n_steps, axis=1), rtol=1e-5)
    chunked = metric(_jax_model, X, A, target=T, baselines=B, n_steps=n_steps,
                     feature_mask=mask, batch_size=4)  # fmt: skip
    np.testing.assert_allclose(chunked.curve, got.curve, rtol=1e-6, atol=1e-6)


def test_ties_rank_the_lower_group_first_and_signed_zeros_tie():
    w = np.arange(1.0, 7.0, dtype=np.float32)
    f = lambda z: z @ w
    x = np.ones((1, 6), np.float32)
    tied = np.array([[0.0, -0.0, 0.0, -0.0, 0.0, -0.0]], np.float32)
    curve = deletion(f, x, tied, n_steps=6).curve
    np.testing.assert_allclose(curve[0], 21.0 - np.concatenate([[0], np.cumsum(w)]))
    # equal scores above a smaller one: the tie is in id order, the smaller one last
    a = np.array([[1.0, 2.0, 2.0, 2.0, -1.0, 2.0]], np.float32)
    curve = deletion(f, x, a, n_steps=6).curve[0]
    removed = [1, 2, 3, 5, 0, 4]
    np.testing.assert_allclose(curve, 21.0 - np.concatenate([[0], np.cumsum(w[removed])]))


def _np_faithfulness(key, x, a, t, b, subset_size, n_subsets, groups):
    g = len(groups)
    draws = jax.jit(
        jax.vmap(lambda r: random_bits(jax.random.fold_in(key, r), (g,))), static_argnums=()
    )(jnp.arange(len(x) * n_subsets))
    draws = np.asarray(draws).reshape(len(x), n_subsets, g)
    out = []
    for i in range(len(x)):
        sums, drops = [], []
        fx = _np_model(x[i][None])[0, t[i]]
        for s in range(n_subsets):
            u = (draws[i, s] >> 8).astype(np.float32) * np.float32(2.0**-24)
            chosen, taken = [], 0  # the documented draw of subset s of example i
            for j in range(g):  # sequential selection (Knuth's Algorithm S)
                left, need = g - j, subset_size - taken
                if need >= left or u[j] * np.float32(left) < np.float32(need):
                    chosen.append(j)
                    taken += 1
            assert len(chosen) == subset_size
            z = x[i].copy()
            attr = 0.0
            for j in chosen:
                z[groups[j]] = b[i, groups[j]]
                attr += a[i, groups[j]].sum()
            sums.append(attr)
            drops.append(fx - _np_model(z[None])[0, t[i]])
        out.append(np.corrcoef(sums, drops)[0, 1])
    return np.array(out)


@pytest.mark.parametrize("mask", [None, MASK])
def test_faithfulness_correlation_matches_a_numpy_loop(mask):
    groups = _np_groups(np.arange(12) if mask is None else mask)
    expected = _np_faithfulness(KEY, X, A, T, B, 3, 20, groups)
    kw = dict(target=T, baselines=B, subset_size=3, n_subsets=20, feature_mask=mask)
    got = faithfulness_correlation(KEY, _jax_model, X, A, **kw)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    chunked = faithfulness_correlation(KEY, _jax_model, X, A, batch_size=7, **kw)
    np.testing.assert_allclose(chunked, got, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n, k", [(6, 2), (6, 6), (5, 1), (7, 3)])
def test_subsets_are_uniform_over_the_k_subsets(n, k):
    """Every row holds exactly k columns, and each of the binom(n, k) subsets comes up about
    equally often (40,000 rows: every count within 5 sigma of the mean)."""
    from math import comb

    from xai_jax.metrics import _subset
    from xai_jax.perturbations import random_bits

    rows = 40_000
    member = np.asarray(jax.jit(_subset, static_argnums=1)(random_bits(KEY, (rows, n)), k))
    assert (member.sum(1) == k).all()
    codes = member.astype(np.int64) @ (1 << np.arange(n))
    counts = np.bincount(codes, minlength=1 << n)
    counts = counts[counts > 0]
    m = comb(n, k)
    assert len(counts) == m
    p = 1 / m
    sigma = np.sqrt(rows * p * (1 - p))
    assert np.abs(counts - rows * p).max() < 5 * sigma + 1e-9


def test_a_constant_drop_gives_nan_as_scipy():
    # the model counts the features at baseline: every subset drops it by subset_size
    f = lambda z: (z == 0).sum(1).astype(jnp.float32) + 0.0 * z[:, 0]
    a = np.arange(12, dtype=np.float32)[None]
    r = faithfulness_correlation(KEY, f, np.ones((1, 12), np.float32), a, subset_size=4)
    assert np.isnan(r).all()


def _input_x_gradient(f, x):
    return x * jax.grad(lambda v: f(v).sum())(x)


def test_linear_model_axioms():
    w = np.abs(_rng.normal(size=12)).astype(np.float32) + 0.1
    f = lambda z: z @ w + 0.5
    x = np.abs(X) + 0.1  # every contribution x_i w_i positive
    a = _input_x_gradient(f, jnp.asarray(x))
    r = faithfulness_correlation(KEY, f, x, a, subset_size=5, n_subsets=30)
    np.testing.assert_allclose(r, 1.0, atol=1e-5)
    curve = deletion(f, x, a, n_steps=12).curve
    assert (np.diff(np.asarray(curve), axis=1) < 0).all()  # strictly falling
    np.testing.assert_allclose(completeness(f, x, a), 0.0, atol=1e-5)
    up = insertion(f, x, a, n_steps=12).curve
    assert (np.diff(np.asarray(up), axis=1) > 0).all()
    np.testing.assert_allclose(up - 0.5, (x @ w)[:, None] - (curve - 0.5), atol=1e-4)


def test_completeness_is_the_ig_convergence_delta():
    attr, delta = integrated_gradients(
        _jax_model, X, B, target=T, n_steps=8, return_convergence_delta=True
    )
    np.testing.assert_allclose(completeness(_jax_model, X, attr, B, target=T), delta, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Infidelity and sensitivity: the defaults, norms, chunks.


def test_infidelity_of_exact_attributions_of_a_linear_model_is_zero():
    w = _rng.normal(size=12).astype(np.float32)
    f = lambda z: z @ w
    a = np.broadcast_to(w, X.shape)
    np.testing.assert_allclose(infidelity(KEY, f, X, a, n_perturb_samples=7), 0.0, atol=1e-10)
    # normalize makes a scaled explanation as good as the exact one
    np.testing.assert_allclose(infidelity(KEY, f, X, 3 * a, normalize=True), 0.0, atol=1e-6)
    assert (infidelity(KEY, f, X, 3 * a) > 0.1).all()


def test_default_perturbations_are_deterministic_and_of_the_given_scale():
    # sensitivity of the identity explanation: ||noise||_inf / ||x||_inf <= radius / ||x||_inf
    x = np.ones((4, 50), np.float32)
    s = sensitivity_max(KEY, lambda v: v, x, norm_ord=np.inf, perturb_radius=0.1)
    assert ((s > 0.09) & (s <= 0.1)).all()
    again = sensitivity_max(KEY, lambda v: v, x, norm_ord=np.inf, perturb_radius=0.1)
    np.testing.assert_array_equal(s, again)
    # infidelity of zero attributions is E[(F(x) - F(x - I))^2] = stdev^2 |w|^2 for a linear F
    w = np.ones(50, np.float32)
    value = infidelity(KEY, lambda z: z @ w, x, 0 * x, stdev=0.2, n_perturb_samples=400)
    np.testing.assert_allclose(value, 0.04 * 50, rtol=0.15)


@pytest.mark.parametrize("norm_ord", ["fro", 1, np.inf, 3])
def test_sensitivity_norms_match_numpy(norm_ord):
    shift = (0.05 * _rng.normal(size=(3 * 4, 12))).astype(np.float32)
    explain = lambda v: jnp.tanh(v) * 2
    got = sensitivity_max(KEY, explain, X, n_perturb_samples=4, norm_ord=norm_ord,
                          perturb=lambda k, xs: xs + shift)  # fmt: skip
    p = 2 if norm_ord == "fro" else norm_ord
    e = np.tanh(X.astype(np.float64)) * 2
    ep = np.tanh(np.repeat(X, 4, 0).astype(np.float64) + shift) * 2
    ratio = np.linalg.norm(np.repeat(e, 4, 0) - ep, ord=p, axis=1) / np.repeat(
        np.linalg.norm(e, ord=p, axis=1), 4
    )
    np.testing.assert_allclose(got, ratio.reshape(3, 4).max(1), rtol=1e-5)


def test_chunks_draw_other_keys_but_keep_the_metric():
    w = _rng.normal(size=12).astype(np.float32)
    f = lambda z: jnp.tanh(z @ w)
    x = np.repeat(X[:1], 6, 0)
    whole = infidelity(KEY, f, x, x, n_perturb_samples=200)
    chunked = infidelity(KEY, f, x, x, n_perturb_samples=200, batch_size=2)
    np.testing.assert_allclose(chunked, whole, rtol=0.3)  # same distribution
    assert not np.array_equal(chunked, whole)


# ---------------------------------------------------------------------------------------------
# Gradients: a faithfulness loss to train against.


def test_grad_through_infidelity_and_deletion():
    x = jnp.asarray(X)
    f = lambda p, z: jnp.tanh(z @ p) @ _W2
    w = jnp.asarray(_W1)

    def loss(p):
        a = jax.grad(lambda v: jnp.take_along_axis(f(p, v), T[:, None], 1).sum())(x)
        fit = infidelity(KEY, lambda z: f(p, z), x, a, target=T, n_perturb_samples=4)
        drop = deletion(lambda z: f(p, z), x, a * x, target=T, n_steps=4).auc
        return fit.sum() + drop.sum()

    g = jax.jit(jax.grad(loss))(w)
    assert np.isfinite(g).all() and np.abs(g).max() > 0
    infid = lambda a: infidelity(KEY, _jax_model, X, a, target=T, n_perturb_samples=3)
    check_grads(infid, (jnp.asarray(A),), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    curve = lambda z: deletion(_jax_model, z, A, target=T, n_steps=4, baselines=B).auc
    check_grads(curve, (jnp.asarray(X),), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


# ---------------------------------------------------------------------------------------------
# Randomisation on a trained model (the digits, a small MLP trained in a second).


def _digits_model():
    import optax
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = jnp.asarray(digits.data[:600] / 16.0, jnp.float32)
    y = jnp.asarray(digits.target[:600])
    keys = jax.random.split(jax.random.key(1), 3)
    sizes = [(64, 32), (32, 32), (32, 10)]
    params = {
        f"layer{i}": {"w": jax.random.normal(k, s) / np.sqrt(s[0]), "b": jnp.zeros((1, s[1]))}
        for i, (k, s) in enumerate(zip(keys, sizes, strict=True))
    }

    def apply(p, v):
        h = jnp.tanh(v @ p["layer0"]["w"] + p["layer0"]["b"])
        h = jnp.tanh(h @ p["layer1"]["w"] + p["layer1"]["b"])
        return h @ p["layer2"]["w"] + p["layer2"]["b"]

    opt = optax.adam(1e-2)

    @jax.jit
    def train(p):
        def step(carry, _):
            p, s = carry
            g = jax.grad(
                lambda q: optax.softmax_cross_entropy_with_integer_labels(apply(q, x), y).mean()
            )(p)
            u, s = opt.update(g, s)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p, opt.init(p)), None, length=200)[0][0]

    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes int and float
        params = train(params)
    return apply, params, x, y


def test_randomisation_lowers_the_similarity_of_gradient_maps():
    apply, params, x, y = _digits_model()
    assert (apply(params, x).argmax(1) == y).mean() > 0.9
    x, t = x[:16], y[:16]

    def saliency(p, v):
        return jax.grad(lambda u: jnp.take_along_axis(apply(p, u), t[:, None], 1).sum())(v)

    # absolute gradient maps (Quantus' default): the input's structure survives the top layer's
    # randomisation in part, and is gone once every layer is random
    absolute = lambda p, v: jnp.abs(saliency(p, v))
    sims = randomisation_check(KEY, absolute, params, x)
    assert sims.shape == (3, 16)
    means = np.asarray(sims).mean(axis=1)
    assert means[0] < 0.5 and means[2] < 0.05, means
    assert means[0] > means[1] > means[2] and means[1] > means[2] + 0.05, means
    # row 0 is the top layer randomised alone: Spearman as scipy's on those maps
    from scipy.stats import spearmanr

    rnd = {**params, "layer2": _cascade_layer(params["layer2"], jax.random.fold_in(KEY, 0))}
    a, b = np.asarray(absolute(params, x)), np.asarray(absolute(rnd, x))
    for i in range(3):
        np.testing.assert_allclose(sims[0, i], spearmanr(a[i], b[i])[0], atol=1e-5)


def _cascade_layer(layer, key):
    """The documented randomisation of one layer: each array -> normals of its own std."""
    from xai_jax.perturbations import standard_normal

    leaves, treedef = jax.tree.flatten(layer)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            standard_normal(k, v.shape, v.dtype) * jnp.std(v)
            for k, v in zip(keys, leaves, strict=True)
        ],
    )


@pytest.mark.parametrize("similarity", ["spearman", "pearson", "cosine"])
def test_similarities_match_scipy_with_ties(similarity):
    from scipy.spatial.distance import cosine
    from scipy.stats import pearsonr, spearmanr

    params = {"w": jnp.array([[1.0, 1.0, 2.0, 0.0, 3.0, 1.0]])}
    v = jnp.array([[0.0, 1.0, 2.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 0.5, 0.0, 2.0]])
    explain = lambda p, z: jnp.round(z * p["w"])  # ties inside a map
    sims = randomisation_check(KEY, explain, params, v, similarity=similarity)
    rnd = {"w": _cascade_layer(params["w"], jax.random.fold_in(KEY, 0))}
    ref = {
        "spearman": lambda p, q: spearmanr(p, q)[0],
        "pearson": lambda p, q: pearsonr(p, q)[0],
        "cosine": lambda p, q: 1 - cosine(p, q),
    }[similarity]
    a, b = np.asarray(explain(params, v)), np.asarray(explain(rnd, v))
    for i in range(2):
        np.testing.assert_allclose(sims[0, i], ref(a[i], b[i]), atol=1e-6)
