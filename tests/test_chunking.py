"""The one chunking layer (`xai_jax._chunks`) and the estimators, LIME and KernelSHAP on it:
eager calls compile once, chunked equals unchunked, the padding rule, `xai_jax.kernel_shap`'s
module and function, one source of the Shapley kernel, and the estimators' input checks
(issues 17 and 23)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import (
    _chunks,
    _coalitions,
    exponential_kernel,
    kernel_shap,
    lime,
    numerical_gradient,
    shapley_kernel,
    urv_gradient,
)

KEY = jax.random.key(0)
W = jnp.asarray(np.random.default_rng(0).standard_normal((5, 3)), jnp.float32)


# --------------------------------------------------------------------------------------------
# Eager calls trace the user's function once


def _counted(fn):
    traces = []

    def counted(*args):
        traces.append(1)
        return fn(*args)

    return counted, traces


def _second_call_traces(call, fn) -> int:
    counted, traces = _counted(fn)
    jax.block_until_ready(call(counted, jax.random.key(0)))
    first = len(traces)
    jax.block_until_ready(call(counted, jax.random.key(1)))  # same shapes, dtypes, options
    return len(traces) - first


@pytest.mark.parametrize("batch_size", [None, 4])
def test_urv_gradient_eager_does_not_retrace(batch_size):
    # before: fn(x) ran eagerly and lax.map traced a new closure on every call
    x = jnp.linspace(-1.0, 1.0, 5)
    call = lambda fn, key: urv_gradient(key, fn, x, num_samples=10, batch_size=batch_size)
    assert _second_call_traces(call, lambda v: jnp.sum(jnp.sin(v))) == 0


@pytest.mark.parametrize("batch_size", [None, 4])
def test_numerical_gradient_eager_does_not_retrace(batch_size):
    x = jnp.ones((3, 5))
    call = lambda fn, key: numerical_gradient(fn, x, batch_size=batch_size)
    assert _second_call_traces(call, lambda z: jnp.tanh(z @ W)) == 0


def test_lime_and_kernel_shap_eager_do_not_retrace():
    x, bg = jnp.ones((3, 5)), jnp.zeros((2, 5))
    f = lambda z: jnp.tanh(z @ W)
    call = lambda fn, key: lime(key, fn, x, num_samples=20, target=1, batch_size=2)
    assert _second_call_traces(call, f) == 0
    call = lambda fn, key: kernel_shap(key, fn, x, bg, num_samples=20, target=1, batch_size=2)
    assert _second_call_traces(call, f) == 0


# --------------------------------------------------------------------------------------------
# The chunking layer


def test_map_traced_pads_with_the_last_row_and_cuts_it_off():
    rows = {"a": jnp.arange(7.0), "b": jnp.arange(14.0).reshape(7, 2)}
    seen = []

    def kernel(chunk):
        seen.append(chunk["a"].shape)
        return chunk["a"][:, None] * chunk["b"]

    out = jax.jit(lambda r: _chunks.map_traced(kernel, r, 3))(rows)
    np.testing.assert_array_equal(out, rows["a"][:, None] * rows["b"])
    assert seen == [(3,)]  # one compiled body of one chunk
    padded = _chunks.gather_rows(rows, 3, jnp.int32(2))  # rows 6, 7, 8 -> 6, 6, 6
    np.testing.assert_array_equal(padded["a"], [6.0, 6.0, 6.0])
    # a chunk covering every row is a plain call
    np.testing.assert_array_equal(_chunks.map_traced(kernel, rows, 7), out)


def _square_rows(config, rows):
    return config * rows**2


@pytest.mark.parametrize("chunk", [1, 3, 7, 10])
def test_map_rows_eager_and_traced_agree(chunk):
    rows = jnp.arange(7.0)
    eager = _chunks.map_rows(_square_rows, 2.0, rows, 7, chunk)
    traced = jax.jit(lambda r: _chunks.map_rows(_square_rows, 2.0, r, 7, chunk))(rows)
    np.testing.assert_array_equal(eager, 2.0 * rows**2)
    np.testing.assert_array_equal(traced, eager)


def test_instances_per_chunk_is_the_checked_batch_size_or_about_32k_rows():
    assert _chunks.instances_per_chunk(100, 5000, None) == _chunks.ROWS_PER_CHUNK // 5000
    assert _chunks.instances_per_chunk(3, 10, None) == 3
    assert _chunks.instances_per_chunk(100, 10**6, None) == 1
    assert _chunks.instances_per_chunk(100, 5000, 7) == 7
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        _chunks.instances_per_chunk(100, 5000, 0)


@pytest.mark.parametrize("batch_size", [1, 4, 10, 37])
def test_urv_gradient_chunks_sum_to_the_same_estimate_eager_and_jitted(batch_size):
    loss = lambda v: jnp.sum(jnp.tanh(v @ W) ** 2)
    x = jnp.linspace(-1.0, 1.0, 5)
    eager = urv_gradient(KEY, loss, x, num_samples=37, batch_size=batch_size)
    jitted = jax.jit(lambda k, v: urv_gradient(k, loss, v, num_samples=37, batch_size=batch_size))
    np.testing.assert_allclose(jitted(KEY, x), eager, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# xai_jax.kernel_shap: a module whose package attribute is the function


@pytest.mark.parametrize(
    "imports",
    [
        "import xai_jax",
        "import xai_jax.kernel_shap",
        "import xai_jax.lime; import xai_jax.kernel_shap",
        "from xai_jax.kernel_shap import kernel_shap; import xai_jax",
        "import xai_jax; import xai_jax.kernel_shap; import importlib; "
        "importlib.import_module('xai_jax.kernel_shap')",
    ],
)
def test_package_kernel_shap_is_the_function_in_every_import_order(imports):
    code = (
        f"{imports}\n"
        "import sys, types, xai_jax\n"
        "module = sys.modules['xai_jax.kernel_shap']\n"
        "assert isinstance(module, types.ModuleType) and module.__all__ == ['kernel_shap']\n"
        "assert xai_jax.kernel_shap is module.kernel_shap, xai_jax.kernel_shap\n"
        "from xai_jax import kernel_shap\n"
        "from xai_jax.lime import kernel_shap as old_home\n"
        "assert kernel_shap is old_home is module.kernel_shap and callable(kernel_shap)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_kernel_shap_module_holds_its_pieces():
    module = sys.modules["xai_jax.kernel_shap"]
    for name in ("_ShapConfig", "_expected_values", "_shap_chunk", "_MAX_ROWS_PER_CALL"):
        assert hasattr(module, name)
    assert "kernel_shap" not in sys.modules["xai_jax.lime"].__all__  # listed once


# --------------------------------------------------------------------------------------------
# One Shapley kernel


@pytest.mark.parametrize("num_features", [3, 4, 7])
def test_coalition_design_weighs_coalitions_by_shapley_kernel(x64, num_features):
    design = _coalitions._design(num_features, 2**num_features)  # every coalition
    sizes = design.masks.sum(axis=1)
    kernel = np.asarray(shapley_kernel(num_features, sizes))
    np.testing.assert_allclose(design.weights, kernel / kernel.sum(), rtol=1e-12)


def test_shapley_kernel_and_the_design_share_one_size_weight(monkeypatch):
    # swap the one per-size weight: both the public kernel and the coalition design follow
    kernels_module = sys.modules["xai_jax.kernels"]
    monkeypatch.setattr(_coalitions, "size_weight", lambda m, s: 1.0)
    caches = (kernels_module._size_weights, _coalitions._design)
    for cache in caches:
        cache.cache_clear()
    try:
        kernel = np.asarray(shapley_kernel(4, [1, 2, 3]), np.float64)
        np.testing.assert_allclose(kernel, [1 / 4, 1 / 6, 1 / 4], rtol=1e-6)  # 1 / binom
        design = _coalitions._design(4, 14)
        expected = np.asarray(shapley_kernel(4, design.masks.sum(axis=1)), np.float64)
        np.testing.assert_allclose(design.weights, expected / expected.sum(), rtol=1e-6)
    finally:
        for cache in caches:
            cache.cache_clear()


# --------------------------------------------------------------------------------------------
# Estimators' inputs (issue 23)


def test_numerical_gradient_of_an_integer_black_box_is_float():
    # before: the step was cast to the output's int dtype (0), and the estimate was inf
    count = lambda z: jnp.sum(z > 0.5, axis=1, dtype=jnp.int32)
    got = numerical_gradient(count, jnp.full((1, 3), 0.5), eps=0.1)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, np.full((1, 3), 5.0), rtol=1e-5)  # (1 - 0) / 0.2


def test_numerical_gradient_raises_for_an_eps_below_resolution():
    # before: x + 1e-8 == x - 1e-8 in float32 at x = 1, and the estimate was 0 / 0 = NaN
    f = lambda z: jnp.tanh(z @ W)
    with pytest.raises(ValueError, match=r"eps=1e-08 is below the resolution of float32"):
        numerical_gradient(f, jnp.ones((2, 5)), eps=1e-8)
    # resolvable everywhere (|x| small): fine; traced points cannot be checked
    assert np.isfinite(numerical_gradient(f, jnp.full((2, 5), 1e-3), eps=1e-6)).all()
    jax.jit(lambda x: numerical_gradient(f, x, eps=1e-8))(jnp.ones((2, 5)))


def test_urv_gradient_rejects_a_step_that_is_not_a_number():
    with pytest.raises(TypeError, match=r"step must be a real number >= 1.*got 'a'"):
        urv_gradient(KEY, jnp.sum, jnp.ones(3), step="a")
    with pytest.raises(TypeError, match=r"step must be a real number"):
        urv_gradient(KEY, jnp.sum, jnp.ones(3), step=None)


def test_urv_gradient_rejects_a_step_that_mu_makes_unused():
    # before: step=5 was silently ignored when mu was given
    with pytest.raises(ValueError, match=r"step=5 is only used for the default mu"):
        urv_gradient(KEY, jnp.sum, jnp.ones(3), mu=0.1, step=5)
    urv_gradient(KEY, jnp.sum, jnp.ones(3), mu=0.1)  # the default step: fine
    # an optimiser's traced counter next to a fixed mu is ignored, as documented
    jax.jit(lambda t: urv_gradient(KEY, jnp.sum, jnp.ones(3), mu=0.1, step=t))(jnp.int32(3))


def test_urv_gradient_step_sets_the_default_mu_as_written():
    # a non-integer counter is allowed (mu = 1 / sqrt(step d)), as a traced float one is
    loss = lambda v: jnp.sum(jnp.tanh(v @ W) ** 2)
    x = jnp.linspace(-1.0, 1.0, 5)
    by_step = urv_gradient(KEY, loss, x, num_samples=16, step=1.5)
    by_mu = urv_gradient(KEY, loss, x, num_samples=16, mu=float(1 / np.sqrt(1.5 * 5)))
    np.testing.assert_allclose(by_step, by_mu, rtol=1e-5, atol=1e-6)


def test_exponential_kernel_rejects_negative_distances():
    # before: -1 got the weight of +1
    with pytest.raises(ValueError, match=r"distances must be >= 0, got a minimum of -1"):
        exponential_kernel(jnp.array([0.0, -1.0]), 1.0)
    np.testing.assert_allclose(exponential_kernel(jnp.array([0.0]), 1.0), [1.0])
