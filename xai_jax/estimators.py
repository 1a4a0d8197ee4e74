"""Gradient estimators for black boxes: central finite differences and random directions (URV)."""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Real

from xai_jax import _chunks
from xai_jax._blackbox import _NOT_JAX, as_model, as_point_model
from xai_jax._checks import (
    as_float_array,
    as_key,
    check_finite,
    check_positive,
    check_positive_int,
    is_concrete,
)
from xai_jax.perturbations import standard_normal

__all__ = ["numerical_gradient", "urv_gradient"]

# Model inputs evaluated at once are kept near this many bytes: on XLA:CPU buffers above
# ~16-32 MB are page-fault bound, and smaller ones stay in cache between the build of the
# perturbed rows and the model's first layer.
_CHUNK_BYTES = 8 * 2**20


def numerical_gradient(
    fn: Callable[..., ArrayLike],
    x: Real[ArrayLike, " batch *features"],
    *,
    eps: ArrayLike | None = None,
    args: tuple = (),
    batch_size: int | None = None,
) -> Float[Array, " batch *outputs_then_features"]:
    """Central finite-difference Jacobian of a batched function, as alibi's `num_grad_batch`.

    `grad[b, ..., f] = (fn(x_b + h_f e_f) - fn(x_b - h_f e_f)) / (2 h_f)` for every example `b`,
    every output entry and every feature `f` (any feature shape). All `2 F` perturbed copies of
    every example are evaluated as batches of `batch_size` rows (`xai_jax._chunks.map_rows`: a
    host loop over one compiled chunk when called eagerly, compiled once per shapes and options,
    and a `lax.map` under `jit`), so memory stays bounded whatever the batch and feature count,
    and the whole function is jittable and differentiable. An integer- or boolean-valued `fn`
    is differenced in `x`'s floating dtype. A NumPy black box (one that fails on JAX tracers,
    such as a scikit-learn `predict_proba`) is called through `jax.pure_callback`, as in
    `lime`: probed once on two rows, then once per chunk (without `args`, which the callback
    cannot pass: bind them into `fn`); it is not differentiable.

    The denominator is the step actually taken in floating point, `(x + h) - (x - h)`, rather
    than `2 h`: that removes the representation error of the step from every estimate.
    When `fn` is a JAX function, prefer `jax.jacrev`: it is exact and far cheaper.

    Static arguments: `fn` and `batch_size`; `x`, `eps` and `args` may be traced.

    Args:
        fn: `fn(x, *args)` maps a batch `[N, *features]` to `[N, *outputs]` (`[N]` for scalar
            outputs), a JAX or a NumPy function. It must treat rows independently.
        x: `[B, *features]` points.
        eps: step size; a positive scalar, one per feature (shape `[F]` or `features`). None
            picks `cbrt(machine eps) * max(1, |x|)` per entry (about 4.9e-3 for float32 inputs
            of unit scale, 6.1e-6 for float64), which balances truncation against round-off.
            A concrete `eps` the dtype cannot resolve at some entry (`x + eps == x - eps`, as
            alibi's 1e-8 default in float32 at |x| >= 0.2) raises.
        args: extra positional arguments for `fn`, passed unchanged to every call.
        batch_size: model rows per call (the package's unit for batch sizes; rounded down to
            a multiple of 2, one `+h` and one `-h` row per pair); None sizes calls near 8 MB
            of input.

    Returns:
        `[B, *outputs, *features]` estimates, in `x`'s floating dtype; empty (`fn` not called
        on perturbed points) when `B = 0` or `x` has no features.

    Raises:
        ValueError: `x` without a batch axis, `eps` that is not positive and finite or has the
            wrong shape, or below the dtype's resolution at a concrete `x`, `batch_size < 2`,
            NaN/inf in a concrete `x` (traced ones give non-finite estimates in their rows).
        TypeError: a NumPy black box with `args`.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from xai_jax import numerical_gradient
        >>> fn = lambda x: jnp.stack([x[:, 0] * x[:, 1], x[:, 1] ** 2], axis=1)
        >>> np.asarray(numerical_gradient(fn, jnp.array([[2.0, 3.0]]))).round(3)
        array([[[3., 2.],
                [0., 6.]]], dtype=float32)
    """
    x = as_float_array("x", x, min_ndim=1)
    batch, feature_shape = x.shape[0], x.shape[1:]
    num_features = math.prod(feature_shape)
    flat = x.reshape(batch, num_features)
    steps = _steps(eps, flat, feature_shape)  # [B, F] or broadcastable
    fn, out_shape = _model(fn, args, x)
    if out_shape[:1] != (batch,):
        raise ValueError(f"fn must return a leading batch axis of {batch}, got shape {out_shape}")

    num_pairs = batch * num_features
    if num_pairs == 0:  # an empty batch (or no features): an empty Jacobian, no model call
        return jnp.zeros(out_shape + feature_shape, x.dtype)
    if batch_size is None:
        pairs_per_chunk = max(1, _CHUNK_BYTES // (2 * num_features * x.dtype.itemsize))
    else:
        pairs_per_chunk = check_positive_int("batch_size", batch_size, minimum=2) // 2
    num_chunks = -(-num_pairs // pairs_per_chunk)
    pairs_per_chunk = -(-num_pairs // num_chunks)  # same chunk count, least padding
    steps = jnp.broadcast_to(steps, flat.shape)
    if eps is not None:
        _check_resolved(eps, flat, steps)

    config = _Differences(fn, args, flat, steps, feature_shape)
    pairs = jnp.arange(num_pairs, dtype=jnp.int32)
    grads = _chunks.map_rows(_differences, config, pairs, num_pairs, pairs_per_chunk)
    grads = grads.reshape(batch, num_features, -1).transpose(0, 2, 1)
    return grads.reshape(out_shape + feature_shape)


class _Differences(NamedTuple):
    fn: Callable
    args: tuple
    flat: jax.Array  # [B, F] the points
    steps: jax.Array  # [B, F] the step of every entry
    feature_shape: tuple[int, ...]


def _model(fn: Callable, args: tuple, x: jax.Array) -> tuple[Callable, tuple[int, ...]]:
    """`fn` and the shape of `fn(x, *args)`; a NumPy black box (one that fails on tracers)
    goes behind `jax.pure_callback` (`_blackbox.as_model`), which takes no `args`."""
    if not args:  # as_model caches whether fn fails on tracers: an eager call retraces nothing
        model, out = as_model(fn, x, x.shape[0])
        return model, out.shape
    try:
        return fn, _chunks.shape_of(_apply, (fn, args), x).shape
    except _NOT_JAX as error:
        raise TypeError(
            "fn is not a JAX function (it failed on a tracer) and is called through "
            "jax.pure_callback, which passes no args: bind them, e.g. "
            "fn=functools.partial(f, *args)"
        ) from error


def _apply(model: tuple, x: jax.Array) -> jax.Array:
    fn, args = model
    return jnp.asarray(fn(x, *args))


def _differences(config: _Differences, pair: jax.Array) -> jax.Array:
    """Central differences of a chunk of `(row, feature)` pairs (flat indices): `[P, outputs]`."""
    num_features = config.flat.shape[1]
    num = pair.shape[0]
    row, feature = pair // num_features, pair % num_features
    base = config.flat[row]
    hot = jnp.arange(num_features, dtype=jnp.int32)[None, :] == feature[:, None]
    h = config.steps[row, feature][:, None]
    plus, minus = base + jnp.where(hot, h, 0), base - jnp.where(hot, h, 0)
    taken = jnp.sum(jnp.where(hot, plus - minus, 0), axis=1)
    inputs = jnp.concatenate([plus, minus]).reshape(2 * num, *config.feature_shape)
    out = _apply((config.fn, config.args), inputs).reshape(2 * num, -1)
    if not jnp.issubdtype(out.dtype, jnp.inexact):
        # an integer (or boolean) black box: differences in the points' float dtype, never a
        # step cast to an integer (that divides by zero)
        out = out.astype(config.flat.dtype)
    diff = out[:num] - out[num:]
    return diff / taken[:, None].astype(diff.dtype)


def _check_resolved(eps, flat: jax.Array, steps: jax.Array) -> None:
    """Raise for a concrete `eps` so small that `x + eps == x - eps` in `x`'s dtype somewhere
    (the difference quotient would be 0 / 0); traced points cannot be checked."""
    if not (is_concrete(flat) and is_concrete(steps)):
        return
    if bool(_unresolved(flat, steps)):
        raise ValueError(
            f"eps={eps} is below the resolution of {flat.dtype} at some entries of x "
            f"(x + eps == x - eps there, a 0 / 0 estimate): use a larger eps, or eps=None "
            f"for cbrt(machine eps) * max(1, |x|)"
        )


@jax.jit
def _unresolved(flat: jax.Array, steps: jax.Array) -> jax.Array:
    return jnp.any((flat + steps) - (flat - steps) <= 0)


def _steps(eps, flat: jax.Array, feature_shape: tuple[int, ...]) -> jax.Array:
    if eps is None:
        scale = jnp.cbrt(jnp.finfo(flat.dtype).eps).astype(flat.dtype)
        return scale * jnp.maximum(1, jnp.abs(flat))
    check_positive("eps", eps)
    check_finite("eps", eps)
    eps = jnp.asarray(eps, dtype=flat.dtype)
    if eps.ndim == 0:
        return eps
    if eps.shape in ((flat.shape[1],), feature_shape):
        return eps.reshape(1, -1)
    raise ValueError(
        f"eps must be a scalar or one value per feature (shape ({flat.shape[1]},) or "
        f"{feature_shape}), got shape {eps.shape}"
    )


def urv_gradient(
    key: ArrayLike,
    fn: Callable[[Array], ArrayLike],
    x: Real[ArrayLike, "*features"],
    *,
    num_samples: int = 100,
    mu: ArrayLike | None = None,
    step: int | ArrayLike = 1,
    batch_size: int | None = None,
) -> Float[Array, "*features"]:
    """Uniform-random-vector estimate of the gradient of a scalar black box (seed 003, MAX).

    `g = d / (mu q) * sum_i (fn(x + mu u_i) - fn(x)) u_i` with `q = num_samples` directions
    `u_i` uniform on the unit sphere of `R^d` (normalised Gaussians) and
    `mu = 1 / sqrt(step) / sqrt(d)` when `mu` is None, where `step` is the optimiser's iteration
    counter (the MAX library counts calls, starting at 1); with `mu` given, `step` is unused.
    The Gaussian coordinates are quantised to 2**16 levels, two per 32 random bits
    (`gaussian_perturbation`'s normals), cheaper than full-precision normals at the same
    accuracy (measured in `benchmarks/`): the levels' quantiles are symmetric about 0, so
    the normalised directions stay exactly isotropic (`E[u u^T] = I/d`) and the estimator keeps
    its expectation (see `benchmarks/`). `fn` is called on single points and vectorised with
    `vmap`; directions are drawn and evaluated in chunks of `batch_size`, each from its own key
    (`fold_in(key, chunk)`), so memory stays bounded for any `num_samples` (`_chunks.run`:
    called eagerly, a host loop over one chunk compiled once per shapes and options; under
    `jit`, a `lax.scan`). The estimate is unbiased for the gradient of a smoothed `fn` and its
    variance falls as `1/q`; where `fn` is JAX, `jax.grad` is exact and far cheaper. A NumPy
    black box (one that fails on JAX tracers) is called through `jax.pure_callback`, one point
    at a time.

    Static arguments: `fn`, `num_samples` and `batch_size`; `key`, `x`, `mu` and `step` may be
    traced.

    Args:
        key: a PRNG key (typed or legacy uint32).
        fn: scalar function of one point of `x`'s shape (JAX or NumPy).
        x: the point.
        num_samples: number of random directions `q` (>= 1).
        mu: smoothing radius (> 0); may be traced.
        step: iteration counter for the default `mu`, a number >= 1 (non-integers are taken
            as written); may be traced. Only used when `mu` is None: a concrete `step` other
            than 1 together with `mu` raises, a traced one (an optimiser's counter) is ignored.
        batch_size: model rows per call: directions per chunk, each one call of `fn` under
            `vmap` (the package's unit); None sizes chunks near 8 MB.

    Returns:
        The estimate, with `x`'s shape and floating dtype (empty, with no call of `fn`, when
        `x` has no entries).

    Raises:
        ValueError: `num_samples < 1`, a concrete `mu` that is not positive and finite,
            `step < 1`, a concrete `step != 1` with `mu` given, `fn` not scalar, NaN/inf in a
            concrete `x` (traced ones give a non-finite estimate).
        TypeError: `key` is not a PRNG key, `step` is not a real number.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import urv_gradient
        >>> g = urv_gradient(jax.random.key(0), lambda v: v @ jnp.arange(3.0), jnp.zeros(3),
        ...                  num_samples=4000)
        >>> bool(jnp.allclose(g, jnp.arange(3.0), atol=0.3))
        True
    """
    key = as_key(key)
    num_samples = check_positive_int("num_samples", num_samples)
    x = as_float_array("x", x)
    _check_step(step, mu)
    dim = math.prod(x.shape)
    if dim == 0:
        return jnp.zeros(x.shape, x.dtype)
    if mu is None:
        mu = jax.lax.rsqrt(jnp.asarray(step, x.dtype) * dim)
    else:
        check_positive("mu", mu)
        check_finite("mu", mu)
        mu = jnp.asarray(mu, x.dtype)
    fn, out = as_point_model(fn, x)
    if out.shape != ():
        raise ValueError(f"fn must return a scalar, got shape {out.shape}")

    if batch_size is None:
        batch_size = max(1, _CHUNK_BYTES // (dim * x.dtype.itemsize))
    batch_size = min(check_positive_int("batch_size", batch_size), num_samples)
    num_chunks = -(-num_samples // batch_size)
    f0 = _chunks.call(_value, fn, x)
    config = _Directions(fn, x.shape, batch_size, num_samples)
    like = jax.ShapeDtypeStruct((dim,), x.dtype)
    operands = (key, x.reshape(dim), mu, f0)
    return _chunks.run(_directions, _urv_finish, config, operands, like, num_chunks)


def _check_step(step, mu) -> None:
    """`step` is the optimiser's iteration counter, a real >= 1 (usually an integer; a traced
    one is not checked). With `mu` given it is unused: a concrete value other than the default
    1 raises, a traced counter (an optimiser loop passes its own either way) is ignored."""
    if not is_concrete(step):
        return
    try:
        value = np.asarray(step)
    except (TypeError, ValueError):
        value = None
    if value is None or value.dtype == np.bool_ or value.dtype.kind not in "iuf":
        raise TypeError(
            f"step must be a real number >= 1 (the optimiser's iteration counter), got {step!r}"
        )
    if not np.all(value >= 1):
        raise ValueError(f"step must be >= 1, got {step}")
    if mu is not None and not np.all(value == 1):
        raise ValueError(
            f"step={step} is only used for the default mu (1 / sqrt(step * d)); it has no "
            f"effect with mu={mu} given: pass one of them"
        )


class _Directions(NamedTuple):
    fn: Callable
    shape: tuple[int, ...]  # of the point
    batch_size: int  # directions per chunk
    num_samples: int


def _value(fn: Callable, x: jax.Array) -> jax.Array:
    return jnp.asarray(fn(x), x.dtype)


def _directions(config: _Directions, c: jax.Array, operands) -> jax.Array:
    """`sum_i (fn(x + mu u_i) - fn(x)) u_i / |u_i|^2` over chunk `c`'s directions: `[d]`."""
    key, flat, mu, f0 = operands
    size = config.batch_size
    u = standard_normal(jax.random.fold_in(key, c), (size, flat.shape[0]), flat.dtype)
    # Unit directions are u_i / |u_i|; the scale rides along instead of a normalised copy.
    inv_norm = jax.lax.rsqrt(jnp.sum(u * u, axis=1))
    batched_fn = jax.vmap(lambda v: config.fn(v.reshape(config.shape)))
    delta = jnp.asarray(batched_fn(flat[None] + (mu * inv_norm)[:, None] * u), flat.dtype) - f0
    # The last chunk may run past num_samples: those directions do not count.
    valid = c * size + jnp.arange(size, dtype=jnp.int32) < config.num_samples
    return jnp.where(valid, delta * inv_norm, 0) @ u


def _urv_finish(config: _Directions, total: jax.Array, operands) -> jax.Array:
    _, flat, mu, _ = operands
    return (total * (flat.shape[0] / (mu * config.num_samples))).reshape(config.shape)
