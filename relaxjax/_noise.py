"""Gaussian noise for the Langevin inner loop, cheap enough to draw every inner step.

An inner step of Entropy-SGD needs one standard normal per parameter. With
``jax.random.normal`` (threefry) that can cost as much as the gradient of an
MLP on CPU; the generator below is several times cheaper, most of its cost
the logarithm inside erf⁻¹. ``benchmarks/inner_loop.py`` times both inside the
inner loop ("What the Langevin noise costs" in its results, with the machine).

``"hash"`` (default): per leaf, the counter c = 0 … n−1 is hashed by two
rounds of a 32-bit integer mixer (Wellons' low-bias ``lowbias32``) keyed by
two words from the threefry key: b = H(H(c ⊕ k₀) ⊕ k₁). The top 24 bits give
a uniform u in (−1, 1) on the float32 grid of ``jax.random.uniform``, and
z = √2 erf⁻¹(u) is standard normal up to that 24-bit resolution — the same
resolution ``jax.random.normal`` has. The per-step, per-leaf keys come from
threefry (``fold_in``), so streams for different seeds, outer steps, inner
steps and leaves are independent for practical purposes; the distribution is
tested (moments, Kolmogorov-Smirnov, tails, correlations, erf⁻¹ on its whole
input grid) in ``tests/test_inner_loop_speedups.py``.

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
    # An int32 iota converted: XLA:CPU emits a uint32 iota more slowly (same values, n < 2³¹).
    counter = jax.lax.iota(jnp.int32, math.prod(shape)).astype(jnp.uint32)
    bits = _lowbias32(_lowbias32(counter ^ words[0]) ^ words[1])
    # 24-bit uniform on the open interval (−1, 1): centres of 2²⁴ equal cells.
    u = (bits >> 8).astype(jnp.float32) * (2.0 / (1 << 24)) + (1.0 / (1 << 24) - 1.0)
    # XLA fuses the hash, erf⁻¹ and the caller's update into one loop over the parameters.
    return (jnp.sqrt(2.0) * _erf_inv_open(u)).reshape(shape)


# Giles' single-precision erf⁻¹ ("Approximating the erfinv function", GPU Computing Gems,
# 2011), the polynomials XLA's own ``erf_inv`` uses, highest degree first.
_ERF_INV_CENTRAL = (
    2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
    -0.00125372503, -0.00417768164, 0.246640727, 1.50140941,
)  # fmt: skip
_ERF_INV_TAIL = (
    -0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
    -0.0076224613, 0.00943887047, 1.00167406, 2.83297682,
)  # fmt: skip


def _horner(coefficients: tuple[float, ...], w: jax.Array) -> jax.Array:
    p = jnp.full_like(w, coefficients[0])
    for c in coefficients[1:]:
        p = c + p * w
    return p


def _erf_inv_open(u: jax.Array) -> jax.Array:
    """erf⁻¹(u) for float32 u in the open interval (−1, 1).

    Giles' approximation with w = −log((1 − u)(1 + u)) instead of XLA's
    −log1p(−u²): on the 2²⁴-point grid of ``_hash_normal`` the relative error
    against float64 is 2.6e-7 (XLA's ``lax.erf_inv``: 5.8e-6, from rounding u²
    near ±1), and it runs ~1.4x faster on XLA:CPU (log is cheaper than log1p).
    Tested against ``scipy.special.erfinv`` on the whole grid.
    """
    w = -jnp.log((1.0 - u) * (1.0 + u))
    central = _horner(_ERF_INV_CENTRAL, w - 2.5)
    tail = _horner(_ERF_INV_TAIL, jnp.sqrt(w) - 3.0)
    return jnp.where(w < 5.0, central, tail) * u


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
