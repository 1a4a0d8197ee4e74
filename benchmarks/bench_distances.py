"""`pairwise_distances` vs `sklearn.metrics.pairwise_distances` (float32, euclidean and cosine)."""

from __future__ import annotations

import functools

import jax
import numpy as np
from sklearn.metrics import pairwise_distances as sk_pairwise_distances

from benchmarks._timing import Context, record
from xai_jax import pairwise_distances

METRICS = ("euclidean", "cosine")
# (rows, features) of x and of y; the quick run shrinks the two largest.
SHAPES = ((1000, 784), (4000, 784), (10000, 64))
QUICK_SHAPES = ((1000, 784), (2000, 784), (3000, 64))
# Minimum peer/ours median ratios at the first shape; at every other shape it is 1.
RATIO_TARGETS = {"euclidean": 2.0, "cosine": 1.5}
MATMUL_TARGET = 0.75  # fraction of the matmul ceiling at the second (large, d=784) shape
MAX_REL_ERR = 1e-4

COLUMNS = [
    ("gflops", "GFLOP/s", "{:.0f}"),
    ("matmul_fraction", "of matmul", "{:.0%}"),
    ("max_rel_err", "max err / scale", "{:.1e}"),
]


def bench_pairwise_distances(ctx: Context) -> dict:
    rng = np.random.default_rng(0)
    shapes = QUICK_SHAPES if ctx.quick else SHAPES
    cases = []
    for index, (n, d) in enumerate(shapes):
        x = rng.standard_normal((n, d), dtype=np.float32)
        y = rng.standard_normal((n, d), dtype=np.float32)
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        on_device = (jax.device_put(x), jax.device_put(y))
        repeats = 20 if n * n * d <= 1000 * 1000 * 784 else 7
        for metric in METRICS:
            reference = sk_pairwise_distances(x64, y64, metric=metric)
            targets = {"ratio_median": RATIO_TARGETS[metric] if index == 0 else 1.0}
            if index == 1:
                targets["matmul_fraction"] = MATMUL_TARGET
            label = f"{metric} {n}x{d}"
            cases.append(_case(ctx, label, (x, y), on_device, metric, reference, targets, repeats))
            if index == 0:
                # explainax's setting: float64 NumPy in, ours converts to float32 on the way in.
                label = f"{metric} {n}x{d}, float64 NumPy in (explainax seed)"
                targets = {"ratio_median": 1.0}
                cases.append(_case(ctx, label, (x64, y64), (x64, y64), metric, reference, targets))
    return {
        "peer": "sklearn.metrics.pairwise_distances(x, y, metric=m), NumPy in",
        "ours": "jax.jit(functools.partial(xai_jax.pairwise_distances, metric=m)), "
        "device arrays in",
        "notes": [
            "FLOPs counted as 2*n*m*d (the matrix product); 'of matmul' is ours' GFLOP/s over "
            "the f32 2048^3 jnp.dot throughput, timed in the same rounds as the case.",
            "max err / scale: max |ours - sklearn float64| / max(sklearn float64 distances); "
            f"must be <= {MAX_REL_ERR:g}.",
        ],
        "columns": COLUMNS,
        "cases": cases,
    }


def _case(ctx, label, peer_args, our_args, metric, reference, targets, repeats=20) -> dict:
    ours = jax.jit(functools.partial(pairwise_distances, metric=metric))
    timings = ctx.time(
        {
            "peer": lambda: sk_pairwise_distances(*peer_args, metric=metric),
            "ours": lambda: ours(*our_args),
        },
        repeats=repeats,
        matmul=True,
    )
    result = np.asarray(ours(*our_args), dtype=np.float64)
    err = float(np.max(np.abs(result - reference)) / np.max(reference))
    if not err <= MAX_REL_ERR:
        ctx.warn(f"pairwise_distances {label}: max error / scale {err:.2e} > {MAX_REL_ERR:g}")
    (n, d), m = peer_args[0].shape, peer_args[1].shape[0]
    gflops = 2.0 * n * m * d / timings["ours"].median / 1e9
    return record(
        label,
        timings["peer"],
        timings["ours"],
        targets=targets,
        gflops=gflops,
        matmul_fraction=gflops / ctx.gflops(timings),
        max_rel_err=err,
    )
