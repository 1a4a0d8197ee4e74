"""Boundary checks shared by the public functions.

Every public function validates its arguments once, here, before any compute, and raises a
`ValueError`/`TypeError` that names the argument and, for names, lists the valid choices.
Internals assume valid input.

Non-finite data: a concrete data argument (`x`, `baselines`, `background`, `X`/`y`/
`sample_weight`, `distances`, `x0`, ...) that holds NaN or inf raises a `ValueError` naming it
(`check_finite`, which `as_float_array` applies by default); traced values (under `jit`, `vmap`,
`grad`) cannot be inspected, and their NaN/inf propagate to the outputs of the rows they touch
(never a finite number in their place). Bounds (`lower`, `upper`) may be infinite and are not
checked this way.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(tree, *, ambient: bool = True) -> bool:
    """True when a leaf of `tree` is a tracer, or (with `ambient`) a trace is active.

    The one "is this traced" test. `ambient=True` asks "are we inside a transformation?" (the
    chunking layer picks its schedule by it): under `jit` every operation is staged, even on
    constants, so a one-element `add` returns a tracer exactly when we are being traced; under
    eager `grad`/`vmap` it returns an array and the leaves themselves tell (they are tracers
    when they carry the transformation). `ambient=False` asks "can these values be inspected
    now?" (a concrete constant met while tracing can: `is_concrete`).
    """
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree)):
        return True
    return ambient and isinstance(jax.lax.add(_zero(), _zero()), jax.core.Tracer)


@functools.cache
def _zero() -> jax.Array:
    """A concrete int32 0, made once (even when first asked for under a trace)."""
    with jax.ensure_compile_time_eval():
        return jnp.int32(0)


def is_concrete(value) -> bool:
    """True when `value` holds data we can inspect now (not a tracer under jit/vmap/grad)."""
    return not is_traced(value, ambient=False)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """Raise unless `value` is one of `choices`; return it."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {tuple(choices)}")
    return value


def check_bool(name: str, value) -> bool:
    """Raise unless `value` is a Python or NumPy bool (a truthy string such as "False" is not
    taken as True); return it as `bool`."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """Raise unless `value` is a Python/NumPy integer >= `minimum`; return it as `int`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive(name: str, value, *, allow_zero: bool = False) -> None:
    """Raise if a concrete `value` (scalar or array) has an entry that is not > 0 (or >= 0).

    Traced values cannot be inspected; the public functions document that they must be positive.
    """
    if not is_concrete(value):
        return
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    bad = ~(arr >= 0) if allow_zero else ~(arr > 0)  # `~(>)` also catches NaN
    if np.any(bad):
        bound = ">= 0" if allow_zero else "> 0"
        shown = arr if arr.ndim == 0 else arr[bad][:5]
        raise ValueError(f"{name} must be {bound} (and not NaN), got {shown}")


def check_scale(name: str, value) -> None:
    """Raise unless a concrete `value` (a noise scale, a stabiliser such as `eps`) is >= 0 and
    finite: `check_positive(allow_zero=True)`, then `check_finite`."""
    check_positive(name, value, allow_zero=True)
    check_finite(name, value)


def check_bounds(lower, upper) -> None:
    """Raise unless concrete `lower`/`upper` (each optional) are real, not NaN, broadcast
    together and `lower <= upper` everywhere; traced bounds cannot be checked."""
    for name, value in (("lower", lower), ("upper", upper)):
        if value is not None and is_concrete(value):
            arr = np.asarray(value)
            if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
                raise TypeError(f"{name} must be a real number or array, got {value!r}")
            if np.any(np.isnan(arr)):
                raise ValueError(f"{name} must not be NaN, got {value!r}")
    if lower is None or upper is None or not (is_concrete(lower) and is_concrete(upper)):
        return
    lo, hi = np.asarray(lower), np.asarray(upper)
    try:
        bad = np.any(lo > hi)
    except ValueError as err:
        raise ValueError(
            f"lower and upper must broadcast together, got shapes {lo.shape} and {hi.shape}"
        ) from err
    if bad:
        raise ValueError(
            f"lower must not exceed upper anywhere, got lower={lower!r}, upper={upper!r}"
        )


def as_float_array(name: str, value, *, min_ndim: int = 0, finite: bool = True) -> jax.Array:
    """`value` as a floating JAX array (integers and bools are promoted to the default float).

    With `finite` (the default) a concrete array holding NaN or inf raises (`check_finite`).
    """
    # Host data is checked where it is, in the dtype it will get (a float64 1e39 is inf in
    # float32): checking the converted array would wait for its transfer to the device, and for
    # whatever the device is still running.
    host = finite and _is_host(value)
    if host:
        check_finite_input(name, value)
    try:
        arr = jnp.asarray(value)
    except TypeError as err:
        raise TypeError(f"{name} must be an array, got {type(value).__name__}") from err
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.complexfloating):
            raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
        arr = arr.astype(jnp.result_type(float))
    if arr.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimension(s), got shape {arr.shape}"
        )
    if finite and not host:  # JAX arrays, sequences, tracers (skipped)
        check_finite(name, arr)
    return arr


def _is_host(value) -> bool:
    return isinstance(value, np.ndarray | np.generic | int | float)


