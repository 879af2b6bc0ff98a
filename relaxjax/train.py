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
the first N devices (``relaxjax.mesh``): the data set is replicated on every
device, every gathered mini-batch (the inner ones too) is split along its
batch axis over the mesh axis ``'data'``, and parameters and optimizer state
are replicated; XLA all-reduces the gradients. Without it nothing is sharded
and the step is exactly the single-device one. ``--optimizer parle`` (see
``relaxjax.train_parle``) puts its replicas on the mesh axis ``'replica'``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from relaxjax import data as data_lib
from relaxjax import models as models_lib
from relaxjax.data.atomic import atomic_write
from relaxjax.mesh import DATA_AXIS, constrain, make_mesh, place
from relaxjax.optimizers import OptimizerConfig, make_optimizer, outer_gamma

__all__ = [
    "DataArrays",
    "epoch_permutation",
    "init_state",
    "iterate_runs",
    "TrainConfig",
    "TrainState",
    "load_data",
    "make_eval_fn",
    "make_train_step",
    "read_metrics",
    "train",
]

CIFAR = ("cifar10", "cifar100", "cifar10-jpeg")


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
        Otherwise images are normalised per channel.
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
    """

    model: str = "mnistfc"
    dataset: str = "mnist"
    optimizer: OptimizerConfig = OptimizerConfig()
    epochs: float = 5.0
    batch_size: int = 128
    seed: int = 0
    augment: bool | None = None
    zca: bool | None = None
    data_dir: str | None = None
    eval_batch_size: int = 1000
    train_limit: int | None = None
    test_limit: int | None = None
    devices: int | None = None
    refresh_batches: int = 50

    def __post_init__(self):
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.refresh_batches < 0:
            raise ValueError(f"refresh_batches must be >= 0, got {self.refresh_batches}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def use_augmentation(self) -> bool:
        return self.dataset in CIFAR if self.augment is None else self.augment

    @property
    def use_zca(self) -> bool:
        return self.dataset in CIFAR if self.zca is None else self.zca

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        # Runs saved before the refresh existed were evaluated without one.
        values.setdefault("refresh_batches", 0)
        optimizer = dict(values.pop("optimizer"))
        optimizer["lr_milestones"] = tuple(optimizer.get("lr_milestones", ()))
        return cls(optimizer=OptimizerConfig(**optimizer), **values)


class DataArrays(NamedTuple):
    """Preprocessed float32 NHWC images and int32 labels, on the default device."""

    train_images: jax.Array
    train_labels: jax.Array
    test_images: jax.Array
    test_labels: jax.Array
    num_classes: int


class TrainState(NamedTuple):
    """What a checkpoint holds: with the config, it determines the rest of the run."""

    step: jax.Array  # outer steps taken
    params: Any
    model_state: Any  # e.g. BatchNorm running statistics
    opt_state: Any
    key: jax.Array  # raw PRNG key for dropout and augmentation
    epoch_sums: jax.Array  # [train loss, train error] summed over this epoch's steps


def _limited(images: np.ndarray, labels: np.ndarray, limit: int | None):
    """``limit`` examples: the first ones, or evenly spaced ones where the first lack
    classes of the split (a class-sorted image folder would give one class only)."""
    if limit is None or limit >= len(labels):
        return images, labels
    index = np.arange(limit)
    if len(np.unique(labels[:limit])) < min(limit, len(np.unique(labels))):
        index = np.linspace(0, len(labels) - 1, limit).round().astype(int)
    return images[index], labels[index]


def load_data(config: TrainConfig) -> DataArrays:
    """Loads, preprocesses (paper's preprocessing) and places the data set on device."""
    train_x, train_y = data_lib.load_dataset(config.dataset, "train", config.data_dir)
    test_x, test_y = data_lib.load_dataset(config.dataset, "test", config.data_dir)
    train_x, train_y = _limited(train_x, train_y, config.train_limit)
    test_x, test_y = _limited(test_x, test_y, config.test_limit)
    if config.use_zca:
        train_f, test_f, _ = data_lib.zca_whiten(train_x, test_x)
    else:
        stats = data_lib.channel_stats(train_x)
        train_f, test_f = data_lib.normalize(train_x, stats), data_lib.normalize(test_x, stats)
    num_classes = data_lib.dataset_info(config.dataset).num_classes or int(train_y.max()) + 1
    return DataArrays(
        jnp.asarray(train_f, jnp.float32),
        jnp.asarray(train_y, jnp.int32),
        jnp.asarray(test_f, jnp.float32),
        jnp.asarray(test_y, jnp.int32),
        num_classes,
    )


def _crop_flip(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """Random crops of the zero-padded images and random horizontal flips, on device."""
    n, h, w, _ = images.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * padding + 1)
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

    cropped = jax.vmap(crop)(padded, offsets)
    flips = jax.random.bernoulli(flip_key, 0.5, (n, 1, 1, 1))
    return jnp.where(flips, cropped[:, :, ::-1], cropped)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_train_step(
    model: models_lib.FunctionalModel,
    tx: optax.GradientTransformationExtraArgs,
    inner_steps: int,
    batch_size: int,
    augment: bool = False,
    mesh: Mesh | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """One jitted outer step: ``step(state, images, labels, perm, step_in_epoch)``.

    Mini-batch ℓ of the step holds ``perm[(s·L + ℓ)·B : (s·L + ℓ + 1)·B]`` with
    s = ``step_in_epoch``. The gradient at x on mini-batch 0 (train mode) is the
    incoming gradient and its batch statistics become the new running
    statistics; inner mini-batches ℓ ≥ 1 are evaluated by ``grad_fn`` with
    their own dropout keys, their statistics discarded (see README). With a
    ``mesh`` every mini-batch is constrained to ``P('data')`` and the new
    state to replicated.
    """

    def loss_fn(params, model_state, images, labels, dropout_key):
        logits, new_model_state = model.apply(
            params, model_state, images, train=True, dropout_key=dropout_key
        )
        return _cross_entropy(logits, labels), (new_model_state, logits)

    def train_step(state: TrainState, images, labels, perm, step_in_epoch):
        key, step_key = jax.random.split(state.key)
        dropout_keys = jax.random.split(jax.random.fold_in(step_key, 0), inner_steps)
        augment_keys = jax.random.split(jax.random.fold_in(step_key, 1), inner_steps)
        window = jax.lax.dynamic_slice_in_dim(
            perm, step_in_epoch * inner_steps * batch_size, inner_steps * batch_size
        ).reshape(inner_steps, batch_size)

        def batch(i):
            x = jnp.take(images, window[i], axis=0)
            if augment:
                x = _crop_flip(augment_keys[i], x)
            return constrain((x, jnp.take(labels, window[i], axis=0)), mesh, P(DATA_AXIS))

        x0, y0 = batch(0)
        (loss, (model_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.model_state, x0, y0, dropout_keys[0]
        )

        def grad_fn(params, i):
            x, y = batch(i)
            return jax.grad(loss_fn, has_aux=True)(
                params, state.model_state, x, y, dropout_keys[i]
            )[0]

        updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
        params = optax.apply_updates(state.params, updates)
        error = jnp.mean(jnp.argmax(logits, -1) != y0)
        sums = state.epoch_sums + jnp.stack([loss, error]).astype(state.epoch_sums.dtype)
        new_state = TrainState(state.step + 1, params, model_state, opt_state, key, sums)
        return constrain(new_state, mesh), {"loss": loss, "error": error}

    return jax.jit(train_step, donate_argnums=0)


def make_eval_fn(
    model: models_lib.FunctionalModel, batch_size: int
) -> Callable[[Any, Any, jax.Array, jax.Array], tuple[float, float]]:
    """``evaluate(params, model_state, images, labels) -> (mean loss, error rate)``, eval mode."""

    @jax.jit
    def batch_sums(params, model_state, images, labels, mask):
        logits, _ = model.apply(params, model_state, images, train=False, dropout_key=None)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        wrong = jnp.argmax(logits, -1) != labels
        return jnp.sum(losses * mask), jnp.sum(wrong * mask)

    def evaluate(params, model_state, images, labels):
        n = len(labels)
        loss_sum, wrong_sum = 0.0, 0.0
        for start in range(0, n, batch_size):
            x, y = images[start : start + batch_size], labels[start : start + batch_size]
            pad = batch_size - len(y)
            mask = jnp.concatenate([jnp.ones(len(y)), jnp.zeros(pad)])
            if pad:  # keep one compiled shape
                x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
                y = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)])
            loss, wrong = batch_sums(params, model_state, x, y, mask)
            loss_sum, wrong_sum = loss_sum + loss, wrong_sum + wrong
        return float(loss_sum) / n, float(wrong_sum) / n

    return evaluate


