"""Matplotlib figures of explanations and benchmark results, for notebooks and reports.

Every function draws on the `matplotlib.axes.Axes` it is given, or on a new one of a new
`matplotlib.figure.Figure` when `ax` is None, and returns that axes (its figure is `ax.figure`).
Figures are built with the object-oriented API only: nothing here imports `pyplot`, selects a
backend or calls `show`, so it works headless (save with `ax.figure.savefig(...)`; in a notebook
the returned figure displays itself when it is the cell's last value).

Inputs may be NumPy or JAX arrays (anything `np.asarray` accepts):

- `attribution_heatmap`: a pixel attribution map, diverging colours centred at zero, optionally
  over the image it explains;
- `attribution_bars`: the largest coefficients of a LIME / KernelSHAP explanation;
- `contrastive_overlay`: a CEM pertinent positive and / or negative over the input;
- `benchmark_chart` and `load_results`: the speed-ups written to `benchmarks/results/*.json`;
- `perturbation_curves`: deletion / insertion curves (`xai_jax.metrics`) of several methods.
"""

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, SupportsInt

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from numpy.typing import ArrayLike

__all__ = [
    "attribution_heatmap",
    "attribution_bars",
    "contrastive_overlay",
    "benchmark_chart",
    "load_results",
    "perturbation_curves",
]

POSITIVE_COLOR = "#d62728"  # red: evidence for the explained output
NEGATIVE_COLOR = "#1f77b4"  # blue: evidence against it
PP_COLOR = "#2ca02c"  # green: the pertinent positive (kept)
PN_COLOR = "#d62728"  # red: the pertinent negative (added)
MET_COLOR = "#2ca02c"
MISSED_COLOR = "#d62728"
NO_TARGET_COLOR = "#7f7f7f"


def _new_axes(figsize: tuple[float, float]) -> Axes:
    """One axes on a new backend-free `Figure` (renders with Agg on `savefig`)."""
    return Figure(figsize=figsize).add_subplot()


def _as_map(value: ArrayLike, name: str, channels: str = "sum") -> np.ndarray:
    """`value` as a float `[H, W]` map.

    `[H, W, C]` is reduced over channels (`channels`: "sum" or "mean"); 1-D of a square size
    `H * H` is reshaped to `[H, H]`.
    """
    a = np.asarray(value, dtype=float)
    if a.ndim == 3:
        a = a.sum(axis=-1) if channels == "sum" else a.mean(axis=-1)
    elif a.ndim == 1:
        side = math.isqrt(a.shape[0])
        if a.shape[0] == 0 or side * side != a.shape[0]:
            raise ValueError(
                f"`{name}` is 1-D of size {a.shape[0]}, which is not a square number; "
                "pass a 2-D map [H, W] instead"
            )
        a = a.reshape(side, side)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(
            f"`{name}` must be a non-empty map [H, W], [H, W, C] or a flat square map, "
            f"got shape {np.shape(value)}"
        )
    return a


def _abs_max(a: np.ndarray) -> float:
    """Largest finite |a|, or 1.0 when there is none (all-zero or non-finite maps)."""
    finite = np.abs(a[np.isfinite(a)])
    m = float(finite.max()) if finite.size else 0.0
    return m if m > 0.0 else 1.0