def check_finite_input(name: str, value) -> None:
    """`check_finite` of an input as `as_float_array` checks it: host data (NumPy, Python
    numbers) in the floating dtype it will get, an array as it is."""
    if not _is_host(value):
        check_finite(name, value)
        return
    data = np.asarray(value)
    if np.issubdtype(data.dtype, np.floating):
        dtype = jax.dtypes.canonicalize_dtype(data.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            data = data.astype(dtype, copy=False)
            if not np.isfinite(data).all():
                check_finite(name, data)  # raises, saying where


@jax.jit
def _all_finite(arr: jax.Array) -> jax.Array:
    # `x * 0` is 0 for finite x and NaN for NaN and inf, so one fused sum answers (XLA keeps
    # IEEE semantics and does not fold it): one pass, cheaper than `isfinite(x).all()`.
    return jnp.sum(arr * jnp.zeros((), arr.dtype)) == 0


# Up to this size NumPy's single-threaded check of an array in CPU memory beats a compiled call
# (whose dispatch and sync cost tens of microseconds); above it XLA's threads win.
_HOST_CHECK_SIZE = 2**18


def _on_host(arr) -> bool:
    if not isinstance(arr, jax.Array):
        return True
    return arr.size <= _HOST_CHECK_SIZE and _host_sharding(arr.sharding)


@functools.lru_cache(maxsize=64)
def _host_sharding(sharding: jax.sharding.Sharding) -> bool:
    """All of an array with this sharding in this process's CPU memory."""
    return sharding.is_fully_addressable and cpu_sharding(sharding)


@functools.lru_cache(maxsize=64)
def cpu_sharding(sharding: jax.sharding.Sharding) -> bool:
    """Every device of this sharding is a CPU. Cached (shardings are hashable, and few): the
    lookup costs ~5 us on cold caches, the device walk ~15 us."""
    return all(device.platform == "cpu" for device in sharding.device_set)


def check_finite(name: str, value) -> None:
    """Raise a `ValueError` naming `name` if a concrete floating `value` holds NaN or inf.

    Traced values (under `jit`, `vmap`, `grad`) are not checked: their NaN/inf propagate to the
    outputs. Concrete values met while tracing (closed-over constants) are still checked.
    """
    if not is_concrete(value):
        return
    arr = value if isinstance(value, jax.Array) else np.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.floating) or arr.size == 0:
        return
    if _on_host(arr):  # NumPy data, or a small array in CPU memory: no dispatch, no sync
        if np.isfinite(np.asarray(arr)).all():
            return
    else:
        with jax.ensure_compile_time_eval():  # a constant inside the caller's trace: now
            if bool(_all_finite(arr)):
                return
    bad = ~np.isfinite(np.asarray(arr))
    count = int(bad.sum())
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))
    raise ValueError(
        f"{name} contains NaN or inf ({count} {'entry' if count == 1 else 'entries'}, the first "
        f"at index {first}); remove or impute them first (traced values are not checked: "
        "under jit, NaN/inf propagate to the outputs of the rows they touch)"
    )


def as_key(key, name: str = "key") -> jax.Array:
    """A single typed PRNG key from a typed key of any implementation or a legacy uint32 key.

    Legacy keys (`jax.random.PRNGKey(0)`, raw `uint32` data) are wrapped with the default
    implementation; anything else is rejected with a `TypeError`.
    """
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(
                f"{name} must be a single PRNG key, got a key array of shape {shape}; "
                "vmap over keys instead of passing a batch"
            )
        return key
    if dtype is not None and dtype == jnp.uint32:
        default_shape = jax.random.key_data(jax.random.key(0)).shape
        if shape == default_shape:
            return jax.random.wrap_key_data(key)
        raise ValueError(
            f"{name} is a raw uint32 array of shape {shape}, but a legacy key of the default "
            f"PRNG implementation has shape {default_shape}"
        )
    raise TypeError(
        f"{name} must be a PRNG key (jax.random.key(seed)) or a legacy uint32 key "
        f"(jax.random.PRNGKey(seed)), got {type(key).__name__}"
        + (f" with dtype {dtype} and shape {shape}" if dtype is not None else "")
    )


def as_row_keys(key, n: int, name: str = "key") -> jax.Array:
    """`n` typed PRNG keys, one per row: a single key split `n` ways, or a key batch checked.

    A single key (typed, or a legacy uint32 key) gives `jax.random.split(key, n)`, so row `i`
    uses `split(key, n)[i]`. One key per row (a typed key array of shape `[n]`, or legacy uint32
    data of shape `[n, 2]`) is returned as is (wrapped when legacy), which lets a caller that
    splits the batch (`xai_jax.sharding.explain_sharded`) hand each piece the keys its rows
    would get in the whole batch. A key batch of another length raises a `ValueError` naming
    `name`; anything that is not a key is rejected as by `as_key`.
    """
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and len(shape) > 0:
        batch = key
    elif dtype is not None and dtype == jnp.uint32 and shape is not None and len(shape) == 2:
        default_shape = jax.random.key_data(jax.random.key(0)).shape
        if shape[1:] != default_shape:
            raise ValueError(
                f"{name} is a raw uint32 array of shape {shape}, but legacy keys of the default "
                f"PRNG implementation have shape {default_shape} (one key) or "
                f"{(n, *default_shape)} (one per row)"
            )
        batch = jax.random.wrap_key_data(key)
    else:
        return jax.random.split(as_key(key, name), n)
    if batch.shape != (n,):
        raise ValueError(
            f"{name} must be a single PRNG key or one key per row, shape ({n},), "
            f"got a key array of shape {batch.shape}"
        )
    return batch
