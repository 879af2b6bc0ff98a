"""The training application: ``relaxjax train``, its loop, steps, presets and run directories.

Needs the ``[train]`` extra. One outer step of a method with L inner steps consumes
L fresh mini-batches, so an *effective epoch* is ``N // (B·L)`` outer steps for every
method. Modules: :mod:`~relaxjax.train.config` (what defines a run),
:mod:`~relaxjax.train.presets` (the papers' settings per data set),
:mod:`~relaxjax.train.optimizers` (optimizers by name), :mod:`~relaxjax.train.steps`
(the jitted steps), :mod:`~relaxjax.train.parle_steps`, :mod:`~relaxjax.train.emsa`,
:mod:`~relaxjax.train.loop`, :mod:`~relaxjax.train.checkpoints`,
:mod:`~relaxjax.train.compilation_cache` (warm starts),
:mod:`~relaxjax.train.runs` and :mod:`~relaxjax.train.cli`. See ``docs/cli.md``.
"""

from relaxjax.train.compilation_cache import (
    compilation_cache_dir,
    disable_compilation_cache,
    enable_compilation_cache,
)
from relaxjax.train.config import DataArrays, TrainConfig, TrainState
from relaxjax.train.inputs import crop_flip, epoch_permutation, load_data
from relaxjax.train.loop import (
    TrainingDiverged,
    TrainingInterrupted,
    init_state,
    load_run_state,
    run_epochs,
    train,
)
from relaxjax.train.optimizers import OptimizerConfig, make_optimizer
from relaxjax.train.runs import iterate_runs, read_metrics
from relaxjax.train.steps import make_eval_fn, make_statistics_refresh, make_train_step

__all__ = [
    "compilation_cache_dir",
    "crop_flip",
    "DataArrays",
    "disable_compilation_cache",
    "enable_compilation_cache",
    "epoch_permutation",
    "init_state",
    "iterate_runs",
    "load_data",
    "load_run_state",
    "make_eval_fn",
    "make_optimizer",
    "make_statistics_refresh",
    "make_train_step",
    "OptimizerConfig",
    "read_metrics",
    "run_epochs",
    "train",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainState",
]