def _hide_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def attribution_heatmap(
    attr: ArrayLike,
    image: ArrayLike | None = None,
    ax: Axes | None = None,
    *,
    cmap: str = "RdBu_r",
    alpha: float = 0.6,
    title: str | None = None,
    colorbar: bool = True,
) -> Axes:
    """Draw a pixel attribution map in diverging colours centred at zero.

    The colour limits are symmetric, `[-m, m]` with `m = max |attr|` (1 for an all-zero map), so
    white means no attribution, whatever the map's sign balance.

    Args:
        attr: the attribution, `[H, W]`, `[H, W, C]` (summed over channels) or flat of a square
            size (`[64]` is drawn as `[8, 8]`).
        image: optional input it explains, of the same spatial shape (`[H, W]`, `[H, W, C]`
            averaged over channels, or flat); drawn in grey under the attribution.
        ax: axes to draw on; a new figure's when None.
        cmap: a diverging colormap name.
        alpha: opacity of the attribution over `image` (ignored without `image`).
        title: axes title.
        colorbar: add a colorbar next to the axes.

    Returns:
        The axes drawn on; the attribution is `ax.images[-1]`.

    Raises:
        ValueError: if `attr` or `image` has an unusable shape, they differ in spatial shape, or
            `alpha` is outside [0, 1].

    Example:
        >>> import io
        >>> ax = attribution_heatmap(np.eye(4) - 0.5, title="IG")
        >>> ax.images[-1].get_clim()
        (-0.5, 0.5)
        >>> ax.figure.savefig(io.BytesIO(), format="png")
    """
    a = _as_map(attr, "attr", channels="sum")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha}")
    if ax is None:
        ax = _new_axes((5.0, 4.0))
    if image is not None:
        img = _as_map(image, "image", channels="mean")
        if img.shape != a.shape:
            raise ValueError(
                f"`image` has spatial shape {img.shape} but `attr` has {a.shape}; they must match"
            )
        ax.imshow(img, cmap="gray", interpolation="nearest")
    m = _abs_max(a)
    mappable = ax.imshow(
        a,
        cmap=cmap,
        vmin=-m,
        vmax=m,
        alpha=alpha if image is not None else None,
        interpolation="nearest",
    )
    _hide_ticks(ax)
    if title is not None:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04)
    return ax


def attribution_bars(
    coef: ArrayLike,
    feature_names: Sequence[str] | None = None,
    top_k: SupportsInt = 10,
    ax: Axes | None = None,
    *,
    title: str | None = None,
) -> Axes:
    """Horizontal bars of the `top_k` largest |coefficients| (LIME / KernelSHAP style).

    The largest |coefficient| is at the top; positive coefficients are red, negative blue.

    Args:
        coef: the coefficients, 1-D `[d]` (e.g. `LimeResult.coef` of one instance).
        feature_names: `d` names; `x0, x1, ...` when None.
        top_k: how many bars at most (`min(top_k, d)` are drawn).
        ax: axes to draw on; a new figure's when None.
        title: axes title.

    Returns:
        The axes drawn on; the bars are `ax.patches`, top to bottom in decreasing |coef|.

    Raises:
        ValueError: if `coef` is not 1-D and non-empty, `feature_names` does not have one name
            per coefficient, or `top_k < 1`.

    Example:
        >>> import io
        >>> ax = attribution_bars(np.array([0.1, -2.0, 0.5]), ["a", "b", "c"], top_k=2)
        >>> [t.get_text() for t in ax.get_yticklabels()]
        ['b', 'c']
        >>> ax.figure.savefig(io.BytesIO(), format="png")
    """
    c = np.asarray(coef, dtype=float)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"`coef` must be 1-D and non-empty, got shape {c.shape}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"`top_k` must be an integer >= 1, got {top_k!r}")
    if feature_names is None:
        names = [f"x{i}" for i in range(c.size)]
    else:
        names = [str(n) for n in feature_names]
        if len(names) != c.size:
            raise ValueError(
                f"`feature_names` has {len(names)} names but `coef` has {c.size} coefficients"
            )
    k = min(int(top_k), c.size)
    order = np.argsort(-np.abs(c), kind="stable")[:k]
    values = c[order]
    y = np.arange(k)[::-1]  # the largest at the top
    colors = [POSITIVE_COLOR if v >= 0 else NEGATIVE_COLOR for v in values]
    if ax is None:
        ax = _new_axes((6.0, 0.35 * k + 1.2))
    ax.barh(y, values, color=colors)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(y, [names[i] for i in order])
    ax.set_xlabel("coefficient")
    if title is not None:
        ax.set_title(title)
    return ax


def _overlay_rgba(values: np.ndarray, color: str) -> np.ndarray:
    """`[H, W, 4]` of `color`, opacity growing with |values|, transparent where zero."""
    magnitude = np.abs(np.nan_to_num(values))
    rgba = np.zeros((*values.shape, 4))
    rgba[..., :3] = to_rgba(color)[:3]
    rgba[..., 3] = np.where(magnitude > 0, 0.35 + 0.6 * magnitude / _abs_max(magnitude), 0.0)
    return rgba


