"""Boundary checks shared by the public functions.

Every public function validates its arguments once, here, before any compute, and raises a
`ValueError`/`TypeError` that names the argument and, for names, lists the valid choices.
Internals assume valid input.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value) -> bool:
    """True when `value` holds data we can inspect now (not a tracer under jit/vmap/grad)."""
    return not isinstance(value, jax.core.Tracer)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """Raise unless `value` is one of `choices`; return it."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {tuple(choices)}")
    return value


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


def as_float_array(name: str, value, *, min_ndim: int = 0) -> jax.Array:
    """`value` as a floating JAX array (integers and bools are promoted to the default float)."""
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
    return arr


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
