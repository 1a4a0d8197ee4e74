"""Gradient maps vs Captum: saliency, input times gradient, GradientSHAP, layer activation,
layer gradient times activation and Grad-CAM, on the integrated-gradients benchmark's models.

The models, inputs and targets are `bench_integrated_gradients`' (MLP 784-512-512-10 with ReLU,
batch 32; CNN Conv2d(1,16,3)-ReLU-Conv2d(16,32,3)-ReLU-Flatten-Linear, batch 32 of 28x28, our
side written NHWC), the layer its first ReLU (Grad-CAM: the CNN's, `channel_axis=-1` on our NHWC
activations, Captum's NCHW `model[1]`; the MLP has no spatial layer). Ours is called eagerly,
as a user would. GradientSHAP uses `n_samples=5`, `stdevs=0.1` and 10 baseline rows on both
sides: the draws differ, so its "max |ours - Captum|" column compares the per-example sums of
the attributions of two random estimates (not expected to be small); every other map is
deterministic and compared entry by entry (our maps moved to Captum's layout).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from captum.attr import (
    GradientShap,
    InputXGradient,
    LayerActivation,
    LayerGradCam,
    LayerGradientXActivation,
    Saliency,
)

from benchmarks._timing import Context, record
from benchmarks.bench_integrated_gradients import cnn_model, mlp_model
from xai_jax import (
    _cpu_options,
    _eager,
    gradient_shap,
    input_x_gradient,
    layer_activation,
    layer_gradcam,
    layer_gradient_x_activation,
    saliency,
)

N_SAMPLES, STDEVS, N_BASELINES = 5, 0.1, 10
REPEATS = 20
COLUMNS = [("max_abs_diff", "max |ours - Captum|", "{:.1e}")]


def _np(out) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        return out.detach().numpy()
    return np.asarray(out)


def _cases(model, key) -> list[tuple]:
    """`(method, peer call, our call, our map -> Captum's layout, deterministic)` for a model."""
    xt = model.x_torch.clone().requires_grad_()
    tt, x, t = model.t_torch, model.x, model.t
    rng = np.random.default_rng(3)
    bg = rng.random((N_BASELINES, *model.x.shape[1:]), dtype=np.float32)
    bg_torch = torch.from_numpy(model.to_torch(bg).copy())
    net, fn, layer_fn, head_fn = model.torch, model.fn, model.layer_fn, model.head_fn
    to_torch = model.to_torch
    layer = net[1]
    spatial = x.ndim == 4
    same = lambda a: a  # a layer map of the MLP, or the activations of either
    layer_to_torch = to_torch if spatial else same
    cases = [
        ("saliency", lambda: Saliency(net).attribute(xt, target=tt),
         lambda: saliency(fn, x, target=t), to_torch, True),
        ("input_x_gradient", lambda: InputXGradient(net).attribute(xt, target=tt),
         lambda: input_x_gradient(fn, x, target=t), to_torch, True),
        ("gradient_shap",
         lambda: GradientShap(net).attribute(xt, bg_torch, n_samples=N_SAMPLES, stdevs=STDEVS,
                                             target=tt),
         lambda: gradient_shap(key, fn, x, bg, n_samples=N_SAMPLES, stdevs=STDEVS, target=t),
         to_torch, False),
        ("layer_activation", lambda: LayerActivation(net, layer).attribute(xt),
         lambda: layer_activation(layer_fn, head_fn, x), layer_to_torch, True),
        ("layer_gradient_x_activation",
         lambda: LayerGradientXActivation(net, layer).attribute(xt, target=tt),
         lambda: layer_gradient_x_activation(layer_fn, head_fn, x, target=t), layer_to_torch,
         True),
    ]  # fmt: skip
    if spatial:
        cases.append(
            ("layer_gradcam", lambda: LayerGradCam(net, layer).attribute(xt, target=tt),
             lambda: layer_gradcam(layer_fn, head_fn, x, target=t), to_torch, True)
        )  # fmt: skip
    return cases


def _bare_saliency(model, second_way=False):
    """The signed saliency map written by hand: one `jax.jit` of one `grad` (the floor of ours),
    compiled by default or the second way (`_cpu_options.jit`: YNNPACK's dot fusion, thin
    convolutions as multiply-adds)."""
    onehot = jax.nn.one_hot(model.t, 10, dtype=model.x.dtype)
    g = jax.grad(lambda v, w: jnp.sum(model.fn(v) * w))
    grad = _cpu_options.jit(g) if second_way else jax.jit(g)
    return lambda: grad(model.x, onehot)


def _uses_options(fn) -> bool:
    """Whether an eager plan made for model `fn` is compiled the second way."""
    return any(options for key, (_, _, options) in _eager._PLANS.items() if key[1] is fn)


def bench_gradient_attribution(ctx: Context) -> dict:
    key = jax.random.key(0)
    rows, bare_notes = [], []
    for model, target in ((mlp_model(), 2.0), (cnn_model(), 1.5)):
        for method, peer, ours, layout, exact in _cases(model, key):
            theirs, mine = _np(peer()), layout(_np(jax.block_until_ready(ours())))
            if exact:
                diff = float(np.abs(mine - theirs).max())
            else:  # two random estimates: compare the per-example sums
                sums = lambda a: a.reshape(len(a), -1).sum(1)
                diff = float(np.abs(sums(mine) - sums(theirs)).max())
            contenders = {"peer": peer, "ours": ours}
            if method == "saliency":
                contenders["bare"] = _bare_saliency(model)
                contenders["bare_ynn"] = _bare_saliency(model, second_way=True)
            timings = ctx.time(contenders, repeats=REPEATS)
            if method == "saliency":
                bare, ynn, peer_t = timings["bare"], timings["bare_ynn"], timings["peer"]
                bare_notes.append(
                    f"{model.name}: a hand-written jax.jit(grad) of the same map takes "
                    f"{bare.median * 1e3:.2f} ms median / {bare.min * 1e3:.2f} ms min compiled by "
                    f"default, {ynn.median * 1e3:.2f} / {ynn.min * 1e3:.2f} ms the second way "
                    f"(_cpu_options.jit, which ours uses on this model: "
                    f"{'yes' if _uses_options(model.fn) else 'no'}), Captum "
                    f"{peer_t.median * 1e3:.2f} / {peer_t.min * 1e3:.2f} ms: the compiled "
                    f"gradient alone is {peer_t.median / min(bare.median, ynn.median):.2f}x Captum "
                    "(medians, the faster compile), a ceiling for every one-gradient map here."
                )
            rows.append(
                record(f"{method} {model.name} b{len(mine)}", timings["peer"], timings["ours"],
                       targets={"ratio_median": target}, max_abs_diff=diff)
            )  # fmt: skip
    return {
        "peer": "captum.attr Saliency / InputXGradient / GradientShap / LayerActivation / "
        "LayerGradientXActivation / LayerGradCam (float32, default settings)",
        "ours": "xai_jax saliency / input_x_gradient / gradient_shap / layer_activation / "
        "layer_gradient_x_activation / layer_gradcam, eager",
        "notes": [
            "Models and inputs of the integrated-gradients benchmark; layer = the first ReLU.",
            f"gradient_shap: n_samples={N_SAMPLES}, stdevs={STDEVS}, {N_BASELINES} baseline rows; "
            "the two sides draw different random numbers, so its difference column compares the "
            "per-example sums of two random estimates.",
            *bare_notes,
        ],
        "columns": COLUMNS,
        "cases": rows,
    }
