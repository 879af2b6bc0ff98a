"""Command line: ``relaxjax train`` and ``relaxjax plot`` (also ``python -m relaxjax``)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from relaxjax.train.config import INPUT_SCALINGS
from relaxjax.train.optimizers import (
    INNER_SGD_RELAXATIONS,
    OPTIMIZERS,
    RELAXATIONS,
    OptimizerConfig,
)

EXIT_DIVERGED = 1
"""Exit status of ``relaxjax train`` when the loss or the state became non-finite."""
EXIT_ERROR = 2
"""Exit status of a bad command line, missing data or a run directory that cannot be used."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``PROG: error: MESSAGE``), exit 2."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Number:
    """An argparse ``type`` for numeric options: an int or a finite float within bounds.

    Args:
      kind: ``int`` or ``float``.
      low: the smallest value allowed (None: no bound).
      high: the largest value allowed (None: no bound).
      low_open: exclude ``low`` itself.
      high_open: exclude ``high`` itself.

    Example:
      >>> from relaxjax.train.cli import Number
      >>> positive = Number(float, 0, low_open=True)
      >>> positive("0.5"), positive.accepts("0"), positive.accepts("nan")
      (0.5, False, False)
      >>> positive.description
      'a finite number > 0'
    """

    def __init__(self, kind=float, low=None, high=None, *, low_open=False, high_open=False):
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open = low_open, high_open
        what = "an integer" if kind is int else "a finite number"
        if low is not None and high is not None:
            brackets = ("(" if low_open else "[", ")" if high_open else "]")
            self.description = f"{what} in {brackets[0]}{low:g}, {high:g}{brackets[1]}"
        elif low is not None:
            self.description = f"{what} {'>' if low_open else '>='} {low:g}"
        else:
            self.description = what
        self.__name__ = self.description  # argparse names the type in some messages

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {self.description}, got {text!r}") from None
        bad = (
            (self.kind is float and not math.isfinite(value))
            or (
                self.low is not None and (value < self.low or (self.low_open and value == self.low))
            )
            or (
                self.high is not None
                and (value > self.high or (self.high_open and value == self.high))
            )
        )
        if bad:
            raise argparse.ArgumentTypeError(f"expected {self.description}, got {text!r}")
        return value

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is a valid value."""
        try:
            self(text)
        except argparse.ArgumentTypeError:
            return False
        return True


POSITIVE = Number(float, 0, low_open=True)
NON_NEGATIVE = Number(float, 0)
FRACTION = Number(float, 0, 1, high_open=True)  # momenta, running-average weight
COUNT = Number(int, 1)
INT_NON_NEGATIVE = Number(int, 0)
SEED = Number(int, 0, 2**32 - 1)

FLAG_FIELDS = {
    # dest -> TrainConfig field; "optimizer.X" for OptimizerConfig fields
    "model": "model",
    "dataset": "dataset",
    "optimizer": "optimizer.name",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "optimizer.lr",
    "lr_decay": "optimizer.lr_decay",
    "lr_milestones": "optimizer.lr_milestones",
    "momentum": "optimizer.momentum",
    "weight_decay": "optimizer.weight_decay",
    "num_steps": "optimizer.num_steps",
    "gamma": "optimizer.gamma",
    "scoping": "optimizer.scoping",
    "step_size": "optimizer.step_size",
    "noise": "optimizer.noise",
    "alpha": "optimizer.alpha",
    "inner_momentum": "optimizer.inner_momentum",
    "inner_momentum_buffer": "optimizer.inner_momentum_buffer",
    "replicas": "optimizer.replicas",
    "elastic_rho": "optimizer.elastic_rho",
    "elastic_rho_max": "optimizer.elastic_rho_max",
    "gamma_min": "optimizer.gamma_min",
    "devices": "devices",
    "seed": "seed",
    "augment": "augment",
    "zca": "zca",
    "input_scaling": "input_scaling",
    "data_dir": "data_dir",
    "train_limit": "train_limit",
    "test_limit": "test_limit",
    "refresh_batches": "refresh_batches",
    "rho": "optimizer.msa_rho",
    "inner_steps": "optimizer.msa_inner_steps",
    "msa_inner_optimizer": "optimizer.msa_inner_optimizer",
    "msa_inner_lr": "optimizer.msa_inner_lr",
    "msa_init_noise": "optimizer.msa_init_noise",
    "msa_penalty": "optimizer.msa_penalty",
}
"""The configuration field each option of ``relaxjax train`` sets (the others, such as
``--run-dir``, ``--resume`` and ``--no-progress``, are not part of the run)."""

_GRADIENT_METHODS = tuple(name for name in OPTIMIZERS if name != "emsa")
FLAG_OPTIMIZERS = {
    "lr": _GRADIENT_METHODS,
    "lr_decay": _GRADIENT_METHODS,
    "lr_milestones": _GRADIENT_METHODS,
    "momentum": tuple(name for name in _GRADIENT_METHODS if name != "adam"),
    "num_steps": RELAXATIONS,
    "gamma": RELAXATIONS,
    "scoping": RELAXATIONS,
    "step_size": RELAXATIONS,
    "alpha": tuple(name for name in RELAXATIONS if name != "heat"),  # heat: uniform
    "noise": tuple(name for name in RELAXATIONS if name != "hj"),
    "inner_momentum": INNER_SGD_RELAXATIONS,
    "inner_momentum_buffer": INNER_SGD_RELAXATIONS,
    "replicas": ("parle",),
    "elastic_rho": ("parle",),
    "elastic_rho_max": ("parle",),
    "gamma_min": ("parle",),
    **dict.fromkeys(
        ("rho", "inner_steps", "msa_inner_optimizer", "msa_inner_lr", "msa_init_noise"), ("emsa",)
    ),
    "msa_penalty": ("emsa",),
}
"""The optimizers that use each optimizer-specific option; giving one to another
optimizer is an error (it would be ignored)."""


def model_names() -> tuple[str, ...]:
    """``--model`` choices: the model registry's networks and E-MSA's layer sequences."""
    from relaxjax.models import MODELS
    from relaxjax.train.emsa import EMSA_MODELS

    return (*MODELS, *EMSA_MODELS)


def dataset_names() -> tuple[str, ...]:
    """``--dataset`` choices: the data-set registry's named sets (not ``imagefolder``,
    which needs a path)."""
    from relaxjax.data import DATASETS

    return tuple(name for name, info in DATASETS.items() if info.num_classes is not None)


def _default_data_dir() -> str | None:
    """The shared data folder beside a checkout (``../shared/data``), if there is one."""
    if os.environ.get("RELAXJAX_DATA_DIR"):
        return None
    checkout = Path(__file__).resolve().parents[2]
    for candidate in (checkout.parent / "shared" / "data", Path.cwd() / "data"):
        if candidate.is_dir():
            return str(candidate)
    return None


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a network of the paper",
        description="Train a network of Deep Relaxation with SGD, Adam, Entropy-SGD, "
        "Entropy-Adam, HJ or HEAT. Budgets are in effective epochs (passes of gradient "
        "evaluations over the training set).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model", choices=model_names(), default=None, help="[mnistfc on MNIST, allcnn on CIFAR]"
    )
    p.add_argument("--dataset", choices=dataset_names(), default="mnist")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="entropy-sgd")
    p.add_argument("--epochs", type=POSITIVE, default=None, help="effective epochs [5]")
    p.add_argument("--batch-size", type=COUNT, default=128)
    p.add_argument(
        "--lr",
        type=POSITIVE,
        default=None,
        help="outer learning rate [sgd 0.1, adam 1e-3, relaxations 1.0 on x - mu, "
        "i.e. lr*gamma on the relaxed gradient (x - mu)/gamma]",
    )
    p.add_argument("--lr-decay", type=POSITIVE, default=0.2, help="factor at each milestone")
    p.add_argument(
        "--lr-milestones",
        type=NON_NEGATIVE,
        nargs="*",
        default=None,
        help="effective epochs at which lr is multiplied by --lr-decay [50%% and 75%% of --epochs]",
    )
    p.add_argument("--momentum", type=FRACTION, default=0.9, help="outer Nesterov momentum")
    p.add_argument(
        "--weight-decay",
        type=NON_NEGATIVE,
        default=None,
        help="L2 coefficient [MNIST 0, CIFAR 1e-3]",
    )
    p.add_argument(
        "-L", "--num-steps", type=COUNT, default=None, help="inner steps L [20; heat 100]"
    )
    p.add_argument(
        "--gamma",
        type=POSITIVE,
        default=None,
        help="initial scope gamma_0 (PDE time) = 1/coupling of the original code "
        "[MNIST 1e4, CIFAR 1/0.03; heat 0.1]",
    )
    p.add_argument(
        "--scoping",
        type=NON_NEGATIVE,
        default=None,
        help="coupling growth per outer step: gamma_t = gamma_0 (1 + scoping)^-t [1e-3; heat 0]",
    )
    p.add_argument(
        "--step-size", type=POSITIVE, default=None, help="inner step eta' [0.1; entropy-adam 1e-3]"
    )
    p.add_argument(
        "--noise",
        type=NON_NEGATIVE,
        default=None,
        help="Langevin noise (temperature noise^2) [1e-4; hj and parle 0]",
    )
    p.add_argument("--alpha", type=FRACTION, default=0.75, help="running-average weight")
    p.add_argument(
        "--inner-momentum",
        type=FRACTION,
        default=0.0,
        help="Nesterov momentum of the inner steps (entropy-sgd, hj, heat; the authors' "
        "code: 0.9) [0: plain inner SGD, the papers' algorithm]",
    )
    p.add_argument(
        "--inner-momentum-buffer",
        choices=("reset", "keep"),
        default="reset",
        help="with --inner-momentum: reset = zeroed at every outer step, as the authors' "
        "Entropy-SGD code (Lua, PyTorch), whose settings the defaults follow; keep = one "
        "buffer for the whole run, as their Deep Relaxation research code",
    )
    p.add_argument("--replicas", type=COUNT, default=None, help="parle: number of replicas n [3]")
    p.add_argument(
        "--elastic-rho",
        type=NON_NEGATIVE,
        default=None,
        help="parle: initial elastic coupling rho_0 on x - x_ref, grown like the inner "
        "coupling by --scoping [0.001 * L * replicas]",
    )
    p.add_argument("--elastic-rho-max", type=NON_NEGATIVE, default=1.0, help="parle: cap on rho")
    p.add_argument(
        "--gamma-min", type=POSITIVE, default=1.0, help="parle: floor on the scope gamma"
    )
    p.add_argument(
        "--devices",
        type=COUNT,
        default=None,
        help="run on a mesh of the first N devices: batches split over them (data "
        "parallel), parle replicas on their own devices [unsharded, default device]",
    )
    _distributed_arguments(p)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=None, help="[CIFAR only]"
    )
    p.add_argument(
        "--zca", action=argparse.BooleanOptionalAction, default=None, help="[CIFAR only]"
    )
    p.add_argument(
        "--input-scaling",
        choices=INPUT_SCALINGS,
        default="channel",
        help="without ZCA: channel = per-channel standardisation; lua = (x - 126)/126, the "
        "Lua Entropy-SGD code's MNIST scaling [channel]",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="where the data set is looked for first (then $RELAXJAX_DATA_DIR, the cache, "
        "a download) [../shared/data beside a checkout, if present]",
    )
    p.add_argument("--run-dir", default=None, help="[runs/DATASET-MODEL-OPTIMIZER-sSEED]")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir with its saved configuration; an option given "
        "must equal the saved setting, except --epochs and --data-dir",
    )
    p.add_argument("--train-limit", type=COUNT, default=None, help="use the first N examples")
    p.add_argument("--test-limit", type=COUNT, default=None, help="use the first N test examples")
    p.add_argument(
        "--refresh-batches",
        type=INT_NON_NEGATIVE,
        default=50,
        help="re-estimate BatchNorm statistics from N training batches with dropout off before "
        "each evaluation, as the original code does (0: off)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--compilation-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep compiled programs in JAX's persistent compilation cache, so a later start "
        "skips most compilation [on, unless $RELAXJAX_NO_COMPILATION_CACHE=1]",
    )
    p.add_argument(
        "--compilation-cache-dir",
        default=None,
        help="the compilation cache's folder [$RELAXJAX_COMPILATION_CACHE_DIR, else "
        "jax-compilation/ in relaxjax's cache directory]",
    )
    _emsa_arguments(p)
    p.set_defaults(command=_train)


def _distributed_arguments(p: argparse.ArgumentParser) -> None:
    """Options joining several processes (one per host) into one run (``jax.distributed``)."""
    g = p.add_argument_group(
        "several processes (one per host; relaxjax.train.distributed, docs/cli.md section 1.6)"
    )
    g.add_argument(
        "--coordinator-address",
        default=None,
        metavar="HOST:PORT",
        help="process 0's address and a free port [$JAX_COORDINATOR_ADDRESS]",
    )
    g.add_argument(
        "--num-processes",
        type=COUNT,
        default=None,
        help="processes in the run [$JAX_NUM_PROCESSES]",
    )
    g.add_argument(
        "--process-id",
        type=INT_NON_NEGATIVE,
        default=None,
        help="this process's number, 0 ... N-1 [$JAX_PROCESS_ID]",
    )
    g.add_argument(
        "--distributed",
        action="store_true",
        help="join the processes of a Slurm, Open MPI or Cloud TPU job, which JAX finds itself",
    )


def _emsa_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``--optimizer emsa`` (E-MSA, Li et al., JMLR 2018; ``relaxjax.train.emsa``)."""
    g = p.add_argument_group(
        "E-MSA (--optimizer emsa; models msa-resnet, msa-resnet-tiny; Li et al., JMLR 2018)"
    )
    g.add_argument(
        "--rho",
        type=NON_NEGATIVE,
        default=0.03,
        help="penalty rho of the augmented Hamiltonian, 0 = basic MSA [the authors' MNIST code]",
    )
    g.add_argument(
        "--inner-steps", type=COUNT, default=10, help="inner iterations per layer (paper: 10)"
    )
    g.add_argument(
        "--msa-inner-optimizer",
        choices=("lbfgs", "adam", "sgd"),
        default="lbfgs",
        help="per-layer Hamiltonian maximiser (paper: L-BFGS)",
    )
    g.add_argument("--msa-inner-lr", type=POSITIVE, default=0.01, help="inner adam/sgd rate")
    g.add_argument(
        "--msa-init-noise", type=NON_NEGATIVE, default=0.0, help="U(-a, a) noise on inner starts"
    )
    g.add_argument(
        "--msa-penalty",
        choices=("sum", "mean"),
        default="sum",
        help="penalties summed over batch and features (paper) or per sample",
    )


