"""Stateful wrappers with the reference libraries' signatures, over the pure functions.

`IntegratedGradients` is alibi's explainer (seed 001); `Explanation` is alibi's container.
"""

import json
from collections.abc import Callable, Mapping
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

import xai_jax
from xai_jax import haiku as xai_haiku
from xai_jax._checks import check_choice, check_positive_int
from xai_jax.integrated_gradients import _call, integrated_gradients, layer_integrated_gradients
from xai_jax.quadrature import METHODS


class Explanation:
    """alibi's explanation container: `meta` (name, type, explanations, params, version) and
    `data` (for integrated gradients: attributions, X, forward_kwargs, baselines, predictions,
    deltas, target). Fields of `data` and `meta` read as attributes: `explanation.attributions`.
    """

    def __init__(self, meta: dict, data: dict):
        self.meta = meta
        self.data = data

    def __getattr__(self, name: str):
        for part in ("data", "meta"):
            values = self.__dict__.get(part, {})
            if name in values:
                return values[name]
        raise AttributeError(f"Explanation has no field {name!r}")

    def __repr__(self) -> str:
        return f"Explanation(meta={self.meta!r}, data={{{', '.join(self.data)}}})"

    def to_json(self) -> str:
        """Both dicts as JSON; arrays become nested lists."""
        return json.dumps({"meta": self.meta, "data": self.data}, default=_jsonable)


def _jsonable(value):
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        return np.asarray(value).tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _apply(apply: Callable, params, x, **kwargs):
    return apply(params, None, x, **kwargs)


