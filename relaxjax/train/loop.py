"""Training loop of ``relaxjax train``: data on device, effective epochs, exact resume.

One outer step of a method with L inner steps consumes L fresh mini-batches
(the paper's setting: inner step ℓ sees mini-batch ℓ), so an *effective
epoch* — one pass of gradient evaluations over the training set — is
``N // (B·L)`` outer steps for every method (Chaudhari et al., *Entropy-SGD*,
ICLR 2017, §5: methods compared at equal effective epochs).

The training set lives on the accelerator; each outer step gathers its L
mini-batches from a per-epoch permutation inside the jitted step (and
augments them there), so the host never feeds batches. The permutation of
epoch e is a function of (seed, e) and every random key of step t a function
of the state, so a run resumed from a checkpoint continues exactly as the
uninterrupted run. Checkpoints are verified by SHA-256 when restored, with a
fallback to the newest intact one (``relaxjax.train.checkpoints``); SIGINT and
SIGTERM are deferred to the next safe point of the loop, so an interruption at any
moment loses no finished step and corrupts nothing.

With ``devices=N`` (``relaxjax train --devices N``) the step runs on a mesh of
the first N devices (``relaxjax.core.mesh``): the data set is replicated on every
device, every gathered mini-batch (the inner ones too) is split along its
batch axis over the mesh axis ``'data'``, and parameters and optimizer state
are replicated; XLA all-reduces the gradients. Without it nothing is sharded
and the step is exactly the single-device one. ``--optimizer parle`` (see
``relaxjax.train.parle_steps``) puts its replicas on the mesh axis ``'replica'``.

With several processes (``jax.distributed``, ``relaxjax.train.distributed``) the
mesh spans all their devices and the same code runs in every process: every
jitted computation is a global one, the state a global array; process 0 alone
writes ``config.json``, ``metrics.jsonl`` and the checkpoints' files and prints,
and every process restores the checkpoint it continues from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from relaxjax import models as models_lib
from relaxjax.core.mesh import DATA_AXIS, local_copy, make_mesh, place
from relaxjax.train import distributed, parle_steps
from relaxjax.train.checkpoints import Checkpoints, all_finite
from relaxjax.train.config import DataArrays, TrainConfig, TrainState
from relaxjax.train.inputs import epoch_permutation, load_data
from relaxjax.train.optimizers import make_optimizer, outer_gamma
from relaxjax.train.runs import (
    RunDirError,
    append_metrics,
    check_run_dir,
    fault_point,
    read_config,
    read_metrics,
    reconcile_metrics,
    run_lock,
    write_json_atomic,
)
from relaxjax.train.steps import make_eval_fn, make_statistics_refresh, make_train_step

# --------------------------------------------------------------------------- the loop


def init_state(
    config: TrainConfig, model: models_lib.FunctionalModel, tx, sample: jax.Array
) -> TrainState:
    """The state of a run at step 0: the model initialised from ``config.seed``.

    Args:
      config: the run's configuration (its ``seed``).
      model: the model (:class:`relaxjax.models.FunctionalModel`).
      tx: the optimizer, initialised on the model's parameters.
      sample: a batch of inputs of the data set's shape (one example suffices).

    Returns:
      The :class:`TrainState` (step 0, zero epoch sums).

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import train
      >>> from relaxjax.models import get_model
      >>> model = get_model("mnistfc", num_classes=2, hidden=8)  # 16-8-8-2
      >>> tx = train.make_optimizer(train.OptimizerConfig("sgd", lr=0.1), 10)
      >>> state = train.init_state(train.TrainConfig(), model, tx, jnp.zeros((1, 4, 4, 1)))
      >>> int(state.step), state.params["Dense_0"]["kernel"].shape, sorted(state.model_state)
      (0, (16, 8), ['batch_stats'])
    """
    init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params, model_state = jax.jit(model.init)(init_key, sample)  # one compile, not op by op
    return TrainState(
        jnp.zeros([], jnp.int32),
        params,
        model_state,
        tx.init(params),
        train_key,
        jnp.zeros([2], jnp.float32),
    )


def load_run_state(
    run_dir: str | os.PathLike, model: models_lib.FunctionalModel, data: DataArrays
) -> tuple[TrainState, dict[str, Any] | None]:
    """The state a ``train`` run left in its newest checkpoint, and that checkpoint's record.

    The run directory's ``config.json`` gives the optimizer whose state the checkpoint
    holds; ``model`` and ``data`` must be the run's (``data`` sets the steps per epoch).
    Nothing is moved or repaired: a damaged newest checkpoint raises, as ``train
    --resume`` would report it.

    Args:
      run_dir: a run directory written by :func:`train` (``relaxjax train --run-dir``).
      model: the run's model (:class:`relaxjax.models.FunctionalModel`).
      data: the run's data (:class:`DataArrays`).

    Returns:
      ``(state, record)``: the :class:`TrainState` and the metrics record saved with it
      (None for a mid-epoch checkpoint).

    Raises:
      ValueError: if the directory holds no checkpoint.
      relaxjax.train.checkpoints.CheckpointError: if the newest one is damaged.

    Example:
      >>> import tempfile
      >>> import jax, jax.numpy as jnp
      >>> from pathlib import Path
      >>> from relaxjax import train
      >>> from relaxjax.models import get_model
      >>> images = jax.random.normal(jax.random.key(0), (64, 4, 4, 1))
      >>> labels = (images.mean(axis=(1, 2, 3)) > 0).astype(jnp.int32)
      >>> data = train.DataArrays(images, labels, images[:16], labels[:16], num_classes=2)
      >>> model = get_model("mnistfc", num_classes=2, hidden=8)
      >>> sgd = train.OptimizerConfig("sgd", lr=0.1)
      >>> config = train.TrainConfig(optimizer=sgd, epochs=1.0, batch_size=16)
      >>> with tempfile.TemporaryDirectory() as run_dir:
      ...     _ = train.train(config, Path(run_dir), model=model, data=data, progress=False)
      ...     state, record = train.load_run_state(run_dir, model, data)
      epoch 1.00  train loss ...
      >>> int(state.step), record["effective_epochs"]
      (4, 1.0)
    """
    run_dir = Path(run_dir)
    checkpoints = Checkpoints(run_dir)
    if not checkpoints.steps():
        raise ValueError(f"{run_dir}: no checkpoint (not a run directory of relaxjax train?)")
    config = read_config(run_dir)
    inner_steps = config.optimizer.inner_steps
    steps_per_epoch = len(data.train_labels) // (config.batch_size * inner_steps)
    tx = make_optimizer(config.optimizer, steps_per_epoch, seed=config.seed)
    template = init_state(config, model, tx, data.train_images[:1])
    return checkpoints.load(checkpoints.steps()[-1], template)


def run_mesh(config: TrainConfig, log: Callable[[str], None]) -> Mesh | None:
    """The mesh of ``config.devices`` (None without it); checks the batch divides evenly.

    With several processes the mesh must hold every process's devices.
    """
    if config.devices is None:
        return None
    if distributed.multi_process() and config.devices != jax.device_count():
        raise ValueError(
            f"with {jax.process_count()} processes the mesh spans all their "
            f"{jax.device_count()} devices: leave --devices out or give "
            f"--devices {jax.device_count()} (got {config.devices})"
        )
    replicas = config.optimizer.replicas if config.optimizer.name == "parle" else 1
    mesh = make_mesh(config.devices, num_replicas=replicas)
    if config.batch_size % mesh.shape[DATA_AXIS]:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the {mesh.shape[DATA_AXIS]} "
            f"devices of the mesh's data axis (mesh {dict(mesh.shape)})"
        )
    log(f"devices: mesh {dict(mesh.shape)} on {mesh.devices.size} {jax.default_backend()} devices")
    return mesh


def all_devices(config: TrainConfig) -> TrainConfig:
    """``config`` on every device of every process (``devices`` unset means all of them
    when several processes take part, so that the saved configuration says so)."""
    if config.devices is None:
        return dataclasses.replace(config, devices=jax.device_count())
    return config


def place_data(data: DataArrays, mesh: Mesh | None) -> DataArrays:
    """The data set replicated on every device of the mesh (each gathers its own slices)."""
    if mesh is None:
        return data
    arrays = place(data[:4], mesh)
    return DataArrays(*arrays, num_classes=data.num_classes)


def initial_state_and_step(
    config: TrainConfig,
    model: models_lib.FunctionalModel,
    tx: Any,
    sample: jax.Array,
    mesh: Mesh | None,
) -> tuple[TrainState, Callable, Callable[[Any], Any]]:
    """The initial state laid out on the mesh, the jitted step, and eval's model state."""
    state = init_state(config, model, tx, sample)
    augment = config.use_augmentation
    if config.optimizer.name == "parle":
        state = parle_steps.parle_state(state, config.optimizer.replicas)
        step = parle_steps.make_parle_train_step(
            model, tx, config.optimizer.num_steps, config.batch_size, augment=augment, mesh=mesh
        )
        return parle_steps.place_parle_state(state, mesh), step, parle_steps.average_model_state
    step = make_train_step(
        model, tx, config.optimizer.inner_steps, config.batch_size, augment=augment, mesh=mesh
    )
    return place(state, mesh), step, lambda model_state: model_state


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    model: models_lib.FunctionalModel | None = None,
    data: DataArrays | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Trains ``config`` into ``run_dir`` and returns the per-epoch metrics.

    Writes ``config.json``, ``metrics.jsonl`` (one JSON record per effective
    epoch) and checkpoints (``checkpoints/``, see :mod:`relaxjax.train.checkpoints`:
    written atomically and verified by SHA-256) at every epoch end and when a
    signal (Ctrl-C, SIGTERM) stops the run. With ``resume=True`` it continues from the
    newest intact checkpoint exactly as an uninterrupted run would. Nothing is written
    before the data are loaded and the model is built.

    Args:
      config: the run's configuration.
      run_dir: the run directory.
      resume: continue from the newest intact checkpoint in ``run_dir``.
      model: a ``relaxjax.models.FunctionalModel`` to train instead of
        ``config.model`` (e.g. ``relaxjax.models.functional(my_flax_module)``).
      data: preloaded data (default: ``load_data(config)``).
      progress: show a progress bar.
      stop_after_steps: stop (with a checkpoint) after this many outer steps in
        total, as if interrupted, and return; for tests and time-boxed jobs.
      log: where to print messages.

    Returns:
      All metrics records of the run (``metrics.jsonl``), one per effective epoch.

    Raises:
      ValueError: if the training set is smaller than one outer step's
        ``batch_size × L`` examples.
      relaxjax.train.runs.RunDirError: (a ``ValueError``) if ``run_dir`` holds a run and
        ``resume`` is False; if ``resume`` finds a different saved configuration, no
        intact checkpoint (:class:`~relaxjax.train.checkpoints.CheckpointError`) or a
        damaged ``metrics.jsonl``; if another process trains into ``run_dir``.
      TrainingDiverged: when the loss or the state becomes non-finite; the last good
        checkpoint is kept.
      TrainingInterrupted: (a ``KeyboardInterrupt``) after a signal stopped the run
        and its state was checkpointed.

    References:
      Chaudhari et al., *Entropy-SGD* (ICLR 2017), §5: methods compared at equal
      effective epochs. ``docs/cli.md`` §1, §2, §3 and §5; ``docs/conventions.md`` §6.

    Example:
      Two effective epochs of Entropy-SGD (L = 2) on 64 random 4x4 images:

      >>> import flax.linen as nn
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax import train
      >>> from relaxjax.models import functional
      >>> images = jax.random.normal(jax.random.key(0), (64, 4, 4, 1))
      >>> labels = (images.mean(axis=(1, 2, 3)) > 0).astype(jnp.int32)
      >>> flatten = lambda x: x.reshape(len(x), -1)
      >>> model = functional(nn.Sequential([flatten, nn.Dense(2)]), train_kwarg=None)
      >>> data = train.DataArrays(images, labels, images[:16], labels[:16], num_classes=2)
      >>> config = train.TrainConfig(
      ...     epochs=2,
      ...     batch_size=8,
      ...     optimizer=train.OptimizerConfig("entropy-sgd", num_steps=2, gamma=1.0, lr=0.1),
      ...     eval_batch_size=16,
      ...     refresh_batches=1,
      ... )
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as run_dir:  # doctest: +ELLIPSIS
      ...     records = train.train(config, run_dir, model=model, data=data, progress=False)
      epoch 1.00  train loss ...  test error ...%
      epoch 2.00  train loss ...  test error ...%
      >>> [(r["step"], r["effective_epochs"], r["gradient_evaluations"]) for r in records]
      [(4, 1.0, 8), (8, 2.0, 16)]
    """
    run_dir = Path(run_dir)
    if distributed.multi_process():
        config = all_devices(config)
        log, progress = distributed.writer_only(log), progress and distributed.is_writer()
    check_run_dir(config, run_dir, resume)  # before anything is loaded or written

    data = data if data is not None else load_data(config)
    if model is None:
        model = models_lib.get_model(config.model, num_classes=data.num_classes)
    inner_steps = config.optimizer.inner_steps
    n_train = len(data.train_labels)
    steps_per_epoch = n_train // (config.batch_size * inner_steps)
    if steps_per_epoch < 1:
        raise ValueError(
            f"{n_train} training examples are fewer than one outer step needs "
            f"(batch_size {config.batch_size} x {inner_steps} inner steps)"
        )
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    mesh = run_mesh(config, log)
    tx = make_optimizer(
        config.optimizer, steps_per_epoch, seed=config.seed, mesh=mesh, total_steps=total_steps
    )
    state, train_step, eval_model_state = initial_state_and_step(
        config, model, tx, data.train_images[:1], mesh
    )
    data = place_data(data, mesh)
    evaluate = make_eval_fn(model, config.eval_batch_size)
    refresh = make_statistics_refresh(model, config.batch_size, config.refresh_batches)
    parle = config.optimizer.name == "parle"
    # Evaluation and the BatchNorm refresh run on this process's copy of the replicated
    # parameters and data (the same in every process), not as global computations.
    train_images, test_images, test_labels = local_copy(data[:1] + data[2:4])
    placed_perm: dict[str, jax.Array] = {}

    def step_fn(state: TrainState, perm: jax.Array, step_in_epoch: int):
        if placed_perm.get("source") is not perm:  # once per epoch
            placed_perm.update(source=perm, placed=place(perm, mesh))
        return train_step(
            state, data.train_images, data.train_labels, placed_perm["placed"], step_in_epoch
        )

    def epoch_end(state: TrainState, step: int, seconds: float, steps_timed: int):
        steps_in_epoch = step - (step - 1) // steps_per_epoch * steps_per_epoch
        train_loss, train_error = (np.asarray(state.epoch_sums) / steps_in_epoch).tolist()
        sums = state.epoch_sums
        state = state._replace(epoch_sums=place(jnp.zeros(sums.shape, sums.dtype), mesh))
        params = local_copy(state.params)
        model_state = refresh(
            params, local_copy(eval_model_state(state.model_state)), train_images, config.seed, step
        )
        if not parle:  # Parle keeps one state per replica; x̄'s refreshed one serves eval only
            state = state._replace(model_state=place(model_state, mesh))
        fault_point("evaluation", step)
        test_loss, test_error = evaluate(params, model_state, test_images, test_labels)
        record = {
            "step": step,
            "effective_epochs": step / steps_per_epoch,
            "gradient_evaluations": step * inner_steps,
            "train_loss": train_loss,
            "train_error": train_error,
            "test_loss": test_loss,
            "test_error": test_error,
            "gamma": outer_gamma(config.optimizer, step - 1),
            "seconds": seconds,
            "examples_per_second": steps_timed * config.batch_size * inner_steps / seconds,
        }
        return state, record

    with run_lock(run_dir) if distributed.is_writer() else contextlib.nullcontext():
        state, checkpoints = open_run(config, run_dir, state, resume, total_steps, log)
        return run_epochs(
            state,
            step_fn,
            epoch_end,
            run_dir=run_dir,
            checkpoints=checkpoints,
            seed=config.seed,
            n_train=n_train,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            examples_per_step=config.batch_size * inner_steps,
            progress=progress,
            stop_after_steps=stop_after_steps,
            log=log,
        )


def open_run(
    config: TrainConfig,
    run_dir: Path,
    state: Any,
    resume: bool,
    total_steps: int,
    log: Callable[[str], None],
) -> tuple[Any, Checkpoints]:
    """The state a run starts from, once ``run_dir`` is ready for it (call under its lock).

    Resuming restores the newest intact checkpoint (falling back past damaged ones),
    refuses a run whose checkpoints are gone while its metrics remain, and makes
    ``metrics.jsonl`` end at the restored step. Then ``config.json`` is written and the
    leftovers of interrupted checkpoint writes are removed.

    Args:
      config: the run's configuration (written to ``config.json``).
      run_dir: the run directory.
      state: the initial state (also the template of a restored one).
      resume: continue from a checkpoint.
      total_steps: the run's budget in outer steps (for the message).
      log: where to print messages.

    Returns:
      ``(state, checkpoints)``: the state to continue from and the run's
      :class:`~relaxjax.train.checkpoints.Checkpoints`.
    """
    checkpoints = Checkpoints(run_dir)
    record = None
    if resume:
        restored = checkpoints.restore_newest(state, log)
        if restored is not None:
            state, record = restored
            log(f"resumed {run_dir} at step {int(state.step)} of {total_steps}")
        else:
            records = read_metrics(run_dir)
            if records:
                leftovers = [n for n in checkpoints.leftovers() if not n.startswith(".staging-")]
                where = (
                    f"checkpoints/ holds no checkpoint, only {', '.join(leftovers)}"
                    if leftovers
                    else "checkpoints/ is empty"
                    if checkpoints.root.is_dir()
                    else "checkpoints/ is missing"
                )
                raise RunDirError(
                    f"--resume: {run_dir} cannot continue: its metrics.jsonl records "
                    f"{len(records)} epoch end(s) up to step {records[-1]['step']}, but {where} "
                    "(deleted, or never finished). Nothing was changed; start the run again "
                    "in a new --run-dir"
                )
            log(
                f"no checkpoint in {run_dir} yet (stopped before its first one): starting at step 0"
            )
    if distributed.is_writer():
        reconcile_metrics(run_dir, int(state.step), record, log)
        write_json_atomic(run_dir / "config.json", config.to_json())
        checkpoints.clean_staging()
    distributed.barrier("run-opened")
    return state, checkpoints


class Throughput:
    """Examples per second over the steps since the last reading, for the progress bar.

    Call :meth:`update` only after the step it reports has finished (e.g. after reading
    one of its metrics with ``float``): JAX dispatches steps asynchronously, so a clock
    read without waiting measures dispatch, not computation.
    """

    def __init__(self, examples_per_step: int, *, start_step: int = 0) -> None:
        self.examples_per_step = examples_per_step
        self.restart(start_step)

    def restart(self, step: int) -> None:
        """Starts a new window at ``step`` (after an evaluation, a save or a resume)."""
        self._step, self._time = step, time.perf_counter()

    def update(self, step: int) -> float:
        """Examples per second from the window's start to ``step``; starts the next window."""
        now = time.perf_counter()
        rate = (step - self._step) * self.examples_per_step / max(now - self._time, 1e-9)
        self._step, self._time = step, now
        return rate


