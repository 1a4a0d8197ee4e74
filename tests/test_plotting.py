"""xai_jax.plotting: every figure renders headless to a non-trivial PNG and shows what it claims."""

import io
from pathlib import Path

import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from xai_jax.plotting import (
    attribution_bars,
    attribution_heatmap,
    benchmark_chart,
    contrastive_overlay,
    load_results,
    perturbation_curves,
)

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def render(ax):
    """The axes' figure as a PNG read back into an `[H, W, 4]` float array."""
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", dpi=50)
    buf.seek(0)
    return matplotlib.image.imread(buf, format="png")


def assert_nontrivial(pixels):
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert (pixels[..., :3] < 0.95).any(), "image is all white"
    colours = np.unique(np.round(pixels[..., :3] * 255).reshape(-1, 3), axis=0)
    assert len(colours) > 8, f"only {len(colours)} distinct colours"


def bar_colour(patch):
    return tuple(np.round(patch.get_facecolor(), 4))


# ---------------------------------------------------------------- attribution_heatmap


def test_heatmap_renders_with_symmetric_limits(rng):
    attr = rng.normal(size=(12, 10)) + 0.7  # skewed positive: limits must still be symmetric
    ax = attribution_heatmap(attr, title="IG")
    assert isinstance(ax.figure, Figure)
    assert_nontrivial(render(ax))
    vmin, vmax = ax.images[-1].get_clim()
    assert vmin == -vmax
    assert vmax == pytest.approx(np.abs(attr).max())
    assert ax.get_title() == "IG"
    assert len(ax.figure.axes) == 2  # the colorbar


def test_heatmap_all_zero_map():
    with np.errstate(all="raise"):
        ax = attribution_heatmap(np.zeros((6, 6)))
        pixels = render(ax)
    vmin, vmax = ax.images[-1].get_clim()
    assert vmin == -vmax and vmax > 0
    assert (pixels[..., :3] < 0.95).any()  # colorbar and frame at least


def test_heatmap_image_underlay_and_shapes(rng):
    attr = rng.normal(size=(8, 8, 3))  # summed over channels
    ax = attribution_heatmap(attr, image=rng.random((8, 8, 3)), alpha=0.5, colorbar=False)
    assert len(ax.images) == 2
    assert ax.images[0].get_cmap().name == "gray"
    assert ax.images[-1].get_alpha() == 0.5
    np.testing.assert_allclose(ax.images[-1].get_array(), attr.sum(-1))
    assert len(ax.figure.axes) == 1
    assert_nontrivial(render(ax))

    flat = attribution_heatmap(np.arange(64.0) - 32, colorbar=False)  # 64 -> 8x8
    assert flat.images[-1].get_array().shape == (8, 8)