def _with_emsa(optimizer: OptimizerConfig, args: argparse.Namespace) -> OptimizerConfig:
    """``optimizer`` with the E-MSA options of ``args`` (``--optimizer emsa`` only)."""
    if args.optimizer != "emsa":
        return optimizer
    return dataclasses.replace(
        optimizer,
        msa_rho=args.rho,
        msa_inner_optimizer=args.msa_inner_optimizer,
        msa_inner_steps=args.inner_steps,
        msa_inner_lr=args.msa_inner_lr,
        msa_init_noise=args.msa_init_noise,
        msa_penalty=args.msa_penalty,
    )


def config_from_args(args: argparse.Namespace):
    """The ``TrainConfig`` of parsed ``train`` arguments: the preset of the data set and
    optimizer (``relaxjax.train.presets``) with every option given on the command line."""
    from relaxjax.train import presets

    parle = args.optimizer == "parle"
    given = {
        "lr": args.lr,
        "lr_milestones": None if args.lr_milestones is None else tuple(args.lr_milestones),
        "weight_decay": args.weight_decay,
        "gamma": args.gamma,
        "step_size": args.step_size,
        "noise": None if args.optimizer == "hj" else args.noise,  # HJ is noise-free
        "elastic_rho": args.elastic_rho if parle else None,
        "replicas": args.replicas,
        "num_steps": args.num_steps,
        "scoping": args.scoping,
    }
    optimizer = {k: v for k, v in given.items() if v is not None}
    config = presets.preset(
        args.dataset,
        args.optimizer,
        model=args.model,
        epochs=5.0 if args.epochs is None else args.epochs,
        lr_decay=args.lr_decay,
        momentum=args.momentum,
        alpha=args.alpha,
        inner_momentum=args.inner_momentum,
        inner_momentum_buffer=args.inner_momentum_buffer,
        elastic_rho_max=args.elastic_rho_max,
        gamma_min=args.gamma_min,
        batch_size=args.batch_size,
        seed=args.seed,
        augment=args.augment,
        zca=args.zca,
        input_scaling=args.input_scaling,
        data_dir=args.data_dir if args.data_dir is not None else _default_data_dir(),
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        devices=args.devices,
        refresh_batches=args.refresh_batches,
        **optimizer,
    )
    return dataclasses.replace(config, optimizer=_with_emsa(config.optimizer, args))


