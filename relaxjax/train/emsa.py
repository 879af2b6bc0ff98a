"""Training entry point of E-MSA: ``relaxjax train --optimizer emsa`` and :func:`train_emsa`.

E-MSA is the extended method of successive approximations of Q. Li, L. Chen,
C. Tai and W. E, *Maximum Principle Based Algorithms for Deep Learning*, JMLR
18(165), 2018 (``relaxjax.msa``; ``docs/msa.md``). One E-MSA iteration on a
mini-batch is a forward pass (states x_t), a backward pass (co-states p_t) and,
for every layer t, a few iterations of an inner optimizer maximising the
augmented Hamiltonian H̃_t(x_t, p_{t+1}, θ, x_{t+1}, p_t) over θ_t (paper: 10
L-BFGS iterations). It is not an Optax transformation (it needs the network as
a sequence of layers), so it has its own loop, which writes the run directory
of ``relaxjax.train`` (``config.json``, one ``metrics.jsonl`` record per
effective epoch, orbax checkpoints, exact ``--resume``), reusing that module's
helpers; ``relaxjax plot`` reads its runs like any other.

Models (``--model``): the networks of the paper's §4 as layer sequences,

* ``msa-resnet``: the paper's MNIST residual CNN (:func:`relaxjax.msa.paper_mnist_net`:
  two projection layers, 7 residual layers x + 0.5·tanh(W ⋆ x + b) of 32 channels,
  a dense classifier; 10 layers);
* ``msa-resnet-tiny``: the same with 4 channels and 2 residual layers (smoke tests).

The Entropy-SGD networks (``mnistfc``, ``lenet``, ``allcnn``) are single Flax
modules with BatchNorm and dropout, not layer sequences x_{t+1} = f_t(x_t, θ_t):
BatchNorm's running statistics are mutable state outside the control
formulation and dropout makes f_t random, so E-MSA refuses them.  The
``msa-*`` models also train with every other optimizer (through
``relaxjax.train``, as a :class:`relaxjax.models.FunctionalModel` with the
same initial parameters), which is how the paper's comparisons are run.

One E-MSA iteration consumes one mini-batch (one forward-backward pass), so an
effective epoch is ``N // B`` iterations, as for SGD; the inner maximisation's
extra evaluations are not counted (the paper compares per iteration and per
second).  The L2 weight decay λ becomes the paper's regulariser
``L_t(θ) = (λ/2)|θ|²`` of every layer.

CPU speed.  XLA:CPU runs a convolution inside a loop body (``lax.scan``,
``while_loop``) without its canonical-layout rewrite, i.e. slowly; the inner
L-BFGS runs its line search in such loops.  On CPU (or with
``canonical_convolutions=True``) the objective handed to the inner optimizer's
line search is evaluated with :func:`relaxjax.cpu.conv_layout.with_canonical_convolutions`
applied to its value-and-gradient (via a ``custom_vjp``), and fixed-iteration
inner solvers (Adam, SGD) run unrolled (no loop at all). The effect on one E-MSA
iteration is measured in ``benchmarks/results/msa.md``.

Defaults (``relaxjax train``): ρ = 0.03 with penalties summed over batch and
features, as in the authors' MNIST code (their config.yml); on MNIST, 40
iterations reach 0.946 test accuracy at ρ = 0.03, 0.959 at ρ = 0.003 (after a
dip to 0.76 at iteration 10) and 0.50 at ρ = 0.3.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from relaxjax import msa
from relaxjax.cpu.conv_layout import with_canonical_convolutions
from relaxjax.models import FunctionalModel
from relaxjax.train import inputs, loop, runs, steps
from relaxjax.train.config import DataArrays, TrainConfig, TrainState

__all__ = [
    "EMSA_MODELS",
    "INNER_OPTIMIZERS",
    "build_layers",
    "canonical_inner_optimizer",
    "check_emsa_config",
    "handles",
    "layer_sequence_fn",
    "layer_model",
    "make_emsa",
    "run",
    "train_emsa",
]

EMSA_MODELS: dict[str, dict[str, Any]] = {
    "msa-resnet": {},  # the paper's: projections (32, 32), 7 residual layers, δ = 0.5
    "msa-resnet-tiny": {"projection_channels": (4, 4), "num_residual": 2},
}
"""``--model`` names usable with E-MSA -> keyword arguments of ``msa.paper_mnist_net``."""

INNER_OPTIMIZERS = ("lbfgs", "adam", "sgd")
"""Inner optimizers of the per-layer Hamiltonian maximisation (paper: L-BFGS)."""

_SUMS = ("train_loss", "train_error", "hamiltonian_gain", "augmented_gain")


# --------------------------------------------------------------------------- configuration


def check_emsa_config(config: TrainConfig) -> None:
    """Raises ``ValueError`` (with the reason) if E-MSA cannot train ``config``."""
    opt = config.optimizer
    if opt.name != "emsa":
        raise ValueError(f"train_emsa trains --optimizer emsa, got {opt.name!r}")
    if config.model not in EMSA_MODELS:
        raise ValueError(
            f"--optimizer emsa cannot train --model {config.model}: E-MSA (Li et al., JMLR "
            "2018) maximises a Hamiltonian layer by layer, so it needs the network as a "
            "sequence of layers x_{t+1} = f_t(x_t, theta_t) with parameters only. "
            "mnistfc, lenet and allcnn are single modules with BatchNorm (running statistics "
            "are state outside the control formulation) and dropout (a random f_t). Use "
            f"--model {' or '.join(EMSA_MODELS)} (the paper's residual CNN), or "
            "relaxjax.msa.emsa with your own relaxjax.msa.LayerSequence."
        )
    if opt.msa_inner_optimizer not in INNER_OPTIMIZERS:
        raise ValueError(
            f"unknown E-MSA inner optimizer {opt.msa_inner_optimizer!r}; valid: "
            f"{', '.join(INNER_OPTIMIZERS)}"
        )
    if getattr(config, "devices", None) is not None:
        raise ValueError("--optimizer emsa runs on the default device; --devices is not supported")
    if config.use_augmentation:
        raise ValueError(
            "--optimizer emsa trains without data augmentation; pass --no-augment "
            "(CIFAR data sets default to --augment)"
        )


def build_layers(
    model: str, key: jax.Array, input_shape: tuple[int, ...], num_classes: int
) -> msa.LayerSequence:
    """The layer sequence of an ``msa-*`` model (:func:`relaxjax.msa.paper_mnist_net`)."""
    if model not in EMSA_MODELS:
        raise ValueError(f"unknown layer-sequence model {model!r}; valid: {', '.join(EMSA_MODELS)}")
    return msa.paper_mnist_net(
        key, input_shape=tuple(input_shape), num_classes=num_classes, **EMSA_MODELS[model]
    )


@functools.lru_cache(maxsize=16)
def _skeleton(model: str, num_classes: int) -> msa.LayerSequence:
    """The model's layers with abstract parameters: its apply functions, built once.

    The apply functions are static arguments of compiled code (Flax modules compare
    by identity there), so reusing them lets later runs in a process skip compilation.
    They do not depend on the input shape.
    """
    return jax.eval_shape(
        lambda k: build_layers(model, k, (28, 28, 1), num_classes), jax.random.key(0)
    )


def layer_model(model: str, *, num_classes: int = 10) -> FunctionalModel:
    """An ``msa-*`` model as a :class:`FunctionalModel` (params: a tuple, one entry per layer).

    ``init(key, sample)`` builds the layers for ``sample``'s shape; ``apply`` runs
    ``x_{t+1} = f_t(x_t, θ_t)``. No model state, no dropout: train and eval modes agree.
    """
    apply_fns = _skeleton(model, num_classes).apply_fns

    def init(key: jax.Array, sample: jax.Array) -> tuple[tuple, dict]:
        with jax.disable_jit():  # op by op: compiling each layer's init costs seconds
            layers = build_layers(model, key, sample.shape[1:], num_classes)
        return layers.params, {}

    def apply(params, model_state, x, *, train: bool = False, dropout_key=None):
        del train, dropout_key
        h = jnp.asarray(x, jnp.float32)
        for fn, p in zip(apply_fns, params, strict=True):
            h = fn(p, h)
        return h, model_state

    return FunctionalModel(init, apply)


# --------------------------------------------------------------------------- the optimizer


def _canonical_value_fn(fn: Callable[[Any], jax.Array]) -> Callable[[Any], jax.Array]:
    """``fn`` whose value and gradient are computed with canonical-layout convolutions.

    A ``custom_vjp`` whose forward pass is ``with_canonical_convolutions(value_and_grad(fn))``:
    the rewrite must see the differentiated function (the transposed convolutions of
    the gradient are the non-canonical ones), so it is applied after differentiation.
    """
    value = with_canonical_convolutions(fn)
    value_and_grad = with_canonical_convolutions(jax.value_and_grad(fn))

    @jax.custom_vjp
    def objective(params):
        return value(params)

    def fwd(params):
        return value_and_grad(params)

    def bwd(grad, cotangent):
        return (jax.tree.map(lambda g: g * cotangent, grad),)

    objective.defvjp(fwd, bwd)
    return objective


def canonical_inner_optimizer(
    tx: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """``tx`` whose line search (``value_fn``) evaluates convolutions in canonical layout.

    For line-search optimizers such as :func:`optax.lbfgs`, whose objective
    evaluations run inside ``while`` loops where XLA:CPU does not canonicalise
    convolutions (see :mod:`relaxjax.cpu.conv_layout`). The result is the same up to
    floating-point summation order.
    """
    tx = optax.with_extra_args_support(tx)

    def update(updates, state, params=None, **extra_args):
        if extra_args.get("value_fn") is not None:
            extra_args["value_fn"] = _canonical_value_fn(extra_args["value_fn"])
        return tx.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(tx.init, update)


def _on_cpu(flag: bool | None) -> bool:
    return jax.default_backend() == "cpu" if flag is None else bool(flag)


def make_emsa(config: TrainConfig, *, canonical_convolutions: bool | None = None) -> msa.MSA:
    """The :func:`relaxjax.msa.emsa` optimizer of ``config.optimizer`` (its ``msa_*`` fields).

    ``canonical_convolutions`` (default: on CPU) evaluates L-BFGS's line search with
    canonical convolutions and unrolls fixed-iteration inner solvers (Adam, SGD).
    Cached: equal configurations share one optimizer, hence its compiled functions.
    """
    return _make_emsa(config.optimizer, config.seed, _on_cpu(canonical_convolutions))


@functools.lru_cache(maxsize=16)
def _make_emsa(opt: Any, seed: int, fast: bool) -> msa.MSA:
    if opt.msa_inner_optimizer == "lbfgs":
        inner = optax.lbfgs()
        if fast:
            inner = canonical_inner_optimizer(inner)
    elif opt.msa_inner_optimizer == "adam":
        inner = optax.adam(opt.msa_inner_lr)
    else:
        inner = optax.sgd(opt.msa_inner_lr)
    return msa.emsa(
        msa.softmax_cross_entropy,
        rho=float(opt.msa_rho),
        inner_optimizer=inner,
        inner_steps=int(opt.msa_inner_steps),
        init_noise=float(opt.msa_init_noise),
        penalty=opt.msa_penalty,
        unroll_inner=fast and opt.msa_inner_optimizer != "lbfgs",
        seed=seed,
    )


@functools.lru_cache(maxsize=16)
def _regularizer(weight: float) -> msa.Regularizer | None:
    """``L_t(θ) = (λ/2)|θ|²`` (one object per λ: it is a static argument of compiled code)."""
    return msa.l2_regularizer(weight) if weight > 0 else None


def layer_sequence_fn(
    config: TrainConfig, num_classes: int
) -> Callable[[tuple], msa.LayerSequence]:
    """``params -> LayerSequence`` of ``config.model`` with the L2 regulariser of ``config``.

    Built once: the apply functions and the regulariser are static arguments of the
    compiled maximisation, so they must be the same objects at every iteration.
    """
    skeleton = _skeleton(config.model, num_classes)
    regularizer = _regularizer(float(config.optimizer.weight_decay))
    skeleton = skeleton.replace(regularizers=(regularizer,) * skeleton.num_layers)
    return lambda params: skeleton.replace(params=tuple(params))


# --------------------------------------------------------------------------- the loop


def _initial_state(config: TrainConfig, model: FunctionalModel, sample: jax.Array) -> TrainState:
    """As ``relaxjax.train.init_state`` (same initial parameters as SGD for the seed)."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params, model_state = model.init(init_key, sample)
    return TrainState(
        jnp.zeros([], jnp.int32),
        params,
        model_state,
        {},  # E-MSA keeps no optimizer state besides the step and the noise key
        train_key,
        jnp.zeros([len(_SUMS)], jnp.float32),
    )