class IntegratedGradients:
    """alibi's `IntegratedGradients` for JAX models, on `integrated_gradients`.

    Args:
        model: a JAX callable mapping a batch to outputs, or a `(hk.Transformed, params)` pair
            (called as `apply(params, None, X)`; the params are arguments of the compiled
            function, not constants baked into it).
        layer: None (attribute to the inputs), a haiku module name (with a haiku `model`, split
            by `xai_jax.haiku.split`), or a `(layer_fn, head_fn)` pair with
            `model(x) == head_fn(layer_fn(x))`. Layer attributions are Captum's
            `LayerIntegratedGradients` (`layer_integrated_gradients`: the path runs in the
            layer's space); alibi interpolates in input space and takes the layer's gradients,
            which agrees for layers affine in the input.
        target_fn: applied to the predictions to choose the target when `explain` gets none,
            e.g. `lambda p: jnp.argmax(p, axis=1)`.
        method: quadrature rule (see `xai_jax.quadrature`).
        n_steps: number of path points.
        internal_batch_size: largest number of path points per model call.

    The model function is built once, so repeated `explain` calls with same-shaped inputs reuse
    the compiled executables. `reset_predictor` swaps the model.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import IntegratedGradients
        >>> model = lambda x: jnp.tanh(x) @ jnp.array([[1.0, -1.0], [2.0, 0.5]])
        >>> explainer = IntegratedGradients(model, target_fn=lambda p: jnp.argmax(p, axis=1))
        >>> explanation = explainer.explain(jnp.array([[0.5, -1.0], [1.0, 1.0]]))
        >>> explanation.target  # argmax of the predictions
        Array([1, 0], dtype=int32)
        >>> explanation.attributions[0].shape
        (2, 2)
    """

    def __init__(
        self,
        model,
        layer=None,
        target_fn: Callable | None = None,
        method: str = "gausslegendre",
        n_steps: int = 50,
        internal_batch_size: int = 100,
    ):
        self.method = check_choice("method", method, METHODS)
        self.n_steps = check_positive_int("n_steps", n_steps)
        self.internal_batch_size = check_positive_int("internal_batch_size", internal_batch_size)
        if target_fn is not None and not callable(target_fn):
            raise TypeError(f"target_fn must be callable, got {type(target_fn).__name__}")
        self.target_fn = target_fn
        self.layer = layer
        self.reset_predictor(model)

    def reset_predictor(self, model) -> None:
        """Use another model (same forms as the constructor's `model`)."""
        if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], hk.Transformed):
            self._haiku = model
            self._model = Partial(_apply, model[0].apply, model[1])
        elif callable(model):
            self._haiku = None
            self._model = model
        else:
            raise TypeError(
                "model must be a JAX callable or a (hk.Transformed, params) pair, got "
                f"{type(model).__name__}"
            )
        self._splits: dict[bool, tuple[Callable, Callable]] = {}
        if self.layer is not None:
            self._split(False)  # check the layer now, not at the first explain

    def _split(self, to_inputs: bool) -> tuple[Callable, Callable]:
        if to_inputs not in self._splits:
            if isinstance(self.layer, str):
                if self._haiku is None:
                    raise TypeError(
                        f"layer={self.layer!r} names a haiku module, so model must be a "
                        "(hk.Transformed, params) pair"
                    )
                transformed, params = self._haiku
                self._splits[to_inputs] = xai_haiku.split(
                    transformed, params, self.layer, attribute_to_inputs=to_inputs
                )
            elif (
                isinstance(self.layer, tuple)
                and len(self.layer) == 2
                and all(callable(f) for f in self.layer)
            ):
                if to_inputs:
                    raise ValueError(
                        "attribute_to_layer_inputs=True needs layer to be a haiku module name; "
                        "a (layer_fn, head_fn) pair fixes where the model is split"
                    )
                self._splits[to_inputs] = self.layer
            else:
                raise TypeError(
                    "layer must be None, a haiku module name or a (layer_fn, head_fn) pair, "
                    f"got {self.layer!r}"
                )
        return self._splits[to_inputs]

    def explain(
        self,
        X,
        forward_kwargs: Mapping[str, Any] | None = None,
        baselines=None,
        target=None,
        attribute_to_layer_inputs: bool = False,
    ) -> Explanation:
        """Attributions for `X` (an array, or a list of arrays for a multi-input model).

        Args:
            X: inputs with a leading batch axis.
            forward_kwargs: per-example arrays passed to the model as keyword arguments,
                repeated along the path and not attributed.
            baselines: as in `integrated_gradients` (None: zeros).
            target: as in `integrated_gradients`; None uses `target_fn(predictions)` when the
                explainer has one.
            attribute_to_layer_inputs: attribute to the layer's inputs instead of its outputs.

        Returns:
            `Explanation` with `data` fields `attributions` (a list, one array per input or
            per layer tensor), `X`, `forward_kwargs`, `baselines`, `predictions`, `deltas`,
            `target`.
        """
        kwargs = dict(forward_kwargs or {})
        predictions = _call(self._model, X, kwargs)
        if target is None and self.target_fn is not None:
            target = self.target_fn(predictions)
        options = dict(
            target=target,
            method=self.method,
            n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size,
            return_convergence_delta=True,
            forward_kwargs=kwargs or None,
        )
        if self.layer is None:
            attributions, deltas = integrated_gradients(self._model, X, baselines, **options)
        else:
            layer_fn, head_fn = self._split(bool(attribute_to_layer_inputs))
            attributions, deltas = layer_integrated_gradients(
                layer_fn, head_fn, X, baselines, **options
            )
        return Explanation(
            meta={
                "name": "IntegratedGradients",
                "type": ["whitebox"],
                "explanations": ["local"],
                "params": {
                    "method": self.method,
                    "n_steps": self.n_steps,
                    "internal_batch_size": self.internal_batch_size,
                    "layer": self.layer if isinstance(self.layer, str | None) else "callable",
                    "attribute_to_layer_inputs": bool(attribute_to_layer_inputs),
                },
                "version": xai_jax.__version__,
            },
            data={
                "attributions": _as_list(attributions),
                "X": X,
                "forward_kwargs": forward_kwargs,
                "baselines": _as_list(
                    baselines if baselines is not None else jax.tree.map(jnp.zeros_like, X)
                ),
                "predictions": predictions,
                "deltas": deltas,
                "target": None if target is None else jnp.asarray(target),
            },
        )


def _as_list(tree) -> list:
    return list(tree) if isinstance(tree, list | tuple) else [tree]
