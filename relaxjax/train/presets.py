"""The papers' training settings as data: one preset per data set.

``relaxjax train``, the notebooks and the benchmarks start from these presets, so
that a setting of the original code is written in one place (the values are those
of ``docs/deep-relaxation.md`` §2.3 and §3.3):

* the scope γ₀ = 1/coupling of the original code: 1/1e-4 = 1e4 on MNIST and 1/0.03
  on CIFAR, shrunk by ``scoping`` = 1e-3 per outer step; Parle's inner coupling 0.01
  (scope 100), floored at γ = 1;
* L = 20 inner steps of size η′ = 0.1 (Entropy-Adam: 1e-3), Langevin noise
  ε = 1e-4 (none for HJ and Parle), running-average weight α = 0.75;
* HEAT (``heat``), the defaults of the Deep Relaxation research code's ``HEAT``
  class: coupling 10 (scope γ = 0.1) without scoping, L = 100 inner steps of
  η′ = 0.1, ε = 1e-4, the uniform average of the inner iterates, on every data
  set; its inner steps are plain SGD and its outer step that of the other
  relaxations (the research code's ``main.py`` adds Nesterov momentum 0.9 to both
  loops with an outer rate 0.1, and sets L and the coupling from its command line:
  ``docs/deep-relaxation.md`` §4.2);
* the outer step: Nesterov momentum 0.9, learning rate 1 on x − μ for the
  relaxations (``docs/conventions.md`` §3), 0.1 for SGD, 1e-3 for Adam, multiplied
  by 0.2 at 50% and 75% of the budget; weight decay 1e-3 on CIFAR, 0 on MNIST;
* networks: ``mnistfc`` on MNIST, ``allcnn`` on CIFAR; batch 128; BatchNorm
  statistics re-estimated from 50 batches before each evaluation.

Example:
  >>> from relaxjax.train import presets
  >>> config = presets.mnist("hj", epochs=2, model="lenet")
  >>> config.model, config.optimizer.name, config.optimizer.noise, config.optimizer.gamma
  ('lenet', 'hj', 0.0, 10000.0)
  >>> presets.cifar10().optimizer.weight_decay
  0.001
"""

from __future__ import annotations

import dataclasses
from typing import Any

from relaxjax.train.config import CIFAR, TrainConfig
from relaxjax.train.optimizers import OptimizerConfig

__all__ = [
    "DEFAULT_MODELS",
    "cifar10",
    "cifar100",
    "mnist",
    "optimizer_preset",
    "preset",
]

MNIST_GAMMA = 1e4
"""Scope γ₀ on MNIST: the original code's coupling 1e-4."""
CIFAR_GAMMA = 1 / 0.03
"""Scope γ₀ on CIFAR: the original code's coupling 0.03."""
PARLE_GAMMA = 100.0
"""Parle's scope (its code, ``parle_mpi.py``: inner coupling 0.01, no Langevin noise; its
lr 0.1 and rho 0.01·L·n capped at 10 are taken at the command's lr = 1, same lr·rho)."""
OUTER_LR = {"sgd": 0.1, "adam": 1e-3}
"""Outer learning rates; the relaxations' is 1.0 on x − μ."""
INNER_STEP_SIZE = {"entropy-adam": 1e-3}
"""Inner step sizes η′ other than 0.1."""
NOISELESS = ("hj", "parle")
"""Methods without Langevin noise by default."""
HEAT = {"gamma": 0.1, "scoping": 0.0, "num_steps": 100}
"""HEAT's settings (the defaults of the research code's ``HEAT`` class: g0 = 10, g1 = 0,
L = 100)."""
PARLE_REPLICAS = 3
"""Parle's number of replicas n unless ``replicas=`` says otherwise."""
DEFAULT_MODELS = {"mnist": "mnistfc", "cifar10": "allcnn", "cifar100": "allcnn"}
"""The network each data set trains by default (``cifar10-jpeg`` is ``cifar10``'s)."""

_OPTIMIZER_FIELDS = {f.name for f in dataclasses.fields(OptimizerConfig)}
_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"optimizer"}


