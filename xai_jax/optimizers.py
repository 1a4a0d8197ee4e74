"""Sparse, box-constrained optimizers for counterfactual explanations, as optax transformations.

`aoexpgrad` is the adaptive optimistic exponentiated-gradient method of the MAX library
(`maxi.lib.computation_components.optimizer.AoExpGradOptimizer`, dailab/MAXi-XAI-lib), which
minimises `loss(y) + l1 * ||y||_1 + l2 / 2 * ||y||^2`. `elastic_net_fista` is the shrinkage and
momentum step of alibi's CEM (`alibi.explainers.cem.CEM`, SeldonIO/alibi), which minimises
`loss(y) + beta * ||y - y0||_1`. Both are pure `optax.GradientTransformation`s: the state is a
NamedTuple of arrays (a pytree), the hyper-parameters are held by `init` and `update` (pytrees
that compare by value: equal arguments, equal optimizers), and `update` returns
updates such that `optax.apply_updates(params, updates)` is the method's next iterate, so they
run under `jit` and compose with `optax.chain` (e.g. after `optax.clip` for alibi's gradient
clipping). The gradient passed to `update` must be the gradient at `params`, the point the
previous update moved to.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int, Real

from xai_jax._checks import check_bounds, check_positive, is_traced

__all__ = [
    "AoExpGradState",
    "ElasticNetFistaState",
    "aoexpgrad",
    "elastic_net_fista",
]

# Newton on `w + log w = a` converges quadratically from the starts below (relative error of the
# start <= 7%, see `_lambertw_exp`); 4 steps reach float64 round-off over the whole real line,
# float32 needs 3.
_NEWTON_STEPS = 4


def _lambertw_exp(a: Real[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
    """`W0(exp(a))` (the Wright omega function) for real `a`, without forming `exp(a)`.

    Solves `w + log(w) = a` by Newton's method, vectorised and in the dtype of `a`. Starts:
    `exp(a)` for `a <= -2` (where `W(e^a) = e^a (1 - e^a + ...)`), the Taylor series about
    `a = 1` (where `w = 1`) on `(-2, 1]`, and `a - log a + log(a) / a` above. Below
    `log(eps)`, `W(e^a)` rounds to `e^a`, which is returned as is (and keeps `log(w)` finite).
    Accurate to a few ulps times the condition number `|a| / (1 + w)` for every finite `a`,
    e.g. `a = 800` gives `w = 793.32...` where `exp(a)` overflows float64.

    Args:
        a: real array.

    Returns:
        `w > 0` with `w * exp(w) = exp(a)`, same shape and (floating) dtype as `a`.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax.optimizers import _lambertw_exp
        >>> [round(float(w), 3) for w in _lambertw_exp(jnp.array([0.0, 1.0, 15.0]))]
        [0.567, 1.0, 12.476]
    """
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    cut = float(np.log(jnp.finfo(a.dtype).eps))
    s = jnp.maximum(a, cut)  # the exp(a) branch is picked below `cut`; keep its lanes finite
    big = jnp.maximum(s, 1.0)
    log_big = jnp.log(big)
    m = s - 1.0
    taylor = 1.0 + m * (1 / 2 + m * (1 / 16 + m * (-1 / 192 + m * (-1 / 3072 + m * 13 / 61440))))
    w = jnp.where(s > 1.0, big - log_big + log_big / big, jnp.where(s > -2.0, taylor, jnp.exp(s)))
    for _ in range(_NEWTON_STEPS):
        # w/(1+w) rather than 1/(1+1/w): finite for every w > 0, no overflow for huge a
        w = w + (s - w - jnp.log(w)) * (w / (1.0 + w))
    return jnp.where(a > cut, w, jnp.exp(a))


# --------------------------------------------------------------------------------------------
# Shared boundary checks.


def _check_real(name: str, value) -> float | jax.Array:
    """A real scalar hyper-parameter: a Python float when concrete (finite, checked), a float
    scalar when traced (the caller's `jit` keeps it an operand: one program for every value)."""
    if is_traced(value):
        if jnp.ndim(value) != 0 or not jnp.issubdtype(jnp.result_type(value), jnp.floating):
            raise TypeError(f"{name} must be a real scalar, got a traced {jax.typeof(value)}")
        return value
    if isinstance(value, jax.Array | np.ndarray) and value.ndim > 0:
        raise ValueError(
            f"{name} must be a scalar (one weight for every entry of the params), got an array "
            f"of shape {value.shape}"
        )
    if isinstance(value, jax.Array) and value.ndim == 0 and not jnp.iscomplexobj(value):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _floating_params(name: str, params: optax.Params) -> optax.Params:
    """The params as arrays; integer ones are refused (their updates would round to 0)."""
    params = jax.tree.map(jnp.asarray, params)
    for leaf in jax.tree.leaves(params):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"{name} needs floating params, got {leaf.dtype} (integer iterates never move: "
                "cast them, e.g. x.astype(jnp.float32))"
            )
    return params


