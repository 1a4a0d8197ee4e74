"""Neighbourhood sampling for local surrogates: Gaussian noise and Bernoulli feature masks."""

import functools
import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Bool, Float, Real

from xai_jax._checks import (
    as_float_array,
    as_key,
    check_positive,
    check_positive_int,
    is_concrete,
)
from xai_jax._features import check_segments
from xai_jax._inputs import as_broadcast

__all__ = ["bernoulli_perturbation", "gaussian_perturbation", "random_bits", "standard_normal"]


def gaussian_perturbation(
    key: ArrayLike,
    x: Real[ArrayLike, "*features"],
    num_samples: int,
    *,
    scale: ArrayLike = 1.0,
    mean: ArrayLike | None = None,
) -> Float[Array, " num_samples *features"]:
    """Gaussian neighbourhood of one instance, row 0 being the instance itself.

    Rows `1..num_samples-1` are `x + scale * N(0, 1)`, or `mean + scale * N(0, 1)` when `mean`
    is given (lime's tabular sampling from training statistics). `scale` and `mean` broadcast
    against `x` (one value per feature, say). `vmap` over instances with one key per instance
    (`jax.random.split(key, n)`).

    The standard normals have 16-bit resolution: each is the exact normal quantile of one of
    65536 equiprobable levels (so |z| <= 4.33; `jax.random.normal`'s float32 draws reach about
    5.4), two per 32-bit random word, looked up in a table. Sampling dominates LIME's cost, and
    this is several times cheaper on CPU than `jax.random.normal` (see `benchmarks/`); the
    mean, variance and quantiles are those of N(0, 1) to within 1/65536. The random bits come
    from the key's generator with `jax.threefry_partitionable(False)` (faster bits on CPU;
    per-instance keys keep sharded batches independent), whatever the global setting, so
    results do not depend on it.

    Static arguments: `num_samples` (a shape); `x`, `scale` and `mean` may be traced.

    Args:
        key: a PRNG key (typed or legacy uint32).
        x: one instance, any shape.
        num_samples: rows in the result, including `x` itself (>= 1).
        scale: standard deviation, a scalar or an array broadcastable to `x`.
        mean: centre of the samples; None samples around `x`.

    Returns:
        `[num_samples, *x.shape]` samples.

    Raises:
        ValueError: `num_samples < 1`, `scale` that is negative or does not broadcast to `x`,
            NaN/inf in a concrete `x`, `scale` or `mean` (traced ones give non-finite samples).
        TypeError: `key` is not a PRNG key.

    Example:
        >>> import jax
        >>> from xai_jax import gaussian_perturbation
        >>> z = gaussian_perturbation(jax.random.key(0), jax.numpy.zeros(3), 4, scale=0.1)
        >>> z.shape, bool((z[0] == 0).all())
        ((4, 3), True)
    """
    key = as_key(key)
    num_samples = check_positive_int("num_samples", num_samples)
    x = as_float_array("x", x)
    check_positive("scale", scale, allow_zero=True)
    scale = as_broadcast("scale", scale, x)
    centre = x if mean is None else as_broadcast("mean", mean, x)
    noise = standard_normal(key, (num_samples - 1, *x.shape), x.dtype)
    return jnp.concatenate([x[None], centre[None] + scale[None] * noise], axis=0)


