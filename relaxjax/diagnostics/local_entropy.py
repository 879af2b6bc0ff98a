"""The local entropy at trained weights, by SGLD and thermodynamic integration.

Entropy-SGD and the PDE relaxations of *Deep Relaxation* (Chaudhari, Oberman,
Osher, Soatto, Carlier 2018; Chaudhari et al., *Entropy-SGD*, ICLR 2017) bias
training toward wide minima; the gap f_γ(x) − f(x) measures the width at given
weights x, so that minima found by different optimizers can be compared.

**Local entropy** (:func:`local_entropy_estimate`). For a scope γ and an inverse
temperature β (β = 1/ε², the convention of :func:`relaxjax.local_entropy`), the
viscous Hamilton-Jacobi relaxation of the loss is

    f_γ(x) = −β⁻¹ log ∫ G_{γ/β}(x − y) exp(−β f(y)) dy,

G_s the Gaussian density of variance s per coordinate (normalised, so f_γ → f
as γ → 0; this is :func:`relaxjax.pde.local_entropy_at`). The Entropy-SGD paper's
"local entropy" F(x, γ) is −β f_γ(x) up to a constant. Its gradient is
(x − ⟨y⟩)/γ with ⟨y⟩ the mean of the Gibbs measure
ρ(y; x) ∝ exp(−β f(y) − β|x − y|²/(2γ)). At a minimum x* of a quadratic bowl with
Hessian H, f_γ(x*) − f(x*) = (2β)⁻¹ Σᵢ log(1 + γλᵢ(H)): the sharper the minimum,
the larger the gap, and flat directions (λᵢ ≈ 0) cost nothing.

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

from relaxjax.core import noise
from relaxjax.core.keys import key_from_seed
from relaxjax.core.relaxation import local_entropy

Params = Any
LossFn = Callable[..., jax.Array]  # loss_fn(params, *loss_args) -> scalar
KeyLike = int | jax.Array


# ----------------------------------------------------------------------------
# Local entropy by SGLD and thermodynamic integration.
# ----------------------------------------------------------------------------


class LocalEntropyEstimate(NamedTuple):
    """Monte Carlo estimates around weights x, one entry per scope γ.

    Every ``*_stderr`` is the standard error of the Monte Carlo average over
    independent chains; it does not include the biases listed in
    :func:`local_entropy_estimate`.

    Attributes:
      gamma: the scopes γ, shape ``(G,)``.
      beta: the inverse temperature β = 1/ε².
      loss: f(x).
      relaxed_loss: f_γ(x), by thermodynamic integration over λ ∈ [0, 1], ``(G,)``.
      relaxed_loss_stderr: its standard error.
      gibbs_loss: E_ρ[f(y)] under the Gibbs measure ρ (λ = 1), a lower bound of
        f_γ(x) (f_γ = E_ρ[f] + β⁻¹ KL(ρ ‖ G_{γ/β}(x − ·))).
      gibbs_loss_stderr: its standard error.
      smoothed_loss: E[f(x + √(γ/β) ξ)], ξ ~ N(0, I) (λ = 0; the heat-equation
        smoothing at time γ/β), an upper bound of f_γ(x) (Jensen).
      smoothed_loss_stderr: its standard error.
      gradient: ∇f_γ(x) estimated by (x − ȳ)/γ, ȳ the mean of the chains at λ = 1;
        a pytree like the parameters with a leading axis of size G.
      gradient_norm: ‖(x − ȳ)/γ‖, ``(G,)``; biased upward by Monte Carlo noise:
        E‖ĝ‖² = ‖∇f_γ‖² + tr Cov_ρ(y)/(C γ²) for C chains.
      spread: E_ρ‖y − x‖², the mean squared distance of the Gibbs measure from x
        (d γ/β where f is flat, smaller in a sharp valley); ∂_γ f_γ(x) =
        d/(2βγ) − spread/(2γ²).
      spread_stderr: its standard error.
      lambdas: the quadrature nodes λ_k of the integration, ``(K,)``.
      integrand: E_{ρ_λ}[f] at each node, ``(G, K)``; non-increasing in λ.
    """

    gamma: np.ndarray
    beta: float
    loss: float
    relaxed_loss: np.ndarray
    relaxed_loss_stderr: np.ndarray
    gibbs_loss: np.ndarray
    gibbs_loss_stderr: np.ndarray
    smoothed_loss: np.ndarray
    smoothed_loss_stderr: np.ndarray
    gradient: Params
    gradient_norm: np.ndarray
    spread: np.ndarray
    spread_stderr: np.ndarray
    lambdas: np.ndarray
    integrand: np.ndarray


def lobatto_rule(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Lobatto nodes and weights on [0, 1] (both end points included).

    Exact for polynomials of degree ≤ 2·num_nodes − 3; 2 nodes is the trapezoidal
    rule, 3 is Simpson's.

    Args:
      num_nodes: the number of nodes, ≥ 2.

    Returns:
      ``(nodes, weights)``, NumPy arrays of shape ``(num_nodes,)``; the weights sum
      to 1.

    Raises:
      ValueError: for fewer than 2 nodes.

    References:
      ``docs/diagnostics.md`` §4.1 (the quadrature in λ).

    Example:
      >>> from relaxjax import diagnostics
      >>> nodes, weights = diagnostics.lobatto_rule(3)  # Simpson's rule
      >>> nodes.tolist(), weights.round(4).tolist()
      ([0.0, 0.5, 1.0], [0.1667, 0.6667, 0.1667])
    """
    if num_nodes < 2:
        raise ValueError(f"num_nodes must be >= 2, got {num_nodes}")
    legendre = np.polynomial.legendre.Legendre.basis(num_nodes - 1)
    interior = np.sort(legendre.deriv().roots().real) if num_nodes > 2 else np.zeros(0)
    t = np.concatenate([[-1.0], interior, [1.0]])
    w = 2.0 / (num_nodes * (num_nodes - 1) * legendre(t) ** 2)
    return (t + 1.0) / 2.0, w / 2.0


