"""Strict JAX settings for every test: implicit rank promotion and dtype promotion raise; the
package's jaxtyping annotations checked at every call (the import hook, before xai_jax loads)."""

import os

# on by default (it costs about nothing: the suite's time is compilation); XAI_TYPECHECK=0 skips
if os.environ.get("XAI_TYPECHECK", "1") != "0":
    import jaxtyping

    from tests import _typecheck  # the hook looks `tests._typecheck.checker` up by name

    jaxtyping.install_import_hook("xai_jax", "tests._typecheck.checker")
    _typecheck.unchecked_inside_pytest_raises()

import gc

import jax
import numpy as np
import pytest

# run by hand with the bench extra (torch, captum, lime, shap); `make test` only reads the
# .npz files they wrote
collect_ignore_glob = ["fixtures/make_*.py"]

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Drop JAX's compilation caches after each test module. XLA:CPU maps every compiled
    executable's machine code into its own memory regions; thousands of executables kept alive by
    the jit caches over the whole suite exceed the kernel's `vm.max_map_count` (65530 regions by
    default) and the process dies in the middle of a compile (a segfault or an abort in
    `backend_compile_and_load`, at a module that varies with the order). Tests that check "no
    recompilation" do so within a module, so clearing between modules changes nothing they see."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (`jax_enable_x64`)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True)
def _x64_marker(request):
    """Tests marked `@pytest.mark.x64` run with float64 enabled, as with the `x64` fixture."""
    if request.node.get_closest_marker("x64") is None:
        yield
    else:
        with jax.enable_x64(True):
            yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
