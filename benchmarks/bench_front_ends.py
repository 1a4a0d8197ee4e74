"""Layer integrated gradients through each model-library front end, against the haiku one.

The benchmark MLP 784-128-10 (`benchmarks/_mlp.py`) written four ways with the same weights:
dm-haiku (`xai_jax.haiku.split`, the peer), flax linen and nnx (`xai_jax.flax.split`) and
equinox (`xai_jax.equinox.split`), split at the first dense layer; 256 rows, 50 Gauss-Legendre
steps, under `jit` and eagerly. ratio = haiku / front end: 1 means the front end costs nothing
(the target is no measurable slowdown, >= 0.9 given this machine's noise). The attributions of
every front end equal haiku's (max |diff| column).
"""

from __future__ import annotations

import equinox as eqx
import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import xai_jax.equinox
import xai_jax.flax
import xai_jax.haiku
from benchmarks import _mlp
from benchmarks._timing import Context, record
from xai_jax import layer_integrated_gradients

ROWS, STEPS = 256, 50
COLUMNS = [("max_abs_diff", "max |diff| vs haiku", "{:.1e}")]


class _Linen(nn.Module):
    @nn.compact
    def __call__(self, v):
        h = nn.relu(nn.Dense(128)(v))  # Dense_0
        return nn.Dense(10)(h)  # Dense_1


class _Nnx(nnx.Module):
    def __init__(self, w0, b0, w1, b1):
        rngs = nnx.Rngs(0)
        self.a = nnx.Linear(784, 128, rngs=rngs)
        self.b = nnx.Linear(128, 10, rngs=rngs)
        self.a.kernel[...], self.a.bias[...], self.b.kernel[...], self.b.bias[...] = w0, b0, w1, b1

    def __call__(self, v):
        return self.b(jax.nn.relu(self.a(v)))


class _Equinox(eqx.Module):
    a: eqx.nn.Linear
    b: eqx.nn.Linear

    def __call__(self, v):
        return self.b(jax.nn.relu(self.a(v)))


def _pairs() -> dict:
    (w0, b0), (w1, b1) = [(jnp.asarray(w), jnp.asarray(b)) for w, b in _mlp.init_params(0)]
    haiku_model = hk.without_apply_rng(hk.transform(lambda v: hk.nets.MLP([128, 10])(v)))
    haiku_params = {"mlp/~/linear_0": {"w": w0, "b": b0}, "mlp/~/linear_1": {"w": w1, "b": b1}}
    linen_vars = {
        "params": {"Dense_0": {"kernel": w0, "bias": b0}, "Dense_1": {"kernel": w1, "bias": b1}}
    }
    key = jax.random.key(0)
    equinox_model = eqx.tree_at(
        lambda m: (m.a.weight, m.a.bias, m.b.weight, m.b.bias),
        _Equinox(eqx.nn.Linear(784, 128, key=key), eqx.nn.Linear(128, 10, key=key)),
        (w0.T, b0, w1.T, b1),
    )
    return {
        "haiku": xai_jax.haiku.split(haiku_model, haiku_params, "mlp/~/linear_0"),
        "linen": xai_jax.flax.split(_Linen(), linen_vars, "Dense_0"),
        "nnx": xai_jax.flax.split(_Nnx(w0, b0, w1, b1), "a"),
        "equinox": xai_jax.equinox.split(equinox_model, lambda m: m.a),
    }


def bench_front_ends(ctx: Context) -> dict:
    x = jnp.asarray(np.random.default_rng(1).random((ROWS, 784), np.float32))
    target = jnp.arange(ROWS) % 10
    pairs = _pairs()
    jitted = {
        name: jax.jit(lambda v, t, p=p: layer_integrated_gradients(*p, v, target=t, n_steps=STEPS))
        for name, p in pairs.items()
    }
    eager = {
        name: (lambda p=p: layer_integrated_gradients(*p, x, target=target, n_steps=STEPS))
        for name, p in pairs.items()
    }
    reference = jitted["haiku"](x, target)
    on_jit = ctx.time({name: (lambda f=f: f(x, target)) for name, f in jitted.items()}, repeats=40)
    on_eager = ctx.time(eager, repeats=20)
    cases = []
    for name in ("linen", "nnx", "equinox"):
        diff = float(jnp.max(jnp.abs(jitted[name](x, target) - reference)))
        for mode, timings in (("jit", on_jit), ("eager", on_eager)):
            cases.append(
                record(
                    f"{name}, {mode}",
                    timings["haiku"],
                    timings[name],
                    targets={"ratio_median": 0.9},
                    max_abs_diff=diff,
                )
            )
    return {
        "peer": "xai_jax.haiku.split of the same MLP (hk.nets.MLP, same weights)",
        "ours": "xai_jax.flax.split (linen, nnx) and xai_jax.equinox.split, same layer",
        "notes": [
            f"layer_integrated_gradients at the first dense layer, {ROWS} rows, {STEPS} "
            "Gauss-Legendre steps; 'jit': inside one jax.jit, 'eager': called as it is."
        ],
        "columns": COLUMNS,
        "cases": cases,
    }
