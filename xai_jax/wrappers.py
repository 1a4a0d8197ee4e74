"""Stateful wrappers with the reference libraries' signatures, over the pure functions.

`IntegratedGradients` is alibi's explainer (seed 001); `Explanation` is alibi's container;
`LimeBase` is explainax's LIME explainer (seed 004); `ExplanationGenerator` the MAX library's
CEM generator (seed 003).

Wherever a wrapper takes a model it also takes a dm-haiku model, as `(hk.Transformed, params)`,
`(hk.Transformed, params, rng)`, `(hk.TransformedWithState, params, state)` or
`(hk.TransformedWithState, params, state, rng)`, with or without `hk.without_apply_rng`
(`xai_jax._haiku_forms` decides how each is called). A stateful model runs in inference mode:
its state is read, never updated, and the new state `apply` returns is discarded.

They take flax and equinox models too (`xai_jax._flax_forms`, `xai_jax._equinox_forms`): a
linen `(nn.Module, variables)` pair, an `nnx.Module`, an equinox Module (it takes one example,
as equinox models do, and is mapped over the batch) or `(equinox Module, state)`; all in
inference mode. `IntegratedGradients(model, layer=...)` splits them at a layer by
`xai_jax.flax.split` and `xai_jax.equinox.split`.
"""

import json
import math
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial
from jax.typing import ArrayLike

from xai_jax import _equinox_forms, _flax_forms, _haiku_forms, _paths
from xai_jax._blackbox import call
from xai_jax._checks import (
    as_float_array,
    as_row_keys,
    check_bool,
    check_choice,
    check_positive,
    check_positive_int,
    is_concrete,
)
from xai_jax._inputs import as_forward_kwargs, as_inputs, as_rows
from xai_jax._version import __version__
from xai_jax.contrastive import GRADIENTS, MODES, cem_loss, contrastive_explanation
from xai_jax.distances import METRICS
from xai_jax.integrated_gradients import integrated_gradients, layer_integrated_gradients
from xai_jax.kernels import exponential_kernel
from xai_jax.lime import GaussianNeighbourhood, local_surrogates
from xai_jax.optimizers import aoexpgrad, elastic_net_fista
from xai_jax.quadrature import METHODS

__all__ = ["Explanation", "ExplanationGenerator", "IntegratedGradients", "LimeBase"]


class Explanation:
    """alibi's explanation container: `meta` (name, type, explanations, params, version) and
    `data` (for integrated gradients: attributions, X, forward_kwargs, baselines, predictions,
    deltas, target). Fields of `data` and `meta` read as attributes: `explanation.attributions`.
    """

    def __init__(self, meta: Mapping[str, Any], data: Mapping[str, Any]):
        for name, value in (("meta", meta), ("data", data)):
            if not isinstance(value, Mapping):
                raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
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
        return json.dumps({"meta": dict(self.meta), "data": dict(self.data)}, default=_jsonable)


def _jsonable(value):
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        return np.asarray(value).tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_LIBRARY_FORMS = f"{_flax_forms.FORMS}, {_equinox_forms.FORMS}"


def _is_library_model(value) -> bool:
    """A haiku, flax or equinox model form (each module tells without importing its library)."""
    return any(f.is_model(value) for f in (_haiku_forms, _flax_forms, _equinox_forms))


def _as_function(value, name: str) -> Callable:
    """A model argument as a callable: a haiku, flax or equinox model form bound, a callable as
    it is."""
    if _haiku_forms.is_model(value):
        return _haiku_forms.bind(*_haiku_forms.as_model(value, name))
    if _flax_forms.is_model(value):
        return _flax_forms.bind(_flax_forms.as_model(value, name))
    if _equinox_forms.is_model(value):
        return _equinox_forms.bind(_equinox_forms.as_model(value, name))
    if not callable(value):
        raise TypeError(
            f"{name} must be a JAX callable or a haiku model ({_haiku_forms.FORMS}), or a flax "
            f"or equinox model ({_LIBRARY_FORMS}), got {type(value).__name__}"
        )
    return value


