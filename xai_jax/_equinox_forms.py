"""How to call an equinox model: one example at a time (equinox's convention) mapped over a
batch, for `xai_jax.equinox.split` and the wrappers.

A wrapper takes an equinox model as the module (it takes one example) or as `(module, state)`
for a model made with `eqx.nn.make_with_state`, called as `module(x, state)` in inference mode
(the new state is discarded; build it with `inference=True`). Keyword arguments that are arrays
with at least one axis are per-example (batch axis first) and mapped with the rows; any other
(a flag, a key) goes to every example as it is. equinox is never imported here: a value made
with equinox has already imported it.
"""

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.tree_util import Partial

FORMS = "an equinox Module (taking one example) or (equinox Module, state)"


class EquinoxModel(NamedTuple):
    module: Any
    state: Any


def _eqx():
    return sys.modules.get("equinox")


def is_module(value) -> bool:
    eqx = _eqx()
    return eqx is not None and isinstance(value, eqx.Module)


def is_model(value) -> bool:
    """True for an equinox module, or a tuple starting with one."""
    if is_module(value):
        return True
    return isinstance(value, tuple | list) and len(value) > 0 and is_module(value[0])


def as_model(value, name: str) -> EquinoxModel:
    """The equinox model of a wrapper's `name` argument (one of `FORMS`), or a `TypeError`."""
    if is_module(value):
        return EquinoxModel(value, None)
    if len(value) != 2 or not isinstance(value[1], _eqx().nn.State):
        raise TypeError(
            f"{name} is a {type(value).__name__} of {len(value)} items starting with an "
            f"equinox {type(value[0]).__name__}; an equinox model comes as the module, or as "
            "(module, state) with the eqx.nn.State of eqx.nn.make_with_state"
        )
    return EquinoxModel(value[0], value[1])


def bind(model: EquinoxModel) -> Partial:
    """`fn(x, **kwargs)` on a batch: the model mapped over its rows."""
    return Partial(_batched_call, model.module, model.state)


def _batched_call(module, state, x, **kwargs):
    return over_batch(Partial(call_one, module, state), "x", expand=False)(x, **kwargs)


def call_one(module, state, x, **kwargs):
    """The model on one example: `module(x)`, or `module(x, state)[0]` with state."""
    if state is None:
        return module(x, **kwargs)
    return module(x, state, **kwargs)[0]  # inference: the new state is discarded


def over_batch(fn: Callable, argument: str, *, expand: bool = True) -> Callable:
    """`fn` mapped over the rows of a batch: `fn` takes one example (`expand=False`) or a batch
    of one (`expand=True`, the layer split's per-example pair)."""

    def batched(value, **kwargs):
        leaves = jax.tree.leaves(value)
        if not leaves or any(np.ndim(a) == 0 for a in leaves):
            raise ValueError(
                f"{argument} must be an array (or pytree of arrays), each with a leading batch "
                f"axis, got shapes {[np.shape(a) for a in leaves]}"
            )
        mapped = {k: v for k, v in kwargs.items() if _per_example(v)}
        fixed = {k: v for k, v in kwargs.items() if k not in mapped}

        def row(v, row_kwargs):
            if not expand:
                return fn(v, **row_kwargs, **fixed)
            return drop_axis(fn(add_axis(v), **row_kwargs, **fixed))

        return jax.vmap(row)(value, mapped)

    return batched


def add_axis(tree):
    return jax.tree.map(lambda a: a[None], tree)


def drop_axis(tree):
    return jax.tree.map(lambda a: a[0], tree)


def _per_example(value) -> bool:
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(
        isinstance(a, jax.Array | np.ndarray) and np.ndim(a) > 0 for a in leaves
    )
