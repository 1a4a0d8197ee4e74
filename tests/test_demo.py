"""`python -m xai_jax demo --quick` end to end: trains, explains with every method, writes files."""

import json

import jax
import numpy as np
import pytest

from xai_jax.__main__ import main


@pytest.fixture(autouse=True)
def _standard_promotion():
    # optax's losses and haiku's initialisers are not written for strict dtype/rank promotion;
    # our own code is checked elsewhere.
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        yield


def test_demo_writes_report_figures_and_sane_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--digits", "2", "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    for name in ("report.md", "report.html", "results.json", "integrated_gradients.png",
                 "layer_conductance.png", "noise_methods.png", "surrogates.png", "cem.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["accuracy"] > 0.9
    assert results["finite"]
    # 16 Gauss-Legendre steps on a ReLU net: completeness to a few percent of a probability
    assert results["ig_max_abs_delta"]["gausslegendre"] < 0.05
    assert all(np.isfinite(list(results["timings_s"].values())))
    assert "![" in (out / "report.md").read_text()
