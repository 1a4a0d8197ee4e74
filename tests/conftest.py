"""Strict JAX settings for every test: implicit rank promotion and dtype promotion raise; the
package's jaxtyping annotations checked at every call (the import hook, before xai_jax loads)."""

import os

# on by default (it costs about nothing: the suite's time is compilation); XAI_TYPECHECK=0 skips
if os.environ.get("XAI_TYPECHECK", "1") != "0":
    import jaxtyping

    from tests import _typecheck  # the hook looks `tests._typecheck.checker` up by name

    jaxtyping.install_import_hook("xai_jax", "tests._typecheck.checker")
    _typecheck.unchecked_inside_pytest_raises()

import jax
import numpy as np
import pytest

# run by hand with the bench extra (torch, captum, lime, shap); `make test` only reads the
# .npz files they wrote
collect_ignore_glob = ["fixtures/make_*.py"]

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


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