class TrainingInterrupted(KeyboardInterrupt):
    """A signal (Ctrl-C, SIGTERM) stopped the run after its state was checkpointed.

    Attributes:
      step: the step of the checkpoint the run continues from with ``--resume``.
      signum: the signal's number.
    """

    def __init__(self, message: str, step: int, signum: int) -> None:
        super().__init__(message)
        self.step, self.signum = step, signum


class TrainingDiverged(RuntimeError):
    """The loss or the state became non-finite; nothing non-finite was saved.

    Attributes:
      step: the first step found non-finite.
      last_checkpoint: the step of the last good checkpoint (None: none was written).
    """

    def __init__(self, message: str, step: int, last_checkpoint: int | None) -> None:
        super().__init__(message)
        self.step, self.last_checkpoint = step, last_checkpoint


class _StopRequests:
    """Defers SIGINT and SIGTERM while the loop runs: the first one asks the loop to stop
    at its next safe point (after the current step, its epoch end and checkpoint), a
    second SIGINT stops at once (``KeyboardInterrupt``)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\nrelaxjax train: {signal.Signals(signum).name} received: stopping after the "
            "current step with a checkpoint (Ctrl-C again stops at once, losing the steps "
            "since the last checkpoint)",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _first_non_finite(pending: list[tuple[int, dict[str, jax.Array]]]) -> tuple[int, float] | None:
    """(step, loss) of the first non-finite loss among the steps' metrics, or None."""
    if not pending:
        return None
    losses = np.asarray(jnp.stack([m["loss"] for _, m in pending]))
    bad = np.flatnonzero(~np.isfinite(losses))
    return None if not len(bad) else (pending[bad[0]][0], float(losses[bad[0]]))


