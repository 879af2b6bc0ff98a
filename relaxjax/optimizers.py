"""The optimizers of the training command, built by name from a configuration.

Names: ``sgd`` (Nesterov), ``adam``, ``entropy-sgd``, ``entropy-adam``, ``hj``.
Relaxation methods take L inner steps per outer step and therefore consume L
mini-batches (L gradient evaluations) per outer step; ``sgd`` and ``adam`` take
one. Learning rates follow a step decay in *effective epochs* (passes over
the training data), so every method is scheduled by the work it has done.

Outer learning rate of the relaxation methods: the transforms return the
relaxed gradient (x − μ)/γ of *Deep Relaxation*; the command's ``lr`` is the
original code's rate on the displacement x − μ, so the outer step is
``lr · (x − μ) = (lr · γ_t) · (x − μ)/γ_t``. ``lr = 1`` without momentum
moves x to the running average μ: for Hopf-Lax that is the proximal-point
step x ← prox_{γf}(x).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from relaxjax.relaxation import hopf_lax, local_entropy
from relaxjax.schedules import scoping

__all__ = ["OPTIMIZERS", "OptimizerConfig", "make_optimizer"]

OPTIMIZERS = ("sgd", "entropy-sgd", "hj", "adam", "entropy-adam")
RELAXATIONS = ("entropy-sgd", "hj", "entropy-adam")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Hyper-parameters of the outer and inner optimizers (paper notation).

    Attributes:
      name: one of ``OPTIMIZERS``.
      lr: outer learning rate (for relaxations, the rate on x − μ; see module doc).
      lr_decay: factor applied at each milestone.
      lr_milestones: effective epochs at which the rate is multiplied by ``lr_decay``.
      momentum: outer (Nesterov) momentum; Adam ignores it.
      weight_decay: L2 coefficient λ (inside the inner loop for relaxations).
      num_steps: L, inner steps per outer step (relaxations only).
      gamma: initial scope γ₀ (PDE time, = 1/coupling of the original code).
      scoping: per-outer-step growth r of the coupling 1/γ: γ_t = γ₀ (1 + r)^−t.
      step_size: inner step η′ (the inner Adam step for entropy-adam).
      noise: Langevin noise ε (temperature ε²); HJ uses none.
      alpha: running-average weight α on the old average.
    """

    name: str = "entropy-sgd"
    lr: float = 1.0
    lr_decay: float = 0.2
    lr_milestones: tuple[float, ...] = ()
    momentum: float = 0.9
    weight_decay: float = 0.0
    num_steps: int = 20
    gamma: float = 1e4
    scoping: float = 1e-3
    step_size: float = 0.1
    noise: float = 1e-4
    alpha: float = 0.75

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.name!r}; valid optimizers: {', '.join(OPTIMIZERS)}"
            )

    @property
    def inner_steps(self) -> int:
        """Gradient evaluations (mini-batches) per outer step."""
        return self.num_steps if self.name in RELAXATIONS else 1


def _decay(config: OptimizerConfig, outer_steps_per_epoch: float) -> Callable:
    boundaries = {
        int(round(m * outer_steps_per_epoch)): config.lr_decay for m in config.lr_milestones
    }
    return optax.piecewise_constant_schedule(1.0, boundaries)


def make_optimizer(
    config: OptimizerConfig, outer_steps_per_epoch: float, seed: int = 0
) -> optax.GradientTransformationExtraArgs:
    """Builds the named optimizer; ``outer_steps_per_epoch`` converts epochs to steps."""
    decay = _decay(config, outer_steps_per_epoch)
    nesterov = dict(momentum=config.momentum or None, nesterov=bool(config.momentum))
    if config.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(config.weight_decay),
            optax.sgd(lambda t: config.lr * decay(t), **nesterov),
        )
        return optax.with_extra_args_support(tx)
    if config.name == "adam":
        tx = optax.chain(
            optax.add_decayed_weights(config.weight_decay),
            optax.adam(lambda t: config.lr * decay(t)),
        )
        return optax.with_extra_args_support(tx)

    gamma = scoping(config.gamma, config.scoping)
    common = dict(
        gamma=gamma,
        num_steps=config.num_steps,
        step_size=config.step_size,
        alpha=config.alpha,
        weight_decay=config.weight_decay,
    )
    if config.name == "hj":
        relaxation = hopf_lax(**common)
    else:
        inner = optax.adam(config.step_size) if config.name == "entropy-adam" else None
        relaxation = local_entropy(**common, noise=config.noise, inner_optimizer=inner, seed=seed)

    def outer_rate(t: jax.Array) -> jax.Array:
        return config.lr * decay(t) * gamma(t)

    return optax.chain(relaxation, optax.sgd(outer_rate, **nesterov))


def outer_gamma(config: OptimizerConfig, step: int | jax.Array) -> jax.Array:
    """The scope γ at an outer step (NaN for methods without one), for logging."""
    if config.name not in RELAXATIONS:
        return jnp.nan
    return scoping(config.gamma, config.scoping)(step)
