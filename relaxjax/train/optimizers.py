"""The optimizers of the training command, built by name from a configuration.

Names: ``sgd`` (Nesterov), ``adam``, ``entropy-sgd``, ``entropy-adam``, ``hj``, ``heat``,
``parle``.
Relaxation methods take L inner steps per outer step and therefore consume L
mini-batches (L gradient evaluations) per outer step; ``sgd`` and ``adam`` take
one. Learning rates follow a step decay in *effective epochs* (passes over
the training data), so every method is scheduled by the work it has done.

Outer learning rate of the relaxation methods: the command's ``lr`` is, as in
the original code and in ``relaxjax.entropy_sgd``, the rate on the
displacement x − μ (the relaxations are built with ``output="displacement"``).
``lr = 1`` without momentum moves x to the running average μ: for Hopf-Lax
that is the proximal-point step x ← prox_{γf}(x).

``heat`` (``relaxjax.heat_smoothing``): the HEAT optimizer of the Deep Relaxation
research code, the Entropy-SGD inner loop with a strong coupling and the uniform
average of the inner iterates; its preset is that code's (coupling 10, L = 100).

Inner momentum (``inner_momentum``, ``entropy-sgd``, ``hj`` and ``heat``): Nesterov
momentum on the inner SGD steps. ``inner_momentum_buffer="reset"`` (default) zeroes
its buffer at every outer step, as the authors' Entropy-SGD code (Lua and PyTorch)
does, whose settings the presets follow; ``"keep"`` carries one buffer through the
whole run, as their Deep Relaxation research code does.

``parle`` (``relaxjax.parle``): n = ``replicas`` Entropy-SGD replicas, each on
its own L mini-batches, so an outer step costs n·L gradient evaluations. In
the original code's convention the outer direction is (x − μ) + ρ (x − x̄) at
rate ``lr``, with both couplings scoped by ``scoping`` per outer step and capped
(scope γ ≥ ``gamma_min``, ρ ≤ ``elastic_rho_max``), which is ``relaxjax.parle``'s
own convention.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import optax

from relaxjax.core.parle import coupling_schedule, parle
from relaxjax.core.relaxation import heat_smoothing, hopf_lax, local_entropy
from relaxjax.core.schedules import scoping

__all__ = ["OPTIMIZERS", "OptimizerConfig", "make_optimizer"]

OPTIMIZERS = ("sgd", "entropy-sgd", "hj", "heat", "adam", "entropy-adam", "parle", "emsa")
RELAXATIONS = ("entropy-sgd", "hj", "heat", "entropy-adam", "parle")
# The relaxations whose inner loop is plain SGD, and so can take inner momentum.
INNER_SGD_RELAXATIONS = ("entropy-sgd", "hj", "heat")
INNER_MOMENTUM_BUFFERS = ("reset", "keep")
"""What happens to the inner momentum between outer steps: zeroed (the Entropy-SGD code,
Lua and PyTorch) or kept, one buffer for the whole run (the Deep Relaxation research code)."""


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
      alpha: running-average weight α on the old average (``heat`` averages its
        inner iterates uniformly and ignores it).
      inner_momentum: Nesterov momentum of the inner SGD steps (``entropy-sgd``,
        ``hj``, ``heat``; 0.9 in the authors' code); 0 (default): plain inner SGD,
        the papers' algorithm.
      inner_momentum_buffer: ``"reset"`` (default): the inner momentum buffer is
        zeroed at every outer step, as in the authors' Entropy-SGD code (Lua
        ``entropyoptim.lua``, PyTorch ``python/optim.py``); ``"keep"``: one buffer
        for the whole run, as in their Deep Relaxation research code (``ESGD`` in
        ``code/optim.py``). Only with ``inner_momentum``.
      replicas: Parle's number of replicas n (``parle`` only).
      elastic_rho: Parle's initial elastic coupling ρ₀ on x − x̄ (original code's convention).
      elastic_rho_max: cap on ρ_t = ρ₀ (1 + scoping)^t (Parle).
      gamma_min: floor on the scope γ_t (Parle; the original code caps 1/γ at 1).
      msa_rho: E-MSA penalty ρ of the augmented Hamiltonian (``emsa`` only; trained by
        ``relaxjax.train.emsa``, not an Optax transformation; 0.03: the authors' MNIST code).
      msa_inner_optimizer: E-MSA per-layer maximiser, ``lbfgs`` (paper), ``adam`` or ``sgd``.
      msa_inner_steps: its iterations per layer and E-MSA iteration (paper: 10).
      msa_inner_lr: its learning rate (``adam``/``sgd`` only).
      msa_init_noise: half-width of uniform noise on each layer's inner starting point.
      msa_penalty: ``sum`` (the paper's formula) or ``mean`` penalty normalisation.

    Raises:
      ValueError: for an unknown name, ``replicas < 1``, ``inner_momentum`` outside
        [0, 1) or given for a method without an inner SGD, or an
        ``inner_momentum_buffer`` other than ``reset`` and ``keep`` (``keep`` without
        ``inner_momentum``).

    References:
      ``docs/cli.md`` §1.1-§1.2, ``docs/conventions.md`` §1-§4 (γ against the coupling,
      the noise, the learning rate, α), ``docs/deep-relaxation.md`` §3.3.

    Example:
      >>> from relaxjax import train
      >>> train.OptimizerConfig("entropy-sgd", num_steps=20).inner_steps
      20
      >>> train.OptimizerConfig("parle", num_steps=20, replicas=3).inner_steps
      60
      >>> train.OptimizerConfig("sgd").inner_steps
      1
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
    inner_momentum: float = 0.0
    inner_momentum_buffer: str = "reset"
    replicas: int = 1
    elastic_rho: float = 0.0
    elastic_rho_max: float = 1.0
    gamma_min: float = 1.0
    msa_rho: float = 0.03
    msa_inner_optimizer: str = "lbfgs"
    msa_inner_steps: int = 10
    msa_inner_lr: float = 0.01
    msa_init_noise: float = 0.0
    msa_penalty: str = "sum"

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.name!r}; valid optimizers: {', '.join(OPTIMIZERS)}"
            )
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if not 0.0 <= self.inner_momentum < 1.0:
            raise ValueError(f"inner_momentum must be in [0, 1), got {self.inner_momentum}")
        if self.inner_momentum and self.name not in INNER_SGD_RELAXATIONS:
            raise ValueError(
                f"inner_momentum applies to the inner SGD of {', '.join(INNER_SGD_RELAXATIONS)}, "
                f"not {self.name!r}"
            )
        if self.inner_momentum_buffer not in INNER_MOMENTUM_BUFFERS:
            raise ValueError(
                f"inner_momentum_buffer must be one of {INNER_MOMENTUM_BUFFERS}, got "
                f"{self.inner_momentum_buffer!r}"
            )
        if self.inner_momentum_buffer == "keep" and not self.inner_momentum:
            raise ValueError("inner_momentum_buffer='keep' needs an inner_momentum > 0")

    @property
    def inner_steps(self) -> int:
        """Gradient evaluations (mini-batches) per outer step."""
        if self.name == "parle":
            return self.num_steps * self.replicas
        return self.num_steps if self.name in RELAXATIONS else 1


def _decay(config: OptimizerConfig, outer_steps_per_epoch: float) -> Callable:
    boundaries = {
        int(round(m * outer_steps_per_epoch)): config.lr_decay for m in config.lr_milestones
    }
    return optax.piecewise_constant_schedule(1.0, boundaries)


def make_optimizer(
    config: OptimizerConfig,
    outer_steps_per_epoch: float,
    *,
    seed: int = 0,
    mesh=None,
    total_steps: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Builds the named optimizer; ``outer_steps_per_epoch`` converts epochs to steps.

    ``mesh`` (``relaxjax.core.mesh.make_mesh``) lays Parle's replicas out on devices.

    Args:
      config: the optimizer's configuration.
      outer_steps_per_epoch: outer steps per effective epoch (for the learning-rate
        milestones, given in effective epochs).
      seed: the Langevin noise's seed.
      mesh: a mesh for Parle's replicas, or None.
      total_steps: the run's number of outer steps, if known. Then the inner SGD's
        stability η′ < 2γ_t is checked here, on the host, for every step of the run
        (the scoping lowers γ_t), and the relaxation skips its update-time check
        (``check_at_update=False``), a host callback that keeps JAX's persistent
        compilation cache from storing the step. None: the relaxation checks at
        every update.

    Returns:
      The Optax transform (``relaxjax.Parle`` for ``parle``); its update takes
      ``grad_fn`` (ignored by ``sgd`` and ``adam``).

    Raises:
      ValueError: for ``emsa``, which is no Optax transform (``relaxjax.train.emsa``);
        with ``total_steps``, for a step size that the γ schedule makes unstable
        (η′ ≥ 2γ_t) before the run's last step.

    References:
      ``docs/cli.md`` §1.3 (what an outer step does), ``docs/conventions.md`` §3 (the
      outer rate on x − μ).

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import train
      >>> config = train.OptimizerConfig("hj", num_steps=2, gamma=1.0, lr=0.5)
      >>> tx = train.make_optimizer(config, outer_steps_per_epoch=10)
      >>> x = jnp.ones(3)
      >>> updates, _ = tx.update(x, tx.init(x), x, grad_fn=lambda y, i: y)  # f = ½‖x‖²
      >>> updates.shape
      (3,)
    """
    if config.name == "emsa":
        raise ValueError("emsa is not an Optax transformation; train it with relaxjax.train.emsa")
    decay = _decay(config, outer_steps_per_epoch)
    if config.name == "parle":
        return _make_parle(config, decay, seed, mesh)
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
        # The training step uses its gradient at x only as the relaxation's input, so
        # inner step 0 evaluates it in the loop instead: XLA drops the step's own backward
        # pass and the compiled step holds one copy of the gradient (compile time flat in L).
        reuse_gradient=False,
        output="displacement",
    )
    inner = None  # the relaxation's default inner SGD
    if config.inner_momentum:
        inner = optax.sgd(config.step_size, momentum=config.inner_momentum, nesterov=True)
        common.update(keep_inner_state=config.inner_momentum_buffer == "keep")
    elif config.name == "entropy-adam":
        inner = optax.adam(config.step_size)
    common.update(inner_optimizer=inner)
    if total_steps is not None:
        if inner is None:  # only the plain inner SGD has the bound η′ < 2γ
            _check_inner_sgd_over_run(config, gamma, total_steps)
        common.update(check_at_update=False)  # checked above: no host callback in the step
    if config.name == "hj":
        relaxation = hopf_lax(**common)
    elif config.name == "heat":
        del common["alpha"]  # the average is uniform
        relaxation = heat_smoothing(**common, noise=config.noise, seed=seed)
    else:
        relaxation = local_entropy(**common, noise=config.noise, seed=seed)

    def outer_rate(t: jax.Array) -> jax.Array:
        return config.lr * decay(t)

    return optax.chain(relaxation, optax.sgd(outer_rate, **nesterov))


