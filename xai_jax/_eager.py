"""Repeated eager calls: the checks once, then one compiled program.

An eager call of a method checks and converts its arguments in Python, operation by operation
(arrays moved to the device, the model's output shape looked up, the target parsed): about
0.5 ms on the 2-core machines, as much as the model rows of a small method, and more right
after a large computation, when the interpreter runs on cold caches. `call` does that work on
the first call with a given function, options and argument shapes (the method's `prepare`
step) and compiles the whole method once; a later call with the same signature re-checks only
what depends on the values (`Plan.recheck`: NaN/inf in the inputs, the target's range) and
dispatches the compiled program. The numbers are those of the op-by-op path (the same code,
traced). A program with large convolutions on CPU is compiled a second way (`_cpu_options.jit`:
compiler options, thin convolutions rewritten) and kept where its first result agrees with the
default compile's (`_cpu_options.choose`); a later call with its signature met inside the
user's trace runs the default one (a nested `jit` carries no compiler options). A call
under the user's `jit`, `vmap` or `grad`, an unhashable function or option, or a method whose
`prepare` offers no plan (rows in several chunks, a NumPy black box) runs the method as it is.

The protocol: `prepare(fn, **arrays, **statics)` checks everything on concrete values (or
traces) and returns an object with `run()` (the result) and `plan()` (a `Plan`, or None where
a compiled whole is not the method's fast path). `arrays` are the arguments that may be traced
(inputs, baselines, targets, keys, forward kwargs: a pytree of arrays and Python numbers);
`statics` the options that shape the program (hashable, or NumPy/JAX arrays hashed by value,
such as a feature mask; lists and tuples are frozen item by item, a NamedTuple is hashed as it
is). Most `prepare`s return a `Prepared`: the result as a thunk and the plan.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from xai_jax import _cpu_options
from xai_jax._checks import _on_host, check_finite_input, check_scale, is_traced
from xai_jax._inputs import as_target

__all__ = ["MAX_PLANS", "Plan", "Prepared", "call", "value_checks"]


class Plan(NamedTuple):
    """What a later call with the same signature checks before the compiled program runs:
    `recheck(arrays)` raises as the first call's checks would have, on what depends on values."""

    recheck: Callable[[dict], None]
    # The program only runs the model forward (no gradient), and large matrix products make it
    # a candidate for the second compile too (`_cpu_options.choose`); False where it is, but
    # that compile measured slower (infidelity, feature permutation).
    forward_only: bool = False


def value_checks(
    out: jax.ShapeDtypeStruct | None,
    batch: int,
    finite: tuple[str, ...],
    scales: tuple[str, ...] = (),
    *,
    forward_only: bool = False,
) -> Plan:
    """The plan of a method whose value-dependent checks are NaN/inf in the arrays named in
    `finite` (`x`, `baselines`: as `as_float_array` checks them), the options named in `scales`
    (>= 0 and finite, `check_scale`), and the target's range on the model's output `out` for
    `batch` rows (`as_target`; None: a method without a target); `forward_only` as `Plan`'s."""

    classes = out.shape[1] if out is not None and len(out.shape) == 2 else None

    def recheck(arrays: dict) -> None:
        # Each value is first given a quick look that can only pass what the full check passes
        # (`_surely_finite`, `_surely_scale`, `_surely_in_range`); anything else gets the full
        # check, which raises with its message. Right after a computation the interpreter runs
        # on cold caches, and the full checks of a small call (a NumPy x, a float baseline, an
        # int target) took ~100 us there against ~17 us for the quick looks.
        for name in finite:
            for leaf in jax.tree.leaves(arrays.get(name)):
                if not _surely_finite(leaf):
                    check_finite_input(name, leaf)
        for name in scales:
            if not _surely_scale(arrays[name]):
                check_scale(name, arrays[name])
        if out is not None and not _surely_in_range(arrays["target"], classes, batch):
            as_target(arrays["target"], out, batch, device=False)

    return Plan(recheck, forward_only)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _surely_finite(leaf) -> bool:
    """True only where `check_finite_input` surely passes: a Python int (not checked), a
    Python float finite in float32, a float32 NumPy array or small CPU array without NaN/inf."""
    kind = type(leaf)
    if kind is int:
        return True
    if kind is float:
        return abs(leaf) <= _FLOAT32_MAX  # False for NaN and inf too
    if _host_view(leaf) and leaf.dtype == np.float32:
        return bool(np.isfinite(np.asarray(leaf)).all())
    return False


def _host_view(value) -> bool:
    """A NumPy array, or a jax.Array that `np.asarray` reads in place (a small CPU array)."""
    return type(value) is np.ndarray or (isinstance(value, jax.Array) and _on_host(value))


def _surely_scale(value) -> bool:
    """True only where `check_scale` surely passes: a Python float or int in [0, float32 max]."""
    return type(value) in (float, int) and 0 <= value <= _FLOAT32_MAX