def run_epochs(
    state: Any,
    step_fn: Callable[[Any, jax.Array, int], tuple[Any, dict[str, jax.Array] | None]],
    epoch_end: Callable[[Any, int, float, int], tuple[Any, dict[str, Any]]],
    *,
    run_dir: Path,
    checkpoints: Checkpoints,
    seed: int,
    n_train: int,
    steps_per_epoch: int,
    total_steps: int,
    examples_per_step: int,
    progress: bool,
    stop_after_steps: int | None,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The training loop shared by every trainer: steps, epoch ends, checkpoints, signals.

    ``step_fn(state, perm, step_in_epoch) -> (state, metrics)`` takes one step
    on the epoch's permutation (``metrics`` with ``loss`` and ``error`` feed the
    progress bar and the divergence check, or None). At every epoch end (and at the
    last step) ``epoch_end(state, step, seconds, steps_timed) -> (state, record)``
    evaluates; the state is checkpointed with its record, then the record is appended
    to ``metrics.jsonl`` (a run stopped between the two gets the record back from the
    checkpoint when resumed). SIGINT and SIGTERM are deferred to the next safe point:
    the loop then checkpoints mid-epoch (the state carries the epoch's running sums, so
    ``--resume`` is exact) and raises :class:`TrainingInterrupted`; ``stop_after_steps``
    stops the same way but returns. A non-finite loss or state raises
    :class:`TrainingDiverged` without saving it. Returns all metrics records of the run.
    With several processes (``relaxjax.train.distributed``) every process runs the loop:
    they agree on a stop every ``STOP_CHECK_EVERY`` steps and at epoch ends, and only
    process 0 appends to ``metrics.jsonl`` and prints.

    Args:
      state: the initial (or restored) state; it has a ``step``.
      step_fn: ``step_fn(state, perm, step_in_epoch) -> (state, metrics or None)``.
      epoch_end: ``epoch_end(state, step, seconds, steps_timed) -> (state, record)``.
      run_dir: the run directory (``metrics.jsonl`` is appended to).
      checkpoints: the run's :class:`~relaxjax.train.checkpoints.Checkpoints`.
      seed: the seed of the per-epoch permutations (:func:`epoch_permutation`).
      n_train: the number of training examples.
      steps_per_epoch: outer steps per effective epoch.
      total_steps: the run's budget in outer steps.
      examples_per_step: examples one step consumes, for the progress bar.
      progress: show a progress bar.
      stop_after_steps: stop (with a checkpoint) after this many steps in total.
      log: where to print messages.

    Returns:
      All metrics records of the run (``metrics.jsonl``).

    Raises:
      TrainingInterrupted: after a signal stopped the run (and its state was saved).
      TrainingDiverged: when the loss or the state became non-finite.

    References:
      ``docs/cli.md`` §2-§3 (run directory, resuming, interruptions).

    Example:
      A loop whose "step" only counts, two epochs of two steps:

      >>> import tempfile
      >>> from pathlib import Path
      >>> from typing import NamedTuple
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.train import run_epochs
      >>> from relaxjax.train.checkpoints import Checkpoints
      >>> class State(NamedTuple):
      ...     step: jax.Array
      >>> def step_fn(state, perm, step_in_epoch):
      ...     return State(state.step + 1), None
      >>> def epoch_end(state, step, seconds, steps_timed):
      ...     record = {"step": step, "effective_epochs": step / 2, "train_loss": 0.0}
      ...     return state, {**record, "test_error": 0.0}
      >>> with tempfile.TemporaryDirectory() as run_dir:
      ...     records = run_epochs(
      ...         State(jnp.int32(0)), step_fn, epoch_end, run_dir=Path(run_dir),
      ...         checkpoints=Checkpoints(Path(run_dir)), seed=0, n_train=8,
      ...         steps_per_epoch=2, total_steps=4, examples_per_step=2, progress=False,
      ...         stop_after_steps=None, log=print,
      ...     )
      epoch 1.00  train loss 0.0000  test error 0.00%
      epoch 2.00  train loss 0.0000  test error 0.00%
      >>> [r["step"] for r in records]
      [2, 4]
    """
    step = int(state.step)
    saved_step = step  # the state at the start is the restored checkpoint's (or step 0's)
    bar = _progress(total_steps, step, progress)
    epoch_start, steps_timed = time.perf_counter(), 0
    throughput = Throughput(examples_per_step, start_step=step)
    perm, perm_epoch = None, None
    pending: list[tuple[int, dict[str, jax.Array]]] = []  # metrics not yet checked

    def diverged(first: int, what: str) -> TrainingDiverged:
        kept = (
            f"the last good checkpoint is {checkpoints.root / str(saved_step)} (step {saved_step})"
            if saved_step and saved_step in checkpoints.steps()
            else "no checkpoint was written"
        )
        return TrainingDiverged(
            f"training diverged: {what} at step {first} (effective epoch "
            f"{first / steps_per_epoch:.2f}); nothing non-finite was saved and {kept}. Lower "
            "the learning rates (--lr, --step-size) and start again in a new --run-dir",
            first,
            saved_step if saved_step else None,
        )

    def check(state: Any, full: bool) -> None:
        """Raises TrainingDiverged for a non-finite loss (or, if ``full``, state)."""
        bad = _first_non_finite(pending)
        if bad is not None:
            raise diverged(bad[0], f"the training loss became {bad[1]}")
        pending.clear()
        if full and not all_finite(state):
            raise diverged(step, "the parameters or the optimizer state became non-finite")

    stopped, writer = False, distributed.is_writer()
    with _StopRequests() as stop:

        def requested(step: int | None = None) -> int | None:
            """The signal that stops the run before step ``step + 1``, agreed by every
            process (they agree at every ``STOP_CHECK_EVERY``-th step, at epoch ends, and
            when the loop ends: ``step`` None)."""
            if not distributed.multi_process():
                return stop.signum
            if step is not None and step % distributed.STOP_CHECK_EVERY and step % steps_per_epoch:
                return None
            return distributed.any_process(stop.signum or 0) or None  # a collective

        signum = None
        try:
            while step < total_steps:
                signum = requested(step)
                if signum is not None:
                    break
                epoch, step_in_epoch = divmod(step, steps_per_epoch)
                if perm_epoch != epoch:
                    perm, perm_epoch = epoch_permutation(seed, epoch, n_train), epoch
                state, metrics = step_fn(state, perm, step_in_epoch)
                step, steps_timed = step + 1, steps_timed + 1
                state = fault_point("step", step, state)
                bar.update(1)
                if metrics is not None:
                    pending.append((step, metrics))
                    if step % 10 == 0 or step == total_steps:
                        check(state, full=False)  # waits for the step
                        bar.set_postfix(
                            loss=f"{float(metrics['loss']):.3f}",
                            err=f"{float(metrics['error']):.3f}",
                            ex_per_s=f"{throughput.update(step):.0f}",
                        )
                if step % steps_per_epoch == 0 or step == total_steps:
                    jax.block_until_ready(state)  # the epoch's time is its computation's
                    check(state, full=True)
                    state, record = epoch_end(
                        state, step, time.perf_counter() - epoch_start, steps_timed
                    )
                    for key in ("train_loss", "test_loss"):
                        if key in record and not np.isfinite(record[key]):
                            raise diverged(step, f"the epoch's {key} became {record[key]}")
                    checkpoints.save(state, record)
                    saved_step = step
                    fault_point("metrics-write", step)
                    if writer:
                        append_metrics(run_dir, record)
                        bar.write(
                            f"epoch {record['effective_epochs']:.2f}  train loss "
                            f"{record['train_loss']:.4f}  test error "
                            f"{100 * record['test_error']:.2f}%"
                        )
                    fault_point("epoch-end", step)
                    epoch_start, steps_timed = time.perf_counter(), 0
                    throughput.restart(step)  # evaluation and saving are not training
                if stop_after_steps is not None and step >= stop_after_steps:
                    stopped = True
                    break
            signum = signum if signum is not None else requested()
            if (stopped or signum is not None) and step < total_steps:
                if saved_step != step:
                    check(state, full=True)
                    checkpoints.save(state)  # mid-epoch: the running sums are in the state
                    saved_step = step
                bar.close()
                message = (
                    f"interrupted at step {step} of {total_steps}, saved as checkpoint "
                    f"{step}; continue with --resume (run dir {run_dir})"
                    if step
                    else f"interrupted before the first step (run dir {run_dir})"
                )
                log(message)
                if signum is not None:
                    raise TrainingInterrupted(message, step, signum)
        finally:
            bar.close()
    distributed.barrier("run-done")  # process 0 has written every record
    return read_metrics(run_dir)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
