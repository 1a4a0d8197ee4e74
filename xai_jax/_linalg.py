"""Linear algebra shared by the surrogate fits (ridge, feature selection, KernelSHAP)."""

import numbers

import jax
import jax.numpy as jnp


def solve_psd(gram: jax.Array, rhs: jax.Array, alpha) -> jax.Array:
    """Solve `(gram + alpha I) beta = rhs` for a symmetric positive semi-definite `gram`."""
    eye = jnp.eye(gram.shape[0], dtype=gram.dtype)
    if isinstance(alpha, numbers.Real) and alpha > 0:
        factor = jax.scipy.linalg.cho_factor(gram + alpha * eye)
        return jax.scipy.linalg.cho_solve(factor, rhs)
    # Minimum-norm solution: drop directions whose eigenvalue is round-off.
    evals, evecs = jnp.linalg.eigh(gram + jnp.asarray(alpha, gram.dtype) * eye)
    cutoff = jnp.max(jnp.abs(evals)) * gram.shape[0] * jnp.finfo(gram.dtype).eps
    inverse = jnp.where(evals > cutoff, 1 / jnp.where(evals > cutoff, evals, 1), 0)
    return evecs @ (inverse[:, None] * (evecs.T @ rhs))
