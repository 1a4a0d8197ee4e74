"""Perturbation attributions vs Captum: occlusion, feature ablation, Shapley sampling and exact.

Both sides explain the same float32 torch model (weights copied to JAX) at the same inputs.
Captum runs at its default `perturbations_per_eval=1` and at its fastest setting, every
perturbation of an example in one evaluation (the number of features or windows); ours is
called eagerly with the default `batch_size` (every row of a case in one or a few calls).

* occlusion: a CNN (Conv 1->8 3x3 stride 2, ReLU, Conv 8->16 3x3 stride 2, ReLU, Linear 576->10)
  on a batch of 8 28x28 images, window (1, 4, 4), strides (1, 2, 2): 169 windows per image.
* feature ablation: an MLP 20-64-64-2 on 100 rows, every feature its own.
* Shapley value sampling: the same MLP, 10 rows, `n_samples=25` (random orders: the numbers
  agree only in distribution, the sums exactly).
* exact Shapley values: Captum enumerates d! permutations, so it is timed at d=5 (120 orders);
  ours at d=5 and, alone, at d=10 (1024 coalitions per row).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from captum.attr import FeatureAblation, Occlusion, ShapleyValues, ShapleyValueSampling
from torch import nn

from benchmarks._timing import Context, record
from xai_jax import feature_ablation, occlusion, shapley_value_sampling, shapley_values

COLUMNS = [
    ("rows", "model rows", "{:.0f}"),
    ("peer_setting", "Captum perturbations_per_eval (0: not run)", "{:.0f}"),
    ("max_abs_diff", "max |ours - Captum|", "{:.1e}"),
]


def _np(t) -> np.ndarray:
    return t.detach().numpy().astype(np.float32)


def _linear(w, b, h):
    return h @ jnp.asarray(w).T + jnp.asarray(b)[None]


def _cnn():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 6 * 6, 10),
    ).eval()  # fmt: skip
    p = {k: _np(v) for k, v in net.state_dict().items()}

    def conv(h, name):
        h = jax.lax.conv_general_dilated(
            h, jnp.asarray(p[f"{name}.weight"]), (2, 2), "VALID",
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )  # fmt: skip
        return jax.nn.relu(h + jnp.asarray(p[f"{name}.bias"])[None, :, None, None])

    def fn(x):
        h = conv(conv(x, "0"), "2")
        return _linear(p["5.weight"], p["5.bias"], h.reshape(h.shape[0], -1))

    return net, fn


def _mlp(d: int):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    net = net.eval()
    p = {k: _np(v) for k, v in net.state_dict().items()}

    def fn(x):
        h = jax.nn.relu(_linear(p["0.weight"], p["0.bias"], x))
        h = jax.nn.relu(_linear(p["2.weight"], p["2.bias"], h))
        return _linear(p["4.weight"], p["4.bias"], h)

    return net, fn


def _pair(ctx, name, peer_1, peer_fast, fast_setting, ours, rows, diff, target) -> list[dict]:
    timings = ctx.time(
        {"peer_1": peer_1, "peer_fast": peer_fast, "ours": ours}, repeats=30, rounds=5
    )
    return [
        record(f"{name} vs ppe=1", timings["peer_1"], timings["ours"], rows=rows,
               peer_setting=1, max_abs_diff=diff),
        record(f"{name} vs fastest", timings["peer_fast"], timings["ours"], rows=rows,
               peer_setting=fast_setting, max_abs_diff=diff,
               targets={"ratio_median": target} if target else None),
    ]  # fmt: skip


def bench_perturbation(ctx: Context) -> dict:
    rng = np.random.default_rng(0)
    cases = []
    no_grad = torch.no_grad()
    no_grad.__enter__()
    try:
        # occlusion on the CNN, batch 8
        net, fn = _cnn()
        x = rng.normal(size=(8, 1, 28, 28)).astype(np.float32)
        t = rng.integers(0, 10, 8)
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        occ = Occlusion(net)
        kw = dict(sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2))
        peer = lambda ppe: lambda: occ.attribute(xt, target=tt, perturbations_per_eval=ppe, **kw)
        ours = lambda: occlusion(fn, x, target=t, **kw)
        diff = float(np.abs(np.asarray(ours()) - _np(peer(169)())).max())
        cases += _pair(ctx, "occlusion CNN b8", peer(1), peer(169), 169, ours, 8 * 170, diff, 3)

        # feature ablation on the 20-feature MLP, batch 100
        net, fn = _mlp(20)
        x = rng.normal(size=(100, 20)).astype(np.float32)
        xt = torch.from_numpy(x)
        abl = FeatureAblation(net)
        peer = lambda ppe: lambda: abl.attribute(xt, target=1, perturbations_per_eval=ppe)
        ours = lambda: feature_ablation(fn, x, target=1)
        diff = float(np.abs(np.asarray(ours()) - _np(peer(20)())).max())
        cases += _pair(ctx, "feature ablation MLP d=20 b100", peer(1), peer(20), 20, ours,
                       100 * 21, diff, 5)  # fmt: skip

        # Shapley value sampling, 25 orders, batch 10
        xs, xst = x[:10], xt[:10]
        svs = ShapleyValueSampling(net)
        peer = lambda ppe: (
            lambda: svs.attribute(xst, target=1, n_samples=25, perturbations_per_eval=ppe)
        )
        key = jax.random.key(0)
        ours = lambda: shapley_value_sampling(key, fn, xs, target=1, n_samples=25)
        sums = float(
            np.abs(np.asarray(ours()).sum(1) - _np(peer(20)()).sum(1)).max()
        )  # efficiency: the sums agree; the values only in distribution
        cases += _pair(ctx, "Shapley sampling MLP d=20 b10 n=25", peer(1), peer(20), 20, ours,
                       10 * (25 * 19 + 2), sums, 5)  # fmt: skip

        # exact Shapley values: Captum's d! permutations at d=5
        net, fn = _mlp(5)
        x6 = rng.normal(size=(10, 5)).astype(np.float32)
        sv = ShapleyValues(net)
        x6t = torch.from_numpy(x6)
        peer = lambda ppe: lambda: sv.attribute(x6t, target=1, perturbations_per_eval=ppe)
        ours = lambda: shapley_values(fn, x6, target=1)
        diff = float(np.abs(np.asarray(ours()) - _np(peer(120)())).max())
        cases += _pair(ctx, "exact Shapley MLP d=5 b10", peer(1), peer(120), 120, ours,
                       10 * 32, diff, None)  # fmt: skip
        net, fn = _mlp(10)
        x10 = rng.normal(size=(10, 10)).astype(np.float32)
        alone = ctx.time({"ours": lambda: shapley_values(fn, x10, target=1)}, repeats=5)["ours"]
    finally:
        no_grad.__exit__(None, None, None)
    return {
        "peer": "captum.attr Occlusion / FeatureAblation / ShapleyValueSampling / ShapleyValues "
        "under torch.no_grad(), perturbations_per_eval=1 and its fastest setting",
        "ours": "xai_jax occlusion / feature_ablation / shapley_value_sampling / shapley_values, "
        "eager, default batch_size",
        "notes": [
            "Shapley sampling: 'max |ours - Captum|' is the largest difference of the per-example "
            "sums (both equal F(x) - F(0)); the values are random.",
            "occlusion: incremental inference (the convolutions of each row on the box its window "
            "changes, the dense head on that change alone; xai_jax._incremental).",
            f"exact Shapley values at d=10, b10 (10,240 model rows), ours alone (Captum would "
            f"walk 10! orders): {alone.median * 1e3:.2f} ms median, {alone.min * 1e3:.2f} ms min.",
        ],
        "columns": COLUMNS,
        "cases": cases,
    }
