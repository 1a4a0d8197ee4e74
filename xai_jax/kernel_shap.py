"""KernelSHAP: Shapley values of a batch of instances by weighted regression on coalitions.

The coalition design (shap's sampling scheme) and the constrained regression are in
`xai_jax._coalitions`; the Shapley kernel weights come from `xai_jax.kernels`' table. This
module evaluates the model on the coalitions: instances in chunks (`_chunks.map_rows`), and
inside a chunk the coalition-by-background rows of each instance as 2-D `[rows, d]` batches,
in pieces when one instance has more than `_MAX_ROWS_PER_CALL` of them.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int, Real

from xai_jax import _chunks
from xai_jax._blackbox import as_model, mark_invalid, selected
from xai_jax._checks import as_row_keys, check_positive_int
from xai_jax._coalitions import coalitions, shapley_regression
from xai_jax._inputs import as_rows, as_target

__all__ = ["kernel_shap"]

# KernelSHAP evaluates coalitions x background rows per instance (102,400 at the defaults with
# 50 rows): one call for them all is faster than smaller pieces in a `lax.map`, so an instance
# is split only beyond this many rows, to bound memory.
_MAX_ROWS_PER_CALL = 2**18


class _ShapConfig(NamedTuple):
    model: Callable
    background: jax.Array  # [b, d]
    num_samples: int
    per_call: int  # coalitions per model call


def _expected_values(config: _ShapConfig, masks, x, index):
    """`E_b f(x where mask else background_b)` for every coalition: `[m, S]`.

    Runs inside a chunk of instances (already traced), so the coalitions are split into
    pieces of `per_call` with the shared layer's traced schedule (`_chunks.map_traced`).
    """
    bg = config.background
    m, _, d = masks.shape

    def piece(mask):  # [q, m, d] -> [q, m]
        q = mask.shape[0]
        mask = jnp.moveaxis(mask, 0, 1)
        inputs = jnp.where(mask[:, :, None, :], x[:, None, None, :], bg[None, None])
        out = config.model(inputs.reshape(m * q * bg.shape[0], d))
        rep = None if index is None else jnp.repeat(index, q * bg.shape[0])
        return jnp.moveaxis(selected(out, rep).reshape(m, q, bg.shape[0]).mean(axis=2), 0, 1)

    values = _chunks.map_traced(piece, jnp.moveaxis(masks, 1, 0), config.per_call)
    return jnp.moveaxis(values, 0, 1)


def _shap_chunk(config: _ShapConfig, rows: dict):
    d = rows["x"].shape[1]
    masks, weights = jax.vmap(lambda k: coalitions(k, d, config.num_samples))(rows["key"])
    index = rows["index"]
    fx = selected(config.model(rows["x"]), index)
    out_bg = config.model(config.background).reshape(config.background.shape[0], -1)
    fnull = (out_bg[:, 0] if index is None else out_bg[:, index]).mean(axis=0)
    fnull = jnp.broadcast_to(fnull, fx.shape)
    if masks.shape[1] == 0:  # one feature: efficiency alone decides
        return (fx - fnull)[:, None]
    values = _expected_values(config, masks, rows["x"], index)
    return jax.vmap(shapley_regression)(masks, values - fnull[:, None], weights, fx - fnull)


def kernel_shap(
    key: ArrayLike,
    fn: Callable,
    x: Real[ArrayLike, "n d"],
    background: Real[ArrayLike, "b d"],
    *,
    num_samples: int = 2048,
    target: Int[ArrayLike, "*n"] | None = None,
    batch_size: int | None = None,
) -> Float[Array, "n d"]:
    """KernelSHAP: Shapley values of each row of `x` by weighted regression on coalitions.

    A coalition `S` of features is valued `v(S) = mean_b f(x_S, background_b rest)`; Shapley
    values are the weighted least-squares fit of `v(S) - v({})` on the coalition masks with the
    Shapley kernel weights, with efficiency `sum(phi) = f(x) - mean f(background)` enforced
    exactly (shap's `KernelExplainer`, `l1_reg=False`). Coalitions follow shap's scheme: whole
    coalition sizes (with their complements) are enumerated while the budget allows, the rest
    are sampled with their complements, one key per row. When `num_samples >= 2**d - 2` every
    coalition is enumerated and the values are exact Shapley values (d <= 11 with the default).
    shap merges repeated draws into one weighted sample; we keep them as separate rows of equal
    weight, which is the same regression. Features whose value equals every background row's
    are dummies with Shapley value 0: exact enumeration gives 0, sampling gives ~0 (shap drops
    them before sampling).

    The model is called on `[rows, d]` batches of coalition-by-background rows (all of a chunk
    of instances at once, or pieces of ~262k rows in a `lax.map` when one instance has more);
    `fn` may be a non-JAX function (called through `jax.pure_callback`).

    Static arguments: `fn`, `num_samples` and `batch_size`; `key`, `x`, `background` and
    `target` may be traced.

    Args:
        key: PRNG key, or one key per row: a single key gives row `i` the key
            `jax.random.split(key, n)[i]`; a key array `[n]` (or legacy uint32 `[n, 2]`) gives
            row `i` the key `key[i]`.
        fn: the black box, `[rows, d] -> [rows]` or `[rows, ...]`.
        x: `[n, d]` instances to explain.
        background: `[b, d]` rows that stand in for absent features.
        num_samples: coalitions per instance (capped at `2**d - 2`).
        target: None when `fn` returns one value per row, an int, an int array `[n]`, or for
            outputs of rank > 2 an int matrix.
        batch_size: instances per compiled chunk, not the package's unit of model rows per
            call (kept for compatibility): a chunk of `batch_size` instances evaluates
            `batch_size * min(num_samples, 2**d - 2) * b` coalition rows, in calls of at most
            ~262k rows. None sizes chunks to ~32k model rows. Does not change the result
            (beyond float round-off).

    Returns:
        `[n, d]` Shapley values (empty for an empty `x`, `fn` not called).

    Raises:
        ValueError: `x` or `background` not 2-D, without features or with different feature
            counts, a
            `background` without rows, `num_samples < 1`, a black box whose output does not
            have one row per input row, a target out of range or missing for a vector output,
            a key array whose length is not `n`, NaN/inf in a concrete `x` or `background`
            (traced ones give non-finite values in the rows they touch: every row for
            `background`).
        TypeError: `key` is not a PRNG key.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import kernel_shap
        >>> f = lambda z: z[:, 0] * z[:, 1] + z[:, 2]
        >>> kernel_shap(jax.random.key(0), f, jnp.ones((1, 3)), jnp.zeros((4, 3))).round(4)
        Array([[0.5, 0.5, 1. ]], dtype=float32)
    """
    num_samples = check_positive_int("num_samples", num_samples)
    x = as_rows("x", x)
    background = as_rows("background", background)
    n, d = x.shape
    if background.shape[1] != d:
        raise ValueError(
            f"background must have the {d} features of x, got shape {background.shape}"
        )
    if background.shape[0] == 0:
        raise ValueError(f"background must have at least one row, got shape {background.shape}")
    background = background.astype(x.dtype)
    b = background.shape[0]
    s = min(num_samples, 2**d - 2) if d < 63 else num_samples
    keys = as_row_keys(key, n)
    model, out = as_model(fn, x, max(1, s) * b)
    t = as_target(target, out, n)
    per_call = max(1, _MAX_ROWS_PER_CALL // b)
    config = _ShapConfig(model, background, num_samples, per_call)
    chunk = _chunks.instances_per_chunk(n, max(1, s) * b, batch_size)
    rows = {"key": keys, "x": x, "index": t.index}
    phi = _chunks.map_rows(_shap_chunk, config, rows, n, chunk)
    return mark_invalid(phi, t.valid)
