"""The layer split, framework-free: `(layer_fn, head_fn)` from a model run whose layer can be
intercepted, with `model(x) == head_fn(layer_fn(x))`.

A model-library front end (`xai_jax.haiku.split`; flax and equinox ones to come) supplies only
the *interception*, a callable `intercept(x, kwargs, on_layer)`; `split_at(intercept, name,
attribute_to_inputs=...)` builds the pair, records the model input's structure and runs the
liveness check that rejects models bypassing the layer. The front end checks its own arguments
(model form, parameters, layer path) and names the layer; nothing here knows a model library.
`checked_split(layer_fn, head_fn, x, kwargs)` is the check every layer method runs on the pair
it is given (whatever made it): rows of `layer_fn` follow the input's, `head_fn` returns one
floating row per layer row.

Contract of `intercept(x, kwargs, on_layer)`:

- It runs the model on `x` (the model input: an array or pytree of arrays, batch axis first)
  with the keyword arguments `kwargs` (a dict: `model(x, **kwargs)`) and returns the model's
  output.
- At the *first* call of the split layer during that run it does not run the layer itself: it
  calls `on_layer(call, args, call_kwargs)`, with `args` the tuple of the layer's positional
  inputs, `call_kwargs` the dict of its keyword arguments and `call(*args, **call_kwargs)` the
  layer (bound to its parameters, running as it would in the model), and uses what `on_layer`
  returns as the layer's output for the rest of the run. Later calls of the same layer (weight
  sharing) run unchanged. `on_layer` may call `call` once, on `args` or on replacements of the
  same structure, or not at all.
- It lets an exception raised by `on_layer` propagate (the core stops the run early with one;
  haiku's `hk.intercept_methods` and flax's `nn.intercept_methods` do).
- When the layer is not called during the run, it raises its own `ValueError` naming the layer
  and listing the layers that were called; if it returns without having called `on_layer`, the
  core raises a generic one instead.
- It is a pure function of `(x, kwargs)`, traceable under `jax.jit`, `jax.vmap` and `jax.grad`:
  the layer's call must happen in the same trace as the run (not inside a library's own
  `vmap`/`scan`/`remat`/`cond`, whose values cannot leave their trace), and the layer's inputs
  and outputs have the model's batch axis first.

`head_fn` can only run the rest of the model by running it from the start, which needs a model
input. So every `layer_fn` call records the structure of `x` (pytree, shapes without the batch
axis, dtypes) and `head_fn` runs the model on zeros of that structure with `h`'s batch size,
replacing the layer's output (or inputs) with `h`. The part before the layer is then dead code,
which `jax.jit` removes. That is only right when the output depends on `x` through the layer
alone, so the first `head_fn` call per input structure, shape of `h` and keyword arguments runs
a backward liveness pass over the jaxpr of `(h, x) -> output` and raises if the output depends
on `x` other than through `h` (a residual or skip connection past the layer, or a second path
from the input). An equation with sub-jaxprs counts as using all its inputs, so no dependence
is missed (a model passing both values into one inner `jit`/`scan` may, rarely, be rejected).
In outputs mode the layer still runs on the zeros' activations (dead code under `jit`), so that
whatever it draws from a random-key sequence stays in step with the original model.
"""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Var

from xai_jax import _blackbox, _paths

# `intercept(x, kwargs, on_layer) -> output`, with `on_layer(call, args, call_kwargs) -> value`
Intercept = Callable[[Any, dict, Callable[[Callable, tuple, dict], Any]], Any]


class _Stop(Exception):
    """Carries the layer's result out of the run, so the rest of the model never runs."""

    def __init__(self, value):
        super().__init__()
        self.value = value


class _Record:
    """State shared by one `layer_fn`/`head_fn` pair.

    `inputs` is the structure of the latest model input given to `layer_fn`: `(treedef, ((shape
    without the batch axis, dtype), ...))`. `checked` holds the keys of the `head_fn` calls whose
    bypass check passed, so that each is done once. Neither changes what the functions return.
    """

    def __init__(self):
        self.inputs: tuple | None = None
        self.checked: set = set()


