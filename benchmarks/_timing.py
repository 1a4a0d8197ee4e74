"""Timing helpers: warm-up, `block_until_ready`, median and minimum of repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

_PAUSE_S = 0.2  # lets other libraries' spinning worker threads go idle before a block
_REWARM_S = 0.1  # untimed calls after the pause, until the machine is back at its steady speed


class Timing(NamedTuple):
    """Seconds per call: median and minimum over `repeats` timed calls."""

    median: float
    min: float
    repeats: int


def _seconds(fn: Callable[..., Any], args: tuple) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def _rewarm(fn: Callable[[], Any]) -> None:
    """Untimed calls for `_REWARM_S` seconds (at least one)."""
    end = time.perf_counter() + _REWARM_S
    while True:
        _seconds(fn, ())
        if time.perf_counter() >= end:
            return


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int, rounds: int = 3
) -> dict[str, Timing]:
    """Time several no-argument callables side by side, in alternating blocks of calls.

    Each of `rounds` rounds runs a block of calls of every contender in turn, in a rotated
    order, so all of them see the same load on a shared machine. Blocks, not single calls: on
    2 cores, NumPy's OpenBLAS threads keep spin-waiting after a call and would steal a core from
    whoever runs right after, so a pause opens every block. The pause has its own cost: on the
    2-core machine the first ~70 ms of calls after it run up to 1.3x slower (measured on a 0.7 ms
    jitted gradient: medians 0.94 ms with one untimed call after the pause, 0.75 ms with none),
    which would weigh on whichever contender has the shortest calls; so each block starts with
    `_REWARM_S` seconds of untimed calls.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            _seconds(fns[name], ())
    rounds = max(1, min(rounds, repeats))
    per_block = -(-repeats // rounds)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(_PAUSE_S)
            _rewarm(fns[name])
            times[name] += [_seconds(fns[name], ()) for _ in range(per_block)]
    return {name: Timing(statistics.median(t), min(t), len(t)) for name, t in times.items()}


def matmul_call(size: int = 2048) -> tuple[Callable[[], Any], float]:
    """A jitted float32 `size^3` `jnp.dot` and its FLOP count: the throughput ceiling."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (size, size), jnp.float32)
    b = jax.random.normal(kb, (size, size), jnp.float32)
    dot = jax.jit(jnp.dot)
    return (lambda: dot(a, b)), 2.0 * size**3


class Context:
    """What a benchmark needs from the runner: repeat counts, warnings, the matmul ceiling, and
    the results folder (`out`) for what a benchmark writes beside its JSON (a figure)."""

    def __init__(self, *, quick: bool = False, out: Path | None = None):
        self.quick = quick
        self.out = out if out is not None else Path(__file__).resolve().parent / "results"
        self.warmup = 1 if quick else 2
        self.warnings: list[str] = []
        self._matmul_fn, self._matmul_flops = matmul_call()
        self._matmul_runs: list[float] = []

    def repeats(self, full: int) -> int:
        """Timed repeats for a case that gets `full` in a full run (3 in a quick one)."""
        return min(full, 3) if self.quick else full

    def time(
        self,
        fns: Mapping[str, Callable[[], Any]],
        *,
        repeats: int,
        matmul: bool = False,
        rounds: int = 3,
    ) -> dict[str, Timing]:
        """`time_interleaved` with this run's warm-up and repeat policy.

        With `matmul=True` the f32 2048^3 `jnp.dot` runs as one more contender, so the ceiling
        a case is compared with is measured under the same load; `self.gflops(timings)` reads it.
        """
        fns = dict(fns)
        if matmul:
            fns["matmul"] = self._matmul_fn
        timings = time_interleaved(
            fns, repeats=self.repeats(repeats), warmup=self.warmup, rounds=rounds
        )
        if matmul:
            self._matmul_runs.append(self.gflops(timings))
        return timings

    def gflops(self, timings: Mapping[str, Timing]) -> float:
        """Median-based matmul GFLOP/s from timings taken with `matmul=True`."""
        return self._matmul_flops / timings["matmul"].median / 1e9

    @property
    def matmul(self) -> dict[str, float] | None:
        """Median and range of the matmul GFLOP/s measured so far in this run, else None."""
        if not self._matmul_runs:
            return None
        runs = self._matmul_runs
        return {"median": statistics.median(runs), "min": min(runs), "max": max(runs)}

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
