"""Perturbation attributions: Captum parity (fixtures, and live where torch is installed),
Shapley axioms and sampling rates, the permutation identity, scikit-learn black boxes, chunking.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import (
    feature_ablation,
    feature_permutation,
    occlusion,
    shapley_value_sampling,
    shapley_values,
)

FIXTURES = Path(__file__).parent / "fixtures"
D = dict(np.load(FIXTURES / "captum_perturbation.npz"))


def _linear(d, name, h):
    return h @ jnp.asarray(d[f"{name}_weight"]).T + jnp.asarray(d[f"{name}_bias"])[None]


def _models(d):
    """The fixture's PyTorch models rebuilt in JAX from its weights."""

    def cnn(x):
        h = jax.lax.conv_general_dilated(
            x, jnp.asarray(d["cnn_w_0_weight"]), (2, 2), "VALID",
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )  # fmt: skip
        h = jax.nn.relu(h + jnp.asarray(d["cnn_w_0_bias"])[None, :, None, None])
        return _linear(d, "cnn_w_3", h.reshape(h.shape[0], -1))

    def mlp(x):
        return _linear(d, "mlp_w_2", jnp.tanh(_linear(d, "mlp_w_0", x)))

    def two(inputs):
        a, b = inputs
        return _linear(d, "two_w_a", a) * jnp.tanh(_linear(d, "two_w_b", b))

    return cnn, mlp, two


def _close(ours, theirs, rtol=1e-5):
    """Agreement to float32 round-off, relative to the attribution scale."""
    theirs = np.asarray(theirs)
    scale = max(np.abs(theirs).max(), 1e-12)
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=rtol * scale)


def _ours(d) -> dict:
    """Our attributions for every key of the fixture's Captum runs."""
    cnn, mlp, two = _models(d)
    x, t = d["cnn_x"], d["cnn_target"]
    out = {
        "cnn_occ_a": occlusion(cnn, x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), target=t),
        "cnn_occ_b": occlusion(cnn, x, sliding_window_shapes=(1, 5, 5), strides=(1, 3, 3),
                               baselines=0.1, target=t),
        "cnn_abl": feature_ablation(cnn, x, target=t, feature_mask=d["cnn_block"]),
        "cnn_shap": shapley_values(cnn, x, target=t, feature_mask=d["cnn_quad"]),
    }  # fmt: skip
    x, b, t, m = d["mlp_x"], d["mlp_base"], d["mlp_target"], d["mlp_mask"]
    out["mlp_abl"] = feature_ablation(mlp, x, b, target=t, feature_mask=m)
    out["mlp_abl_all"] = feature_ablation(mlp, x, b, target=t)
    out["mlp_shap"] = shapley_values(mlp, x, b, target=t, feature_mask=m)
    out["mlp_shap_all"] = shapley_values(mlp, x, b, target=t)
    out["mlp_occ"] = occlusion(mlp, x, sliding_window_shapes=(2,), baselines=b, target=t)
    inputs = (d["two_a"], d["two_b"])
    masks = (d["two_mask_a"], d["two_mask_b"])
    for name, attr in (
        ("abl", feature_ablation(two, inputs, target=0)),
        ("shap", shapley_values(two, inputs, target=0, feature_mask=masks)),
        ("occ", occlusion(two, inputs, sliding_window_shapes=((2,), (2,)), strides=(1, 1),
                          target=0)),
    ):  # fmt: skip
        out[f"two_{name}_a"], out[f"two_{name}_b"] = attr
    return out


RESULT_KEYS = [k for k in D if k.split("_")[1] in ("occ", "abl", "shap")]


@pytest.fixture(scope="module")
def ours():
    return _ours(D)


@pytest.mark.parametrize("key", RESULT_KEYS)
def test_matches_captum_fixture(ours, key):
    _close(ours[key], D[key])


def test_matches_captum_live():
    pytest.importorskip("torch")
    pytest.importorskip("captum")
    import sys

    sys.path.insert(0, str(FIXTURES))
    try:
        import make_perturbation_fixtures
    finally:
        sys.path.pop(0)
    with pytest.warns(UserWarning):  # Captum's note on the mask's missing ids
        live = make_perturbation_fixtures.build()
    mine = _ours(live)
    for key in RESULT_KEYS:
        _close(mine[key], live[key])