def _like(value: float | jax.Array, dtype) -> float | jax.Array:
    """A hyper-parameter in the iterate's dtype: a Python float stays weakly typed."""
    return value if isinstance(value, float) else jnp.asarray(value).astype(dtype)


def _clip(x: Array, lower, upper) -> Array:
    """`x` clipped leaf-wise; bounds are cast to `x`'s dtype and broadcast to its shape."""
    if lower is not None:
        x = jnp.maximum(x, jnp.broadcast_to(jnp.asarray(lower, x.dtype), x.shape))
    if upper is not None:
        x = jnp.minimum(x, jnp.broadcast_to(jnp.asarray(upper, x.dtype), x.shape))
    return x


class _ByValue:
    """Base of the optimizers' `init`/`update` callables: frozen dataclasses registered as
    pytrees (array fields are leaves, so a caller's `jit` takes them as operands), equal and
    hashed by value when every field is hashable (Python numbers, None, functions) and by
    identity otherwise (arrays, tracers). Not tuples: `jax.jit(opt.update)` needs a weakref."""

    def _values(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def _hashable(self) -> bool:
        try:
            hash(self._values())
        except TypeError:  # an array or a tracer field
            return False
        return True

    def __eq__(self, other):
        if self is other:
            return True
        if type(self) is not type(other):
            return NotImplemented
        if not (self._hashable() and other._hashable()):
            return False
        return self._values() == other._values()

    def __hash__(self) -> int:
        if not self._hashable():
            return object.__hash__(self)
        return hash((type(self), self._values()))


def _static():
    return dataclasses.field(metadata={"static": True})


def _by_value(cls):
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True, eq=False)(cls))


def _check_like(name: str, what: str, tree, like) -> None:
    """Raise unless `tree` has `like`'s tree structure and leaf shapes (static: under `jit`
    too); a gradient of another shape would otherwise broadcast into the iterate."""
    treedef, want = jax.tree.structure(tree), jax.tree.structure(like)
    if treedef != want:
        raise ValueError(
            f"{name}: {what} must have the params' tree structure {want}, got {treedef}"
        )
    shapes = [jnp.shape(leaf) for leaf in jax.tree.leaves(tree)]
    expected = [jnp.shape(leaf) for leaf in jax.tree.leaves(like)]
    if shapes != expected:
        raise ValueError(
            f"{name}: {what} must have the params' leaf shapes {expected}, got {shapes}"
        )


@_by_value
class _BoxedInit(_ByValue):
    """`init` of a box-constrained optimizer: floating params, bounds that broadcast to every
    leaf (checked here, before any step), then `state_fn(params)`."""

    name: str = _static()
    state_fn: Callable = _static()
    lower: ArrayLike | None
    upper: ArrayLike | None

    def __call__(self, params: optax.Params):
        params = _floating_params(self.name, params)
        for bound, value in (("lower", self.lower), ("upper", self.upper)):
            if value is None:
                continue
            shape = jnp.shape(value)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params):
                try:
                    fits = np.broadcast_shapes(shape, leaf.shape) == leaf.shape
                except ValueError:
                    fits = False
                if not fits:
                    where = jax.tree_util.keystr(path) or ""
                    raise ValueError(
                        f"{self.name}: {bound} of shape {shape} does not broadcast to the "
                        f"params{where} of shape {leaf.shape} (a bound is a scalar or an array "
                        "broadcastable to every leaf)"
                    )
        return self.state_fn(params)


# --------------------------------------------------------------------------------------------
# AO-ExpGrad (MAX).


class AoExpGradState(NamedTuple):
    """State of `aoexpgrad`; every field but `count` has the params' tree structure."""

    count: Int[Array, ""]  # steps taken, MAX's `t`
    x: optax.Params  # mirror-descent iterate, clipped to the bounds
    y: optax.Params  # weighted average of the x's: the point the gradient is taken at
    h: optax.Updates  # previous gradient, the optimistic hint
    lam: optax.Params  # per leaf: sum over steps of (t * ||g - h||_inf)^2, a scalar


