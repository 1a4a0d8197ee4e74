"""Integrated gradients and expected gradients: attributions along paths from a baseline.

Both evaluate the model on many points between a baseline and the input. The points of all
examples of one chunk of steps go to the model as one batch of rows (`[steps * batch, ...]`,
step-major as in Captum), which is what XLA:CPU runs fastest (integrated gradients runs the
path past the model's affine prefix, `xai_jax._affine`), and the chunks are summed by
`xai_jax._chunks.run`: a host loop over one compiled chunk when called eagerly, a `lax.scan`
under the caller's `jit`. Peak memory is one chunk's, whatever `n_steps` or `num_samples`. The
shared pieces (path, chunked quadrature, finish) are `xai_jax._paths`'.

The family's other members live in their own modules and are importable from here too: the
layer variants in `xai_jax.layer_attribution` (`layer_integrated_gradients`,
`layer_conductance`, `neuron_conductance`), the noise tunnel in `xai_jax.noise_tunnel`
(`smoothgrad`, `NT_TYPES`).
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int, PyTree

from xai_jax import _chunks, _paths
from xai_jax._blackbox import mark_invalid, model_output
from xai_jax._checks import as_key, check_bool, check_positive_int, check_scale
from xai_jax._inputs import as_background, as_inputs, as_target
from xai_jax.layer_attribution import (
    layer_conductance,
    layer_integrated_gradients,
    neuron_conductance,
)
from xai_jax.noise_tunnel import NT_TYPES, smoothgrad
from xai_jax.quadrature import check_rule, rule

__all__ = [
    "NT_TYPES",
    "expected_gradients",
    "integrated_gradients",
    "layer_conductance",
    "layer_integrated_gradients",
    "neuron_conductance",
    "smoothgrad",
]


def integrated_gradients(
    fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    baselines: PyTree[ArrayLike] | float | None = None,
    *,
    target: ArrayLike | None = None,
    method: str = "gausslegendre",
    n_steps: int | np.integer = 50,
    internal_batch_size: int | np.integer | None = None,
    multiply_by_inputs: bool = True,
    return_convergence_delta: bool = False,
    forward_kwargs: Mapping[str, ArrayLike] | None = None,
) -> PyTree[Float[Array, " batch ..."]] | tuple[PyTree[Float[Array, " batch ..."]], Array]:
    """Integrated gradients of `fn` at `x`, with Captum's numbers for every quadrature rule.

    `attr = (x - b) * sum_k w_k dF_t(b + a_k (x - b))/dx` with `(a_k, w_k) = quadrature(method,
    n_steps)`, `F_t` the target output. Completeness: `sum(attr) ~= F_t(x) - F_t(b)`.

    When the model starts with an affine map `A` of its input (a dense layer, a convolution,
    a normalisation with fixed statistics: found in its jaxpr, `xai_jax._affine`), the path runs
    in `A`'s output space: `A(b + a (x - b)) = A(b) + a (A(x) - A(b))`, so `A` is evaluated on
    the two end points and its transpose applied once per example, not at every path point
    (the first layer of an MLP, the first convolution of a CNN and their gradients leave the
    per-step work). Same numbers up to float round-off; it needs `fn` to treat rows
    independently, as everything here does.

    Differentiable (attribution priors: `jax.grad` of a loss of the attributions w.r.t. the
    model's parameters), jittable and vmappable. With `internal_batch_size`, at most that many
    path points go through the model at once (at least one step of all examples, as in
    Captum), so peak memory does not grow with `n_steps`; called eagerly with more examples
    than `internal_batch_size`, the examples run in blocks of that many, so it does not grow
    with the number of examples either (under `jit`, one step of every example is one call).
    Called eagerly, the chunks run as a host loop over one compiled chunk (each chunk is one
    XLA call, with its fixed cost; what chunking costs or saves: README, Benchmarks); under
    your own `jit` they run as a `lax.scan`, where XLA:CPU computes the gradient of
    convolutions several times slower: with convolutional models inside `jit`, prefer
    `internal_batch_size=None` when memory allows. The default (None, as Captum's) puts every
    path point in one call, so memory grows with `batch * n_steps`: for large batches pass a
    bound (`benchmarks/bench_memory.py` measures both).

    Args:
        fn: model mapping a batch (an array, or the pytree `x`) to outputs `[batch, ...]`.
        x: inputs with a leading batch axis: an array or a pytree of arrays (multi-input models);
            attributions have the same structure.
        baselines: start of the path: None (zeros), a scalar, or `x`'s structure with leaves
            that are scalars, `[1, ...]` or of the leaf's full shape.
        target: which output: None for one output per example; an int or an int array
            `[batch]` for outputs `[batch, k]`; an int matrix `[batch, rank - 1]` for outputs of
            higher rank (alibi's rules). Out of range raises on concrete targets; a traced
            out-of-range target makes that example's attributions NaN.
        method: `riemann_left`, `riemann_right`, `riemann_middle`, `riemann_trapezoid`,
            `gausslegendre`.
        n_steps: number of path points.
        internal_batch_size: largest number of path points per model call (None: all at once).
        multiply_by_inputs: multiply the integrated gradient by `x - b` (Captum's default);
            False returns the integrated gradient itself.
        return_convergence_delta: also return `delta = sum(attr) - (F_t(x) - F_t(b))`.
        forward_kwargs: per-example arrays passed to `fn` as keyword arguments, repeated along
            the path and not attributed.

    Returns:
        Attributions shaped like `x`, or `(attributions, delta [batch])`.

    Raises:
        ValueError: unknown `method`, too few `n_steps`, mismatched `baselines` or
            `forward_kwargs`, missing or out-of-range `target`, an empty batch, NaN/inf in
            concrete `x` or `baselines` (traced ones give non-finite attributions in the rows
            they touch; `forward_kwargs` are not checked: a mask may hold `-inf`).
        TypeError: non-integer `target`, a model that does not return one array.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import integrated_gradients
        >>> w = jnp.array([[1.0, -1.0], [2.0, 0.5]])
        >>> fn = lambda x: jnp.tanh(x) @ w
        >>> x = jnp.array([[0.5, -1.0]])
        >>> attr, delta = integrated_gradients(fn, x, target=0, return_convergence_delta=True)
        >>> attr
        Array([[ 0.462..., -1.523...]], dtype=float32)
        >>> bool(abs(delta[0]) < 1e-5)
        True
    """

    n_steps = check_rule(method, n_steps)
    by_inputs = check_bool("multiply_by_inputs", multiply_by_inputs)
    delta = check_bool("return_convergence_delta", return_convergence_delta)
    ibs = _paths.check_internal_batch_size(internal_batch_size)
    inputs = as_inputs(x)
    ops = _paths.operands(fn, inputs, baselines, target, forward_kwargs)
    return _paths.integrate(
        fn,
        ops,
        rule(method, n_steps),
        ibs,
        multiply_by_inputs=by_inputs,
        delta=delta,
    )


# --------------------------------------------------------------------------------------------
# expected_gradients


class _ExpectedConfig(NamedTuple):
    fn: Callable  # the model
    per_chunk: int  # samples per example and chunk
    num_samples: int


class _ExpectedOperands(NamedTuple):
    x: Any  # pytree of float arrays [batch, ...]
    background: Any  # x's structure, [rows, ...] leaves
    index: jax.Array | None  # flat target index per example, [batch] int32
    valid: jax.Array | None  # [batch] bool, only for a traced target
    stdev: jax.Array  # scalar
    keys: jax.Array  # [num_samples] PRNG keys, one per sample


def expected_gradients(
    key: ArrayLike,
    fn: Callable[..., ArrayLike],
    x: PyTree[ArrayLike],
    background: PyTree[ArrayLike],
    *,
    num_samples: int | np.integer = 5,
    stdev: ArrayLike = 0.0,
    target: ArrayLike | None = None,
    internal_batch_size: int | np.integer | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Expected gradients (Captum's `GradientShap`): IG averaged over random baselines.

    For each example and sample: a baseline `b` drawn uniformly from the rows of `background`,
    an input `x' = x + stdev * N(0, 1)`, a point `a ~ U(0, 1)` on the path; the attribution is
    the mean over samples of `(x' - b) * dF_t(b + a (x' - b))/dx`. Its expectation is the IG
    averaged over the background distribution. Sample `s` draws from
    `jax.random.split(key, num_samples)[s]`, so `internal_batch_size` (the largest number of
    rows per model call, at least one sample of every example) does not change the result.

    Args:
        key: PRNG key.
        fn: model mapping a batch to outputs `[batch, ...]`.
        x: inputs (array or pytree) with a leading batch axis.
        background: baselines to draw from: `x`'s structure with a leading axis of any size.
        num_samples: draws per example.
        stdev: standard deviation of the noise added to the inputs (finite, >= 0; it may be
            traced).
        target: as in `integrated_gradients`.
        internal_batch_size: largest number of rows per model call (None: all at once).

    Returns:
        Attributions shaped like `x`.

    Raises:
        ValueError: `num_samples < 1`, a negative or infinite concrete `stdev`, an empty
            batch, a `background` without rows or not shaped like `x`'s rows, target errors
            as in `integrated_gradients`, NaN/inf in concrete `x` or `background` (traced ones
            give non-finite attributions in the rows they touch: every row that drew a
            non-finite background row).
        TypeError: `key` is not a PRNG key.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from xai_jax import expected_gradients
        >>> fn = lambda x: x @ jnp.array([[1.0], [2.0]])  # linear: exact for any sample
        >>> x = jnp.array([[1.0, 1.0]])
        >>> background = jnp.zeros((3, 2))
        >>> expected_gradients(jax.random.key(0), fn, x, background, target=0)
        Array([[1., 2.]], dtype=float32)
    """

    key = as_key(key)
    num_samples = check_positive_int("num_samples", num_samples)
    check_scale("stdev", stdev)
    ibs = _paths.check_internal_batch_size(internal_batch_size)
    inputs = as_inputs(x)
    background = as_background(background, inputs.x)
    t = as_target(target, model_output(fn, inputs.x, {}), inputs.batch)
    num_chunks, per_chunk = _paths.chunking(num_samples, inputs.batch, ibs)
    keys = jax.random.split(key, num_samples)
    ops = _ExpectedOperands(inputs.x, background, t.index, t.valid, jnp.asarray(stdev), keys)
    config = _ExpectedConfig(fn, per_chunk, num_samples)
    return _chunks.run(_expected_chunk, _expected_finish, config, ops, inputs.x, num_chunks)


def _expected_chunk(config: _ExpectedConfig, c: Int[Array, ""], ops: _ExpectedOperands) -> Any:
    """Per example, the sum over the chunk's samples of `(x' - b) * dF_t(b + a (x' - b))/dx`."""
    steps, x = config.per_chunk, ops.x
    batch = _paths.batch_of(x)
    num_background = _paths.batch_of(ops.background)
    keys, real = _paths.sample_keys(ops.keys, c, steps)

    def draw(k):
        k_pick, k_alpha, k_noise = jax.random.split(k, 3)
        pick = jax.random.randint(k_pick, (batch,), 0, num_background)
        alpha = jax.random.uniform(k_alpha, (batch,), jax.tree.leaves(x)[0].dtype)
        return pick, alpha, _paths.noise(k_noise, x, ops.stdev)

    pick, alpha, noisy = jax.vmap(draw)(keys)  # [steps, batch], [steps, batch], [steps, *x]
    noisy = jax.tree.map(lambda v: v.reshape(-1, *v.shape[2:]), noisy)
    base = jax.tree.map(lambda bg: bg[pick.reshape(-1)], ops.background)

    def point(n, b):
        a = alpha.reshape(-1, *([1] * (n.ndim - 1))).astype(n.dtype)
        return b + a * (n - b)

    points = jax.tree.map(point, noisy, base)
    index = None if ops.index is None else _paths.rows(ops.index, steps)
    weights = jnp.repeat(real, batch).astype(alpha.dtype)
    grads = _paths.weighted_target_grad(config.fn, points, {}, index, weights)
    diffs = jax.tree.map(lambda g, n, b: g * (n - b), grads, noisy, base)
    return _paths.per_step_sum(diffs, steps)


def _expected_finish(config: _ExpectedConfig, total: Any, ops: _ExpectedOperands) -> Any:
    return mark_invalid(jax.tree.map(lambda t: t / config.num_samples, total), ops.valid)
