"""`python -m xai_jax demo` end to end: trains, explains, and its checks hold."""

import jax
import pytest

from xai_jax.__main__ import main


@pytest.fixture(autouse=True)
def _standard_promotion():
    # optax's losses are not written for strict dtype promotion; our code is checked elsewhere.
    with jax.numpy_dtype_promotion("standard"):
        yield


def test_demo_command(capsys):
    assert main(["demo", "--digits", "1"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "completeness delta" in out


def test_demo_results():
    from xai_jax._demo import main as demo

    results = demo(num_digits=2)
    assert results["accuracy"] > 0.9
    for digit in results["digits"]:
        assert abs(digit["ig_delta"]) < 0.05  # 32 Gauss-Legendre steps on a ReLU net
        assert digit["fd_max_error"] < 1e-3
        assert digit["urv_cosine"] > 0.9
        assert 0 < digit["lime_r2"] <= 1 and 0 < digit["superpixel_r2"] <= 1
