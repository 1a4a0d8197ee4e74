"""LIME vs `lime` and KernelSHAP vs `shap`, on the same 20-feature MLP and data.

* `lime` vs `lime.lime_tabular.LimeTabularExplainer(discretize_continuous=False,
  feature_selection="none").explain_instance(num_samples=5000)`: Gaussian samples around the
  training mean with the training standard deviations, lime's kernel width 0.75 sqrt(20),
  `Ridge(alpha=1)`, label 1. Ours gets the same `mean` and `scale` (the explainer's
  `scaler.mean_` and `scaler.scale_`).
* `kernel_shap` vs `shap.KernelExplainer(f, background).shap_values(nsamples=2048,
  l1_reg=False)` with 50 background rows, class 1.

The model is an MLP 20-64-64-2 (ReLU, softmax) with float32 weights; the peers call it with
NumPy (on the float64 rows they build), ours with `jax.numpy` in float32. Each peer explains
instances one at a time: its per-instance time is the median over single instances. Ours is
timed on one instance and on a batch of 100 (one call), per instance = batch time / 100. Ours
is called eagerly, as a user would: each call includes the argument checks and dispatch.

Agreement: the surrogates are fit on different random samples, so the coefficients of the same
instance differ by sampling noise only; we report the largest difference relative to the
largest coefficient, lime vs ours and lime vs lime (two seeds), and for KernelSHAP ours and
shap against each other and against the exact Shapley values of one instance (2**20
coalitions, computed with JAX).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import shap
from lime.lime_tabular import LimeTabularExplainer

from benchmarks import _mlp
from benchmarks._timing import Context, record
from xai_jax import kernel_shap, lime

SIZES = (20, 64, 64, 2)
NUM_INSTANCES = 100
LIME_SAMPLES = 5000
SHAP_SAMPLES = 2048
BACKGROUND = 50
TARGET = 1

COLUMNS = [
    ("instances", "instances", "{:.0f}"),
    ("peer_per_instance_ms", "peer ms/instance", "{:.3g}"),
    ("ours_per_instance_ms", "ours ms/instance", "{:.3g}"),
    ("model_flop_fraction", "model GFLOP/s share of matmul", "{:.0%}"),
    ("rel_diff_vs_peer", "max rel diff vs peer", "{:.2f}"),
    ("rel_diff_peer_vs_peer", "peer vs itself", "{:.2f}"),
]


class _Setup:
    def __init__(self):
        params, jparams = _mlp.numpy_and_jax(0, SIZES)
        self.peer_fn = lambda x: _mlp.softmax(params, x, np)
        self.fn = lambda x: _mlp.softmax(jparams, x, jnp)
        rng = np.random.default_rng(1)
        self.train = (rng.standard_normal((1000, SIZES[0])) * rng.uniform(0.5, 2, SIZES[0])
                      + rng.standard_normal(SIZES[0])).astype(np.float32)  # fmt: skip
        self.X = self.train[:NUM_INSTANCES]
        self.background = self.train[-BACKGROUND:]


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def bench_lime(ctx: Context) -> dict:
    s = _Setup()
    explainer = LimeTabularExplainer(
        s.train, discretize_continuous=False, feature_selection="none", random_state=0
    )
    mean, scale = explainer.scaler.mean_, explainer.scaler.scale_
    n_peer = 5 if ctx.quick else 20

    def peer(i: int, explainer=explainer):
        exp = explainer.explain_instance(
            s.X[i], s.peer_fn, labels=(TARGET,), num_features=SIZES[0], num_samples=LIME_SAMPLES
        )
        coef = np.zeros(SIZES[0])
        for feature, value in exp.local_exp[TARGET]:
            coef[feature] = value
        return coef

    def ours(x):
        key = jax.random.key(0)
        return lime(key, s.fn, x, num_samples=LIME_SAMPLES, mean=mean, scale=scale, target=TARGET)

    timings = ctx.time(
        {
            "peer": lambda: [peer(i) for i in range(n_peer)],
            "ours_1": lambda: ours(s.X[:1]),
            "ours_100": lambda: ours(s.X),
        },
        repeats=5,
        matmul=True,
    )
    other = LimeTabularExplainer(
        s.train, discretize_continuous=False, feature_selection="none", random_state=1
    )
    peer_coef = np.stack([peer(i) for i in range(5)])
    peer_again = np.stack([peer(i, other) for i in range(5)])
    ours_coef = np.asarray(ours(s.X[:5]).coef)
    agreement = {
        "rel_diff_vs_peer": _relative(ours_coef, peer_coef),
        "rel_diff_peer_vs_peer": _relative(peer_again, peer_coef),
    }
    return {
        "peer": "LimeTabularExplainer(train, discretize_continuous=False, feature_selection='none')"
        ".explain_instance(x, f, labels=(1,), num_features=20, num_samples=5000), one instance "
        "at a time",
        "ours": "xai_jax.lime(key, f, X, num_samples=5000, mean=scaler.mean_, "
        "scale=scaler.scale_, target=1), eager",
        "notes": [
            f"MLP {'-'.join(map(str, SIZES))}; peer per instance: median over "
            f"{n_peer} instances per timed call."
        ],
        "columns": COLUMNS,
        "cases": [
            _case(ctx, timings, "ours_1", 1, n_peer, LIME_SAMPLES, agreement, 10),
            _case(ctx, timings, "ours_100", NUM_INSTANCES, n_peer, LIME_SAMPLES, agreement, 30),
        ],
    }


def bench_kernel_shap(ctx: Context) -> dict:
    s = _Setup()
    explainer = shap.KernelExplainer(s.peer_fn, s.background)
    n_peer = 2 if ctx.quick else 5

    def peer(rows: np.ndarray) -> np.ndarray:
        values = explainer.shap_values(rows, nsamples=SHAP_SAMPLES, l1_reg=False, silent=True)
        values = np.asarray(values)
        return values[..., TARGET] if values.shape[-1] == SIZES[-1] else values[TARGET]

    def ours(x):
        key = jax.random.key(0)
        return kernel_shap(
            key, s.fn, x, s.background, num_samples=SHAP_SAMPLES, target=TARGET,
            sampler="shap", estimator="linear",  # shap's design: the same work per coalition
        )  # fmt: skip

    timings = ctx.time(
        {
            "peer": lambda: peer(s.X[:n_peer]),
            "ours_1": lambda: ours(s.X[:1]),
            "ours_100": lambda: ours(s.X),
        },
        repeats=3,
        matmul=True,
    )
    np.random.seed(0)  # noqa: NPY002  (shap samples with NumPy's global generator)
    peer_values = peer(s.X[:3])
    np.random.seed(1)  # noqa: NPY002
    peer_again = peer(s.X[:3])
    ours_values = np.asarray(ours(s.X[:3]))
    exact = _exact_shapley(s.fn, s.X[0], s.background)
    agreement = {
        "rel_diff_vs_peer": _relative(ours_values, peer_values),
        "rel_diff_peer_vs_peer": _relative(peer_again, peer_values),
        "ours_rel_l2_vs_exact": _relative_l2(ours_values[0], exact),
        "peer_rel_l2_vs_exact": _relative_l2(peer_values[0], exact),
    }
    rows = SHAP_SAMPLES * BACKGROUND
    return {
        "peer": "shap.KernelExplainer(f, background[50]).shap_values(x, nsamples=2048, "
        "l1_reg=False), one instance at a time",
        "ours": "xai_jax.kernel_shap(key, f, X, background, num_samples=2048, target=1, "
        "sampler='shap', estimator='linear'), eager",
        "notes": [
            f"MLP {'-'.join(map(str, SIZES))}; {rows} model rows per instance; the exact "
            "Shapley values of instance 0 enumerate all 2**20 coalitions."
        ],
        "columns": COLUMNS,
        "cases": [
            _case(ctx, timings, "ours_1", 1, n_peer, rows, agreement, None),
            _case(ctx, timings, "ours_100", NUM_INSTANCES, n_peer, rows, agreement, 30),
        ],
    }


def _case(ctx, timings, name, instances, n_peer, rows, agreement, target) -> dict:
    peer, ours = timings["peer"], timings[name]
    scale_peer, scale_ours = 1 / n_peer, 1 / instances
    per = type(peer)
    peer_1 = per(peer.median * scale_peer, peer.min * scale_peer, peer.repeats)
    ours_1 = per(ours.median * scale_ours, ours.min * scale_ours, ours.repeats)
    model_gflops = _mlp.model_flops(rows, SIZES) / ours_1.median / 1e9
    return record(
        f"{instances} instance{'s' * (instances > 1)}",
        peer_1,
        ours_1,
        targets={"ratio_median": target} if target else None,
        instances=instances,
        peer_per_instance_ms=peer_1.median * 1e3,
        ours_per_instance_ms=ours_1.median * 1e3,
        model_flop_fraction=model_gflops / ctx.gflops(timings),
        **agreement,
    )


def _exact_shapley(fn, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Shapley values of `v(S) = mean_b f(x_S, b_rest)[TARGET]` over all 2**d coalitions."""
    d = x.shape[0]
    bits = jnp.arange(d, dtype=jnp.int32)

    @jax.jit
    def values(start):
        index = start + jnp.arange(4096, dtype=jnp.int32)
        masks = ((index[:, None] >> bits[None]) & 1).astype(bool)
        inputs = jnp.where(masks[:, None, :], jnp.asarray(x)[None, None], background[None])
        return fn(inputs.reshape(-1, d))[:, TARGET].reshape(4096, -1).mean(axis=1)

    v = np.concatenate([np.asarray(values(jnp.int32(s)), np.float64) for s in range(0, 2**d, 4096)])
    index = np.arange(2**d)
    sizes = np.array([bin(i).count("1") for i in range(2**d)])
    weight = np.array([math.factorial(k) * math.factorial(d - k - 1) for k in range(d)])
    weight = weight / math.factorial(d)
    phi = np.zeros(d)
    for j in range(d):
        without = index[(index >> j) & 1 == 0]
        phi[j] = np.sum(weight[sizes[without]] * (v[without | (1 << j)] - v[without]))
    return phi