def aoexpgrad(
    l1: ArrayLike = 0.5,
    l2: ArrayLike = 0.5,
    eta: ArrayLike = 1.0,
    *,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
) -> optax.GradientTransformation:
    """Adaptive optimistic exponentiated gradient (AO-ExpGrad), as in MAX's `AoExpGradOptimizer`.

    Minimises `loss(y) + l1 * ||y||_1 + l2 / 2 * ||y||^2` over the box `[lower, upper]` with
    exponentiated-gradient mirror steps on the elastic-net regulariser (so that entries become
    exactly 0), an optimistic hint (the previous gradient) and an adaptive step size. One
    `update` with the gradient `g` at `y` (= `params`) does, with `t` the step number (from 1),
    `B = t (t + 1) / 2`, `b0 = 1 / d`:

        lam += (t * ||g - h||_inf)^2;  alpha = eta * sqrt(lam) / sqrt(log(d + 1))  (1e-6 if 0)
        z = sign(x) log(|x| / b0 + 1) - (t g - t h + (t + 1) g) / alpha
        l2 == 0: v = b0 exp(max(|z| - l1 (t + 1) / alpha, 0)) - b0
        l2 > 0:  b = l2 (t + 1) / alpha;  c = min(l1 (t + 1) / alpha - |z|, 0)
                 v = W0(exp(-c + log(b0 b) + b0 b)) / b - b0
        x = clip(sign(z) v, lower, upper);  y = (t / B) x + ((B - t) / B) y;  h = g

    and returns `updates = y_new - params`. This is MAX's `AOExpGrad.update` step for step
    (MAX's first `step()` call only evaluates the starting point; its later calls are these
    updates), with two deliberate differences. `W0(exp(.))` is computed accurately for every
    argument: MAX switches to `log(a) - log(log(a)) + ...` for arguments `a >= 15`, which is the
    asymptote of `W(a)`, not of `W(exp(a))` (at 15 it gives 2.08 instead of 12.48), so MAX's
    iterates are wrong whenever that branch is hit; here they follow the algorithm. And for
    `l2 > 0` an entry whose soft-threshold is active (`c == 0`) is set to exactly 0, as the
    formula says, instead of MAX's round-off residue of `W(b0 b e^(b0 b)) / b - b0`.

    Pytrees are optimised leaf by leaf, each leaf as its own MAX problem: `d` is the leaf's size
    and `lam` is accumulated per leaf (MAX takes a single array, for which this is the same).

    Args:
        l1: L1 weight, >= 0.
        l2: L2 weight, >= 0 (`l2 / 2 * ||y||^2`, as MAX). `l2 == 0` uses the closed form.
        eta: step-size scale, > 0; larger means smaller steps.
            `l1`, `l2` and `eta` may be traced scalars (under the caller's `jit` one program
            serves every value); concrete ones are checked (finite, in range).
        lower: lower bound on the mirror-descent iterate `x`, hence on `y` (from the first step
            on, `y` is a weighted average of the `x`'s; the start gets weight 0): None, a scalar
            or an array broadcastable to every leaf. Traced values are not checked.
        upper: upper bound, as `lower`.

    Returns:
        An `optax.GradientTransformation` with state `AoExpGradState`. `update(grads, state,
        params)` expects the gradient of `loss` (without the regulariser) at `params`; with
        `params=None` it uses `state.y`, the point the previous update moved to.

    Equal arguments give equal optimizers (Python numbers compare by value; array bounds and
    traced values are leaves of the optimizer's pytree), so `contrastive_explanation(...,
    optimizer=aoexpgrad())` written inline reuses its compiled loop.

    Raises:
        ValueError: negative `l1` or `l2`, `eta <= 0`, a hyper-parameter that is an array of
            more than one entry, NaN bounds, or `lower > upper`; at `init`, a bound that does
            not broadcast to a leaf of the params; at `update`, grads (or params) whose tree
            structure or leaf shapes differ from those given to `init` (checked at trace time,
            under `jit` too).
        TypeError: non-real hyper-parameters.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from xai_jax.optimizers import aoexpgrad
        >>> loss = lambda w: jnp.sum((w - jnp.array([1.0, 0.05])) ** 2)
        >>> opt = aoexpgrad(l1=0.2, l2=0.0, lower=-2.0, upper=2.0)
        >>> w = jnp.array([0.5, 0.5])
        >>> state = opt.init(w)
        >>> for _ in range(300):
        ...     updates, state = opt.update(jax.grad(loss)(w), state, w)
        ...     w = optax.apply_updates(w, updates)
        >>> state.x.round(3)  # the minimiser is (0.9, 0): l1 zeroes the small target exactly
        Array([0.9, 0. ], dtype=float32)
        >>> bool(jnp.abs(w - jnp.array([0.9, 0.0])).max() < 1e-3)  # y averages the x's
        True
    """
    l1, l2, eta = _check_real("l1", l1), _check_real("l2", l2), _check_real("eta", eta)
    check_positive("l1", l1, allow_zero=True)
    check_positive("l2", l2, allow_zero=True)
    check_positive("eta", eta)
    check_bounds(lower, upper)
    # callables that compare by their arguments: two equal calls make equal optimizers, so a
    # caller's compiled program (contrastive_explanation's loop) is reused, not recompiled
    return optax.GradientTransformation(
        _BoxedInit("aoexpgrad", _aoexpgrad_state, lower, upper),
        _AoExpGradUpdate(l1, l2, eta, lower, upper),
    )