def contrastive_overlay(
    x: ArrayLike,
    pp: ArrayLike | None = None,
    pn: ArrayLike | None = None,
    ax: Axes | None = None,
    *,
    title: str | None = None,
) -> Axes:
    """Draw a contrastive (CEM) explanation over its input.

    The input is grey; the pertinent positive (what is kept of `x` and suffices for the
    prediction) is overlaid in green, the pertinent negative (what must stay absent, i.e. what
    is added to change it) in red. Zero pixels of an overlay are transparent, others the more
    opaque the larger their magnitude; a legend names the colours.

    Args:
        x: the input, `[H, W]`, `[H, W, C]` (averaged over channels) or flat of a square size.
        pp: pertinent positive of the same spatial shape, or None.
        pn: pertinent negative (the perturbation added to `x`) of the same shape, or None.
        ax: axes to draw on; a new figure's when None.
        title: axes title.

    Returns:
        The axes drawn on: `ax.images` are the input then the given overlays (pp before pn).

    Raises:
        ValueError: if an array has an unusable shape, the overlays' shapes differ from `x`'s,
            or both `pp` and `pn` are None.

    Example:
        >>> import io
        >>> x = np.zeros((4, 4)); x[1:3, 1:3] = 1.0
        >>> pn = np.zeros((4, 4)); pn[0, :] = 1.0
        >>> ax = contrastive_overlay(x, pp=x * 0.5, pn=pn)
        >>> len(ax.images)
        3
        >>> ax.figure.savefig(io.BytesIO(), format="png")
    """
    img = _as_map(x, "x", channels="mean")
    if pp is None and pn is None:
        raise ValueError("at least one of `pp` and `pn` must be given")
    overlays = []
    for name, value, color, label in (
        ("pp", pp, PP_COLOR, "pertinent positive (kept)"),
        ("pn", pn, PN_COLOR, "pertinent negative (added)"),
    ):
        if value is None:
            continue
        v = _as_map(value, name, channels="mean")
        if v.shape != img.shape:
            raise ValueError(
                f"`{name}` has spatial shape {v.shape} but `x` has {img.shape}; they must match"
            )
        overlays.append((v, color, label))
    if ax is None:
        ax = _new_axes((4.5, 4.8))
    ax.imshow(img, cmap="gray", interpolation="nearest")
    for v, color, _ in overlays:
        ax.imshow(_overlay_rgba(v, color), interpolation="nearest")
    _hide_ticks(ax)
    ax.legend(
        handles=[Patch(facecolor=color, label=label) for _, color, label in overlays],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.01),
        ncol=len(overlays),
        frameon=False,
        fontsize="small",
    )
    if title is not None:
        ax.set_title(title)
    return ax


def load_results(directory: str | Path) -> dict[str, dict]:
    """Read every `*.json` benchmark result of a directory.

    Args:
        directory: e.g. `benchmarks/results`.

    Returns:
        `{file stem: parsed JSON}`, sorted by name.

    Raises:
        FileNotFoundError: if `directory` is not a directory.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = (Path(d) / "demo.json").write_text('{"benchmark": "demo", "cases": []}')
        ...     load_results(d)
        {'demo': {'benchmark': 'demo', 'cases': []}}
    """
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"`directory` {str(path)!r} is not a directory")
    return {p.stem: json.loads(p.read_text()) for p in sorted(path.glob("*.json"))}


