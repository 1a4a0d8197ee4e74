"""Modified backward passes on any JAX function: a walk of its jaxpr with rules in place of VJPs.

`propagate(rules, closed_jaxpr, args, active)` re-evaluates a function's jaxpr on the inputs
(and, for reference-based rules such as DeepLift's, on the baselines in the same walk: each
value holds one array per "lane"), replacing chosen pieces by `jax.custom_vjp` functions whose
forward is the original computation and whose backward is the rule. `jax.grad` of the result
is then the modified gradient, and because the rules are ordinary JAX code of their residuals,
it stays differentiable with respect to anything the model closes over (parameters), jittable
and vmappable.

The walk recurses into `jit`/`pjit`, `closed_call`, `custom_jvp_call`, `custom_vjp_call` (their
primal bodies: the custom derivative is what a rule replaces), `remat` and `scan` bodies. Values
that do not depend on the inputs ("inactive": parameters, literals) are computed once and never
touched by a rule. What a rule may replace (`Rules`):

- `relu`: a `max(z, 0)` of an active `z` (guided backprop, deconvolution);
- `elementwise`: an elementwise function of one active value, found as a maximal region of
  elementwise equations fed by one active source `s` (`tanh(s + b)`, `gelu`, `silu`, the
  `jit[relu]` of `jax.nn.relu` ...): the rule sees the region as `f(s)` at each of its exits;
- `softmax`: the `exp(a - stop_gradient(max a)) / sum(exp(...))` pattern of `jax.nn.softmax`;
- `layers`: a primitive by name (`dot_general`, `conv_general_dilated`, `reduce_window_max`,
  ...), with the active operand, the inactive ones, and a bias `add` fused after it.

Linear primitives keep their own transpose. With `strict` rules (DeepLift, LRP), an active
primitive that is neither linear nor covered raises a `ValueError` naming it: the map is never
silently wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Elementwise primitives (one output, shape of the operands; literals may be scalars).
ELEMENTWISE = _names(
    """
    abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt ceil clamp conj copy copy_p
    convert_element_type cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt
    igamma imag integer_pow is_finite le lgamma log log1p logistic lt max min mul ne neg
    nextafter not or pow real reduce_precision rem round rsqrt select_n sign sin sinh sqrt
    square sub tan tanh xor
    """
)
# Linear in their active operands whatever the others are (given the conditions in `_linear`).
_LINEAR = _names(
    """
    add add_any sub neg convert_element_type copy copy_p real imag conj reduce_precision
    reshape broadcast_in_dim transpose squeeze expand_dims reduce_sum slice rev concatenate pad
    dynamic_slice dynamic_update_slice gather scatter-add scatter_add select_n dot_general
    conv_general_dilated reduce_window_sum cumsum mul div sharding_constraint split
    optimization_barrier
    """
)
_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "remat2",
                    "checkpoint", "custom_vjp_call", "custom_vjp_call_jaxpr"})  # fmt: skip


class Rules(NamedTuple):
    """What one method replaces. Each rule is called with the lanes of its operands (a tuple:
    `(x,)` or `(x, reference)`) and returns the lanes of the output; the x lane carries the
    gradient.

    relu(z_lanes) -> lanes: in place of a `max(z, 0)`.
    elementwise(s_lanes, f, consts) -> lanes: `f(s, *consts)` the region up to one exit.
    softmax(a_lanes, f, consts) -> lanes.
    layers: primitive name -> rule(site) -> lanes (a `Site`).
    """

    lanes: int = 1
    relu: Callable | None = None
    elementwise: Callable | None = None
    softmax: Callable | None = None
    layers: Any = ()  # tuple of (primitive name, rule) pairs (hashable)
    strict: bool = False
    fuse: bool = False  # a layer takes the affine steps after it (bias add, scaling) along
    name: str = "this method"

    def layer(self, name: str) -> Callable | None:
        for key, rule in self.layers:
            if key == name:
                return rule
        return None


class Site(NamedTuple):
    """One primitive a layer rule replaces.

    `apply(a, operands)` evaluates the primitive, and the affine steps fused after it (a bias
    add, the division of an average pool), with `a` in the active operand's place and
    `operands` (a list) in the inactive ones' places; `a` holds the lanes of the active
    operand, `operands` the inactive operands (the weights of a `dot_general` or a
    convolution).
    """

    primitive: str
    apply: Callable
    a: tuple
    operands: list
    n_weights: int  # operands[:n_weights] are the primitive's own, the rest the fused steps'


def _read_literal(v):
    return v.val if isinstance(v, jcore.Literal) else None


def _is_zero_literal(v) -> bool:
    val = _read_literal(v)
    if val is None:
        return False
    try:
        return bool(np.all(np.asarray(val) == 0))
    except Exception:
        return False


def _bind(eqn, invals):
    params = eqn.primitive.get_bind_params(eqn.params)
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _sub_jaxpr(eqn):
    """The body a call primitive evaluates: `(jaxpr, consts)`."""
    p = eqn.params
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in p:
            j = p[key]
            if isinstance(j, jcore.ClosedJaxpr):
                return j.jaxpr, list(j.consts)
            return j, []
    raise ValueError(f"cannot read the body of {eqn.primitive.name}")


def eval_inlined(jaxpr, consts: list, args, inline=frozenset({"jit"}), rewrite=None) -> list:
    """`jax.core.eval_jaxpr`, recursing into the bodies of the calls named in `inline` instead
    of binding them; `rewrite(eqn, invals)`, where given, computes an equation's outputs in
    its own way (a list), or returns None to leave it as it is."""
    env = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        outs = None if rewrite is None else rewrite(eqn, invals)
        if outs is None and eqn.primitive.name in inline:
            body, body_consts = _sub_jaxpr(eqn)
            outs = eval_inlined(body, body_consts, invals, inline, rewrite)
        elif outs is None:
            outs = _bind(eqn, invals)
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def _is_float(v) -> bool:
    return jnp.issubdtype(v.aval.dtype, jnp.inexact)


def _elementwise_call(eqn) -> bool:
    """A call whose body is elementwise throughout (jax.nn.relu, silu, the `_where` of jnp)."""
    if eqn.primitive.name not in _CALLS or eqn.primitive.name == "custom_vjp_call":
        return False
    jaxpr, _ = _sub_jaxpr(eqn)
    shape = eqn.outvars[0].aval.shape
    if any(o.aval.shape != shape for o in eqn.outvars):
        return False
    for e in jaxpr.eqns:
        if e.primitive.name in _CALLS:
            if not _elementwise_call(e):
                return False
        elif e.primitive.name == "broadcast_in_dim":
            if e.invars[0].aval.shape != ():  # a scalar constant spread: elementwise
                return False
        elif e.primitive.name not in ELEMENTWISE:
            return False
    return True


def _is_elementwise(eqn) -> bool:
    return eqn.primitive.name in ELEMENTWISE or _elementwise_call(eqn)


# --------------------------------------------------------------------------------------------
# Analysis of one jaxpr: which values are active, the elementwise regions and their exits.


class _Plan(NamedTuple):
    active: dict  # var -> bool
    region: dict  # eqn index -> source var (eqn inside an elementwise region)
    nonlinear: set  # sources whose region holds a nonlinear equation
    exits: dict  # eqn index -> list of out vars that leave their region
    fused: dict  # eqn index of a bias add -> eqn index of the layer it completes
    fused_layer: set  # eqn indices of layers whose output goes to a fused add
    softmax: dict  # eqn index of the final div -> (entry var, [eqn indices])
    quiet: set  # the other eqns of a softmax pattern: values only, no checks


def _linear_ok(eqn, act: list[bool]) -> bool:
    name = eqn.primitive.name
    if name not in _LINEAR:
        return False
    if name in ("mul", "dot_general", "conv_general_dilated"):
        return sum(act) == 1
    if name == "div":
        return not act[1]
    if name == "select_n":
        return not act[0]
    if name in ("dynamic_slice", "gather"):
        return not any(act[1:])
    if name == "dynamic_update_slice":
        return not any(act[2:])
    if name in ("scatter-add", "scatter_add"):
        return not act[1]
    return True


def _plan(jaxpr, active_in: list[bool], rules: Rules) -> _Plan:
    active = {}
    for v, a in zip(jaxpr.invars, active_in, strict=True):
        active[v] = a
    for v in jaxpr.constvars:
        active[v] = False

    def is_active(v) -> bool:
        return not isinstance(v, jcore.Literal) and active.get(v, False)

    uses: dict = {}
    producer: dict = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, jcore.Literal):
                uses.setdefault(v, []).append(i)
        for v in eqn.outvars:
            producer[v] = i
    outputs = {v for v in jaxpr.outvars if not isinstance(v, jcore.Literal)}

    for eqn in jaxpr.eqns:
        a = any(is_active(v) for v in eqn.invars)
        for v in eqn.outvars:
            active[v] = a

    softmax: dict = {}
    in_softmax: set = set()
    if rules.softmax is not None:
        for i in range(len(jaxpr.eqns)):
            found = _match_softmax(jaxpr, i, producer, is_active)
            if found is not None:
                softmax[i] = found
                in_softmax.update(found[1])

    fused: dict = {}  # last eqn of a chain -> (layer eqn, [chain eqns])
    fused_layer: set = set()  # the layer eqns and the chain eqns before the last
    for i, eqn in enumerate(jaxpr.eqns):
        rule = rules.layer(eqn.primitive.name)
        if rule is None or not rules.fuse or not any(is_active(v) for v in eqn.invars):
            continue
        chain, out = [], eqn.outvars[0]
        while True:
            users = uses.get(out, [])
            if len(users) != 1 or out in outputs:
                break
            nxt = jaxpr.eqns[users[0]]
            if not _affine_step(nxt, out, is_active):
                break
            chain.append(users[0])
            out = nxt.outvars[0]
        if chain:
            fused[chain[-1]] = (i, chain)
            fused_layer.add(i)
            fused_layer.update(chain[:-1])
    quiet: set = set()
    for members in softmax.values():
        quiet.update(j for j in members[1] if j not in softmax)

    source: dict = {}
    region: dict = {}
    nonlinear: set = set()
    if rules.elementwise is not None:
        for i, eqn in enumerate(jaxpr.eqns):
            if i in in_softmax or i in fused or i in fused_layer:
                for v in eqn.outvars:
                    source[v] = v
                continue
            act = [is_active(v) for v in eqn.invars]
            if not any(act):
                continue
            srcs = {source.get(v, v) for v, a in zip(eqn.invars, act, strict=True) if a}
            shape_ok = all(
                v.aval.shape == eqn.outvars[0].aval.shape
                for v, a in zip(eqn.invars, act, strict=True)
                if a
            )
            if (
                _is_elementwise(eqn)
                and len(srcs) == 1
                and shape_ok
                and rules.layer(eqn.primitive.name) is None
            ):
                s = srcs.pop()
                region[i] = s
                for v in eqn.outvars:
                    source[v] = s
                if (
                    not (_linear_ok(eqn, act) and eqn.primitive.name not in ("select_n",))
                    or eqn.primitive.name in _CALLS
                ):
                    nonlinear.add(s)
            else:
                for v in eqn.outvars:
                    source[v] = v
    exits: dict = {}
    for i, s in region.items():
        if s not in nonlinear:
            continue
        for v in jaxpr.eqns[i].outvars:
            if not _is_float(v):
                continue
            leaves = v in outputs or any(region.get(j) != s for j in uses.get(v, []))
            if leaves:
                exits.setdefault(i, []).append(v)
    return _Plan(active, region, nonlinear, exits, fused, fused_layer, softmax, quiet)


def _affine_step(eqn, v, is_active) -> bool:
    """`v + c`, `v - c`, `v * c`, `v / c` with `c` inactive and `v`'s shape: a step a layer
    rule takes as part of the layer (Captum's layer output includes its bias)."""
    name = eqn.primitive.name
    if name not in ("add", "add_any", "sub", "mul", "div") or len(eqn.invars) != 2:
        return False
    if eqn.outvars[0].aval.shape != v.aval.shape:
        return False
    a, b = eqn.invars
    other = b if a is v else a
    if other is v or is_active(other):
        return False
    return not (name in ("div", "sub") and b is v)


def _match_softmax(jaxpr, i, producer, is_active):
    """`div g (broadcast (reduce_sum g))` with `g = exp(sub a (stop_gradient ...))`:
    `(a, eqn indices of the pattern)` or None."""
    eqns = jaxpr.eqns
    eqn = eqns[i]
    if eqn.primitive.name != "div" or not all(is_active(v) for v in eqn.invars):
        return None

    def prod(v, name):
        j = producer.get(v)
        if j is not None and eqns[j].primitive.name == name:
            return j
        return None

    g, d = eqn.invars
    j_b = prod(d, "broadcast_in_dim")
    j_exp = prod(g, "exp")
    if j_b is None or j_exp is None:
        return None
    j_sum = prod(eqns[j_b].invars[0], "reduce_sum")
    if j_sum is None or eqns[j_sum].invars[0] is not g:
        return None
    j_sub = prod(eqns[j_exp].invars[0], "sub")
    if j_sub is None:
        return None
    a, m = eqns[j_sub].invars
    if a.aval.shape != eqn.outvars[0].aval.shape:
        return None
    # the stabiliser: anything computed from `a` through stop_gradient (the max)
    j_sg = prod(m, "stop_gradient")
    members = [j_sub, j_exp, j_sum, j_b, i]
    if j_sg is None:
        if is_active(m):
            return None
    else:
        members.append(j_sg)
        stack = [eqns[j_sg].invars[0]]
        while stack:
            v = stack.pop()
            j = producer.get(v)
            if j is None or v is a:
                continue
            members.append(j)
            stack.extend(w for w in eqns[j].invars if not isinstance(w, jcore.Literal))
    return a, sorted(set(members))


# --------------------------------------------------------------------------------------------
# Evaluation.


class _Value(NamedTuple):
    active: bool
    lanes: tuple  # one array per lane (the same object in every lane when inactive)


_SKIPPED = _Value(True, ())


def propagate(rules: Rules, closed: jcore.ClosedJaxpr, args: list[tuple], active: list[bool]):
    """Evaluate `closed` on `args` (lanes per input), rules in place; outputs as lanes."""
    outs = _eval(rules, closed.jaxpr, list(closed.consts), args, active)
    return [o.lanes for o in outs]


def _eval(rules: Rules, jaxpr, consts: list, args: list[tuple], active_in: list[bool]):
    n = rules.lanes
    plan = _plan(jaxpr, active_in, rules)
    env: dict = {}

    def read(v) -> _Value:
        if isinstance(v, jcore.Literal):
            return _Value(False, (v.val,) * n)
        return env.get(v, _SKIPPED)  # a fused layer's output: read only by its chain

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = _Value(False, (c,) * n)
    for v, a, lanes in zip(jaxpr.invars, active_in, args, strict=True):
        env[v] = _Value(a, tuple(lanes))

    eqns = jaxpr.eqns
    for i, eqn in enumerate(eqns):
        vals = [read(v) for v in eqn.invars]
        act = [v.active for v in vals]
        if i in plan.softmax:
            entry, members = plan.softmax[i]
            f, consts_ = _replay(eqns, members, entry, eqn.outvars[0], read)
            lanes = rules.softmax(read(entry).lanes, f, consts_)
            env[eqn.outvars[0]] = _Value(True, tuple(lanes))
            continue
        if not any(act):
            out = _bind(eqn, [v.lanes[0] for v in vals])
            for v, o in zip(eqn.outvars, out, strict=True):
                env[v] = _Value(False, (o,) * n)
            continue
        name = eqn.primitive.name
        if i in plan.fused_layer:
            continue  # computed with the last step of its chain
        if i in plan.quiet:
            inner = [_Value(v.active, tuple(lax.stop_gradient(u) for u in v.lanes)) for v in vals]
            outs = _eval_lanes(rules, eqn, inner)
            for k, v in enumerate(eqn.outvars):
                env[v] = _Value(True, outs[k])
            continue
        if i in plan.fused or rules.layer(name) is not None:
            layer_i, chain = plan.fused.get(i, (i, []))
            lanes = _layer(rules, eqns, layer_i, chain, read)
            env[eqn.outvars[0]] = _Value(True, tuple(lanes))
            continue
        if i in plan.region:
            # the region's values flow on without a gradient; its exits carry the rule's
            s = plan.region[i]
            inner = [
                _Value(v.active, tuple(jax.lax.stop_gradient(x) for x in v.lanes))
                if v.active and s in plan.nonlinear
                else v
                for v in vals
            ]
            outs = _eval_lanes(rules, eqn, inner)
            for k, v in enumerate(eqn.outvars):
                env[v] = _Value(True, outs[k])
            for v in plan.exits.get(i, []):
                f, consts_ = _replay(eqns, _members(plan, s, v, eqns, i), s, v, read)
                env[v] = _Value(True, tuple(rules.elementwise(read(s).lanes, f, consts_)))
            continue
        if (
            name == "max"
            and rules.relu is not None
            and len(vals) == 2
            and sum(act) == 1
            and _is_zero_literal(eqn.invars[act.index(False)])
        ):
            z = vals[act.index(True)].lanes
            env[eqn.outvars[0]] = _Value(True, tuple(rules.relu(z)))
            continue
        if name in _CALLS:
            outs = _call(rules, eqn, vals)
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = o
            continue
        if name in ("cond", "while"):
            raise ValueError(
                f"{rules.name} does not look inside {name!r} on inputs that depend on x (its "
                "branches or body would keep their ordinary derivatives): write the model "
                "without it, e.g. with jnp.where or a scan of fixed length"
            )
        if name == "scan":
            outs = _scan(rules, eqn, vals)
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = o
            continue
        if rules.strict and not _linear_ok(eqn, act) and not _discrete(eqn):
            raise ValueError(
                f"{rules.name} has no rule for the primitive {name!r} on inputs that depend on "
                f"x (it is not linear in them), so its map would be wrong: {eqn}"
            )
        outs = _eval_lanes(rules, eqn, vals)
        for k, v in enumerate(eqn.outvars):
            env[v] = _Value(True, outs[k])
    return [read(v) for v in jaxpr.outvars]


def _discrete(eqn) -> bool:
    """Outputs that carry no gradient (comparisons, integer results): no rule needed, as
    long as a consumer does not mix them into floats (which is then checked there)."""
    return all(not _is_float(v) for v in eqn.outvars) or eqn.primitive.name == "stop_gradient"


def _eval_lanes(rules: Rules, eqn, vals: list[_Value]) -> list[tuple]:
    per_lane = [_bind(eqn, [v.lanes[k] for v in vals]) for k in range(rules.lanes)]
    return [tuple(lane[j] for lane in per_lane) for j in range(len(eqn.outvars))]


def _members(plan: _Plan, s, v, eqns, upto: int) -> list[int]:
    """Region `s`'s equations that `v` depends on (in order, up to equation `upto`)."""
    needed = {v}
    members = []
    for j in range(upto, -1, -1):
        if plan.region.get(j) is not s:
            continue
        e = eqns[j]
        if any(o in needed for o in e.outvars):
            members.append(j)
            needed.update(w for w in e.invars if not isinstance(w, jcore.Literal))
    return members[::-1]


def _replay(eqns, members: list[int], entry, exit_, read):
    """`f(entry, *consts) -> exit` replaying `members`; consts are the inactive operands."""
    inner = set()
    for j in members:
        inner.update(eqns[j].outvars)
    const_vars = []
    for j in members:
        for w in eqns[j].invars:
            if isinstance(w, jcore.Literal) or w is entry or w in inner or w in const_vars:
                continue
            const_vars.append(w)
    consts = [read(w).lanes[0] for w in const_vars]

    def f(s, *cs):
        env = {entry: s, **dict(zip(const_vars, cs, strict=True))}
        for j in members:
            e = eqns[j]
            ins = [w.val if isinstance(w, jcore.Literal) else env[w] for w in e.invars]
            for o, val in zip(e.outvars, _bind(e, ins), strict=True):
                env[o] = val
        return env[exit_]

    return f, consts


def _layer(rules: Rules, eqns, i: int, chain: list[int], read) -> tuple:
    eqn = eqns[i]
    vals = [read(v) for v in eqn.invars]
    act = [v.active for v in vals]
    if sum(act) != 1:
        raise ValueError(
            f"{rules.name}: {eqn.primitive.name!r} with several operands that depend on x "
            "has no rule"
        )
    k = act.index(True)
    others = [v.lanes[0] for v in vals if not v.active]
    n_weights = len(others)
    steps = []
    prev = eqn.outvars[0]
    for j in chain:
        e = eqns[j]
        pos = [w is prev for w in e.invars].index(True)
        other = e.invars[1 - pos]
        if isinstance(other, jcore.Literal):
            steps.append((e, pos, other.val, None))
        else:
            steps.append((e, pos, None, len(others)))
            others.append(read(other).lanes[0])
        prev = e.outvars[0]

    def apply(a, operands):
        ops = list(operands[:n_weights])
        full = [a if j == k else ops.pop(0) for j in range(len(vals))]
        z = _bind(eqn, full)[0]
        for e, pos, literal, at in steps:
            c = literal if at is None else operands[at]
            z = _bind(e, [z, c] if pos == 0 else [c, z])[0]
        return z

    site = Site(eqn.primitive.name, apply, vals[k].lanes, others, n_weights)
    return rules.layer(eqn.primitive.name)(site)


def _call(rules: Rules, eqn, vals: list[_Value]) -> list[_Value]:
    """A call's body, walked with the same rules (a custom_jvp/vjp's consts are its leading
    operands; its custom derivative is what the rules replace)."""
    jaxpr, consts = _sub_jaxpr(eqn)
    return _eval(rules, jaxpr, consts, [v.lanes for v in vals], [v.active for v in vals])


def _scan(rules: Rules, eqn, vals: list[_Value]) -> list[_Value]:
    p = eqn.params
    body = p["jaxpr"]
    nc, ncar = p["num_consts"], p["num_carry"]
    n = rules.lanes
    act = [v.active for v in vals]
    # carries that become active after some iteration: the fixpoint of the body's activity
    carry_act = act[nc : nc + ncar]
    while True:
        plan = _plan(body.jaxpr, act[:nc] + carry_act + act[nc + ncar :], Rules(lanes=1))
        new = [
            c or (not isinstance(o, jcore.Literal) and plan.active.get(o, False))
            for c, o in zip(carry_act, body.jaxpr.outvars[:ncar], strict=True)
        ]
        if new == carry_act:
            break
        carry_act = new
    in_act = act[:nc] + carry_act + act[nc + ncar :]
    consts = vals[:nc]
    init = [
        v.lanes if a else v.lanes[:1] for v, a in zip(vals[nc : nc + ncar], carry_act, strict=True)
    ]
    xs = [v.lanes if v.active else v.lanes[:1] for v in vals[nc + ncar :]]

    def widen(lanes, a):
        return tuple(lanes) if a else (lanes[0],) * n

    def step(carry, x):
        args = [v.lanes for v in consts]
        args += [widen(c, a) for c, a in zip(carry, carry_act, strict=True)]
        args += [widen(xx, v.active) for xx, v in zip(x, vals[nc + ncar :], strict=True)]
        outs = _eval(rules, body.jaxpr, list(body.consts), args, in_act)
        new_carry = [
            o.lanes if a else o.lanes[:1] for o, a in zip(outs[:ncar], carry_act, strict=True)
        ]
        ys = [o.lanes for o in outs[ncar:]]
        return new_carry, ys

    carry, ys = lax.scan(
        step, init, xs, length=p["length"], reverse=p["reverse"], unroll=p["unroll"]
    )
    out = [_Value(a, widen(c, a)) for c, a in zip(carry, carry_act, strict=True)]
    out += [_Value(True, tuple(y)) for y in ys]
    return out