def _option(dest: str) -> str:
    """The long option string of ``dest`` (``num_steps`` -> ``--num-steps``)."""
    return "--" + dest.replace("_", "-")


def _field(config, path: str):
    value = config
    for name in path.split("."):
        value = getattr(value, name)
    return value


def check_options(optimizer: str, given: set[str], args: argparse.Namespace) -> None:
    """Refuses options that ``optimizer`` would ignore (``FLAG_OPTIMIZERS``).

    Args:
      optimizer: the run's optimizer.
      given: the options given on the command line (their ``dest`` names).
      args: the parsed arguments.

    Raises:
      ValueError: naming the first option given that ``optimizer`` ignores.

    Example:
      >>> from relaxjax.train import cli
      >>> args = cli.build_parser().parse_args(["train", "--inner-steps", "3"])
      >>> cli.check_options("entropy-sgd", {"inner_steps"}, args)
      Traceback (most recent call last):
      ...
      ValueError: --inner-steps applies to --optimizer emsa only; entropy-sgd would ignore it
    """
    for dest in sorted(given):
        users = FLAG_OPTIMIZERS.get(dest)
        if users is not None and optimizer not in users:
            raise ValueError(
                f"{_option(dest)} applies to --optimizer {', '.join(users)} only; {optimizer} "
                "would ignore it"
            )
    if optimizer == "emsa" and "msa_inner_lr" in given and args.msa_inner_optimizer == "lbfgs":
        raise ValueError(
            "--msa-inner-lr is the rate of --msa-inner-optimizer adam or sgd; lbfgs would ignore it"
        )