def make_statistics_refresh(
    model: models_lib.FunctionalModel, batch_size: int, num_batches: int
) -> Callable[[Any, Any, jax.Array, int, int], Any]:
    """``refresh(params, model_state, images, seed, step) -> model_state``, BatchNorm re-estimated.

    Before every validation the original Entropy-SGD / Deep Relaxation code
    runs the training set through the network in train mode with every
    dropout probability set to 0 (its ``dry_feed``), so that BatchNorm's
    running statistics describe the activations the evaluation sees: the
    statistics gathered during training are taken with dropout on, which
    changes the scale of every layer after a dropout. ``refresh`` does the
    same with ``model.feed_statistics``. BatchNorm puts weight 0.1 on each new
    batch (PyTorch's momentum, ``_BN_MOMENTUM`` of ``relaxjax.models``), so
    after a full pass the statistics are those of its last k batches up to a
    weight 0.9^k on everything older (0.9^50 ≈ 0.005): ``num_batches`` = 50
    random mini-batches give the original's estimate at a ninth of MNIST's
    pass. The batches depend on (seed, step) only, so a resumed run draws the
    same ones. ``model_state`` comes back unchanged when it is empty, when
    the model has no ``feed_statistics`` or when ``num_batches`` is 0.
    """

    @jax.jit
    def feed(params, model_state, images, indices):
        return model.feed_statistics(params, model_state, jnp.take(images, indices, axis=0))

    def refresh(params, model_state, images, seed: int, step: int):
        if model.feed_statistics is None or num_batches == 0 or not jax.tree.leaves(model_state):
            return model_state
        n = len(images)
        size = min(batch_size, n)
        count = max(1, min(num_batches, n // size))
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 0xD27F), step)
        order = jax.random.permutation(key, n)[: count * size].reshape(count, size)
        for indices in order:
            model_state = feed(params, model_state, images, indices)  # gather inside the jit
        return model_state

    return refresh


