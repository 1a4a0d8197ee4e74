"""Similarity kernels that weight a local surrogate's samples: lime's and KernelSHAP's."""

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Real

from xai_jax import _coalitions
from xai_jax._checks import as_float_array, check_positive, check_positive_int, is_concrete

__all__ = ["exponential_kernel", "shapley_kernel"]


def exponential_kernel(
    distances: Real[ArrayLike, "..."], kernel_width: ArrayLike
) -> Float[Array, "..."]:
    """lime's similarity kernel `sqrt(exp(-d**2 / kernel_width**2))`.

    Evaluated as `exp(-d**2 / (2 kernel_width**2))`, the same value, which does not underflow to
    0 for `d / kernel_width` between about 9.3 and 13.2 in float32 as the literal form does.
    `kernel_width` may be traced (differentiable); lime's default for tabular data is
    `0.75 * sqrt(num_features)`, for images 0.25 (with cosine distances).

    Static arguments: nothing: `distances` and `kernel_width` may be traced.

    Args:
        distances: distances of any shape.
        kernel_width: positive width, a scalar or an array broadcastable to `distances`.

    Returns:
        Weights in (0, 1] with the shape of `distances`.

    Raises:
        ValueError: a concrete `kernel_width <= 0`, or negative values or NaN/inf in concrete
            `distances` (traced ones are not checked: NaN gives NaN weights, an infinite
            distance weight 0, a negative one the weight of its absolute value).

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import exponential_kernel
        >>> exponential_kernel(jnp.array([0.0, 1.0, 2.0]), 1.0)
        Array([1.        , 0.60653067, 0.13533528], dtype=float32)
    """
    check_positive("kernel_width", kernel_width)
    distances = as_float_array("distances", distances)
    if is_concrete(distances) and distances.size:
        with jax.ensure_compile_time_eval():  # a constant inside the caller's trace: check now
            negative = bool(_any_negative(distances))
        if negative:
            raise ValueError(
                f"distances must be >= 0, got a minimum of {float(jnp.min(distances))} "
                "(a distance, not a difference; traced ones are not checked)"
            )
    width = jnp.asarray(kernel_width, dtype=distances.dtype)
    return jnp.exp(-0.5 * jnp.square(distances / width))


def shapley_kernel(
    num_features: int, coalition_sizes: ArrayLike | Sequence[int]
) -> Float[Array, "..."]:
    """KernelSHAP's weight of one coalition of a given size.

    `pi(s) = (M - 1) / (binom(M, s) * s * (M - s))` for `M = num_features`. The empty and full
    coalitions (`s = 0` or `s = M`) have infinite weight: they are constraints, not samples
    (`kernel_shap` enforces them exactly), and get `inf`. Summed over the `binom(M, s)`
    coalitions of one size this is shap's per-size weight `(M - 1) / (s (M - s))`. A table of all
    `M + 1` weights is computed once per `M` in float64 (log space, so a large `M` underflows
    gracefully to 0 instead of overflowing the binomial) and indexed by the sizes.

    Static arguments: `num_features`; `coalition_sizes` may be traced.

    Args:
        num_features: `M`, the number of players (>= 1), static.
        coalition_sizes: integer sizes in `[0, M]`, any shape.

    Returns:
        Float weights with the shape of `coalition_sizes`.

    Raises:
        ValueError: `num_features < 1`, or a concrete size outside `[0, num_features]` (a traced
            one gives NaN).

    Example:
        >>> from xai_jax import shapley_kernel
        >>> shapley_kernel(4, [1, 2, 3])
        Array([0.25 , 0.125, 0.25 ], dtype=float32)
    """
    m = check_positive_int("num_features", num_features)
    sizes = jnp.asarray(coalition_sizes)
    if not jnp.issubdtype(sizes.dtype, jnp.integer):
        raise TypeError(f"coalition_sizes must be integers, got dtype {sizes.dtype}")
    if is_concrete(sizes) and sizes.size:
        concrete = np.asarray(sizes)
        if concrete.min() < 0 or concrete.max() > m:
            raise ValueError(
                f"coalition_sizes must lie in [0, num_features={m}], "
                f"got values in [{concrete.min()}, {concrete.max()}]"
            )
    table = jnp.asarray(_size_weights(m), jnp.result_type(float))
    # Traced sizes cannot be checked: out-of-range ones give NaN instead of a clamped weight.
    return table.at[sizes].get(mode="fill", fill_value=jnp.nan, wrap_negative_indices=False)


@jax.jit
def _any_negative(distances: jax.Array) -> jax.Array:
    return jnp.any(distances < 0)


@functools.lru_cache(maxsize=64)
def _size_weights(m: int) -> np.ndarray:
    """Per-coalition weight for every size 0..m, in float64 (log space: no overflow)."""
    weights = np.full(m + 1, np.inf)
    for s in range(1, m):
        log_binom = math.lgamma(m + 1) - math.lgamma(s + 1) - math.lgamma(m - s + 1)
        # KernelSHAP's coalition design weighs its size classes by the same `size_weight`
        weights[s] = math.exp(math.log(_coalitions.size_weight(m, s)) - log_binom)
    weights.setflags(write=False)
    return weights
