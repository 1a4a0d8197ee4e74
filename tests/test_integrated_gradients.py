"""Integrated gradients and its variants: Captum parity (fixtures), axioms, chunking, errors."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xai_jax import (
    expected_gradients,
    integrated_gradients,
    layer_conductance,
    layer_integrated_gradients,
    neuron_conductance,
    smoothgrad,
)
from xai_jax.quadrature import METHODS

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------------------------------------
# The fixture models rebuilt in JAX from the saved PyTorch weights.


def _linear(d, name, h):
    return h @ jnp.asarray(d[f"w_{name}_weight"]).T + jnp.asarray(d[f"w_{name}_bias"])[None]


def _conv(d, name, h):
    out = jax.lax.conv_general_dilated(
        h,
        jnp.asarray(d[f"w_{name}_weight"]),
        (1, 1),
        "VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    return out + jnp.asarray(d[f"w_{name}_bias"])[None, :, None, None]


def _fixture_model(name):
    """`(data, layer_fn, head_fn)` with `head_fn(layer_fn(x))` the PyTorch model."""
    d = dict(np.load(FIXTURES / f"captum_{name}.npz"))
    if name == "mlp":
        layer_fn = lambda x: jnp.tanh(_linear(d, "0", x))
        head_fn = lambda h: _linear(d, "4", jnp.tanh(_linear(d, "2", h)))
    else:
        layer_fn = lambda x: jax.nn.relu(_conv(d, "0", x))

        def head_fn(h):
            h = jax.nn.relu(_conv(d, "2", h))
            return _linear(d, "5", h.reshape(h.shape[0], -1))

    return d, layer_fn, head_fn


MODELS = ("mlp", "cnn")


def _close(ours, theirs, scale=None, rtol=1e-5):
    """Agreement relative to the attribution scale (float32 Captum vs float32 JAX)."""
    theirs = np.asarray(theirs)
    scale = max(np.abs(theirs).max() if scale is None else scale, 1e-12)
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=rtol * scale)


def _sum_scale(attr):
    """Scale of the per-example attribution sums: what a convergence delta is relative to."""
    return np.abs(np.asarray(attr).reshape(len(attr), -1).sum(1)).max()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("internal_batch_size", [None, 5])
def test_ig_matches_captum(name, method, internal_batch_size):
    d, layer_fn, head_fn = _fixture_model(name)
    model = lambda x: head_fn(layer_fn(x))
    attr, delta = integrated_gradients(
        model,
        d["x"],
        d["baselines"],
        target=d["target"],
        method=method,
        n_steps=int(d["n_steps"]),
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    _close(attr, d[f"ig_{method}"])
    _close(delta, d[f"ig_{method}_delta"], _sum_scale(attr))


@pytest.mark.parametrize("name", MODELS)
def test_ig_without_multiplying_by_inputs_matches_captum(name):
    d, layer_fn, head_fn = _fixture_model(name)
    attr = integrated_gradients(
        lambda x: head_fn(layer_fn(x)),
        d["x"],
        d["baselines"],
        target=d["target"],
        n_steps=int(d["n_steps"]),
        multiply_by_inputs=False,
    )
    _close(attr, d["ig_nomul_gausslegendre"])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
@pytest.mark.parametrize("internal_batch_size", [None, 7])
def test_layer_methods_match_captum(name, method, internal_batch_size):
    d, layer_fn, head_fn = _fixture_model(name)
    kw = dict(
        target=d["target"],
        method=method,
        n_steps=int(d["n_steps"]),
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    attr, delta = layer_integrated_gradients(layer_fn, head_fn, d["x"], d["baselines"], **kw)
    _close(attr, d[f"lig_{method}"])
    _close(delta, d[f"lig_{method}_delta"], _sum_scale(attr))
    attr, delta = layer_conductance(layer_fn, head_fn, d["x"], d["baselines"], **kw)
    _close(attr, d[f"lc_{method}"])
    _close(delta, d[f"lc_{method}_delta"], _sum_scale(attr))
    del kw["return_convergence_delta"]
    neuron = tuple(int(i) for i in d["neuron"])
    attr = neuron_conductance(layer_fn, head_fn, d["x"], neuron, d["baselines"], **kw)
    _close(attr, d[f"nc_{method}"])


# ---------------------------------------------------------------------------------------------
# Axioms.

_rng = np.random.default_rng(7)


def _random_mlp(rng, d_in, d_hidden=8, d_out=3, dtype=np.float32):
    w1 = jnp.asarray(rng.normal(size=(d_in, d_hidden)) / np.sqrt(d_in), dtype)
    w2 = jnp.asarray(rng.normal(size=(d_hidden, d_out)), dtype)
    return lambda x: jnp.tanh(x @ w1) @ w2


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 6), batch=st.integers(1, 4))
def test_completeness_improves_with_steps(seed, d, batch):
    rng = np.random.default_rng(seed)
    fn = _random_mlp(rng, d)
    x = rng.normal(size=(batch, d)).astype(np.float32)
    b = rng.normal(size=(batch, d)).astype(np.float32)
    gap = np.abs(np.asarray(fn(x) - fn(b))[:, 1]).max() + 1e-3
    deltas = [
        np.abs(np.asarray(integrated_gradients(
            fn, x, b, target=1, method="riemann_middle", n_steps=n,
            return_convergence_delta=True)[1])).max()
        for n in (4, 64)
    ]  # fmt: skip
    assert deltas[1] <= max(deltas[0] / 20, 2e-5 * gap)
    _, delta = integrated_gradients(fn, x, b, target=1, n_steps=32, return_convergence_delta=True)
    assert np.abs(np.asarray(delta)).max() <= 1e-4 * gap


@pytest.mark.parametrize("method", METHODS)
def test_linear_model_is_exact(method):
    w = jnp.asarray(_rng.normal(size=(5, 2)), jnp.float32)
    x = jnp.asarray(_rng.normal(size=(3, 5)), jnp.float32)
    b = jnp.asarray(_rng.normal(size=(1, 5)), jnp.float32)
    attr, delta = integrated_gradients(
        lambda v: v @ w, x, b, target=1, method=method, n_steps=7, return_convergence_delta=True
    )
    exact = (x - b) * w[:, 1][None]
    # Captum's trapezoid weights sum to (n-1)/n (see `quadrature`): kept for parity
    factor = 6 / 7 if method == "riemann_trapezoid" else 1.0
    np.testing.assert_allclose(attr, factor * exact, rtol=1e-5, atol=1e-6)
    if method != "riemann_trapezoid":
        np.testing.assert_allclose(delta, 0, atol=1e-5)


def test_ignored_feature_gets_zero_and_symmetric_features_get_equal_shares():
    fn = lambda v: jnp.tanh(v[:, :1] * v[:, 1:2] + v[:, 1:2] * v[:, 2:3]) * 2.0
    x = jnp.array([[0.3, 0.9, 0.3, 5.0], [-1.0, 0.5, -1.0, 2.0]])  # x0 == x2, x3 unused
    attr = integrated_gradients(fn, x, 0.0, target=0)
    np.testing.assert_array_equal(attr[:, 3], 0.0)
    np.testing.assert_allclose(attr[:, 0], attr[:, 2], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Inputs: pytrees, baselines, forward_kwargs, targets.


def test_pytree_inputs_forward_kwargs_and_baseline_forms():
    w = jnp.asarray(_rng.normal(size=(3, 2)), jnp.float32)
    x = {"a": jnp.asarray(_rng.normal(size=(4, 3)), jnp.float32),
         "b": jnp.asarray(_rng.normal(size=(4, 2, 2)), jnp.float32)}  # fmt: skip
    scale = jnp.asarray(_rng.normal(size=(4, 1)), jnp.float32)

    def fn(t, scale):
        return jnp.tanh(t["a"] @ w + t["b"].sum(1)) * scale

    def flat(v, scale):  # the same model on one concatenated input
        return fn({"a": v[:, :3], "b": v[:, 3:].reshape(-1, 2, 2)}, scale)

    concat = jnp.concatenate([x["a"], x["b"].reshape(4, 4)], axis=1)
    expected = integrated_gradients(flat, concat, 0.5, target=1, forward_kwargs={"scale": scale})
    for baselines in (0.5, {"a": 0.5, "b": jnp.full((1, 2, 2), 0.5)},
                      {"a": jnp.full((4, 3), 0.5), "b": 0.5}):  # fmt: skip
        attr = integrated_gradients(fn, x, baselines, target=1, forward_kwargs={"scale": scale})
        got = jnp.concatenate([attr["a"], attr["b"].reshape(4, 4)], axis=1)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_target_matrix_for_outputs_of_higher_rank():
    w = jnp.asarray(_rng.normal(size=(3, 6)), jnp.float32)
    fn = lambda v: jnp.tanh(v @ w).reshape(-1, 2, 3)
    x = jnp.asarray(_rng.normal(size=(4, 3)), jnp.float32)
    target = jnp.array([[0, 2], [1, 0], [1, 2], [0, 0]])
    attr = integrated_gradients(fn, x, target=target)
    flat = integrated_gradients(
        lambda v: fn(v).reshape(-1, 6), x, target=target @ jnp.array([3, 1])
    )
    np.testing.assert_allclose(attr, flat, rtol=1e-6)


def test_scalar_outputs_need_no_target():
    fn = lambda v: jnp.sum(jnp.sin(v), axis=1)
    x = jnp.asarray(_rng.normal(size=(3, 4)), jnp.float32)
    a = integrated_gradients(fn, x)
    b = integrated_gradients(lambda v: fn(v)[:, None], x)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_traced_out_of_range_target_gives_nan_not_a_clamped_answer():
    fn = _random_mlp(_rng, 4)
    x = jnp.asarray(_rng.normal(size=(2, 4)), jnp.float32)
    attr = jax.jit(lambda t: integrated_gradients(fn, x, target=t))(jnp.array([1, 3]))
    assert np.isfinite(attr[0]).all() and np.isnan(attr[1]).all()
    with jax.enable_x64(True):  # an int32 target against int64 output dims, strict promotion
        attr = jax.jit(lambda t: integrated_gradients(fn, x, target=t))(
            jnp.array([1, 3], jnp.int32)
        )
    assert np.isfinite(attr[0]).all() and np.isnan(attr[1]).all()


# ---------------------------------------------------------------------------------------------
# Chunking: same numbers, no recompilation, flat memory.


@pytest.mark.parametrize("internal_batch_size", [1, 3, 8, 10, 1000])
def test_chunking_changes_nothing(internal_batch_size):
    fn = _random_mlp(_rng, 5)
    x = jnp.asarray(_rng.normal(size=(2, 5)), jnp.float32)
    kw = dict(target=jnp.array([0, 2]), method="riemann_right", n_steps=9)
    expected = integrated_gradients(fn, x, **kw)
    eager = integrated_gradients(fn, x, internal_batch_size=internal_batch_size, **kw)
    traced = jax.jit(
        lambda v: integrated_gradients(fn, v, internal_batch_size=internal_batch_size, **kw)
    )(x)
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(traced, expected, rtol=1e-5, atol=1e-7)


def test_more_examples_than_internal_batch_size_run_in_blocks_of_examples():
    # eagerly, 7 examples at internal_batch_size=3 run as blocks of 3 examples (the last one
    # padded): every model call sees at most 3 rows, whatever the batch, and per-row baselines,
    # targets and forward_kwargs follow their rows. The model starts with tanh, so no affine
    # prefix is hoisted and every path point goes through `fn` (test_affine covers the other case)
    w = jnp.asarray(_rng.normal(size=(5, 3)), jnp.float32)
    rows_per_call = []

    def fn(v, scale):
        rows_per_call.append(v.shape[0])
        return jnp.tanh(v) @ w * scale[:, None]

    x, b = (jnp.asarray(_rng.normal(size=(7, 5)), jnp.float32) for _ in range(2))
    kw = dict(target=jnp.arange(7) % 3, n_steps=6, return_convergence_delta=True)
    kw["forward_kwargs"] = {"scale": jnp.linspace(0.5, 2.0, 7, dtype=jnp.float32)}
    attr, delta = integrated_gradients(fn, x, b, internal_batch_size=3, **kw)
    # after the output-shape probe on all 7 rows (traced once, compiled once): path points of
    # 3 rows, the delta's end points `[x; baseline]` of a block, and the trace of a block that
    # looks for an affine prefix
    assert sorted(rows_per_call[1:]) == [3, 3, 6]
    expected, expected_delta = integrated_gradients(fn, x, b, **kw)
    np.testing.assert_allclose(attr, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(delta, expected_delta, atol=1e-6)


def test_eager_calls_compile_once():
    traces = []
    w = jnp.asarray(_rng.normal(size=(5, 3)), jnp.float32)

    def fn(v):
        traces.append(v.shape)
        return jnp.tanh(v @ w)

    for seed in range(3):
        x = jnp.asarray(np.random.default_rng(seed).normal(size=(2, 5)), jnp.float32)
        integrated_gradients(fn, x, target=1, n_steps=10, internal_batch_size=6,
                             return_convergence_delta=True)  # fmt: skip
    after_first = len(traces)
    assert after_first > 0
    x = jnp.asarray(np.random.default_rng(9).normal(size=(2, 5)), jnp.float32)
    integrated_gradients(fn, x, target=1, n_steps=10, internal_batch_size=6,
                         return_convergence_delta=True)  # fmt: skip
    assert len(traces) == after_first


def test_eager_layer_methods_compile_once():
    traces = []

    def layer_fn(v):
        traces.append(v.shape)
        return jnp.tanh(v)

    head_fn = lambda h: h @ jnp.ones((4, 3), jnp.float32)
    kw = dict(target=1, internal_batch_size=6)
    for i in range(3):
        x = jnp.full((2, 4), 0.1 * i, jnp.float32)
        layer_conductance(layer_fn, head_fn, x, return_convergence_delta=True, **kw)
        neuron_conductance(layer_fn, head_fn, x, 1, **kw)
        layer_integrated_gradients(layer_fn, head_fn, x, **kw)
        if i == 0:
            after_first = len(traces)
    assert len(traces) == after_first


def _temp_bytes(n_steps, internal_batch_size):
    w1 = jnp.ones((64, 512), jnp.float32) / 64
    w2 = jnp.ones((512, 10), jnp.float32)
    fn = lambda v, w1, w2: jnp.tanh(v @ w1) @ w2

    def ig(x, w1, w2):
        return integrated_gradients(lambda v: fn(v, w1, w2), x, target=3, n_steps=n_steps,
                                    internal_batch_size=internal_batch_size)  # fmt: skip

    x = jnp.ones((16, 64), jnp.float32)
    compiled = jax.jit(ig).lower(x, w1, w2).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory_does_not_grow_with_n_steps_under_jit():
    # only the quadrature tables (two scalars per step) grow, not the model's activations
    assert _temp_bytes(400, 64) <= _temp_bytes(50, 64) + 8 * 400
    assert _temp_bytes(400, None) > 4 * _temp_bytes(50, None)  # what chunking prevents


def test_chunks_under_jit_embed_no_input_sized_constant():
    # the scan's zero is staged in the caller's program, not a literal the size of the sum
    x = jnp.ones((256, 96), jnp.float32)
    fn = lambda v: jnp.tanh(jnp.tanh(v) @ jnp.full((96, 3), 0.01))

    def ig(x):
        return integrated_gradients(fn, x, target=1, n_steps=8, internal_batch_size=512)

    consts = jax.make_jaxpr(ig)(x).consts
    assert max((np.size(c) for c in consts), default=0) < x.size


_RSS_SCRIPT = """
import sys
import jax.numpy as jnp
from xai_jax import integrated_gradients
n_steps, ibs = int(sys.argv[1]), (None if sys.argv[2] == "None" else int(sys.argv[2]))
w1 = jnp.ones((64, 2048), jnp.float32) / 64
w2 = jnp.ones((2048, 2048), jnp.float32) / 2048
w3 = jnp.ones((2048, 10), jnp.float32)
fn = lambda v: jnp.tanh(jnp.tanh(v @ w1) @ w2) @ w3
x = jnp.ones((32, 64), jnp.float32)
integrated_gradients(fn, x, target=1, n_steps=n_steps, internal_batch_size=ibs).block_until_ready()
# VmHWM, not ru_maxrss: the latter is inherited from the (large) parent across exec
print([ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0])
"""


def _peak_rss_kib(n_steps, internal_batch_size):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(n_steps), str(internal_batch_size)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return int(out.stdout.split()[-1])


def test_peak_memory_of_eager_chunked_calls_does_not_grow_with_n_steps():
    # chunks of 4 steps (128 rows); 400 unchunked steps hold 12,800 x 2048 activations (~100 MB
    # each), which is what the last line checks the measurement can see
    small, large = _peak_rss_kib(50, 128), _peak_rss_kib(400, 128)
    assert large <= small + 20_000, (small, large)
    assert _peak_rss_kib(400, None) > large + 100_000


# ---------------------------------------------------------------------------------------------
# Differentiable attributions (attribution priors): jit(grad) agrees with finite differences.


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("internal_batch_size", [None, 6])
def test_gradient_of_attribution_loss_matches_finite_differences(internal_batch_size):
    rng = np.random.default_rng(3)
    params = {
        "w1": jnp.asarray(rng.normal(size=(4, 6))),
        "w2": jnp.asarray(rng.normal(size=(6, 3))),
    }
    x = jnp.asarray(rng.normal(size=(3, 4)))

    def loss(p):
        fn = lambda v: jnp.tanh(v @ p["w1"]) @ p["w2"]
        attr = integrated_gradients(fn, x, target=jnp.array([0, 2, 1]), n_steps=12,
                                    internal_batch_size=internal_batch_size)  # fmt: skip
        return jnp.sum(attr[:, :2] ** 2)  # penalise attributions on two "irrelevant" features

    grads = jax.jit(jax.grad(loss))(params)
    direction = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
    h = 1e-6
    shifted = lambda s: loss(jax.tree.map(lambda p, d: p + s * h * d, params, direction))
    fd = (shifted(1.0) - shifted(-1.0)) / (2 * h)
    analytic = sum(
        jnp.sum(g * d)
        for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction), strict=True)
    )
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)
    eager = jax.grad(loss)(params)  # chunked: the host-loop schedule, same numbers
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# smoothgrad and expected_gradients.


def _ig_fn(fn, target):
    return lambda v: integrated_gradients(fn, v, target=target, n_steps=8)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_smoothgrad_equals_a_loop_over_the_same_noise(nt_type):
    fn = _random_mlp(_rng, 4)
    x = jnp.asarray(_rng.normal(size=(3, 4)), jnp.float32)
    attribution_fn = _ig_fn(fn, 1)
    key = jax.random.key(5)
    keys = jax.random.split(key, 7)
    draws = jnp.stack([
        attribution_fn(x + 0.3 * jax.random.normal(jax.random.split(k, 1)[0], x.shape))
        for k in keys
    ])  # fmt: skip
    expected = {
        "smoothgrad": draws.mean(0),
        "smoothgrad_sq": (draws**2).mean(0),
        "vargrad": (draws**2).mean(0) - draws.mean(0) ** 2,
    }[nt_type]
    for batch_size in (None, 3):
        got = smoothgrad(key, attribution_fn, x, num_samples=7, stdev=0.3, nt_type=nt_type,
                         batch_size=batch_size)  # fmt: skip
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_vargrad_is_a_stable_non_negative_variance():
    """Attributions near 1000 with a spread near 1e-3: E[a^2] - E[a]^2 in float32 loses every
    digit (Captum's sums gave 0.31 or negative values here); the shifted sums give the variance
    of the same float32 attributions as a float64 two-pass variance does."""
    attribution_fn = lambda v: 1e3 + 1e-3 * jnp.tanh(v)
    x = jnp.asarray(_rng.normal(size=(3, 4)), jnp.float32)
    key = jax.random.key(2)
    got = smoothgrad(key, attribution_fn, x, num_samples=64, stdev=1.0, nt_type="vargrad")
    draws = np.stack([  # the float32 attributions themselves, their variance in float64
        np.asarray(attribution_fn(x + jax.random.normal(jax.random.split(k, 1)[0], x.shape)),
                   np.float64)
        for k in jax.random.split(key, 64)
    ])  # fmt: skip
    exact = draws.var(0)
    assert np.all(np.asarray(got) >= 0)
    np.testing.assert_allclose(got, exact, rtol=1e-3)


def test_smoothgrad_without_noise_is_the_attribution():
    fn = _random_mlp(_rng, 4)
    x = jnp.asarray(_rng.normal(size=(2, 4)), jnp.float32)
    got = smoothgrad(jax.random.key(0), _ig_fn(fn, 0), x, num_samples=3, stdev=0.0)
    np.testing.assert_allclose(got, _ig_fn(fn, 0)(x), rtol=1e-6)


def test_expected_gradients_is_ig_averaged_over_the_background():
    rng = np.random.default_rng(11)
    fn = _random_mlp(rng, 3)
    x = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    background = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    target = jnp.array([0, 2])
    exact = jnp.mean(jnp.stack([
        integrated_gradients(fn, x, background[i : i + 1], target=target, n_steps=64)
        for i in range(5)
    ]), axis=0)  # fmt: skip
    got = expected_gradients(jax.random.key(1), fn, x, background, num_samples=4000,
                             target=target, internal_batch_size=512)  # fmt: skip
    np.testing.assert_allclose(got, exact, atol=0.03 * float(np.abs(exact).max()))


def test_expected_gradients_does_not_depend_on_chunking():
    fn = _random_mlp(_rng, 3)
    x = jnp.asarray(_rng.normal(size=(2, 3)), jnp.float32)
    background = jnp.asarray(_rng.normal(size=(4, 3)), jnp.float32)
    kw = dict(num_samples=7, stdev=0.1, target=1)
    a = expected_gradients(jax.random.key(2), fn, x, background, **kw)
    b = expected_gradients(jax.random.key(2), fn, x, background, internal_batch_size=4, **kw)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming the argument, before any compute.

_E_FN = _random_mlp(np.random.default_rng(0), 4)
_E_X = np.ones((2, 4), np.float32)
_LAYER = lambda v: jnp.tanh(v)
_HEAD = lambda h: h @ jnp.ones((4, 3), jnp.float32)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: integrated_gradients(_E_FN, _E_X, target=0, method="riemann"), ValueError,
         r"method='riemann' is not one of \('riemann_left'"),
        (lambda: integrated_gradients(_E_FN, _E_X, target=0, n_steps=0), ValueError,
         "n_steps must be >= 1"),
        (lambda: integrated_gradients(_E_FN, _E_X, target=0, method="riemann_left", n_steps=1),
         ValueError, "n_steps must be >= 2"),
        (lambda: integrated_gradients(_E_FN, _E_X, target=0, n_steps=2.5), TypeError, "n_steps"),
        (lambda: integrated_gradients(_E_FN, _E_X), ValueError, "target is required"),
        (lambda: integrated_gradients(_E_FN, _E_X, target=3), ValueError,
         r"target out of range .* rows \[0, 1\]"),
        (lambda: integrated_gradients(_E_FN, _E_X, target=np.array([0, -1])), ValueError,
         r"target out of range .* rows \[1\]"),
        (lambda: integrated_gradients(_E_FN, _E_X, target=np.array([0, 1, 2])), ValueError,
         r"target must be an int or of shape \(2,\)"),
        (lambda: integrated_gradients(_E_FN, _E_X, target=1.0), TypeError, "target must be integer"),
        (lambda: integrated_gradients(lambda v: v.sum(1), _E_X, target=0), ValueError,
         "target must be None"),
        (lambda: integrated_gradients(lambda v: jnp.tanh(v).reshape(2, 2, 2), _E_X, target=1),
         ValueError, r"int matrix of shape \(2, 2\)"),
        (lambda: integrated_gradients(_E_FN, _E_X, np.zeros((2, 3)), target=0), ValueError,
         r"baselines must be a scalar or of shape \(1, 4\) or \(2, 4\)"),
        (lambda: integrated_gradients(_E_FN, _E_X, {"a": 0.0}, target=0), ValueError,
         "baselines must be None, a scalar, or have the structure of x"),
        (lambda: integrated_gradients(_E_FN, _E_X, target=0, internal_batch_size=0), ValueError,
         "internal_batch_size must be >= 1"),
        (lambda: integrated_gradients(_E_FN, _E_X, target=0, forward_kwargs={"s": np.ones(3)}),
         ValueError, r"forward_kwargs\['s'\] must have the batch size 2"),
        (lambda: integrated_gradients(_E_FN, _E_X, target=0, forward_kwargs=[1]), TypeError,
         "forward_kwargs must be a dict"),
        (lambda: integrated_gradients(_E_FN, np.ones((0, 4)), target=0), ValueError,
         "empty batch"),
        (lambda: integrated_gradients(_E_FN, {"a": _E_X, "b": np.ones((3, 4))}, target=0),
         ValueError, "same leading batch size"),
        (lambda: integrated_gradients(lambda v: (v, v), _E_X, target=0), TypeError,
         "fn must return one array"),
        (lambda: layer_conductance(_LAYER, _HEAD, _E_X, target=0, n_steps=0), ValueError,
         "n_steps must be >= 1"),
        (lambda: neuron_conductance(_LAYER, _HEAD, _E_X, 4, target=0), ValueError,
         r"neuron_index=\(4,\) does not index"),
        (lambda: neuron_conductance(_LAYER, _HEAD, _E_X, (0, 0), target=0), ValueError,
         "neuron_index"),
        (lambda: neuron_conductance(_LAYER, _HEAD, _E_X, "a", target=0), TypeError,
         "neuron_index must be an int"),
        (lambda: smoothgrad(jax.random.key(0), _ig_fn(_E_FN, 0), _E_X, nt_type="sg"), ValueError,
         r"nt_type='sg' is not one of \('smoothgrad'"),
        (lambda: smoothgrad(jax.random.key(0), _ig_fn(_E_FN, 0), _E_X, stdev=-1.0), ValueError,
         "stdev must be >= 0"),
        (lambda: smoothgrad(jax.random.key(0), _ig_fn(_E_FN, 0), _E_X, num_samples=0),
         ValueError, "num_samples must be >= 1"),
        (lambda: smoothgrad(0, _ig_fn(_E_FN, 0), _E_X), TypeError, "key"),
        (lambda: expected_gradients(jax.random.key(0), _E_FN, _E_X, np.ones((3, 5)), target=0),
         ValueError, "background must be rows shaped like x's"),
        (lambda: expected_gradients(jax.random.key(0), _E_FN, _E_X, np.ones((0, 4)), target=0),
         ValueError, "at least one row"),
        (lambda: expected_gradients(jax.random.key(0), _E_FN, _E_X, np.ones((3, 4))), ValueError,
         "target is required"),
    ],
)  # fmt: skip
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
