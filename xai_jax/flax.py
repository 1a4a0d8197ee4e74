"""Split a flax model (linen or nnx) at a submodule into `layer_fn` and `head_fn`.

The flax front end of the framework-free layer split (`xai_jax._layer_split`): it supplies only
the interception of the layer's call; the pair, the record of the input structure and the
liveness check that rejects skip connections are the core's.

- linen: `nn.intercept_methods` on the `__call__` of the module at a scope path (`"Dense_1"`,
  `"encoder/layers_2"`), the model run by `module.apply(variables, x, ...)`.
- nnx: the model is copied (`nnx.split`/`nnx.merge`, a snapshot taken by `split`) and, in the
  copy, the selected submodule is replaced by a recording wrapper at every place it is held,
  so the user's model is never mutated and the functions stay pure (an RNG stream or a counter
  advanced by the run advances in the discarded copy).

flax is imported with this module, never by `import xai_jax`.
"""

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
from flax import nnx

from xai_jax._checks import check_bool
from xai_jax._layer_split import split_at

__all__ = ["split"]


def split(
    module: nn.Module | nnx.Module,
    *args: Any,
    attribute_to_inputs: bool = False,
    method: str | Callable = "__call__",
    **apply_kwargs: Any,
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Split a flax model at a submodule, so that `model(x) == head_fn(layer_fn(x))`.

    Two forms, one per flax API:

    - linen: `split(module, variables, path, ...)`; the model is `module.apply(variables, x,
      method=method, **apply_kwargs, **kwargs)` and `path` the scope path of the submodule,
      its names joined by `/` (`"Dense_1"` for a submodule of the top module, `"encoder/
      layers_2"` deeper: the keys of `variables["params"]` for modules with parameters).
    - nnx: `split(model, path, ...)`; the model is `model.method(x, **apply_kwargs, **kwargs)`
      (`model(x)` by default) and `path` the submodule's attribute path, attributes and list
      indices joined by `.` (`"layers.1"`, `"encoder.attn"`), or a function selecting it
      (`lambda m: m.layers[1]`). `split` takes a snapshot of the model's state (`nnx.split`):
      later changes to the model do not reach the pair, and the pair never changes the model.

    `layer_fn(x, **kwargs)` returns the output of the submodule's first `__call__` during the
    model's run (with `attribute_to_inputs=True` its positional inputs: the array when there is
    one, else a tuple) and the rest of the model does not run; `head_fn(h, **kwargs)` is the
    model's output when that call returns `h` (or is called on `h`). Its batch size may differ
    from the one `layer_fn` saw. A submodule called more than once (weight sharing) is split at
    its first call; later calls run as usual. `head_fn` runs the model from the start on zeros
    of the recorded input structure (dead code under `jit`), so the first `head_fn` call per
    structure checks that the output depends on the input only through the submodule and
    raises for a residual or skip connection past it (`xai_jax._layer_split`).

    Inference mode: pass a linen model's own flags as keyword arguments (`train=False`) or
    build it with them (`nn.BatchNorm(use_running_average=True)`), call `model.eval()` on an nnx
    model before `split`; the state (`batch_stats`) is read, never updated. Both functions
    work under `jax.jit`, `jax.vmap`, `jax.grad` (also with respect to `variables`, or an nnx
    model's state, by calling `split` inside the differentiated function) and inside
    `nnx.jit`. The submodule must be called in the model's own trace (not inside `nn.vmap`,
    `nn.scan`, `nnx.vmap`, `nnx.scan` or `nnx.remat`) with the model's batch axis first.

    Args:
        module: a linen `nn.Module` (unbound), or an `nnx.Module`.
        *args: `variables, path` for linen, `path` for nnx (see above).
        attribute_to_inputs: split at the submodule's positional inputs instead of its output.
        method: the method of the model to run (linen: a name or a function, as `apply`'s
            `method`; nnx: a method name or a function `method(model, x, **kwargs)`).
        **apply_kwargs: passed on every call: to `apply` for linen (e.g. `rngs={"dropout":
            key}`, or the model's own flags), to the method for nnx.

    Returns:
        `(layer_fn, head_fn)`; `layer_fn` must be called (or traced) before `head_fn`.

    Raises:
        TypeError: `module` is neither a linen nor an nnx module, the wrong number of
            positional arguments for its form, `variables` not a mapping, `path` not a str
            (or, for nnx, a function), a path or function selecting something that is not an
            nnx module, `attribute_to_inputs` not a bool.
        ValueError: an nnx path that is not in the model (the message lists its submodules),
            one that selects the model itself, `mutable` or `capture_intermediates` given for
            linen (inference only). From the returned functions: a linen path not called during
            the forward pass (the message lists the modules that were), an nnx submodule never
            called, and the core's errors (a model that bypasses the submodule, an `h` of the
            wrong shape, `head_fn` before `layer_fn`).

    Example:
        >>> import flax.linen as nn, jax, jax.numpy as jnp
        >>> from xai_jax.flax import split
        >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
        >>> x = jnp.ones((2, 4))
        >>> variables = model.init(jax.random.key(0), x)
        >>> layer_fn, head_fn = split(model, variables, "layers_0")
        >>> layer_fn(x).shape
        (2, 8)
        >>> bool(jnp.allclose(head_fn(layer_fn(x)), model.apply(variables, x)))
        True
    """
    attribute_to_inputs = check_bool("attribute_to_inputs", attribute_to_inputs)
    if isinstance(module, nn.Module):
        if len(args) != 2:
            raise TypeError(
                "a linen module is split as split(module, variables, path), got "
                f"{len(args)} positional argument(s) after the module"
            )
        variables, path = args
        intercept, name = _linen_intercept(module, variables, path, method, apply_kwargs)
    elif isinstance(module, nnx.Module):
        if len(args) != 1:
            raise TypeError(
                "an nnx module is split as split(model, path), got "
                f"{len(args)} positional argument(s) after the model"
                + ("; an nnx model holds its own variables" if len(args) == 2 else "")
            )
        intercept, name = _nnx_intercept(module, args[0], method, apply_kwargs)
    else:
        raise TypeError(
            "module must be a flax linen nn.Module (with its variables) or an nnx.Module, got "
            f"{type(module).__name__}"
        )
    return split_at(intercept, name, attribute_to_inputs=attribute_to_inputs)


def _linen_intercept(module, variables, path, method, apply_kwargs: dict):
    if not isinstance(variables, Mapping):
        raise TypeError(
            f"variables must be the mapping from module.init, got {type(variables).__name__}"
        )
    if not isinstance(path, str):
        raise TypeError(f"path must be a str (a scope path, e.g. 'Dense_1'), got {path!r}")
    if not path:
        raise ValueError("path must name a submodule, e.g. 'Dense_1', got ''")
    if not (isinstance(method, str) or callable(method)):
        raise TypeError(f"method must be a method name or a function, got {method!r}")
    for option in ("mutable", "capture_intermediates"):
        if option in apply_kwargs:
            raise ValueError(
                f"{option} is not supported: split runs the model in inference mode (its "
                "variables are read, never updated)"
            )

    def intercept(x, kwargs: dict, on_layer: Callable):
        called = []

        def interceptor(next_f, args, call_kwargs, context):
            if context.method_name != "__call__":
                return next_f(*args, **call_kwargs)
            name = "/".join(context.module.path)
            first = name == path and path not in called
            called.append(name)
            if not first:
                return next_f(*args, **call_kwargs)
            return on_layer(next_f, args, call_kwargs)

        with nn.intercept_methods(interceptor):
            out = module.apply(variables, x, method=method, **apply_kwargs, **kwargs)
        if path not in called:
            raise ValueError(
                f"path={path!r} was not called during the forward pass; modules called: "
                f"{tuple(sorted(set(called) - {''}))}"
            )
        return out

    return intercept, path


class _Recorder(nnx.Module):
    """Stands in for the split submodule in the model's copy: its calls go to `hook`."""

    def __init__(self, inner: nnx.Module, hook: Callable):
        self.inner = inner
        self.hook = hook

    def __call__(self, *args, **kwargs):
        return self.hook(self.inner, args, kwargs)

    def __getattr__(self, name: str):  # other methods of the submodule run unintercepted
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def _nnx_intercept(model, where, method, call_options: dict):
    if not (isinstance(method, str) or callable(method)):
        raise TypeError(f"method must be a method name or a function, got {method!r}")
    paths, name = _nnx_target(model, where)
    graphdef, state = nnx.split(model)

    def intercept(x, kwargs: dict, on_layer: Callable):
        copy = nnx.merge(graphdef, state)
        called = []

        def hook(inner, args, call_kwargs):
            first = not called
            called.append(True)
            if not first:
                return inner(*args, **call_kwargs)
            return on_layer(inner, args, call_kwargs)

        recorder = _Recorder(_at(copy, paths[0]), hook)
        for path in paths:  # every reference to a shared submodule
            _set(copy, path, recorder)
        run = getattr(copy, method) if isinstance(method, str) else method.__get__(copy)
        out = run(x, **call_options, **kwargs)
        if not called:
            raise ValueError(
                f"the submodule {name!r} ({type(recorder.inner).__name__}) was not called "
                "during the forward pass"
            )
        return out

    return intercept, name


