"""Perturbation attributions: occlusion, feature ablation, feature permutation, Shapley values.

Captum's model-agnostic methods (`Occlusion`, `FeatureAblation`, `FeaturePermutation`,
`ShapleyValues`, `ShapleyValueSampling`), with the same numbers, for any black box: a JAX model,
or a NumPy one (scikit-learn) through `jax.pure_callback`. Captum evaluates one perturbation at
a time by default (`perturbations_per_eval=1`); here every perturbation of every example is a
row of one batch, and the rows go to the model in calls of `batch_size` rows through the shared
chunking layer (`_chunks.map_rows`).

One engine serves the five methods. A model row is a flat index `r` decoded inside the kernel
into `(example i, code, background row)`; the `code` says which elements of example `i` keep
their value and which take the reference (the baseline, a background row, or for feature
permutation another example's value): a feature group (ablation, permutation), a coalition of
groups (exact Shapley: the bits of the code), a prefix of a permutation of the groups (Shapley
sampling) or a window (occlusion). Only the row indices travel; the perturbed inputs exist one
chunk at a time.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PyTree

from xai_jax import _chunks, _eager, _incremental
from xai_jax._blackbox import HostFunction, as_model, mark_invalid, model_output, selected
from xai_jax._checks import as_key, as_row_keys, check_bool, check_positive_int
from xai_jax._features import as_feature_groups
from xai_jax._inputs import as_background, as_baselines, as_forward_kwargs, as_inputs, as_target

__all__ = [
    "MAX_EXACT_FEATURES",
    "feature_ablation",
    "feature_permutation",
    "occlusion",
    "shapley_value_sampling",
    "shapley_values",
]

# Exact Shapley values evaluate 2**d coalitions per example (times the background rows).
MAX_EXACT_FEATURES = 16


class _Window(NamedTuple):  # one input leaf's occlusion windows
    offset: int  # code of its first window
    counts: tuple  # windows along each axis
    window: tuple
    strides: tuple


class _Config(NamedTuple):
    model: Callable
    kind: str  # "groups", "coalitions", "orders", "windows"
    x: Any  # pytree [batch, ...]
    base: Any  # pytree [n_base, ...]: baselines, a background, or x itself (permutation)
    base_mode: str  # "example" (row i), "background" (every row, averaged), "permuted"
    num_base: int
    num_codes: int
    labels: Any  # pytree [1 or batch, ...] int32 global group ids (None for windows)
    kwargs: dict
    index: Any  # [batch] target index or None
    windows: Any = None  # tuple of _Window per leaf (windows only)
    extra: Any = None  # [batch, n_samples, d] ranks (orders), [groups, batch] permutation
    num_samples: int = 1
    num_groups: int = 0
    incremental: bool = False  # occlusion rows by `_incremental` where it applies


def _keep(config: _Config, i, code):
    """Per leaf, `[C, ...]` bools: which elements of each row keep the example's value."""
    kind = config.kind
    c = code.shape[0]

    def expand(v, leaf):
        return v.reshape(c, *([1] * (leaf.ndim - 1)))

    if kind == "windows":
        out = []
        for leaf, w in zip(jax.tree.leaves(config.x), config.windows, strict=True):
            total = math.prod(w.counts)
            local = code - w.offset
            inside = expand((local >= 0) & (local < total), leaf)
            rest = jnp.clip(local, 0, total - 1)
            for axis in reversed(range(len(w.counts))):
                k = rest % w.counts[axis]
                rest = rest // w.counts[axis]
                n = leaf.shape[axis + 1]
                pos = jnp.arange(n, dtype=jnp.int32).reshape(
                    1, *([1] * axis), n, *([1] * (leaf.ndim - axis - 2))
                )
                start = expand(k * w.strides[axis], leaf)
                inside = inside & (pos >= start) & (pos < start + w.window[axis])
            out.append(~inside)
        return jax.tree.unflatten(jax.tree.structure(config.x), out)

    def one(leaf, labels):
        lab = labels[i] if labels.shape[0] > 1 else jnp.broadcast_to(labels, (c, *labels.shape[1:]))
        if kind == "groups":
            return lab != expand(code, leaf)
        if kind == "coalitions":
            return ((expand(code, leaf) >> lab) & 1) == 1
        # orders: code 0 is the baseline, 1 the input, then (sample s, prefix length k) pairs
        d = config.num_groups
        inner = jnp.maximum(code - 2, 0)
        s, k = inner // max(d - 1, 1), inner % max(d - 1, 1) + 1
        k = jnp.where(code == 0, 0, jnp.where(code == 1, d, k))
        rank = config.extra[i, jnp.where(code < 2, 0, s)]  # [C, d]
        present = jnp.take_along_axis(rank, lab.reshape(c, -1), axis=1) < k[:, None]
        return present.reshape(lab.shape)

    return jax.tree.map(one, config.x, config.labels)


