"""Incremental inference for occlusion (Nakandala et al., SIGMOD 2019), found from the jaxpr.

An occluded window changes only a box of the input. Through a convolution the change spreads
to the box of outputs whose receptive field meets it, through an elementwise operation (a bias,
an activation, a normalisation with fixed statistics) it stays in its box. So for every
occluded row, each convolution of the model's convolutional prefix is evaluated on the box it
changes only: its input there is the example's unoccluded activation (computed once per
example) with the changed box laid over it. Where the change reaches an operation that is
neither (a pooling over everything, a residual sum of two different boxes), the box is written
into the unoccluded activation and the rest of the model runs as it is; but a dense layer after
a flatten (the affine head of Nakandala et al.) sees the change alone: its unoccluded output
plus the box's change contracted with the weights it meets (`_Flat`, `_affine_head`). Same
numbers as evaluating the occluded rows in full, to float32 round-off (the sums of a box are
those of the full convolution; the head's output is a sum split in two).

`occluded_outputs` is the kernel for one chunk of occlusion rows. It traces the model's jaxpr
on one row and walks it with three kinds of values:

- constants: what does not depend on the input (parameters, literals), computed once;
- `_Box`: a changed box of an input-dependent value, its values and its start per axis (the
  box sizes are static: the largest over all windows, starts clamped so the box fits);
- `_Row`: an input-dependent value in full, per row.

It gives None, and the caller evaluates the rows in full, where this does not pay: no
convolution sees a box, or the boxes cover more than half of the convolutions' outputs.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from xai_jax._propagation import _CALLS, ELEMENTWISE, _bind, _elementwise_call, _sub_jaxpr

# Occlusion tries incremental inference (tests switch it off to compare with the full rows).
ENABLED = True
# Incremental evaluation pays when the boxes cover at most this share of the convolutions'
# outputs (what the convolutions compute; the gathers that build the boxes cost the rest).
MAX_BOX_SHARE = 0.5
# A dense head contracts the box's change with its weights at every box position where that
# table is at most this many times the weights the full activation meets.
MAX_HEAD_TABLE = 4


class _Unsupported(Exception):
    """A jaxpr the box walk does not take: the rows are evaluated in full."""


class _Box(NamedTuple):
    values: jax.Array  # the box, same rank as the full value
    lo: tuple  # start of the box per axis (int32 scalars; 0 on the batch axis)
    shape: tuple  # the full value's shape
    ident: int  # boxes of one ident share their starts and sizes


class _Row(NamedTuple):
    value: jax.Array  # input-dependent, full shape


class _Flat(NamedTuple):
    """A top-level box seen through a reshape that merges its value's axes after the batch:
    the reshaped value is that of `var` with the box laid over it, not yet materialised (an
    affine head contracts the box's change alone, see `_affine_head`)."""

    box: _Box
    var: Any  # the reshape's operand
    shape: tuple  # the reshaped value's shape


class _Walk(NamedTuple):
    base: dict  # top-level var -> its unoccluded values for the chunk's examples, [E, *shape]
    e: jax.Array  # this row's example within the chunk
    stats: list  # (box outputs, full outputs) per convolution evaluated on a box
    idents: list  # counter of box idents


def occluded_outputs(model, x, baselines, window, i, code, num_codes: int):
    """The model's outputs on occlusion rows `(example i, window code)`, `[C, ...]`, by
    incremental inference; None where it does not apply or pay (see the module docstring).

    `x` `[batch, ...]` (one array), `baselines` `[1 or batch, ...]`, `window` the leaf's
    `_Window`; code `num_codes - 1` is the unoccluded row.
    """
    batch = x.shape[0]
    c = i.shape[0]
    row = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    try:
        closed = jax.make_jaxpr(model)(row)
    except Exception:  # a model that does not trace to a jaxpr (a NumPy one): rows in full
        return None
    jaxpr = closed.jaxpr
    if len(jaxpr.invars) != 1 or not any(
        eqn.primitive.name == "conv_general_dilated" for eqn in jaxpr.eqns
    ):
        return None
    # The chunk's rows are consecutive: its examples are i[0] .. i[0] + num_examples - 1.
    num_examples = min(batch, (c - 1) // num_codes + 2)
    first = i[0]
    examples = jnp.minimum(first + jnp.arange(num_examples, dtype=jnp.int32), batch - 1)
    base = _base_values(jaxpr, closed.consts, x[examples][:, None])
    b_rows = baselines.shape[0]
    stats: list = []

    def one(i_row, e, code_row):
        walk = _Walk(base, e, stats, [0])
        box = _occluded_box(x, baselines, window, i_row, code_row, num_codes, b_rows, walk)
        outs = _walk(walk, jaxpr, closed.consts, [box], top=True)
        return outs[0][0]  # the one row's output

    try:
        out = jax.vmap(one)(i, i - first, code)
    except _Unsupported:
        return None
    full = sum(s[1] for s in stats)
    if not stats or sum(s[0] for s in stats) > MAX_BOX_SHARE * full:
        return None
    return out


def _base_values(jaxpr, consts, xs) -> dict:
    """Every top-level var's unoccluded value for each example, `[E, *shape]`."""
    env_vars = [*jaxpr.invars, *(v for eqn in jaxpr.eqns for v in eqn.outvars)]

    def one(x1):
        env = {}
        read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]
        env.update(zip(jaxpr.constvars, consts, strict=True))
        env[jaxpr.invars[0]] = x1
        for eqn in jaxpr.eqns:
            env.update(zip(eqn.outvars, _bind(eqn, [read(v) for v in eqn.invars]), strict=True))
        return [env[v] for v in env_vars]

    values = jax.vmap(one)(xs)
    return dict(zip(env_vars, values, strict=True))


def _occluded_box(x, baselines, window, i, code, num_codes, b_rows, walk: _Walk) -> _Box:
    """The input's changed box on one row: the window (clamped to fit), baseline inside."""
    inner = x.shape[1:]
    total = num_codes - 1
    occluded = code < total
    rest = jnp.minimum(code, total - 1)
    lo, inside = [0] * len(inner), [None] * len(inner)
    for axis in reversed(range(len(inner))):
        k = rest % window.counts[axis]
        rest = rest // window.counts[axis]
        start = k * window.strides[axis]
        w, n = window.window[axis], inner[axis]
        lo[axis] = jnp.minimum(start, n - w)
        pos = lo[axis] + jnp.arange(w, dtype=jnp.int32)
        inside[axis] = (pos >= start) & (pos < start + w) & occluded
    mask = _all(inside) if inner else jnp.asarray(False)
    j = i if b_rows > 1 else 0
    cut = lambda a, row: lax.dynamic_slice(a, [row, *lo], [1, *window.window])[0]
    values = jnp.where(mask, cut(baselines, j), cut(x, i))
    ident = _new_ident(walk)
    return _Box(values[None], (0, *lo), (1, *inner), ident)


def _new_ident(walk: _Walk) -> int:
    walk.idents[0] += 1
    return walk.idents[0]


def _walk(walk: _Walk, jaxpr, consts, args: list, top: bool) -> list:
    env: dict[Any, Any] = {}
    read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]
    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        boxes = [v for v in vals if isinstance(v, _Box)]
        rows = any(isinstance(v, _Row | _Flat) for v in vals)
        if (
            top
            and any(isinstance(v, _Flat) for v in vals)
            and (out := _affine_head(walk, eqn, vals))
        ):
            env.update(zip(eqn.outvars, out, strict=True))
            continue
        if top and len(boxes) == 1 and not rows and (flat := _flatten(eqn, vals)):
            env[eqn.outvars[0]] = flat
            continue
        if not boxes and not rows:
            outs = _bind(eqn, vals)
        elif boxes and not rows:
            outs = _box_eqn(walk, eqn, vals, boxes)
            if outs is None:
                vals = [_full(walk, v, val, top) for v, val in zip(eqn.invars, vals, strict=True)]
                outs = [_Row(o) for o in _bind(eqn, [_plain(v) for v in vals])]
        else:
            vals = [_full(walk, v, val, top) for v, val in zip(eqn.invars, vals, strict=True)]
            outs = [_Row(o) for o in _bind(eqn, [_plain(v) for v in vals])]
        env.update(zip(eqn.outvars, outs, strict=True))
    outs = [read(v) for v in jaxpr.outvars]
    if top:
        return [
            _plain(_full(walk, v, val, top)) for v, val in zip(jaxpr.outvars, outs, strict=True)
        ]
    return outs


