"""Gaussian noise for the Langevin inner loop, cheap enough to draw every inner step.

An inner step of Entropy-SGD needs one standard normal per parameter. With
``jax.random.normal`` (threefry) that can cost as much as the gradient of an
MLP on CPU; the generator below is many times cheaper. On a CPU its loop is
bound by the latency of each weight's chain of dependent operations (hash,
logarithm, polynomial), so erf⁻¹ is one polynomial in w = −log(1 − u²),
evaluated by Estrin's scheme, with a logarithm that skips the special cases
the draw cannot meet. ``benchmarks/inner_loop.py`` times both generators
inside the inner loop ("What the Langevin noise costs" in its results, with
the machine).

``"hash"`` (default): per leaf, the counter c = 0 … n−1 is hashed by two
rounds of a 32-bit integer mixer (Wellons' low-bias ``lowbias32``) keyed by
two words drawn by threefry: b = H(H(c ⊕ k₀) ⊕ k₁). The top 24 bits give
a uniform u in (−1, 1) on the float32 grid of ``jax.random.uniform``, and
z = √2 erf⁻¹(u) is standard normal up to that 24-bit resolution — the same
resolution ``jax.random.normal`` has. The per-step, per-leaf keys come from
threefry, so streams for different seeds, outer steps, inner steps and leaves
are independent for practical purposes. The inner loop draws the words of all
its steps and leaves with one threefry call before the loop
(:func:`noise_source`), so the loop body itself runs no threefry (one small
threefry computation per step and leaf lengthens compilation; the reference
row "hash noise keyed by threefry inside the loop" of
``benchmarks/inner_loop.py`` times it). The distribution is
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

__all__ = [
    "NOISE_GENERATORS",
    "gaussian_at_step",
    "gaussian_like",
    "hash_tree",
    "hash_uniform",
    "hash_words",
    "noise_source",
]

NOISE_GENERATORS = ("hash", "threefry")


def _lowbias32(x: jax.Array) -> jax.Array:
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def hash_uniform(words: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniforms on the open interval (−1, 1), 24 bits (centres of 2²⁴ equal cells), keyed
    by two uint32 ``words``."""
    # An int32 iota converted: XLA:CPU emits a uint32 iota more slowly (same values, n < 2³¹).
    counter = jax.lax.iota(jnp.int32, math.prod(shape)).astype(jnp.uint32)
    bits = _lowbias32(_lowbias32(counter ^ words[0]) ^ words[1])
    u = (bits >> 8).astype(jnp.float32) * (2.0 / (1 << 24)) + (1.0 / (1 << 24) - 1.0)
    return u.reshape(shape)


