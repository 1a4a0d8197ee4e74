"""How to call a dm-haiku model: every form it comes in, turned into a plain `fn(x, **kwargs)`.

The one place that decides it, for `xai_jax.haiku.split` and the wrappers. Forms:

- `hk.transform(f)`: `apply(params, rng, x)`;
- `hk.without_apply_rng(hk.transform(f))`: `apply(params, x)` (no rng may be given);
- `hk.transform_with_state(f)`: `apply(params, state, rng, x) -> (out, new_state)`, and its
  `hk.without_apply_rng` form `apply(params, state, x)`. Called in inference mode: the state
  is an input, never updated; the new state `apply` returns is discarded. Pass the model's
  own flags (`is_training=False` for `hk.BatchNorm`) as keyword arguments.

The wrappers take a model as a tuple: `(transformed, params)` or `(transformed, params, rng)`
for an `hk.Transformed`, `(transformed, params, state)` or `(transformed, params, state, rng)`
for an `hk.TransformedWithState`. haiku is never imported here until a haiku model is bound
(a model made with haiku has already imported it, so when haiku is not loaded, a value cannot
be one).
"""

import sys
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from jax.tree_util import Partial

FORMS = (
    "(hk.Transformed, params), (hk.Transformed, params, rng), "
    "(hk.TransformedWithState, params, state) or (hk.TransformedWithState, params, state, rng)"
)


class HaikuModel(NamedTuple):
    """A haiku model with what its `apply` needs (`state` None for an `hk.Transformed`)."""

    transformed: Any
    params: Any
    state: Any
    rng: Any


def _haiku():
    return sys.modules.get("haiku")


def is_transformed(value) -> bool:
    """True for an `hk.Transformed` or `hk.TransformedWithState` (haiku is not imported)."""
    hk = _haiku()
    return hk is not None and isinstance(value, hk.Transformed | hk.TransformedWithState)


def is_model(value) -> bool:
    """True for a tuple whose first item is a transformed haiku model (one of `FORMS`, or a
    malformed attempt at one that `as_model` reports), or a bare transformed model."""
    if is_transformed(value):
        return True
    return isinstance(value, tuple | list) and len(value) > 0 and is_transformed(value[0])


def as_model(value, name: str) -> HaikuModel:
    """The haiku model of a wrapper's `name` argument (one of `FORMS`), or a `TypeError`."""
    hk = _haiku()
    if is_transformed(value):
        raise TypeError(
            f"{name} is a bare {type(value).__name__}: pass it with its parameters, as {FORMS}"
        )
    transformed, *rest = value
    stateful = isinstance(transformed, hk.TransformedWithState)
    count = len(rest) + 1
    if (stateful and count not in (3, 4)) or (not stateful and count not in (2, 3)):
        need = "(transformed, params, state[, rng])" if stateful else "(transformed, params[, rng])"
        raise TypeError(
            f"{name} is a {type(value).__name__} of {count} items starting with an "
            f"{type(transformed).__name__}; an {type(transformed).__name__} comes as {need}"
            + ("; its state is required (inference mode)" if stateful and count == 2 else "")
        )
    if stateful:
        params, state, *rng = rest
    else:
        params, *rng = rest
        state = None
    model = HaikuModel(transformed, params, state, rng[0] if rng else None)
    bind(*model)  # the form's checks now, not at the first call
    return model


def bind(transformed, params, state=None, rng=None) -> Callable[..., Any]:
    """`fn(x, **kwargs)`: the model's output on `x`, its parameters (and state, rng) bound.

    The bound function is a `jax.tree_util.Partial`, so `params`, `state` and `rng` are
    arguments of compiled callers, not constants baked into them.

    Raises:
        TypeError: `transformed` is not an `hk.Transformed`, or is an `hk.TransformedWithState`
            without `state`; `rng` that is not a key.
        ValueError: `state` given to an `hk.Transformed`, `rng` given to an
            `hk.without_apply_rng` model.
    """
    import haiku as hk  # a haiku model is being bound, so haiku is loaded already

    stateful = isinstance(transformed, hk.TransformedWithState)
    if not isinstance(transformed, hk.Transformed) and not stateful:
        raise TypeError(
            "transformed must be an hk.Transformed (from hk.transform), or an "
            "hk.TransformedWithState (from hk.transform_with_state) with its state, got "
            f"{type(transformed).__name__}"
        )
    if stateful and state is None:
        raise TypeError(
            "transformed must be an hk.Transformed, or an hk.TransformedWithState given with "
            "its state (inference mode: the state is used, never updated), got an "
            "hk.TransformedWithState without state"
        )
    if not stateful and state is not None:
        raise ValueError(
            "state must be None for an hk.Transformed (from hk.transform); a model with state "
            "comes from hk.transform_with_state"
        )
    if rng is not None and isinstance(rng, Mapping | str):
        raise TypeError(
            f"rng must be None or a PRNG key, got {type(rng).__name__}"
            + ("; a model with state comes from hk.transform_with_state" if not stateful else "")
        )
    # hk.without_apply_rng returns a model of the same type whose apply takes no rng; its
    # signature copies the model function's, so the wrapper's name is the reliable sign.
    without_rng = getattr(transformed.apply, "__qualname__", "").startswith("without_apply_rng.")
    if without_rng and rng is not None:
        raise ValueError("rng must be None for a model wrapped in hk.without_apply_rng")
    if stateful:
        if without_rng:
            return Partial(_stateful_without_rng, transformed.apply, params, state)
        return Partial(_stateful, transformed.apply, params, state, rng)
    if without_rng:
        return Partial(_without_rng, transformed.apply, params)
    return Partial(_with_rng, transformed.apply, params, rng)


def _with_rng(apply: Callable, params, rng, x, **kwargs):
    return apply(params, rng, x, **kwargs)


def _without_rng(apply: Callable, params, x, **kwargs):
    return apply(params, x, **kwargs)


def _stateful(apply: Callable, params, state, rng, x, **kwargs):
    return apply(params, state, rng, x, **kwargs)[0]  # inference: the new state is discarded


def _stateful_without_rng(apply: Callable, params, state, x, **kwargs):
    return apply(params, state, x, **kwargs)[0]
