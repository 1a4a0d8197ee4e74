"""XLA:CPU programs for large convolutions: per-program compiler options and thin convolutions
rewritten, kept only where their first result agrees with the default compile's.

What jaxlib 0.10.2's XLA:CPU does with convolutions by default is slow on the 2-core machines:
it hands each large convolution alone to YNNPACK (its default `ynn_fusion_type` list has
`INDIVIDUAL_CONVOLUTION`), which ran the benchmark CNN's 16-to-32-channel 3x3 layer in 1.76 ms
where Eigen takes 0.90 (torch's oneDNN: 0.90); and Eigen itself is slow on thin convolutions,
one input or one output channel (the CNN's 1-to-16-channel first layer: 0.49 ms for 6 MFLOP,
its 16-to-1 transposed one in the input gradient 0.84 ms). So a program with large
convolutions is compiled a second time (`jit`):

- with `OPTIONS` (`xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT`, through
  `jax.jit`'s per-program `compiler_options`, nothing process-wide): that list replaces the
  default one, so a convolution that feeds a dot is fused into YNNPACK with it and every other
  one runs on Eigen. The CNN's forward pass: 3.6 -> 1.5 ms; its input gradient 6.6 -> 3.9 ms.
- with its thin convolutions written as what they are, a sum over the kernel's taps of shifted
  slices (`_thin_convolution`): one input channel (and fewer than `THIN_MAX_OUTPUTS` outputs)
  is a multiply-add per tap, one output channel a dot over the input channels followed by
  shifted adds. The CNN's first layer: 0.49 -> 0.15 ms, its transposed one 0.84 -> 0.5 ms;
  the input gradient 3.9 -> 2.7 ms. A dense-only program has nothing to rewrite and keeps its
  default compile (which is faster there: a 784-512-512-10 MLP's input gradient does not gain),
  unless its caller says it only runs the model forward (`choose`'s `forward_only`, the
  perturbation methods): then the options fuse each dot with its bias and activation.

The YNN fusion is experimental, and wrong on some programs: jaxlib 0.10.2 computes `a @
jnp.ones((72, 2))` (a dot with a broadcast constant) as garbage of order 1e21. So the second
program is kept only when its first result agrees with the default program's on the same
arguments (`choose`); a miscompile of that kind does not depend on the values.

`jax.jit`'s `compiler_options` apply to one top-level program, and a nested `jit` that carries
them raises; so a caller chooses only outside every trace and keeps the plain program for calls
met inside one. Off CPU, or on an XLA without the option (probed once), there is no second
program.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from jax import lax

from xai_jax._checks import cpu_sharding
from xai_jax._propagation import _CALLS, eval_inlined

__all__ = [
    "AGREEMENT",
    "MIN_CONV_FLOPS",
    "MIN_DOT_FLOPS",
    "OPTIONS",
    "THIN_MAX_OUTPUTS",
    "choose",
    "conv_flops",
    "dot_flops",
    "jit",
]

OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}

# Convolution FLOPs from which a program is compiled twice on its first call (once with the
# options, and checked against the default): ~1 ms of Eigen convolutions on the 2-core machines.
MIN_CONV_FLOPS = 1e8

# Matrix-product FLOPs from which a forward-only program without convolutions (`choose`'s
# `forward_only`: the model's forward pass on many rows, no gradient) is compiled twice too.
# There the options fuse each dot with its bias and activation into one YNNPACK call: a
# 20-64-64-2 MLP on 2,100 rows (23 MFLOP) 0.36 -> 0.23 ms, 784-256-256-10 on 352 rows 1.04 ->
# 0.90 ms; eager feature ablation on that MLP (100 examples) 0.44 -> 0.39 ms, exact Shapley
# values on 10 features 1.34 -> 1.05, Shapley sampling 1.50 -> 1.44. Not every such program
# gains (infidelity's, with its noise draw: 2.06 -> 2.4 ms), so a caller opts in. An input
# gradient loses (784-512-512-10, batch 32: 0.71 -> 0.82 ms), and so do small convolutions
# (occlusion's incremental rows on the benchmark CNN: 2.0 -> 2.6 ms): neither is tried.
MIN_DOT_FLOPS = 1e7

# How close the optioned program's first result must be to the default one's, as a fraction of
# the result's scale. Round-off differs between the two (summation order); float32 DeepLift's
# rescale rule amplifies it, to ~2e-4 on the benchmark CNN. A miscompile is off by far more.
AGREEMENT = 1e-3

# A one-input-channel convolution with fewer outputs than this is rewritten as multiply-adds
# (Eigen is fast from 32 outputs on: 3x3, 1 -> 32 channels 0.42 ms, the multiply-adds 0.26;
# 1 -> 64: 0.46 and 0.41; 5x5, 1 -> 32: 0.40 and 0.54; 1 -> 16: 0.89 and 0.32).
THIN_MAX_OUTPUTS = 32

# Kernels with more taps than this stay convolutions (the rewrite unrolls one slice per tap).
_MAX_TAPS = 64


def choose(
    plain: Callable, optioned: Callable[[], Callable], *args: Any, forward_only: bool = False
) -> tuple[Callable, Any]:
    """The program to run calls like `plain(*args)` with, and its result on `args`.

    `plain` is a `jax.jit` function called at top level, `optioned()` makes the same function
    compiled the other way (`jit`). That one is picked where the program runs on CPU with an
    XLA that takes the options, has at least `MIN_CONV_FLOPS` of convolutions (or, without
    convolutions and where the caller says the program only runs the model forward,
    `forward_only`, at least `MIN_DOT_FLOPS` of matrix products), and gives the default
    program's result on the first call with its signature (both run then); `plain` everywhere
    else, also where the optioned program fails to compile or run. The choice is remembered for
    `plain` and its traced program (a cached trace: ~30 us).
    """
    if not (_on_cpu(args) and _available()):
        return plain, plain(*args)
    closed = plain.trace(*args).jaxpr  # the call below traces nothing more
    key = (id(plain), id(closed))
    known = _CHOSEN.get(key)
    if known is not None and known[0] is plain and known[1] is closed:
        return known[2], known[2](*args)
    program, out = plain, plain(*args)
    convs = conv_flops(closed)
    if convs >= MIN_CONV_FLOPS or (
        forward_only and not convs and dot_flops(closed) >= MIN_DOT_FLOPS
    ):
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


def jit(f: Callable, static_argnums: Sequence[int] = ()) -> Callable:
    """`jax.jit(f, static_argnums=...)` compiled with `OPTIONS` and its thin convolutions
    rewritten (`_thin_convolution`): the second program `choose` tries. Not to be
    differentiated or nested in a trace (a nested `jit` with compiler options raises)."""
    static = tuple(static_argnums)

    @functools.wraps(f)
    def rewritten(*args):
        closed, shape = jax.make_jaxpr(f, static_argnums=static, return_shape=True)(*args)
        dynamic = [a for i, a in enumerate(args) if i not in static]
        leaves = jax.tree.leaves(dynamic)  # calls (jit, custom_jvp/vjp, remat) inlined
        out = eval_inlined(closed.jaxpr, closed.consts, leaves, _CALLS, _thin_convolutions)
        return jax.tree.unflatten(jax.tree.structure(shape), out)

    return jax.jit(rewritten, static_argnums=static, compiler_options=OPTIONS)


def _thin_convolutions(eqn, invals) -> list | None:
    """`eval_inlined`'s rewrite: a thin convolution as a `_thin_convolution`."""
    if eqn.primitive.name != "conv_general_dilated" or not _is_thin(eqn):
        return None
    return [_thin_convolution(*invals, out_shape=eqn.outvars[0].aval.shape, **eqn.params)]


