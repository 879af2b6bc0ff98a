"""Laplacian smoothing of the gradient (LS-SGD), a relative of the Deep Relaxation optimizers.

Osher, Wang, Yin, Luo, Barekat, Pham, Lin, *Laplacian smoothing gradient descent*,
arXiv:1806.06317 (Res. Math. Sci. 9:55, 2022), precondition the (stochastic) gradient g
of the parameters, flattened into one vector of length n, by the inverse of the positive
definite circulant matrix I − σΔ::

    d = (I − σΔ)⁻¹ g,        x ← x − η d

where Δ is the periodic 1-D discrete Laplacian (the stencil [1, −2, 1], wrapping around
at the ends). A circulant matrix is diagonalised by the discrete Fourier transform, so
with ĝ = FFT(g)::

    d̂_k = ĝ_k / (1 + 2σ(1 − cos(2πk/n))) = ĝ_k / (1 + 4σ sin²(πk/n)),   k = 0 … n − 1

at the cost of one real FFT and its inverse, O(n log n), next to the O(n·batch) of the
gradient itself. (A length with a prime factor above 7, whose FFT is slow, is solved at
a nearby fast length instead, through the periodic extension of g by the radius where
the operator's Green's function falls below round-off: the same result to round-off.)
The operator preserves the mean of g (its k = 0 mode) and damps the high frequencies,
which the paper shows reduces the variance of a stochastic gradient and allows larger
step sizes; it is also the implicit (backward-Euler) step of the heat equation in the
parameter index, and its relation to Hamilton-Jacobi equations is that paper's
motivation. σ = 0 is the identity.

Flattening. :func:`laplacian_smoothing` concatenates all leaves of the update pytree
(in ``jax.tree.leaves`` order, each leaf raveled in C order) into one vector of length
n, as the paper's formulation does for "the" parameter vector; ``per_leaf=True``
smooths each leaf on its own (each raveled, of its own length), which is what the
authors' released PyTorch optimizer does (one FFT per parameter tensor).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from relaxjax.core import hyperparams
from relaxjax.core.hyperparams import ScalarOrSchedule

__all__ = ["laplacian_smooth", "laplacian_smoothing", "ls_sgd"]


def _check_sigma(sigma: object) -> None:
    if callable(sigma):
        raise ValueError(
            "sigma must be a number or a scalar array, not a schedule: laplacian_smoothing "
            "keeps no step count. Wrap it in optax.inject_hyperparams to schedule sigma."
        )
    if not isinstance(sigma, jax.core.Tracer) and np.ndim(sigma) != 0:
        raise ValueError(f"sigma must be a scalar, got an array of shape {np.shape(sigma)}.")
    hyperparams.check_nonnegative("sigma", sigma)


def _is_static_zero(sigma: object) -> bool:
    return not isinstance(sigma, jax.core.Tracer) and hyperparams.concrete_value(sigma) == 0


def _compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """float32 for float32 and narrower floats (bfloat16, float16), float64 for float64."""
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"laplacian_smoothing needs real floating-point updates, got dtype {dtype}."
        )
    return jnp.promote_types(dtype, jnp.float32)


def _largest_prime_factor(n: int) -> int:
    largest, d = 1, 2
    while d * d <= n:
        while n % d == 0:
            largest, n = d, n // d
        d += 1
    return max(largest, n)


def _next_fast_length(n: int) -> int:
    """The smallest m >= n whose prime factors are 2, 3, 5 and 7."""
    m = n
    while _largest_prime_factor(m) > 7:
        m += 1
    return m


def _kernel_radius(sigma: float, dtype: jnp.dtype) -> int:
    """K such that the Green's function of I − σΔ beyond |j| > K weighs below round-off.

    On the line, (I − σΔ)⁻¹ is the convolution with r^|j| / sqrt(1 + 4σ), r the root in
    (0, 1) of σr² − (1 + 2σ)r + σ = 0; its mass beyond K is 2 r^(K+1) / ((1 − r) sqrt(1 + 4σ)).
    """
    root = math.sqrt(1.0 + 4.0 * sigma)
    r = 2.0 * sigma / (1.0 + 2.0 * sigma + root)  # (1 + 2σ − root)/(2σ), without cancellation
    tail = float(jnp.finfo(dtype).eps) / 8.0 * (1.0 - r) * root / 2.0
    return max(1, math.ceil(math.log(tail) / math.log(r)))


def _fft_solve(v: jax.Array, sigma: Any, n: int) -> jax.Array:
    """(I − σΔ_n)⁻¹ along the last axis by rfft/irfft of length n (the last axis of v)."""
    k = np.arange(n // 2 + 1)
    # 1 + 2σ(1 − cos(2πk/n)) written as 1 + 4σ sin²(πk/n): no cancellation at small k.
    eigenvalues = 1.0 + 4.0 * jnp.asarray(sigma, v.dtype) * jnp.asarray(
        np.sin(np.pi * k / n) ** 2, dtype=v.dtype
    )
    return jnp.fft.irfft(jnp.fft.rfft(v, axis=-1) / eigenvalues, n=n, axis=-1)


def _smooth_last_axis(v: jax.Array, sigma: Any) -> jax.Array:
    """(I − σΔ)⁻¹ along the last axis of a real array, by rfft/irfft (dtype of ``v``).

    An FFT of a length with a large prime factor is several times slower than one of a
    nearby length made of small primes (XLA falls back to Bluestein's algorithm; the
    mnistfc network has 2 · 933893 parameters). For such lengths, when σ is known at
    trace time, the same solve is done at a fast length m >= n + 2K instead: the vector
    is extended periodically by K entries on each side and zero-padded to m, solved
    with the length-m eigenvalues, and entries K … K + n − 1 are kept. They equal the
    length-n solve up to the Green's function's mass beyond K, chosen below round-off
    (:func:`_kernel_radius`), so the result is the exact solve to round-off either way.
    """
    n = v.shape[-1]
    if n <= 1:  # the periodic Laplacian of one node is 0: the solve is the identity
        return v
    static_sigma = None if isinstance(sigma, jax.core.Tracer) else hyperparams.concrete_value(sigma)
    smoothed = None
    if static_sigma is not None and static_sigma > 0 and _largest_prime_factor(n) > 7:
        radius = _kernel_radius(static_sigma, v.dtype)
        m = _next_fast_length(n + 2 * radius)
        if n > 2 * radius and m < 2 * n:
            extended = jnp.concatenate([v[..., n - radius :], v, v[..., :radius]], axis=-1)
            padding = [(0, 0)] * (v.ndim - 1) + [(0, m - n - 2 * radius)]
            solved = _fft_solve(jnp.pad(extended, padding), static_sigma, m)
            smoothed = solved[..., radius : radius + n]
    if smoothed is None:
        smoothed = _fft_solve(v, sigma, n)
    # A traced σ = 0 (e.g. under optax.inject_hyperparams) is still exactly the identity.
    return jnp.where(jnp.asarray(sigma) == 0, v, smoothed.astype(v.dtype))


def laplacian_smooth(vector: jax.typing.ArrayLike, sigma: jax.typing.ArrayLike) -> jax.Array:
    """Solves ``(I − σΔ) d = vector`` along the last axis, Δ the periodic 1-D Laplacian.

    Δ has the stencil [1, −2, 1] and wraps around (a circulant matrix); the solve is
    done in Fourier space, ``d = irfft(rfft(v) / (1 + 4σ sin²(πk/n)))``, in float32 for
    float32 and narrower inputs (float64 for float64), and the result is cast back to
    the input's dtype. Leading axes are a batch of independent vectors. σ = 0 returns
    ``vector`` unchanged.

    Args:
      vector: a real floating-point array; its last axis (length n) is smoothed.
      sigma: σ ≥ 0, the smoothing strength (a scalar).

    Returns:
      The smoothed array ``d``, of the shape and dtype of ``vector``.

    Raises:
      ValueError: for a negative or non-scalar ``sigma`` or a non-floating ``vector``.

    References:
      Osher, Wang, Yin et al., *Laplacian smoothing gradient descent*, arXiv:1806.06317.

    Example:
      A spike is spread out and the sum (the mean) is kept:

      >>> import jax.numpy as jnp, numpy as np
      >>> from relaxjax.core.laplacian_smoothing import laplacian_smooth
      >>> d = laplacian_smooth(jnp.array([0.0, 0.0, 4.0, 0.0, 0.0]), 1.0)
      >>> print(np.round(np.asarray(d), 3), round(float(d.sum()), 3))
      [0.364 0.727 1.818 0.727 0.364] 4.0
    """
    _check_sigma(sigma)
    v = jnp.asarray(vector)
    if v.ndim == 0:
        raise ValueError("laplacian_smooth needs an array with at least one axis, got a scalar.")
    if _is_static_zero(sigma):
        return v
    compute = _compute_dtype(v.dtype)
    return _smooth_last_axis(v.astype(compute), sigma).astype(v.dtype)


def _smooth_tree(updates: optax.Updates, sigma: Any, per_leaf: bool) -> optax.Updates:
    leaves, treedef = jax.tree.flatten(updates)
    if not leaves:
        return updates
    leaves = [jnp.asarray(leaf) for leaf in leaves]
    computes = [_compute_dtype(leaf.dtype) for leaf in leaves]
    if per_leaf:
        smoothed = [
            _smooth_last_axis(leaf.reshape(-1).astype(c), sigma).reshape(leaf.shape)
            for leaf, c in zip(leaves, computes, strict=True)
        ]
    else:
        compute = jnp.result_type(*computes)
        flat = jnp.concatenate([leaf.reshape(-1).astype(compute) for leaf in leaves])
        flat = _smooth_last_axis(flat, sigma)
        offsets = np.cumsum([leaf.size for leaf in leaves])[:-1]
        smoothed = [
            piece.reshape(leaf.shape)
            for piece, leaf in zip(jnp.split(flat, offsets), leaves, strict=True)
        ]
    cast = [s.astype(leaf.dtype) for s, leaf in zip(smoothed, leaves, strict=True)]
    return jax.tree.unflatten(treedef, cast)


def laplacian_smoothing(
    sigma: jax.typing.ArrayLike, *, per_leaf: bool = False
) -> optax.GradientTransformation:
    """Laplacian smoothing of the updates: ``d = (I − σΔ)⁻¹ g`` over the flattened parameters.

    The preconditioner of LS-SGD (Osher, Wang, Yin et al. 2018): Δ is the periodic 1-D
    discrete Laplacian (stencil [1, −2, 1], circulant) on the vector of all update
    leaves concatenated (``jax.tree.leaves`` order, each raveled in C order; of length n
    the total number of parameters), and the solve is done by FFT::

        d = irfft( rfft(g) / (1 + 2σ(1 − cos(2πk/n))) ),   k = 0 … ⌊n/2⌋

    which costs O(n log n) per step and keeps the mean of g. Chain it before an
    optimizer (:func:`ls_sgd` does so with SGD). Stateless: the state is
    ``optax.EmptyState()``. Each leaf keeps its dtype; the FFT runs in float32 (float64
    for float64 leaves). σ = 0 is exactly the identity, also when σ is traced.

    Args:
      sigma: σ ≥ 0, the smoothing strength (a scalar; schedule it with
        ``optax.inject_hyperparams``). The paper's experiments use σ of order 1.
      per_leaf: smooth each leaf separately (each raveled, its own periodic Laplacian)
        instead of the concatenation of all leaves; the authors' released PyTorch code
        smooths this way, one parameter tensor at a time.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: for a negative or non-scalar ``sigma``, a schedule, or a ``per_leaf``
        that is not a bool.

    References:
      Osher, Wang, Yin, Luo, Barekat, Pham, Lin, *Laplacian smoothing gradient descent*,
      arXiv:1806.06317 (Res. Math. Sci. 9:55, 2022). ``docs/relatives.md`` §1.

    Example:
      The leaves are smoothed as one vector (here [0, 4, 0, 0, 0]):

      >>> import jax.numpy as jnp, numpy as np
      >>> from relaxjax.core.laplacian_smoothing import laplacian_smoothing
      >>> tx = laplacian_smoothing(1.0)
      >>> grads = {"b": jnp.array([0.0, 4.0]), "w": jnp.zeros((1, 3))}
      >>> smoothed, _ = tx.update(grads, tx.init(grads))
      >>> print(np.round(np.asarray(smoothed["b"]), 3), np.round(np.asarray(smoothed["w"]), 3))
      [0.727 1.818] [[0.727 0.364 0.364]]
    """
    _check_sigma(sigma)
    if not isinstance(per_leaf, (bool, np.bool_)):
        raise ValueError(f"per_leaf must be a bool, got {per_leaf!r}.")
    identity = _is_static_zero(sigma)

    def update_fn(updates, state, params=None):
        del params
        if identity:
            return updates, state
        return _smooth_tree(updates, sigma, bool(per_leaf)), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def ls_sgd(
    learning_rate: ScalarOrSchedule,
    sigma: jax.typing.ArrayLike,
    *,
    momentum: float | None = None,
    nesterov: bool = False,
    per_leaf: bool = False,
) -> optax.GradientTransformation:
    """LS-SGD: Laplacian-smoothed gradient followed by SGD, ``x ← x − η (I − σΔ)⁻¹ g``.

    ``optax.chain(laplacian_smoothing(sigma, per_leaf=per_leaf), optax.sgd(...))``; with
    ``momentum`` the smoothed gradient feeds the momentum buffer (as in the authors'
    code, where weight decay is added after the smoothing: chain
    ``optax.add_decayed_weights`` between the two to do the same).

    Args:
      learning_rate: the step size η (float or Optax schedule).
      sigma: σ ≥ 0, the smoothing strength (see :func:`laplacian_smoothing`).
      momentum: the SGD momentum; None or 0: plain SGD.
      nesterov: Nesterov momentum (when ``momentum`` is set).
      per_leaf: smooth each leaf separately (see :func:`laplacian_smoothing`).

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: for a negative ``sigma`` or ``momentum`` or a non-positive
        ``learning_rate``.

    References:
      Osher, Wang, Yin et al., *Laplacian smoothing gradient descent*, arXiv:1806.06317.
      ``docs/relatives.md`` §1.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from relaxjax.core.laplacian_smoothing import ls_sgd
      >>> loss = lambda x: 0.5 * jnp.sum(x**2)
      >>> tx = ls_sgd(0.5, 1.0)
      >>> x = x0 = jnp.array([1.0, -2.0, 3.0])
      >>> state = tx.init(x)
      >>> for _ in range(20):
      ...     updates, state = tx.update(jax.grad(loss)(x), state)
      ...     x = optax.apply_updates(x, updates)
      >>> bool(loss(x) < 1e-2 * loss(x0))
      True
    """
    hyperparams.check_positive("learning_rate", learning_rate)
    if momentum is not None:
        hyperparams.check_nonnegative("momentum", momentum)
    return optax.chain(
        laplacian_smoothing(sigma, per_leaf=per_leaf),
        optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov and bool(momentum)),
    )
