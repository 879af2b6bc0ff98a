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
uninterrupted run.

With ``devices=N`` (``relaxjax train --devices N``) the step runs on a mesh of
the first N devices (``relaxjax.core.mesh``): the data set is replicated on every
device, every gathered mini-batch (the inner ones too) is split along its
batch axis over the mesh axis ``'data'``, and parameters and optimizer state
are replicated; XLA all-reduces the gradients. Without it nothing is sharded
and the step is exactly the single-device one. ``--optimizer parle`` (see
``relaxjax.train.parle_steps``) puts its replicas on the mesh axis ``'replica'``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from relaxjax import models as models_lib
from relaxjax.core.mesh import DATA_AXIS, make_mesh, place
from relaxjax.train import parle_steps
from relaxjax.train.checkpoints import checkpoint_manager, restore_latest
from relaxjax.train.config import DataArrays, TrainConfig, TrainState
from relaxjax.train.inputs import epoch_permutation, load_data
from relaxjax.train.optimizers import make_optimizer, outer_gamma
from relaxjax.train.runs import prepare_run_dir, read_metrics
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


def run_mesh(config: TrainConfig, log: Callable[[str], None]) -> Mesh | None:
    """The mesh of ``config.devices`` (None without it); checks the batch divides evenly."""
    if config.devices is None:
        return None
    replicas = config.optimizer.replicas if config.optimizer.name == "parle" else 1
    mesh = make_mesh(config.devices, num_replicas=replicas)
    if config.batch_size % mesh.shape[DATA_AXIS]:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the {mesh.shape[DATA_AXIS]} "
            f"devices of the mesh's data axis (mesh {dict(mesh.shape)})"
        )
    log(f"devices: mesh {dict(mesh.shape)} on {mesh.devices.size} {jax.default_backend()} devices")
    return mesh


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
    epoch) and orbax checkpoints (``checkpoints/``, written atomically at every
    epoch end and on Ctrl-C). With ``resume=True`` it continues from the latest
    checkpoint exactly as an uninterrupted run would.

    Args:
      config: the run's configuration.
      run_dir: the run directory.
      resume: continue from the latest checkpoint in ``run_dir``.
      model: a ``relaxjax.models.FunctionalModel`` to train instead of
        ``config.model`` (e.g. ``relaxjax.models.functional(my_flax_module)``).
      data: preloaded data (default: ``load_data(config)``).
      progress: show a progress bar.
      stop_after_steps: stop (with a checkpoint) after this many outer steps in
        total, as if interrupted; for tests and time-boxed jobs.
      log: where to print messages.

    Returns:
      All metrics records of the run (``metrics.jsonl``), one per effective epoch
      (and one at an interruption's last epoch end).

    Raises:
      ValueError: if the training set is smaller than one outer step's
        ``batch_size × L`` examples, or if ``--resume`` finds a different saved
        configuration.
      FileExistsError: if ``run_dir`` holds a run and ``resume`` is False.

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
    prepare_run_dir(config, run_dir, resume)

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
    tx = make_optimizer(config.optimizer, steps_per_epoch, seed=config.seed, mesh=mesh)
    state, train_step, eval_model_state = initial_state_and_step(
        config, model, tx, data.train_images[:1], mesh
    )
    data = place_data(data, mesh)

    manager = checkpoint_manager(run_dir)
    state = restore_latest(manager, state, resume, run_dir, total_steps, log)
    evaluate = make_eval_fn(model, config.eval_batch_size)
    refresh = make_statistics_refresh(model, config.batch_size, config.refresh_batches)
    parle = config.optimizer.name == "parle"

    def step_fn(state: TrainState, perm: jax.Array, step_in_epoch: int):
        return train_step(state, data.train_images, data.train_labels, perm, step_in_epoch)

    def epoch_end(state: TrainState, step: int, seconds: float, steps_timed: int):
        steps_in_epoch = step - (step - 1) // steps_per_epoch * steps_per_epoch
        train_loss, train_error = (np.asarray(state.epoch_sums) / steps_in_epoch).tolist()
        state = state._replace(epoch_sums=jnp.zeros_like(state.epoch_sums))
        model_state = refresh(
            state.params, eval_model_state(state.model_state), data.train_images, config.seed, step
        )
        if not parle:  # Parle keeps one state per replica; x̄'s refreshed one serves eval only
            state = state._replace(model_state=model_state)
        test_loss, test_error = evaluate(
            state.params, model_state, data.test_images, data.test_labels
        )
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

    return run_epochs(
        state,
        step_fn,
        epoch_end,
        run_dir=run_dir,
        manager=manager,
        seed=config.seed,
        n_train=n_train,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        examples_per_step=config.batch_size * inner_steps,
        progress=progress,
        stop_after_steps=stop_after_steps,
        log=log,
    )


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


def run_epochs(
    state: Any,
    step_fn: Callable[[Any, jax.Array, int], tuple[Any, dict[str, jax.Array] | None]],
    epoch_end: Callable[[Any, int, float, int], tuple[Any, dict[str, Any]]],
    *,
    run_dir: Path,
    manager: ocp.CheckpointManager,
    seed: int,
    n_train: int,
    steps_per_epoch: int,
    total_steps: int,
    examples_per_step: int,
    progress: bool,
    stop_after_steps: int | None,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The training loop shared by every trainer: steps, epoch ends, checkpoints, Ctrl-C.

    ``step_fn(state, perm, step_in_epoch) -> (state, metrics)`` takes one step
    on the epoch's permutation (``metrics`` with ``loss`` and ``error`` feed the
    progress bar, or None). At every epoch end (and at the last step)
    ``epoch_end(state, step, seconds, steps_timed) -> (state, record)``
    evaluates; the record is appended to ``metrics.jsonl`` and the state
    checkpointed. Ctrl-C (or ``stop_after_steps``) checkpoints mid-epoch: the
    state carries the epoch's running sums, so ``--resume`` is exact. Returns
    all metrics records of the run.

    Args:
      state: the initial (or restored) state; it has a ``step``.
      step_fn: ``step_fn(state, perm, step_in_epoch) -> (state, metrics or None)``.
      epoch_end: ``epoch_end(state, step, seconds, steps_timed) -> (state, record)``.
      run_dir: the run directory (``metrics.jsonl`` is appended to).
      manager: the orbax checkpoint manager (closed on return).
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

    References:
      ``docs/cli.md`` §2-§3 (run directory, resuming).

    Example:
      A loop whose "step" only counts, two epochs of two steps:

      >>> import tempfile
      >>> from pathlib import Path
      >>> from typing import NamedTuple
      >>> import jax, jax.numpy as jnp
      >>> from relaxjax.train import run_epochs
      >>> from relaxjax.train.checkpoints import checkpoint_manager
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
      ...         manager=checkpoint_manager(Path(run_dir)), seed=0, n_train=8,
      ...         steps_per_epoch=2, total_steps=4, examples_per_step=2, progress=False,
      ...         stop_after_steps=None, log=print,
      ...     )
      epoch 1.00  train loss 0.0000  test error 0.00%
      epoch 2.00  train loss 0.0000  test error 0.00%
      >>> [r["step"] for r in records]
      [2, 4]
    """

    def save(state: Any) -> None:
        manager.save(int(state.step), args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()

    step = int(state.step)
    bar = _progress(total_steps, step, progress)
    epoch_start, steps_timed = time.perf_counter(), 0
    throughput = Throughput(examples_per_step, start_step=step)
    perm, perm_epoch = None, None
    try:
        while step < total_steps:
            epoch, step_in_epoch = divmod(step, steps_per_epoch)
            if perm_epoch != epoch:
                perm, perm_epoch = epoch_permutation(seed, epoch, n_train), epoch
            state, metrics = step_fn(state, perm, step_in_epoch)
            step, steps_timed = step + 1, steps_timed + 1
            bar.update(1)
            if metrics is not None and (step % 10 == 0 or step == total_steps):
                loss, error = float(metrics["loss"]), float(metrics["error"])  # waits for it
                bar.set_postfix(
                    loss=f"{loss:.3f}",
                    err=f"{error:.3f}",
                    ex_per_s=f"{throughput.update(step):.0f}",
                )
            if step % steps_per_epoch == 0 or step == total_steps:
                jax.block_until_ready(state)  # the epoch's time is its computation's, not dispatch
                state, record = epoch_end(
                    state, step, time.perf_counter() - epoch_start, steps_timed
                )
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                save(state)
                bar.write(
                    f"epoch {record['effective_epochs']:.2f}  train loss "
                    f"{record['train_loss']:.4f}  test error {100 * record['test_error']:.2f}%"
                )
                epoch_start, steps_timed = time.perf_counter(), 0
                throughput.restart(step)  # evaluation and saving are not training throughput
            if stop_after_steps is not None and step >= stop_after_steps and step < total_steps:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        save(state)  # mid-epoch: the epoch's running sums are part of the state
        bar.close()
        log(f"interrupted at step {step}; continue with --resume (run dir {run_dir})")
    finally:
        bar.close()
        manager.close()
    return read_metrics(run_dir)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