def _is_thin(eqn) -> bool:
    """An ungrouped floating convolution with one input channel and fewer than
    `THIN_MAX_OUTPUTS` outputs, or with one output channel; at most `_MAX_TAPS` taps."""
    p = eqn.params
    lhs, kernel = eqn.invars[0].aval, eqn.invars[1].aval
    out_spec, in_spec, *spatial = p["dimension_numbers"].rhs_spec
    n_out, n_in = kernel.shape[out_spec], kernel.shape[in_spec]
    return (
        p["feature_group_count"] == 1
        and p["batch_group_count"] == 1
        and jnp.issubdtype(lhs.dtype, jnp.floating)
        and p["preferred_element_type"] in (None, eqn.outvars[0].aval.dtype)
        and math.prod(kernel.shape[d] for d in spatial) <= _MAX_TAPS
        and ((n_in == 1 and n_out < THIN_MAX_OUTPUTS) or n_out == 1)
    )


def _thin_convolution(
    lhs, rhs, *, out_shape, window_strides, padding, lhs_dilation, rhs_dilation,
    dimension_numbers, precision, preferred_element_type, **_,
):  # fmt: skip
    """`lax.conv_general_dilated` with one input channel or one output channel (ungrouped), as
    a sum over the kernel's taps of strided slices of the padded (and dilated) input: times
    the tap's weights (one input channel), or of the input's dot with all taps' weights (one
    output channel). The same numbers up to summation order."""
    del preferred_element_type  # `_is_thin`: none, or the output's own dtype
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    n = len(lhs_spec)
    x = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))  # [batch, spatial.., in]
    w = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))  # [spatial.., in, out]
    taps = list(itertools.product(*(range(k) for k in w.shape[:-2])))
    one_output = w.shape[-1] == 1
    if one_output:  # every tap's contribution first, on the undilated input: [.., taps]
        weights = w.reshape(len(taps), w.shape[-2]).T
        x = lax.dot_general(x, weights, (((n - 1,), (0,)), ((), ())), precision=precision)
    pads = [(lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation, strict=True)]
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *pads, (0, 0, 0)])
    sizes = [out_shape[d] for d in out_spec[2:]]
    rank_of_x = (1,) * (n - 1) + (-1,)  # a tap's weights [1, out] spread over the batch
    total = None
    for k, tap in enumerate(taps):
        start = [0] + [t * d for t, d in zip(tap, rhs_dilation, strict=True)] + [0]
        limit = [x.shape[0]]
        limit += [
            s + (m - 1) * st + 1
            for s, m, st in zip(start[1:-1], sizes, window_strides, strict=True)
        ]
        limit += [x.shape[-1]]
        piece = lax.slice(x, start, limit, (1, *window_strides, 1))
        term = piece[..., k : k + 1] if one_output else piece * w[tap].reshape(rank_of_x)
        total = term if total is None else total + term
    order = [0] * n  # [batch, spatial.., features] back to the output's layout
    order[out_spec[0]], order[out_spec[1]] = 0, n - 1
    for i, d in enumerate(out_spec[2:]):
        order[d] = i + 1
    return jnp.transpose(total, order)


def conv_flops(closed: jex.core.ClosedJaxpr) -> float:
    """The multiply-add FLOPs of the `conv_general_dilated`s in `closed`, nested jaxprs
    included (jit, custom_jvp/vjp, remat bodies; a `scan` body counts `length` times)."""
    return _flops(closed.jaxpr, "conv_general_dilated")


def dot_flops(closed: jex.core.ClosedJaxpr) -> float:
    """The multiply-add FLOPs of the `dot_general`s in `closed`, counted as `conv_flops`."""
    return _flops(closed.jaxpr, "dot_general")


def _flops(jaxpr: jex.core.Jaxpr, name: str) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            total += _eqn_flops(eqn)
        times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        total += times * sum(_flops(sub, name) for sub in _subjaxprs(eqn))
    return total


def _eqn_flops(eqn) -> float:
    """2 x (output size) x (contracted size) of one convolution or dot."""
    out = eqn.outvars[0].aval
    if eqn.primitive.name == "conv_general_dilated":
        kernel = eqn.invars[1].aval
        out_features = kernel.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
        return 2.0 * math.prod(out.shape) * math.prod(kernel.shape) / out_features
    (contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    return 2.0 * math.prod(out.shape) * math.prod(lhs.shape[d] for d in contracting)


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
