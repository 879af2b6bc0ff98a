"""The configuration of a training run and the state its checkpoints hold."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax

from relaxjax import data as data_lib
from relaxjax.train.optimizers import OptimizerConfig

CIFAR = tuple(name for name in data_lib.DATASETS if name.startswith("cifar"))
"""The CIFAR data sets of ``relaxjax.data``: augmented and ZCA-whitened by default."""


INPUT_SCALINGS = ("channel", "lua")
"""``TrainConfig.input_scaling``'s values: per-channel standardisation, or the Lua
Entropy-SGD code's (x − 126)/126."""
LUA_PIXEL_OFFSET = 126.0
"""The Lua Entropy-SGD code's MNIST scaling (``utils.lua``): x ← (x − 126)/126."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json`` in the run dir).

    Attributes:
      model: a name of ``relaxjax.models.MODELS``.
      dataset: a name of ``relaxjax.data.DATASETS``.
      optimizer: the outer/inner optimizer configuration.
      epochs: budget in effective epochs (may be fractional).
      batch_size: mini-batch size B of every gradient evaluation.
      seed: seeds initialisation, data order, dropout, augmentation and noise.
      augment: random crops (padding 4) and horizontal flips; default: CIFAR only.
      zca: global contrast normalisation + ZCA whitening; default: CIFAR only.
        Otherwise images are scaled as ``input_scaling`` says.
      input_scaling: without ZCA, how pixels are scaled: ``"channel"`` (default), each
        channel standardised by the training set's mean and standard deviation;
        ``"lua"``, (x − 126)/126, the Lua Entropy-SGD code's MNIST scaling.
      data_dir: where to look for the data first (see ``relaxjax.data``).
      eval_batch_size: batch size of the evaluation pass.
      train_limit: use only N training examples (smoke runs): the first N, or N
        at evenly spaced positions where the first N lack classes that the split
        has (an image folder is stored class by class).
      test_limit: use only N test examples, chosen the same way.
      devices: run data-parallel on a mesh of the first N devices (None: the
        default device, unsharded). ``batch_size`` must be divisible by the
        mesh's ``'data'`` axis.
      refresh_batches: before every evaluation, re-estimate the BatchNorm
        running statistics at the current weights from this many training
        mini-batches (``batch_size`` each) with dropout off, as the original
        code does before each validation (its "dry feed", see
        :func:`make_statistics_refresh`); 0 turns it off. Models without
        model state are unaffected.

    Raises:
      ValueError: for ``epochs <= 0``, ``batch_size < 1``, ``refresh_batches < 0``,
        ``optimizer.num_steps < 1`` or a non-finite number.

    References:
      ``docs/cli.md`` §1.2 (the options of ``relaxjax train`` and their defaults),
      ``docs/conventions.md`` §6 (effective epochs).

    Example:
      >>> from relaxjax import train
      >>> config = train.TrainConfig(model="lenet", dataset="cifar10", epochs=2)
      >>> config.use_augmentation, config.use_zca, config.optimizer.name
      (True, True, 'entropy-sgd')
      >>> train.TrainConfig.from_json(config.to_json()) == config
      True
    """

    model: str = "mnistfc"
    dataset: str = "mnist"
    optimizer: OptimizerConfig = OptimizerConfig()
    epochs: float = 5.0
    batch_size: int = 128
    seed: int = 0
    augment: bool | None = None
    zca: bool | None = None
    input_scaling: str = "channel"
    data_dir: str | None = None
    eval_batch_size: int = 1000
    train_limit: int | None = None
    test_limit: int | None = None
    devices: int | None = None
    refresh_batches: int = 50

    def __post_init__(self):
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"epochs must be a finite number > 0, got {self.epochs}")
        for field in dataclasses.fields(self.optimizer):
            value = getattr(self.optimizer, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"optimizer.{field.name} must be finite, got {value}")
        if any(not math.isfinite(m) for m in self.optimizer.lr_milestones):
            raise ValueError(f"lr_milestones must be finite, got {self.optimizer.lr_milestones}")
        if self.optimizer.num_steps < 1:
            raise ValueError(f"num_steps (L) must be >= 1, got {self.optimizer.num_steps}")
        if self.refresh_batches < 0:
            raise ValueError(f"refresh_batches must be >= 0, got {self.refresh_batches}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.input_scaling not in INPUT_SCALINGS:
            raise ValueError(
                f"input_scaling must be one of {INPUT_SCALINGS}, got {self.input_scaling!r}"
            )
        if self.input_scaling != "channel" and self.use_zca:
            raise ValueError(
                f"input_scaling={self.input_scaling!r} replaces the per-channel scaling, not "
                "ZCA whitening: turn ZCA off (zca=False, --no-zca) to use it"
            )

    @property
    def use_augmentation(self) -> bool:
        """``augment``, or by default whether the data set is a CIFAR one."""
        return self.dataset in CIFAR if self.augment is None else self.augment

    @property
    def use_zca(self) -> bool:
        """``zca``, or by default whether the data set is a CIFAR one."""
        return self.dataset in CIFAR if self.zca is None else self.zca

    def to_json(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict (``config.json`` of the run directory).

        Returns:
          ``dataclasses.asdict`` of the configuration, the optimizer's as a nested dict.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> TrainConfig:
        """The configuration of a ``config.json`` (the inverse of :meth:`to_json`).

        Args:
          values: the JSON dict; runs saved before ``refresh_batches`` existed get 0.

        Returns:
          The :class:`TrainConfig`.
        """
        values = dict(values)
        # Runs saved before the refresh existed were evaluated without one.
        values.setdefault("refresh_batches", 0)
        optimizer = dict(values.pop("optimizer"))
        optimizer["lr_milestones"] = tuple(optimizer.get("lr_milestones", ()))
        return cls(optimizer=OptimizerConfig(**optimizer), **values)


class DataArrays(NamedTuple):
    """Preprocessed float32 NHWC images and int32 labels, on the default device.

    Returned by :func:`load_data`; pass your own to :func:`train` (``data=``).

    Attributes:
      train_images: the training images, float32 ``(N, H, W, C)``.
      train_labels: their labels, int32 ``(N,)``.
      test_images: the test images, float32 ``(M, H, W, C)``.
      test_labels: their labels, int32 ``(M,)``.
      num_classes: the number of classes.
    """

    train_images: jax.Array
    train_labels: jax.Array
    test_images: jax.Array
    test_labels: jax.Array
    num_classes: int


class TrainState(NamedTuple):
    """What a checkpoint holds: with the config, it determines the rest of the run.

    Attributes:
      step: the number of outer steps taken.
      params: the model's parameters.
      model_state: the model's state, e.g. BatchNorm running statistics.
      opt_state: the optimizer's state.
      key: the raw PRNG key of dropout and augmentation.
      epoch_sums: [train loss, train error] summed over this epoch's steps.
    """

    step: jax.Array  # outer steps taken
    params: Any
    model_state: Any  # e.g. BatchNorm running statistics
    opt_state: Any
    key: jax.Array  # raw PRNG key for dropout and augmentation
    epoch_sums: jax.Array  # [train loss, train error] summed over this epoch's steps