def split_at(
    intercept: Intercept, name: str, *, attribute_to_inputs: bool = False
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """`(layer_fn, head_fn)` for the layer that `intercept` intercepts (contract above).

    `layer_fn(x, **kwargs)` returns the layer's output at its first call in `model(x,
    **kwargs)` (with `attribute_to_inputs`, its positional inputs: the array when there is one,
    else a tuple), and the rest of the model does not run. `head_fn(h, **kwargs)` is the model's
    output when that call returns `h` (or is called on `h`); its batch size may differ from the
    one `layer_fn` saw. `layer_fn` must be called (or traced) before `head_fn`. `name` names the
    layer in error messages.
    """
    if not isinstance(attribute_to_inputs, bool):
        raise TypeError(
            f"attribute_to_inputs must be a bool, got {type(attribute_to_inputs).__name__}"
        )
    record = _Record()

    def stop_at_layer(call, args, call_kwargs):
        if attribute_to_inputs:
            raise _Stop(_positional_inputs(name, args))
        raise _Stop(call(*args, **call_kwargs))

    def layer_fn(x, **kwargs):
        inputs = _input_structure(x)
        try:
            intercept(x, kwargs, stop_at_layer)
        except _Stop as stop:
            record.inputs = inputs
            return stop.value
        raise _not_intercepted(name)

    def run_head(h, x, kwargs):
        replaced = []

        def replace_layer(call, args, call_kwargs):
            replaced.append(True)
            if attribute_to_inputs:
                _positional_inputs(name, args)
                new_args = (h,) if len(args) == 1 else _as_tuple(h, len(args))
                _check_like(new_args, args, "positional inputs")
                return call(*new_args, **call_kwargs)
            out = call(*args, **call_kwargs)  # keeps the random-key sequence (see above)
            _check_like(h, out, "output")
            return h

        out = intercept(x, kwargs, replace_layer)
        if not replaced:
            raise _not_intercepted(name)
        return out

    def head_fn(h, **kwargs):
        if record.inputs is None:
            raise ValueError(
                "head_fn needs the structure of the model input, which layer_fn records: call "
                "(or trace) layer_fn on an input before head_fn"
            )
        leaves = jax.tree.leaves(h)
        if not leaves or jnp.ndim(leaves[0]) == 0:
            raise ValueError("h must be an array (or pytree of arrays) with a leading batch axis")
        batch = jnp.shape(leaves[0])[0]
        _check_not_bypassed(run_head, record, name, h, kwargs)
        return run_head(h, _like_input(record.inputs, batch), kwargs)

    return layer_fn, head_fn


def _not_intercepted(name: str) -> ValueError:
    return ValueError(f"the layer {name!r} was not called during the forward pass")


def _positional_inputs(name: str, args: tuple):
    if not args:
        raise ValueError(
            f"attribute_to_inputs=True, but module {name!r} was called with no positional inputs"
        )
    return args[0] if len(args) == 1 else tuple(args)


def _as_tuple(h, count: int) -> tuple:
    if not isinstance(h, tuple | list) or len(h) != count:
        raise ValueError(
            f"h must be a tuple of the module's {count} positional inputs, got "
            f"{type(h).__name__}" + (f" of length {len(h)}" if isinstance(h, tuple | list) else "")
        )
    return tuple(h)


def _structure(tree, *, drop_batch: bool) -> tuple:
    """Hashable pytree structure: treedef and each leaf's shape (less the batch axis) and dtype."""
    leaves, treedef = jax.tree.flatten(tree)
    start = 1 if drop_batch else 0
    return treedef, tuple((jnp.shape(a)[start:], jnp.result_type(a)) for a in leaves)


def _input_structure(x) -> tuple:
    leaves = jax.tree.leaves(x)
    if not leaves or any(jnp.ndim(a) == 0 for a in leaves):
        raise ValueError(
            "x must be an array (or pytree of arrays), each with a leading batch axis, got "
            f"shapes {[jnp.shape(a) for a in leaves]}"
        )
    return _structure(x, drop_batch=True)


def _like_input(structure: tuple, batch: int, make: Callable = jnp.zeros):
    """A model input of the recorded structure with `batch` rows, from `make(shape, dtype)`."""
    treedef, specs = structure
    return jax.tree.unflatten(treedef, [make((batch, *shape), dtype) for shape, dtype in specs])


def _check_like(h, expected, what: str) -> None:
    """Raise unless `h` has the structure and per-example shapes of the layer's `expected`."""
    got, want = _structure(h, drop_batch=True), _structure(expected, drop_batch=True)
    if got[0] != want[0] or [s for s, _ in got[1]] != [s for s, _ in want[1]]:
        raise ValueError(
            f"h must match the module's {what} after the batch axis: expected {want[0]} with "
            f"per-example shapes {[s for s, _ in want[1]]}, got {got[0]} with "
            f"{[s for s, _ in got[1]]}"
        )


def _check_not_bypassed(
    run_head: Callable, record: _Record, name: str, h, kwargs: Mapping[str, Any]
) -> None:
    """Raise if the model output depends on its input other than through the layer.

    Backward liveness over the jaxpr of `(h, x) -> output`: a variable is live when an equation
    that uses it defines a live one; any live input variable of `x` is a dependence that the
    zeros fed by `head_fn` would silently drop.
    """
    try:
        kwargs_key = tuple(sorted(kwargs.items()))
        hash(kwargs_key)
    except TypeError:  # arrays among the keyword arguments: check on every call
        kwargs_key = None
    key = (record.inputs, _structure(h, drop_batch=True), kwargs_key)
    if kwargs_key is not None and key in record.checked:
        return

    batch = jnp.shape(jax.tree.leaves(h)[0])[0]
    h_spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), h)
    x_spec = _like_input(record.inputs, batch, jax.ShapeDtypeStruct)
    jaxpr = jax.make_jaxpr(lambda h_, x_: run_head(h_, x_, kwargs))(h_spec, x_spec).jaxpr
    live = {v for v in jaxpr.outvars if isinstance(v, Var)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in live for v in eqn.outvars):
            live.update(v for v in eqn.invars if isinstance(v, Var))
    x_vars = jaxpr.invars[len(jax.tree.leaves(h_spec)) :]
    if any(v in live for v in x_vars):
        raise ValueError(
            f"the model's output depends on its input other than through module "
            f"{name!r}: the module is bypassed (by a residual or skip connection, or "
            "a keyword argument of the module computed from the input), so the model cannot "
            "be written as head_fn(layer_fn(x)); split at a module that every path from the "
            "input goes through"
        )
    if kwargs_key is not None:
        record.checked.add(key)