def resumed_config(args: argparse.Namespace, given: set[str], saved):
    """The configuration of ``--resume``: the saved one, with the options given checked.

    Options not given are taken from the run's ``config.json``; a given option must
    equal the saved setting, except ``--epochs`` (the budget) and ``--data-dir``,
    which change it.

    Args:
      args: the parsed ``train`` arguments.
      given: the options given on the command line (their ``dest`` names).
      saved: the run's saved ``TrainConfig``.

    Returns:
      The ``TrainConfig`` to continue with.

    Raises:
      ValueError: listing every given option that differs from the saved run.

    Example:
      >>> from relaxjax.train import cli, presets
      >>> saved = presets.mnist("hj", model="lenet", epochs=3)
      >>> args = cli.build_parser().parse_args(["train", "--epochs", "6"])
      >>> config = cli.resumed_config(args, {"epochs"}, saved)
      >>> config.model, config.optimizer.name, config.epochs, config.optimizer.lr_milestones
      ('lenet', 'hj', 6.0, (1.5, 2.25))
    """
    from relaxjax.train.runs import CHANGEABLE_ON_RESUME

    namespace = argparse.Namespace(**vars(args))
    for dest in ("model", "dataset", "optimizer"):
        if dest not in given:
            setattr(namespace, dest, _field(saved, FLAG_FIELDS[dest]))
    candidate = config_from_args(namespace)
    changes, differences = {}, []
    for dest in sorted(given):
        path = FLAG_FIELDS.get(dest)
        if path is None:
            continue
        new, old = _field(candidate, path), _field(saved, path)
        if new == old:
            continue
        if path in CHANGEABLE_ON_RESUME:
            changes[path] = new
        else:
            differences.append(f"{_option(dest)} {new!r} (saved: {old!r})")
    if differences:
        raise ValueError(
            "--resume continues the saved run, whose configuration these options would change "
            f"(only --epochs and --data-dir may): {'; '.join(differences)}; leave them out"
        )
    return dataclasses.replace(saved, **changes)


