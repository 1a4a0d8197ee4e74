"""Split an equinox model at a submodule into `layer_fn` and `head_fn` for layer attributions.

The equinox front end of the framework-free layer split (`xai_jax._layer_split`): it supplies
only the interception, a tree surgery (`eqx.tree_at`) that replaces the selected submodule with
a recording wrapper for one run of the model; the pair, the record of the input structure and
the liveness check that rejects skip connections are the core's.

equinox models usually take one example and are batched by `jax.vmap(model)`; the layer split
needs the layer's call in the model's own trace, so such a model is split one example at a time
(as a batch of one) and the pair is mapped over the batch. equinox is imported with this module,
never by `import xai_jax`.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax

from xai_jax._checks import check_bool
from xai_jax._equinox_forms import add_axis, call_one, drop_axis, over_batch
from xai_jax._layer_split import split_at

__all__ = ["split"]


def split(
    model: eqx.Module,
    where: Callable[[Any], Any],
    *,
    attribute_to_inputs: bool = False,
    state: Any = None,
    batched: bool = False,
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Split an equinox model at a submodule, so that `model(x) == head_fn(layer_fn(x))`.

    `where` selects the submodule as in `eqx.tree_at` (`lambda m: m.layers[1]`). The model
    takes one example (equinox's convention: the batched model is `jax.vmap(model)`), or, with
    `batched=True`, the whole batch; either way `layer_fn` and `head_fn` take batches, the
    batch axis first, as the layer attribution methods call them.

    - `layer_fn(x, **kwargs)` returns the output of the submodule's first `__call__` during the
      model's run (with `attribute_to_inputs=True` its positional inputs: the array when there
      is one, else a tuple), with the batch axis first; the rest of the model does not run.
    - `head_fn(h, **kwargs)` is the model's output when that call returns `h` (or is called on
      `h`); its batch size may differ from the one `layer_fn` saw.

    A submodule called more than once is split at its first call; later calls run as usual.
    `head_fn` runs the model from the start on zeros of the recorded input structure (dead
    code under `jit`), so its first call per structure checks that the output depends on the
    input only through the submodule, and raises for a residual or skip connection past it.
    Keyword arguments that are arrays with at least one axis are per-example (batch axis
    first); any other keyword argument (a flag, a key) is passed to every example as it is.

    Inference mode: a model with state (`eqx.nn.make_with_state`) is called as `model(x,
    state)` and its new state discarded; give it `inference=True` (or use
    `eqx.nn.inference_mode(model)`) so that batch norm and dropout use their inference
    behaviour. Both functions work under `jax.jit`, `eqx.filter_jit`, `jax.vmap` and
    `jax.grad`/`eqx.filter_grad`, also with respect to the model (call `split` inside the
    differentiated function). The submodule must be called in the model's own trace, not
    inside a `jax.vmap`/`lax.scan` of the model's.

    Args:
        model: the equinox model (an `eqx.Module`).
        where: a function of the model returning the submodule (an `eqx.Module` inside it).
        attribute_to_inputs: split at the submodule's positional inputs instead of its output.
        state: the model's `eqx.nn.State`, for a model made with `eqx.nn.make_with_state`.
        batched: the model takes the whole batch, not one example.

    Returns:
        `(layer_fn, head_fn)`; `layer_fn` must be called (or traced) before `head_fn`.

    Raises:
        TypeError: `model` not an `eqx.Module`, `where` not callable, `where(model)` not an
            `eqx.Module` (an array, a function), `attribute_to_inputs` or `batched` not a bool.
        ValueError: `where(model)` is the model itself or not part of it. From the returned
            functions: the submodule never called, an `x` or `h` without a batch axis, and the
            core's errors (a model that bypasses the submodule, an `h` of the wrong shape,
            `head_fn` before `layer_fn`).

    Example:
        >>> import equinox as eqx, jax, jax.numpy as jnp
        >>> from xai_jax.equinox import split
        >>> model = eqx.nn.MLP(4, 3, width_size=8, depth=1, key=jax.random.key(0))
        >>> layer_fn, head_fn = split(model, lambda m: m.layers[0])
        >>> x = jnp.ones((2, 4))
        >>> layer_fn(x).shape
        (2, 8)
        >>> bool(jnp.allclose(head_fn(layer_fn(x)), jax.vmap(model)(x)))
        True
    """
    if not isinstance(model, eqx.Module):
        raise TypeError(f"model must be an equinox Module, got {type(model).__name__}")
    if not callable(where):
        raise TypeError(
            "where must be a function selecting the submodule, as in eqx.tree_at (e.g. "
            f"lambda m: m.layers[1]), got {type(where).__name__}"
        )
    attribute_to_inputs = check_bool("attribute_to_inputs", attribute_to_inputs)
    batched = check_bool("batched", batched)
    name = _name(model, where)

    def run(x, kwargs: dict, hook: Callable):
        node = where(model)
        surgery = eqx.tree_at(where, model, replace=_Recorder(node, hook))
        return call_one(surgery, state, x, **kwargs)

    def intercept(x, kwargs: dict, on_layer: Callable):
        called = []

        def hook(inner, args, call_kwargs):
            first = not called
            called.append(True)
            if not first:
                return inner(*args, **call_kwargs)
            if batched:
                return on_layer(inner, args, call_kwargs)
            # one example, presented to the core as a batch of one
            out = on_layer(_batch_of_one(inner), add_axis(args), call_kwargs)
            return drop_axis(out)

        out = run(x if batched else drop_axis(x), kwargs, hook)
        if not called:
            raise ValueError(
                f"the submodule {name!r} ({type(where(model)).__name__}) was not called during "
                "the forward pass"
            )
        return out if batched else add_axis(out)

    layer_one, head_one = split_at(intercept, name, attribute_to_inputs=attribute_to_inputs)
    if batched:
        return layer_one, head_one
    return over_batch(layer_one, "x"), over_batch(head_one, "h")


class _Recorder(eqx.Module):
    """Stands in for the split submodule during one run: its calls go to `hook`."""

    inner: Any
    hook: Callable = eqx.field(static=True)

    def __call__(self, *args, **kwargs):
        return self.hook(self.inner, args, kwargs)

    def __getattr__(self, name: str):  # other methods of the submodule run unintercepted
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def _name(model, where) -> str:
    """The submodule's key path in the model (`layers[1]`), checking what `where` selects."""
    node = where(model)
    if not isinstance(node, eqx.Module):
        raise TypeError(
            "where must select an equinox Module inside the model, but where(model) is of type "
            f"{type(node).__name__}"
        )
    if node is model:
        raise ValueError("where selects the model itself: select one of its submodules")
    leaves = jax.tree_util.tree_flatten_with_path(model, is_leaf=lambda n: n is node)[0]
    for path, leaf in leaves:
        if leaf is node:
            return jax.tree_util.keystr(path).lstrip(".")
    raise ValueError(f"where selects a {type(node).__name__} that is not part of the model")


def _batch_of_one(inner: Callable) -> Callable:
    def call(*args, **kwargs):
        return add_axis(inner(*drop_axis(args), **kwargs))

    return call
