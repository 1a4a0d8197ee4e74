"""Captum's noise tunnel around any attribution function: SmoothGrad and its variants.

The samples are summed in chunks by `xai_jax._chunks.run` (one key per sample, so the chunking
does not change the draws); also importable from `xai_jax.integrated_gradients`.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Int, PyTree, Shaped

from xai_jax import _chunks, _paths
from xai_jax._blackbox import call, shape_of
from xai_jax._checks import as_key, check_choice, check_positive_int, check_scale
from xai_jax._inputs import as_inputs

__all__ = ["NT_TYPES", "smoothgrad"]

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


class _NoiseConfig(NamedTuple):
    attribution_fn: Callable
    per_chunk: int  # samples per chunk
    nt_type: str
    num_samples: int


class _NoiseOperands(NamedTuple):
    x: Any  # pytree of float arrays [batch, ...]
    stdev: jax.Array  # scalar
    keys: jax.Array  # [num_samples] PRNG keys, one per sample
    shift: Any  # vargrad: attribution_fn(x), subtracted before the sums; None otherwise


def smoothgrad(
    key: ArrayLike,
    attribution_fn: Callable[[Any], Any],
    x: PyTree[ArrayLike],
    *,
    num_samples: int | np.integer = 5,
    stdev: ArrayLike = 1.0,
    nt_type: str = "smoothgrad",
    batch_size: int | np.integer | None = None,
):
    """Captum's `NoiseTunnel` around any attribution function: SmoothGrad and its variants.

    Evaluates `attribution_fn(x + stdev * N(0, 1))` for `num_samples` noise draws and returns
    their mean (`smoothgrad`), the mean of their squares (`smoothgrad_sq`) or their variance
    `E[a^2] - E[a]^2` (`vargrad`, Captum's formula). `vargrad` sums `a - a0` and its square,
    with `a0 = attribution_fn(x)` the noise-free attribution (one extra call): the same
    variance, without the cancellation of `E[a^2] - E[a]^2` in float32 when the attributions
    are large against their spread (Captum's sums can give negative variances there); what
    round-off leaves below 0 is 0. `stdev` is absolute, as in Captum.
    Sample `s` draws its noise from `jax.random.split(key, num_samples)[s]`, so the result does
    not depend on `batch_size`, which bounds how many samples are evaluated at once (`vmap`ped;
    None: all at once).

    Args:
        key: PRNG key.
        attribution_fn: maps a batch shaped like `x` to attributions (any pytree), e.g.
            `lambda x: integrated_gradients(fn, x, target=t)`.
        x: inputs (array or pytree) with a leading batch axis.
        num_samples: number of noise draws.
        stdev: standard deviation of the noise (a finite float >= 0; it may be traced).
        nt_type: `smoothgrad`, `smoothgrad_sq` or `vargrad`.
        batch_size: samples evaluated at once.

    Returns:
        Attributions shaped like `attribution_fn(x)`.

    Raises:
        ValueError: `num_samples < 1`, unknown `nt_type`, a negative or infinite concrete
            `stdev`, an empty batch, NaN/inf in a concrete `x` (traced ones give non-finite
            attributions in the rows they touch).
        TypeError: `key` is not a PRNG key.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from xai_jax import smoothgrad
        >>> grad_fn = jax.grad(lambda x: jnp.sum(x**2))
        >>> x = jnp.array([[0.5, -1.0]])
        >>> smoothgrad(jax.random.key(0), grad_fn, x, num_samples=4, stdev=0.0)
        Array([[ 1., -2.]], dtype=float32)
    """
    key = as_key(key)
    num_samples = check_positive_int("num_samples", num_samples)
    check_choice("nt_type", nt_type, NT_TYPES)
    check_scale("stdev", stdev)
    size = num_samples if batch_size is None else check_positive_int("batch_size", batch_size)
    inputs = as_inputs(x)
    num_chunks, per_chunk = _paths.chunking(num_samples, 1, size)
    shift = call(attribution_fn, inputs.x, {}) if nt_type == "vargrad" else None
    keys = jax.random.split(key, num_samples)
    ops = _NoiseOperands(inputs.x, jnp.asarray(stdev), keys, shift)
    config = _NoiseConfig(attribution_fn, per_chunk, nt_type, num_samples)
    out = shape_of(attribution_fn, inputs.x, {})
    return _chunks.run(_noise_chunk, _noise_finish, config, ops, (out, out), num_chunks)


def _noise_chunk(
    config: _NoiseConfig, c: Int[Array, ""], ops: _NoiseOperands
) -> tuple[PyTree[Shaped[Array, " ..."]], PyTree[Shaped[Array, " ..."]]]:
    """The sums of the chunk's attributions (less `ops.shift`, for vargrad) and of their
    squares (padded samples count 0)."""
    keys, real = _paths.sample_keys(ops.keys, c, config.per_chunk)
    attrs = jax.vmap(lambda k: config.attribution_fn(_paths.noise(k, ops.x, ops.stdev)))(keys)
    if ops.shift is not None:
        attrs = jax.tree.map(lambda a, a0: a - a0[None], attrs, ops.shift)

    def sums(a):
        a = jnp.where(real.reshape(-1, *([1] * (a.ndim - 1))), a, jnp.zeros((), a.dtype))
        return a.sum(0), (a * a).sum(0)

    first, second = zip(*(sums(a) for a in jax.tree.leaves(attrs)), strict=True)
    treedef = jax.tree.structure(attrs)
    return jax.tree.unflatten(treedef, first), jax.tree.unflatten(treedef, second)


def _noise_finish(config: _NoiseConfig, total: Any, ops: _NoiseOperands) -> Any:
    sums, squares = total
    n = config.num_samples
    if config.nt_type == "smoothgrad":
        return jax.tree.map(lambda s: s / n, sums)
    if config.nt_type == "smoothgrad_sq":
        return jax.tree.map(lambda q: q / n, squares)
    variance = lambda s, q: jnp.maximum(q / n - (s / n) ** 2, jnp.zeros((), q.dtype))
    return jax.tree.map(variance, sums, squares)