def epoch_permutation(seed: int, epoch: int, n: int) -> jax.Array:
    """The order of the training set in epoch ``epoch``: a function of (seed, epoch) only."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED), epoch)
    return jax.random.permutation(key, n)


# --------------------------------------------------------------------------- run directory


def write_json_atomic(path: Path, value: Any) -> None:
    """Writes ``value`` as JSON to ``path`` atomically (``relaxjax.data.atomic.atomic_write``)."""
    _write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True))


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as (f, _):
        f.write(text.encode())


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records of a run (``metrics.jsonl``)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drops records written after the checkpoint at ``step`` (they will be redone)."""
    kept = [m for m in read_metrics(run_dir) if m["step"] <= step]
    _write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in kept))


def _checkpoint_manager(run_dir: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(run_dir.absolute() / "checkpoints", options=options)


def config_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """``"field: saved A, given B"`` for every setting that differs (the budget aside)."""
    a, b = saved.to_json(), given.to_json()
    a.pop("epochs"), b.pop("epochs")
    flat = lambda d: {  # noqa: E731
        f"{k}.{k2}" if isinstance(v, dict) else k: v2
        for k, v in d.items()
        for k2, v2 in (v.items() if isinstance(v, dict) else [(None, v)])
    }
    fa, fb = flat(a), flat(b)
    return [f"{k}: saved {fa[k]!r}, given {fb.get(k)!r}" for k in fa if fa[k] != fb.get(k)]


# --------------------------------------------------------------------------- the loop


def init_state(
    config: TrainConfig, model: models_lib.FunctionalModel, tx, sample: jax.Array
) -> TrainState:
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


def _make_mesh(config: TrainConfig, log: Callable[[str], None]) -> Mesh | None:
    """The mesh of ``config.devices`` (None without it); checks the batch divides evenly."""
    if config.devices is None:
        return None
    replicas = config.optimizer.replicas if config.optimizer.name == "parle" else 1
    mesh = make_mesh(config.devices, replicas)
    if config.batch_size % mesh.shape[DATA_AXIS]:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the {mesh.shape[DATA_AXIS]} "
            f"devices of the mesh's data axis (mesh {dict(mesh.shape)})"
        )
    log(f"devices: mesh {dict(mesh.shape)} on {mesh.devices.size} {jax.default_backend()} devices")
    return mesh