class IntegratedGradients:
    """alibi's `IntegratedGradients` for JAX models, on `integrated_gradients`.

    Args:
        model: a JAX callable mapping a batch to outputs, or a haiku model (the forms in the
            module docstring: `(hk.Transformed, params)`, `(hk.Transformed, params, rng)`,
            `(hk.TransformedWithState, params, state[, rng])`; the params, state and rng are
            arguments of the compiled function, not constants baked into it), or a flax or
            equinox model: `(linen nn.Module, variables)`, an `nnx.Module`, an equinox Module
            taking one example (mapped over the batch) or `(equinox Module, state)`.
        layer: None (attribute to the inputs), a haiku module name (with a haiku `model`, split
            by `xai_jax.haiku.split`), a linen scope path (`"Dense_1"`) or nnx attribute path
            (`"layers.1"`, split by `xai_jax.flax.split`), a function selecting the submodule
            of an nnx or equinox model (`lambda m: m.layers[1]`; `xai_jax.equinox.split` for
            equinox), or a `(layer_fn, head_fn)` pair with
            `model(x) == head_fn(layer_fn(x))`, checked once against the model (at the first
            `explain` after the model is set: the pair's output on `X` must match the model's
            to within the square root of its dtype's resolution). Layer attributions are Captum's
            `LayerIntegratedGradients` (`layer_integrated_gradients`: the path runs in the
            layer's space); alibi interpolates in input space and takes the layer's gradients,
            which agrees for layers affine in the input.
        target_fn: applied to the predictions to choose the target when `explain` gets none,
            e.g. `lambda p: jnp.argmax(p, axis=1)`.
        method: quadrature rule (see `xai_jax.quadrature`).
        n_steps: number of path points.
        internal_batch_size: largest number of path points per model call; None for all at
            once.

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
        layer: str | tuple | Callable | None = None,
        target_fn: Callable | None = None,
        method: str = "gausslegendre",
        n_steps: int | np.integer = 50,
        internal_batch_size: int | np.integer | None = 100,
    ):
        self.method = check_choice("method", method, METHODS)
        self.n_steps = check_positive_int("n_steps", n_steps)
        self.internal_batch_size = (
            None
            if internal_batch_size is None
            else check_positive_int("internal_batch_size", internal_batch_size)
        )
        if target_fn is not None and not callable(target_fn):
            raise TypeError(f"target_fn must be callable, got {type(target_fn).__name__}")
        self.target_fn = target_fn
        is_pair = isinstance(layer, tuple) and len(layer) == 2 and all(map(callable, layer))
        is_selector = callable(layer) and not isinstance(layer, tuple)
        if not (layer is None or isinstance(layer, str) or is_pair or is_selector):
            raise TypeError(
                "layer must be None, a haiku module name or a (layer_fn, head_fn) pair (or, "
                "for a flax or equinox model, a path or a function selecting the submodule), "
                f"got {layer!r}"
            )
        if isinstance(layer, str) and not layer:
            raise ValueError("layer must name a haiku module, got ''")
        self.layer = layer
        self.reset_predictor(model)

    def reset_predictor(self, model) -> None:
        """Use another model (same forms as the constructor's `model`)."""
        self._haiku = self._flax = self._equinox = None
        if _haiku_forms.is_model(model):
            self._haiku = _haiku_forms.as_model(model, "model")
            self._model = _haiku_forms.bind(*self._haiku)
        elif _flax_forms.is_model(model):
            self._flax = _flax_forms.as_model(model, "model")
            self._model = _flax_forms.bind(self._flax)
        elif _equinox_forms.is_model(model):
            self._equinox = _equinox_forms.as_model(model, "model")
            self._model = _equinox_forms.bind(self._equinox)
        elif callable(model):
            self._model = model
        else:
            raise TypeError(
                "model must be a JAX callable or a haiku model: an (hk.Transformed, params) "
                f"pair, or {_haiku_forms.FORMS}; or a flax or equinox model: {_LIBRARY_FORMS}; "
                f"got {type(model).__name__}"
            )
        self._splits: dict[bool, tuple[Callable, Callable]] = {}
        self._pair_checked = False  # a (layer_fn, head_fn) pair, against this model
        if self.layer is not None:
            self._split(False)  # check the layer now, not at the first explain

    def _split(self, to_inputs: bool) -> tuple[Callable, Callable]:
        if (
            to_inputs not in self._splits
            and (self._flax or self._equinox)
            and not (isinstance(self.layer, tuple))
        ):
            self._splits[to_inputs] = self._library_split(to_inputs)
        if to_inputs not in self._splits:
            if callable(self.layer) and not isinstance(self.layer, tuple):
                raise TypeError(
                    "layer is a function selecting a submodule, so model must be an nnx or "
                    f"equinox model ({_LIBRARY_FORMS})"
                )
            if isinstance(self.layer, str):
                if self._haiku is None:
                    raise TypeError(
                        f"layer={self.layer!r} names a haiku module, so model must be a haiku "
                        f"model: an (hk.Transformed, params) pair, or {_haiku_forms.FORMS}"
                    )
                transformed, params, state, rng = self._haiku
                from xai_jax.haiku import split  # haiku loads with the first haiku model

                self._splits[to_inputs] = split(
                    transformed,
                    params,
                    self.layer,
                    attribute_to_inputs=to_inputs,
                    rng=rng,
                    state=state,
                )
            else:
                if to_inputs:
                    raise ValueError(
                        "attribute_to_layer_inputs=True needs layer to be a haiku module name; "
                        "a (layer_fn, head_fn) pair fixes where the model is split"
                    )
                self._splits[to_inputs] = self.layer
        return self._splits[to_inputs]

    def _library_split(self, to_inputs: bool) -> tuple[Callable, Callable]:
        """The pair of a flax or equinox model at `layer` (a path or a selector)."""
        if self._flax is not None:
            from xai_jax.flax import split  # flax is loaded: the model was made with it

            module, variables = self._flax
            if variables is None:  # nnx: a path or a selector
                return split(module, self.layer, attribute_to_inputs=to_inputs)
            if not isinstance(self.layer, str):
                raise TypeError(
                    "a linen model is split at a scope path (layer='Dense_1'), got "
                    f"{type(self.layer).__name__}"
                )
            return split(module, variables, self.layer, attribute_to_inputs=to_inputs)
        from xai_jax.equinox import split  # equinox is loaded: the model was made with it

        if isinstance(self.layer, str):
            raise TypeError(
                "an equinox model is split at a function selecting the submodule, as in "
                f"eqx.tree_at (layer=lambda m: m.layers[1]), got layer={self.layer!r}"
            )
        module, state = self._equinox
        return split(module, self.layer, attribute_to_inputs=to_inputs, state=state)

    def _check_pair(self, x, kwargs: dict) -> None:
        """Raise unless the `(layer_fn, head_fn)` pair computes the model on `x` (done once)."""
        if self._pair_checked or not is_concrete((x, kwargs)):
            return
        layer_fn, head_fn = self.layer
        want = np.asarray(call(self._model, x, kwargs))
        got = np.asarray(call(_paths.Composed(layer_fn, head_fn), x, kwargs))
        if got.shape != want.shape:
            raise ValueError(
                "layer=(layer_fn, head_fn) does not split this model: head_fn(layer_fn(X)) has "
                f"shape {got.shape}, the model's output on X has shape {want.shape}"
            )
        dtype = want.dtype if np.issubdtype(want.dtype, np.floating) else np.float32
        tol = float(np.sqrt(np.finfo(dtype).eps))
        scale = 1.0 + float(np.max(np.abs(want), initial=0.0, where=np.isfinite(want)))
        error = np.abs(got.astype(np.float64) - want.astype(np.float64))
        same = (error <= tol * scale) | (got == want) | (np.isnan(got) & np.isnan(want))
        if not np.all(same):
            raise ValueError(
                "layer=(layer_fn, head_fn) does not split this model: head_fn(layer_fn(X)) "
                f"differs from the model's output on X by up to {np.nanmax(error):.3g} (outputs "
                f"up to {scale - 1.0:.3g}, tolerance {tol:.1e} relative); the pair must satisfy "
                "model(x) == head_fn(layer_fn(x))"
            )
        self._pair_checked = True

    def explain(
        self,
        X,
        forward_kwargs: Mapping[str, Any] | None = None,
        baselines=None,
        target=None,
        attribute_to_layer_inputs: bool | np.bool_ = False,
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

        Raises:
            ValueError: an empty batch, NaN/inf in `X` (checked before the model is called),
                a `(layer_fn, head_fn)` layer that does not compute the model on `X`, and as
                `integrated_gradients`.
            TypeError: as `integrated_gradients`.
        """
        to_inputs = check_bool("attribute_to_layer_inputs", attribute_to_layer_inputs)
        checked = as_inputs(X, "X")  # checked before the model runs; integers promoted
        inputs = checked.x
        kwargs = dict(forward_kwargs or {})
        if isinstance(self.layer, tuple):
            self._split(to_inputs)  # a pair splits at its outputs only
            self._check_pair(inputs, as_forward_kwargs(forward_kwargs, checked.batch))
        predictions = None
        if target is None and self.target_fn is not None:
            predictions = call(self._model, inputs, kwargs)
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
            attributions, deltas = integrated_gradients(self._model, inputs, baselines, **options)
        else:
            layer_fn, head_fn = self._split(to_inputs)
            attributions, deltas = layer_integrated_gradients(
                layer_fn, head_fn, inputs, baselines, **options
            )
        if predictions is None:  # after the attributions, whose checks come first
            predictions = call(self._model, inputs, kwargs)
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
                    "attribute_to_layer_inputs": to_inputs,
                },
                "version": __version__,
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


def _keyword_call(func: Callable, name: str, extra: dict, x):
    return func(**{name: x}, **extra)


def _positional_call(func: Callable, extra: dict, x):
    return func(x, **extra)


class _UserSampler(NamedTuple):
    """A user's `perturb_func(key, x_row, num_samples)` as a `local_surrogates` sampler.

    The engine measures distances to, and predicts at, sample 0, so sample 0 must be the
    instance: its shape is checked at trace time (static), its value eagerly on the first row
    by `LimeBase.attribute`; a row whose sample 0 is not its instance (seen only when traced)
    gets a NaN surrogate, never a surrogate about another point.
    """

    perturb_func: Callable
    num_samples: int

    def __call__(self, key, x_row, extra_row):
        out = self.perturb_func(key, x_row, self.num_samples)
        Z = None
        if isinstance(out, tuple):  # (interpretable representation, model inputs)
            Z, samples = out
            Z = jnp.asarray(Z).astype(x_row.dtype)
            if Z.ndim != 2 or Z.shape[0] != self.num_samples:
                raise ValueError(
                    f"perturb_func returned a representation Z of shape {Z.shape}, expected "
                    f"(num_samples, features) = ({self.num_samples}, features) for "
                    f"num_samples={self.num_samples}"
                )
        else:
            samples = out
        expected = (self.num_samples, *x_row.shape)
        if jnp.shape(samples) != expected:
            raise ValueError(
                f"perturb_func returned samples of shape {jnp.shape(samples)}, expected "
                f"(num_samples, features) = {expected}: one row per sample, sample 0 the "
                "instance itself"
            )
        samples = jnp.asarray(samples).astype(x_row.dtype)
        Z = samples if Z is None else Z
        return jnp.where(_is_instance(samples[0], x_row), Z, jnp.nan), samples


def _is_instance(sample, x_row) -> jax.Array:
    """Whether `sample` is the instance, to the round-off of rebuilding it from a mask
    (`b + 1 * (x - b)`)."""
    tol = math.sqrt(float(jnp.finfo(x_row.dtype).eps))
    return jnp.all(jnp.abs(sample - x_row) <= tol * (1.0 + jnp.abs(x_row)))


class _UserKernel(NamedTuple):
    kernel_func: Callable
    kernel_width: Any

    def __call__(self, distances):
        return self.kernel_func(distances, kernel_width=self.kernel_width)


class LimeBase:
    """explainax's `LimeBase` (seed 004) on `xai_jax.lime`'s vectorised engine.

    Every row of `X` gets a weighted linear surrogate of `func`, fit on a neighbourhood drawn by
    `perturb_func`; all rows are explained in one compiled program (chunks of rows when many).
    Differences from explainax, all deliberate:

    - default `kernel_width` is lime's `0.75 * sqrt(d)` (explainax: `0.75 * d`);
    - the default surrogate is a closed-form weighted ridge with `alpha=1` (lime's
      `Ridge(alpha=1)`; explainax fitted its ridge by SGD); a scikit-learn regressor may be
      given as `model_regressor` (fit per row on the host);
    - the default neighbourhood is Gaussian around each row, `x + N(0, 1)`, with the row itself
      as sample 0; a custom `perturb_func(key, x_row, num_samples)` returns the
      `[num_samples, d]` samples, or a pair `(Z, samples)` to fit the surrogate on an
      interpretable representation `Z [num_samples, F]` (e.g.
      `xai_jax.bernoulli_perturbation`'s masks). Its sample 0 must be the instance itself, as
      in lime (which sets it): distances are measured to sample 0 (to `Z[0]`, the instance's
      representation, for a pair) and `preds` is the surrogate at it. A perturb_func that
      perturbs every row (Captum's habit) is refused, not silently explained about another
      point: set `samples.at[0].set(x_row)`. Checked eagerly on the first row; a later row
      whose sample 0 is not its instance, or a traced `X`, gives that row a NaN surrogate;
    - `num_samples` counts the row itself (lime's convention), and `key=None` means
      `jax.random.key(0)`: the same explanation every call unless a key is passed;
    - the kernel is `kernel_func(distances, kernel_width=...)`, default
      `xai_jax.exponential_kernel` (lime's kernel; explainax added 1e-8 inside the root).

    explainax's misspelled keywords `kernal_func` and `input_paramter_name` are accepted with a
    `DeprecationWarning`.

    Args:
        func: the black box, called as `func(**{input_parameter_name: rows},
            **additional_func_args)` on `[rows, d]`; JAX or not (NumPy/scikit-learn functions
            run through `jax.pure_callback`). Or a haiku model (the forms in the module
            docstring), called on the rows positionally: `apply(params, rng, rows,
            **additional_func_args)` or its form's equivalent.
        additional_func_args: keyword arguments of `func` (e.g. `{"params": params}`; arrays
            in it are arguments of the compiled program, not constants).
        model_regressor: None or a scikit-learn regressor.
        kernel_func: `(distances, kernel_width=w) -> weights`.
        kernel_width: positive width; None for `0.75 * sqrt(d)`.
        perturb_func: see above; None for Gaussian noise of scale 1.
        input_parameter_name: the keyword under which `func` takes its input.
        pairwise_distances_metric: a `xai_jax.pairwise_distances` metric.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import LimeBase
        >>> w = jnp.array([[1.0], [-2.0], [0.5]])
        >>> explainer = LimeBase(lambda x, bias: x @ w + bias, additional_func_args={"bias": 3.0})
        >>> coefs, preds = explainer.attribute(jnp.ones((2, 3)))
        >>> coefs.round(2), preds.round(2)
        (Array([[ 1. , -2. ,  0.5],
               [ 1. , -2. ,  0.5]], dtype=float32), Array([[2.5],
               [2.5]], dtype=float32))
    """

    def __init__(
        self,
        func: Callable | tuple,
        additional_func_args: Mapping[str, Any] | None = None,
        model_regressor: Any = None,
        kernel_func: Callable | None = None,
        kernel_width: ArrayLike | None = None,
        perturb_func: Callable | None = None,
        input_parameter_name: str = "x",
        pairwise_distances_metric: str = "euclidean",
        *,
        kernal_func: Callable | None = None,
        input_paramter_name: str | None = None,
    ):
        if kernal_func is not None:
            warnings.warn(
                "LimeBase(kernal_func=...) is explainax's misspelling; use kernel_func",
                DeprecationWarning,
                stacklevel=2,
            )
            if kernel_func is not None:
                raise TypeError("pass kernel_func or kernal_func, not both")
            kernel_func = kernal_func
        if input_paramter_name is not None:
            warnings.warn(
                "LimeBase(input_paramter_name=...) is explainax's misspelling; use "
                "input_parameter_name",
                DeprecationWarning,
                stacklevel=2,
            )
            input_parameter_name = input_paramter_name
        haiku = _is_library_model(func)
        bound = _as_function(func, "func")
        if not isinstance(input_parameter_name, str):
            raise TypeError(f"input_parameter_name must be a str, got {input_parameter_name!r}")
        if haiku and input_parameter_name != "x":
            raise ValueError(
                f"input_parameter_name={input_parameter_name!r} names func's keyword input, but "
                "a haiku model takes its input positionally: leave input_parameter_name at 'x'"
            )
        for name, value in (("kernel_func", kernel_func), ("perturb_func", perturb_func)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
        if additional_func_args is not None and not isinstance(additional_func_args, Mapping):
            raise TypeError(
                "additional_func_args must be a dict of keyword arguments, got "
                f"{type(additional_func_args).__name__}"
            )
        check_choice("pairwise_distances_metric", pairwise_distances_metric, METRICS)
        if kernel_width is not None:
            check_positive("kernel_width", kernel_width)
        if model_regressor is not None and not all(
            hasattr(model_regressor, a) for a in ("fit", "predict")
        ):
            raise TypeError(
                f"model_regressor must be a scikit-learn regressor, got {model_regressor!r}"
            )
        self.func = func
        self.additional_func_args = dict(additional_func_args or {})
        self.model_regressor = model_regressor
        self.kernel_func = kernel_func if kernel_func is not None else exponential_kernel
        self.kernel_width = kernel_width
        self.perturb_func = perturb_func
        self.input_parameter_name = input_parameter_name
        self.pairwise_distances_metric = pairwise_distances_metric
        # one bound model for every call, so compiled programs are reused
        if haiku:
            self._model = Partial(_positional_call, bound, self.additional_func_args)
        else:
            self._model = Partial(
                _keyword_call, func, input_parameter_name, self.additional_func_args
            )

    def attribute(self, X, key=None, num_samples: int | np.integer = 5000):
        """Surrogates of every row of `X`.

        Args:
            X: `[n, d]` rows to explain.
            key: PRNG key (row `i` uses `jax.random.split(key, n)[i]`); None for
                `jax.random.key(0)`.
            num_samples: neighbours per row, the row itself included.

        Returns:
            `(coefs, preds)`: surrogate coefficients `[n, d]` (`[n, k, d]` when `func`
            returns `k > 1` values per row) and the surrogate's prediction at each row
            `[n, k]`.

        Raises:
            ValueError: `X` not 2-D, `num_samples < 1`; a `perturb_func` whose samples are not
                `(num_samples, d)` or whose `Z` has not `num_samples` rows (checked when traced:
                under `jit` too), or whose sample 0 is not the instance `X[0]` (checked eagerly,
                before the model runs).
        """
        num_samples = check_positive_int("num_samples", num_samples)
        X = as_rows("X", X)
        width = self.kernel_width
        if width is None:
            width = 0.75 * math.sqrt(X.shape[1])
        key = jax.random.key(0) if key is None else key
        if self.perturb_func is None:
            sample = GaussianNeighbourhood(num_samples, jnp.ones(X.shape[1], X.dtype), None)
        else:
            sample = _UserSampler(self.perturb_func, num_samples)
            if X.shape[0] and is_concrete((X, key)):  # the first row, before the model runs
                first = as_row_keys(key, X.shape[0])[0]
                _, samples = sample(first, X[0], None)
                if not bool(_is_instance(samples[0], X[0])):
                    gap = float(jnp.max(jnp.abs(samples[0] - X[0])))
                    raise ValueError(
                        "perturb_func must return the instance itself as sample 0 (lime's "
                        "convention: the kernel weighs each sample by its distance to sample "
                        "0, and the local prediction is the surrogate's at sample 0); for X[0] "
                        f"its sample 0 differs by up to {gap:.3g}: "
                        "set it, e.g. samples.at[0].set(x_row)"
                    )
        result = local_surrogates(
            key,
            self._model,
            X,
            sample,
            _UserKernel(self.kernel_func, width),
            num_samples=num_samples,
            metric=self.pairwise_distances_metric,
            regressor=self.model_regressor,
            all_outputs=True,
        )
        coefs = result.coef[:, 0] if result.coef.shape[1] == 1 else result.coef
        return coefs, result.local_pred


# seed 003's keyword spellings -> ours
_LOSS_KEYWORDS = {"K": "kappa", "AE": "autoencoder", "inference": "predict_fn"}
_GRADIENT_KEYWORDS = {"num_iter": "num_samples"}
_OPTIMIZERS = {"aoexpgrad": aoexpgrad, "elastic_net_fista": elastic_net_fista}
_LOSSES = {"cem": cem_loss}


class ExplanationGenerator:
    """The MAX library's `ExplanationGenerator` (seed 003) on `contrastive_explanation`.

    `loss`, `optimizer` and `gradient` are names or our functions: `loss` `"cem"` (or
    `cem_loss`, or any `(**loss_kwargs) -> loss(delta)` builder taking `predict_fn` and `x`);
    `optimizer` `"aoexpgrad"` / `"elastic_net_fista"` (or either function, or any
    `(**optimizer_kwargs) -> optax.GradientTransformation`); `gradient` `"autodiff"`, `"urv"`
    or `"numerical"`. The kwargs take the seed's spellings: `mode`, `c`, `gamma`, `K`, `AE`
    (and the classifier as `inference` or `predict_fn`, or pass it to `run`; the classifier and
    the autoencoder may be haiku models, in the forms of the module docstring); `l1`, `l2`, `eta`
    (and `lower`/`upper`); `mu`, `num_iter` (URV directions). As in the MAX library the search
    starts at zeros inside the default box, PP in `[0, x]` and PN in `[0, 1 - x]`, which
    assumes inputs in [0, 1]: `run` refuses a concrete input outside [0, 1] with the default box
    (clipping to it would explain another input; a traced input, under `jit`, is not checked),
    and `lower`/`upper` in `optimizer_kwargs` replace it (e.g. `{"lower": 0.0, "upper": 255.0 -
    x}` for PN on one image in [0, 255]; either one given alone leaves the other side
    unbounded).

    The optimizer is built once, in `__init__`, when its bounds do not depend on the input
    (explicit `lower`/`upper`, or a loss without a CEM `mode`); with the default box it is
    built per `run`, and `aoexpgrad`/`elastic_net_fista` compare by value with the box as an
    operand, so repeated runs with same-shaped inputs reuse one compiled program (a custom
    factory should return equal objects for equal arguments to do the same).

    Raises:
        ValueError: unknown `loss`/`optimizer`/`gradient` names or CEM `mode`,
            `num_iter`/`save_freq` < 1; in `run`, no classifier, or an input outside [0, 1]
            with the default box.
        TypeError: `loss` or `optimizer` neither a name nor a callable, an optax
            `GradientTransformation` passed as `optimizer` (a factory is expected), or a
            factory that does not return one.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import ExplanationGenerator
        >>> w = jnp.array([[1.0, -1.0], [2.0, -2.0], [-1.0, 1.0]])
        >>> cem = ExplanationGenerator("cem", "aoexpgrad", "autodiff",
        ...     loss_kwargs={"mode": "PN", "c": 10.0, "K": 0.1},
        ...     optimizer_kwargs={"l1": 0.01, "l2": 0.01, "eta": 1.0}, num_iter=300, save_freq=100)
        >>> saved, meta = cem.run(jnp.array([0.2, 0.1, 0.5]), jax.random.key(0),
        ...                       inference_call=lambda z: jax.nn.softmax(z @ w))
        >>> sorted(saved), meta["found"]
        ([100, 200, 300], True)
    """

    def __init__(
        self,
        loss: str | Callable = "cem",
        optimizer: str | Callable = "aoexpgrad",
        gradient: str = "autodiff",
        loss_kwargs: Mapping[str, Any] | None = None,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        gradient_kwargs: Mapping[str, Any] | None = None,
        num_iter: int | np.integer = 1500,
        save_freq: int | np.integer = 500,
    ):
        if isinstance(loss, str):
            loss = _LOSSES[check_choice("loss", loss, tuple(_LOSSES))]
        if isinstance(optimizer, str):
            optimizer = _OPTIMIZERS[check_choice("optimizer", optimizer, tuple(_OPTIMIZERS))]
        if hasattr(optimizer, "init") and hasattr(optimizer, "update"):
            raise TypeError(
                "optimizer must be a name or a factory (**optimizer_kwargs, lower, upper) -> "
                "optax GradientTransformation, got the transformation itself: pass its factory, "
                "e.g. 'aoexpgrad', or lambda lower, upper, **kw: optax.adam(1e-2) (the box is "
                "also applied after every step)"
            )
        for name, value in (("loss", loss), ("optimizer", optimizer)):
            if not callable(value):
                raise TypeError(f"{name} must be a name or a callable, got {value!r}")
        self.gradient = check_choice("gradient", gradient, GRADIENTS)
        self.loss = loss
        self.optimizer = optimizer
        self.loss_kwargs = _renamed(loss_kwargs, _LOSS_KEYWORDS)
        for name in ("predict_fn", "autoencoder"):
            if self.loss_kwargs.get(name) is not None:
                self.loss_kwargs[name] = _as_function(
                    self.loss_kwargs[name], f"loss_kwargs[{name!r}]"
                )
        if loss is cem_loss and "mode" in self.loss_kwargs:
            check_choice("mode", self.loss_kwargs["mode"], MODES)
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.gradient_kwargs = _renamed(gradient_kwargs, _GRADIENT_KEYWORDS)
        if self.gradient_kwargs.get("mu", 0.0) is None:
            del self.gradient_kwargs["mu"]  # the seed's None: the step-dependent default
        self.num_iter = check_positive_int("num_iter", num_iter)
        self.save_freq = check_positive_int("save_freq", save_freq)
        self._progress = _Progress()  # one callback object: runs share a compiled program
        opt_kwargs = dict(self.optimizer_kwargs)
        lower, upper = opt_kwargs.pop("lower", None), opt_kwargs.pop("upper", None)
        self._default_box = (
            lower is None and upper is None and self.loss_kwargs.get("mode") in MODES
        )
        # bounds that do not depend on the input: one optimizer for every run, checked now
        self._optimizer = None if self._default_box else self._build(opt_kwargs, lower, upper)

    def _build(self, opt_kwargs: dict, lower, upper):
        optimizer = self.optimizer(**opt_kwargs, lower=lower, upper=upper)
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise TypeError(
                "optimizer must return an optax GradientTransformation (an object with init "
                f"and update), got {type(optimizer).__name__} from {self.optimizer!r}"
            )
        return optimizer

    def run(self, image, key=None, inference_call: Callable | tuple | None = None, progress=None):
        """Explain one input.

        Args:
            image: the instance (any shape, no batch axis).
            key: PRNG key for the URV gradient; None for `jax.random.key(0)`.
            inference_call: the batched classifier (a callable or a haiku model), unless
                `loss_kwargs` has it.
            progress: show a tqdm bar; None shows one for runs of 1000+ steps on a terminal.

        Returns:
            `(saved, meta)`: `{step: iterate}` every `save_freq` steps (the MAX library's
            ordered dict) and `meta` with `explanation` (the best valid iterate), `found`,
            `best_loss` and `losses`.

        Raises:
            ValueError: no classifier; with the default box, a concrete `image` outside
                [0, 1] (checked before the loss or the loop runs; pass `lower`/`upper` in
                `optimizer_kwargs`); NaN/inf in a concrete `image`; and as
                `contrastive_explanation`.
            TypeError: the optimizer factory does not return an optax transformation.
        """
        x = as_float_array("image", image)
        loss_kwargs = dict(self.loss_kwargs)
        if inference_call is not None:
            loss_kwargs["predict_fn"] = _as_function(inference_call, "inference_call")
        if "predict_fn" not in loss_kwargs:
            raise ValueError("no classifier: pass inference_call or loss_kwargs['inference']")
        opt_kwargs = dict(self.optimizer_kwargs)
        lower, upper = opt_kwargs.pop("lower", None), opt_kwargs.pop("upper", None)
        if self._default_box:
            _check_unit_box(x)  # before the loss and the loop run
            lower, upper = 0.0, (x if loss_kwargs["mode"] == "PP" else 1.0 - x)
            optimizer = self._build(opt_kwargs, lower, upper)
        else:
            optimizer = self._optimizer
        bounds = {"lower": lower, "upper": upper}
        loss_fn = self.loss(x=x, **loss_kwargs)
        if progress is None:
            progress = self.num_iter >= 1000 and sys.stderr.isatty()
        import tqdm  # loaded when a generator runs

        bar = self._progress.bar = tqdm.tqdm(total=self.num_iter, disable=not progress)
        result = contrastive_explanation(
            jax.random.key(0) if key is None else key,
            loss_fn,
            jnp.zeros_like(x),
            optimizer=optimizer,
            gradient=self.gradient,
            num_iter=self.num_iter,
            save_freq=self.save_freq,
            gradient_kwargs=self.gradient_kwargs,
            callback=self._progress.advance if progress else None,
            **bounds,
        )
        bar.close()
        self._progress.bar = None
        saved = {(i + 1) * self.save_freq: it for i, it in enumerate(result.history)}
        meta = {
            "explanation": result.explanation,
            "found": bool(result.found),
            "best_loss": float(result.best_loss),
            "losses": result.losses,
        }
        return saved, meta


class _Progress:
    """The tqdm bar of the current run behind one callback (a bound method, equal across
    runs, so the compiled loop is reused)."""

    bar: Any = None

    def advance(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)


def _check_unit_box(x: jax.Array) -> None:
    """Raise if a concrete instance leaves [0, 1], the inputs the default CEM box assumes."""
    if not is_concrete(x) or x.size == 0:
        return
    lo, hi = float(jnp.min(x)), float(jnp.max(x))
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"image has values in [{lo:.4g}, {hi:.4g}], outside [0, 1]: the default box (PP: "
            "[0, x], PN: [0, 1 - x]) assumes inputs in [0, 1] and would clip the search into "
            "it; pass the box of the perturbation as optimizer_kwargs={'lower': ..., "
            "'upper': ...} (for data in [a, b]: PN [a - x, b - x], PP between 0 and x), or "
            "rescale the input to [0, 1]"
        )


def _renamed(kwargs: Mapping[str, Any] | None, names: Mapping[str, str]) -> dict:
    return {names.get(k, k): v for k, v in (kwargs or {}).items()}
