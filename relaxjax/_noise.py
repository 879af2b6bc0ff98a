"""Gaussian noise for the Langevin inner loop, cheap enough to draw every inner step.

An inner step of Entropy-SGD needs one standard normal per parameter. With
``jax.random.normal`` (threefry) that costs more than the gradient of an MLP on
CPU: ~16 ms for the 1.87M weights of ``mnistfc`` on 2 cores, against ~5 ms for
the generator below (``benchmarks/inner_loop.py`` records both).

``"hash"`` (default): per leaf, the counter c = 0 … n−1 is hashed by two
rounds of a 32-bit integer mixer (Wellons' low-bias ``lowbias32``) keyed by
two words from the threefry key: b = H(H(c ⊕ k₀) ⊕ k₁). The top 24 bits give
a uniform u in (−1, 1) on the float32 grid of ``jax.random.uniform``, and
z = √2 erf⁻¹(u) is standard normal up to that 24-bit resolution — the same
resolution ``jax.random.normal`` has. The per-step, per-leaf keys come from
threefry (``fold_in``), so streams for different seeds, outer steps, inner
steps and leaves are independent for practical purposes; the distribution is
tested (moments, Kolmogorov-Smirnov, correlations) in ``tests/test_noise.py``.

``"threefry"``: ``jax.random.normal``, for bit-compatibility with JAX's own
generator.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["NOISE_GENERATORS", "gaussian_like"]

NOISE_GENERATORS = ("hash", "threefry")


def _lowbias32(x: jax.Array) -> jax.Array:
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _hash_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    words = jax.random.bits(key, (2,), jnp.uint32)
    counter = jax.lax.iota(jnp.uint32, math.prod(shape))
    bits = _lowbias32(_lowbias32(counter ^ words[0]) ^ words[1])
    # 24-bit uniform on the open interval (−1, 1): centres of 2²⁴ equal cells.
    u = (bits >> 8).astype(jnp.float32) * (2.0 / (1 << 24)) + (1.0 / (1 << 24) - 1.0)
    # Keep the integer hash and erf⁻¹ in separate loops: fused, XLA:CPU runs them ~2x slower.
    u = jax.lax.optimization_barrier(u)
    return (jnp.sqrt(2.0) * jax.lax.erf_inv(u)).reshape(shape)


def gaussian_like(key: jax.Array, tree: Any, generator: str = "hash") -> Any:
    """Independent standard normal draws with the shapes and dtypes of ``tree``."""
    leaves, tree_def = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    if generator == "hash":
        draws = [
            _hash_normal(k, jnp.shape(leaf)).astype(jnp.result_type(leaf))
            for k, leaf in zip(keys, leaves, strict=True)
        ]
    elif generator == "threefry":
        draws = [
            jax.random.normal(k, jnp.shape(leaf), jnp.result_type(leaf))
            for k, leaf in zip(keys, leaves, strict=True)
        ]
    else:
        raise ValueError(f"noise_generator must be one of {NOISE_GENERATORS}, got {generator!r}")
    return jax.tree.unflatten(tree_def, draws)