def _rows_chunk(config: _Config, r: jax.Array) -> jax.Array:
    """The target output of the model on `C` perturbed rows `r`, `[C]`."""
    j_bg = r % config.num_base
    q = r // config.num_base
    code = q % config.num_codes
    i = q // config.num_codes
    if config.base_mode == "background":
        j = j_bg
    elif config.base_mode == "permuted":
        j = jnp.where(
            code < config.num_groups, config.extra[jnp.minimum(code, config.num_groups - 1), i], i
        )
    else:
        j = i if jax.tree.leaves(config.base)[0].shape[0] > 1 else jnp.zeros_like(i)
    index = None if config.index is None else config.index[i]
    if config.incremental:  # occlusion of one array by a JAX model: incremental inference
        out = _incremental.occluded_outputs(
            config.model, config.x, config.base, config.windows[0], i, code, config.num_codes
        )
        if out is not None:
            return selected(out, index).astype(config.x.dtype)
    keep = _keep(config, i, code)
    inputs = jax.tree.map(lambda x, b, k: jnp.where(k, x[i], b[j]), config.x, config.base, keep)
    kwargs = {name: v[i] for name, v in config.kwargs.items()}
    out = config.model(inputs, **kwargs)
    return selected(out, index).astype(jax.tree.leaves(config.x)[0].dtype)


def _num_rows(config: _Config) -> int:
    return jax.tree.leaves(config.x)[0].shape[0] * config.num_codes * config.num_base


def _finish(config: _Config, operands):
    """The attributions from the row outputs (one compiled call): `(v, valid) -> attr`."""
    v, valid = operands
    batch = jax.tree.leaves(config.x)[0].shape[0]
    v = v.reshape(batch, config.num_codes, config.num_base).mean(axis=2)
    g = config.num_groups
    if config.kind == "groups":
        attr = _spread(v[:, g:] - v[:, :g], config)
    elif config.kind == "coalitions":
        with_, without, weight = _coalition_tables(g, v.dtype)
        attr = _spread(jnp.sum((v[:, with_] - v[:, without]) * weight[None], axis=2), config)
    elif config.kind == "orders":
        ranks, n = config.extra, config.num_samples
        inner = v[:, 2:].reshape(batch, n, g - 1)
        ends = [jnp.broadcast_to(v[:, i, None, None], (batch, n, 1)) for i in (0, 1)]
        path = jnp.concatenate([ends[0], inner, ends[1]], axis=2)  # [b, s, d + 1] per order
        gain = jnp.take_along_axis(path, ranks + 1, axis=2)
        gain = gain - jnp.take_along_axis(path, ranks, axis=2)
        attr = _spread(gain.mean(axis=1), config)
    else:
        attr = _occlusion_finish(config, v)
    return mark_invalid(attr, valid)


def _occlusion_finish(config: _Config, v: jax.Array):
    """Each element's mean drop over the windows covering it (the windows are separable: one
    1-D cover matrix per axis, contracted in turn)."""
    total_windows = config.num_codes - 1
    delta = v[:, total_windows:] - v[:, :total_windows]
    leaves = jax.tree.leaves(config.x)
    out = []
    for leaf, w in zip(leaves, config.windows, strict=True):
        total = delta[:, w.offset : w.offset + math.prod(w.counts)].reshape(-1, *w.counts)
        count = np.ones(())
        for axis, (k, n) in enumerate(zip(w.counts, leaf.shape[1:], strict=True)):
            start = np.arange(k)[:, None] * w.strides[axis]
            pos = np.arange(n)[None]
            cover = ((pos >= start) & (pos < start + w.window[axis])).astype(leaf.dtype)
            total = jnp.tensordot(total, cover, axes=([1], [0]), precision="highest")
            count = np.multiply.outer(count, cover.sum(axis=0))
        out.append(total / jnp.asarray(count[None], leaf.dtype))
    return jax.tree.unflatten(jax.tree.structure(config.x), out)