def _train(args: argparse.Namespace) -> int:
    from relaxjax.train.compilation_cache import apply_cache_options

    apply_cache_options(args.compilation_cache, args.compilation_cache_dir)
    given = getattr(args, "given", set())
    run_dir = args.run_dir
    try:
        _join_processes(args)
        if args.resume:
            from relaxjax.train.runs import read_config

            if run_dir is None:
                run_dir = _default_run_dir(config_from_args(args))
            if not (Path(run_dir) / "config.json").exists():
                raise ValueError(f"--resume: {run_dir} holds no run to resume (no config.json)")
            config = resumed_config(args, given, read_config(Path(run_dir)))
        else:
            config = config_from_args(args)
        check_options(config.optimizer.name, given, args)
    except ValueError as error:
        return _error(error)
    run_dir = run_dir or _default_run_dir(config)
    from relaxjax.train.emsa import handles
    from relaxjax.train.emsa import run as train_emsa_or_msa_model

    if handles(config) and _processes() > 1:
        return _error(ValueError("--optimizer emsa and the msa models run in one process"))
    train = train_emsa_or_msa_model if handles(config) else _plain_train()
    opt = config.optimizer
    print(
        f"relaxjax train: {config.model} on {config.dataset} with {opt.name}"
        f" ({'L=' + str(opt.num_steps) if opt.name in RELAXATIONS else ''}"
        f"{f' x {opt.replicas} replicas' if opt.name == 'parle' else ''}"
        f" {config.epochs:g} effective epochs) -> {run_dir}"
        f"{' (resumed)' if args.resume else ''}"
    )
    return _run(train, config, run_dir, args)