def _hash_normal(words: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    # XLA fuses the hash, erf⁻¹ and the caller's update into one loop over the parameters.
    return jnp.sqrt(2.0) * _erf_inv_open(hash_uniform(words, shape))


# Cephes' single-precision logarithm (``logf``): log(1 + t) ≈ t − t²/2 + t³·P(t) for the
# mantissa m = 1 + t in [√½, √2); highest degree first.
_LOG_MANTISSA = (
    7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
    -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
)  # fmt: skip

# erf⁻¹(u)/u as a polynomial in t = w/8 − 1, w = −log(1 − u²) in [0, 16]: the degree-16
# Chebyshev interpolant of the exact function (float64, scipy), in powers of t, highest
# degree first. Relative error of the fit 9e-8; ``tests/test_inner_loop_speedups.py``
# refits it and checks every float32 input of the generator.
_ERF_INV_OVER_U = (
    -0.00139918542, -0.00195084875, 0.0123515868, -0.00154255634, -0.0283764867,
    0.0251496506, 0.00630830572, -0.0223766896, 0.030146377, -0.0428472361, 0.0425949639,
    -0.0162727579, -0.0365115661, 0.125761308, -0.323547246, 1.41085752, 2.66143864,
)  # fmt: skip


def _estrin(coefficients: tuple[float, ...], t: jax.Array) -> jax.Array:
    """The polynomial with ``coefficients`` (highest degree first) at ``t``, by Estrin's scheme.

    Pairs of terms are combined with t, t², t⁴, …: a dependency chain of about log₂(degree)
    multiply-adds instead of Horner's degree, which is what bounds an elementwise loop
    like the draw's on a CPU.
    """
    terms = [jnp.asarray(c, t.dtype) for c in reversed(coefficients)]
    power = t
    while len(terms) > 1:
        pairs = [terms[i : i + 2] for i in range(0, len(terms), 2)]
        terms = [pair[0] + pair[1] * power if len(pair) == 2 else pair[0] for pair in pairs]
        power = power * power
    return terms[0]


def _log_normal_positive(x: jax.Array) -> jax.Array:
    """log x for positive, finite, normal float32 x (Cephes' ``logf``, no special cases).

    Splits x = 2ᵉ·m with bit operations and evaluates a polynomial in m − 1: the cases
    XLA's ``log`` handles for every input (zero, negatives, infinities, subnormals) cannot
    occur in the draw, and dropping them shortens its loop. Error below 5e-7 absolute on
    the draw's inputs (tested through erf⁻¹).
    """
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    exponent = (bits >> 23) - 126
    mantissa = jax.lax.bitcast_convert_type((bits & 0x007FFFFF) | 0x3F000000, x.dtype)  # [½, 1)
    low = mantissa < 0.70710678118654752440
    exponent = jnp.where(low, exponent - 1, exponent).astype(x.dtype)
    t = jnp.where(low, mantissa + mantissa, mantissa) - 1.0
    t2 = t * t
    y = _estrin(_LOG_MANTISSA, t) * t * t2 + exponent * -2.12194440e-4 - 0.5 * t2
    return t + y + exponent * 0.693359375


def _erf_inv_open(u: jax.Array) -> jax.Array:
    """erf⁻¹(u) for float32 u in the open interval (−1, 1).

    With w = −log((1 − u)(1 + u)), erf⁻¹(u)/u is a smooth function of w, and every float32
    u in (−1, 1) has w ≤ 23·log 2 < 16 (1 − u ≥ 2⁻²⁴). So one polynomial in w covers the
    whole input range (``_ERF_INV_OVER_U``), where Giles' approximation ("Approximating
    the erfinv function", GPU Computing Gems, 2011; XLA's ``erf_inv``) needs two branches
    and a square root for its wider range. On the 2²⁴-point grid of ``_hash_normal`` the
    relative error against float64 is 4.2e-7 (XLA's ``lax.erf_inv``: 5.8e-6, from
    rounding u² near ±1). Tested against ``scipy.special.erfinv`` on that whole grid.
    """
    w = -_log_normal_positive((1.0 - u) * (1.0 + u))
    return _estrin(_ERF_INV_OVER_U, w * 0.125 - 1.0) * u


def _check_generator(generator: str) -> None:
    if generator not in NOISE_GENERATORS:
        raise ValueError(f"noise_generator must be one of {NOISE_GENERATORS}, got {generator!r}")


def hash_words(key: jax.Array, leading: tuple[int, ...], tree: Any) -> jax.Array:
    """Two uint32 key words per leaf of ``tree`` (shape ``leading + (leaves, 2)``), drawn by
    one threefry call."""
    return jax.random.bits(key, (*leading, len(jax.tree.leaves(tree)), 2), jnp.uint32)


def hash_tree(words: jax.Array, tree: Any, normal: Any = None) -> Any:
    """Hash normals with the shapes and dtypes of ``tree``, leaf j keyed by ``words[j]``;
    ``normal(words, shape)`` replaces :func:`_hash_normal` (a benchmark's reference)."""
    normal = normal or _hash_normal
    leaves, tree_def = jax.tree.flatten(tree)
    return jax.tree.unflatten(
        tree_def,
        [
            normal(words[j], jnp.shape(leaf)).astype(jnp.result_type(leaf))
            for j, leaf in enumerate(leaves)
        ],
    )


def gaussian_like(key: jax.Array, tree: Any, generator: str = "hash") -> Any:
    """Independent standard normal draws with the shapes and dtypes of ``tree``."""
    _check_generator(generator)
    if generator == "hash":
        return hash_tree(hash_words(key, (), tree), tree)
    leaves, tree_def = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        tree_def,
        [
            jax.random.normal(k, jnp.shape(leaf), jnp.result_type(leaf))
            for k, leaf in zip(keys, leaves, strict=True)
        ],
    )


def noise_source(key: jax.Array, tree: Any, num_steps: int, generator: str = "hash") -> Any:
    """What the draws of steps 0 … ``num_steps`` − 1 are made from, computed once, before a
    loop: for ``"hash"`` every step's and leaf's key words (one threefry call); for
    ``"threefry"`` the key itself. Draw step i with :func:`gaussian_at_step`."""
    _check_generator(generator)
    return hash_words(key, (num_steps,), tree) if generator == "hash" else key


def gaussian_at_step(source: Any, i: jax.Array, tree: Any, generator: str = "hash") -> Any:
    """Standard normal draws with the shapes of ``tree`` for step ``i`` (traced or not) of
    a :func:`noise_source`; distinct steps get independent draws."""
    _check_generator(generator)
    if generator == "hash":
        return hash_tree(source[i], tree)
    return gaussian_like(jax.random.fold_in(source, i), tree, generator)