def _squared_distance(tree: Params, params: Params) -> jax.Array:
    """Σ over leaves of ‖tree − params‖², per chain (leading axis of ``tree``)."""
    leaves = jax.tree.leaves(
        jax.tree.map(
            lambda t, p: jnp.sum(
                jnp.square(t - p)
                .reshape(t.shape[0], -1)
                .astype(jnp.promote_types(t.dtype, jnp.float32)),
                axis=1,
            ),
            tree,
            params,
        )
    )
    return sum(leaves[1:], leaves[0])


def _map_chains(
    sample: Callable[[jax.Array], Params],
    keys: jax.Array,
    loss_fn: LossFn,
    params: Params,
    loss_args: tuple,
    batch_size: int | None,
):
    """Per-chain losses and squared distances to x, and the chains' mean.

    ``sample(key)`` draws one chain's sample; chains run all vectorised (None)
    or ``batch_size`` at a time, each evaluating its loss as it goes.
    """

    def one(key: jax.Array):
        y = sample(key)
        return y, loss_fn(y, *loss_args)

    if batch_size is None:
        samples, losses = jax.vmap(one)(keys)
    else:
        samples, losses = jax.lax.map(one, keys, batch_size=batch_size)
    mean = jax.tree.map(lambda s: jnp.mean(s, axis=0).astype(s.dtype), samples)
    return losses, _squared_distance(samples, params), mean


@functools.partial(
    jax.jit,
    static_argnames=("loss_fn", "num_steps", "num_chains", "noise_generator", "chain_batch_size"),
)
def _tempered_chains(
    loss_fn: LossFn,
    params: Params,
    loss_args: tuple,
    gamma: jax.Array,
    lam: jax.Array,
    noise: jax.Array,
    step_size: jax.Array,
    key: jax.Array,
    *,
    num_steps: int,
    num_chains: int,
    noise_generator: str,
    chain_batch_size: int | None,
):
    """Last iterates of independent chains of ``relaxjax.local_entropy``'s inner loop on λf.

    Each chain is one outer step of the transform with α = 0 (it returns
    (x − y_L)/γ, y_L the last SGLD iterate), so its stationary law is
    ρ_λ(y) ∝ exp(−β λ f(y) − β‖y − x‖²/(2γ)) with β = 1/ε².
    """
    grad = jax.grad(lambda p: loss_fn(p, *loss_args))

    def scaled_grad(y: Params) -> Params:
        return jax.tree.map(lambda g: (lam * g).astype(g.dtype), grad(y))

    def one_chain(chain_key: jax.Array) -> Params:
        tx = local_entropy(
            gamma,
            num_steps=num_steps,
            step_size=step_size,
            noise=noise,
            alpha=0.0,
            seed=chain_key,
            noise_generator=noise_generator,
        )
        relaxed, _ = tx.update(
            scaled_grad(params), tx.init(params), params, grad_fn=lambda y, i: scaled_grad(y)
        )
        return jax.tree.map(lambda x, d: (x - gamma * d).astype(x.dtype), params, relaxed)

    keys = jax.random.split(key, num_chains)
    return _map_chains(one_chain, keys, loss_fn, params, loss_args, chain_batch_size)


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "num_chains", "noise_generator", "chain_batch_size")
)
def _gaussian_samples(
    loss_fn: LossFn,
    params: Params,
    loss_args: tuple,
    scale: jax.Array,
    key: jax.Array,
    *,
    num_chains: int,
    noise_generator: str,
    chain_batch_size: int | None,
):
    """Exact draws x + scale·ξ, ξ ~ N(0, I): the law ρ₀ (λ = 0), scale = √(γ/β)."""

    def one(k: jax.Array) -> Params:
        xi = noise.gaussian_like(k, params, noise_generator)
        return jax.tree.map(lambda x, z: (x + scale * z).astype(x.dtype), params, xi)

    keys = jax.random.split(key, num_chains)
    return _map_chains(one, keys, loss_fn, params, loss_args, chain_batch_size)


