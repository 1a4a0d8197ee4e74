"""XLA:CPU compiler options per compiled program: YNNPACK for programs with large convolutions.

XLA:CPU runs convolutions through Eigen by default, at about 100 GFLOP/s on the 2-core machines
for the benchmark CNN's 16-to-32-channel 3x3 layer (torch's oneDNN: ~250). Its YNNPACK fusion
(`xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT`) grows from each dot over work
that feeds it, convolutions included (on the benchmark CNN the second one, not the 1-channel
first; a convolution that feeds no dot, such as the gradient's transposed ones, stays with
Eigen): the CNN's forward pass ran 2.2x faster and its input gradient 1.6x, with the same bits.
On dense-only programs it is no faster (a 784-512-512-10 MLP's input gradient: 0.66 -> 0.74
ms; infidelity on it, 352 rows: 1.90 -> 2.17 ms), so it is asked for only where a program's
convolutions are large (`MIN_CONV_FLOPS`).

The fusion is experimental, and wrong on some programs: jaxlib 0.10.2 computes `a @ jnp.ones(
(72, 2))` (a dot with a broadcast constant) as garbage of order 1e21. So a program compiled
with the options is kept only when its first result agrees with the default program's on the
same arguments (`choose`); a miscompile of that kind does not depend on the values.

`jax.jit`'s `compiler_options` apply to one top-level program, and a nested `jit` that carries
them raises; so a caller chooses only outside every trace and keeps the plain program for calls
met inside one. Off CPU, or on an XLA without the option (probed once), there are no options.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.extend as jex
import numpy as np

from xai_jax._checks import cpu_sharding

__all__ = ["AGREEMENT", "MIN_CONV_FLOPS", "OPTIONS", "choose", "conv_flops"]

OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}

# Convolution FLOPs from which a program is compiled twice on its first call (once with the
# options, and checked against the default): ~1 ms of Eigen convolutions on the 2-core machines.
MIN_CONV_FLOPS = 1e8

# How close the optioned program's first result must be to the default one's, as a fraction of
# the result's scale. Round-off differs between the two (summation order); float32 DeepLift's
# rescale rule amplifies it, to ~2e-4 on the benchmark CNN. A miscompile is off by far more.
AGREEMENT = 1e-3


def choose(plain: Callable, optioned: Callable[[], Callable], *args: Any) -> tuple[Callable, Any]:
    """The program to run calls like `plain(*args)` with, and its result on `args`.

    `plain` is a `jax.jit` function called at top level, `optioned()` makes the same function
    jitted with `OPTIONS`. That one is picked where the program runs on CPU with an XLA that
    takes the options, has at least `MIN_CONV_FLOPS` of convolutions, and gives the default
    program's result on the first call with its signature (both run then); `plain` everywhere
    else, also where the optioned program fails to compile or run. The choice is remembered
    for `plain` and its traced program (a cached trace: ~30 us).
    """
    if not (_on_cpu(args) and _available()):
        return plain, plain(*args)
    closed = plain.trace(*args).jaxpr  # the call below traces nothing more
    key = (id(plain), id(closed))
    known = _CHOSEN.get(key)
    if known is not None and known[0] is plain and known[1] is closed:
        return known[2], known[2](*args)
    program, out = plain, plain(*args)
    if conv_flops(closed) >= MIN_CONV_FLOPS:
        try:  # the default program ran: a failure of the optioned one only means "not this"
            candidate = optioned()
            result = candidate(*args)
        except Exception:
            candidate = result = None
        if candidate is not None and _agree(out, result):
            program, out = candidate, result
    if len(_CHOSEN) >= _MAX_CHOSEN:
        del _CHOSEN[next(iter(_CHOSEN))]
    _CHOSEN[key] = (plain, closed, program)  # both held: their ids are not reused
    return program, out


# `(plain, its traced program, the chosen program)` by the ids of the first two, at most
# `_MAX_CHOSEN` (the oldest dropped first).
_MAX_CHOSEN = 512
_CHOSEN: dict = {}


def conv_flops(closed: jex.core.ClosedJaxpr) -> float:
    """The multiply-add FLOPs of the `conv_general_dilated`s in `closed`, nested jaxprs
    included (jit, custom_jvp/vjp, remat bodies; a `scan` body counts `length` times)."""
    return _conv_flops(closed.jaxpr)


def _conv_flops(jaxpr: jex.core.Jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            out, kernel = eqn.outvars[0].aval, eqn.invars[1].aval
            out_features = kernel.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * math.prod(out.shape) * math.prod(kernel.shape) / out_features
        times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        total += times * sum(_conv_flops(sub) for sub in _subjaxprs(eqn))
    return total


def _subjaxprs(eqn) -> Iterator[jex.core.Jaxpr]:
    for param in eqn.params.values():
        for sub in param if isinstance(param, tuple | list) else (param,):
            if isinstance(sub, jex.core.ClosedJaxpr):
                yield sub.jaxpr
            elif isinstance(sub, jex.core.Jaxpr):
                yield sub


def _agree(reference: Any, result: Any) -> bool:
    """Same structure, shapes and dtypes, integer leaves equal, floating leaves within
    `AGREEMENT` of the reference's scale (its largest finite magnitude over all floating
    leaves, so that a convergence delta is measured against its attributions), NaN where the
    reference has NaN."""
    ref_leaves, ref_tree = jax.tree.flatten(reference)
    leaves, tree = jax.tree.flatten(result)
    if ref_tree != tree:
        return False
    pairs = [(_host(a), _host(b)) for a, b in zip(ref_leaves, leaves, strict=True)]
    if any(a.shape != b.shape or a.dtype != b.dtype for a, b in pairs):
        return False
    floats = [(a, b) for a, b in pairs if np.issubdtype(a.dtype, np.inexact)]
    if not all(np.array_equal(a, b) for a, b in pairs if not np.issubdtype(a.dtype, np.inexact)):
        return False
    magnitudes = [np.abs(a[np.isfinite(a)]) for a, _ in floats]
    scale = max((float(m.max()) for m in magnitudes if m.size), default=0.0)
    return all(
        np.allclose(a, b, rtol=0.0, atol=AGREEMENT * scale, equal_nan=True) for a, b in floats
    )


def _host(leaf) -> np.ndarray:
    """A result leaf as a NumPy array (a PRNG key as its key data)."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def _on_cpu(args) -> bool:
    """The default backend is CPU (NumPy data and Python numbers go there) and every array in
    `args` lives in CPU memory."""
    return jax.default_backend() == "cpu" and all(
        cpu_sharding(leaf.sharding) for leaf in jax.tree.leaves(args) if isinstance(leaf, jax.Array)
    )


@functools.cache
def _available() -> bool:
    """Whether this XLA compiles with `OPTIONS` (older ones reject the option; older `jax.jit`s
    have no `compiler_options` or no `trace`)."""
    try:
        jitted = jax.jit(lambda v: v + 1, compiler_options=OPTIONS)
        jitted.lower(np.float32(0)).compile()
        jitted.trace  # noqa: B018 (the tracing API `choose` needs)
    except Exception:  # any refusal means: no options
        return False
    return True
