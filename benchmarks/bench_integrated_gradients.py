"""Integrated gradients and layer conductance vs Captum, on an MLP and a small CNN.

* `integrated_gradients` vs Captum's `IntegratedGradients`.
* `layer_conductance` vs Captum's `LayerConductance` on the first ReLU (`model[1]`).

Both sides explain the same float32 models (torch modules built with a fixed seed, weights copied
to JAX) at the same inputs: 50 Gauss-Legendre steps, zero baselines, a random target per example.
Ours is called eagerly, as a user would, once unchunked (`internal_batch_size=None`, like Captum's
default) and once chunked (a host loop over one compiled chunk; the size is picked by a short sweep
in the run). The IG benchmark also times a "bare" `jax.jit` of the same computation written by
hand (path points, one `grad` of the selected outputs, weighted sum, times the inputs): the gap
to it is the library's overhead. Captum is also timed with ours' chunk size (informational), and
both float32 results are held to a float64 Captum run where they differ by more than 1e-4.

The JAX CNN is written channels-last, NHWC activations with HWIO kernels, because that is the
layout XLA:CPU's (Eigen) convolutions run natively: written NCHW/OIHW like torch, the program
depends on XLA's layout assignment to move the transposes out of the way (on this small CNN it
did: a quick check ran about as fast). Torch's NCHW input is transposed once and the final Linear
weight is permuted from torch's (C, H, W) flatten order to the (H, W, C) order of the NHWC
flatten, so no activation is ever transposed. Attributions are transposed back to torch's layout
to compare them.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerConductance

from benchmarks._timing import Context, Timing, record
from xai_jax import integrated_gradients, layer_conductance

BATCH = 32
N_STEPS = 50
METHOD = "gausslegendre"
CLASSES = 10
MLP_SIZES = (784, 512, 512, 10)
CNN_CHANNELS = (1, 16, 32)  # two 3x3 VALID convolutions on 28x28: 26x26x16, then 24x24x32
IMAGE = 28
# forward + the backward pass w.r.t. the inputs (one product per layer, as large as the forward
# one); IG computes no weight gradients, which would make it 3.
IG_FLOP_FACTOR = 2
MEMORY_STEPS = (50, 400)
MAX_REL_DIFF = 1e-4
PAIR_SECONDS = 2.0  # per contender, for the chunked/unchunked pair


class Model(NamedTuple):
    """One model on both sides, its inputs, and what the benchmarks need to know about it."""

    name: str
    torch: torch.nn.Sequential
    fn: Callable  # the JAX model: head_fn(layer_fn(x))
    layer_fn: Callable  # up to and including the first ReLU
    head_fn: Callable
    x_torch: torch.Tensor
    t_torch: torch.Tensor
    x: jax.Array  # our inputs (NHWC for the CNN)
    t: jax.Array
    to_torch: Callable[[np.ndarray], np.ndarray]  # our attribution layout -> Captum's
    layer_flops: float  # forward FLOPs per example of layer_fn
    head_flops: float  # and of head_fn
    ig_chunks: tuple[int, ...]  # internal_batch_size candidates for the sweep
    conductance_chunks: tuple[int, ...]
    ig_target: float
    conductance_target: float


# ---- the models ---------------------------------------------------------------------------


def _inputs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=np.float32), rng.integers(0, CLASSES, BATCH)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().numpy().copy()


def mlp_model() -> Model:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for n_in, n_out in itertools.pairwise(MLP_SIZES):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1]).eval()
    params = [
        (jnp.asarray(_numpy(m.weight).T), jnp.asarray(_numpy(m.bias)))
        for m in net
        if isinstance(m, torch.nn.Linear)
    ]

    def layer_fn(x):
        w, b = params[0]
        return jax.nn.relu(x @ w + b)

    def head_fn(h):
        for w, b in params[1:-1]:
            h = jax.nn.relu(h @ w + b)
        w, b = params[-1]
        return h @ w + b

    def fn(x):
        return head_fn(layer_fn(x))

    x, t = _inputs((BATCH, MLP_SIZES[0]), seed=1)
    macs = [a * b for a, b in itertools.pairwise(MLP_SIZES)]
    return _checked(
        Model(
            f"MLP {'-'.join(map(str, MLP_SIZES))}",
            net,
            fn,
            layer_fn,
            head_fn,
            torch.from_numpy(x),
            torch.from_numpy(t),
            jnp.asarray(x),
            jnp.asarray(t),
            lambda a: a,
            2.0 * macs[0],
            2.0 * sum(macs[1:]),
            ig_chunks=(160, 320, 800),
            conductance_chunks=(192, 352, 832),  # n_steps + 1 points: 5, 10, 25 steps a chunk
            ig_target=2.0,
            conductance_target=1.5,
        )
    )


def _conv(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    dims = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dims) + b


def _hwio(conv: torch.nn.Conv2d) -> tuple[jax.Array, jax.Array]:
    """A torch convolution's OIHW kernel as HWIO, and its bias."""
    return jnp.asarray(_numpy(conv.weight).transpose(2, 3, 1, 0)), jnp.asarray(_numpy(conv.bias))


