"""The MLPs (ReLU, softmax) explained by the benchmarks: 784-128-10 by default (the gradient
benchmarks), other sizes by argument (20-64-64-2 for LIME and KernelSHAP).

One definition written against the array namespace `xp` serves both sides: the peers run it with
NumPy (float32 weights; whatever dtype the peer hands in, e.g. float64), ours with `jax.numpy`.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax.numpy as jnp
import numpy as np

SIZES = (784, 128, 10)


def init_params(
    seed: int = 0, sizes: tuple[int, ...] = SIZES
) -> list[tuple[np.ndarray, np.ndarray]]:
    """float32 `(weight, bias)` per layer, weights scaled by `1/sqrt(fan_in)`."""
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
            (0.1 * rng.standard_normal(n_out)).astype(np.float32),
        )
        for n_in, n_out in itertools.pairwise(sizes)
    ]


def logits(params: list, x: Any, xp: Any = jnp) -> Any:
    """Class scores for `x` of shape `[..., 784]`, computed with array namespace `xp`."""
    for weight, bias in params[:-1]:
        x = xp.maximum(x @ weight + bias, 0)
    weight, bias = params[-1]
    return x @ weight + bias


def softmax(params: list, x: Any, xp: Any = jnp) -> Any:
    """Class probabilities, `[..., 10]`."""
    z = logits(params, x, xp)
    e = xp.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(params: list, x: Any, xp: Any = jnp) -> Any:
    """Log class probabilities, `[..., 10]`."""
    z = logits(params, x, xp)
    z = z - z.max(axis=-1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


def model_flops(rows: int, sizes: tuple[int, ...] = SIZES) -> float:
    """Multiply-add FLOPs of evaluating the MLP on `rows` inputs (the matrix products)."""
    return 2.0 * rows * sum(a * b for a, b in itertools.pairwise(sizes))


def numpy_and_jax(seed: int = 0, sizes: tuple[int, ...] = SIZES) -> tuple[list, list]:
    """The same parameters as NumPy arrays (for peers) and as JAX arrays (for ours)."""
    params = init_params(seed, sizes)
    return params, [(jnp.asarray(w), jnp.asarray(b)) for w, b in params]
