"""Split a dm-haiku model at a module into `layer_fn` and `head_fn` for layer attributions."""

from collections.abc import Callable, Mapping
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
from jax.extend.core import Var
from jax.typing import ArrayLike

__all__ = ["split"]


class _Stop(Exception):
    """Carries the split module's result out of `apply`, so the rest of the model never runs."""

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


def split(
    transformed: hk.Transformed,
    params: Mapping[str, Mapping[str, ArrayLike]],
    module_name: str,
    *,
    attribute_to_inputs: bool = False,
    rng: ArrayLike | None = None,
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Split a haiku model at a module, so that `model(x) == head_fn(layer_fn(x))`.

    This is the pair the layer attribution methods take (`layer_integrated_gradients(layer_fn,
    head_fn, x, ...)`, `layer_conductance`, `neuron_conductance`), built for an existing
    `hk.transform`-ed model with `hk.intercept_methods`, without rewriting the model.

    - `layer_fn(x, **kwargs)` runs `transformed.apply(params, rng, x, **kwargs)` and returns the
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
        transformed: the model, from `hk.transform` (optionally `hk.without_apply_rng`).
        params: its parameters.
        module_name: `module_name` of the module to split at. If it is called more than once
            (weight sharing), the first call is the split point; later calls run as usual.
        attribute_to_inputs: split at the module's positional inputs instead of its output.
        rng: key passed to `apply` by both functions (the same key, so dropout masks after the
            module are those of the original model); None for deterministic models.

    Returns:
        `(layer_fn, head_fn)`; `layer_fn` must be called (or traced) before `head_fn`.

    Raises:
        TypeError: `transformed` is not an `hk.Transformed` (e.g. an `hk.TransformedWithState`
            or a plain function), `module_name` is not a str, or `attribute_to_inputs` is not
            a bool.
        ValueError: `rng` given to an `hk.without_apply_rng` model. From the returned
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
    if not isinstance(transformed, hk.Transformed):
        raise TypeError(
            "transformed must be an hk.Transformed (from hk.transform), got "
            f"{type(transformed).__name__}; stateful models (hk.transform_with_state) are not "
            "supported"
        )
    if not isinstance(module_name, str):
        raise TypeError(f"module_name must be a str, got {type(module_name).__name__}")
    if not isinstance(attribute_to_inputs, bool):
        raise TypeError(
            f"attribute_to_inputs must be a bool, got {type(attribute_to_inputs).__name__}"
        )
    apply = _bind_apply(transformed, params, rng)
    record = _Record()

    def layer_fn(x, **kwargs):
        called = []

        def interceptor(next_f, args, call_kwargs, context):
            if context.method_name != "__call__":
                return next_f(*args, **call_kwargs)
            name = context.module.module_name
            called.append(name)
            if name != module_name:
                return next_f(*args, **call_kwargs)
            if attribute_to_inputs:
                raise _Stop(_positional_inputs(module_name, args))
            raise _Stop(next_f(*args, **call_kwargs))

        inputs = _input_structure(x)
        try:
            with hk.intercept_methods(interceptor):
                apply(x, kwargs)
        except _Stop as stop:
            record.inputs = inputs
            return stop.value
        raise _not_called(module_name, called)

    def run_head(h, x, kwargs):
        called = []

        def interceptor(next_f, args, call_kwargs, context):
            if context.method_name != "__call__":
                return next_f(*args, **call_kwargs)
            name = context.module.module_name
            first = name == module_name and module_name not in called
            called.append(name)
            if not first:
                return next_f(*args, **call_kwargs)
            if attribute_to_inputs:
                _positional_inputs(module_name, args)
                new_args = (h,) if len(args) == 1 else _as_tuple(h, len(args))
                _check_like(new_args, args, "positional inputs")
                return next_f(*new_args, **call_kwargs)
            # The module still runs (on the zeros' activations; dead code under jit) so that
            # the `hk.next_rng_key` sequence after it stays that of the original model.
            out = next_f(*args, **call_kwargs)
            _check_like(h, out, "output")
            return h

        with hk.intercept_methods(interceptor):
            out = apply(x, kwargs)
        if module_name not in called:
            raise _not_called(module_name, called)
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
        _check_not_bypassed(run_head, record, module_name, h, kwargs)
        return run_head(h, _like_input(record.inputs, batch), kwargs)

    return layer_fn, head_fn


def _bind_apply(transformed: hk.Transformed, params, rng) -> Callable:
    """`(x, kwargs) -> transformed.apply(params, rng, x, **kwargs)`, whatever the rng convention."""
    # hk.without_apply_rng returns a plain hk.Transformed whose apply takes no rng; its
    # signature copies the model function's, so the wrapper's name is the reliable sign.
    if getattr(transformed.apply, "__qualname__", "").startswith("without_apply_rng."):
        if rng is not None:
            raise ValueError("rng must be None for a model wrapped in hk.without_apply_rng")
        return lambda x, kwargs: transformed.apply(params, x, **kwargs)
    return lambda x, kwargs: transformed.apply(params, rng, x, **kwargs)


def _positional_inputs(module_name: str, args: tuple):
    if not args:
        raise ValueError(
            f"attribute_to_inputs=True, but module {module_name!r} was called with no "
            "positional inputs"
        )
    return args[0] if len(args) == 1 else tuple(args)


def _as_tuple(h, count: int) -> tuple:
    if not isinstance(h, (tuple, list)) or len(h) != count:
        raise ValueError(
            f"h must be a tuple of the module's {count} positional inputs, got "
            f"{type(h).__name__}" + (f" of length {len(h)}" if isinstance(h, (tuple, list)) else "")
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
    """Raise unless `h` has the structure and per-example shapes of the module's `expected`."""
    got, want = _structure(h, drop_batch=True), _structure(expected, drop_batch=True)
    if got[0] != want[0] or [s for s, _ in got[1]] != [s for s, _ in want[1]]:
        raise ValueError(
            f"h must match the module's {what} after the batch axis: expected {want[0]} with "
            f"per-example shapes {[s for s, _ in want[1]]}, got {got[0]} with "
            f"{[s for s, _ in got[1]]}"
        )


def _not_called(module_name: str, called: list[str]) -> ValueError:
    return ValueError(
        f"module_name={module_name!r} was not called during the forward pass; modules "
        f"called: {tuple(sorted(set(called)))}"
    )


def _check_not_bypassed(run_head: Callable, record: _Record, module_name: str, h, kwargs):
    """Raise if the model output depends on its input other than through the module.

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
            f"{module_name!r}: the module is bypassed (by a residual or skip connection, or "
            "a keyword argument of the module computed from the input), so the model cannot "
            "be written as head_fn(layer_fn(x)); split at a module that every path from the "
            "input goes through"
        )
    if kwargs_key is not None:
        record.checked.add(key)