def checked_split(layer_fn: Callable, head_fn: Callable, x: Any, kwargs: dict) -> tuple:
    """`(head_fn(layer_fn(.)), layer_fn(x)'s shapes)`, each function's output checked before
    any path work: `layer_fn` returns one row per input row for `x` and for twice its batch
    (the methods call it on many path points at once, so a `layer_fn` mixing or dropping rows
    is refused here, naming it), and `head_fn` one floating row per row of the layer (a
    `head_fn` that cannot take the layer's output at all raises naming both)."""
    layer = _blackbox.rows_output(layer_fn, x, kwargs, "layer_fn")
    doubled = lambda v: jax.ShapeDtypeStruct((2 * v.shape[0], *v.shape[1:]), v.dtype)
    twice = jax.tree.map(doubled, (x, kwargs))
    try:
        _blackbox.rows_output(layer_fn, *twice, "layer_fn")
    except ValueError as error:
        raise ValueError(
            f"{error}; layer_fn must treat rows independently (it is called on many path "
            "points in one batch)"
        ) from None
    try:
        _blackbox.shape_of(head_fn, layer, kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"layer_fn and head_fn do not compose: head_fn fails on layer_fn's output "
            f"{jax.tree.map(lambda v: tuple(v.shape), layer)}: {error}"
        ) from None
    _blackbox.model_output(head_fn, layer, kwargs, "head_fn")
    return _paths.Composed(layer_fn, head_fn), layer
