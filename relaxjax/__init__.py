"""relaxjax: PDE-based relaxation optimizers for JAX and Optax.

Entropy-SGD (local entropy, viscous Hamilton-Jacobi) and the Hopf-Lax
relaxation of Chaudhari, Oberman, Osher, Soatto, Carlier, *Deep Relaxation:
partial differential equations for optimizing deep neural networks* (2018),
as composable Optax gradient transformations.
"""

from relaxjax import diagnostics, mesh, msa, pde
from relaxjax.alias import entropy_adam, entropy_sgd, hj_sgd
from relaxjax.parle import ParleState, coupling_schedule, parle, parle_step
from relaxjax.relaxation import (
    GradFn,
    RelaxationState,
    RelaxationStateWithInner,
    hopf_lax,
    local_entropy,
)
from relaxjax.schedules import scoping

__version__ = "0.1.0.dev0"

__all__ = [
    "GradFn",
    "ParleState",
    "RelaxationState",
    "RelaxationStateWithInner",
    "coupling_schedule",
    "diagnostics",
    "entropy_adam",
    "entropy_sgd",
    "hj_sgd",
    "hopf_lax",
    "local_entropy",
    "mesh",
    "msa",
    "parle",
    "parle_step",
    "pde",
    "scoping",
]