def _check_inner_sgd_over_run(config: OptimizerConfig, gamma: Callable, total_steps: int) -> None:
    """Raises a ValueError naming the options if η′ ≥ 2γ_t at some outer step t of the run.

    γ_t = γ₀ (1 + r)^−t only decreases, so its smallest value in the run is at the
    last update, t = ``total_steps`` − 1.
    """
    last = max(int(total_steps) - 1, 0)
    smallest = float(gamma(last))
    if config.step_size >= 2 * smallest:
        raise ValueError(
            f"step_size={config.step_size:g} must be < 2*gamma at every outer step: the "
            f"scoping gamma_t = {config.gamma:g} (1 + {config.scoping:g})^-t lowers gamma to "
            f"{smallest:.4g} by step {last} of this run's {total_steps}, where each inner step "
            f"would multiply y - x by {1 - config.step_size / smallest:.3g} and the inner "
            "loop diverges. Lower --step-size or --scoping, raise --gamma, or train fewer "
            "epochs."
        )


def _make_parle(config: OptimizerConfig, decay: Callable, seed: int, mesh):
    gamma = scoping(config.gamma, config.scoping, final_gamma=min(config.gamma_min, config.gamma))
    rho = coupling_schedule(config.elastic_rho, config.scoping, maximum=config.elastic_rho_max)
    return parle(
        lambda t: config.lr * decay(t),
        gamma=gamma,
        rho=rho,
        num_replicas=config.replicas,
        num_steps=config.num_steps,
        step_size=config.step_size,
        noise=config.noise,
        alpha=config.alpha,
        momentum=config.momentum or None,
        nesterov=bool(config.momentum),
        weight_decay=config.weight_decay,
        seed=seed,
        mesh=mesh,
    )


def outer_gamma(config: OptimizerConfig, step: int | jax.Array) -> float | None:
    """The scope γ at an outer step, for logging; None for methods without one.

    Args:
      config: the optimizer configuration.
      step: the outer step.

    Returns:
      γ_t as a float (JSON-ready), or None for SGD, Adam and E-MSA.

    Example:
      >>> from relaxjax.train.optimizers import OptimizerConfig, outer_gamma
      >>> outer_gamma(OptimizerConfig(name="sgd"), 10) is None
      True
      >>> round(outer_gamma(OptimizerConfig(gamma=1.0, scoping=0.5), 1), 4)
      0.6667
    """
    if config.name not in RELAXATIONS:
        return None
    final = min(config.gamma_min, config.gamma) if config.name == "parle" else None
    return float(scoping(config.gamma, config.scoping, final_gamma=final)(step))