def test_heatmap_jax_input_and_given_axes():
    ax = Figure().add_subplot()
    out = attribution_heatmap(jnp.eye(5, dtype=jnp.float32) - 0.25, image=jnp.ones(25), ax=ax)
    assert out is ax
    assert out.images[-1].get_clim() == pytest.approx((-0.75, 0.75))
    assert_nontrivial(render(out))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"attr": np.zeros(10)}, "attr"),  # not a square size
        ({"attr": np.zeros((2, 2, 2, 2))}, "attr"),
        ({"attr": np.zeros((4, 4)), "image": np.zeros((5, 5))}, "image"),
        ({"attr": np.zeros((4, 4)), "alpha": 1.5}, "alpha"),
    ],
)
def test_heatmap_bad_inputs(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        attribution_heatmap(**kwargs)


# ---------------------------------------------------------------- attribution_bars


def test_bars_top_k_order_colours_and_names():
    coef = np.array([0.3, -1.5, 0.05, 2.0, -0.7, 0.0])
    names = ["age", "income", "zip", "debt", "score", "id"]
    ax = attribution_bars(coef, names, top_k=4, title="LIME")
    assert_nontrivial(render(ax))
    assert len(ax.patches) == 4
    top_to_bottom = sorted(ax.patches, key=lambda p: -p.get_y())
    widths = [p.get_width() for p in top_to_bottom]
    assert widths == [2.0, -1.5, -0.7, 0.3]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["debt", "income", "score", "age"]
    # the tick labels sit on their bars
    ticks = dict(zip([t.get_text() for t in ax.get_yticklabels()], ax.get_yticks(), strict=True))
    for p, name in zip(top_to_bottom, ["debt", "income", "score", "age"], strict=True):
        assert p.get_y() + p.get_height() / 2 == pytest.approx(ticks[name])
    positive = {bar_colour(p) for p in top_to_bottom if p.get_width() > 0}
    negative = {bar_colour(p) for p in top_to_bottom if p.get_width() < 0}
    assert len(positive) == 1 and len(negative) == 1 and positive != negative
    assert ax.get_title() == "LIME"


def test_bars_default_names_and_small_input():
    ax = attribution_bars(jnp.array([0.5, -0.25], dtype=jnp.float32), top_k=10)
    assert len(ax.patches) == 2  # min(top_k, len(coef))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x0", "x1"]
    assert_nontrivial(render(ax))


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((np.ones(3), ["a", "b"]), {}, "feature_names"),
        ((np.ones(3),), {"top_k": 0}, "top_k"),
        ((np.ones(3),), {"top_k": 2.5}, "top_k"),
        ((np.ones((2, 3)),), {}, "coef"),
        ((np.ones(0),), {}, "coef"),
    ],
)
def test_bars_bad_inputs(args, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        attribution_bars(*args, **kwargs)


# ---------------------------------------------------------------- contrastive_overlay


def _digit():
    x = np.zeros((10, 10))
    x[2:8, 3] = x[2:8, 6] = x[2, 3:7] = x[7, 3:7] = 1.0
    pn = np.zeros((10, 10))
    pn[4:6, 4:6] = 0.8
    return x, x * 0.6, pn


@pytest.mark.parametrize("which", ["pp", "pn", "both"])
def test_overlay(which):
    x, pp, pn = _digit()
    kwargs = {"pp": pp if which != "pn" else None, "pn": pn if which != "pp" else None}
    ax = contrastive_overlay(x, **kwargs, title="CEM")
    pixels = render(ax)
    assert_nontrivial(pixels)
    n_overlays = 2 if which == "both" else 1
    assert len(ax.images) == 1 + n_overlays
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == n_overlays
    if which != "pn":
        assert any("positive" in label for label in labels)
    if which != "pp":
        assert any("negative" in label for label in labels)
    overlay_colours = {tuple(im.get_array()[..., :3].reshape(-1, 3).max(0)) for im in ax.images[1:]}
    assert len(overlay_colours) == n_overlays
    for im, source in zip(
        ax.images[1:], [v for v in kwargs.values() if v is not None], strict=True
    ):
        alpha = im.get_array()[..., 3]
        np.testing.assert_array_equal(alpha > 0, source != 0)  # zeros are transparent
    # some pixel is actually coloured (not grey) in the rendered figure
    rgb = pixels[..., :3]
    assert (rgb.max(-1) - rgb.min(-1) > 0.2).any()


def test_overlay_flat_jax_inputs():
    x, _, pn = _digit()
    ax = contrastive_overlay(jnp.asarray(x.ravel()), pn=jnp.asarray(pn, dtype=jnp.float32))
    assert ax.images[0].get_array().shape == (10, 10)
    assert_nontrivial(render(ax))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"x": np.zeros((4, 4))}, "pp"),  # neither pp nor pn
        ({"x": np.zeros(7), "pp": np.zeros(7)}, "x"),
        ({"x": np.zeros((4, 4)), "pp": np.zeros((3, 3))}, "pp"),
        ({"x": np.zeros((4, 4)), "pn": np.zeros((4, 5))}, "pn"),
    ],
)
def test_overlay_bad_inputs(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        contrastive_overlay(**kwargs)


# ---------------------------------------------------------------- benchmark_chart


def test_benchmark_chart_on_real_results():
    results = load_results(RESULTS)
    assert set(results) == {p.stem for p in RESULTS.glob("*.json")}
    cases = [(name, c) for name, r in results.items() for c in r["cases"]]
    ax = benchmark_chart(results, title="speed-ups")
    assert_nontrivial(render(ax))
    assert len(ax.patches) == len(cases)
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"{name}: {c['case']}" for name, c in cases]
    # bars run from the 1x line to the median ratio, in input order top to bottom
    top_to_bottom = sorted(ax.patches, key=lambda p: -p.get_y())
    for p, (_, c) in zip(top_to_bottom, cases, strict=True):
        assert p.get_x() == 1.0
        assert p.get_x() + p.get_width() == pytest.approx(c["ratio_median"])
    assert any(line.get_xdata()[0] == 1.0 for line in ax.lines)  # the 1x line
    n_targets = sum("ratio_median" in (c.get("targets") or {}) for _, c in cases)
    markers = [line for line in ax.lines if line.get_marker() == "|"]
    assert sum(len(line.get_xdata()) for line in markers) == n_targets