def _nnx_target(model, where) -> tuple[list[tuple], str]:
    """Every path at which the selected submodule is held, and its name (the first path)."""
    if isinstance(where, str):
        if not where:
            raise ValueError("path must name a submodule, e.g. 'layers.1', got ''")
        node = model
        for part in where.split("."):
            node = _child(node, part)
            if node is None:
                raise ValueError(
                    f"path={where!r} is not a submodule of the model; its submodules: "
                    f"{_submodule_names(model)}"
                )
    elif callable(where):
        node = where(model)
    else:
        raise TypeError(
            "path must be an attribute path (e.g. 'layers.1') or a function selecting the "
            f"submodule (e.g. lambda m: m.layers[1]), got {type(where).__name__}"
        )
    if not isinstance(node, nnx.Module):
        raise TypeError(
            f"path must select an nnx.Module of the model, but it selects a {type(node).__name__}"
        )
    if isinstance(node, nnx.List | nnx.Dict):
        raise TypeError(
            "path must select an nnx.Module of the model, but it selects an "
            f"nnx.{type(node).__name__} (a container of modules): select one of its items"
        )
    if node is model:
        raise ValueError("path selects the model itself: select one of its submodules")
    paths = _paths_to(model, node)
    if not paths:
        raise ValueError(
            f"path selects a {type(node).__name__} that is not part of the model (held by one of "
            "its modules as an attribute, an nnx.List or nnx.Dict item); its submodules: "
            f"{_submodule_names(model)}"
        )
    return paths, where if isinstance(where, str) else _dotted(paths[0])


