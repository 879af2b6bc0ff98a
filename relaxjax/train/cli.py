"""Command line: ``relaxjax train`` and ``relaxjax plot`` (also ``python -m relaxjax``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from relaxjax.train.optimizers import OPTIMIZERS, RELAXATIONS, OptimizerConfig


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
        "Entropy-Adam or HJ. Budgets are in effective epochs (passes of gradient "
        "evaluations over the training set).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model", choices=model_names(), default=None, help="[mnistfc on MNIST, allcnn on CIFAR]"
    )
    p.add_argument("--dataset", choices=dataset_names(), default="mnist")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="entropy-sgd")
    p.add_argument("--epochs", type=float, default=None, help="effective epochs [5]")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="outer learning rate [sgd 0.1, adam 1e-3, relaxations 1.0 on x - mu, "
        "i.e. lr*gamma on the relaxed gradient (x - mu)/gamma]",
    )
    p.add_argument("--lr-decay", type=float, default=0.2, help="factor at each milestone")
    p.add_argument(
        "--lr-milestones",
        type=float,
        nargs="*",
        default=None,
        help="effective epochs at which lr is multiplied by --lr-decay [50%% and 75%% of --epochs]",
    )
    p.add_argument("--momentum", type=float, default=0.9, help="outer Nesterov momentum")
    p.add_argument(
        "--weight-decay", type=float, default=None, help="L2 coefficient [MNIST 0, CIFAR 1e-3]"
    )
    p.add_argument("-L", "--num-steps", type=int, default=20, help="inner steps L")
    p.add_argument(
        "--gamma",
        type=float,
        default=None,
        help="initial scope gamma_0 (PDE time) = 1/coupling of the original code "
        "[MNIST 1e4, CIFAR 1/0.03]",
    )
    p.add_argument(
        "--scoping",
        type=float,
        default=1e-3,
        help="coupling growth per outer step: gamma_t = gamma_0 (1 + scoping)^-t",
    )
    p.add_argument(
        "--step-size", type=float, default=None, help="inner step eta' [0.1; entropy-adam 1e-3]"
    )
    p.add_argument(
        "--noise",
        type=float,
        default=None,
        help="Langevin noise (temperature noise^2) [1e-4; hj and parle 0]",
    )
    p.add_argument("--alpha", type=float, default=0.75, help="running-average weight")
    p.add_argument(
        "--inner-momentum",
        type=float,
        default=0.0,
        help="Nesterov momentum of the inner steps, kept across outer steps (entropy-sgd, hj; "
        "the authors' PyTorch code: 0.9) [0: plain inner SGD, the papers' algorithm]",
    )
    p.add_argument("--replicas", type=int, default=None, help="parle: number of replicas n [3]")
    p.add_argument(
        "--elastic-rho",
        type=float,
        default=None,
        help="parle: initial elastic coupling rho_0 on x - x_ref, grown like the inner "
        "coupling by --scoping [0.001 * L * replicas]",
    )
    p.add_argument("--elastic-rho-max", type=float, default=1.0, help="parle: cap on rho")
    p.add_argument("--gamma-min", type=float, default=1.0, help="parle: floor on the scope gamma")
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        help="run on a mesh of the first N devices: batches split over them (data "
        "parallel), parle replicas on their own devices [unsharded, default device]",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=None, help="[CIFAR only]"
    )
    p.add_argument(
        "--zca", action=argparse.BooleanOptionalAction, default=None, help="[CIFAR only]"
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="where the data set is looked for first (then $RELAXJAX_DATA_DIR, the cache, "
        "a download) [../shared/data beside a checkout, if present]",
    )
    p.add_argument("--run-dir", default=None, help="[runs/DATASET-MODEL-OPTIMIZER-sSEED]")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--train-limit", type=int, default=None, help="use the first N examples")
    p.add_argument("--test-limit", type=int, default=None, help="use the first N test examples")
    p.add_argument(
        "--refresh-batches",
        type=int,
        default=50,
        help="re-estimate BatchNorm statistics from N training batches with dropout off before "
        "each evaluation, as the original code does (0: off)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _emsa_arguments(p)
    p.set_defaults(command=_train)


def _emsa_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``--optimizer emsa`` (E-MSA, Li et al., JMLR 2018; ``relaxjax.train.emsa``)."""
    g = p.add_argument_group(
        "E-MSA (--optimizer emsa; models msa-resnet, msa-resnet-tiny; Li et al., JMLR 2018)"
    )
    g.add_argument(
        "--rho",
        type=float,
        default=0.03,
        help="penalty rho of the augmented Hamiltonian, 0 = basic MSA [the authors' MNIST code]",
    )
    g.add_argument(
        "--inner-steps", type=int, default=10, help="inner iterations per layer (paper: 10)"
    )
    g.add_argument(
        "--msa-inner-optimizer",
        choices=("lbfgs", "adam", "sgd"),
        default="lbfgs",
        help="per-layer Hamiltonian maximiser (paper: L-BFGS)",
    )
    g.add_argument("--msa-inner-lr", type=float, default=0.01, help="inner adam/sgd rate")
    g.add_argument(
        "--msa-init-noise", type=float, default=0.0, help="U(-a, a) noise on inner starts"
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
    }
    optimizer = {k: v for k, v in given.items() if v is not None}
    config = presets.preset(
        args.dataset,
        args.optimizer,
        model=args.model,
        epochs=5.0 if args.epochs is None else args.epochs,
        lr_decay=args.lr_decay,
        momentum=args.momentum,
        num_steps=args.num_steps,
        scoping=args.scoping,
        alpha=args.alpha,
        inner_momentum=args.inner_momentum,
        elastic_rho_max=args.elastic_rho_max,
        gamma_min=args.gamma_min,
        batch_size=args.batch_size,
        seed=args.seed,
        augment=args.augment,
        zca=args.zca,
        data_dir=args.data_dir if args.data_dir is not None else _default_data_dir(),
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        devices=args.devices,
        refresh_batches=args.refresh_batches,
        **optimizer,
    )
    return dataclasses.replace(config, optimizer=_with_emsa(config.optimizer, args))