def _aoexpgrad_state(params: optax.Params) -> AoExpGradState:
    return AoExpGradState(
        count=jnp.zeros([], jnp.int32),
        x=params,
        y=params,
        h=jax.tree.map(jnp.zeros_like, params),
        lam=jax.tree.map(lambda p: jnp.zeros([], jnp.asarray(p).dtype), params),
    )


@_by_value
class _AoExpGradUpdate(_ByValue):
    """`aoexpgrad`'s update (see `_ByValue`)."""

    l1: float | jax.Array
    l2: float | jax.Array
    eta: float | jax.Array
    lower: ArrayLike | None
    upper: ArrayLike | None

    def leaf_step(self, count: Array, g: Array, x: Array, y: Array, h: Array, lam: Array):
        l1, l2, eta, lower, upper = self._values()
        if x.size == 0:
            return x, y, lam
        dtype = x.dtype
        g = g.astype(dtype)
        t = count.astype(dtype)
        big_b = t * (t + 1.0) / 2.0  # MAX accumulates B += t from B = 0: the same exact sum
        d = x.size
        b0 = 1.0 / d
        lam = lam + (t * jnp.max(jnp.abs(g - h))) ** 2
        alpha = _like(eta, dtype) * jnp.sqrt(lam) / math.sqrt(math.log(d + 1))
        # MAX adds 1e-6 only when alpha is exactly 0 (a zero first gradient)
        alpha = jnp.where(alpha == 0.0, jnp.asarray(1e-6, dtype), alpha)
        z = jnp.sign(x) * jnp.log1p(jnp.abs(x) / b0) - (t * g - t * h + (t + 1.0) * g) / alpha
        l1_ = _like(l1, dtype)
        lasso = lambda: b0 * jnp.exp(jnp.maximum(jnp.abs(z) - l1_ * (t + 1.0) / alpha, 0.0)) - b0

        def elastic(l2):
            bb = l2 * (t + 1.0) / alpha
            c = jnp.minimum(l1_ * (t + 1.0) / alpha - jnp.abs(z), 0.0)
            abc = -c + jnp.log(b0 * bb) + b0 * bb
            # v >= 0 in exact arithmetic (W is increasing and W(e^(log(ab)+ab)) = ab): keep
            # round-off from flipping the sign, and make the thresholded entries exact zeros
            return jnp.where(c < 0.0, jnp.maximum(_lambertw_exp(abc) / bb - b0, 0.0), 0.0)

        if not is_traced(l2):
            v = lasso() if l2 == 0.0 else elastic(l2)
        else:  # both branches, the zero one fed a harmless l2 so that neither makes NaN
            zero = l2 == 0.0
            v = jnp.where(zero, lasso(), elastic(jnp.where(zero, 1.0, l2).astype(dtype)))
        # where, not sign(z) * v: thresholded entries are +0, not -0; a NaN gradient (or a
        # NaN `lam` after one) makes NaN entries, never a thresholded finite 0
        x = jnp.where(jnp.isnan(z), jnp.nan, jnp.where(v > 0.0, jnp.sign(z) * v, 0.0))
        x = _clip(x, lower, upper)
        y = (t / big_b) * x + ((big_b - t) / big_b) * y
        return x, y, lam

    def __call__(
        self, updates: optax.Updates, state: AoExpGradState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, AoExpGradState]:
        treedef = jax.tree.structure(state.x)
        _check_like("aoexpgrad", "updates (the gradient)", updates, state.x)
        if params is not None:
            _check_like("aoexpgrad", "params", params, state.x)
        count = optax.safe_int32_increment(state.count)
        leaves = [
            treedef.flatten_up_to(tree) for tree in (updates, state.x, state.y, state.h, state.lam)
        ]
        out = [self.leaf_step(count, *args) for args in zip(*leaves, strict=True)]
        new_x = treedef.unflatten([o[0] for o in out])
        new_y = treedef.unflatten([o[1] for o in out])
        new_lam = treedef.unflatten([o[2] for o in out])
        new_h = jax.tree.map(lambda g, p: g.astype(jnp.asarray(p).dtype), updates, state.x)
        start = state.y if params is None else params
        new_updates = jax.tree.map(lambda n, p: (n - p).astype(jnp.asarray(p).dtype), new_y, start)
        return new_updates, AoExpGradState(count, new_x, new_y, new_h, new_lam)