def _surely_in_range(target, classes: int | None, batch: int) -> bool:
    """True only where `as_target` surely passes for an output `[batch, classes]`: a Python int,
    or an int array (as `_host_view`) of shape `()` or `(batch,)`, in `[0, classes)`."""
    if classes is None:
        return False
    if type(target) is int:
        return 0 <= target < classes
    if not (_host_view(target) and target.dtype.kind in "iu" and target.shape in ((), (batch,))):
        return False
    t = np.asarray(target)
    if t.dtype.kind == "i":  # as unsigned, negatives lie above any class count: one reduction
        t = t.view(t.dtype.str.replace("i", "u"))
    return bool(t.size > 0 and t.max() < classes)


class Prepared(NamedTuple):
    """What a method's `prepare` returns when its result is one thunk: `thunk()` computes it
    from the checked arguments, `checks` is the plan (None: no compiled whole)."""

    thunk: Callable[[], Any]
    checks: Plan | None

    def run(self) -> Any:
        return self.thunk()

    def plan(self) -> Plan | None:
        return self.checks


# `(plan, compiled program, whether it has CPU compiler options)` by signature (the key `call`
# builds), at most `MAX_PLANS` (the oldest dropped first).
MAX_PLANS = 512
_PLANS: dict = {}


class _Frozen:
    """An array option (a feature mask) as a hashable value: equal when shape, dtype and
    bytes are."""

    def __init__(self, value):
        self.array = np.asarray(value)
        self._key = (self.array.shape, self.array.dtype.str, self.array.tobytes())
        self._hash = hash(self._key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return isinstance(other, _Frozen) and self._key == other._key


def call(prepare: Callable, fn: Callable, arrays: dict, statics: dict) -> Any:
    """`prepare(fn, **arrays, **statics).run()`, compiled once per signature (module doc)."""
    frozen = _freeze_statics(statics)
    if frozen is None or not _hashable(fn):
        return prepare(fn, **arrays, **statics).run()
    leaves, treedef = jax.tree.flatten(arrays)
    # A leaf's type is part of its signature: a tracer never finds a plan (none is made for one).
    key = (prepare, fn, frozen, treedef, tuple(map(_signature, leaves)))
    entry = _PLANS.get(key)
    if entry is not None:
        plan, compiled, options = entry
        plan.recheck(arrays)
        if options and is_traced((), ambient=True):  # a nested jit carries no compiler options
            compiled = _compiled(prepare, fn, frozen, False)
        return compiled(arrays)
    # Concrete arguments met inside the user's trace take the planned path too: the compiled
    # whole is then a nested `jit` (what tracing the method inline would stage).
    if is_traced(arrays, ambient=False):
        return prepare(fn, **arrays, **statics).run()
    prepared = prepare(fn, **arrays, **statics)  # every check, on the concrete values
    plan = prepared.plan()
    if plan is None:
        return prepared.run()
    if len(_PLANS) >= MAX_PLANS:
        del _PLANS[next(iter(_PLANS))]
    plain = _compiled(prepare, fn, frozen, False)
    if is_traced((), ambient=True):  # inside the user's trace: a nested jit, without options
        _PLANS[key] = (plan, plain, False)
        return plain(arrays)
    # Large convolutions on CPU (large matrix products in a forward-only program): compiled the
    # second way (`_cpu_options.jit`) where that agrees.
    optioned = lambda: _compiled(prepare, fn, frozen, True)
    compiled, out = _cpu_options.choose(plain, optioned, arrays, forward_only=plan.forward_only)
    _PLANS[key] = (plan, compiled, compiled is not plain)
    return out


@functools.lru_cache(maxsize=MAX_PLANS)
def _compiled(prepare: Callable, fn: Callable, frozen: tuple, options: bool) -> Callable:
    statics = {name: _thaw(value) for name, value in frozen}
    run = lambda arrays: prepare(fn, **arrays, **statics).run()
    return _cpu_options.jit(run) if options else jax.jit(run)


def _freeze_statics(statics: dict) -> tuple | None:
    """`statics` as a hashable tuple, sorted by name (lists as tuples, arrays by value), None if
    it cannot be."""
    items = tuple(sorted(statics.items()))
    if _hashable(items):  # the common case, and the cheap one on cold caches
        return items
    try:
        frozen = tuple((name, _freeze(value)) for name, value in items)
        hash(frozen)
    except TypeError:
        return None
    return frozen


def _freeze(value):
    if isinstance(value, np.ndarray | jax.Array):
        if is_traced(value, ambient=False):
            raise TypeError("a traced option")  # not ours to freeze: the method raises
        return _Frozen(value)
    if type(value) in (list, tuple):  # not a NamedTuple: kept as it is (hashed as a whole)
        return tuple(_freeze(v) for v in value)
    return value  # a dict or another unhashable option: the caller's hash() fails


def _thaw(value):
    if isinstance(value, _Frozen):
        return value.array
    if type(value) is tuple:
        return tuple(_thaw(v) for v in value)
    return value


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _signature(leaf) -> tuple:
    """What the compiled program and the plan's checks depend on: the leaf's type (a tracer's
    is never planned), shape, dtype, weak type (a Python number: its type; its value is an
    argument)."""
    if isinstance(leaf, np.ndarray | np.generic | jax.Array):
        # the dtype itself (hashable), not its name: numpy's `str(dtype)` runs in Python
        return (type(leaf), leaf.shape, leaf.dtype, bool(getattr(leaf, "weak_type", False)))
    return (type(leaf),)