def _make_batch_fn(batch_size: int) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """``batch(images, labels, perm, s)``: mini-batch ``perm[s·B:(s+1)·B]``, gathered on device."""

    @jax.jit
    def batch(images, labels, perm, step_in_epoch):
        idx = jax.lax.dynamic_slice_in_dim(perm, step_in_epoch * batch_size, batch_size)
        return jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0)

    return batch


def _make_step(config: TrainConfig, opt: msa.MSA, num_classes: int) -> Callable[..., TrainState]:
    """One E-MSA iteration on a mini-batch, as a ``TrainState -> TrainState`` map."""

    @jax.jit
    def sums(metrics: msa.MSAMetrics, labels: jax.Array) -> jax.Array:
        error = jnp.mean(jnp.argmax(metrics.outputs, -1) != labels)
        values = [metrics.data_loss, error, metrics.hamiltonian_gain, metrics.augmented_gain]
        return jnp.stack(values).astype(jnp.float32)

    as_layers = layer_sequence_fn(config, num_classes)

    def step(state: TrainState, images: jax.Array, labels: jax.Array) -> TrainState:
        layers = as_layers(state.params)
        msa_state = msa.MSAState(layers, state.step, jax.random.wrap_key_data(state.key))
        msa_state, metrics = opt.step(msa_state, (images, labels))
        return TrainState(
            state.step + 1,
            msa_state.params,
            state.model_state,
            state.opt_state,
            jax.random.key_data(msa_state.key),
            state.epoch_sums + sums(metrics, labels),
        )

    return step