def _child(node, part: str):
    """`node.part` or `node[part]` (an index for a list), or None when there is none."""
    if isinstance(node, nnx.Module) and part in vars(node):
        return getattr(node, part)
    try:
        return node[int(part) if part.lstrip("-").isdigit() else part]
    except (IndexError, KeyError, TypeError, AttributeError):
        return None


def _children(node):
    try:
        return list(nnx.iter_children(node))
    except ValueError:  # not a graph node (a Variable, an array, a static value)
        return []


def _paths_to(model, target) -> list[tuple]:
    """All paths from `model` to `target` (a shared module is held at several)."""
    found, seen = [], set()

    def walk(node, path):
        if node is target:
            found.append(path)
            return
        if id(node) in seen:
            return
        seen.add(id(node))
        for key, child in _children(node):
            walk(child, (*path, key))

    walk(model, ())
    return found


def _submodule_names(model) -> tuple[str, ...]:
    names = [
        _dotted(path)
        for path, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Module) and path and not isinstance(node, nnx.List | nnx.Dict)
    ]
    return tuple(sorted(names))


def _dotted(path: tuple) -> str:
    return ".".join(str(k) for k in path)


def _at(model, path: tuple):
    node = model
    for key in path:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node


def _set(model, path: tuple, value) -> None:
    parent, key = _at(model, path[:-1]), path[-1]
    if isinstance(key, int) or isinstance(parent, nnx.Dict | dict):
        parent[key] = value
    else:
        setattr(parent, key, value)