def optimizer_preset(
    name: str = "entropy-sgd",
    *,
    dataset: str = "mnist",
    epochs: float = 5.0,
    **overrides: Any,
) -> OptimizerConfig:
    """The original code's hyper-parameters of optimizer ``name`` on ``dataset``.

    Args:
      name: an optimizer of :data:`relaxjax.train.optimizers.OPTIMIZERS`.
      dataset: ``mnist``, ``cifar10``, ``cifar10-jpeg`` or ``cifar100``.
      epochs: the budget in effective epochs (the rate decays at 50% and 75% of it).
      **overrides: :class:`~relaxjax.train.optimizers.OptimizerConfig` fields to change.

    Returns:
      The optimizer configuration.

    Raises:
      TypeError: for an override that is not an ``OptimizerConfig`` field.

    Example:
      >>> from relaxjax.train.presets import optimizer_preset
      >>> optimizer_preset("parle", replicas=2).elastic_rho  # 0.001 * L * replicas
      0.04
    """
    unknown = set(overrides) - _OPTIMIZER_FIELDS
    if unknown:
        raise TypeError(f"not OptimizerConfig fields: {', '.join(sorted(unknown))}")
    cifar = dataset in CIFAR
    own = HEAT if name == "heat" else {}
    num_steps = overrides.get("num_steps", own.get("num_steps", OptimizerConfig.num_steps))
    replicas = overrides.get("replicas", PARLE_REPLICAS) if name == "parle" else 1
    if name == "parle":
        gamma = PARLE_GAMMA
    else:
        gamma = CIFAR_GAMMA if cifar else MNIST_GAMMA
    values: dict[str, Any] = {
        "name": name,
        "lr": OUTER_LR.get(name, 1.0),
        "lr_milestones": (0.5 * epochs, 0.75 * epochs),
        "weight_decay": 1e-3 if cifar else 0.0,
        "gamma": gamma,
        "step_size": INNER_STEP_SIZE.get(name, 0.1),
        "noise": 0.0 if name in NOISELESS else 1e-4,
        "elastic_rho": 0.001 * num_steps * replicas if name == "parle" else 0.0,
        **own,
    }
    values.update(overrides)
    values["replicas"] = replicas
    return OptimizerConfig(**values)


def preset(
    dataset: str,
    optimizer: str = "entropy-sgd",
    *,
    model: str | None = None,
    epochs: float = 5.0,
    **overrides: Any,
) -> TrainConfig:
    """The run configuration of the papers' setting for ``dataset`` and ``optimizer``.

    Args:
      dataset: ``mnist``, ``cifar10``, ``cifar10-jpeg`` or ``cifar100``.
      optimizer: an optimizer name (``sgd``, ``entropy-sgd``, ``hj``, ``heat``,
        ``adam``, ``entropy-adam``, ``parle``, ``emsa``).
      model: the network (default: :data:`DEFAULT_MODELS` of the data set).
      epochs: the budget in effective epochs.
      **overrides: fields of :class:`~relaxjax.train.config.TrainConfig` (e.g.
        ``seed``, ``batch_size``, ``data_dir``) or of
        :class:`~relaxjax.train.optimizers.OptimizerConfig` (e.g. ``lr``, ``gamma``).

    Returns:
      The configuration ``relaxjax train`` would use with these options.

    Raises:
      TypeError: for an override that is a field of neither configuration.

    Example:
      >>> from relaxjax.train.presets import preset
      >>> preset("cifar10-jpeg", "sgd", seed=1).optimizer.lr
      0.1
    """
    unknown = set(overrides) - _OPTIMIZER_FIELDS - _TRAIN_FIELDS
    if unknown:
        raise TypeError(f"neither TrainConfig nor OptimizerConfig fields: {sorted(unknown)}")
    run = {k: v for k, v in overrides.items() if k in _TRAIN_FIELDS}
    opt = {k: v for k, v in overrides.items() if k in _OPTIMIZER_FIELDS and k not in run}
    base = dataset.removesuffix("-jpeg")
    return TrainConfig(
        model=model or DEFAULT_MODELS.get(base, "mnistfc"),
        dataset=dataset,
        optimizer=optimizer_preset(optimizer, dataset=dataset, epochs=epochs, **opt),
        epochs=epochs,
        **run,
    )


def mnist(optimizer: str = "entropy-sgd", **options: Any) -> TrainConfig:
    """:func:`preset` for MNIST (``mnistfc`` unless ``model=`` says otherwise).

    Args:
      optimizer: the optimizer name.
      **options: as for :func:`preset`.

    Returns:
      The configuration.

    Example:
      >>> from relaxjax.train.presets import mnist
      >>> mnist().optimizer.num_steps, mnist().model
      (20, 'mnistfc')
    """
    return preset("mnist", optimizer, **options)


def cifar10(optimizer: str = "entropy-sgd", *, jpeg: bool = False, **options: Any) -> TrainConfig:
    """:func:`preset` for CIFAR-10 (All-CNN-C with BatchNorm).

    Args:
      optimizer: the optimizer name.
      jpeg: the image-folder copy (``cifar10-jpeg``) instead of the official archive.
      **options: as for :func:`preset`.

    Returns:
      The configuration.

    Example:
      >>> from relaxjax.train.presets import cifar10
      >>> cifar10(jpeg=True).dataset, round(cifar10().optimizer.gamma, 2)
      ('cifar10-jpeg', 33.33)
    """
    return preset("cifar10-jpeg" if jpeg else "cifar10", optimizer, **options)


def cifar100(optimizer: str = "entropy-sgd", **options: Any) -> TrainConfig:
    """:func:`preset` for CIFAR-100.

    Args:
      optimizer: the optimizer name.
      **options: as for :func:`preset`.

    Returns:
      The configuration.

    Example:
      >>> from relaxjax.train.presets import cifar100
      >>> cifar100().dataset
      'cifar100'
    """
    return preset("cifar100", optimizer, **options)