def _benchmark_cases(results: Any) -> list[tuple[str, Mapping]]:
    """`(benchmark name, case dict)` pairs of any accepted `results` layout."""
    if isinstance(results, Mapping) and "cases" in results:
        results = [results]
    if isinstance(results, Mapping):
        items = list(results.items())
    elif isinstance(results, Sequence) and not isinstance(results, (str, bytes)):
        items = [
            (r.get("benchmark", f"result {i}") if isinstance(r, Mapping) else f"result {i}", r)
            for i, r in enumerate(results)
        ]
    else:
        raise ValueError(
            "`results` must be a list of result dicts or a dict name -> result dict or cases, "
            f"got {type(results).__name__}"
        )
    pairs = []
    for name, value in items:
        cases = value.get("cases") if isinstance(value, Mapping) else value
        if not isinstance(cases, Sequence) or isinstance(cases, (str, bytes)):
            raise ValueError(f"`results` entry {name!r} has no list of cases")
        for case in cases:
            if not isinstance(case, Mapping):
                raise ValueError(f"`results` entry {name!r} has a case that is not a dict")
            ratio = case.get("ratio_median")
            if not isinstance(ratio, (int, float)) or not ratio > 0 or not math.isfinite(ratio):
                raise ValueError(
                    f"`results` case {name}: {case.get('case')} needs a positive finite "
                    f"'ratio_median', got {ratio!r}"
                )
            pairs.append((str(name), case))
    if not pairs:
        raise ValueError("`results` holds no benchmark cases")
    return pairs


