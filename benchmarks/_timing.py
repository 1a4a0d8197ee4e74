"""Timing helpers: warm-up, `block_until_ready`, median and minimum of repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Timing(NamedTuple):
    """Seconds per call: median and minimum over `repeats` timed calls."""

    median: float
    min: float
    repeats: int


def _seconds(fn: Callable[..., Any], args: tuple) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def time_fn(fn: Callable[..., Any], *args: Any, repeats: int, warmup: int) -> Timing:
    """Time `fn(*args)`: `warmup` untimed calls, then `repeats` timed ones."""
    for _ in range(warmup):
        _seconds(fn, args)
    times = [_seconds(fn, args) for _ in range(repeats)]
    return Timing(statistics.median(times), min(times), len(times))


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int
) -> dict[str, Timing]:
    """Time several no-argument callables side by side, one call of each per round.

    Alternating the contenders exposes them to the same load on a shared machine; the order is
    rotated every round so that none always runs right after another.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            _seconds(fns[name], ())
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_seconds(fns[name], ()))
    return {name: Timing(statistics.median(t), min(t), len(t)) for name, t in times.items()}


def matmul_gflops(*, size: int = 2048, repeats: int, warmup: int) -> tuple[float, float]:
    """This machine's float32 matmul throughput, `(median-based, min-based)` GFLOP/s.

    A jitted `jnp.dot` of two `size x size` float32 matrices, `2 size^3` FLOPs per call.
    """
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (size, size), jnp.float32)
    b = jax.random.normal(kb, (size, size), jnp.float32)
    timing = time_fn(jax.jit(jnp.dot), a, b, repeats=repeats, warmup=warmup)
    flops = 2.0 * size**3
    return flops / timing.median / 1e9, flops / timing.min / 1e9


class Context:
    """What a benchmark needs from the runner: repeat counts, warnings, the matmul ceiling."""

    def __init__(self, *, quick: bool = False):
        self.quick = quick
        self.warmup = 1 if quick else 2
        self.warnings: list[str] = []
        self._matmul: tuple[float, float] | None = None

    def repeats(self, full: int) -> int:
        """Timed repeats for a case that gets `full` in a full run (3 in a quick one)."""
        return min(full, 3) if self.quick else full

    def time(self, fns: Mapping[str, Callable[[], Any]], *, repeats: int) -> dict[str, Timing]:
        """`time_interleaved` with this run's warm-up and repeat policy."""
        return time_interleaved(fns, repeats=self.repeats(repeats), warmup=self.warmup)

    @property
    def matmul(self) -> dict[str, float] | None:
        """Median- and min-based matmul GFLOP/s if measured in this run, else None."""
        if self._matmul is None:
            return None
        return {"median": self._matmul[0], "min": self._matmul[1]}

    @property
    def matmul_gflops(self) -> float:
        """Median-based f32 matmul GFLOP/s, measured on first use and kept for the run."""
        if self._matmul is None:
            self._matmul = matmul_gflops(repeats=self.repeats(15), warmup=self.warmup)
            print(f"f32 matmul 2048^3: {self._matmul[0]:.0f} GFLOP/s (median)", flush=True)
        return self._matmul[0]

    def warn(self, message: str) -> None:
        print(f"WARNING: {message}", flush=True)
        self.warnings.append(message)


def record(
    case: str, peer: Timing, ours: Timing, *, targets: Mapping[str, float] | None = None, **extra
) -> dict[str, Any]:
    """One result row: both timings, the ratios peer/ours, minimum targets, extra fields."""
    return {
        "case": case,
        "peer_median_s": peer.median,
        "peer_min_s": peer.min,
        "ours_median_s": ours.median,
        "ours_min_s": ours.min,
        "ratio_median": peer.median / ours.median,
        "ratio_min": peer.min / ours.min,
        "repeats": ours.repeats,
        "targets": dict(targets or {}),
        **extra,
    }
