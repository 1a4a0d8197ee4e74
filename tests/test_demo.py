"""`python -m xai_jax demo --quick` end to end: trains, explains with every method, writes files."""

import json
import re

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


# Bad options are refused up front: by argparse, before anything is imported or trained.


@pytest.mark.parametrize(("value", "match"), [
    ("-1", r"must be in 1\.\.450 \(the number of test digits\), got -1"),
    ("0", r"must be in 1\.\.450"),
    ("451", r"got 451"),
    ("two", r"must be an integer, got 'two'"),
])  # fmt: skip
def test_digits_out_of_range_is_refused_by_argparse(value, match, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--quick", "--digits", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --digits" in err
    assert re.search(match, err), err


def test_the_digits_bound_is_the_number_of_test_digits():
    from xai_jax.__main__ import TEST_DIGITS
    from xai_jax._demo import load_digits, train_test_split

    digits = load_digits()
    _, x_test, _, _ = train_test_split(digits.data, digits.target, test_size=0.25,
                                       random_state=0, stratify=digits.target)  # fmt: skip
    assert len(x_test) == TEST_DIGITS


@pytest.mark.parametrize("below", [False, True])
def test_out_naming_a_file_is_refused_before_the_run(tmp_path, capsys, below, monkeypatch):
    import xai_jax._demo as demo

    monkeypatch.setattr(demo, "train", lambda *a, **k: pytest.fail("the demo ran"))
    file = tmp_path / "report.txt"
    file.write_text("not a directory")
    out = file / "sub" if below else file
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--quick", "--out", str(out)])
    assert exit_.value.code == 2
    assert re.search(r"argument --out: .* a file, not a directory", capsys.readouterr().err)
    # the function refuses it too, before training
    with pytest.raises(ValueError, match=r"is a file, not a directory"):
        demo.main(num_digits=2, out=str(out), quick=True)


@pytest.mark.parametrize("num_digits", [0, -1, 451])
def test_demo_main_refuses_num_digits_out_of_range(num_digits, tmp_path, monkeypatch):
    import xai_jax._demo as demo

    monkeypatch.setattr(demo, "train", lambda *a, **k: pytest.fail("the demo ran"))
    with pytest.raises(ValueError, match=rf"num_digits must be in 1\.\.450 .*got {num_digits}"):
        demo.main(num_digits=num_digits, out=str(tmp_path / "demo"), quick=True)
