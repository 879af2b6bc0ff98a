"""The optimizers of *Deep Relaxation* as single Optax transforms.

Each alias chains a relaxation (``relaxjax.local_entropy`` or
``relaxjax.hopf_lax``) with the outer optimizer the paper uses: SGD with
Nesterov momentum 0.9 (Chaudhari et al., *Deep Relaxation*, 2018, §6;
*Entropy-SGD*, ICLR 2017, Alg. 1).
"""

from __future__ import annotations

import optax

from relaxjax.core.hyperparams import ScalarOrSchedule
from relaxjax.core.keys import Seed
from relaxjax.core.relaxation import hopf_lax, local_entropy

__all__ = ["entropy_adam", "entropy_sgd", "hj_sgd"]


def outer_sgd(
    learning_rate: ScalarOrSchedule, momentum: float | None, nesterov: bool
) -> optax.GradientTransformation:
    return optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov and bool(momentum))


def entropy_sgd(
    learning_rate: ScalarOrSchedule,
    gamma: ScalarOrSchedule,
    *,
    num_steps: int = 20,
    step_size: ScalarOrSchedule = 0.1,
    noise: ScalarOrSchedule = 1e-4,
    alpha: ScalarOrSchedule = 0.75,
    momentum: float | None = 0.9,
    nesterov: bool = True,
    weight_decay: ScalarOrSchedule = 0.0,
    seed: Seed = 0,
    unroll: int | bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Entropy-SGD: local-entropy gradient followed by Nesterov SGD.

    x ← x − η · NesterovMomentum((x − ⟨y⟩)/γ), with ⟨y⟩ from L SGLD steps (see
    ``relaxjax.local_entropy``). ``weight_decay`` λ is applied inside the inner
    loop, so the outer step descends the local entropy of f + (λ/2)|x|².
    """
    return optax.chain(
        local_entropy(
            gamma,
            num_steps=num_steps,
            step_size=step_size,
            noise=noise,
            alpha=alpha,
            weight_decay=weight_decay,
            inner_optimizer=None,
            seed=seed,
            unroll=unroll,
        ),
        outer_sgd(learning_rate, momentum, nesterov),
    )


def hj_sgd(
    learning_rate: ScalarOrSchedule,
    gamma: ScalarOrSchedule,
    *,
    num_steps: int = 20,
    step_size: ScalarOrSchedule = 0.1,
    alpha: ScalarOrSchedule = 0.75,
    momentum: float | None = 0.9,
    nesterov: bool = True,
    weight_decay: ScalarOrSchedule = 0.0,
    unroll: int | bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    """HJ: Hopf-Lax (non-viscous) relaxed gradient followed by Nesterov SGD.

    x ← x − η · NesterovMomentum((x − y*)/γ), y* the proximal point estimated by
    L noise-free inner steps (see ``relaxjax.hopf_lax``).
    """
    return optax.chain(
        hopf_lax(
            gamma,
            num_steps=num_steps,
            step_size=step_size,
            alpha=alpha,
            weight_decay=weight_decay,
            inner_optimizer=None,
            unroll=unroll,
        ),
        outer_sgd(learning_rate, momentum, nesterov),
    )


def entropy_adam(
    learning_rate: ScalarOrSchedule,
    gamma: ScalarOrSchedule,
    *,
    num_steps: int = 20,
    step_size: ScalarOrSchedule = 1e-3,
    noise: ScalarOrSchedule = 1e-4,
    alpha: ScalarOrSchedule = 0.75,
    momentum: float | None = 0.9,
    nesterov: bool = True,
    weight_decay: ScalarOrSchedule = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    seed: Seed = 0,
    unroll: int | bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Entropy-Adam: Adam (step ``step_size``) plus Langevin noise in the inner loop.

    As in the Entropy-SGD paper (ICLR 2017, §5), Adam replaces the inner SGLD
    step; the outer step is Nesterov SGD on (x − μ)/γ. The noise scale is
    ε √(2 η′) with η′ = ``step_size``.
    """
    return optax.chain(
        local_entropy(
            gamma,
            num_steps=num_steps,
            step_size=step_size,
            noise=noise,
            alpha=alpha,
            weight_decay=weight_decay,
            inner_optimizer=optax.adam(step_size, b1=b1, b2=b2),
            seed=seed,
            unroll=unroll,
        ),
        outer_sgd(learning_rate, momentum, nesterov),
    )