def _attributions(config: _Config, t, batch_size: int | None):
    """The attributions from the `batch * num_codes * num_base` model rows: one compiled call
    when they fit one chunk, else the chunked rows (`_chunks.map_rows`) and then `_finish`."""
    num_rows = _num_rows(config)
    chunk = _rows_per_chunk(config, batch_size)
    if chunk >= num_rows:
        return _chunks.call(_whole, config, t.valid)
    rows = np.arange(num_rows, dtype=np.int32)
    v = _chunks.map_rows(_rows_chunk, config, rows, num_rows, chunk)
    return _chunks.call(_finish, config, (v, t.valid))


def _rows_per_chunk(config: _Config, batch_size: int | None) -> int:
    per_row = sum(math.prod(leaf.shape[1:]) for leaf in jax.tree.leaves(config.x))
    return _chunks.rows_per_chunk(_num_rows(config), per_row, batch_size)


def _num_chunks(config: _Config, batch_size: int | None) -> int:
    return -(-_num_rows(config) // _rows_per_chunk(config, batch_size))


def _whole(config: _Config, valid):
    """Rows and attributions in one program (an eager call dispatches once)."""
    v = _rows_chunk(config, jnp.arange(_num_rows(config), dtype=jnp.int32))
    return _finish(config, (v, valid))


def _spread(phi: jax.Array, config: _Config):
    """Each element gets its group's value: `phi[b, labels[b, e]]`, in the structure of x."""

    def one(leaf, labels):
        if labels.shape[0] == 1:  # one mask for every example: no [batch, ...] index array
            return jnp.take(phi, labels.reshape(-1), axis=1).reshape(leaf.shape)
        lab = jnp.broadcast_to(labels, leaf.shape).reshape(leaf.shape[0], -1)
        return jnp.take_along_axis(phi, lab, axis=1).reshape(leaf.shape)

    return jax.tree.map(one, config.x, config.labels)


def _model(fn: Callable, x, kwargs: dict, batch: int, chunk_rows: int):
    """`(model, out)`: a JAX model as it is, a NumPy one (single array input, no keyword
    arguments) behind `pure_callback`; `out` is the output shape for `batch` rows."""
    leaves = jax.tree.leaves(x)
    if kwargs or jax.tree.structure(x).num_nodes > 1:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        return fn, model_output(fn, x, kwargs)
    model, out = as_model(fn, leaves[0], chunk_rows)
    return model, jax.ShapeDtypeStruct((batch, *out.shape[1:]), out.dtype)


def _references(baselines, x, batch: int, background: bool):
    """`(base, mode, num_base)`: Captum's baselines (scalar, `[1, ...]`, one per example; a
    scalar or a row kept as one row `[1, ...]`), or with `background` a set of `n_b` rows
    (`n_b` not 1 nor the batch)."""
    if background and baselines is not None and not _is_scalar_tree(baselines):
        leaves = jax.tree.leaves(baselines)
        sizes = {getattr(b, "shape", (None,))[:1] for b in leaves}
        ndims = [np.ndim(b) for b in leaves]
        if (
            jax.tree.structure(baselines) == jax.tree.structure(x)
            and len(sizes) == 1
            and ndims == [leaf.ndim for leaf in jax.tree.leaves(x)]
            and next(iter(sizes)) not in ((1,), (batch,))
        ):
            base = as_background(baselines, x, "baselines")
            return base, "background", jax.tree.leaves(base)[0].shape[0]
    return as_baselines(baselines, x, full=False), "example", 1


def _is_scalar_tree(value) -> bool:
    return np.ndim(value) == 0 if not isinstance(value, dict | list | tuple) else False


def _setup(fn, x, target, forward_kwargs, rows_per_example: int, batch_size):
    inputs = as_inputs(x)
    kwargs = as_forward_kwargs(forward_kwargs, inputs.batch)
    chunk = batch_size if batch_size is not None else max(1, min(rows_per_example, 1024))
    model, out = _model(fn, inputs.x, kwargs, inputs.batch, chunk)
    t = as_target(target, out, inputs.batch)
    return inputs, kwargs, model, t, out


class _Prepared(NamedTuple):
    """A method's checked arguments (`_eager`'s protocol): `run()` gives the attributions."""

    config: _Config
    target: Any  # _inputs.Target
    batch_size: int | None
    out: jax.ShapeDtypeStruct  # the model's output for the batch

    def run(self):
        return _attributions(self.config, self.target, self.batch_size)

    def plan(self) -> _eager.Plan | None:
        """A later eager call's checks: NaN/inf in `x` and the baselines, the target's range;
        `forward_only` (`_eager.Plan`'s) for every kind of rows but the permutation's. None (no
        compiled whole) for a NumPy black box or rows in several chunks (a traced loop over
        chunks is slower than the eager host loop: PERF_NOTES, convolutions)."""
        config = self.config
        if isinstance(config.model, HostFunction) or _num_chunks(config, self.batch_size) > 1:
            return None
        batch = jax.tree.leaves(config.x)[0].shape[0]
        # Every kind runs the model forward only; the permutation's rows are not offered to
        # `_cpu_options`' second compile (slower that way on the 20-feature MLP: 0.68 -> 0.73 ms).
        forward_only = config.base_mode != "permuted"
        return _eager.value_checks(self.out, batch, ("x", "baselines"), forward_only=forward_only)


def feature_ablation(
    fn: Callable,
    x: PyTree[ArrayLike],
    baselines: PyTree[ArrayLike] | float | None = 0.0,
    *,
    target: ArrayLike | None = None,
    feature_mask: PyTree[ArrayLike] | None = None,
    batch_size: int | None = None,
    forward_kwargs: dict | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Feature ablation (Captum's `FeatureAblation`): `F(x) - F(x with a group at baseline)`.

    Every element of a feature group gets the drop in the target output when the whole group
    takes the baseline value. All `batch * (groups + 1)` model rows are evaluated as batches of
    `batch_size` rows (Captum's `perturbations_per_eval=1` calls the model once per group).

    Static arguments: `fn`, `feature_mask` (concrete: it sets the number of rows) and
    `batch_size`; `x`, `baselines`, `target` and `forward_kwargs` may be traced.

    Args:
        fn: the model, `[rows, ...] -> [rows]` or `[rows, ...]`; a NumPy function
            (scikit-learn's `predict_proba`) is called through `jax.pure_callback` (array `x`,
            no `forward_kwargs`).
        x: `[batch, ...]` inputs, or a pytree of them (each leaf its own feature groups, as
            Captum's tuple inputs).
        baselines: Captum's rules: a scalar, a row `[1, ...]`, or one per example (per leaf).
        target: None for one output per example, an int, an int array `[batch]`, or for outputs
            of rank > 2 an int matrix `[batch, rank - 1]` (as `integrated_gradients`).
        feature_mask: integer ids broadcastable to `x` (one mask for every example, or one per
            example); ids need not be contiguous. None: every scalar is its own feature.
        batch_size: model rows per call (None: at most 32,768 rows and about 2M input
            elements per call).
        forward_kwargs: per-example keyword arrays passed to `fn`, not attributed.

    Returns:
        Attributions in the structure and shapes of `x`.

    Raises:
        ValueError: a `feature_mask` that does not broadcast to `x`, with negative ids, or
            traced; baselines of the wrong shape; a target out of range; `batch_size < 1`.
        TypeError: a `feature_mask` of non-integer dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import feature_ablation
        >>> f = lambda z: z[:, 0] * z[:, 1] + z[:, 2]
        >>> feature_ablation(f, jnp.array([[1.0, 2.0, 3.0]]), feature_mask=jnp.array([0, 0, 1]))
        Array([[2., 2., 3.]], dtype=float32)
    """
    arrays = dict(x=x, baselines=baselines, target=target, forward_kwargs=forward_kwargs)
    return _eager.call(
        _feature_ablation, fn, arrays, dict(feature_mask=feature_mask, batch_size=batch_size)
    )


def _feature_ablation(fn, x, baselines, target, forward_kwargs, feature_mask, batch_size):
    inputs, kwargs, model, t, out = _setup(fn, x, target, forward_kwargs, 1024, batch_size)
    labels, g = as_feature_groups(feature_mask, inputs.x)
    base, _, _ = _references(baselines, inputs.x, inputs.batch, False)
    config = _Config(
        model, "groups", inputs.x, base, "example", 1, g + 1, labels, kwargs, t.index, num_groups=g
    )
    return _Prepared(config, t, batch_size, out)


def _as_shape(name: str, value, ndim: int, leaf_shape) -> tuple:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        value = (int(value),) * ndim
    if not isinstance(value, Sequence) or len(value) != ndim:
        raise ValueError(
            f"{name} must have one entry per non-batch axis of the input {leaf_shape} "
            f"({ndim}), got {value!r}"
        )
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise TypeError(f"{name} must hold ints, got {value!r}")
        if v < 1:
            raise ValueError(f"{name} must be >= 1 along every axis, got {tuple(value)}")
    return tuple(int(v) for v in value)


def occlusion(
    fn: Callable,
    x: PyTree[ArrayLike],
    *,
    sliding_window_shapes: Sequence,
    strides: int | Sequence = 1,
    baselines: PyTree[ArrayLike] | float | None = 0.0,
    target: ArrayLike | None = None,
    batch_size: int | None = None,
    forward_kwargs: dict | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Occlusion (Captum's `Occlusion`): the mean output drop over the windows covering each
    element.

    A window of `sliding_window_shapes` (the non-batch axes) slides with `strides`; at each of
    its `ceil((n - w) / s) + 1` positions per axis (the last one cut at the edge when the
    window does not fit evenly, as Captum does) the window takes the baseline and each element
    inside gets `F(x) - F(x occluded)`; an element's attribution is the mean over the windows
    that cover it. All `batch * (windows + 1)` rows go to the model in calls of `batch_size`.

    Static arguments: `fn`, `sliding_window_shapes`, `strides`, `batch_size`.

    Args:
        fn: the model (as `feature_ablation`).
        x: `[batch, ...]` inputs, or a pytree of them (then `sliding_window_shapes` and
            `strides` are sequences with one entry per leaf, in leaf order).
        sliding_window_shapes: window shape over the non-batch axes (each >= 1, at most the
            input's size).
        strides: an int or one per non-batch axis, >= 1 and at most the window where the
            window does not span the axis (Captum's rule: otherwise elements go uncovered).
        baselines: Captum's rules: a scalar, a row `[1, ...]`, or one per example.
        target: as `integrated_gradients`.
        batch_size: model rows per call (None: at most 32,768 rows and about 2M input
            elements per call).
        forward_kwargs: per-example keyword arrays passed to `fn`.

    Returns:
        Attributions in the structure and shapes of `x`.

    Raises:
        ValueError: a window larger than the input or with a zero/negative entry, a zero or
            negative stride, a stride larger than its window, baselines of the wrong shape, a
            target out of range.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import occlusion
        >>> f = lambda z: z.sum(axis=(1, 2))
        >>> occlusion(f, jnp.ones((1, 2, 2)), sliding_window_shapes=(1, 2))
        Array([[[2., 2.],
                [2., 2.]]], dtype=float32)
    """
    arrays = dict(x=x, baselines=baselines, target=target, forward_kwargs=forward_kwargs)
    statics = dict(
        sliding_window_shapes=sliding_window_shapes,
        strides=strides,
        batch_size=batch_size,
        incremental=_incremental.ENABLED,
    )
    return _eager.call(_occlusion, fn, arrays, statics)


def _occlusion(
    fn, x, baselines, target, forward_kwargs, sliding_window_shapes, strides, batch_size,
    incremental,
):  # fmt: skip
    inputs, kwargs, model, t, out = _setup(fn, x, target, forward_kwargs, 1024, batch_size)
    leaves = jax.tree.leaves(inputs.x)
    single = len(leaves) == 1 and jax.tree.structure(inputs.x).num_nodes == 1
    if single:
        shapes, steps = [sliding_window_shapes], [strides]
    else:
        shapes = list(sliding_window_shapes)
        steps = [strides] * len(leaves) if isinstance(strides, int) else list(strides)
    if len(shapes) != len(leaves) or len(steps) != len(leaves):
        raise ValueError(
            f"sliding_window_shapes and strides need one entry per input leaf ({len(leaves)})"
        )
    windows, offset = [], 0
    for leaf, shape, step in zip(leaves, shapes, steps, strict=True):
        inner = leaf.shape[1:]
        window = _as_shape("sliding_window_shapes", shape, len(inner), inner)
        stride = _as_shape("strides", step, len(inner), inner)
        if any(w > n for w, n in zip(window, inner, strict=True)):
            raise ValueError(
                f"sliding_window_shapes {window} exceeds the input's non-batch shape {inner}"
            )
        if any(s > w and w < n for s, w, n in zip(stride, window, inner, strict=True)):
            raise ValueError(
                f"strides {stride} must not exceed sliding_window_shapes {window} along an axis "
                "the window does not span (elements would never be occluded)"
            )
        counts = tuple(-(-(n - w) // s) + 1 for n, w, s in zip(inner, window, stride, strict=True))
        windows.append(_Window(offset, counts, window, stride))
        offset += math.prod(counts)
    base, _, _ = _references(baselines, inputs.x, inputs.batch, False)
    config = _Config(
        model, "windows", inputs.x, base, "example", 1, offset + 1, None, kwargs, t.index,
        windows=tuple(windows),
        incremental=incremental and single and not kwargs,
    )  # fmt: skip
    return _Prepared(config, t, batch_size, out)


class _Orders(NamedTuple):
    num_groups: int
    num_samples: int
    antithetic: bool


def _orders(config: _Orders, keys: jax.Array) -> jax.Array:
    """`[batch, n_samples, d]` ranks (`rank[s, j]`: the position of group `j` in order `s`),
    one compiled call (drawn eagerly op by op they cost more than the model rows)."""
    d, n = config.num_groups, config.num_samples
    pairs = n // 2 if config.antithetic else 0

    def one(k):
        perms = jax.vmap(lambda kk: jax.random.permutation(kk, d))(jax.random.split(k, n - pairs))
        ranks = jnp.argsort(perms, axis=1).astype(jnp.int32)
        return jnp.concatenate([ranks, d - 1 - ranks[:pairs]]) if pairs else ranks

    return jax.vmap(one)(keys)


@functools.cache
def _coalition_tables(d: int, dtype):
    """`(with_j, without_j, weight)`: `[d, 2**(d-1)]` coalition pairs and Shapley weights."""
    coalitions = np.arange(2**d)
    sizes = np.array([bin(s).count("1") for s in range(2**d)])
    weight_of = np.array(
        [math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) for s in range(d)]
    )
    without, with_, weight = [], [], []
    for j in range(d):
        rest = coalitions[(coalitions >> j) & 1 == 0]
        without.append(rest)
        with_.append(rest | (1 << j))
        weight.append(weight_of[sizes[rest]])
    return np.array(with_), np.array(without), np.array(weight).astype(dtype)


def shapley_values(
    fn: Callable,
    x: PyTree[ArrayLike],
    baselines: PyTree[ArrayLike] | float | None = 0.0,
    *,
    target: ArrayLike | None = None,
    feature_mask: PyTree[ArrayLike] | None = None,
    batch_size: int | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Exact Shapley values (Captum's `ShapleyValues`), by coalitions instead of permutations.

    `phi_j = sum_{S not containing j} |S|! (d - |S| - 1)! / d! * (v(S + j) - v(S))` with
    `v(S) = F(x on S, reference elsewhere)`: `2**d` model rows per example (Captum walks the
    `d!` permutations), the same numbers. `sum(phi) = F(x) - F(reference)`.

    Static arguments: `fn`, `feature_mask`, `batch_size`.

    Args:
        fn: the model (as `feature_ablation`).
        x: `[batch, ...]` inputs or a pytree of them (each leaf its own groups; `d` counts the
            groups of all leaves).
        baselines: a scalar, a row `[1, ...]`, one per example `[batch, ...]` (Captum's
            rules), or a background set `[n_b, ...]` (`n_b` neither 1 nor `batch`): then
            `v(S)` is the mean over the background rows, as shap does. A background of exactly
            `batch` rows would read as one per example; repeat a row to tell it apart.
        target: as `integrated_gradients`.
        feature_mask: as `feature_ablation`; at most `MAX_EXACT_FEATURES` (16) groups.
        batch_size: model rows per call (None: at most 32,768 rows and about 2M input
            elements per call).

    Returns:
        Attributions in the structure and shapes of `x` (each element its group's value).

    Raises:
        ValueError: more than `MAX_EXACT_FEATURES` feature groups (use `feature_mask` or
            `shapley_value_sampling`), a bad `feature_mask` or baselines, a target out of range.

    Example:
        >>> import jax.numpy as jnp
        >>> from xai_jax import shapley_values
        >>> f = lambda z: z[:, 0] * z[:, 1] + z[:, 2]
        >>> shapley_values(f, jnp.ones((1, 3)))
        Array([[0.5, 0.5, 1. ]], dtype=float32)
    """
    arrays = dict(x=x, baselines=baselines, target=target)
    statics = dict(feature_mask=feature_mask, batch_size=batch_size)
    return _eager.call(_shapley_values, fn, arrays, statics)


def _shapley_values(fn, x, baselines, target, feature_mask, batch_size):
    inputs, _, model, t, out = _setup(fn, x, target, None, 1024, batch_size)
    labels, d = as_feature_groups(feature_mask, inputs.x)
    if d > MAX_EXACT_FEATURES:
        raise ValueError(
            f"shapley_values is exact over 2**d coalitions and takes at most "
            f"MAX_EXACT_FEATURES={MAX_EXACT_FEATURES} feature groups, got d={d}: group features "
            "with feature_mask or use shapley_value_sampling"
        )
    base, mode, nb = _references(baselines, inputs.x, inputs.batch, True)
    config = _Config(
        model, "coalitions", inputs.x, base, mode, nb, 2**d, labels, {}, t.index, num_groups=d
    )
    return _Prepared(config, t, batch_size, out)


def shapley_value_sampling(
    key: ArrayLike,
    fn: Callable,
    x: PyTree[ArrayLike],
    baselines: PyTree[ArrayLike] | float | None = 0.0,
    *,
    target: ArrayLike | None = None,
    feature_mask: PyTree[ArrayLike] | None = None,
    n_samples: int = 25,
    antithetic: bool = False,
    batch_size: int | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Shapley value sampling (Captum's `ShapleyValueSampling`): marginal contributions
    averaged over random orders of the feature groups.

    Each of `n_samples` orders adds the groups one at a time, from the reference to `x`; a
    group's value is its mean marginal contribution. `sum(phi) = F(x) - F(reference)` for
    every sample count (the contributions of an order telescope). With `antithetic=True`,
    `n_samples // 2` orders are drawn and each is paired with its reverse (plus one
    independent order when `n_samples` is odd), so the model rows are those of `n_samples`
    orders: `batch * (n_samples * (d - 1) + 2)` rows (times the background rows).

    Static arguments: `fn`, `feature_mask`, `n_samples`, `antithetic`, `batch_size`; `key`,
    `x`, `baselines` and `target` may be traced.

    Args:
        key: PRNG key (example `i` uses `jax.random.split(key, batch)[i]`), or one per example.
        fn: the model (as `feature_ablation`).
        x: `[batch, ...]` inputs or a pytree of them.
        baselines: as `shapley_values` (a background set is averaged over).
        target: as `integrated_gradients`.
        feature_mask: as `feature_ablation`.
        n_samples: orders per example, >= 1.
        antithetic: pair each order with its reverse.
        batch_size: model rows per call (None: at most 32,768 rows and about 2M input
            elements per call).

    Returns:
        Attributions in the structure and shapes of `x`.

    Raises:
        ValueError: `n_samples < 1`, a bad `feature_mask` or baselines, a target out of range.
        TypeError: `key` is not a PRNG key; `antithetic` not a bool.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import shapley_value_sampling
        >>> f = lambda z: 2 * z[:, 0] + z[:, 1]
        >>> shapley_value_sampling(jax.random.key(0), f, jnp.ones((1, 2)), n_samples=4)
        Array([[2., 1.]], dtype=float32)
    """
    arrays = dict(key=key, x=x, baselines=baselines, target=target)
    statics = dict(
        feature_mask=feature_mask, n_samples=n_samples, antithetic=antithetic, batch_size=batch_size
    )
    return _eager.call(_shapley_value_sampling, fn, arrays, statics)


def _shapley_value_sampling(
    fn, key, x, baselines, target, feature_mask, n_samples, antithetic, batch_size
):
    n_samples = check_positive_int("n_samples", n_samples)
    antithetic = check_bool("antithetic", antithetic)
    inputs, _, model, t, out = _setup(fn, x, target, None, 1024, batch_size)
    keys = as_row_keys(key, inputs.batch)
    labels, d = as_feature_groups(feature_mask, inputs.x)
    base, mode, nb = _references(baselines, inputs.x, inputs.batch, True)
    ranks = _chunks.call(_orders, _Orders(d, n_samples, antithetic), keys)
    config = _Config(
        model, "orders", inputs.x, base, mode, nb, 2 + n_samples * (d - 1), labels, {}, t.index,
        extra=ranks, num_samples=n_samples, num_groups=d,
    )  # fmt: skip
    return _Prepared(config, t, batch_size, out)


def feature_permutation(
    key: ArrayLike,
    fn: Callable,
    x: PyTree[ArrayLike],
    *,
    target: ArrayLike | None = None,
    feature_mask: PyTree[ArrayLike] | None = None,
    batch_size: int | None = None,
) -> PyTree[Float[Array, " batch ..."]]:
    """Permutation feature importance (Captum's `FeaturePermutation`), per example.

    Each feature group is shuffled across the batch by its own random permutation `pi` (the
    identity is replaced by a cyclic shift, as Captum redraws it), and every element of the
    group gets `F(x_j) - F(x_j with the group taken from x_pi(j))`. For a linear model
    `w . x` that is `w_i (x_ji - x_pi(j),i)`.

    Static arguments: `fn`, `feature_mask`, `batch_size`; `key`, `x` and `target` may be
    traced.

    Args:
        key: PRNG key; group `g` uses the permutation of `jax.random.split(key, groups)[g]`.
        fn: the model (as `feature_ablation`).
        x: `[batch, ...]` inputs (batch >= 2) or a pytree of them.
        target: as `integrated_gradients`.
        feature_mask: as `feature_ablation`, one mask for every example.
        batch_size: model rows per call (None: at most 32,768 rows and about 2M input
            elements per call).

    Returns:
        Attributions in the structure and shapes of `x`.

    Raises:
        ValueError: a batch of one example, a per-example or bad `feature_mask`, a target out
            of range.
        TypeError: `key` is not a PRNG key.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from xai_jax import feature_permutation
        >>> f = lambda z: z.sum(axis=1)
        >>> feature_permutation(jax.random.key(0), f, jnp.array([[1.0, 0.0], [0.0, 2.0]]))
        Array([[ 1., -2.],
               [-1.,  2.]], dtype=float32)
    """
    arrays = dict(key=key, x=x, target=target)
    statics = dict(feature_mask=feature_mask, batch_size=batch_size)
    return _eager.call(_feature_permutation, fn, arrays, statics)


def _feature_permutation(fn, key, x, target, feature_mask, batch_size):
    key = as_key(key)
    inputs, _, model, t, out = _setup(fn, x, target, None, 1024, batch_size)
    b = inputs.batch
    if b < 2:
        raise ValueError(f"x must have at least 2 examples to permute across, got {b}")
    labels, g = as_feature_groups(feature_mask, inputs.x, shared=True)
    identity = jnp.arange(b, dtype=jnp.int32)

    def draw(k):
        perm = jax.random.permutation(k, b).astype(jnp.int32)
        return jnp.where(jnp.all(perm == identity), jnp.roll(identity, 1), perm)

    perms = jax.vmap(draw)(jax.random.split(key, g))
    config = _Config(
        model, "groups", inputs.x, inputs.x, "permuted", 1, g + 1, labels, {}, t.index,
        extra=perms, num_groups=g,
    )  # fmt: skip
    return _Prepared(config, t, batch_size, out)