def bernoulli_perturbation(
    key: ArrayLike,
    x: Real[ArrayLike, "*features"],
    num_samples: int,
    *,
    p: ArrayLike = 0.5,
    baseline: ArrayLike = 0.0,
    segments: ArrayLike | None = None,
    num_segments: int | None = None,
) -> tuple[Bool[Array, "num_samples num_features"], Float[Array, " num_samples *features"]]:
    """Random on/off masks over features (or segments) and the model inputs they give.

    Each mask entry is 1 (feature kept) with probability `p`, independently; row 0 is all ones,
    so `samples[0] == x`. Where a mask is 0 the input takes `baseline` (a scalar or an array
    broadcastable to `x`, e.g. the mean colour of each superpixel as lime uses). For images pass
    `segments`, an integer label map with the shape of `x` or of its leading axes (an `[H, W]`
    map for an `[H, W, C]` image: a label covers all channels of its pixels) and labels
    `0..num_segments-1`: one mask entry per segment switches all its pixels.
    The masks compare raw uniform bits with `p * 2**32` (no floats are drawn).

    Static arguments: `num_samples` and `num_segments` (shapes); `x`, `p`, `baseline` and
    `segments` may be traced.

    Args:
        key: a PRNG key (typed or legacy uint32).
        x: one instance, any shape.
        num_samples: rows, including the all-ones mask (>= 1).
        p: probability that a feature is kept, in [0, 1].
        baseline: value of switched-off features.
        segments: optional integer label map over `x` or its leading axes; None makes every
            element of `x` a feature.
        num_segments: number of segment labels. Required when `segments` is traced (under
            `jit`; pixels with a label outside `[0, num_segments)` then become NaN);
            otherwise `segments.max() + 1`.

    Returns:
        `(masks, samples)`: `masks` `[num_samples, num_features]` booleans and `samples`
        `[num_samples, *x.shape]`.

    Raises:
        ValueError: `num_samples < 1`, `p` not a scalar in [0, 1], segments with negative
            labels, labels `>= num_segments`, a `segments` shape that is not a leading part of
            `x`'s, a `baseline` that does not broadcast to `x`, or NaN/inf in a concrete `x` or
            `baseline` (traced ones are not checked: samples that keep a non-finite feature
            are non-finite).
        TypeError: `key` is not a PRNG key, or `segments` is not an integer array.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import bernoulli_perturbation
        >>> image = jnp.ones((2, 2))
        >>> masks, samples = bernoulli_perturbation(
        ...     jax.random.key(0), image, 5, segments=jnp.array([[0, 0], [1, 1]]))
        >>> masks.shape, samples.shape, bool(masks[0].all())
        ((5, 2), (5, 2, 2), True)
    """
    key = as_key(key)
    num_samples = check_positive_int("num_samples", num_samples)
    x = as_float_array("x", x)
    if np.ndim(p) != 0:
        raise ValueError(f"p must be a scalar probability in [0, 1], got shape {np.shape(p)}")
    if is_concrete(p) and not 0 <= float(p) <= 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    baseline = as_broadcast("baseline", baseline, x)

    if segments is None:
        num_features = math.prod(x.shape)
    else:
        segments, num_features = check_segments(segments, num_segments, x)

    masks = _bernoulli_bits(key, p, (num_samples - 1, num_features))
    masks = jnp.concatenate([jnp.ones((1, num_features), bool), masks], axis=0)
    if segments is None:
        keep = masks.reshape(num_samples, *x.shape)
    else:
        trailing = (1,) * (x.ndim - segments.ndim)
        labels = jnp.broadcast_to(segments.reshape(segments.shape + trailing), x.shape)
        keep = masks[:, labels]
    samples = jnp.where(keep, x[None], baseline[None])
    if segments is not None and not is_concrete(segments):
        # Unchecked labels: an out-of-range one gives NaN inputs rather than a clamped mask.
        valid = (labels >= 0) & (labels < num_features)
        samples = jnp.where(valid[None], samples, jnp.nan)
    return masks, samples


def random_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 random bits, drawn with the non-partitionable threefry (faster on CPU)."""
    with jax.threefry_partitionable(False):
        return jax.random.bits(key, shape, jnp.uint32)


def standard_normal(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """N(0, 1) samples of 16-bit resolution: two per random word, by a quantile table."""
    n = math.prod(shape)
    words = random_bits(key, ((n + 1) // 2,))
    levels = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:n]
    return jnp.asarray(_normal_quantiles(), dtype)[levels].reshape(shape)


@functools.lru_cache(maxsize=1)
def _normal_quantiles() -> np.ndarray:
    """The N(0, 1) quantiles of the midpoints of 65536 equiprobable levels, in float64."""
    inv_cdf = statistics.NormalDist().inv_cdf
    table = np.array([inv_cdf((i + 0.5) / 65536) for i in range(65536)])
    table.setflags(write=False)
    return table


def _bernoulli_bits(key: jax.Array, p, shape: tuple[int, ...]) -> jax.Array:
    """`P(True) = p` by comparing raw uint32 bits with `p * 2**32` (no float conversion)."""
    # 2**32 - 256 is the largest float32 below 2**32, so the cast cannot overflow; p >= 1 is
    # handled by the `|` below.
    threshold = jnp.clip(jnp.asarray(p, jnp.float32) * 2.0**32, 0, 2.0**32 - 256)
    bits = random_bits(key, shape)
    return (bits < threshold.astype(jnp.uint32)) | (jnp.asarray(p) >= 1)
