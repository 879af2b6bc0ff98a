"""The Hessian spectrum at trained weights: a measure of the width of a minimum.

**Hessian spectrum** (:func:`hessian_top_eigenvalues`,
:func:`hessian_spectral_density`). Lanczos iterations on Hessian-vector
products (forward-over-reverse: the jvp of the gradient), with full
reorthogonalisation, over parameter pytrees; and stochastic Lanczos quadrature
(Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019) for the eigenvalue
density. The Entropy-SGD paper motivates local entropy by the spectra of
trained networks: most eigenvalues near zero, a few large positive and
negative ones.

Every function takes ``loss_fn(params, *loss_args) -> scalar``, a deterministic
loss with the batch and model state passed in ``loss_args`` (see
:mod:`relaxjax.diagnostics`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from relaxjax.core.keys import key_from_seed

Params = Any
LossFn = Callable[..., jax.Array]  # loss_fn(params, *loss_args) -> scalar
KeyLike = int | jax.Array


# ----------------------------------------------------------------------------
# Hessian spectrum by Lanczos.
# ----------------------------------------------------------------------------


def hessian_vector_product(
    loss_fn: LossFn, params: Params, vector: Params, *, loss_args: tuple = ()
) -> Params:
    """H v with H = ∇²f(params): the jvp of the gradient (forward-over-reverse), a pytree.

    Args:
      loss_fn: ``loss_fn(params, *loss_args) -> scalar``, twice differentiable.
      params: the point, any pytree of float arrays.
      vector: v, a pytree like ``params``.
      loss_args: further arguments of ``loss_fn``.

    Returns:
      H v, a pytree like ``params``.

    References:
      ``docs/diagnostics.md`` §2.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import diagnostics
      >>> def loss(x, h):  # f(x) = ½ Σ hᵢ xᵢ², Hessian diag(h)
      ...     return 0.5 * jnp.sum(h * x**2)
      >>> h = jnp.array([4.0, 2.0, 1.0, 0.5])
      >>> v = jnp.ones(4)
      >>> print(diagnostics.hessian_vector_product(loss, jnp.ones(4), v, loss_args=(h,)))
      [4.  2.  1.  0.5]
    """
    grad = jax.grad(lambda p: loss_fn(p, *loss_args))
    return jax.jvp(grad, (params,), (vector,))[1]


def _orthogonalise(w: jax.Array, basis: jax.Array) -> jax.Array:
    """Removes from w its components along the rows of ``basis`` (twice: "twice is enough")."""
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _lanczos(
    matvec: Callable[[jax.Array], jax.Array], v0: jax.Array, num_iterations: int, key: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Lanczos with full reorthogonalisation on a symmetric operator of R^n.

    Returns (alphas (m,), betas (m,), basis (m + 1, n)): the tridiagonal
    T = tridiag(betas[:-1], alphas, betas[:-1]) = Vᵀ H V and the orthonormal
    basis V (rows). On breakdown (an invariant subspace, e.g. n ≤ m or repeated
    eigenvalues) the next vector is a fresh random one orthogonal to the basis
    and the coupling β_j is 0, so T stays exact (block diagonal).
    """
    n, m = v0.size, num_iterations
    dtype = v0.dtype
    basis = jnp.zeros((m + 1, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    threshold = jnp.sqrt(jnp.finfo(dtype).eps)

    def body(j, carry):
        basis, alphas, betas, scale = carry
        v = basis[j]
        w = matvec(v)
        a = jnp.vdot(v, w)
        w = _orthogonalise(w, basis)
        b = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(a) + b)
        broke = b <= threshold * scale

        def restart():
            r = jax.random.normal(jax.random.fold_in(key, j), (n,), dtype)
            r = _orthogonalise(r, basis)
            return r / jnp.linalg.norm(r)

        nxt = jax.lax.cond(broke, restart, lambda: w / b)
        basis = basis.at[j + 1].set(nxt)
        alphas = alphas.at[j].set(a)
        betas = betas.at[j].set(jnp.where(broke, jnp.zeros_like(b), b))
        return basis, alphas, betas, scale

    init = (basis, jnp.zeros(m, dtype), jnp.zeros(m, dtype), jnp.zeros((), dtype))
    basis, alphas, betas, _ = jax.lax.fori_loop(0, m, body, init)
    return alphas, betas, basis


@functools.partial(jax.jit, static_argnames=("loss_fn", "num_iterations"))
def _hessian_lanczos(
    loss_fn: LossFn,
    params: Params,
    loss_args: tuple,
    v0: jax.Array,
    key: jax.Array,
    *,
    num_iterations: int,
):
    _, unravel = ravel_pytree(params)
    grad = jax.grad(lambda p: loss_fn(p, *loss_args))

    def matvec(v: jax.Array) -> jax.Array:
        hv = jax.jvp(grad, (params,), (unravel(v.astype(v0.dtype)),))[1]
        return ravel_pytree(hv)[0].astype(v0.dtype)

    return _lanczos(matvec, v0, num_iterations, key)


def _tridiagonal_eigh(alphas: jax.Array, betas: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(alphas, np.float64)
    b = np.asarray(betas, np.float64)[:-1]
    t = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
    return np.linalg.eigh(t)


def _dimension(params: Params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


class HessianEigen(NamedTuple):
    """Extreme Ritz pairs of the Hessian.

    Attributes:
      eigenvalues: the k Ritz values, ordered as requested by ``which``.
      eigenvectors: unit Ritz vectors as a pytree like the parameters with a
        leading axis of size k (None unless requested).
      residuals: ‖H v − θ v‖ of each pair, from the Lanczos recurrence
        (the absolute value of β_m s_{m,i}); θ is within this distance of an
        eigenvalue.
    """

    eigenvalues: np.ndarray
    eigenvectors: Params | None
    residuals: np.ndarray


_WHICH = ("largest", "smallest", "magnitude")


def hessian_top_eigenvalues(
    loss_fn: LossFn,
    params: Params,
    *,
    k: int = 1,
    num_iterations: int = 20,
    loss_args: tuple = (),
    which: str = "largest",
    key: KeyLike = 0,
    return_eigenvectors: bool = False,
) -> HessianEigen:
    """The k extreme eigenvalues of the Hessian ∇²f(params), by Lanczos.

    Runs ``num_iterations`` Lanczos steps (capped at the number of parameters) on
    Hessian-vector products (the jvp of ``jax.grad(loss_fn)``) from a random
    start, with full reorthogonalisation, and returns Ritz values of the
    tridiagonal matrix. The extreme eigenvalues converge first; check
    ``residuals``. With ``num_iterations`` = the number of parameters every
    eigenvalue is exact up to round-off. Memory: (num_iterations + 1) vectors of
    the parameters' size (flattened to their common dtype).

    Sharpness measures of trained networks (the top eigenvalue; the count of
    large ones) complement the local entropy of :func:`local_entropy_estimate`
    (Chaudhari et al., *Entropy-SGD*, ICLR 2017: spectra of trained networks
    have most eigenvalues near zero).

    Args:
      loss_fn: ``loss_fn(params, *loss_args) -> scalar``, twice differentiable,
        deterministic.
      params: the point, any pytree of float arrays.
      k: number of eigenvalues (≤ num_iterations).
      num_iterations: Lanczos steps m (HVPs).
      loss_args: further arguments of ``loss_fn`` (arrays: data, model state).
      which: ``"largest"`` (algebraic, descending), ``"smallest"`` (ascending)
        or ``"magnitude"`` (largest ``abs(θ)``, descending in ``abs(θ)``).
      key: PRNG key or int seed of the start vector.
      return_eigenvectors: also return the Ritz vectors.

    Returns:
      A :class:`HessianEigen`.

    Raises:
      ValueError: for an unknown ``which`` or k outside [1, min(m, #params)].
      TypeError: for parameters that are not floating point.

    References:
      Lanczos with full reorthogonalisation; Chaudhari et al., *Entropy-SGD* (ICLR
      2017), the Hessian spectra of trained networks. ``docs/diagnostics.md`` §2.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import diagnostics
      >>> def loss(x, h):  # f(x) = ½ Σ hᵢ xᵢ², Hessian diag(h)
      ...     return 0.5 * jnp.sum(h * x**2)
      >>> h = jnp.array([4.0, 2.0, 1.0, 0.5])
      >>> top = diagnostics.hessian_top_eigenvalues(
      ...     loss, jnp.ones(4), k=2, num_iterations=4, loss_args=(h,)
      ... )
      >>> print(top.eigenvalues.round(4), bool(top.residuals.max() < 1e-4))
      [4. 2.] True
    """
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    flat, unravel = ravel_pytree(params)
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        raise TypeError(f"params must be floating point, got {flat.dtype}")
    m = min(int(num_iterations), flat.size)
    if not 1 <= k <= m:
        raise ValueError(f"need 1 <= k <= min(num_iterations, #params) = {m}, got k={k}")
    start_key, restart_key = jax.random.split(key_from_seed(key))
    v0 = jax.random.normal(start_key, flat.shape, flat.dtype)
    alphas, betas, basis = _hessian_lanczos(
        loss_fn, params, tuple(loss_args), v0, restart_key, num_iterations=m
    )
    theta, s = _tridiagonal_eigh(alphas, betas)
    if which == "largest":
        order = np.argsort(-theta)
    elif which == "smallest":
        order = np.argsort(theta)
    else:
        order = np.argsort(-np.abs(theta))
    order = order[:k]
    residuals = np.abs(float(np.asarray(betas)[-1]) * s[-1, order])
    vectors = None
    if return_eigenvectors:
        coefficients = jnp.asarray(s[:, order], basis.dtype)  # (m, k)
        flat_vectors = coefficients.T @ basis[:m]  # (k, n)
        vectors = jax.vmap(unravel)(flat_vectors)
    return HessianEigen(theta[order], vectors, residuals)


class SpectralDensity(NamedTuple):
    """Stochastic Lanczos quadrature of the Hessian spectrum.

    For each probe p, the Gauss quadrature rule (nodes θ_pj, weights w_pj, Σ_j w_pj
    = 1) of the spectral measure of the unit probe v_p: v_pᵀ g(H) v_p ≈ Σ_j w_pj
    g(θ_pj), exact for polynomials g of degree < 2m. With Rademacher probes,
    tr g(H) ≈ n · mean_p Σ_j w_pj g(θ_pj) (Hutchinson; exact for every probe when
    H is diagonal in the parameters' basis).

    Attributes:
      nodes: Ritz values, shape ``(P, m)``.
      weights: squared first components of the Ritz vectors, ``(P, m)``.
      dimension: n, the number of parameters.
    """

    nodes: np.ndarray
    weights: np.ndarray
    dimension: int

    def trace(self, fn: Callable[[np.ndarray], np.ndarray]) -> float:
        """Estimate of tr fn(H), e.g. ``trace(lambda t: t)`` or ``trace(np.log1p)``.

        Args:
          fn: a NumPy function applied to the Ritz nodes.

        Returns:
          n · mean over probes of Σ_j w_pj fn(θ_pj), a float.
        """
        return float(self.dimension * np.mean(np.sum(self.weights * fn(self.nodes), axis=1)))

    def density(self, t: np.ndarray | Sequence[float], sigma: float) -> np.ndarray:
        """Eigenvalue density at points ``t``, each Ritz node broadened by a Gaussian of
        width ``sigma``; integrates to 1 (Ghorbani, Krishnan & Xiao 2019).

        Args:
          t: the points, any shape.
          sigma: the Gaussian broadening (> 0).

        Returns:
          The density, a NumPy array of the shape of ``t``.
        """
        t = np.asarray(t, dtype=np.float64)[..., None, None]
        kernel = np.exp(-0.5 * ((t - self.nodes) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        return np.mean(np.sum(self.weights * kernel, axis=-1), axis=-1)


def hessian_spectral_density(
    loss_fn: LossFn,
    params: Params,
    *,
    num_iterations: int = 30,
    num_probes: int = 4,
    loss_args: tuple = (),
    key: KeyLike = 0,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian's eigenvalue density.

    ``num_probes`` Rademacher probes, each run through ``num_iterations`` Lanczos
    steps with full reorthogonalisation (Ubaru, Chen & Saad 2017; Ghorbani,
    Krishnan & Xiao 2019). Cost: num_probes · num_iterations HVPs. Use
    :meth:`SpectralDensity.density` to plot it and :meth:`SpectralDensity.trace`
    for spectral sums such as tr log(I + γH) (:func:`laplace_local_entropy_gap`
    with the whole spectrum).

    Args:
      loss_fn: ``loss_fn(params, *loss_args) -> scalar``, twice differentiable,
        deterministic.
      params: the point, any pytree of float arrays.
      num_iterations: Lanczos steps m per probe (capped at the number of parameters).
      num_probes: P ≥ 1 Rademacher probes.
      loss_args: further arguments of ``loss_fn`` (arrays: data, model state).
      key: PRNG key or int seed of the probes.

    Returns:
      A :class:`SpectralDensity` (NumPy arrays).

    Raises:
      ValueError: for ``num_probes < 1`` or ``num_iterations < 1``.

    References:
      Ubaru, Chen & Saad, *Fast estimation of tr(f(A)) via stochastic Lanczos
      quadrature* (2017); Ghorbani, Krishnan & Xiao, *An investigation into neural net
      optimization via Hessian eigenvalue density* (ICML 2019). ``docs/diagnostics.md``
      §3.

    Example:
      For a diagonal Hessian every Rademacher probe gives the exact trace:

      >>> import jax.numpy as jnp
      >>> from relaxjax import diagnostics
      >>> def loss(x, h):  # f(x) = ½ Σ hᵢ xᵢ², Hessian diag(h)
      ...     return 0.5 * jnp.sum(h * x**2)
      >>> h = jnp.array([4.0, 2.0, 1.0, 0.5])
      >>> density = diagnostics.hessian_spectral_density(
      ...     loss, jnp.ones(4), num_iterations=4, num_probes=2, loss_args=(h,)
      ... )
      >>> density.nodes.shape, round(density.trace(lambda t: t), 4)
      ((2, 4), 7.5)
    """
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    flat, _ = ravel_pytree(params)
    m = min(int(num_iterations), flat.size)
    if m < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    root = key_from_seed(key)
    nodes, weights = [], []
    for p in range(num_probes):
        probe_key, restart_key = jax.random.split(jax.random.fold_in(root, p))
        v0 = jax.random.rademacher(probe_key, flat.shape, flat.dtype)
        alphas, betas, _ = _hessian_lanczos(
            loss_fn, params, tuple(loss_args), v0, restart_key, num_iterations=m
        )
        theta, s = _tridiagonal_eigh(alphas, betas)
        nodes.append(theta)
        weights.append(s[0] ** 2)
    return SpectralDensity(np.stack(nodes), np.stack(weights), int(flat.size))