def _mean_and_stderr(values: jax.Array) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


def local_entropy_estimate(
    loss_fn: LossFn,
    params: Params,
    gamma: float | Sequence[float],
    *,
    noise: float,
    loss_args: tuple = (),
    step_size: float | None = None,
    num_steps: int = 200,
    num_chains: int = 16,
    num_lambdas: int = 5,
    key: KeyLike = 0,
    noise_generator: str = "hash",
    chain_batch_size: int | None = None,
) -> LocalEntropyEstimate:
    """Estimates the local entropy f_γ(x) and related flatness measures by SGLD.

    What is estimated (see :class:`LocalEntropyEstimate`), at x = ``params``,
    for each γ in ``gamma`` and β = 1/ε² (ε = ``noise``, the convention of
    :func:`relaxjax.local_entropy`):

    * ``relaxed_loss``: f_γ(x) = −β⁻¹ log ∫ G_{γ/β}(x − y) e^{−βf(y)} dy (the viscous
      HJ solution of *Deep Relaxation* at time γ), by thermodynamic integration:
      with ρ_λ(y) ∝ exp(−βλ f(y) − β‖y − x‖²/(2γ)), d/dλ log ∫ G e^{−βλf} =
      −β E_{ρ_λ}[f], hence the identity

          f_γ(x) = ∫₀¹ E_{ρ_λ}[f(y)] dλ,

      evaluated with a ``num_lambdas``-point Gauss-Lobatto rule in λ. At λ = 1,
      ρ₁ = ρ is the Gibbs measure of Entropy-SGD; at λ = 0, ρ₀ = N(x, (γ/β) I).
    * ``gibbs_loss`` = E_ρ[f] ≤ f_γ(x) ≤ ``smoothed_loss`` = E_{ρ₀}[f]: the end
      points of the integrand, which is non-increasing in λ (its derivative is
      −β Var_{ρ_λ}(f)).
    * ``gradient`` = (x − ȳ)/γ, ``spread`` = E_ρ‖y − x‖².

    How: E_{ρ_λ}[·] for 0 < λ ≤ 1 is the average over ``num_chains`` independent
    chains, each one outer step of :func:`relaxjax.local_entropy` (α = 0, L =
    ``num_steps`` SGLD steps of size η′ = ``step_size`` on λf, started at x, the
    last iterate kept); chains are independent, so the standard errors are
    exact for the chains' law. λ = 0 is sampled exactly. Cost per γ:
    (num_lambdas − 1) · num_chains · num_steps gradient evaluations, the chains
    of one λ vectorised together (memory: num_chains copies of the parameters and
    activations; see ``chain_batch_size``).

    Biases (not in the standard errors):

    * SGLD discretisation, O(η′): for a quadratic inner objective of curvature k
      the chain's variance is that of ρ times 1/(1 − η′k/2) (the inner curvature
      is k = λ·(curvature of f) + 1/γ).
    * Finite ``num_steps``: the chains start at x and contract toward ρ_λ at
      rate ≈ (1 − η′/γ) per step where f is convex; barriers between minima
      within the scope are crossed only slowly at low temperature.
    * Quadrature in λ: small when E_{ρ_λ}[f] is smooth in λ, i.e. when β·Var(f)
      is moderate; compare the ``integrand`` with a larger ``num_lambdas``.
    * ``gradient_norm`` is biased upward by Monte Carlo noise (see the class).

    With the transform's default noise ε = 1e-4 (β = 10⁸) the Gibbs measure is
    nearly a point mass at the proximal point and f_γ ≈ the Hopf-Lax envelope;
    flatness shows at temperatures comparable to the loss differences being
    resolved (e.g. ε² ~ 1e-3–1e-2 for a cross-entropy).

    Args:
      loss_fn: ``loss_fn(params, *loss_args) -> scalar``, deterministic (fixed
        data, inference mode), differentiable.
      params: the weights x, any pytree of float arrays.
      gamma: one scope γ > 0 or a sequence of them.
      noise: ε > 0, the Langevin noise; temperature β⁻¹ = ε².
      loss_args: further arguments of ``loss_fn`` (arrays: data, model state).
      step_size: inner step η′ < 2γ for every γ; None: 0.05·γ for each γ.
        Lower it if f is much more curved than 1/γ (η′ < 2/(curvature + 1/γ)).
      num_steps: SGLD steps per chain.
      num_chains: independent chains per λ.
      num_lambdas: Gauss-Lobatto nodes in λ ∈ [0, 1] (≥ 2).
      key: PRNG key or int seed.
      noise_generator: ``"hash"`` or ``"threefry"`` (see :func:`relaxjax.local_entropy`).
      chain_batch_size: chains run at once; None (default): all, vectorised.
        Smaller values save memory on large networks (the results are the same).

    Returns:
      A :class:`LocalEntropyEstimate` (NumPy arrays; ``gradient`` a pytree).

    Raises:
      ValueError: for γ ≤ 0, ε ≤ 0, fewer than 2 chains, ``num_steps < 1``, a
        ``chain_batch_size`` outside [1, num_chains] or η′ outside (0, 2γ).

    References:
      Chaudhari et al., *Deep Relaxation* (2018), the local entropy; *Entropy-SGD*
      (ICLR 2017). ``docs/diagnostics.md`` §4, ``docs/deep-relaxation.md`` §1.1 and
      §1.4.

    Example:
      At the minimum of f(x) = ½ ‖x‖² in 2-D the exact gap f_γ − f is
      (2β)⁻¹ · 2 log(1 + γ) (see :func:`laplace_local_entropy_gap`):

      >>> import jax.numpy as jnp
      >>> from relaxjax import diagnostics
      >>> loss = lambda x: 0.5 * jnp.sum(x**2)
      >>> est = diagnostics.local_entropy_estimate(
      ...     loss, jnp.zeros(2), 1.0, noise=0.3, num_steps=100, num_chains=32, num_lambdas=3
      ... )
      >>> exact = diagnostics.laplace_local_entropy_gap([1.0, 1.0], 1.0, 0.3)
      >>> round(exact, 4), bool(abs(est.relaxed_loss[0] - exact) < 0.02)
      (0.0624, True)
      >>> bool(est.gibbs_loss[0] <= est.relaxed_loss[0] <= est.smoothed_loss[0])
      True
    """
    gammas = np.atleast_1d(np.asarray(gamma, dtype=np.float64))
    if gammas.ndim != 1 or gammas.size == 0 or not np.all(gammas > 0):
        raise ValueError(f"gamma must be one or more positive numbers, got {gamma!r}")
    if not noise > 0:
        raise ValueError(f"noise must be > 0 (β = 1/noise²), got {noise!r}")
    if num_chains < 2:
        raise ValueError(f"num_chains must be >= 2 (for standard errors), got {num_chains}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if chain_batch_size is not None and not 1 <= chain_batch_size <= num_chains:
        raise ValueError(f"chain_batch_size must be in [1, num_chains], got {chain_batch_size}")
    steps = 0.05 * gammas if step_size is None else np.full_like(gammas, float(step_size))
    if not np.all(steps > 0) or np.any(steps >= 2 * gammas):
        raise ValueError(
            f"step_size must satisfy 0 < step_size < 2*gamma for every gamma, got "
            f"step_size={step_size!r}, gamma={gammas.tolist()}"
        )
    lambdas, weights = lobatto_rule(num_lambdas)
    beta = 1.0 / float(noise) ** 2
    root = key_from_seed(key)
    loss_args = tuple(loss_args)
    loss = float(loss_fn(params, *loss_args))

    def scalar(v: float) -> jax.Array:
        return jnp.asarray(v, jnp.float32)

    out: dict[str, list] = {
        k: []
        for k in ("relaxed", "relaxed_se", "gibbs", "gibbs_se", "smooth", "smooth_se")
        + ("gradient", "gradient_norm", "spread", "spread_se", "integrand")
    }
    for g_index, (g, eta) in enumerate(zip(gammas, steps, strict=True)):
        means, ses = [], []
        for k_index, lam in enumerate(lambdas):
            k = jax.random.fold_in(jax.random.fold_in(root, g_index), k_index)
            if lam == 0.0:
                losses, _, _ = _gaussian_samples(
                    loss_fn,
                    params,
                    loss_args,
                    scalar(np.sqrt(g / beta)),
                    k,
                    num_chains=num_chains,
                    noise_generator=noise_generator,
                    chain_batch_size=chain_batch_size,
                )
            else:
                losses, sq, ybar = _tempered_chains(
                    loss_fn,
                    params,
                    loss_args,
                    scalar(g),
                    scalar(lam),
                    scalar(noise),
                    scalar(eta),
                    k,
                    num_steps=num_steps,
                    num_chains=num_chains,
                    noise_generator=noise_generator,
                    chain_batch_size=chain_batch_size,
                )
            m, se = _mean_and_stderr(losses)
            means.append(m)
            ses.append(se)
        # The last node is λ = 1: the Gibbs measure of Entropy-SGD.
        grad = jax.tree.map(lambda x, y, g=g: ((x - y) / g).astype(x.dtype), params, ybar)
        out["gradient"].append(grad)
        out["gradient_norm"].append(
            float(np.sqrt(sum(float(jnp.sum(jnp.square(v))) for v in jax.tree.leaves(grad))))
        )
        spread, spread_se = _mean_and_stderr(sq)
        out["spread"].append(spread)
        out["spread_se"].append(spread_se)
        out["integrand"].append(means)
        out["relaxed"].append(float(np.dot(weights, means)))
        out["relaxed_se"].append(float(np.sqrt(np.dot(weights**2, np.square(ses)))))
        out["gibbs"].append(means[-1])
        out["gibbs_se"].append(ses[-1])
        out["smooth"].append(means[0])
        out["smooth_se"].append(ses[0])

    return LocalEntropyEstimate(
        gamma=gammas,
        beta=beta,
        loss=loss,
        relaxed_loss=np.asarray(out["relaxed"]),
        relaxed_loss_stderr=np.asarray(out["relaxed_se"]),
        gibbs_loss=np.asarray(out["gibbs"]),
        gibbs_loss_stderr=np.asarray(out["gibbs_se"]),
        smoothed_loss=np.asarray(out["smooth"]),
        smoothed_loss_stderr=np.asarray(out["smooth_se"]),
        gradient=jax.tree.map(lambda *gs: jnp.stack(gs), *out["gradient"]),
        gradient_norm=np.asarray(out["gradient_norm"]),
        spread=np.asarray(out["spread"]),
        spread_stderr=np.asarray(out["spread_se"]),
        lambdas=lambdas,
        integrand=np.asarray(out["integrand"]),
    )


def laplace_local_entropy_gap(
    eigenvalues: np.ndarray | Sequence[float], gamma: float, noise: float
) -> float:
    """(2β)⁻¹ Σᵢ log(1 + γλᵢ): f_γ(x) − f(x) at the minimum of a quadratic with Hessian
    eigenvalues λᵢ (β = 1/ε²), the Laplace approximation of the local-entropy gap.

    Exact for f(y) = f(x) + ½(y − x)ᵀH(y − x) (*Deep Relaxation*, viscous HJ
    solution of a quadratic). Eigenvalues ≤ −1/γ make the integral diverge and
    raise ``ValueError``. With only the top-k eigenvalues (Lanczos) it is a lower
    bound on the quadratic model's gap when the rest are ≥ 0.

    Args:
      eigenvalues: the Hessian eigenvalues λᵢ (all of them, or the top k).
      gamma: the scope γ > 0.
      noise: ε, the Langevin noise (β = 1/ε²).

    Returns:
      The gap, a float.

    Raises:
      ValueError: if an eigenvalue is ≤ −1/γ.

    References:
      Chaudhari et al., *Deep Relaxation* (2018). ``docs/deep-relaxation.md`` §1.1,
      ``docs/diagnostics.md`` §5.

    Example:
      >>> from relaxjax import diagnostics
      >>> round(diagnostics.laplace_local_entropy_gap([3.0, 0.0], gamma=1.0, noise=0.1), 6)
      0.006931
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if np.any(1.0 + gamma * lam <= 0):
        raise ValueError("an eigenvalue <= -1/gamma: the Gaussian integral diverges")
    return float(0.5 * noise**2 * np.sum(np.log1p(gamma * lam)))