def _join_processes(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` from the options (before any JAX computation)."""
    from relaxjax.train import distributed

    try:
        joined = distributed.initialize(
            args.coordinator_address, args.num_processes, args.process_id, auto=args.distributed
        )
    except RuntimeError as error:  # no coordinator, a timeout: a usage error here
        raise ValueError(f"could not join the other processes: {error}") from None
    if joined and not distributed.is_writer():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - process 0 prints; errors still do


def _processes() -> int:
    import jax

    return jax.process_count()


def _plain_train():
    from relaxjax.train import train

    return train


def _default_run_dir(config) -> str:
    return os.path.join(
        "runs", f"{config.dataset}-{config.model}-{config.optimizer.name}-s{config.seed}"
    )


def _error(error: BaseException, status: int = EXIT_ERROR) -> int:
    message = str(error).strip().replace("\n", " ") or type(error).__name__
    print(f"relaxjax train: error: {message}", file=sys.stderr)
    return status


def _run(train, config, run_dir: str, args: argparse.Namespace) -> int:
    """Runs ``train`` and turns every outcome into a message and an exit status."""
    from relaxjax.data import DataError
    from relaxjax.train.loop import TrainingDiverged, TrainingInterrupted

    try:
        metrics = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    except TrainingInterrupted as stop:
        return 128 + stop.signum  # the loop said where it stopped and how to continue
    except KeyboardInterrupt:
        print(
            f"relaxjax train: stopped at once; {run_dir} keeps its last checkpoint (continue "
            "with --resume), or nothing if the run had not started",
            file=sys.stderr,
        )
        return 130
    except TrainingDiverged as error:
        return _error(error, EXIT_DIVERGED)
    except (DataError, ValueError, OSError) as error:
        return _error(error)
    except Exception as error:  # a bug: one line, the traceback on request
        if os.environ.get("RELAXJAX_TRACEBACK"):
            raise
        return _error(
            RuntimeError(
                f"unexpected {type(error).__name__}: {error} (set RELAXJAX_TRACEBACK=1 for the "
                "traceback, and please report it)"
            )
        )
    if metrics:
        last = metrics[-1]
        print(
            f"done: test error {100 * last['test_error']:.2f}% after "
            f"{last['effective_epochs']:.2f} effective epochs; metrics in "
            f"{os.path.join(run_dir, 'metrics.jsonl')}"
        )
    return 0


def _plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="plot a metric against effective epochs for run directories: one panel per "
        "model, one colour per optimizer, the mean over seeds with its min-max band",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("-o", "--output", default="runs.png", help="PNG file to write")
    p.add_argument(
        "--metric",
        default="test_error",
        choices=("test_error", "train_error", "test_loss", "train_loss"),
    )
    p.set_defaults(command=_plot)


def _plot(args: argparse.Namespace) -> int:
    from relaxjax.plots.curves import plot_runs
    from relaxjax.train.runs import iterate_runs

    for run_dir in args.run_dirs:
        if not (Path(run_dir) / "metrics.jsonl").exists():
            print(f"relaxjax plot: error: {run_dir} has no metrics.jsonl", file=sys.stderr)
            return 2
    try:
        runs = list(iterate_runs(args.run_dirs))
    except ValueError as error:
        print(f"relaxjax plot: error: {error}", file=sys.stderr)
        return 2
    plot_runs(runs, output=args.output, metric=args.metric)
    print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``relaxjax`` argument parser (sub-commands ``train`` and ``plot``).

    Returns:
      The parser; its errors are one line (``relaxjax train: error: ...``), exit status 2.

    Example:
      >>> from relaxjax.train import cli
      >>> cli.build_parser().parse_args(["train", "--epochs", "2"]).epochs
      2.0
    """
    parser = _Parser(prog="relaxjax", description="PDE-based relaxation optimizers for JAX.")
    sub = parser.add_subparsers(dest="name", metavar="COMMAND")
    _train_parser(sub)
    _plot_parser(sub)
    return parser


def given_options(argv: Sequence[str]) -> set[str]:
    """The options of a ``relaxjax train`` command line that were given (``dest`` names).

    Args:
      argv: the command line, without the program name.

    Returns:
      The ``dest`` of every option given, whatever its value.

    Example:
      >>> from relaxjax.train import cli
      >>> sorted(cli.given_options(["train", "--epochs", "2", "-L", "5", "--resume"]))
      ['epochs', 'num_steps', 'resume']
    """
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices["train"]._actions:
        if action.dest != "help":
            action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"name", "command"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relaxjax`` command; returns the exit status.

    Args:
      argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
      0 when done; 1 when training diverged; 2 for a bad command line, missing data or a
      run directory that cannot be used; 128 + the signal's number when a signal stopped
      the run (130 for Ctrl-C), its state checkpointed.

    Example:
      >>> from relaxjax.train import cli
      >>> cli.main(["train", "--epochs", "0"])
      2
    """
    from relaxjax.cpu.xla_flags import apply_cpu_settings

    apply_cpu_settings()  # before any JAX computation starts the backend
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse's --help (0) or a usage error (2)
        return stop.code if isinstance(stop.code, int) else EXIT_ERROR
    if not hasattr(args, "command"):
        parser.print_help()
        return 2
    if args.name == "train":
        args.given = given_options(argv)
    return args.command(args)


if __name__ == "__main__":
    sys.exit(main())