def cnn_model() -> Model:
    torch.manual_seed(0)
    (c0, c1, c2), side = CNN_CHANNELS, IMAGE - 4
    net = torch.nn.Sequential(
        torch.nn.Conv2d(c0, c1, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(c1, c2, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(c2 * side * side, CLASSES),
    ).eval()
    (w1, b1), (w2, b2) = _hwio(net[0]), _hwio(net[2])
    # torch flattens (C, H, W); the NHWC activations flatten (H, W, C): permute the weight rows
    dense = _numpy(net[5].weight).reshape(CLASSES, c2, side, side).transpose(2, 3, 1, 0)
    w3, b3 = jnp.asarray(dense.reshape(-1, CLASSES)), jnp.asarray(_numpy(net[5].bias))

    def layer_fn(x):
        return jax.nn.relu(_conv(x, w1, b1))

    def head_fn(h):
        h = jax.nn.relu(_conv(h, w2, b2))
        return h.reshape(h.shape[0], -1) @ w3 + b3

    def fn(x):
        return head_fn(layer_fn(x))

    x, t = _inputs((BATCH, c0, IMAGE, IMAGE), seed=2)
    layer_macs = (IMAGE - 2) ** 2 * c1 * c0 * 9
    head_macs = side**2 * c2 * c1 * 9 + side**2 * c2 * CLASSES
    return _checked(
        Model(
            f"CNN conv{c0}-{c1}-{c2} 3x3, dense {c2 * side * side}-{CLASSES}",
            net,
            fn,
            layer_fn,
            head_fn,
            torch.from_numpy(x),
            torch.from_numpy(t),
            jnp.asarray(x.transpose(0, 2, 3, 1)),
            jnp.asarray(t),
            lambda a: a.transpose(0, 3, 1, 2),  # NHWC -> NCHW
            2.0 * layer_macs,
            2.0 * head_macs,
            ig_chunks=(32, 64, 96, 160),
            conductance_chunks=(64, 96, 128, 192),  # 1, 2, 3, 5 steps a chunk
            ig_target=1.5,
            conductance_target=1.5,
        )
    )


def _checked(model: Model) -> Model:
    """The model itself, once its JAX logits are seen to agree with torch's."""
    with torch.no_grad():
        expected = model.torch(model.x_torch).numpy()
    diff = float(np.max(np.abs(np.asarray(jax.jit(model.fn)(model.x)) - expected)))
    if diff > 1e-4:
        raise AssertionError(f"{model.name}: JAX and torch logits differ by {diff:.2e}")
    return model


# ---- the contenders -----------------------------------------------------------------------


def bare_ig(fn: Callable, n_steps: int = N_STEPS) -> Callable:
    """IG written by hand: `jax.jit` of one batched `grad`, zero baselines, Gauss-Legendre."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    alphas = jnp.asarray((nodes + 1) / 2, jnp.float32)
    weights = jnp.asarray(weights / 2, jnp.float32)

    @jax.jit
    def bare(x: jax.Array, onehot: jax.Array) -> jax.Array:
        points = (alphas.reshape(-1, *[1] * x.ndim) * x[None]).reshape(-1, *x.shape[1:])
        row_weights = (weights[:, None, None] * onehot[None]).reshape(-1, onehot.shape[1])
        grads = jax.grad(lambda p: jnp.sum(fn(p) * row_weights))(points)
        return grads.reshape(n_steps, *x.shape).sum(0) * x

    return bare


def float64_copy(model: Model) -> tuple[torch.nn.Sequential, torch.Tensor]:
    """The torch model and inputs in float64: the reference both float32 results are held to."""
    return copy.deepcopy(model.torch).double(), model.x_torch.double()


def _sweep(ctx: Context, call: Callable[[int], Any], sizes: tuple[int, ...]) -> dict[int, float]:
    """Median seconds of `call(internal_batch_size)` for each size, timed side by side."""
    timings = ctx.time({str(n): (lambda n=n: call(n)) for n in sizes}, repeats=10)
    return {n: timings[str(n)].median for n in sizes}


def _temp_bytes(fn: Callable, model: Model, n_steps: int, ibs: int | None) -> int:
    """XLA's temporary buffer size for IG under the caller's `jit` (chunks: a `lax.scan`)."""

    def ig(x, t):
        return integrated_gradients(
            fn, x, target=t, method=METHOD, n_steps=n_steps, internal_batch_size=ibs
        )

    compiled = jax.jit(ig).lower(model.x, model.t).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def _best(timings: dict[str, Timing]) -> str:
    return min(("unchunked", "chunked"), key=lambda k: timings[k].median)


def _agreement(
    ctx: Context, model: Model, what: str, ours: list, captum: torch.Tensor, exact: torch.Tensor
) -> dict[str, float]:
    """Max |diff| / max |float64 attr| of ours (worst variant) vs Captum and vs float64, and of
    Captum vs float64. Warns unless ours is within `MAX_REL_DIFF` of Captum or, where float32
    rounding puts Captum itself further from float64 than that, no further from float64 than
    Captum plus `MAX_REL_DIFF`.
    """
    reference = exact.detach().numpy()
    scale = np.max(np.abs(reference))

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.max(np.abs(a.astype(np.float64) - b)) / scale)

    peer = captum.detach().numpy()
    ours = [model.to_torch(np.asarray(a)) for a in ours]
    result = {
        "rel_diff": max(diff(a, peer) for a in ours),
        "rel_diff_f64": max(diff(a, reference) for a in ours),
        "captum_rel_diff_f64": diff(peer, reference),
    }
    as_accurate = result["rel_diff_f64"] < result["captum_rel_diff_f64"] + MAX_REL_DIFF
    if result["rel_diff"] >= MAX_REL_DIFF and not as_accurate:
        ctx.warn(f"{what}, {model.name}: ours disagrees with Captum: {result}")
    return result


# ---- benchmarks ---------------------------------------------------------------------------


def bench_integrated_gradients(ctx: Context) -> dict:
    sweeps, cases = [], []
    for model in (mlp_model(), cnn_model()):
        sweep, case = _ig_case(ctx, model)
        sweeps.append(f"{model.name.split()[0]}: " + _sweep_note(sweep))
        cases.append(case)
    return {
        "peer": "captum IntegratedGradients(model).attribute(x, target=t, n_steps=50, "
        "method='gausslegendre') (internal_batch_size=None: all 1600 points in one call), "
        f"torch {torch.__version__} with its default {torch.get_num_threads()} threads",
        "ours": "xai_jax.integrated_gradients(fn, x, target=t, n_steps=50) called eagerly; "
        "'ours' is the faster of unchunked (internal_batch_size=None) and chunked",
        "notes": [
            _models_note(),
            _captum_chunked_note(),
            "bare: jax.jit of IG written by hand (points, one grad of the one-hot-weighted "
            "outputs, sum over steps, times x); bare/ours >= 0.9 is the overhead target (MLP). "
            "bare runs every layer at every path point; ours above 1 is the hoisted prefix.",
            "chunked/unchunked <= 1.10 is the target for the cost of chunking; ibs = the "
            "internal_batch_size of 'chunked', the fastest in a sweep run first (median ms): "
            + "; ".join(sweeps),
            _pair_note(),
            f"FLOPs: {IG_FLOP_FACTOR} x forward FLOPs (2 x MACs of the conv and dense layers; "
            "forward + backward w.r.t. the inputs, no weight gradients) x 50 steps x 32 "
            "examples, as Captum computes them; ours hoists the model's affine prefix (the "
            "first Linear / Conv2d, xai_jax._affine) off the path: it runs the rest of the "
            "model at every point and the prefix 4 times per example (both end points, then "
            "forward and transpose for the gradient). GFLOP/s over each side's own FLOPs and "
            "median; 'of matmul': over the f32 2048^3 jnp.dot timed in the same rounds; "
            "ratio cap: Captum / ours' FLOPs at that matmul rate.",
            _agreement_note(),
            "temp MB: XLA temp buffers of jax.jit(integrated_gradients) (chunks run as a "
            f"lax.scan) at n_steps={MEMORY_STEPS[0]} and {MEMORY_STEPS[1]} with the same ibs, "
            "and unchunked at n_steps=50 (compiled memory_analysis, not timed).",
        ],
        "columns": [
            ("peer_chunked_s", "Captum chunked ms", "{:.1f}", 1e3),
            ("unchunked_s", "unchunked ms", "{:.1f}", 1e3),
            ("chunked_s", "chunked ms", "{:.1f}", 1e3),
            ("ibs", "ibs", "{:.0f}"),
            ("bare_s", "bare ms", "{:.1f}", 1e3),
            ("bare_over_ours", "bare/ours", "{:.2f}"),
            ("chunking_cost", "chunked/unchunked", "{:.2f}"),
            ("chunking_cost_of_mins", "chunked/unchunked of mins", "{:.2f}"),
            ("peer_matmul_fraction", "Captum of matmul", "{:.0%}"),
            ("gflops", "GFLOP/s", "{:.0f}"),
            ("matmul_fraction", "of matmul", "{:.0%}"),
            ("ratio_cap", "ratio cap", "{:.1f}x"),
            *AGREEMENT_COLUMNS,
            ("temp_small", f"temp MB n={MEMORY_STEPS[0]}", "{:.1f}", 1e-6),
            ("temp_large", f"temp MB n={MEMORY_STEPS[1]}", "{:.1f}", 1e-6),
            ("temp_unchunked", "temp MB unchunked n=50", "{:.0f}", 1e-6),
        ],
        "cases": cases,
    }


def _ig_case(ctx: Context, model: Model) -> tuple[dict[int, float], dict]:
    print(f"-- {model.name}", flush=True)
    ig = IntegratedGradients(model.torch)

    def captum(ibs: int | None = None):
        return ig.attribute(
            model.x_torch,
            target=model.t_torch,
            n_steps=N_STEPS,
            method=METHOD,
            internal_batch_size=ibs,
        )

    def ours(ibs: int | None):
        return integrated_gradients(
            model.fn,
            model.x,
            target=model.t,
            method=METHOD,
            n_steps=N_STEPS,
            internal_batch_size=ibs,
        )

    bare = bare_ig(model.fn)
    onehot = jax.nn.one_hot(model.t, CLASSES, dtype=jnp.float32)
    sweep, ibs, timings = _time_variants(
        ctx, captum, ours, model.ig_chunks, bare=lambda: bare(model.x, onehot)
    )
    net64, x64 = float64_copy(model)
    exact = IntegratedGradients(net64).attribute(
        x64, target=model.t_torch, n_steps=N_STEPS, method=METHOD
    )
    peer = captum()
    agreement = _agreement(ctx, model, "integrated_gradients", [ours(None), ours(ibs)], peer, exact)
    bare_agreement = _agreement(ctx, model, "bare IG", [bare(model.x, onehot)], peer, exact)
    flops = IG_FLOP_FACTOR * (model.layer_flops + model.head_flops) * N_STEPS * BATCH
    ours_flops = (IG_FLOP_FACTOR * model.head_flops * N_STEPS + 4 * model.layer_flops) * BATCH
    best = _best(timings)
    case = record(
        f"{model.name}, batch {BATCH} (ours: {best})",
        timings["peer"],
        timings[best],
        targets={"ratio_median": model.ig_target},
        **_chunk_fields(timings, ibs, sweep),
        bare_s=timings["bare"].median,
        bare_over_ours=timings["bare"].median / timings[best].median,
        **_throughput(ctx, timings, best, ours_flops),
        peer_matmul_fraction=flops / timings["peer"].median / 1e9 / ctx.gflops(timings),
        **agreement,
        bare_rel_diff=bare_agreement["rel_diff"],
        temp_small=_temp_bytes(model.fn, model, MEMORY_STEPS[0], ibs),
        temp_large=_temp_bytes(model.fn, model, MEMORY_STEPS[1], ibs),
        temp_unchunked=_temp_bytes(model.fn, model, N_STEPS, None),
    )
    return sweep, case


def bench_layer_conductance(ctx: Context) -> dict:
    sweeps, cases = [], []
    for model in (mlp_model(), cnn_model()):
        sweep, case = _conductance_case(ctx, model)
        sweeps.append(f"{model.name.split()[0]}: " + _sweep_note(sweep))
        cases.append(case)
    return {
        "peer": "captum LayerConductance(model, model[1]).attribute(x, target=t, n_steps=50, "
        f"method='gausslegendre'), torch {torch.__version__} with its default "
        f"{torch.get_num_threads()} threads",
        "ours": "xai_jax.layer_conductance(layer_fn, head_fn, x, target=t, n_steps=50, "
        "method='gausslegendre') called eagerly, layer_fn = the model up to its first ReLU; "
        "'ours' is the faster of unchunked and chunked",
        "notes": [
            _models_note(),
            "Both evaluate the layer at n_steps + 1 = 51 path points. ibs = the "
            "internal_batch_size of 'chunked' (it counts those points; chunks overlap by one), "
            "the fastest in a sweep run first (median ms): " + "; ".join(sweeps),
            _pair_note(),
            _captum_chunked_note(),
            "FLOPs: forward FLOPs (2 x MACs) of layer_fn at 51 x 32 points, plus 2 x those of "
            "head_fn (forward + backward w.r.t. the layer) at 50 x 32 (Captum runs head_fn at 51 "
            "x 32). GFLOP/s over ours' median; 'of matmul': over the f32 2048^3 jnp.dot timed "
            "in the same rounds; ratio cap: Captum / the FLOPs at that matmul rate.",
            _agreement_note(),
        ],
        "columns": [
            ("peer_chunked_s", "Captum chunked ms", "{:.1f}", 1e3),
            ("unchunked_s", "unchunked ms", "{:.1f}", 1e3),
            ("chunked_s", "chunked ms", "{:.1f}", 1e3),
            ("ibs", "ibs", "{:.0f}"),
            ("chunking_cost", "chunked/unchunked", "{:.2f}"),
            ("chunking_cost_of_mins", "chunked/unchunked of mins", "{:.2f}"),
            ("gflops", "GFLOP/s", "{:.0f}"),
            ("matmul_fraction", "of matmul", "{:.0%}"),
            ("ratio_cap", "ratio cap", "{:.1f}x"),
            *AGREEMENT_COLUMNS,
        ],
        "cases": cases,
    }


def _conductance_case(ctx: Context, model: Model) -> tuple[dict[int, float], dict]:
    print(f"-- {model.name}", flush=True)
    lc = LayerConductance(model.torch, model.torch[1])

    def captum(ibs: int | None = None):
        return lc.attribute(
            model.x_torch,
            target=model.t_torch,
            n_steps=N_STEPS,
            method=METHOD,
            internal_batch_size=ibs,
        )

    def ours(ibs: int | None):
        return layer_conductance(
            model.layer_fn,
            model.head_fn,
            model.x,
            target=model.t,
            method=METHOD,
            n_steps=N_STEPS,
            internal_batch_size=ibs,
        )

    sweep, ibs, timings = _time_variants(ctx, captum, ours, model.conductance_chunks)
    net64, x64 = float64_copy(model)
    exact = LayerConductance(net64, net64[1]).attribute(
        x64, target=model.t_torch, n_steps=N_STEPS, method=METHOD
    )
    agreement = _agreement(
        ctx, model, "layer_conductance", [ours(None), ours(ibs)], captum(), exact
    )
    flops = BATCH * ((N_STEPS + 1) * model.layer_flops + 2 * N_STEPS * model.head_flops)
    best = _best(timings)
    case = record(
        f"{model.name}, batch {BATCH}, first ReLU (ours: {best})",
        timings["peer"],
        timings[best],
        targets={"ratio_median": model.conductance_target},
        **_chunk_fields(timings, ibs, sweep),
        **_throughput(ctx, timings, best, flops),
        **agreement,
    )
    return sweep, case


def _time_variants(ctx: Context, captum: Callable, ours: Callable, chunks, **extra: Callable):
    """Sweep ours' chunk sizes, then time Captum (default and with ours' best chunk size) and
    ours (unchunked and chunked), plus `extra` contenders, in the same rounds."""
    sweep = _sweep(ctx, ours, chunks)
    ibs = min(sweep, key=sweep.get)
    fns = {
        "peer": captum,
        "peer_chunked": lambda: captum(ibs),
        "unchunked": lambda: ours(None),
        "chunked": lambda: ours(ibs),
        **extra,
    }
    timings = ctx.time(fns, repeats=10, matmul=True)
    # The cost of chunking is a few percent, below what 10 calls among Captum's resolve: time
    # the pair again on its own, for about PAIR_SECONDS each, in 10 rounds.
    repeats = int(np.clip(PAIR_SECONDS / timings["unchunked"].median, 10, 200))
    pair = ctx.time({k: fns[k] for k in ("unchunked", "chunked")}, repeats=repeats, rounds=10)
    timings.update({f"pair_{k}": v for k, v in pair.items()})
    return sweep, ibs, timings


def _chunk_fields(timings: dict[str, Timing], ibs: int, sweep: dict[int, float]) -> dict:
    unchunked, chunked = timings["pair_unchunked"], timings["pair_chunked"]
    return {
        "peer_chunked_s": timings["peer_chunked"].median,
        "unchunked_s": unchunked.median,
        "chunked_s": chunked.median,
        "ibs": ibs,
        "chunking_cost": chunked.median / unchunked.median,
        "chunking_cost_of_mins": chunked.min / unchunked.min,
        "pair_repeats": chunked.repeats,
        "sweep_ms": {str(n): s * 1e3 for n, s in sweep.items()},
    }


AGREEMENT_COLUMNS = [
    ("rel_diff", "rel diff", "{:.1e}"),
    ("rel_diff_f64", "ours vs f64", "{:.1e}"),
    ("captum_rel_diff_f64", "Captum vs f64", "{:.1e}"),
]


def _pair_note() -> str:
    return (
        "unchunked ms, chunked ms, chunked/unchunked: ours' two variants timed again as a pair "
        f"on their own (about {PAIR_SECONDS:g} s each, 10 to 200 calls, in 10 alternating "
        "rounds), after the rounds with Captum that 'ours' and the ratio come from: a cost of a "
        "few percent needs more calls than 10, and torch's threads spinning after its calls "
        "blur the ones next to them."
    )


def _captum_chunked_note() -> str:
    return (
        "Captum chunked (informational): Captum with the same internal_batch_size as ours' "
        "chunked; 'ratio' is against Captum's default (unchunked). torch's 2 OpenMP threads "
        "slow down several-fold when another process takes a core (seen 3x to over 20x, worst "
        "on small chunks): on a shared machine Captum's times, and the ratios, swing with the load."
    )


def _agreement_note() -> str:
    return (
        "rel diff: max |ours - Captum| / max |attr|, the worse of ours' two variants; must be "
        f"< {MAX_REL_DIFF:g}, or else ours no further (+{MAX_REL_DIFF:g}) from a float64 "
        "Captum run (same weights and inputs, torch .double()) than Captum's float32 result "
        "is: 'ours vs f64', 'Captum vs f64'. In float32 a few pre-activations within ~1e-8 of "
        "0 land on the other side of the ReLU than in float64, which moves the attributions "
        "next to them by up to ~2e-3 of max |attr| in either float32 result (seen on the CNN)."
    )


def _throughput(ctx: Context, timings: dict[str, Timing], best: str, flops: float) -> dict:
    gflops = flops / timings[best].median / 1e9
    floor_s = flops / (ctx.gflops(timings) * 1e9)
    return {
        "gflops": gflops,
        "matmul_fraction": gflops / ctx.gflops(timings),
        "ratio_cap": timings["peer"].median / floor_s,
    }


def _sweep_note(sweep: dict[int, float]) -> str:
    return ", ".join(f"{n}: {s * 1e3:.1f}" for n, s in sweep.items())


def _models_note() -> str:
    (c0, c1, c2), side = CNN_CHANNELS, IMAGE - 4
    return (
        f"float32; batch {BATCH} in [0, 1), one random target per example, zero baselines. "
        f"MLP {'-'.join(map(str, MLP_SIZES))} (ReLU); CNN Conv2d({c0},{c1},3)-ReLU-"
        f"Conv2d({c1},{c2},3)-ReLU-Flatten-Linear({c2 * side * side},{CLASSES}) on "
        f"{c0}x{IMAGE}x{IMAGE}, in JAX NHWC/HWIO with the Linear weight permuted to the NHWC "
        "flatten order (logits checked against torch to 1e-4)."
    )
