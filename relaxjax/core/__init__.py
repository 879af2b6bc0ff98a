"""The core of relaxjax: the relaxation transforms, their aliases, schedules and Parle.

Everything here needs only jax, optax and numpy. The names are re-exported at the
top level (``relaxjax.local_entropy`` is ``relaxjax.core.local_entropy``).
"""

from relaxjax.core.alias import entropy_adam, entropy_sgd, heat_sgd, hj_sgd
from relaxjax.core.finite import apply_if_finite
from relaxjax.core.keys import Seed, key_from_seed
from relaxjax.core.laplacian_smoothing import laplacian_smooth, laplacian_smoothing, ls_sgd
from relaxjax.core.parle import (
    ElasticState,
    Parle,
    ParleState,
    coupling_schedule,
    elastic_coupling,
    parle,
    parle_step,
    replica_key,
    replica_map,
)
from relaxjax.core.relaxation import (
    GradFn,
    RelaxationState,
    RelaxationStateWithInner,
    heat_smoothing,
    hopf_lax,
    local_entropy,
)
from relaxjax.core.schedules import scoping

__all__ = [
    "ElasticState",
    "GradFn",
    "Parle",
    "ParleState",
    "RelaxationState",
    "RelaxationStateWithInner",
    "Seed",
    "apply_if_finite",
    "coupling_schedule",
    "elastic_coupling",
    "entropy_adam",
    "entropy_sgd",
    "heat_sgd",
    "heat_smoothing",
    "hj_sgd",
    "hopf_lax",
    "key_from_seed",
    "laplacian_smooth",
    "laplacian_smoothing",
    "local_entropy",
    "ls_sgd",
    "parle",
    "parle_step",
    "replica_key",
    "replica_map",
    "scoping",
]
