"""`weighted_ridge` vs `sklearn.linear_model.Ridge(alpha=1.0)` with lime-like sample weights."""

from __future__ import annotations

import functools

import jax
import numpy as np
from sklearn.linear_model import Ridge

from benchmarks._timing import Context, record
from xai_jax import weighted_ridge

NUM_SAMPLES = 5000
FEATURES = (20, 200)

COLUMNS = [
    ("peer_fit_median_s", "peer fit only ms", "{:.3g}", 1e3),
    ("ratio_fit_median", "ratio (fit only)", "{:.2f}x"),
    ("max_abs_coef_diff", "max abs coef diff", "{:.1e}"),
    ("abs_score_diff", "abs score diff", "{:.1e}"),
]


def bench_weighted_ridge(ctx: Context) -> dict:
    rng = np.random.default_rng(0)
    cases = [_case(ctx, rng, NUM_SAMPLES, d) for d in FEATURES]
    return {
        "peer": "Ridge(alpha=1.0).fit(X, y, sample_weight=w) then .score(X, y, sample_weight=w) "
        "(as lime); 'fit only' times the fit alone",
        "ours": "jax.jit(functools.partial(xai_jax.weighted_ridge, alpha=1.0)), device arrays in "
        "(returns coef, intercept and the weighted R^2 score)",
        "notes": [
            "float32 data: X standard normal, y = sigmoid(X beta / sqrt(d)) + noise, "
            "w = lime's kernel sqrt(exp(-dist^2 / (0.75 sqrt(d))^2)) of the distance to row 0."
        ],
        "columns": COLUMNS,
        "cases": cases,
    }


def _lime_like(rng, n: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = rng.standard_normal((n, d), dtype=np.float32)
    beta = rng.standard_normal(d, dtype=np.float32)
    y = 1 / (1 + np.exp(-(X @ beta) / np.sqrt(d))) + 0.05 * rng.standard_normal(n)
    distance = np.linalg.norm(X - X[0], axis=1)
    w = np.sqrt(np.exp(-(distance**2) / (0.75 * np.sqrt(d)) ** 2))
    return X, y.astype(np.float32), w.astype(np.float32)


def _case(ctx: Context, rng, n: int, d: int) -> dict:
    X, y, w = _lime_like(rng, n, d)
    on_device = [jax.device_put(a) for a in (X, y, w)]
    ours = jax.jit(functools.partial(weighted_ridge, alpha=1.0))

    def peer():
        model = Ridge(alpha=1.0).fit(X, y, sample_weight=w)
        return model, model.score(X, y, sample_weight=w)

    timings = ctx.time(
        {
            "peer": peer,
            "peer_fit": lambda: Ridge(alpha=1.0).fit(X, y, sample_weight=w),
            "ours": lambda: ours(*on_device),
        },
        repeats=30,
    )
    model, score = peer()
    fit = ours(*on_device)
    return record(
        f"n={n} d={d}",
        timings["peer"],
        timings["ours"],
        peer_fit_median_s=timings["peer_fit"].median,
        peer_fit_min_s=timings["peer_fit"].min,
        ratio_fit_median=timings["peer_fit"].median / timings["ours"].median,
        max_abs_coef_diff=float(np.max(np.abs(np.asarray(fit.coef) - model.coef_))),
        abs_intercept_diff=float(abs(float(fit.intercept) - float(model.intercept_))),
        abs_score_diff=float(abs(float(fit.score) - score)),
    )