def test_benchmark_chart_colours_and_layouts():
    cases = [
        {"case": "met", "ratio_median": 3.0, "targets": {"ratio_median": 2.0}},
        {"case": "missed", "ratio_median": 1.5, "targets": {"ratio_median": 10}},
        {"case": "slower", "ratio_median": 0.5, "targets": {}},
    ]
    by_list = benchmark_chart([{"benchmark": "demo", "cases": cases}])
    by_cases = benchmark_chart({"demo": cases})
    for ax in (by_list, by_cases):
        assert [t.get_text() for t in ax.get_yticklabels()] == [
            "demo: met",
            "demo: missed",
            "demo: slower",
        ]
        bars = sorted(ax.patches, key=lambda p: -p.get_y())
        assert len({bar_colour(p) for p in bars}) == 3
        assert bars[2].get_width() < 0  # a slow-down points left of the 1x line
        lo, hi = ax.get_xlim()
        assert lo < 0.5 and hi > 10
        assert_nontrivial(render(ax))
    # met/missed colours follow the recorded `targets_met` when the files give one
    flipped = [dict(cases[0], targets_met={"ratio_median": False}), cases[1]]
    ax = benchmark_chart({"demo": flipped})
    assert len({bar_colour(p) for p in ax.patches}) == 1
    assert bar_colour(ax.patches[0]) != tuple(np.round(to_rgba("#2ca02c"), 4))


def test_load_results(tmp_path):
    (tmp_path / "b.json").write_text('{"benchmark": "b", "cases": []}')
    (tmp_path / "a.json").write_text('{"benchmark": "a", "cases": []}')
    (tmp_path / "notes.md").write_text("not a result")
    assert list(load_results(tmp_path)) == ["a", "b"]
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "missing")


@pytest.mark.parametrize(
    "results",
    [
        [],
        {"x": {"cases": []}},
        {"x": [{"case": "no ratio"}]},
        {"x": [{"case": "zero", "ratio_median": 0.0}]},
        "lime.json",
    ],
)
def test_benchmark_chart_bad_inputs(results):
    with pytest.raises(ValueError, match="`results`"):
        benchmark_chart(results)


def test_perturbation_curves_from_metrics():
    from xai_jax import deletion, insertion

    f = lambda z: z.sum(1)
    x = jnp.array([[3.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    good, bad = deletion(f, x, x, n_steps=3), deletion(f, x, -x, n_steps=3)
    ax = perturbation_curves({"good": good, "bad": bad.curve})
    assert_nontrivial(render(ax))
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.asarray(good.curve).mean(0))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        f"good (AUC {float(good.auc.mean()):.3f})",
        f"bad (AUC {float(bad.auc.mean()):.3f})",
    ]
    ax = perturbation_curves({"ins": insertion(f, x, x, n_steps=3)}, kind="insertion", title="t")
    assert ax.get_title() == "t" and "restored" in ax.get_xlabel()


@pytest.mark.parametrize(
    ("curves", "kwargs", "match"),
    [
        ({}, {}, "curves"),
        ({"a": np.ones(3)}, {"kind": "rise"}, "kind"),
        ({"a": np.ones(1)}, {}, "n_steps >= 1"),
        ({"a": np.array([1.0, np.nan])}, {}, "NaN"),
        ({"a": np.ones(3), "b": np.ones(4)}, {}, "same number of steps"),
    ],
)
def test_perturbation_curves_bad_inputs(curves, kwargs, match):
    with pytest.raises(ValueError, match=match):
        perturbation_curves(curves, **kwargs)