def test_batch_size_chunks_do_not_change_the_numbers():
    cnn, mlp, _ = _models(D)
    x, t = D["cnn_x"], D["cnn_target"]
    kw = dict(sliding_window_shapes=(1, 5, 5), strides=(1, 3, 3), baselines=0.1, target=t)
    _close(occlusion(cnn, x, batch_size=7, **kw), D["cnn_occ_b"])
    x, b, t, m = D["mlp_x"], D["mlp_base"], D["mlp_target"], D["mlp_mask"]
    _close(shapley_values(mlp, x, b, target=t, feature_mask=m, batch_size=3), D["mlp_shap"])
    _close(feature_ablation(mlp, x, b, target=t, batch_size=5), D["mlp_abl_all"])
    jitted = jax.jit(lambda x: feature_ablation(mlp, x, b, target=t, batch_size=5))
    _close(jitted(x), D["mlp_abl_all"])


@pytest.mark.parametrize("method", ["occlusion", "feature_ablation", "shapley_values"])
def test_every_baseline_form_gives_the_numbers_of_the_full_array(method):
    """A scalar or a row stays one row inside (no [batch, ...] copy): same numbers as the
    baseline written out for every example, eagerly and under jit (a traced scalar too)."""
    _, mlp, _ = _models(D)
    x, t = D["mlp_x"], D["mlp_target"]
    row = np.linspace(-0.5, 0.5, x.shape[1], dtype=np.float32)[None]
    call = {
        "occlusion": lambda b: occlusion(mlp, x, sliding_window_shapes=(2,), baselines=b, target=t),
        "feature_ablation": lambda b: feature_ablation(mlp, x, b, target=t),
        "shapley_values": lambda b: shapley_values(mlp, x[:, :6], b, target=t),
    }[method]
    if method == "shapley_values":
        row = row[:, :6]
    full = np.broadcast_to(row, (x.shape[0], row.shape[1]))
    np.testing.assert_allclose(np.asarray(call(row)), np.asarray(call(full)), rtol=0, atol=1e-6)
    zeros = np.zeros_like(full)
    for b in (None, 0.0, np.float32(0.0), jnp.zeros(())):
        np.testing.assert_allclose(np.asarray(call(b)), np.asarray(call(zeros)), atol=1e-6)
    traced = jax.jit(call)(jnp.float32(0.25))
    np.testing.assert_allclose(np.asarray(traced), np.asarray(call(full * 0 + 0.25)), atol=1e-6)


def test_per_example_feature_mask_and_forward_kwargs():
    _, mlp, _ = _models(D)
    x, b, t = D["mlp_x"], D["mlp_base"], D["mlp_target"]
    masks = np.array([[0, 0, 1, 1, 2, 2], [0, 1, 2, 3, 4, 5], [3, 3, 3, 1, 1, 1], [0] * 6])
    attr = feature_ablation(mlp, x, b, target=t, feature_mask=masks)
    for i in range(4):
        one = feature_ablation(mlp, x[i : i + 1], b[i : i + 1], target=t[i : i + 1],
                               feature_mask=masks[i])  # fmt: skip
        _close(attr[i : i + 1], one)
    scaled = lambda z, scale: mlp(z) * scale
    s = np.arange(1.0, 5.0, dtype=np.float32)[:, None]
    got = feature_ablation(scaled, x, b, target=t, forward_kwargs={"scale": s})
    _close(got, D["mlp_abl_all"] * s)


def _nonlinear(z):  # a 10-feature model with interactions
    w = jnp.linspace(-1.0, 1.0, 10, dtype=z.dtype)
    return (
        jnp.tanh(z @ w) + z[:, 0] * z[:, 1] - 0.5 * z[:, 2] * z[:, 3] * z[:, 4] + jnp.sin(z[:, 5])
    )