def _train(args: argparse.Namespace) -> int:
    from relaxjax.data import DataError
    from relaxjax.train import train

    config = config_from_args(args)
    from relaxjax.train.emsa import EMSA_MODELS

    if config.optimizer.name == "emsa" or config.model in EMSA_MODELS:
        from relaxjax.train.emsa import run as train  # E-MSA, or a layer-sequence model
    run_dir = args.run_dir or os.path.join(
        "runs", f"{config.dataset}-{config.model}-{config.optimizer.name}-s{config.seed}"
    )
    print(
        f"relaxjax train: {config.model} on {config.dataset} with {config.optimizer.name}"
        f" ({'L=' + str(config.optimizer.num_steps) if args.optimizer in RELAXATIONS else ''}"
        f"{f' x {config.optimizer.replicas} replicas' if args.optimizer == 'parle' else ''}"
        f" {config.epochs:g} effective epochs) -> {run_dir}"
    )
    try:
        metrics = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    except (DataError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"relaxjax train: error: {error}", file=sys.stderr)
        return 2
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
    plot_runs(iterate_runs(args.run_dirs), output=args.output, metric=args.metric)
    print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``relaxjax`` argument parser (sub-commands ``train`` and ``plot``)."""
    parser = argparse.ArgumentParser(
        prog="relaxjax", description="PDE-based relaxation optimizers for JAX."
    )
    sub = parser.add_subparsers(dest="name", metavar="COMMAND")
    _train_parser(sub)
    _plot_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relaxjax`` command; returns the exit status."""
    from relaxjax.cpu.xla_flags import apply_cpu_settings

    apply_cpu_settings()  # before any JAX computation starts the backend
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return 2
    return args.command(args)


if __name__ == "__main__":
    sys.exit(main())
