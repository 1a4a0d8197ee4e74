"""Contrastive explanations (CEM): pertinent negatives and positives, found by optimisation.

`cem_loss` builds the MAX library's CEM objective of a perturbation `delta` (seed 003);
`contrastive_explanation` minimises any such loss with any optax optimizer (the MAX library's
AoExpGrad is `xai_jax.optimizers.aoexpgrad`) in one `lax.scan`, with the gradient from autodiff
or, for black boxes, from `urv_gradient` or `numerical_gradient`.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike
from jaxtyping import Real

from xai_jax import _chunks
from xai_jax._blackbox import as_model
from xai_jax._checks import (
    as_float_array,
    as_key,
    check_bounds,
    check_choice,
    check_positive,
    check_positive_int,
)
from xai_jax.estimators import numerical_gradient, urv_gradient

__all__ = [
    "CEMLoss",
    "ContrastiveResult",
    "GRADIENTS",
    "MODES",
    "cem_loss",
    "contrastive_explanation",
]

MODES = ("PN", "PP")
GRADIENTS = ("autodiff", "urv", "numerical")


class CEMLoss(NamedTuple):
    """The CEM objective of a perturbation `delta` of `x` (a callable pytree: see `cem_loss`)."""

    mode: str
    predict_fn: Callable
    x: jax.Array
    target: jax.Array
    c: Any
    gamma: Any
    kappa: Any
    autoencoder: Callable | None

    def _input(self, delta):
        # shapes are static: checked at trace time, under jit too; (1,) or [B, *features]
        # would broadcast against the instance and explain something else
        if jnp.shape(delta) != self.x.shape:
            raise ValueError(
                f"delta must have the shape of the instance x, {self.x.shape}, got "
                f"{jnp.shape(delta)} (one perturbation of one instance: vmap for a batch)"
            )
        # PN adds to the instance; PP keeps the part `delta` of it
        return self.x + delta if self.mode == "PN" else delta

    def _margin(self, delta):
        """`p_t - max_{i != t} p_i` of the explained input."""
        p = self.predict_fn(self._input(delta)[None])[0]
        others = jnp.where(jnp.arange(p.shape[0]) == self.target, -jnp.inf, p)
        return p[self.target] - jnp.max(others)

    def __call__(self, delta):
        margin = self._margin(delta)
        hinge = margin if self.mode == "PN" else -margin
        loss = self.c * jnp.maximum(hinge, -self.kappa)
        if self.autoencoder is not None:
            z = self._input(delta)
            recon = self.autoencoder(z[None])
            if jnp.shape(recon) != (1, *z.shape):
                raise ValueError(
                    f"autoencoder must return its input's shape: got {jnp.shape(recon)} for a "
                    f"batch of shape {(1, *z.shape)} (the instance x has shape {z.shape})"
                )
            loss = loss + self.gamma * jnp.sum(jnp.square(z - recon[0]))
        return loss

    def valid(self, delta) -> jax.Array:
        """PN: the class changed; PP: the class is kept."""
        margin = self._margin(delta)
        return margin < 0 if self.mode == "PN" else margin > 0


def cem_loss(
    mode: str,
    predict_fn: Callable,
    x: Real[ArrayLike, "*features"],
    *,
    c: ArrayLike = 1.0,
    gamma: ArrayLike = 10.0,
    kappa: ArrayLike = 10.0,
    autoencoder: Callable | None = None,
) -> CEMLoss:
    """The MAX library's CEM loss of a perturbation `delta` of one instance `x`.

    With `t = argmax predict_fn(x)` and `p = predict_fn(.)` of the explained input:

    - `PN` (pertinent negative: the smallest addition that changes the class), input
      `x + delta`: `c * max(p_t - max_{i != t} p_i, -kappa) + gamma * |z - AE(z)|^2`;
    - `PP` (pertinent positive: the smallest part of `x` that keeps it), input `delta`:
      `c * max(max_{i != t} p_i - p_t, -kappa) + gamma * |z - AE(z)|^2`,

    the reconstruction term only with an `autoencoder`. `kappa` is the seed's `K`. The sparsity
    terms (`l1`, `l2`) belong to the optimizer (`aoexpgrad`), as in the MAX library. The result
    is a callable pytree: `loss(delta)` is the scalar loss, `loss.valid(delta)` whether `delta`
    explains (PN: class changed; PP: class kept).

    Static arguments: `mode`, `predict_fn` and `autoencoder`; `x`, `c`, `gamma` and `kappa` may
    be traced.

    Args:
        mode: `PN` or `PP`.
        predict_fn: batched classifier `[B, *features] -> [B, classes]` (probabilities or
            scores); a JAX function for autodiff; a NumPy one (called through
            `jax.pure_callback`) works with the URV and numerical gradients.
        x: the instance, without a batch axis.
        c: weight of the prediction term.
        gamma: weight of the reconstruction term.
        kappa: hinge margin.
        autoencoder: optional batched `AE(z)`.

    Returns:
        `CEMLoss`, a callable `delta -> scalar`.

    Raises:
        ValueError: unknown `mode`, negative weights, `predict_fn` not returning
            `[1, classes]` with at least two classes, or NaN/inf in a concrete `x` (a traced
            one gives a NaN loss). When the loss is called (or traced: shapes are static, so
            under `jit` too): a `delta` whose shape is not exactly `x`'s (no broadcasting:
            `(1,)` or a batch `[B, *x.shape]` is refused; `vmap` explains a batch), or an
            `autoencoder` whose output on `[1, *x.shape]` has another shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import cem_loss
        >>> predict = lambda z: jnp.stack([z.sum(1), -z.sum(1)], axis=1)
        >>> loss = cem_loss("PN", predict, jnp.ones(3), c=1.0, kappa=0.5)
        >>> float(loss(jnp.zeros(3))), bool(loss.valid(jnp.full(3, -2.0)))
        (6.0, True)
    """
    check_choice("mode", mode, MODES)
    x = as_float_array("x", x)
    for name, value in (("c", c), ("gamma", gamma), ("kappa", kappa)):
        check_positive(name, value, allow_zero=True)
    predict_fn, out = as_model(predict_fn, x[None], 1)  # NumPy classifiers via pure_callback
    if out.ndim != 2 or out.shape[1] < 2:
        raise ValueError(
            f"predict_fn must be a classifier returning [batch, classes >= 2], got {out} for "
            f"one input of shape {x.shape}"
        )
    target = jnp.argmax(predict_fn(x[None])[0])
    return CEMLoss(mode, predict_fn, x, target, c, gamma, kappa, autoencoder)


class ContrastiveResult(NamedTuple):
    """What `contrastive_explanation` found; a pytree.

    Attributes:
        explanation: the best valid iterate (lowest loss among those `loss_fn.valid` accepts),
            or the last iterate when none was valid or `loss_fn` has no `valid`.
        best_loss: its loss (`inf` when none was valid).
        found: whether a valid iterate was found.
        history: `[num_iter // save_freq, *x0.shape]` iterates saved every `save_freq` steps.
        losses: `[num_iter]` loss at every iterate.
    """

    explanation: jax.Array
    best_loss: jax.Array
    found: jax.Array
    history: jax.Array
    losses: jax.Array


def contrastive_explanation(
    key: ArrayLike,
    loss_fn: Callable,
    x0: Real[ArrayLike, "*features"],
    *,
    optimizer: optax.GradientTransformation,
    gradient: str = "autodiff",
    num_iter: int = 1500,
    save_freq: int = 500,
    lower: Real[ArrayLike, "*features"] | None = None,
    upper: Real[ArrayLike, "*features"] | None = None,
    gradient_kwargs: dict | None = None,
    callback: Callable[[int], Any] | None = None,
) -> ContrastiveResult:
    """Minimise `loss_fn` from `x0` with `optimizer`, as seed 003's `ExplanationGenerator`.

    The loop is one `lax.scan` of `num_iter` steps: the gradient at the iterate (from
    `jax.grad`, or `urv_gradient` with the step counter `t` (from 1) setting its default `mu`
    as in seed 003, or `numerical_gradient`), the optimizer's update, then the projection onto
    `[lower, upper]`. The best valid iterate is tracked inside the scan and every `save_freq`-th
    iterate kept. `vmap` explains a batch (one key per instance).

    Static arguments: `gradient`, `num_iter`, `save_freq`, the counts in `gradient_kwargs`, and
    the non-array parts of `loss_fn`, `optimizer` and `callback` (functions by identity: one
    compiled program per function object, so build closures and optax optimizers once, not per
    call; `aoexpgrad(...)`/`elastic_net_fista(...)` and `cem_loss(...)` compare by value, so
    writing them inline reuses the program); the arrays they hold, `key`, `x0`, the bounds and
    `mu`/`eps` are operands.

    Args:
        key: PRNG key (used by the URV gradient; one key per step, folded in).
        loss_fn: scalar loss of the iterate, e.g. `cem_loss(...)`; with a `valid` method, the
            best valid iterate is tracked.
        x0: the starting point (MAX starts at zeros).
        optimizer: any optax transformation (`aoexpgrad`, `optax.adam`, ...).
        gradient: `autodiff`, `urv` or `numerical`.
        num_iter: optimisation steps.
        save_freq: steps between saved iterates (divides `num_iter` sensibly: `<= num_iter`).
        lower: lower bound of the iterate (scalar or `x0`'s shape); None: unbounded.
        upper: upper bound; None: unbounded.
        gradient_kwargs: passed to the gradient estimator: `num_samples`, `mu`, `batch_size`
            for `"urv"`; `eps`, `batch_size` for `"numerical"`; none for `"autodiff"`. The
            counts are static; `mu` and `eps` (scalars or arrays) are traced operands.
        callback: called on the host with the number of steps done after every `save_freq`
            steps (`jax.debug.callback`; a progress bar, say).

    Returns:
        `ContrastiveResult`.

    Raises:
        TypeError: `optimizer` is not an optax transformation (e.g. the factory `optax.adam`
            itself: call it, `optax.adam(1e-2)`).
        ValueError: unknown `gradient`, `gradient_kwargs` the estimator does not take,
            `num_iter`/`save_freq` < 1, `save_freq > num_iter`,
            bounds of the wrong shape or with `lower > upper`, NaN/inf in a concrete `x0` (a
            traced one gives non-finite iterates and `found=False`). Bounds may be infinite.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from xai_jax import contrastive_explanation
        >>> res = contrastive_explanation(jax.random.key(0), lambda v: jnp.sum((v - 1.0) ** 2),
        ...     jnp.zeros(2), optimizer=optax.sgd(0.1), num_iter=100, save_freq=50, upper=0.5)
        >>> res.explanation, res.history.shape
        (Array([0.5, 0.5], dtype=float32), (2, 2))
    """
    key = as_key(key)
    _check_optimizer(optimizer)
    check_choice("gradient", gradient, GRADIENTS)
    num_iter = check_positive_int("num_iter", num_iter)
    save_freq = check_positive_int("save_freq", save_freq)
    if save_freq > num_iter:
        raise ValueError(f"save_freq={save_freq} exceeds num_iter={num_iter}: nothing is saved")
    x0 = as_float_array("x0", x0)
    check_bounds(lower, upper)
    lower = _bound("lower", lower, x0, -jnp.inf)
    upper = _bound("upper", upper, x0, jnp.inf)
    gradient_kwargs = _check_gradient_kwargs(gradient, gradient_kwargs)
    options = (gradient, num_iter, save_freq)
    # one compiled program per (loss, optimizer, options), reused by eager calls: the loss's
    # arrays (a CEMLoss's instance, say) and the estimator's float options (`mu`, `eps`) are
    # arguments, not constants; its counts (`num_samples`, `batch_size`) are static
    static, arrays = _chunks.partition((loss_fn, optimizer, callback, gradient_kwargs))
    return _optimise(static, options, arrays, key, x0, lower, upper)


def _check_optimizer(optimizer) -> None:
    """Raise unless `optimizer` is an optax transformation (an optax factory passed uncalled,
    `optimizer=optax.adam`, would fail deep in the loop with `no attribute 'init'`)."""
    if callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None)):
        return
    if callable(optimizer):
        kind = f"{type(optimizer).__name__} {getattr(optimizer, '__name__', repr(optimizer))}"
        hint = ": call the factory, e.g. optax.adam(learning_rate)"
    else:
        kind, hint = f"{type(optimizer).__name__} {optimizer!r}", ", e.g. optax.adam(1e-2)"
    raise TypeError(
        "optimizer must be an optax GradientTransformation (an object with init and update), "
        f"got {kind}{hint}"
    )


_GRADIENT_KWARGS = {"autodiff": (), "urv": ("num_samples", "mu", "batch_size"),
                    "numerical": ("eps", "batch_size")}  # fmt: skip
_COUNTS = ("num_samples", "batch_size")


def _check_gradient_kwargs(gradient: str, gradient_kwargs) -> dict:
    """The estimator's options, counts as static ints and the rest as arrays (may be traced)."""
    if gradient_kwargs is None:
        return {}
    if not isinstance(gradient_kwargs, dict):
        raise TypeError(f"gradient_kwargs must be a dict, got {type(gradient_kwargs).__name__}")
    valid = _GRADIENT_KWARGS[gradient]
    unknown = sorted(set(gradient_kwargs) - set(valid))
    if unknown:
        takes = f"takes {', '.join(valid)}" if valid else "takes none (pass gradient_kwargs=None)"
        raise ValueError(f"gradient_kwargs {unknown} unused: gradient={gradient!r} {takes}")
    return {
        name: value if name in _COUNTS or value is None else jnp.asarray(value)
        for name, value in gradient_kwargs.items()
    }


@functools.partial(jax.jit, static_argnums=(0, 1))
def _optimise(static, options, arrays, key, x0, lower, upper) -> ContrastiveResult:
    loss_fn, optimizer, callback, gradient_kwargs = _chunks.combine(static, arrays)
    gradient, num_iter, save_freq = options
    grad_fn = _gradient(gradient, loss_fn, gradient_kwargs)
    valid_fn = getattr(loss_fn, "valid", None)

    def step(carry, t):
        y, state, best, best_loss = carry
        g = grad_fn(jax.random.fold_in(key, t), y, t + 1)
        updates, state = optimizer.update(g, state, y)
        y = jnp.clip(optax.apply_updates(y, updates), lower, upper)
        loss = loss_fn(y)
        better = loss < best_loss
        if valid_fn is not None:
            better = better & valid_fn(y)
        best = jnp.where(better, y, best)
        best_loss = jnp.where(better, loss, best_loss)
        return (y, state, best, best_loss), loss

    x0c = jnp.clip(x0, lower, upper)
    init = (x0c, optimizer.init(x0c), x0c, jnp.asarray(jnp.inf, x0.dtype))
    (y, _, best, best_loss), (losses, iterates) = _scan(step, init, num_iter, save_freq, callback)
    found = jnp.isfinite(best_loss)
    explanation = jnp.where(found, best, y) if valid_fn is not None else y
    if valid_fn is None:
        best_loss, found = losses[-1], jnp.asarray(True)
    return ContrastiveResult(explanation, best_loss, found, iterates, losses)


def _scan(step, init, num_iter: int, save_freq: int, callback=None):
    """`lax.scan` over `num_iter` steps keeping every `save_freq`-th iterate (two nested scans:
    the outer one stores `num_iter // save_freq` iterates, never all of them)."""
    blocks, rest = divmod(num_iter, save_freq)

    def block(carry, b):
        carry, losses = jax.lax.scan(
            lambda c, i: step(c, b * save_freq + i), carry, jnp.arange(save_freq)
        )
        if callback is not None:
            jax.debug.callback(lambda done: callback(int(done)), (b + 1) * save_freq)
        return carry, (losses, carry[0])

    carry, (losses, saved) = jax.lax.scan(block, init, jnp.arange(blocks))
    losses = losses.reshape(-1)
    if rest:
        carry, tail = jax.lax.scan(
            lambda c, i: step(c, blocks * save_freq + i), carry, jnp.arange(rest)
        )
        losses = jnp.concatenate([losses, tail])
    return carry, (losses, saved)


def _bound(name: str, value, x0: jax.Array, default: float) -> jax.Array:
    if value is None:
        return jnp.full(x0.shape, default, x0.dtype)
    arr = jnp.asarray(value, x0.dtype)
    if arr.shape not in ((), x0.shape):
        raise ValueError(f"{name} must be a scalar or of x0's shape {x0.shape}, got {arr.shape}")
    return jnp.broadcast_to(arr, x0.shape)


def _gradient(name: str, loss_fn: Callable, kwargs: dict) -> Callable:
    """`(key, y, t) -> gradient of loss_fn at y` for the chosen source."""
    if name == "autodiff":
        grad = jax.grad(loss_fn)
        return lambda key, y, t: grad(y)
    if name == "urv":
        return lambda key, y, t: urv_gradient(key, loss_fn, y, step=t, **kwargs)

    def batched(rows):
        return jax.vmap(loss_fn)(rows)

    return lambda key, y, t: numerical_gradient(batched, y[None], **kwargs)[0]