def benchmark_chart(results: Any, ax: Axes | None = None, *, title: str | None = None) -> Axes:
    """Bar chart of benchmark speed-ups (`ratio_median`: peer time / our time).

    One horizontal bar per (benchmark, case), labelled `benchmark: case`, from the 1x line to the
    case's median ratio on a log-scale x axis (bars left of the line are slow-downs). A black tick
    marks the case's target (`targets["ratio_median"]`) where there is one; bars are green when
    the target is met (`targets_met["ratio_median"]`, else ratio >= target), red when missed and
    grey without a target.

    Args:
        results: `load_results(directory)` (a dict name -> result dict), a list of result dicts
            (each with `"cases"` and optionally `"benchmark"`), a single result dict, or a dict
            name -> list of case dicts. Each case needs a positive `"ratio_median"`; `"case"`,
            `"targets"` and `"targets_met"` are optional.
        ax: axes to draw on; a new figure's when None.
        title: axes title.

    Returns:
        The axes drawn on; the bars are `ax.patches`, one per case, top to bottom in input order.

    Raises:
        ValueError: if `results` has no cases, or a case has no positive `ratio_median`.

    Example:
        >>> import io
        >>> res = {"lime": {"cases": [
        ...     {"case": "1 instance", "ratio_median": 2.2, "targets": {"ratio_median": 10}},
        ...     {"case": "100 instances", "ratio_median": 7.4, "targets": {}}]}}
        >>> ax = benchmark_chart(res)
        >>> len(ax.patches), ax.get_xscale()
        (2, 'log')
        >>> ax.figure.savefig(io.BytesIO(), format="png")
    """
    pairs = _benchmark_cases(results)
    n = len(pairs)
    labels, ratios, colors, target_pts = [], [], [], []
    for i, (name, case) in enumerate(pairs):
        labels.append(f"{name}: {case.get('case', i)}")
        ratio = float(case["ratio_median"])
        ratios.append(ratio)
        target = (case.get("targets") or {}).get("ratio_median")
        if target is None:
            colors.append(NO_TARGET_COLOR)
            continue
        target = float(target)
        met = (case.get("targets_met") or {}).get("ratio_median")
        met = ratio >= target if met is None else bool(met)
        colors.append(MET_COLOR if met else MISSED_COLOR)
        target_pts.append((target, n - 1 - i))
    y = np.arange(n)[::-1]  # the first case at the top
    if ax is None:
        ax = _new_axes((10.0, 0.32 * n + 1.5))
        ax.figure.set_layout_engine("constrained")
    r = np.asarray(ratios)
    ax.barh(y, r - 1.0, left=1.0, color=colors, height=0.7)
    ax.axvline(1.0, color="black", linewidth=1.0)
    if target_pts:
        tx, ty = zip(*target_pts, strict=True)
        ax.plot(tx, ty, linestyle="none", marker="|", ms=14, mew=2.5, color="black")
    for yi, ratio in zip(y, r, strict=True):
        ax.annotate(
            f"{ratio:.3g}\u00d7",
            (ratio, yi),
            xytext=(3 if ratio >= 1 else -3, 0),
            textcoords="offset points",
            ha="left" if ratio >= 1 else "right",
            va="center",
            fontsize="x-small",
        )
    ax.set_xscale("log")
    points = np.concatenate([r, [1.0], [t for t, _ in target_pts]])
    ax.set_xlim(points.min() / 2.0, points.max() * 2.0)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_yticks(y, labels, fontsize="small")
    ax.set_xlabel("speed-up vs peer (median time ratio, log scale)")
    handles: list[Any] = [
        Patch(facecolor=color, label=label)
        for color, label in (
            (MET_COLOR, "meets target"),
            (MISSED_COLOR, "misses target"),
            (NO_TARGET_COLOR, "no target"),
        )
        if color in colors
    ]
    if target_pts:
        handles.append(
            Line2D(
                [], [], linestyle="none", marker="|", ms=10, mew=2.5, color="black", label="target"
            )
        )
    ax.legend(handles=handles, loc="lower right", fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax


def perturbation_curves(
    curves: Mapping[str, Any],
    ax: Axes | None = None,
    *,
    kind: str = "deletion",
    title: str | None = None,
) -> Axes:
    """Deletion or insertion curves of several attribution methods, one line each.

    Each value is a `CurveResult` of `xai_jax.deletion` / `insertion` or its `curve` array
    `[batch, n_steps + 1]` (or one curve `[n_steps + 1]`); the line is the mean over the batch
    against the fraction of feature groups removed (deletion) or restored (insertion), and the
    legend gives each method's mean area under the curve (trapezoid rule over [0, 1]; lower is
    better for deletion, higher for insertion).

    Args:
        curves: `{method name: CurveResult or curve array}`, in legend order.
        ax: axes to draw on; a new figure's when None.
        kind: `"deletion"` or `"insertion"` (the axis label).
        title: axes title (default: the kind).

    Returns:
        The axes drawn on; one `Line2D` per method in `ax.lines`, in the order of `curves`.

    Raises:
        ValueError: no curves, an empty or non-finite curve, curves of different lengths, or an
            unknown `kind`.

    Example:
        >>> import io
        >>> ax = perturbation_curves({"a": np.array([[1.0, 0.5, 0.0]]), "b": np.ones(3)})
        >>> [t.get_text() for t in ax.get_legend().get_texts()]
        ['a (AUC 0.500)', 'b (AUC 1.000)']
        >>> ax.figure.savefig(io.BytesIO(), format="png")
    """
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"`kind` must be 'deletion' or 'insertion', got {kind!r}")
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("`curves` must be a non-empty mapping of method name to curve")
    means = {}
    for name, value in curves.items():
        c = np.asarray(getattr(value, "curve", value), dtype=float)
        c = c[None] if c.ndim == 1 else c
        if c.ndim != 2 or c.shape[1] < 2 or c.shape[0] == 0:
            raise ValueError(
                f"curve {name!r} must be [batch, n_steps + 1] with n_steps >= 1, got {c.shape}"
            )
        if not np.isfinite(c).all():
            raise ValueError(f"curve {name!r} has NaN or inf values")
        means[str(name)] = c.mean(axis=0)
    lengths = {m.size for m in means.values()}
    if len(lengths) != 1:
        raise ValueError(f"every curve must have the same number of steps, got {sorted(lengths)}")
    if ax is None:
        ax = _new_axes((6.0, 4.0))
    for name, m in means.items():
        frac = np.linspace(0.0, 1.0, m.size)
        auc = float(np.sum((m[1:] + m[:-1]) / 2) / (m.size - 1))
        ax.plot(frac, m, marker="." if m.size <= 30 else None, label=f"{name} (AUC {auc:.3f})")
    ax.set_xlabel(f"fraction of features {'removed' if kind == 'deletion' else 'restored'}")
    ax.set_ylabel("target output")
    ax.set_xlim(0.0, 1.0)
    ax.legend()
    ax.set_title(kind if title is None else title)
    return ax
