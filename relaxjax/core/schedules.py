"""Scoping: the schedule that shrinks the scope γ of a relaxation during training.

Early in training a large scope γ smooths the loss strongly; as γ → 0 the
relaxed loss f_γ tends back to f, so the final weights minimise the true
loss (Chaudhari et al., *Deep Relaxation*, 2018, §"scoping"; *Entropy-SGD*,
ICLR 2017, §4.3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from relaxjax.core import hyperparams

__all__ = ["scoping"]


def scoping(
    initial_gamma: float,
    rate: float,
    *,
    final_gamma: float | None = None,
    transition_steps: int = 1,
    staircase: bool = False,
) -> optax.Schedule:
    """Geometric decay of the scope γ over outer steps::

        γ_t = max(γ₀ (1 + r)^(−t / T), γ_final)

    This is the original code's coupling schedule ρ_t = ρ₀ (1 + ρ₁)^t written
    for γ = 1/ρ: ``scoping(1 / rho0, rho1)`` reproduces ``--gamma rho0
    --scoping rho1`` (e.g. its MNIST example ρ₀ = 1e-4, ρ₁ = 1e-3 is
    ``scoping(1e4, 1e-3)``), and a cap ρ ≤ ρ_max is ``final_gamma=1/rho_max``.

    Args:
      initial_gamma: γ₀ > 0, the scope at step 0.
      rate: r ≥ 0, the growth rate of the coupling 1/γ per ``transition_steps``.
      final_gamma: optional floor on γ, 0 < γ_final ≤ γ₀.
      transition_steps: T ≥ 1, outer steps per factor (1 + r) (e.g. the number
        of outer steps per epoch for a per-epoch schedule).
      staircase: if True, decay in discrete jumps every T steps.

    Returns:
      An Optax schedule (a function of the outer step count), to be passed as
      ``gamma`` to ``relaxjax.local_entropy``, ``relaxjax.hopf_lax`` or the
      aliases.

    Raises:
      ValueError: for γ₀ ≤ 0, r < 0, T < 1 or a floor outside (0, γ₀].

    References:
      Chaudhari et al., *Deep Relaxation* (2018), scoping; *Entropy-SGD* (ICLR 2017),
      §4.3. ``docs/deep-relaxation.md`` §2.4, ``docs/algorithms.md`` §4.

    Example:
      >>> import relaxjax
      >>> schedule = relaxjax.scoping(1e4, 1e-3, final_gamma=1e3)
      >>> float(schedule(0)), round(float(schedule(1000)) / 1e4, 3)  # (1 + r)^-1000
      (10000.0, 0.368)
      >>> float(schedule(10**6))  # the floor
      1000.0
    """
    hyperparams.check_positive("initial_gamma", initial_gamma)
    hyperparams.check_nonnegative("rate", rate)
    hyperparams.check_num_steps("transition_steps", transition_steps)
    if final_gamma is not None:
        hyperparams.check_positive("final_gamma", final_gamma)
        if final_gamma > initial_gamma:
            raise ValueError(
                f"final_gamma ({final_gamma}) must not exceed initial_gamma ({initial_gamma})."
            )

    def schedule(count: jax.Array) -> jax.Array:
        exponent = jnp.asarray(count, jnp.float32) / transition_steps
        if staircase:
            exponent = jnp.floor(exponent)
        gamma = initial_gamma * jnp.power(1.0 + rate, -exponent)
        if final_gamma is not None:
            gamma = jnp.maximum(gamma, final_gamma)
        return gamma

    return schedule