def _place_data(data: DataArrays, mesh: Mesh | None) -> DataArrays:
    """The data set replicated on every device of the mesh (each gathers its own slices)."""
    if mesh is None:
        return data
    arrays = place(data[:4], mesh)
    return DataArrays(*arrays, num_classes=data.num_classes)


def _build(
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
        from relaxjax import train_parle  # imports this module

        state = train_parle.parle_state(state, config.optimizer.replicas)
        step = train_parle.make_parle_train_step(
            model, tx, config.optimizer.num_steps, config.batch_size, augment, mesh
        )
        return train_parle.place_parle_state(state, mesh), step, train_parle.average_model_state
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
    mesh = _make_mesh(config, log)
    tx = make_optimizer(config.optimizer, steps_per_epoch, seed=config.seed, mesh=mesh)
    state, train_step, eval_model_state = _build(config, model, tx, data.train_images[:1], mesh)
    data = _place_data(data, mesh)

    manager = _checkpoint_manager(run_dir)
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
            "gamma": float(outer_gamma(config.optimizer, step - 1)),
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


def prepare_run_dir(config: TrainConfig, run_dir: Path, resume: bool) -> None:
    """Checks ``--resume`` against the saved ``config.json`` (only ``epochs`` may differ),
    refuses to overwrite a finished or started run, and writes ``config.json``."""
    config_path = run_dir / "config.json"
    if resume:
        if not config_path.exists():
            raise FileNotFoundError(f"--resume: no run to resume in {run_dir} (no config.json)")
        saved = TrainConfig.from_json(json.loads(config_path.read_text()))
        differences = config_differences(saved, config)
        if differences:
            raise ValueError(
                "--resume: the configuration differs from the saved run "
                "(only --epochs may change):\n  " + "\n  ".join(differences)
            )
    elif config_path.exists() and read_metrics(run_dir):
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another "
            "--run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config_path, config.to_json())


def restore_latest(
    manager: ocp.CheckpointManager,
    state: Any,
    resume: bool,
    run_dir: Path,
    total_steps: int,
    log: Callable[[str], None],
) -> Any:
    """The latest checkpoint's state when resuming (else ``state``); drops metrics past it."""
    if resume and manager.latest_step() is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
        log(f"resumed {run_dir} at step {int(state.step)} of {total_steps}")
    _truncate_metrics(run_dir, int(state.step))
    return state


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
    """

    def save(state: Any) -> None:
        manager.save(int(state.step), args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()

    step = int(state.step)
    bar = _progress(total_steps, step, progress)
    epoch_start, steps_timed = time.perf_counter(), 0
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
                seconds = time.perf_counter() - epoch_start
                bar.set_postfix(
                    loss=f"{float(metrics['loss']):.3f}",
                    err=f"{float(metrics['error']):.3f}",
                    ex_per_s=f"{steps_timed * examples_per_step / seconds:.0f}",
                )
            if step % steps_per_epoch == 0 or step == total_steps:
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


def iterate_runs(paths: list[str]) -> Iterator[tuple[str, TrainConfig, list[dict[str, Any]]]]:
    """(run dir, config, metrics) for each run directory."""
    for path in paths:
        config = TrainConfig.from_json(json.loads((Path(path) / "config.json").read_text()))
        yield path, config, read_metrics(path)
