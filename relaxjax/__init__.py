"""relaxjax: PDE-based relaxation optimizers for JAX and Optax.

Entropy-SGD (local entropy, viscous Hamilton-Jacobi), the Hopf-Lax and the
heat-equation (HEAT) relaxations of Chaudhari, Oberman, Osher, Soatto, Carlier,
*Deep Relaxation: partial differential equations for optimizing deep neural
networks* (2018),
as composable Optax gradient transformations, with Parle and the E-MSA trainer
of Li, Chen, Tai, E, *Maximum Principle Based Algorithms for Deep Learning*
(2018).

``import relaxjax`` loads only the core (jax, optax, numpy). The other
subpackages load on first use: ``relaxjax.models`` (Flax), ``relaxjax.adapters``
(Flax's linen and NNX training steps), ``relaxjax.data``,
``relaxjax.train`` (the training command), ``relaxjax.pde``,
``relaxjax.diagnostics``, ``relaxjax.msa``, ``relaxjax.plots`` (matplotlib) and
``relaxjax.cpu``. See ``docs/architecture.md``.
"""

import importlib
from typing import Any

from relaxjax.core import (
    ElasticState,
    GradFn,
    Parle,
    ParleState,
    RelaxationState,
    RelaxationStateWithInner,
    apply_if_finite,
    coupling_schedule,
    elastic_coupling,
    entropy_adam,
    entropy_sgd,
    heat_sgd,
    heat_smoothing,
    hj_sgd,
    hopf_lax,
    laplacian_smooth,
    laplacian_smoothing,
    local_entropy,
    ls_sgd,
    parle,
    parle_step,
    scoping,
)

__version__ = "0.1.0.dev0"

_SUBPACKAGES = (
    "adapters",
    "core",
    "cpu",
    "data",
    "diagnostics",
    "models",
    "msa",
    "pde",
    "plots",
    "train",
)

__all__ = [
    "ElasticState",
    "GradFn",
    "Parle",
    "ParleState",
    "RelaxationState",
    "RelaxationStateWithInner",
    "apply_if_finite",
    "coupling_schedule",
    "elastic_coupling",
    "entropy_adam",
    "entropy_sgd",
    "heat_sgd",
    "heat_smoothing",
    "hj_sgd",
    "hopf_lax",
    "laplacian_smooth",
    "laplacian_smoothing",
    "local_entropy",
    "ls_sgd",
    "parle",
    "parle_step",
    "scoping",
]


def __getattr__(name: str) -> Any:
    """Loads a subpackage on first access (``relaxjax.pde``, ``relaxjax.models``, …)."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"relaxjax.{name}")
    raise AttributeError(f"module 'relaxjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBPACKAGES])
