"""The propagation methods vs Captum, on the MLP and the CNN of the integrated-gradients benchmark.

Every method of `xai_jax.propagation` against its Captum counterpart in the same run: guided
backprop (`GuidedBackprop`), deconvolution (`Deconvolution`), DeepLift (`DeepLift`, baselines
0.1 x a random input), DeepLiftShap (`DeepLiftShap`, 4 baseline rows), layer DeepLift at the
first ReLU (`LayerDeepLift`), and LRP with the epsilon rule (`LRP`; its CNN flattens in
`forward`, since Captum's LRP rejects `nn.Flatten`). Same float32 weights, inputs and targets
on both sides (`bench_integrated_gradients.mlp_model` / `cnn_model`: MLP 784-512-512-10 and the
conv 1-16-32 CNN, batch 32); ours is called eagerly, as a user would. The attributions are
compared (max |diff| / max |Captum|) and a warning is raised above 1e-3.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from captum.attr import (
    LRP,
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    GuidedBackprop,
    LayerDeepLift,
)

from benchmarks._timing import Context, record
from benchmarks.bench_integrated_gradients import Model, cnn_model, mlp_model
from xai_jax import (
    deconvolution,
    deeplift,
    deeplift_shap,
    guided_backprop,
    layer_deeplift,
    lrp,
)

N_BASELINES = 4
MAX_REL_DIFF = 1e-3
TARGETS = {"MLP": 2.0, "CNN": 1.5}


class _FlatCnn(torch.nn.Module):
    """The CNN's layers with the flatten in `forward` (Captum's LRP rejects `nn.Flatten`)."""

    def __init__(self, net: torch.nn.Sequential):
        super().__init__()
        self.conv1, self.relu1, self.conv2, self.relu2 = net[0], net[1], net[2], net[3]
        self.fc = net[5]

    def forward(self, x):
        h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(h.reshape(h.shape[0], -1))


def _contenders(model: Model) -> dict[str, tuple[Callable, Callable]]:
    """Per method: (Captum's call, ours), each returning the attributions as arrays."""
    rng = np.random.default_rng(3)
    shape = tuple(model.x_torch.shape)
    base_t = torch.from_numpy((0.1 * rng.random(shape)).astype(np.float32))
    bg_t = torch.from_numpy(rng.random((N_BASELINES, *shape[1:])).astype(np.float32))
    to_ours = (lambda a: a) if model.x.shape == shape else (lambda a: a.transpose(0, 2, 3, 1))
    base, bg = to_ours(base_t.numpy()), to_ours(bg_t.numpy())
    net, x, t = model.torch, model.x_torch, model.t_torch
    lrp_net = _FlatCnn(net) if isinstance(net[0], torch.nn.Conv2d) else net
    fn, lf, hf = model.fn, model.layer_fn, model.head_fn
    # the CNN one baseline a call (XLA:CPU runs 128-row conv batches disproportionately slower)
    shap_ibs = shape[0] if len(shape) == 4 else None
    return {
        "guided_backprop": (
            lambda: GuidedBackprop(net).attribute(x, target=t),
            lambda: guided_backprop(fn, model.x, target=model.t),
        ),
        "deconvolution": (
            lambda: Deconvolution(net).attribute(x, target=t),
            lambda: deconvolution(fn, model.x, target=model.t),
        ),
        "deeplift": (
            lambda: DeepLift(net).attribute(x, base_t, target=t),
            lambda: deeplift(fn, model.x, base, target=model.t),
        ),
        "deeplift_shap": (
            lambda: DeepLiftShap(net).attribute(x, bg_t, target=t),
            lambda: deeplift_shap(fn, model.x, bg, target=model.t, internal_batch_size=shap_ibs),
        ),
        "layer_deeplift": (
            lambda: LayerDeepLift(net, net[1]).attribute(x, base_t, target=t),
            lambda: layer_deeplift(lf, hf, model.x, base, target=model.t),
        ),
        "lrp": (
            lambda: LRP(lrp_net).attribute(x, target=t),
            lambda: lrp(fn, model.x, target=model.t),
        ),
    }


def _rel_diff(ctx: Context, what: str, peer, ours, layout: Callable) -> float:
    peer = peer.detach().numpy()
    ours = np.asarray(ours)
    ours = layout(ours) if ours.shape != peer.shape else ours
    diff = float(np.max(np.abs(ours - peer)) / max(np.max(np.abs(peer)), 1e-30))
    if diff > MAX_REL_DIFF:
        ctx.warn(f"{what}: ours differs from Captum by {diff:.2e} of the attribution scale")
    return diff


def bench_propagation(ctx: Context) -> dict:
    cases = []
    for model in (mlp_model(), cnn_model()):
        kind = model.name.split()[0]
        for method, (peer, ours) in _contenders(model).items():
            what = f"{method}, {kind}"
            diff = _rel_diff(ctx, what, peer(), ours(), model.to_torch)
            timings = ctx.time(
                {"peer": lambda p=peer: p(), "ours": lambda o=ours: np.asarray(o())},
                repeats=10 if kind == "MLP" else 5,
            )
            cases.append(
                record(
                    what,
                    timings["peer"],
                    timings["ours"],
                    targets={"ratio_median": TARGETS[kind]},
                    rel_diff=diff,
                )
            )
    return {
        "peer": "captum 0.9 GuidedBackprop, Deconvolution, DeepLift, DeepLiftShap, LayerDeepLift, "
        f"LRP (epsilon rule), torch {torch.__version__} with {torch.get_num_threads()} threads",
        "ours": "xai_jax.guided_backprop, deconvolution, deeplift, deeplift_shap, layer_deeplift, "
        "lrp called eagerly (one compiled program each: the jaxpr walk runs at trace time)",
        "notes": [
            "MLP 784-512-512-10 (ReLU) and CNN conv 1-16-32 3x3 + dense (ReLU), batch 32, the "
            "models of bench_integrated_gradients; targets 2x Captum on the MLP, 1.5x on the "
            f"CNN. DeepLiftShap: {N_BASELINES} baseline rows (batch x {N_BASELINES} rows; "
            "ours on the CNN with internal_batch_size=32: one baseline a call). "
            "Layer DeepLift at the first ReLU.",
            "rel diff: max |ours - Captum| / max |Captum| (layouts matched).",
        ],
        "columns": [("rel_diff", "rel diff", "{:.1e}")],
        "cases": cases,
    }