# --------------------------------------------------------------------------------------------
# FISTA with elastic-net shrinkage (alibi's CEM).


class ElasticNetFistaState(NamedTuple):
    """State of `elastic_net_fista`; `adv` and `orig` have the params' tree structure."""

    count: Int[Array, ""]  # steps taken, k (from 0); the learning-rate schedule's argument
    adv: optax.Params  # last shrunk iterate (alibi's `adv`, the explanation)
    orig: optax.Params  # centre of the L1 term: the params seen by `init` (alibi's `orig`)


def elastic_net_fista(
    learning_rate: ArrayLike | optax.Schedule = 1e-2,
    beta: ArrayLike = 0.1,
    *,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
) -> optax.GradientTransformation:
    """FISTA with shrinkage towards the starting point, the optimiser of alibi's CEM.

    A proximal-gradient method for `loss(adv) + (beta / lr) * ||adv - orig||_1` over the box
    `[lower, upper]`, `orig` being the params given to `init`: as in alibi (and the CEM paper's
    `S_beta`), the shrinkage threshold is `beta` itself, not `lr * beta`, so with a constant
    learning rate the fixed points minimise that objective, and with alibi's decaying learning
    rate the effective L1 weight grows as the rate decays. With `y` the current params (alibi's
    `adv_s`), `g` the gradient of `loss` at `y` and `k` the number of steps taken before this
    one (0 at the first), one `update` does:

        z = y - lr(k) * g
        adv_new = orig               where |z - orig| <= beta
                  z - beta           where z - orig > beta
                  z + beta           where z - orig < -beta,  then clipped to [lower, upper]
        y_new = adv_new + (k + 1) / (k + 4) * (adv_new - adv)

    and returns `updates = y_new - params`; `state.adv` holds `adv_new`, the iterate to report.
    The momentum coefficient is alibi's: its `global_step` is incremented by the gradient step
    before the momentum reads it, so the first step uses 1/4 (FISTA's `k / (k + 3)` with `k`
    counted from 1), while the learning rate is read before the increment. alibi's
    `lr0 * (1 - k / max_iter) ** 0.5` is
    `optax.polynomial_schedule(lr0, 0.0, power=0.5, transition_steps=max_iter)`.

    Included: the gradient step, the element-wise shrinkage, the box and the momentum, as in
    `CEM.attack`. Not included: alibi's projection of `adv` and `y` for the pertinent positive /
    negative modes (keeping `|x - no_info|` below / above `|orig - no_info|`), which is specific
    to CEM's objective; its clipping of gradients to `(-100, 100)` (chain `optax.clip(100.0)`
    before this); and the L2 and attack terms of CEM's loss, which belong in `loss`. alibi
    clips a shrunk entry only on the side it moved to (`min(z - beta, upper)`,
    `max(z + beta, lower)`) and leaves `y_new` unclipped; the full clip here is the same when
    `orig` is inside the box, and `y_new` is not clipped either.

    Args:
        learning_rate: step size, a float > 0 or an `optax.Schedule` of the step count `k`.
        beta: L1 weight (the shrinkage threshold), > 0. `beta` and a float `learning_rate`
            may be traced scalars; concrete ones are checked (finite, > 0).
        lower: lower bound on `adv`: None, a scalar or an array broadcastable to every leaf.
        upper: upper bound, as `lower`.

    Returns:
        An `optax.GradientTransformation` with state `ElasticNetFistaState`. `update(grads,
        state, params)` needs `params`, the point the gradient was taken at.

    Equal arguments give equal optimizers, as for `aoexpgrad` (a schedule compares by
    identity: build it once).

    Raises:
        ValueError: `beta <= 0`, a float `learning_rate <= 0`, a hyper-parameter that is an
            array of more than one entry, NaN bounds or `lower > upper`; at `init`, a bound
            that does not broadcast to a leaf of the params; at `update`, `params=None`, grads
            or params whose tree structure or leaf shapes differ from those given to `init`, or
            a schedule that does not return a scalar.
        TypeError: non-real hyper-parameters.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from xai_jax.optimizers import elastic_net_fista
        >>> loss = lambda w: jnp.sum((w - jnp.array([1.0, 0.05])) ** 2)
        >>> opt = elastic_net_fista(0.1, beta=0.02, lower=0.0, upper=2.0)
        >>> w = jnp.zeros(2)
        >>> state = opt.init(w)
        >>> for _ in range(100):
        ...     updates, state = opt.update(jax.grad(loss)(w), state, w)
        ...     w = optax.apply_updates(w, updates)
        >>> state.adv.round(2)  # argmin of loss + (0.02 / 0.1) ||w||_1 is (0.9, 0)
        Array([0.9, 0. ], dtype=float32)
    """
    if not callable(learning_rate):
        learning_rate = _check_real("learning_rate", learning_rate)
        check_positive("learning_rate", learning_rate)
    beta = _check_real("beta", beta)
    check_positive("beta", beta)
    check_bounds(lower, upper)
    return optax.GradientTransformation(
        _BoxedInit("elastic_net_fista", _fista_state, lower, upper),
        _FistaUpdate(learning_rate, beta, lower, upper),
    )