def test_exact_shapley_axioms_and_background():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 10)), jnp.float32)
    phi = shapley_values(_nonlinear, x)
    np.testing.assert_allclose(phi.sum(1), _nonlinear(x) - _nonlinear(jnp.zeros((1, 10))),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    bg = jnp.asarray(np.random.default_rng(1).normal(size=(5, 10)), jnp.float32)
    phi = shapley_values(_nonlinear, x, bg)  # a background set: v(S) averaged over it
    np.testing.assert_allclose(phi.sum(1), _nonlinear(x) - _nonlinear(bg).mean(),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    by_row = jnp.stack([shapley_values(_nonlinear, x, bg[k : k + 1]) for k in range(5)]).mean(0)
    np.testing.assert_allclose(phi, by_row, rtol=1e-5, atol=1e-5)


def test_shapley_sampling_converges_at_the_monte_carlo_rate():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 10)), jnp.float32)
    exact = np.asarray(shapley_values(_nonlinear, x))

    def error(n, antithetic=False, seeds=8):
        errs = []
        for s in range(seeds):
            phi = shapley_value_sampling(jax.random.key(s), _nonlinear, x, n_samples=n,
                                         antithetic=antithetic)  # fmt: skip
            np.testing.assert_allclose(  # efficiency holds for every sample count
                phi.sum(1), _nonlinear(x) - _nonlinear(jnp.zeros((1, 10))), rtol=1e-5, atol=1e-5
            )
            errs.append(np.sqrt(np.mean((np.asarray(phi) - exact) ** 2)))
        return float(np.mean(errs))

    e25, e200 = error(25), error(200)
    assert e200 <= 0.4 * e25, (e25, e200)
    assert error(200, antithetic=True) < e200


def test_shapley_sampling_is_keyed():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 10)), jnp.float32)
    a = shapley_value_sampling(jax.random.key(0), _nonlinear, x, n_samples=5)
    b = shapley_value_sampling(jax.random.key(0), _nonlinear, x, n_samples=5)
    c = shapley_value_sampling(jax.random.key(1), _nonlinear, x, n_samples=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("seed", range(5))
def test_feature_permutation_on_a_linear_model_is_the_permutation_identity(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    w = rng.normal(size=5).astype(np.float32)
    mask = np.array([0, 0, 1, 2, 2])
    f = lambda z: z @ jnp.asarray(w)
    attr = np.asarray(feature_permutation(jax.random.key(seed), f, x, feature_mask=mask))
    for g in range(3):
        cols = np.nonzero(mask == g)[0]
        # the group's contribution w . (x_j - x_pi(j)) on its columns, the same for each column
        value = attr[:, cols[0]]
        np.testing.assert_allclose(attr[:, cols], np.repeat(value[:, None], len(cols), 1))
        # recover pi: the row whose group contribution completes x_j's
        contrib = x[:, cols] @ w[cols]
        pi = [int(np.argmin(np.abs(contrib[j] - value[j] - contrib))) for j in range(6)]
        assert sorted(pi) == list(range(6)) and pi != list(range(6))
        np.testing.assert_allclose(value, contrib - contrib[pi], rtol=1e-5, atol=1e-5)
    again = feature_permutation(jax.random.key(seed), f, x, feature_mask=mask)
    np.testing.assert_array_equal(attr, again)


def test_scikit_learn_black_box_in_batches_of_batch_size():
    ensemble = pytest.importorskip("sklearn.ensemble")
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    clf = ensemble.GradientBoostingClassifier(n_estimators=10, random_state=0).fit(X, y)
    calls = []

    def proba(rows):
        if isinstance(rows, np.ndarray):  # a call, not the trace that finds it is NumPy code
            calls.append(len(rows))
        return clf.predict_proba(rows)

    x = X[:4]
    jproba = lambda z: jnp.asarray(clf.predict_proba(np.asarray(z)), jnp.float32)
    key = jax.random.key(0)
    for method, kwargs in [
        (feature_ablation, {}),
        (occlusion, {"sliding_window_shapes": (2,)}),
        (shapley_values, {}),
    ]:
        calls.clear()
        got = method(proba, x, target=1, batch_size=8, **kwargs)
        rows = {feature_ablation: 4 * 6, occlusion: 4 * 5, shapley_values: 4 * 32}[method]
        # a probe of 2 rows, then the rows in calls of 8 (the last padded)
        assert calls.count(2) <= 1 and all(c == 8 for c in calls if c != 2)
        assert 8 * calls.count(8) == -(-rows // 8) * 8
        reference = np.zeros_like(got)
        for i in range(4):  # one example at a time, the model in one NumPy call
            reference[i] = method(lambda z: jproba(z), x[i : i + 1], target=1, **kwargs)[0]
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)
    calls.clear()
    phi = shapley_value_sampling(key, proba, x, target=1, n_samples=4, batch_size=8)
    assert max(calls) <= 8
    np.testing.assert_allclose(phi.sum(1), clf.predict_proba(x)[:, 1] - clf.predict_proba(
        np.zeros((1, 5), np.float32))[0, 1], rtol=1e-5, atol=1e-5)  # fmt: skip
    calls.clear()
    attr = feature_permutation(key, proba, x, target=1, batch_size=8)
    assert attr.shape == x.shape and max(calls) <= 8