def _plain(value):
    return value.value if isinstance(value, _Row) else value


def _full(walk: _Walk, var, value, top: bool):
    """A box written into its var's unoccluded value (a `_Row`); other values as they are."""
    if isinstance(value, _Flat):
        return _Row(_full(walk, value.var, value.box, top).value.reshape(value.shape))
    if not isinstance(value, _Box):
        return value
    if not top or isinstance(var, jcore.Literal):
        raise _Unsupported("a box leaves a call body")
    base = walk.base[var][walk.e]
    return _Row(_place(value, [0] * base.ndim, base))


def _flatten(eqn, vals: list):
    """A `_Flat` for a reshape of a box that keeps the batch axis and merges the rest."""
    if eqn.primitive.name != "reshape" or not isinstance(vals[0], _Box):
        return None
    box, shape = vals[0], eqn.outvars[0].aval.shape
    if eqn.params.get("dimensions") is not None or len(shape) != 2 or shape[0] != box.shape[0]:
        return None
    return _Flat(box, eqn.invars[0], shape)


def _affine_head(walk: _Walk, eqn, vals: list):
    """A dense layer on a `_Flat`: the unoccluded output plus the contraction of the box's
    change with the weights it meets, or None (then the `_Flat` is materialised).

    The weights the box can meet are cut for every position the box can take (static slices,
    `[box elements, positions * outputs]`) and the box contracted with all of them: one
    matmul over the chunk's rows, then each row's position picked, less what the unoccluded
    activation meets there (per example and position, outside the rows: no per-row gather of
    the unoccluded activation, which cost 20% of the benchmark's kernel). Per-row slices of the
    weights would be a gather and a batched matrix-vector product, both slow on XLA:CPU. Not
    taken where the positions make that matmul over `MAX_HEAD_TABLE` times the dense layer's
    (measured on the benchmark CNN, at 4x: eager 2.0-2.4 ms vs 2.8 ms materialised)."""
    if eqn.primitive.name != "dot_general" or not isinstance(vals[0], _Flat):
        return None
    flat, w = vals
    if isinstance(w, _Box | _Row | _Flat):
        return None
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if tuple(lc) != (1,) or lb or rb or len(rc) != 1:
        return None
    box = flat.box
    inner, size = box.shape[1:], box.values.shape[1:]
    counts = [n - k + 1 for n, k in zip(inner, size, strict=True)]
    if math.prod(counts) * math.prod(size) > MAX_HEAD_TABLE * math.prod(inner):
        return None
    w = jnp.moveaxis(jnp.asarray(w), rc[0], 0).reshape(*inner, -1)  # [*inner, outputs]
    cuts = [
        lax.slice(w, [*start, 0], [*(a + k for a, k in zip(start, size, strict=True)), w.shape[-1]])
        for start in np.ndindex(*counts)
    ]
    table = jnp.stack(cuts, axis=-2).reshape(math.prod(size), -1)  # [box, positions * outputs]
    # What the unoccluded box meets, per example and position (not per row: no gather of the
    # unoccluded activation in the rows' loop), `[E, positions, outputs]`.
    base = walk.base[flat.var][:, 0]
    spans = lambda start: [slice(a, a + k) for a, k in zip(start, size, strict=True)]
    base_cuts = jnp.stack([base[(slice(None), *spans(st))] for st in np.ndindex(*counts)], 1)
    met = jnp.einsum(
        "epb,bpo->epo",
        base_cuts.reshape(base.shape[0], len(cuts), -1),
        table.astype(base.dtype).reshape(-1, len(cuts), w.shape[-1]),
    )
    lo = box.lo[1:]
    values = box.values[0].astype(base.dtype).reshape(-1)
    every = (values @ table.astype(base.dtype)).reshape(len(cuts), -1)
    position = functools.reduce(lambda p, a: p * counts[a] + lo[a], range(1, len(lo)), lo[0])
    out = walk.base[eqn.outvars[0]][walk.e]
    change = every[position] - met[walk.e, position]
    return [_Row(out + change.reshape(out.shape).astype(out.dtype))]