def _fista_state(params: optax.Params) -> ElasticNetFistaState:
    return ElasticNetFistaState(count=jnp.zeros([], jnp.int32), adv=params, orig=params)


@_by_value
class _FistaUpdate(_ByValue):
    """`elastic_net_fista`'s update (see `_ByValue`)."""

    learning_rate: float | jax.Array | Callable  # a constant or an optax schedule
    beta: float | jax.Array
    lower: ArrayLike | None
    upper: ArrayLike | None

    def leaf_step(self, lr, k, g: Array, y: Array, adv: Array, orig: Array):
        dtype = jnp.asarray(y).dtype
        lr = jnp.asarray(lr).astype(dtype)
        z = y - lr * g.astype(dtype)
        diff = z - orig
        b = _like(self.beta, dtype)
        shrunk = jnp.where(diff > b, z - b, jnp.where(diff < -b, z + b, orig))
        adv_new = _clip(shrunk, self.lower, self.upper)
        k = k.astype(dtype)
        y_new = adv_new + ((k + 1.0) / (k + 4.0)) * (adv_new - adv)
        return (y_new - y).astype(dtype), adv_new

    def __call__(
        self,
        updates: optax.Updates,
        state: ElasticNetFistaState,
        params: optax.Params | None = None,
    ) -> tuple[optax.Updates, ElasticNetFistaState]:
        if params is None:
            raise ValueError(
                "elastic_net_fista needs params in update(grads, state, params): the gradient "
                "step starts from them"
            )
        _check_like("elastic_net_fista", "updates (the gradient)", updates, state.adv)
        _check_like("elastic_net_fista", "params", params, state.adv)
        if callable(self.learning_rate):
            lr = self.learning_rate(state.count)
            if jnp.ndim(lr) != 0:
                raise ValueError(
                    "elastic_net_fista: the learning_rate schedule must return a scalar, got "
                    f"shape {jnp.shape(lr)}"
                )
        else:
            lr = self.learning_rate
        treedef = jax.tree.structure(state.adv)
        leaves = [treedef.flatten_up_to(tree) for tree in (updates, params, state.adv, state.orig)]
        out = [self.leaf_step(lr, state.count, *args) for args in zip(*leaves, strict=True)]
        new_updates = treedef.unflatten([o[0] for o in out])
        new_adv = treedef.unflatten([o[1] for o in out])
        count = optax.safe_int32_increment(state.count)
        return new_updates, ElasticNetFistaState(count, new_adv, state.orig)
