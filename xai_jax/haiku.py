"""Split a dm-haiku model at a module into `layer_fn` and `head_fn` for layer attributions.

The haiku front end of the framework-free layer split (`xai_jax._layer_split`): it supplies the
interception (`hk.intercept_methods` on the module's `__call__`) and the model's call
(`xai_jax._haiku_forms`: every haiku model form); the pair, the record of the input structure
and the liveness check are the core's.
"""

from collections.abc import Callable
from typing import Any

import haiku as hk
from jax.typing import ArrayLike

from xai_jax._checks import check_bool
from xai_jax._haiku_forms import bind
from xai_jax._layer_split import split_at

__all__ = ["split"]


def split(
    transformed: hk.Transformed | hk.TransformedWithState,
    params: Any,
    module_name: str,
    *,
    attribute_to_inputs: bool = False,
    rng: ArrayLike | None = None,
    state: Any = None,
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Split a haiku model at a module, so that `model(x) == head_fn(layer_fn(x))`.

    This is the pair the layer attribution methods take (`layer_integrated_gradients(layer_fn,
    head_fn, x, ...)`, `layer_conductance`, `neuron_conductance`), built for an existing
    `hk.transform`-ed model with `hk.intercept_methods`, without rewriting the model.

    - `layer_fn(x, **kwargs)` runs the model (`transformed.apply(params, rng, x, **kwargs)`, or
      the form's own call: `apply(params, x)` under `hk.without_apply_rng`, `apply(params,
      state, rng, x)[0]` for `hk.transform_with_state`) and returns the
      output of the first `__call__` of the module whose `module.module_name == module_name`
      (`"mlp/~/linear_1"` for a submodule made in its parent's constructor, `"net/linear_1"`
      for one made in the parent's `__call__`, `"linear_1"` at the top level; the keys of
      `params` for modules with parameters); the rest of the model does not run. With
      `attribute_to_inputs=True` it returns that call's positional inputs instead: the array
      when there is one, else a tuple of them (alibi's `attribute_to_layer_inputs`).
    - `head_fn(h, **kwargs)` is the model's output when that call returns `h` (outputs mode)
      or is called with `h` as its positional inputs (inputs mode; the module then runs on `h`
      with the call's own keyword arguments). Its leading batch axis may differ from the one
      given to `layer_fn` (the attribution methods evaluate many interpolated points at once).

    haiku can only run the part of the model after the module by running `apply` from the
    start, which needs a model input. So every `layer_fn` call records the structure of `x`
    (pytree, shapes without the batch axis, dtypes) and `head_fn` feeds `apply` zeros of that
    structure with `h`'s batch size, replacing the module's result (or inputs) with `h`. The
    computation before the module is then dead code, which `jax.jit` removes (eagerly it runs).
    This is only right when the output depends on `x` through the module alone (a sequential
    model), so the first `head_fn` call for each input structure, shape of `h` and keyword
    arguments checks it: a backward liveness pass over the jaxpr of `(h, x) -> output` raises
    if the output depends on `x` other than through `h` (a residual or skip connection past
    the module, or a second path from the input). The pass treats an equation with sub-jaxprs
    as using all its inputs, so it never misses a dependence but may, rarely, reject a model
    that only passes both values into the same inner `jit`/`scan`.

    Both functions are pure apart from that record, and work under `jax.jit`, `jax.vmap`
    (`h` and `x` then need the batch axis first in the mapped view) and `jax.grad`, including
    with respect to `params` (call `split` inside the differentiated function). The module
    must be called at the top level of the model's function, not inside `hk.vmap`, `hk.scan`,
    `hk.remat` or `hk.cond`, whose values cannot leave their trace, and its inputs and
    outputs must have the model's batch axis first. Pass flags to it as keyword arguments
    in inputs mode, since `layer_fn` returns positional ones as (traced) arrays.

    Args:
        transformed: the model, from `hk.transform` or `hk.transform_with_state` (either
            optionally under `hk.without_apply_rng`).
        params: its parameters.
        module_name: `module_name` of the module to split at. If it is called more than once
            (weight sharing), the first call is the split point; later calls run as usual.
        attribute_to_inputs: split at the module's positional inputs instead of its output.
        rng: key passed to `apply` by both functions (the same key, so dropout masks after the
            module are those of the original model); None for deterministic models.
        state: the state of an `hk.transform_with_state` model (required for one, None
            otherwise). Inference mode: both functions read the state, never update it, and
            discard the new state `apply` returns; pass the model's own flags (e.g.
            `is_training=False` for `hk.BatchNorm`) as keyword arguments to both functions.

    Returns:
        `(layer_fn, head_fn)`; `layer_fn` must be called (or traced) before `head_fn`.

    Raises:
        TypeError: `transformed` is not an `hk.Transformed` or `hk.TransformedWithState` (e.g.
            a plain function), an `hk.TransformedWithState` without `state`, `module_name` is
            not a str, or `attribute_to_inputs` is not a bool.
        ValueError: `rng` given to an `hk.without_apply_rng` model, `state` given to a model
            without state. From the returned
            functions: `module_name` not called during the forward pass (the message lists
            the modules that were), `head_fn` called before `layer_fn`, an `x` or `h` without
            a leading batch axis, an `h` that does not match the module's output or inputs, or
            a model that bypasses the module.

    Example:
        >>> import haiku as hk, jax, jax.numpy as jnp
        >>> from xai_jax.haiku import split
        >>> model = hk.transform(lambda x: hk.nets.MLP([8, 3])(x))
        >>> x = jnp.ones((2, 4))
        >>> params = model.init(jax.random.key(0), x)
        >>> layer_fn, head_fn = split(model, params, "mlp/~/linear_0")
        >>> h = layer_fn(x)
        >>> h.shape
        (2, 8)
        >>> bool(jnp.allclose(head_fn(h), model.apply(params, None, x)))
        True
    """
    apply = bind(transformed, params, state, rng)
    if not isinstance(module_name, str):
        raise TypeError(f"module_name must be a str, got {type(module_name).__name__}")
    attribute_to_inputs = check_bool("attribute_to_inputs", attribute_to_inputs)

    def intercept(x, kwargs: dict, on_layer: Callable):
        called = []

        def interceptor(next_f, args, call_kwargs, context):
            if context.method_name != "__call__":
                return next_f(*args, **call_kwargs)
            name = context.module.module_name
            first = name == module_name and module_name not in called
            called.append(name)
            if not first:
                return next_f(*args, **call_kwargs)
            return on_layer(next_f, args, call_kwargs)

        with hk.intercept_methods(interceptor):
            out = apply(x, **kwargs)
        if module_name not in called:
            raise _not_called(module_name, called)
        return out

    return split_at(intercept, module_name, attribute_to_inputs=attribute_to_inputs)


def _not_called(module_name: str, called: list[str]) -> ValueError:
    return ValueError(
        f"module_name={module_name!r} was not called during the forward pass; modules "
        f"called: {tuple(sorted(set(called)))}"
    )