def _box_eqn(walk: _Walk, eqn, vals: list, boxes: list[_Box]):
    """The equation evaluated on its operands' box, or None (then it runs in full)."""
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        if isinstance(vals[0], _Box) and not isinstance(vals[1], _Box):
            return _conv(walk, eqn, vals[0], vals[1])
        return None
    box = boxes[0]
    if any(b.ident != box.ident or b.values.shape != box.values.shape for b in boxes):
        return None
    if any(o.aval.shape != box.shape for o in eqn.outvars):
        return None
    if name in ELEMENTWISE:
        cropped = [_crop(v, box) for v in vals]
        if any(v is None for v in cropped):
            return None
        return [_Box(o, box.lo, box.shape, box.ident) for o in _bind(eqn, cropped)]
    if name in _CALLS and _elementwise_call(eqn):
        jaxpr, consts = _sub_jaxpr(eqn)
        return _walk(walk, jaxpr, consts, vals, top=False)
    return None


def _crop(value, box: _Box):
    """An operand of an elementwise equation on `box`: a box as it is, a constant cut to the
    box (axes of size 1 broadcast), None for a constant that does not line up."""
    if isinstance(value, _Box):
        return value.values
    value = jnp.asarray(value)
    if value.ndim == 0:
        return value
    if value.ndim != len(box.shape):
        return None
    starts, sizes = [], []
    for n, full, lo, s in zip(value.shape, box.shape, box.lo, box.values.shape, strict=True):
        if n == 1:
            starts.append(0)
            sizes.append(1)
        elif n == full:
            starts.append(lo)
            sizes.append(s)
        else:
            return None
    return lax.dynamic_slice(value, starts, sizes)