def train_emsa(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    data: DataArrays | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
    log: Callable[[str], None] = print,
    canonical_convolutions: bool | None = None,
) -> list[dict[str, Any]]:
    """Trains ``config`` (``optimizer.name == "emsa"``) with E-MSA into ``run_dir``.

    The run directory and its semantics are those of :func:`relaxjax.train.train`:
    ``config.json``, ``metrics.jsonl`` (one record per effective epoch of ``N // B``
    iterations: step, effective_epochs, gradient_evaluations, train_loss,
    train_error, test_loss, test_error, seconds, examples_per_second, plus the
    epoch means of μ_k (``hamiltonian_gain``) and of the augmented gain), orbax
    checkpoints at epoch ends and on interruption, and an exact ``resume``.

    Args:
      config: the run; ``config.optimizer`` holds ρ (``msa_rho``), the inner
        optimizer and its steps (``msa_inner_optimizer``, ``msa_inner_steps``,
        ``msa_inner_lr``), ``msa_init_noise`` and ``msa_penalty``.
      run_dir: the run directory.
      resume: continue from the latest checkpoint in ``run_dir``.
      data: preloaded data (default: ``relaxjax.train.load_data(config)``).
      progress: show a progress bar.
      stop_after_steps: stop (with a checkpoint) after this many iterations in
        total, as if interrupted.
      log: where to print messages.
      canonical_convolutions: CPU speed-ups (module doc); default on CPU.
    """
    check_emsa_config(config)
    opt = make_emsa(config, canonical_convolutions=canonical_convolutions)  # validates ρ etc.
    run_dir = Path(run_dir)
    runs.check_run_dir(config, run_dir, resume)  # before anything is loaded or written
    data = data if data is not None else inputs.load_data(config)
    n_train = len(data.train_labels)
    steps_per_epoch = n_train // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"{n_train} training examples are fewer than one batch ({config.batch_size})"
        )
    total_steps = max(1, round(config.epochs * steps_per_epoch))

    model = layer_model(config.model, num_classes=data.num_classes)
    # Committed to the device like restored checkpoints, so that a run resumed in the same
    # process reuses the compiled maximisation.
    state = jax.device_put(_initial_state(config, model, data.train_images[:1]), jax.devices()[0])
    step_fn = _make_step(config, opt, data.num_classes)
    batch_fn = _make_batch_fn(config.batch_size)
    evaluate = steps.make_eval_fn(model, config.eval_batch_size)

    def one_step(state: TrainState, perm: jax.Array, step_in_epoch: int):
        images, labels = batch_fn(data.train_images, data.train_labels, perm, step_in_epoch)
        return step_fn(state, images, labels), None

    def epoch_end(state: TrainState, step: int, seconds: float, steps_timed: int):
        return _epoch_record(
            config, state, step, steps_per_epoch, seconds, steps_timed, evaluate, data
        )

    with runs.run_lock(run_dir):
        state, run_checkpoints = loop.open_run(config, run_dir, state, resume, total_steps, log)
        return loop.run_epochs(
            state,
            one_step,
            epoch_end,
            run_dir=run_dir,
            checkpoints=run_checkpoints,
            seed=config.seed,
            n_train=n_train,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            examples_per_step=config.batch_size,
            progress=progress,
            stop_after_steps=stop_after_steps,
            log=log,
        )


