"""PRNG keys from seeds: the one conversion every part of relaxjax uses."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["Seed", "key_from_seed"]

Seed = int | jax.Array
"""An integer seed, a typed PRNG key (``jax.random.key``) or a raw ``uint32[2]`` key."""


def key_from_seed(seed: Seed) -> jax.Array:
    """A raw ``uint32[2]`` PRNG key from an integer seed, a typed key or a raw key.

    Args:
      seed: a Python or NumPy integer, a scalar integer array, a typed key
        (``jax.random.key(0)``) or a raw key (``jax.random.PRNGKey(0)``).

    Returns:
      The raw key, so that it can live in an optimizer state and a checkpoint.

    Example:
      >>> import jax
      >>> from relaxjax.core.keys import key_from_seed
      >>> key_from_seed(0).tolist() == jax.random.PRNGKey(0).tolist()
      True
      >>> key_from_seed(jax.random.key(0)).tolist() == jax.random.PRNGKey(0).tolist()
      True
    """
    if isinstance(seed, int):
        return jax.random.PRNGKey(seed)
    seed = jnp.asarray(seed) if not isinstance(seed, jax.Array) else seed
    if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(seed)
    if jnp.shape(seed) == ():
        return jax.random.PRNGKey(seed)
    return jnp.asarray(seed, jnp.uint32)
