"""Black-box gradient estimators on an MLP 784-128-10, vs the seeds' NumPy loops.

* `numerical_gradient` vs alibi's `num_grad_batch` (seed 000).
* `urv_gradient` vs MAX's `URVGradientEstimator` (seed 003).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from benchmarks import _mlp
from benchmarks._max_reference import URVGradientEstimator
from benchmarks._timing import Context, record
from xai_jax import numerical_gradient, urv_gradient

BATCH = 10
EPS = 1e-3
TARGET_CLASS = 3
URV_SAMPLES = {150: 5.0, 1000: 10.0}  # q: minimum peer/ours median ratio


# ---- peers: faithful NumPy re-implementations of the seeds --------------------------------


def perturb(X: np.ndarray, eps: float = 1e-08) -> tuple[np.ndarray, np.ndarray]:
    """alibi.utils.gradients.perturb (proba=False). The float64 `eye * eps` upcasts X."""
    shape = X.shape
    X = np.reshape(X, (shape[0], -1))
    dim = X.shape[1]
    pert = np.tile(np.eye(dim) * eps, (shape[0], 1))
    X_rep = np.repeat(X, dim, axis=0)
    X_pert_pos, X_pert_neg = X_rep + pert, X_rep - pert
    shape = (dim * shape[0], *shape[1:])
    return np.reshape(X_pert_pos, shape), np.reshape(X_pert_neg, shape)


def num_grad_batch(func: Callable, X: np.ndarray, args: tuple = (), eps: float = 1e-08):
    """alibi.utils.gradients.num_grad_batch."""
    batch_size = X.shape[0]
    data_shape = X[0].shape
    preds = func(X, *args)
    X_pert_pos, X_pert_neg = perturb(X, eps)
    X_pert = np.concatenate([X_pert_pos, X_pert_neg], axis=0)
    preds_concat = func(X_pert, *args)
    n_pert = X_pert_pos.shape[0]
    grad_numerator = preds_concat[:n_pert] - preds_concat[n_pert:]
    grad_numerator = np.reshape(
        np.reshape(grad_numerator, (batch_size, -1)), (batch_size, preds.shape[1], -1), order="F"
    )
    grad = grad_numerator / (2 * eps)
    return grad.reshape(preds.shape + data_shape)


# ---- benchmarks ---------------------------------------------------------------------------


def bench_numerical_gradient(ctx: Context) -> dict:
    np_params, jax_params = _mlp.numpy_and_jax()
    np_model = functools.partial(_mlp.softmax, np_params, xp=np)
    jax_model = functools.partial(_mlp.softmax, jax_params)
    x = np.random.default_rng(1).random((BATCH, _mlp.SIZES[0]), dtype=np.float32)
    x_device = jax.device_put(x)

    ours = jax.jit(functools.partial(numerical_gradient, jax_model, eps=EPS))
    autodiff = jax.jit(jax.vmap(jax.jacrev(jax_model)))
    timings = ctx.time(
        {
            "peer": lambda: num_grad_batch(np_model, x, eps=EPS),
            "ours": lambda: ours(x_device),
            "autodiff": lambda: autodiff(x_device),
        },
        repeats=15,
        matmul=True,
    )
    peer_grad = num_grad_batch(np_model, x, eps=EPS)
    ours_grad, exact = np.asarray(ours(x_device)), np.asarray(autodiff(x_device))
    evaluations = 2 * BATCH * _mlp.SIZES[0]  # perturbed rows the model sees
    floor_s = _mlp.model_flops(evaluations) / (ctx.gflops(timings) * 1e9)
    peer, ours_t, autodiff_t = timings["peer"], timings["ours"], timings["autodiff"]
    cases = [
        record(
            f"finite differences, batch {BATCH}, eps={EPS:g}",
            peer,
            ours_t,
            targets={"ratio_median": 6.0},
            floor_ms=floor_s * 1e3,
            floor_fraction=floor_s / ours_t.median,
            ratio_cap=peer.median / floor_s,
            max_abs_diff=float(np.max(np.abs(ours_grad - peer_grad))),
        ),
        record(
            "autodiff vmap(jacrev) (informational)",
            peer,
            autodiff_t,
            speedup_vs_ours=ours_t.median / autodiff_t.median,
            max_abs_diff=float(np.max(np.abs(exact - peer_grad))),
        ),
    ]
    return {
        "peer": "alibi num_grad_batch (seed 000) in NumPy, float32-weight NumPy MLP "
        "(alibi's perturbation makes the model's input float64)",
        "ours": f"jax.jit(functools.partial(xai_jax.numerical_gradient, mlp, eps={EPS:g})); "
        "informational row: jax.jit(jax.vmap(jax.jacrev(mlp)))",
        "notes": [
            f"MLP {'-'.join(map(str, _mlp.SIZES))} (ReLU, softmax), batch {BATCH} in [0, 1).",
            "FLOP floor: 2*B*F*2*(784*128+128*10) model FLOPs at the measured matmul "
            "throughput; 'of floor' = floor / ours, 'ratio cap' = peer / floor.",
            "max abs diff: vs the peer's gradient (on the autodiff row: exact vs the peer).",
        ],
        "columns": [
            ("floor_ms", "FLOP floor ms", "{:.3g}"),
            ("floor_fraction", "of floor", "{:.0%}"),
            ("ratio_cap", "ratio cap", "{:.1f}x"),
            ("speedup_vs_ours", "x faster than ours", "{:.0f}x"),
            ("max_abs_diff", "max abs diff", "{:.1e}"),
        ],
        "cases": cases,
    }


def bench_urv_gradient(ctx: Context) -> dict:
    np_params, jax_params = _mlp.numpy_and_jax()
    x = np.random.default_rng(2).random(_mlp.SIZES[0], dtype=np.float32)
    x_device = jax.device_put(x)

    def np_loss(v):
        return -_mlp.log_softmax(np_params, v, np)[TARGET_CLASS]

    def jax_loss(v):
        return -_mlp.log_softmax(jax_params, v)[TARGET_CLASS]

    exact = np.asarray(jax.grad(jax_loss)(x_device))
    seeds = range(2 if ctx.quick else 5)
    cases = [
        _urv_case(ctx, q, target, np_loss, jax_loss, x, exact, seeds)
        for q, target in URV_SAMPLES.items()
    ]
    return {
        "peer": "maxi URVGradientEstimator.__call__ (seed 003) in NumPy, t=1, mu=1/sqrt(d), "
        "one loss call per direction",
        "ours": "jax.jit(lambda k, x: xai_jax.urv_gradient(k, loss, x, num_samples=q)), "
        "key jax.random.key(0)",
        "notes": [
            f"loss: -log softmax(MLP(x))[{TARGET_CLASS}] of one x in [0, 1)^784.",
            f"cos: cosine similarity to the exact jax.grad, mean over {len(seeds)} keys/seeds.",
        ],
        "columns": [("cos_ours", "cos ours", "{:.3f}"), ("cos_peer", "cos peer", "{:.3f}")],
        "cases": cases,
    }


def _urv_case(ctx, q, target, np_loss, jax_loss, x, exact, seeds) -> dict:
    x_device = jax.device_put(x)
    key = jax.random.key(0)
    ours = jax.jit(lambda k, v: urv_gradient(k, jax_loss, v, num_samples=q))
    estimator = URVGradientEstimator(np_loss, x.size, num_iter=q)

    def peer():
        estimator.t = 0  # every timed call is the first step: t = 1, mu = 1/sqrt(d)
        return estimator(x)

    timings = ctx.time({"peer": peer, "ours": lambda: ours(key, x_device)}, repeats=15)
    cos_ours = [_cosine(ours(jax.random.key(s), x_device), exact) for s in seeds]
    cos_peer = []
    for s in seeds:
        fresh = URVGradientEstimator(np_loss, x.size, num_iter=q)
        fresh.randomState = np.random.RandomState(s)
        cos_peer.append(_cosine(fresh(x), exact))
    return record(
        f"q={q}, d={x.size}",
        timings["peer"],
        timings["ours"],
        targets={"ratio_median": target},
        cos_ours=float(np.mean(cos_ours)),
        cos_peer=float(np.mean(cos_peer)),
    )


def _cosine(a, b) -> float:
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
