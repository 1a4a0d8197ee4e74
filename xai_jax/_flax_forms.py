"""How to call a flax model given to a wrapper: a linen `(module, variables)` pair or an nnx
module, turned into a plain `fn(x, **kwargs)`.

The bound functions are `jax.tree_util.Partial`s whose arrays (the variables, the nnx state)
are arguments of compiled callers, not constants baked into them. Both run in inference mode:
linen's variables are read, never updated (a linen model is built with its inference flags,
`nn.BatchNorm(use_running_average=True)`); an nnx model is snapshotted with `nnx.split` and
run on a fresh `nnx.merge` copy each call (call `model.eval()` first), so the user's model is
never mutated. flax is never imported here: a value made with flax has already imported it.
"""

import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

from jax.tree_util import Partial

FORMS = "(linen nn.Module, variables) or an nnx.Module"


class FlaxModel(NamedTuple):
    """`module` and `variables` for linen, `module` alone (`variables` None) for nnx."""

    module: Any
    variables: Any


def _linen():
    return sys.modules.get("flax.linen")


def _nnx():
    return sys.modules.get("flax.nnx")


def is_linen_module(value) -> bool:
    linen = _linen()
    return linen is not None and isinstance(value, linen.Module)


def is_nnx_module(value) -> bool:
    nnx = _nnx()
    return nnx is not None and isinstance(value, nnx.Module)


def is_model(value) -> bool:
    """True for an nnx module, a bare linen module (`as_model` reports it) or a tuple starting
    with a linen module."""
    if is_nnx_module(value) or is_linen_module(value):
        return True
    return isinstance(value, tuple | list) and len(value) > 0 and is_linen_module(value[0])


def as_model(value, name: str) -> FlaxModel:
    """The flax model of a wrapper's `name` argument (one of `FORMS`), or a `TypeError`."""
    if is_nnx_module(value):
        return FlaxModel(value, None)
    if is_linen_module(value):
        raise TypeError(
            f"{name} is a bare linen {type(value).__name__}: pass it with its variables, as "
            "(module, variables)"
        )
    if len(value) != 2 or not isinstance(value[1], Mapping):
        raise TypeError(
            f"{name} is a {type(value).__name__} of {len(value)} items starting with a linen "
            f"{type(value[0]).__name__}; a linen model comes as (module, variables), the "
            "variables the mapping from module.init"
        )
    return FlaxModel(value[0], value[1])


def bind(model: FlaxModel) -> Partial:
    """`fn(x, **kwargs)`: the model's output on `x`."""
    if model.variables is not None:
        return Partial(_linen_call, model.module, model.variables)
    graphdef, state = _nnx().split(model.module)
    return Partial(_nnx_call, graphdef, state)


def _linen_call(module, variables, x, **kwargs):
    return module.apply(variables, x, **kwargs)


def _nnx_call(graphdef, state, x, **kwargs):
    return _nnx().merge(graphdef, state)(x, **kwargs)
