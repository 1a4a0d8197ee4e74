"""`python -m xai_jax demo`: every method on a dm-haiku classifier of scikit-learn's digits.

Trains a small haiku MLP with optax on the bundled 8x8 digits (no download, seeded), prints
its test accuracy, then explains a few test digits with every method of the library and writes
to `--out` a PNG figure per method, `report.md` / `report.html` (figures, accuracy, a timing
table) and `results.json`.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from matplotlib.figure import Figure
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from xai_jax import (
    ExplanationGenerator,
    expected_gradients,
    integrated_gradients,
    kernel_shap,
    layer_conductance,
    lime,
    smoothgrad,
)
from xai_jax.haiku import split
from xai_jax.plotting import attribution_bars, attribution_heatmap, contrastive_overlay
from xai_jax.quadrature import METHODS

LAYER = "mlp/~/linear_1"  # the second hidden layer (32 units)
# 2x2-pixel blocks: 16 segments of the 8x8 digit, for LIME
SEGMENTS = ((np.arange(8)[:, None] // 2) * 4 + np.arange(8)[None, :] // 2).reshape(64)


def _model(x):
    return hk.nets.MLP([64, 32, 10], name="mlp")(x)


def train(key, x, y, steps: int):
    """A haiku MLP 64-64-32-10 trained with Adam; returns `(transformed, params, loss)`."""
    net = hk.without_apply_rng(hk.transform(_model))
    params = net.init(key, x[:1])
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()
        )(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    for _ in tqdm.trange(steps, desc="training", leave=False):
        params, state, loss = step(params, state)
    return net, params, float(loss)


def _timed(timings: dict, name: str, fn: Callable):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    timings[name] = time.perf_counter() - start
    return out


def explain(key, net, params, x, background, quick: bool) -> tuple[dict, dict]:
    """Every method on the digits `x` `[n, 64]`; returns `(attributions, timings)`."""
    model = jax.jit(lambda z: net.apply(params, z))

    def probs(z):
        return jax.nn.softmax(model(z))

    target = jnp.argmax(model(x), axis=1)
    n_steps = 16 if quick else 32
    keys = jax.random.split(key, 5)
    layer_fn, head_fn = split(net, params, LAYER)
    methods = {
        f"ig_{m}": (f"integrated_gradients[{m}]", partial(
            integrated_gradients, probs, x, target=target, method=m, n_steps=n_steps,
            return_convergence_delta=True)) for m in METHODS
    }  # fmt: skip
    methods |= {
        "conductance": ("layer_conductance", partial(
            layer_conductance, layer_fn, lambda h: jax.nn.softmax(head_fn(h)), x,
            target=target, n_steps=n_steps)),
        "smoothgrad": ("smoothgrad", partial(
            smoothgrad, keys[0], partial(integrated_gradients, probs, target=target, n_steps=8),
            x, num_samples=4 if quick else 16, stdev=0.1)),
        "expected_gradients": ("expected_gradients", partial(
            expected_gradients, keys[1], probs, x, background,
            num_samples=32 if quick else 200, target=target)),
        "lime": ("lime (2x2 blocks)", lambda: lime(
            keys[2], probs, x, num_samples=500 if quick else 2000, perturbation="bernoulli",
            segments=SEGMENTS, target=target).coef[:, SEGMENTS]),
        "kernel_shap": ("kernel_shap", partial(
            kernel_shap, keys[3], probs, x, background[:10],
            num_samples=256 if quick else 2048, target=target)),
    }  # fmt: skip
    out, timings = {}, {}
    for name, (label, run) in methods.items():
        out[name] = _timed(timings, label, run)
    cem = {}
    for mode in ("PP", "PN"):
        generator = ExplanationGenerator(
            "cem", "aoexpgrad", "autodiff",
            loss_kwargs={"mode": mode, "c": 10.0, "K": 1.0},
            optimizer_kwargs={"l1": 0.1, "l2": 0.0, "eta": 1.0},
            num_iter=100 if quick else 500, save_freq=100 if quick else 500,
        )  # fmt: skip
        start = time.perf_counter()
        cem[mode] = [
            generator.run(xi, keys[4], inference_call=model)[1] for xi in x
        ]  # logits: softmax saturates
        timings[f"CEM {mode} (ExplanationGenerator)"] = time.perf_counter() - start
    out["cem"] = cem
    return out, timings


def _figure(path: Path, x, panels: list[tuple[str, np.ndarray]], bars: bool = False) -> str:
    """One row per digit: the digit, then one panel per attribution."""
    rows, cols = x.shape[0], len(panels) + 1
    fig = Figure(figsize=(2.2 * cols, 2.2 * rows), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for r in range(rows):
        axes[r, 0].imshow(np.asarray(x[r]).reshape(8, 8), cmap="gray_r")
        axes[r, 0].set_axis_off()
        for c, (title, values) in enumerate(panels, start=1):
            if bars:
                attribution_bars(values[r], top_k=8, ax=axes[r, c], title=title)
            else:
                attribution_heatmap(values[r].reshape(8, 8), ax=axes[r, c], title=title,
                                    colorbar=False)  # fmt: skip
    fig.savefig(path, dpi=80)
    return path.name


def write_report(out_dir: Path, x, labels, accuracy, attributions, timings, seconds) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    a = attributions
    figures = {
        "integrated gradients (each rule)": _figure(
            out_dir / "integrated_gradients.png", x,
            [(m.replace("riemann_", "r. "), np.asarray(a[f"ig_{m}"][0])) for m in METHODS]),
        f"layer conductance ({LAYER})": _figure(
            out_dir / "layer_conductance.png", x, [("units", np.asarray(a["conductance"]))],
            bars=True),
        "SmoothGrad, expected gradients": _figure(
            out_dir / "noise_methods.png", x,
            [("SmoothGrad(IG)", np.asarray(a["smoothgrad"])),
             ("expected gradients", np.asarray(a["expected_gradients"]))]),
        "LIME (2x2 blocks), KernelSHAP": _figure(
            out_dir / "surrogates.png", x,
            [("LIME", np.asarray(a["lime"])), ("KernelSHAP", np.asarray(a["kernel_shap"]))]),
    }  # fmt: skip
    fig = Figure(figsize=(4.4, 2.2 * x.shape[0]), layout="constrained")
    axes = np.asarray(fig.subplots(x.shape[0], 2, squeeze=False))
    for r in range(x.shape[0]):
        xi = np.asarray(x[r]).reshape(8, 8)
        pp = np.asarray(a["cem"]["PP"][r]["explanation"]).reshape(8, 8)
        pn = np.asarray(a["cem"]["PN"][r]["explanation"]).reshape(8, 8)
        contrastive_overlay(xi, pp=pp, ax=axes[r, 0], title="pertinent positive")
        contrastive_overlay(xi, pn=pn, ax=axes[r, 1], title="pertinent negative")
    fig.savefig(out_dir / "cem.png", dpi=80)
    figures["CEM pertinent positives and negatives"] = "cem.png"

    deltas = {m: np.abs(np.asarray(a[f"ig_{m}"][1])).max().item() for m in METHODS}
    results = {
        "accuracy": accuracy,
        "labels": [int(v) for v in labels],
        "ig_max_abs_delta": deltas,
        "cem_found": {m: [bool(r["found"]) for r in a["cem"][m]] for m in ("PP", "PN")},
        "timings_s": timings,
        "seconds": seconds,
        "finite": bool(all(np.isfinite(np.asarray(v)).all() for k, v in a.items()
                           if k not in ("cem",) and not k.startswith("ig_"))),
    }  # fmt: skip
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# xai_jax demo: a haiku MLP on scikit-learn's digits",
        "",
        f"Test accuracy {accuracy:.3f}; {x.shape[0]} test digits (labels "
        f"{', '.join(map(str, results['labels']))}) explained by every method. "
        f"Integrated-gradients completeness |delta| per rule: "
        + ", ".join(f"{m} {d:.1e}" for m, d in deltas.items())
        + ".",
        "",
        "| method | seconds (first call, compile included) |",
        "|---|---|",
        *(f"| {name} | {t:.2f} |" for name, t in timings.items()),
        "",
    ]
    for title, name in figures.items():
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    body = [f"<h1>{html.escape(lines[0][2:])}</h1>", f"<p>{html.escape(lines[2])}</p>",
            "<table><tr><th>method</th><th>seconds</th></tr>",
            *(f"<tr><td>{html.escape(n)}</td><td>{t:.2f}</td></tr>" for n, t in timings.items()),
            "</table>",
            *(f"<h2>{html.escape(t)}</h2><img src='{n}'>" for t, n in figures.items())]  # fmt: skip
    (out_dir / "report.html").write_text("<html><body>" + "\n".join(body) + "</body></html>")
    return results


def check_out(out) -> Path:
    """`out` as a directory path, refused up front when it (or the nearest existing path above
    it) is a file: writing the report would fail only after the whole run."""
    path = Path(out)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"out={str(out)!r}: {str(existing)!r} is a file, not a directory")
    return path


def main(seed: int = 0, num_digits: int = 4, out: str = "demo_output", quick: bool = False):
    """Train, explain `num_digits` test digits, write the report to `out`.

    Raises:
        ValueError: `num_digits` outside 1..the number of test digits, or `out` (or a path above
            it) an existing file; both before anything is trained.
    """
    t0 = time.perf_counter()
    out_dir = check_out(out)
    digits = load_digits()
    data = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        data, digits.target, test_size=0.25, random_state=seed, stratify=digits.target
    )
    if isinstance(num_digits, bool) or not isinstance(num_digits, int | np.integer):
        raise TypeError(f"num_digits must be an int, got {type(num_digits).__name__}")
    if not 1 <= num_digits <= len(x_test):
        raise ValueError(
            f"num_digits must be in 1..{len(x_test)} (the number of test digits), got {num_digits}"
        )
    key = jax.random.key(seed)
    net, params, loss = train(key, jnp.asarray(x_train), jnp.asarray(y_train),
                              steps=200 if quick else 400)  # fmt: skip
    predict = jax.jit(lambda z: net.apply(params, z))
    accuracy = float((np.asarray(predict(x_test)).argmax(1) == y_test).mean())
    print(f"haiku MLP 64-64-32-10 on digits: train loss {loss:.3f}, test accuracy {accuracy:.3f}")
    x = jnp.asarray(x_test[:num_digits])
    attributions, timings = explain(jax.random.fold_in(key, 1), net, params, x,
                                    jnp.asarray(x_train[:50]), quick)  # fmt: skip
    for name, seconds in timings.items():
        print(f"  {name:<40s} {seconds:6.2f} s")
    results = write_report(out_dir, x, y_test[:num_digits], accuracy, attributions, timings,
                           time.perf_counter() - t0)  # fmt: skip
    print(f"wrote {out}/report.md, report.html, results.json and figures "
          f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    return results