def _epoch_record(
    config: TrainConfig,
    state: TrainState,
    step: int,
    steps_per_epoch: int,
    seconds: float,
    steps_timed: int,
    evaluate: Callable,
    data: DataArrays,
) -> tuple[TrainState, dict[str, Any]]:
    """The ``metrics.jsonl`` record at an epoch end; resets the epoch's running sums."""
    steps_in_epoch = step - (step - 1) // steps_per_epoch * steps_per_epoch
    means = dict(zip(_SUMS, (np.asarray(state.epoch_sums) / steps_in_epoch).tolist(), strict=True))
    state = state._replace(epoch_sums=jnp.zeros_like(state.epoch_sums))
    runs.fault_point("evaluation", step)
    test_loss, test_error = evaluate(
        state.params, state.model_state, data.test_images, data.test_labels
    )
    record = {
        "step": step,
        "effective_epochs": step / steps_per_epoch,
        "gradient_evaluations": step,
        "train_loss": means["train_loss"],
        "train_error": means["train_error"],
        "test_loss": test_loss,
        "test_error": test_error,
        "gamma": None,
        "rho": float(config.optimizer.msa_rho),
        "hamiltonian_gain": means["hamiltonian_gain"],
        "augmented_gain": means["augmented_gain"],
        "seconds": seconds,
        "examples_per_second": steps_timed * config.batch_size / seconds,
    }
    return state, record


# --------------------------------------------------------------------------- dispatch


def handles(config: TrainConfig) -> bool:
    """Whether :func:`run` (not ``relaxjax.train.train`` alone) must train ``config``."""
    return config.optimizer.name == "emsa" or config.model in EMSA_MODELS


def run(config: TrainConfig, run_dir: str | os.PathLike, **kwargs: Any) -> list[dict[str, Any]]:
    """``relaxjax train`` for E-MSA runs and for the ``msa-*`` models with other optimizers.

    E-MSA -> :func:`train_emsa`; another optimizer on an ``msa-*`` model ->
    :func:`relaxjax.train.train` with the model as a :class:`FunctionalModel`
    (same initial parameters as E-MSA for the same seed).
    """
    if config.optimizer.name == "emsa":
        return train_emsa(config, run_dir, **kwargs)
    data = kwargs.pop("data", None)
    if data is None:
        data = inputs.load_data(config)
    model = layer_model(config.model, num_classes=data.num_classes)
    return loop.train(config, run_dir, model=model, data=data, **kwargs)
