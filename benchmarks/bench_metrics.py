"""Evaluation metrics: infidelity and sensitivity_max vs Captum, deletion / insertion /
faithfulness correlation vs a per-example loop with a jitted model (how Quantus and RISE run).

Both sides evaluate the same float32 torch model (weights copied to JAX):
* MLP 784-256-256-10 on a batch of 32, CNN (Conv 1->16 3x3, ReLU, Conv 16->32 3x3 stride 2,
  ReLU, Linear 5408->10) on a batch of 8 28x28 images.
* infidelity: Gaussian noise of 0.1 (Captum: `torch.randn_like` in the perturb_func), the
  attributions by saliency and by integrated gradients (computed once, not timed; the
  metric's cost does not depend on them), n_perturb_samples 10 and 50. The noise draw alone
  (ours and torch's `randn_like`) is timed too: "cap" = Captum / (model alone + our draw).
* sensitivity_max: the explanation re-run on every perturbation: saliency, and integrated
  gradients with 20 steps (Captum's `IntegratedGradients.attribute` with `n_steps=20`).
* floor: the jitted model alone on the metric's model rows (and its gradient for
  sensitivity), timed in the same run; "floor fraction" = floor time / our time. On the CNN it
  is compiled the second way (`_cpu_options.jit`: YNNPACK's dot fusion, thin convolutions as
  multiply-adds), as ours is.
* deletion / insertion (20 steps) and faithfulness correlation (100 subsets of 78 pixels) on the
  MLP: the reference loops over examples and steps (subsets) in NumPy and calls the jitted model
  once per perturbed input, as Quantus' `PixelFlipping` / `FaithfulnessCorrelation` and RISE's
  evaluation do; ours is one call of the metric.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max as captum_sensitivity
from torch import nn

from benchmarks._timing import Context, record
from xai_jax import (
    _cpu_options,
    deletion,
    faithfulness_correlation,
    infidelity,
    insertion,
    integrated_gradients,
    sensitivity_max,
)
from xai_jax.perturbations import standard_normal

COLUMNS = [
    ("rows", "model rows", "{:.0f}"),
    ("floor_fraction", "floor fraction (model alone / ours)", "{:.2f}"),
    ("ratio_cap", "cap: Captum / (model alone + our noise draw)", "{:.2f}"),
    ("max_rel_diff", "max rel. |ours - peer| (same draws: 0 expected only for loops)", "{:.1e}"),
]


def _np(t) -> np.ndarray:
    return t.detach().numpy().astype(np.float32)


def _mlp():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 10),
    ).eval()  # fmt: skip
    p = {k: jnp.asarray(_np(v)) for k, v in net.state_dict().items()}

    def fn(x):
        h = x.reshape(x.shape[0], -1)
        h = jax.nn.relu(h @ p["1.weight"].T + p["1.bias"][None])
        h = jax.nn.relu(h @ p["3.weight"].T + p["3.bias"][None])
        return h @ p["5.weight"].T + p["5.bias"][None]

    return net, fn


def _cnn():
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(32 * 12 * 12, 10),
    ).eval()  # fmt: skip
    p = {k: jnp.asarray(_np(v)) for k, v in net.state_dict().items()}

    def conv(h, name, stride):
        h = jax.lax.conv_general_dilated(
            h, p[f"{name}.weight"], (stride, stride), "VALID",
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )  # fmt: skip
        return jax.nn.relu(h + p[f"{name}.bias"][None, :, None, None])

    def fn(x):
        h = conv(conv(x, "0", 1), "2", 2)
        return h.reshape(h.shape[0], -1) @ p["5.weight"].T + p["5.bias"][None]

    return net, fn


def _saliency(fn):
    def explain(v, target):
        return jax.grad(lambda u: jnp.take_along_axis(fn(u), target[:, None], 1).sum())(v)

    return explain


def _ig(fn):
    return lambda v, target: integrated_gradients(fn, v, target=target, n_steps=20)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _captum_cases(ctx: Context, name, net, fn, x, t, ns) -> tuple[list[dict], list[str]]:
    cases, noise_notes = [], []
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    key = jax.random.key(0)
    sal_t, ig_t = Saliency(net), IntegratedGradients(net)
    attrs = {"saliency": _saliency(fn)(jnp.asarray(x), jnp.asarray(t))}
    attrs["IG"] = _ig(fn)(jnp.asarray(x), jnp.asarray(t))
    # the floor compiled as ours is: the second way where the model has convolutions
    convs = _cpu_options.conv_flops(jax.make_jaxpr(fn)(jnp.asarray(x))) > 0
    compile_ = _cpu_options.jit if convs else jax.jit
    fwd = compile_(lambda v: fn(v))
    grad = compile_(_saliency(fn))
    draw = jax.jit(standard_normal, static_argnums=(1, 2))  # no input array: no transfer

    def perturb(inputs):
        noise = 0.1 * torch.randn_like(inputs)
        return noise, inputs - noise

    for n in ns:
        rows = x.shape[0] * (n + 1)
        big = np.repeat(x, n + 1, axis=0)
        big_t = np.repeat(t, n + 1)
        # the default perturbation's noise alone, ours (16-bit quantile normals from threefry
        # bits) and torch's randn_like, on the perturbed inputs' shape
        noisy = np.repeat(x, n, axis=0)
        noisy_t = torch.from_numpy(noisy)
        noise = ctx.time(
            {
                "torch": lambda v=noisy_t: torch.randn_like(v),
                "ours": lambda v=noisy: draw(key, v.shape, v.dtype),
            },
            repeats=5,
        )
        noise_notes.append(
            f"{name} n={n}: drawing the {noisy.shape[0]} x {noisy[0].size} Gaussian "
            f"perturbations takes {noise['ours'].median * 1e3:.2f} ms here, torch.randn_like "
            f"{noise['torch'].median * 1e3:.2f} ms (medians)"
        )
        for a_name, a in attrs.items():
            a_t = torch.from_numpy(np.asarray(a))
            peer = lambda a_t=a_t, n=n: captum_infidelity(
                net, perturb, xt, a_t, target=tt, n_perturb_samples=n
            )
            ours = lambda a=a, n=n: infidelity(key, fn, x, a, target=t, n_perturb_samples=n)
            floor = lambda big=big: fwd(big)
            with torch.no_grad():
                timings = ctx.time({"peer": peer, "ours": ours, "floor": floor}, repeats=5)
            diff = _rel(np.asarray(ours()).mean(), _np(peer()).mean())  # random draws: means
            cases.append(record(
                f"infidelity {name} ({a_name} attributions) n={n}", timings["peer"],
                timings["ours"], rows=rows, max_rel_diff=diff,
                floor_fraction=timings["floor"].median / timings["ours"].median,
                ratio_cap=timings["peer"].median
                / (timings["floor"].median + noise["ours"].median),
                targets={"ratio_median": 2},
            ))  # fmt: skip
        for e_name, explain, peer_explain, kw, steps in (
            ("saliency", _saliency(fn), sal_t.attribute, {"abs": False}, 1),
            ("IG 20 steps", _ig(fn), ig_t.attribute, {"n_steps": 20}, 20),
        ):
            peer = lambda pe=peer_explain, kw=kw, n=n: captum_sensitivity(
                pe, xt, n_perturb_samples=n, target=tt, **kw
            )
            ours = lambda e=explain, n=n: sensitivity_max(
                key, e, x, n_perturb_samples=n, explain_kwargs={"target": t}
            )
            if steps == 1:
                floor = lambda big=big, big_t=big_t: grad(big, big_t)
            else:
                path = np.repeat(big, steps, axis=0)
                path_t = np.repeat(big_t, steps)
                floor = lambda path=path, path_t=path_t: grad(path, path_t)
            timings = ctx.time({"peer": peer, "ours": ours, "floor": floor}, repeats=3)
            diff = _rel(np.asarray(ours()).mean(), _np(peer()).mean())
            cases.append(record(
                f"sensitivity_max {name} ({e_name}) n={n}", timings["peer"], timings["ours"],
                rows=rows * steps, max_rel_diff=diff,
                floor_fraction=timings["floor"].median / timings["ours"].median,
                targets={"ratio_median": 2},
            ))  # fmt: skip
    return cases, noise_notes


def _loop_curve(fwd, x, a, t, n_steps, insert):
    """RISE / Quantus: per example, per step, a perturbed copy and one model call."""
    out = np.zeros((len(x), n_steps + 1), np.float32)
    flat_x, flat_a = x.reshape(len(x), -1), a.reshape(len(x), -1)
    g = flat_x.shape[1]
    for i in range(len(x)):
        order = np.argsort(-flat_a[i], kind="stable")
        for k in range(n_steps + 1):
            top = order[: k * g // n_steps]
            z = np.zeros_like(flat_x[i]) if insert else flat_x[i].copy()
            z[top] = flat_x[i, top] if insert else 0.0
            out[i, k] = float(fwd(z.reshape(1, *x.shape[1:]))[0, t[i]])
    return out


def _loop_faithfulness(fwd, x, a, t, size, n_subsets, rng):
    flat_x, flat_a = x.reshape(len(x), -1), a.reshape(len(x), -1)
    out = []
    for i in range(len(x)):
        fx = float(fwd(x[i : i + 1])[0, t[i]])
        sums, drops = [], []
        for _ in range(n_subsets):
            chosen = rng.choice(flat_x.shape[1], size, replace=False)
            z = flat_x[i].copy()
            z[chosen] = 0.0
            sums.append(flat_a[i, chosen].sum())
            drops.append(fx - float(fwd(z.reshape(1, *x.shape[1:]))[0, t[i]]))
        out.append(np.corrcoef(sums, drops)[0, 1])
    return np.array(out)


def bench_metrics(ctx: Context) -> dict:
    rng = np.random.default_rng(0)
    cases, notes = [], []
    ns = (10,) if ctx.quick else (10, 50)
    net, fn = _mlp()
    x = rng.uniform(0, 1, size=(32, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, 32)
    for name, (model, model_fn), batch in (("MLP b32", (net, fn), 32), ("CNN b8", _cnn(), 8)):
        model_cases, noise_notes = _captum_cases(
            ctx, name, model, model_fn, x[:batch], t[:batch], ns
        )
        cases += model_cases
        notes += noise_notes

    # deletion / insertion / faithfulness vs the per-example loop, MLP, batch 32
    fwd = jax.jit(fn)
    a = np.asarray(_saliency(fn)(jnp.asarray(x), jnp.asarray(t)) * x)
    key = jax.random.key(0)
    for name, metric, insert in (("deletion", deletion, False), ("insertion", insertion, True)):
        ours = lambda m=metric: m(fn, x, a, target=t, n_steps=20).curve
        peer = lambda insert=insert: _loop_curve(fwd, x, a, t, 20, insert)
        timings = ctx.time({"peer": peer, "ours": ours}, repeats=3)
        cases.append(record(
            f"{name} MLP b32, 20 steps", timings["peer"], timings["ours"], rows=32 * 21,
            max_rel_diff=_rel(ours(), peer()), targets={"ratio_median": 10},
        ))  # fmt: skip
    ours = lambda: faithfulness_correlation(key, fn, x, a, target=t, subset_size=78)
    peer = lambda: _loop_faithfulness(fwd, x, a, t, 78, 100, np.random.default_rng(1))
    timings = ctx.time({"peer": peer, "ours": ours}, repeats=3)
    diff = abs(float(np.mean(ours())) - float(np.mean(peer())))
    cases.append(record(
        "faithfulness_correlation MLP b32, 100 subsets of 78", timings["peer"], timings["ours"],
        rows=32 * 101, max_rel_diff=diff, targets={"ratio_median": 10},
    ))  # fmt: skip
    return {
        "peer": "captum.metrics infidelity / sensitivity_max (one batched forward per call, "
        "torch.no_grad for infidelity); a NumPy loop over examples and steps/subsets with a "
        "jitted model (Quantus / RISE) for deletion, insertion, faithfulness correlation",
        "ours": "xai_jax infidelity / sensitivity_max / deletion / insertion / "
        "faithfulness_correlation, eager, default batch_size",
        "notes": [
            "infidelity / sensitivity / faithfulness draw their perturbations at random on both "
            "sides: the difference column compares the batch means (same distribution), or for "
            "faithfulness the absolute difference of the mean correlations; deletion and "
            "insertion are deterministic and agree to round-off.",
            "floor: the jitted model (sensitivity: its gradient, times the IG steps) alone on "
            "the metric's rows, same run; Captum already evaluates every perturbation in one "
            "batched forward, so the ratio is capped by floor fraction x (Captum / floor).",
            "cap (infidelity): Captum's time over the model alone plus our draw of the default "
            "perturbation's noise, the best ratio any program that draws that noise and runs "
            "that forward could reach here; the draws, ours and torch's randn_like:",
            *notes,
        ],
        "columns": COLUMNS,
        "cases": cases,
    }