def _conv(walk: _Walk, eqn, box: _Box, rhs) -> list:
    """A convolution evaluated on the box of outputs whose receptive field meets `box`."""
    p = eqn.params
    if (
        p["feature_group_count"] != 1
        or p["batch_group_count"] != 1
        or any(d != 1 for d in p["lhs_dilation"])
        or any(lo < 0 or hi < 0 for lo, hi in p["padding"])
    ):
        return None
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    lhs_shape, rhs_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    out_shape = eqn.outvars[0].aval.shape
    crop_lo = [0] * len(lhs_shape)
    crop_size = [1 if a == lhs_spec[0] else n for a, n in enumerate(lhs_shape)]
    out_lo = [0] * len(out_shape)
    out_size = [1 if a == out_spec[0] else n for a, n in enumerate(out_shape)]
    for k, (la, ra, oa) in enumerate(zip(lhs_spec[2:], rhs_spec[2:], out_spec[2:], strict=True)):
        s, d = p["window_strides"][k], p["rhs_dilation"][k]
        span = (rhs_shape[ra] - 1) * d + 1
        pad, n_out, size = p["padding"][k][0], out_shape[oa], box.values.shape[la]
        size_out = min(n_out, (size + span - 2) // s + 1)
        # outputs o with o * s - pad in [lo - span + 1, lo + size - 1]: from ceil(...)
        first = -((span - 1 - pad - box.lo[la]) // s)
        out_lo[oa] = jnp.clip(first, 0, n_out - size_out)
        out_size[oa] = size_out
        crop_lo[la] = out_lo[oa] * s - pad
        crop_size[la] = (size_out - 1) * s + span
    pads = [(0, 0)] * len(lhs_shape)
    for k, la in enumerate(lhs_spec[2:]):
        pads[la] = p["padding"][k]
    crop = _overlay(walk, eqn.invars[0], box, crop_lo, crop_size, pads)
    params = dict(p, padding=tuple((0, 0) for _ in p["padding"]))
    out = lax.conv_general_dilated_p.bind(crop, rhs, **params)
    assert out.shape == tuple(out_size), (out.shape, out_size)
    walk.stats.append((math.prod(out_size), math.prod(out_shape)))
    return [_Box(out, tuple(out_lo), out_shape, _new_ident(walk))]


def _overlay(walk: _Walk, var, box: _Box, crop_lo: list, crop_size: list, pads: list):
    """The region `[crop_lo, crop_lo + crop_size)` of `var`'s value on this row: the box where
    it is, the unoccluded value elsewhere, zeros in the convolution's padding `pads` (the
    unoccluded value is padded once per chunk, not per row)."""
    if var not in walk.base:
        raise _Unsupported("a convolution inside a call body")
    padded = jnp.pad(walk.base[var], [(0, 0), *pads])
    start = [c + lo for c, (lo, _) in zip(crop_lo, pads, strict=True)]
    region = lax.dynamic_slice(padded, [walk.e, *start], [1, *crop_size])[0]
    return _place(box, crop_lo, region)


def _place(box: _Box, region_lo: list, region):
    """`region` (the values from `region_lo` on) with the box laid over it where they meet.

    Per element of the region, a gather from the box (indices clamped into it) and a select:
    XLA:CPU fuses these into one loop, where a `dynamic_update_slice` under `vmap` is a
    scatter it runs element by element (4x slower on the benchmark's CNN).
    """
    values = box.values.astype(region.dtype)
    inside = []
    for axis, (b_lo, r_lo, size, n) in enumerate(
        zip(box.lo, region_lo, values.shape, region.shape, strict=True)
    ):
        if isinstance(b_lo, int) and isinstance(r_lo, int) and b_lo == r_lo and size == n:
            inside.append(jnp.ones(n, bool))  # an axis the box spans (batch, channels)
            continue
        pos = jnp.arange(n, dtype=jnp.int32) + (r_lo - b_lo)  # region index -> box index
        index = jnp.clip(pos, 0, size - 1)
        values = jnp.take(values, index, axis=axis, mode="clip")
        inside.append((pos >= 0) & (pos < size))
    return jnp.where(_all(inside), values, region)


def _all(masks: list) -> jax.Array:
    """The outer AND of one boolean vector per axis."""
    n = len(masks)
    spread = [m.reshape(*([1] * a), -1, *([1] * (n - a - 1))) for a, m in enumerate(masks)]
    return functools.reduce(jnp.logical_and, spread)
