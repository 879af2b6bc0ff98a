"""The flatness benchmark: six optimizers at equal gradient evaluations, and the minima they find.

Trains ``mnistfc-dr`` and ``lenet-dr`` (the Deep Relaxation research code's MNIST
networks) from the same initialisations with

* ``sgd``: SGD with Nesterov momentum (``relaxjax train --optimizer sgd``);
* ``entropy-sgd``, ``hj``, ``heat``: the relaxations (``relaxjax train``'s
  ``entropy-sgd``, ``hj`` and ``heat``, i.e. ``relaxjax.entropy_sgd``, ``relaxjax.hj_sgd``
  and ``relaxjax.heat_sgd`` with the presets' settings, ``--inner-steps`` aside);
* ``sam``: ``optax.contrib.sam`` around the same Nesterov SGD (Foret et al., ICLR 2021);
* ``swa``: the same SGD with the SWA learning-rate recipe and the average of the
  iterates over the last part of the budget (Izmailov et al., UAI 2018), BatchNorm
  statistics re-estimated for the averaged weights,

every one for the same number of gradient evaluations: an effective epoch is N // B
mini-batch gradients (N training examples, batch B) for every method, an outer step of
a relaxation counts its L inner gradients and a SAM step counts 2. The four methods of
``relaxjax train`` run through ``relaxjax.train.train`` itself; SAM and SWA, whose
optimizers the command does not build, run through the same loop
(``relaxjax.train.run_epochs`` with ``make_train_step``, the same evaluation and
BatchNorm refresh), checked against ``train`` by the smoke test. For every final model
it measures the test error, the top eigenvalues of the training loss's Hessian
(``relaxjax.diagnostics.hessian_top_eigenvalues``) and the local-entropy gap
f_γ(x) − f(x) (``relaxjax.diagnostics.local_entropy_estimate``) on a fixed training
batch, and the wall-clock time per effective epoch, and writes
``benchmarks/results/flatness.md``, ``.json`` and ``.png``. The verdicts in the text
(which method wins where, where the relaxations do not help) are computed from the
numbers.

    python benchmarks/flatness.py --data-dir ../shared/data     # 3 seeds, full budgets
    python benchmarks/flatness.py --data-dir ../shared/data --epochs mnistfc-dr=3 lenet-dr=1
    python benchmarks/flatness.py --data-dir ../shared/data --inner-steps heat=10  # HEAT's L
    python benchmarks/flatness.py --smoke                        # tiny generated data
    python benchmarks/flatness.py --report-only                  # the report from the runs

Each finished run leaves its row in ``--runs-dir/<run>/row.json``; a rerun of the same
command skips the runs already finished (with the same settings), so an interrupted job
continues where it stopped, and the report is rewritten after every run (marked partial
until every run is in).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from relaxjax import diagnostics, models
from relaxjax.plots.curves import RunCurve, mean_over_seeds, optimizer_colors
from relaxjax.train import (
    DataArrays,
    TrainConfig,
    enable_compilation_cache,
    init_state,
    load_data,
    load_run_state,
    make_eval_fn,
    make_optimizer,
    make_statistics_refresh,
    make_train_step,
    presets,
    run_epochs,
    train,
)
from relaxjax.train.checkpoints import Checkpoints
from relaxjax.train.optimizers import INNER_SGD_RELAXATIONS, OptimizerConfig, outer_gamma

sys.path.insert(0, str(Path(__file__).parent))
from _env import (  # noqa: E402
    command_line,
    environment,
    provenance_lines,
    repo_relative,
    smoke_data,
    write_json,
)
from paper_table import HEAT_L10  # noqa: E402

MODELS = ("mnistfc-dr", "lenet-dr")
METHODS = ("sgd", "entropy-sgd", "hj", "heat", "sam", "swa")
PRESET_METHODS = ("sgd", "entropy-sgd", "hj", "heat")  # built by relaxjax train
RELAXATIONS = ("entropy-sgd", "hj", "heat")
DEFAULT_EPOCHS = {"mnistfc-dr": 120.0, "lenet-dr": 80.0}
"""The budgets in effective epochs: those at which both papers report Entropy-SGD on
mnistfc (120) and LeNet (80), for every method (docs/deep-relaxation.md §4)."""

SAM_RHO = 0.05
"""SAM's radius ρ: the SAM paper's default (Foret et al. 2021, §3 and App. C)."""
SWA_START = 0.55
"""SWA starts averaging after this fraction of the budget: the SWA paper's CIFAR recipes
start at epoch 126 of 225 (PreResNet-164) and 161 of 300 (WideResNet-28-10)."""
SWA_LR_RATIO = 0.5
"""The SWA learning rate over the initial one: 0.05 / 0.1 in those recipes."""
SWA_MIN_SNAPSHOTS = 20
"""Averaging once per effective epoch (the recipe) would leave a short budget with a few
snapshots; the average takes one every min(1 epoch, window / 20) instead."""

# The flatness measures: a fixed batch of training examples (the first ones), the network
# in inference mode. The local entropy at scope γ and temperature ε² of
# docs/diagnostics.md §4.3 (flatness shows at ε² ~ 1e-3 for a cross-entropy).
LE_GAMMA, LE_NOISE = 0.1, 0.05
FULL_DIAGNOSTICS = {
    "examples": 1000,
    "lanczos": 30,
    "eigenvalues": 3,
    "chains": 8,
    "sgld_steps": 50,
    "lambdas": 3,
}
SMOKE_DIAGNOSTICS = {
    "examples": 32,
    "lanczos": 3,
    "eigenvalues": 2,
    "chains": 2,
    "sgld_steps": 1,
    "lambdas": 2,
}
SMOKE_MODEL_OPTIONS = {"mnistfc-dr": {"hidden": 32}, "lenet-dr": {"conv_implementation": "xla"}}
"""The smoke run's networks: mnistfc-dr narrowed, lenet-dr with XLA's convolutions (the
same network, quicker to compile), so that the test runs in seconds."""


class Cell(NamedTuple):
    """One run: a network, a method and a seed, at a budget of effective epochs."""

    model: str
    method: str
    seed: int
    epochs: float

    @property
    def name(self) -> str:
        return f"{self.model}-{self.method}-s{self.seed}"


# --------------------------------------------------------------------------- data


def load(args: argparse.Namespace) -> DataArrays:
    """MNIST (normalised per channel, as ``relaxjax train``), or tiny generated digits."""
    if not args.smoke:
        return load_data(presets.mnist("sgd", data_dir=args.data_dir))
    return smoke_data(args.smoke_examples)


# --------------------------------------------------------------------------- budgets


def effective_epoch(n_train: int, batch_size: int) -> int:
    """Gradient evaluations in one effective epoch: one pass of mini-batch gradients."""
    return n_train // batch_size


def gradients_per_step(method: str, inner_steps: int) -> int:
    """Mini-batch gradients one outer step evaluates."""
    if method == "sam":
        return 2  # the gradient at x and the one at the adversarial point
    return inner_steps if method in RELAXATIONS else 1


def outer_steps(cell: Cell, per_epoch: int, per_step: int) -> int:
    """The outer steps of ``cell``'s budget: epochs × (N // B) gradients, / per step."""
    return max(1, round(cell.epochs * per_epoch / per_step))


def base_config(cell: Cell, args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """The ``relaxjax train`` preset of ``cell``'s method (SGD's for SAM and SWA)."""
    method = cell.method if cell.method in PRESET_METHODS else "sgd"
    options: dict[str, Any] = dict(
        model=cell.model,
        seed=cell.seed,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        epochs=cell.epochs,
    )
    if cell.method in args.inner_steps:
        options["num_steps"] = args.inner_steps[cell.method]
    if args.smoke:
        options.update(eval_batch_size=args.smoke_examples // 2, refresh_batches=2)
    options.update(overrides)
    return presets.mnist(method, **options)


def preset_config(cell: Cell, args: argparse.Namespace, n_train: int) -> TrainConfig:
    """The ``relaxjax train`` configuration whose budget is ``cell.epochs`` × (N // B)
    gradient evaluations: the command counts N // (B·L) outer steps per epoch, so its
    ``epochs`` is scaled by (N // B) / (L · N // (B·L)); the rate's milestones (50% and
    75% of the budget) scale with it."""
    config = base_config(cell, args)
    inner = config.optimizer.inner_steps
    loop_epoch = n_train // (args.batch_size * inner)
    scale = effective_epoch(n_train, args.batch_size) / (inner * loop_epoch)
    return base_config(cell, args, epochs=cell.epochs * scale)


# --------------------------------------------------------------------------- SAM and SWA


class WeightAverageState(NamedTuple):
    """State of :func:`weight_averaging`: the wrapped optimizer's, the running mean of the
    iterates taken so far and how many, and the steps taken."""

    inner: optax.OptState
    average: optax.Params
    count: jax.Array
    step: jax.Array


def weight_averaging(
    inner: optax.GradientTransformation, *, start: int, every: int
) -> optax.GradientTransformationExtraArgs:
    """``inner``, keeping the mean of the iterates after steps start, start + every, ...

    The updates are ``inner``'s; the state's ``average`` is the equal-weight mean of the
    parameters after each averaged step (SWA's running average, Izmailov et al. 2018,
    Alg. 1), updated by ``optax.incremental_update``. optax has no SWA of its own.
    """
    inner = optax.with_extra_args_support(inner)

    def init(params):
        average = jax.tree.map(jnp.copy, params)
        return WeightAverageState(inner.init(params), average, jnp.int32(0), jnp.int32(0))

    def update(updates, state, params=None, **extra_args):
        updates, inner_state = inner.update(updates, state.inner, params, **extra_args)
        new_params = optax.apply_updates(params, updates)
        step = state.step + 1
        take = (step >= start) & ((step - start) % every == 0)
        weight = jnp.where(take, 1.0 / (state.count + 1).astype(jnp.float32), 0.0)
        average = optax.incremental_update(new_params, state.average, weight)
        count = state.count + take.astype(jnp.int32)
        return updates, WeightAverageState(inner_state, average, count, step)

    return optax.GradientTransformationExtraArgs(init, update)


def swa_learning_rate(lr: float, total_steps: int) -> Callable[[jax.Array], jax.Array]:
    """The SWA paper's schedule at a budget of ``total_steps``, per outer step: ``lr``
    for the first half of the pre-averaging phase, linear to ``SWA_LR_RATIO``·``lr`` at
    90% of it, then constant (its code's ``schedule``, taken per step)."""
    before = SWA_START * total_steps

    def rate(t):
        u = t / before
        factor = jnp.where(
            u <= 0.5,
            1.0,
            jnp.where(u <= 0.9, 1.0 - (1.0 - SWA_LR_RATIO) * (u - 0.5) / 0.4, SWA_LR_RATIO),
        )
        return lr * factor

    return rate


def swa_schedule(total_steps: int, steps_per_epoch: int) -> tuple[int, int]:
    """(first averaged step, steps between snapshots)."""
    start = max(1, round(SWA_START * total_steps))
    every = max(1, min(steps_per_epoch, (total_steps - start) // SWA_MIN_SNAPSHOTS))
    return start, every


def custom_optimizer(cell: Cell, config: TrainConfig, total: int, steps_per_epoch: int):
    """SAM's or SWA's optimizer on the preset's SGD (same rate, momentum, weight decay)."""
    opt = config.optimizer
    if cell.method == "sam":  # the preset's SGD, its milestones at 50% / 75% of the steps
        base = make_optimizer(opt, total / cell.epochs)
        ascent = optax.chain(optax.contrib.normalize(), optax.sgd(SAM_RHO))
        return optax.contrib.sam(base, ascent, sync_period=2, opaque_mode=True)
    start, every = swa_schedule(total, steps_per_epoch)
    sgd = optax.chain(
        optax.add_decayed_weights(opt.weight_decay),
        optax.sgd(
            swa_learning_rate(opt.lr, total), momentum=opt.momentum, nesterov=bool(opt.momentum)
        ),
    )
    return weight_averaging(sgd, start=start, every=every)


def train_with(
    config: TrainConfig,
    run_dir: Path,
    tx: optax.GradientTransformationExtraArgs,
    *,
    model: models.FunctionalModel,
    data: DataArrays,
    steps_per_epoch: int,
    total_steps: int,
    averaged: bool = False,
) -> list[dict[str, Any]]:
    """``relaxjax.train.train``'s loop with an optimizer of one's own (one mini-batch per
    step): the same ``init_state``, jitted step, evaluation, BatchNorm refresh,
    checkpoints and records. With ``averaged`` (``weight_averaging``), each evaluation
    once averaging has begun is of the averaged weights with BatchNorm statistics
    re-estimated for them (the iterate's error is kept as ``iterate_test_error``)."""
    state = init_state(config, model, tx, data.train_images[:1])
    step = make_train_step(model, tx, 1, config.batch_size)
    evaluate = make_eval_fn(model, config.eval_batch_size)
    refresh = make_statistics_refresh(model, config.batch_size, config.refresh_batches)

    def step_fn(state, perm, step_in_epoch):
        return step(state, data.train_images, data.train_labels, perm, step_in_epoch)

    def epoch_end(state, step, seconds, steps_timed):
        steps_in_epoch = step - (step - 1) // steps_per_epoch * steps_per_epoch
        train_loss, train_error = (np.asarray(state.epoch_sums) / steps_in_epoch).tolist()
        state = state._replace(epoch_sums=jnp.zeros_like(state.epoch_sums))
        model_state = refresh(state.params, state.model_state, data.train_images, config.seed, step)
        state = state._replace(model_state=model_state)
        test_loss, test_error = evaluate(
            state.params, model_state, data.test_images, data.test_labels
        )
        record = {
            "step": step,
            "effective_epochs": step / steps_per_epoch,  # passes over the data, as train's
            "train_loss": train_loss,
            "train_error": train_error,
        }
        if averaged and int(state.opt_state.count) > 0:
            params, swa_state = averaged_model(state, refresh, data, config.seed, step)
            record["iterate_test_error"] = test_error
            test_loss, test_error = evaluate(params, swa_state, data.test_images, data.test_labels)
            record["averaged_snapshots"] = int(state.opt_state.count)
        examples = steps_timed * config.batch_size
        record |= {"test_loss": test_loss, "test_error": test_error, "seconds": seconds}
        return state, record | {"examples_per_second": examples / seconds}

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", config.to_json())
    return run_epochs(
        state,
        step_fn,
        epoch_end,
        run_dir=run_dir,
        checkpoints=Checkpoints(run_dir),
        seed=config.seed,
        n_train=len(data.train_labels),
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        examples_per_step=config.batch_size,
        progress=False,
        stop_after_steps=None,
        log=print,
    )


def averaged_model(state, refresh, data: DataArrays, seed: int, step: int):
    """SWA's weights and BatchNorm statistics re-estimated for them (from the iterate's)."""
    params = state.opt_state.average
    return params, refresh(params, state.model_state, data.train_images, seed, step)


def final_state(run_dir: Path, template: Any) -> Any:
    """The state of the run's last checkpoint (written at its last step)."""
    checkpoints = Checkpoints(run_dir)
    return checkpoints.load(checkpoints.steps()[-1], template)[0]


def shapes(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


# --------------------------------------------------------------------------- one run


def run_cell(
    cell: Cell, args: argparse.Namespace, data: DataArrays, model: models.FunctionalModel
) -> tuple[dict[str, Any], Any, Any]:
    """Trains ``cell`` into ``--runs-dir/<name>``; returns (its row, params, model state)
    of the final model (SWA's: the averaged weights, BatchNorm re-estimated)."""
    run_dir = Path(args.runs_dir) / cell.name
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts again
    n_train = len(data.train_labels)
    per_epoch = effective_epoch(n_train, args.batch_size)
    if cell.method in PRESET_METHODS:
        config = preset_config(cell, args, n_train)
        inner = config.optimizer.inner_steps
        records = train(config, run_dir, model=model, data=data, progress=False)
        state, _ = load_run_state(run_dir, model, data)
        params, model_state = state.params, state.model_state
        per_step = gradients_per_step(cell.method, inner)
    else:
        config = base_config(cell, args)
        per_step = gradients_per_step(cell.method, 1)
        total = outer_steps(cell, per_epoch, per_step)
        # One effective epoch of steps: SGD's pass over the data; SAM's first half of
        # a fresh permutation (N // 2B steps of 2 gradients), so both are evaluated (and
        # timed) at every effective epoch, as the other methods.
        steps_per_epoch = n_train // (args.batch_size * per_step)
        tx = custom_optimizer(cell, config, total, steps_per_epoch)
        template = shapes(init_state(config, model, tx, data.train_images[:1]))
        records = train_with(
            config,
            run_dir,
            tx,
            model=model,
            data=data,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            averaged=cell.method == "swa",
        )
        state = final_state(run_dir, template)
        params, model_state = state.params, state.model_state
        if cell.method == "swa":
            refresh = make_statistics_refresh(model, config.batch_size, config.refresh_batches)
            params, model_state = averaged_model(state, refresh, data, config.seed, int(state.step))
    curve = [
        {
            "effective_epochs": r["step"] * per_step / per_epoch,
            "gradient_evaluations": r["step"] * per_step,
            "test_error": 100 * r["test_error"],
            **(
                {"iterate_test_error": 100 * r["iterate_test_error"]}
                if "iterate_test_error" in r
                else {}
            ),
        }
        for r in records
    ]
    row = {
        "model": cell.model,
        "method": cell.method,
        "seed": cell.seed,
        "budget_effective_epochs": cell.epochs,
        "gradients_per_step": per_step,
        "outer_steps": records[-1]["step"],
        "gradient_evaluations": records[-1]["step"] * per_step,
        "effective_epochs": curve[-1]["effective_epochs"],
        "curve": curve,
        "final_test_error": curve[-1]["test_error"],
        "seconds_per_effective_epoch": seconds_per_effective_epoch(records, per_step, per_epoch),
        "train_seconds": sum(r["seconds"] for r in records),
        "optimizer": dataclasses.asdict(config.optimizer),
    }
    if cell.method == "swa":
        start, every = swa_schedule(records[-1]["step"], n_train // args.batch_size)
        row |= {
            "swa_start_step": start,
            "swa_every_steps": every,
            "swa_snapshots": records[-1].get("averaged_snapshots", 0),
            "iterate_final_test_error": curve[-1].get("iterate_test_error"),
        }
    return row, params, model_state


def seconds_per_effective_epoch(
    records: Sequence[dict[str, Any]], per_step: int, per_epoch: int
) -> float:
    """Training seconds per effective epoch over the records after the first (which
    holds the compilation), or over the only one."""
    timed = records[1:] or records
    first_step = records[0]["step"] if len(records) > 1 else 0
    epochs = (timed[-1]["step"] - first_step) * per_step / per_epoch
    return sum(r["seconds"] for r in timed) / epochs


# --------------------------------------------------------------------------- diagnostics


def make_loss_fn(model: models.FunctionalModel) -> Callable[..., jax.Array]:
    """The training loss on a fixed batch, the network in inference mode (one function
    per network, so the diagnostics compile once for all its runs)."""

    def loss_fn(params, model_state, images, labels):
        logits, _ = model.apply(params, model_state, images, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return loss_fn


def flatness(loss_fn, params, model_state, batch, settings: dict[str, int]) -> dict[str, Any]:
    """Top Hessian eigenvalues and the local-entropy gap at the final weights."""
    args = (model_state, *batch)
    top = diagnostics.hessian_top_eigenvalues(
        loss_fn,
        params,
        k=settings["eigenvalues"],
        num_iterations=settings["lanczos"],
        loss_args=args,
        key=0,
    )
    est = diagnostics.local_entropy_estimate(
        loss_fn,
        params,
        LE_GAMMA,
        noise=LE_NOISE,
        loss_args=args,
        num_steps=settings["sgld_steps"],
        num_chains=settings["chains"],
        num_lambdas=settings["lambdas"],
        key=0,
    )
    return {
        "train_loss_batch": est.loss,
        "top_eigenvalues": [float(v) for v in top.eigenvalues],
        "eigenvalue_residuals": [float(r) for r in top.residuals],
        "local_entropy_gap": float(est.relaxed_loss[0] - est.loss),
        "local_entropy_gap_stderr": float(est.relaxed_loss_stderr[0]),
        "smoothed_gap": float(est.smoothed_loss[0] - est.loss),
        "smoothed_gap_stderr": float(est.smoothed_loss_stderr[0]),
    }


# --------------------------------------------------------------------------- summary


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for method in METHODS:
            mine = [r for r in rows if r["model"] == model and r["method"] == method]
            if not mine:
                continue
            s = {"model": model, "method": method, "seeds": [r["seed"] for r in mine]}
            for key in (
                "final_test_error",
                "local_entropy_gap",
                "smoothed_gap",
                "train_loss_batch",
            ):
                s[key] = mean_std([r[key] for r in mine])
            # The median over seeds: one run slowed by other work on the machine moves a
            # mean, not the median.
            timing = statistics.median(r["seconds_per_effective_epoch"] for r in mine)
            s["seconds_per_effective_epoch"] = (timing, None)
            s["outer_steps"] = mine[0]["outer_steps"]
            s["top_eigenvalue"] = mean_std([r["top_eigenvalues"][0] for r in mine])
            s["effective_epochs"] = mine[0]["effective_epochs"]
            s["gradient_evaluations"] = mine[0]["gradient_evaluations"]
            out.append(s)
    return out


def paired_differences(rows, model: str, method: str, baseline: str = "sgd") -> list[float]:
    """``method`` minus ``baseline`` final test error (points), per shared seed."""
    by = {(r["method"], r["seed"]): r["final_test_error"] for r in rows if r["model"] == model}
    seeds = sorted(s for (m, s) in by if m == method and (baseline, s) in by)
    return [by[(method, s)] - by[(baseline, s)] for s in seeds]


def against_sgd(diffs: Sequence[float]) -> str:
    """'better', 'worse' or 'no consistent difference': better or worse only when every
    paired seed agrees in sign (and there are at least two)."""
    if len(diffs) < 2:
        return "undetermined (one seed)"
    if all(d < 0 for d in diffs):
        return "better"
    if all(d > 0 for d in diffs):
        return "worse"
    return "no consistent difference"


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties averaged), None for fewer than 3 points."""
    if len(x) < 3:
        return None

    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            r[v == value] = r[v == value].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def verdicts(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> list[str]:
    """Plain statements computed from the numbers: the winner on each network, each
    method against SGD (paired seeds), the flattest minima, whether flatness went with
    lower error, and the cost of an effective epoch."""
    lines = []
    for model in dict.fromkeys(s["model"] for s in summary):
        mine = {s["method"]: s for s in summary if s["model"] == model}
        ranked = sorted(mine.values(), key=lambda s: s["final_test_error"][0])
        best = ranked[0]
        lines.append(
            f"**{model}**: lowest mean test error: {best['method']} "
            f"({best['final_test_error'][0]:.2f}%), then "
            + ", ".join(f"{s['method']} {s['final_test_error'][0]:.2f}%" for s in ranked[1:])
            + "."
        )
        if "sgd" in mine:
            calls = {}
            for method in mine:
                if method == "sgd":
                    continue
                diffs = paired_differences(rows, model, method)
                calls[method] = against_sgd(diffs)
                lines.append(
                    f"- {method} against SGD (same seeds): {calls[method]}; paired differences "
                    + ", ".join(f"{d:+.2f}" for d in diffs)
                    + " points."
                )
            relax = [m for m in RELAXATIONS if m in calls]
            helped = [m for m in relax if calls[m] == "better"]
            if relax and not helped:
                lines.append(
                    f"- The relaxations ({', '.join(relax)}) do not help on {model} at this "
                    "budget: none has a lower test error than SGD on every seed."
                )
            elif helped:
                lines.append(
                    f"- Relaxations lower than SGD on every seed on {model}: {', '.join(helped)}."
                )
        flat = min(mine.values(), key=lambda s: s["top_eigenvalue"][0])
        wide = min(mine.values(), key=lambda s: s["local_entropy_gap"][0])
        lines.append(
            f"- Flattest by the top Hessian eigenvalue: {flat['method']} "
            f"(mean {flat['top_eigenvalue'][0]:.3g}); lowest local-entropy gap f_γ − f: "
            f"{wide['method']} (mean {wide['local_entropy_gap'][0]:.3g})."
        )
        relaxed = [mine[m] for m in RELAXATIONS if m in mine]
        if relaxed:
            lines.append(
                "- Outer steps in the budget: "
                + ", ".join(f"{s['method']} {s['outer_steps']}" for s in relaxed)
                + " (each of L gradients)"
                + (f", against sgd's {mine['sgd']['outer_steps']}" if "sgd" in mine else "")
                + "."
            )
        models_here = [r for r in rows if r["model"] == model]
        negative = sum(r["local_entropy_gap"] < 0 for r in models_here)
        if negative:
            lines.append(
                f"- {negative} of {len(models_here)} local-entropy gaps are negative: those "
                "weights are not at a minimum of the batch loss, where f_γ − f also drops by "
                "about γ‖∇f‖²/2, so there the gap ranks the remaining gradient as much as the "
                "width (a mean over seeds that includes them, as the lowest gap above may, "
                "says little); the top eigenvalue is the width measure to read."
            )
        rho = spearman(
            [r["top_eigenvalues"][0] for r in models_here],
            [r["final_test_error"] for r in models_here],
        )
        if rho is not None:
            sense = "lower" if rho > 0 else "higher"
            lines.append(
                f"- Across its {len(models_here)} final models, Spearman's rank correlation "
                f"between the top eigenvalue and the test error is {rho:+.2f} (a flatter "
                f"minimum went with {sense} test error{'' if abs(rho) >= 0.5 else ', weakly'})."
            )
        if "sgd" in mine:
            base = mine["sgd"]["seconds_per_effective_epoch"][0]
            lines.append(
                "- Wall-clock per effective epoch relative to SGD: "
                + ", ".join(
                    f"{s['method']} {s['seconds_per_effective_epoch'][0] / base:.2f}x"
                    for s in mine.values()
                    if s["method"] != "sgd"
                )
                + "."
            )
    return lines


# --------------------------------------------------------------------------- outputs


def plot(rows: list[dict[str, Any]], output: Path) -> None:
    """Test error against effective epochs (top row, mean over seeds and min-max band)
    and final test error against the top Hessian eigenvalue (bottom row, one point per
    final model), one column per network."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    curves = [
        RunCurve(
            r["model"],
            r["method"],
            r["seed"],
            [c["effective_epochs"] for c in r["curve"]],
            [c["test_error"] for c in r["curve"]],
        )
        for r in rows
    ]
    means = mean_over_seeds(curves)
    nets = list(dict.fromkeys(r["model"] for r in rows))
    colors = optimizer_colors([m for m in METHODS if any(r["method"] == m for r in rows)])
    markers = dict(zip(METHODS, "osD^vP", strict=True))
    figure = Figure(figsize=(4.6 * len(nets) + 1.6, 7.0), layout="constrained")
    axes = figure.subplots(2, len(nets), squeeze=False)
    for col, net in enumerate(nets):
        top, bottom = axes[0][col], axes[1][col]
        for m in (m for m in means if m.model == net):
            top.plot(m.epochs, m.mean, color=colors[m.optimizer], lw=1.4, marker=".", ms=4)
            if len(m.seeds) > 1:
                top.fill_between(m.epochs, m.low, m.high, color=colors[m.optimizer], alpha=0.15)
        for r in (r for r in rows if r["model"] == net):
            bottom.scatter(
                r["top_eigenvalues"][0],
                r["final_test_error"],
                color=colors[r["method"]],
                marker=markers[r["method"]],
                edgecolors="black",
                linewidths=0.5,
                s=36,
            )
        top.set(title=f"{net}", xlabel="effective epochs (N/B gradients)", ylabel="test error (%)")
        top.set_xlim(left=0)
        for axis in (top.yaxis, bottom.xaxis, bottom.yaxis):
            plain_log_axis(axis)
        bottom.set(
            title=f"{net}: final models",
            xlabel="top Hessian eigenvalue (training batch)",
            ylabel="final test error (%)",
        )
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
    handles = [
        Line2D([], [], color=colors[m], marker=markers[m], mec="black", lw=1.4, label=m)
        for m in colors
    ]
    figure.legend(handles=handles, loc="outside right upper", title="method")
    figure.savefig(output, dpi=130)


def plain_log_axis(axis) -> None:
    """A log axis labelled in plain numbers, with labelled ticks inside the data's range.

    A log axis puts its labels at powers of ten (and here at 2, 3 and 5 times them); a
    range narrower than that, such as test errors from 1.3 to 1.6 %, would get none. The
    ticks are 1, 1.5, 2, 3, 5 and 7 times the powers of ten inside the data's range (1, 2
    and 5 times them over more than a decade), or,
    where fewer than three of those fall inside it, round numbers chosen as on a linear
    axis; all labelled with ``%g``. Call it after the data are drawn: it reads the axis's
    limits.
    """
    from matplotlib import ticker

    if axis is axis.axes.yaxis:
        axis.axes.set_yscale("log")
        low, high = axis.axes.get_ylim()
    else:
        axis.axes.set_xscale("log")
        low, high = axis.axes.get_xlim()
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    mantissas = (1, 2, 5) if high / low > 10 else (1, 1.5, 2, 3, 5, 7)
    ticks = [m * 10.0**e for e in decades for m in mantissas]
    ticks = [t for t in ticks if low <= t <= high]
    if len(ticks) < 3:
        linear = ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
        ticks = [float(t) for t in linear if low <= t <= high and t > 0]
    axis.set_major_locator(ticker.FixedLocator(ticks))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _position: f"{value:g}"))
    axis.set_minor_locator(ticker.NullLocator())


def _pm(value: tuple[float, float | None], fmt: str = ".2f") -> str:
    mean, std = value
    return f"{mean:{fmt}}" + (f" ± {std:{fmt}}" if std is not None else "")


def method_notes(result: dict[str, Any]) -> list[str]:
    """How each method's hyper-parameters were chosen, with the values used."""
    opt = result["optimizers"]
    sgd, esgd, hj, heat = (opt.get(m, {}) for m in PRESET_METHODS)
    preset_steps = {m: presets.mnist(m).optimizer.num_steps for m in INNER_SGD_RELAXATIONS}
    changed = {m: o["num_steps"] for m, o in opt.items() if m in preset_steps and o}
    changed = {m: n for m, n in changed.items() if n != preset_steps[m]}
    notes = [
        "Hyper-parameters: every method runs at its papers' settings as `relaxjax train`'s "
        "presets hold them (`relaxjax.train.presets`), or, for SAM and SWA, at their papers' "
        "defaults on that same SGD. None was tuned on this benchmark"
        + (
            ", but "
            + ", ".join(
                f"{m}'s L = {n} (`--inner-steps`) replaces its preset's {preset_steps[m]}"
                for m, n in changed.items()
            )
            + (
                f": HEAT's L = {HEAT_L10} is the L with which the paper table's runs "
                "reproduce the Deep Relaxation HEAT cells, where the preset's does not, a "
                "choice made from those results that no other method was given"
                if changed.get("heat") == HEAT_L10
                else ""
            )
            if changed
            else ": the tuning effort is the same for all, zero, so no method is favoured by "
            "a search the others lacked"
        )
        + ".",
    ]
    if sgd:
        notes.append(
            f"- sgd: learning rate {sgd['lr']:g}, Nesterov momentum {sgd['momentum']:g}, "
            f"weight decay {sgd['weight_decay']:g}, the rate multiplied by "
            f"{sgd['lr_decay']:g} at 50% and 75% of the budget (the Entropy-SGD / Deep "
            "Relaxation MNIST setting)."
        )
    for name, o in (("entropy-sgd", esgd), ("hj", hj), ("heat", heat)):
        if o:
            notes.append(
                f"- {name}: L = {o['num_steps']} inner steps of η′ = {o['step_size']:g}, "
                f"scope γ₀ = {o['gamma']:g} shrunk by {o['scoping']:g} per outer step, "
                f"noise ε = {o['noise']:g}"
                + (
                    ", uniform average of the inner iterates"
                    if name == "heat"
                    else f", α = {o['alpha']:g}"
                )
                + f"; outer rate {o['lr']:g} on x − μ with Nesterov momentum {o['momentum']:g}, "
                "decayed as SGD's"
                + (
                    "."
                    if name not in changed
                    else f" (L = {o['num_steps']}, not the preset's {preset_steps[name]})."
                )
            )
    for name, o in (("entropy-sgd", esgd), ("hj", hj)):
        steps = [r["outer_steps"] for r in result["rows"] if r["method"] == name]
        if o and steps and o["scoping"] > 0:
            config = OptimizerConfig(**(o | {"lr_milestones": tuple(o["lr_milestones"])}))
            last = outer_gamma(config, max(steps) - 1)
            notes.append(
                f"- {name}'s coupling is weak at this scope: γ goes from {o['gamma']:g} to "
                f"{last:.3g} over the run, so an inner step pulls y toward x by a fraction "
                f"η′/γ ≤ {o['step_size'] / last:.1e}; the inner chain is nearly SGD from x, "
                "and the relaxed gradient nearly the averaged chain's displacement."
            )
    if "sam" in result["methods"]:
        notes.append(
            f"- sam: `optax.contrib.sam` (opaque mode, sync period 2: one ascent step) with "
            f"ρ = {SAM_RHO:g} (the SAM paper's default), the ascent along the normalised "
            "mini-batch gradient on the same mini-batch and dropout mask, the outer step "
            "the sgd row's optimizer and schedule; 2 gradients per step, so half of sgd's "
            "steps: each effective epoch takes the first half of a fresh permutation of the "
            "training set."
        )
    if "swa" in result["methods"]:
        notes.append(
            f"- swa: the sgd row's SGD with the SWA paper's schedule scaled to the budget: "
            f"rate {sgd.get('lr', 0.1):g} for the first half of the first {SWA_START:.0%} of "
            f"the budget, linear to {SWA_LR_RATIO:g}x at 90% of it, then constant; the "
            f"iterates averaged from {SWA_START:.0%} of the budget on (the recipes start "
            "at 126/225 and 161/300 epochs) once every min(1 effective epoch, 1/"
            f"{SWA_MIN_SNAPSHOTS} of the averaging window) (the recipe averages once an "
            "epoch); the averaged weights evaluated with BatchNorm statistics re-estimated "
            "for them (`relaxjax.train.make_statistics_refresh`, as every method's). optax "
            "0.2.8 has no SWA: a small `weight_averaging` wrapper (this script) keeps the "
            "mean with `optax.incremental_update`."
        )
    return notes


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    config = result["config"]
    diag = config["diagnostics"]
    done, planned = len(result["rows"]), config["planned_runs"]
    status = (
        f"complete: all {planned} runs"
        if done == planned
        else f"**PARTIAL: {done} of {planned} runs finished**; the table holds those only"
    )
    budgets = ", ".join(f"{m} {e:g}" for m, e in config["epochs"].items())
    reduced = [m for m, e in config["epochs"].items() if e < DEFAULT_EPOCHS.get(m, e)]
    lines = [
        "# The flatness benchmark: six optimizers at equal gradient evaluations",
        "",
        *provenance_lines(result),
        *(
            [f"- this report written by: `{result['report_command']}`"]
            if result["report_command"] != result["command"]
            else []
        ),
        *(
            [
                f"- rows read from `{result['rows_from']}` (the machine, versions and date "
                f"above are theirs); this report written on {result['report_machine']}, "
                f"{result['report_date']}"
            ]
            if result.get("rows_from")
            else []
        ),
        f"- status: {status}",
        f"- data: {config['data']}; batch {config['batch_size']}; seeds "
        f"{', '.join(map(str, config['seeds']))}",
        f"- budget (effective epochs, N // B = {config['gradients_per_effective_epoch']} "
        f"mini-batch gradients each): {budgets}"
        + (
            ". **Reduced** from the full setting ("
            + ", ".join(f"{m} {DEFAULT_EPOCHS[m]:g}" for m in reduced)
            + ": the budgets at which both papers report Entropy-SGD) to fit this machine: "
            "the errors are those of short runs, far from the papers' cells"
            if reduced
            else ""
        ),
        "",
        "Every method gets the same number of mini-batch gradient evaluations: an outer step "
        "of Entropy-SGD, HJ or HEAT counts its L inner gradients, a SAM step 2, an SGD or SWA "
        "step 1 (an outer step is not split, so a budget is met to within one step: see "
        "'gradients'). Every run of a seed starts from the same initialisation. Test error "
        "on the test set after the budget (eval mode, BatchNorm statistics re-estimated "
        "from 50 training mini-batches at the final weights, as the original code does), "
        "mean ± std over seeds. Flatness at the final weights on a fixed batch of the first "
        f"{diag['examples']} training examples, the network in inference mode: the top "
        f"Hessian eigenvalue λ₁ (Lanczos, {diag['lanczos']} Hessian-vector products; "
        "residuals in the JSON), and the local-entropy gap f_γ(x) − f(x) at γ = "
        f"{LE_GAMMA:g}, ε = {LE_NOISE:g} (thermodynamic integration over "
        f"{diag['lambdas']} Lobatto nodes, {diag['chains']} chains of {diag['sgld_steps']} "
        "SGLD steps; smaller is wider) and E f(x + σξ) − f(x), σ² = γε² (the heat-smoothed "
        "gap). 's / eff. epoch': training wall-clock per effective epoch, excluding the "
        "first evaluation interval (compilation) and evaluations, median over seeds, on a "
        "2-core machine shared with other work whose load varied during the runs: a rough "
        "cost, not a speed measurement (benchmarks/inner_loop.py measures the step costs).",
        "",
        "| network | method | seeds | outer steps | gradients | test error (%) | λ₁ | f_γ − f | "
        "E f(x+σξ) − f | f(x) batch | s / eff. epoch |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in result["summary"]:
        lines.append(
            f"| {s['model']} | {s['method']} | {len(s['seeds'])} | {s['outer_steps']} "
            f"| {s['gradient_evaluations']} "
            f"| {_pm(s['final_test_error'])} | {_pm(s['top_eigenvalue'], '.3g')} "
            f"| {_pm(s['local_entropy_gap'], '.3g')} | {_pm(s['smoothed_gap'], '.3g')} "
            f"| {_pm(s['train_loss_batch'], '.3g')} "
            f"| {_pm(s['seconds_per_effective_epoch'], '.2f')} |"
        )
    lines += ["", "## Which method wins where"]
    for line in result["verdicts"]:  # a blank line before each network's paragraph
        lines += ["", line] if line.startswith("**") else [line]
    lines += [""]
    lines += ["## Methods", "", *method_notes(result), ""]
    lines += [
        "## Per run",
        "",
        "| run | test error (%) | λ₁, λ₂, ... | f_γ − f (± se) | outer steps |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for r in result["rows"]:
        eig = ", ".join(f"{v:.3g}" for v in r["top_eigenvalues"])
        lines.append(
            f"| {r['model']}-{r['method']}-s{r['seed']} | {r['final_test_error']:.2f} | {eig} "
            f"| {r['local_entropy_gap']:.3g} ± {r['local_entropy_gap_stderr']:.2g} "
            f"| {r['outer_steps']} |"
        )
    swa = [r for r in result["rows"] if r["method"] == "swa"]
    if swa:
        lines += [
            "",
            "SWA's averaged model against its last SGD iterate (test error %, BatchNorm "
            "re-estimated for each): "
            + "; ".join(
                f"{r['model']} s{r['seed']}: {r['final_test_error']:.2f} vs "
                + (
                    f"{r['iterate_final_test_error']:.2f}"
                    if r["iterate_final_test_error"] is not None
                    else "n/a"
                )
                + f" ({r['swa_snapshots']} snapshots)"
                for r in swa
            )
            + ".",
        ]
    lines += ["", "![test error against effective epochs and top eigenvalue](flatness.png)", ""]
    path.write_text("\n".join(lines))


def report(
    args, rows: list[dict[str, Any]], planned: int, data_name: str, source: dict | None = None
) -> dict[str, Any]:
    """Writes flatness.json, .md and .png for ``rows``; with ``source`` (the results file
    ``--rows-from`` read) the rows keep its machine, versions and date."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    current = command_line(__file__, args.argv)
    trained = sorted({r["command"] for r in rows if "command" in r})
    result = {
        "command": trained[0] if len(trained) == 1 else current,
        "report_command": current,
        **environment(),
        "config": {
            "models": args.models,
            "methods": args.methods,
            "seeds": args.seeds,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "data": data_name,
            "gradients_per_effective_epoch": args.gradients_per_effective_epoch,
            "planned_runs": planned,
            "diagnostics": args.diagnostics,
            "local_entropy": {"gamma": LE_GAMMA, "noise": LE_NOISE},
            "sam_rho": SAM_RHO,
            "swa": {
                "start": SWA_START,
                "lr_ratio": SWA_LR_RATIO,
                "min_snapshots": SWA_MIN_SNAPSHOTS,
            },
        },
        "methods": sorted({r["method"] for r in rows}, key=METHODS.index),
        "optimizers": {r["method"]: r["optimizer"] for r in rows},
        "summary": summary,
        "verdicts": verdicts(rows, summary),
        "rows": rows,
    }
    if source is not None:  # the rows' provenance stays theirs; the report's is added
        written = environment()
        result |= {key: source[key] for key in ("machine", "versions", "date")}
        result |= {
            "rows_from": repo_relative(Path(args.rows_from)),
            "report_machine": written["machine"],
            "report_date": written["date"],
        }
    write_json(out / "flatness.json", result)
    write_markdown(out / "flatness.md", result)
    if rows:
        plot(rows, out / "flatness.png")
    return result


def rerender(args: argparse.Namespace) -> int:
    """``--report-only --rows-from FILE``: the report of FILE's rows, with FILE's settings
    (networks, methods, seeds, budgets, batch, diagnostics) in place of the command line's:
    no data are loaded and nothing is trained."""
    source = json.loads(Path(args.rows_from).read_text())
    config = source["config"]
    for key in ("models", "methods", "seeds", "epochs", "batch_size", "diagnostics"):
        setattr(args, key, config[key])
    args.gradients_per_effective_epoch = config["gradients_per_effective_epoch"]
    result = report(args, source["rows"], config["planned_runs"], config["data"], source)
    for line in result["verdicts"]:
        print(line, flush=True)
    return 0


def parse_inner_steps(values: Sequence[str], parser) -> dict[str, int]:
    """``--inner-steps``: ``L`` sets every relaxation's, ``METHOD=L`` one method's."""
    steps: dict[str, int] = {}
    for item in values:
        method, _, value = item.rpartition("=")
        if not value.isdigit() or int(value) < 1 or (method and method not in RELAXATIONS):
            parser.error(
                f"--inner-steps takes L or METHOD=L with METHOD in {list(RELAXATIONS)} and "
                f"L >= 1, got {item!r}"
            )
        steps.update({m: int(value) for m in ([method] if method else RELAXATIONS)})
    return steps


def parse_epochs(values: Sequence[str], parser) -> dict[str, float]:
    epochs = dict(DEFAULT_EPOCHS)
    for item in values:
        model, _, value = item.partition("=")
        try:
            epochs[model] = float(value)
        except ValueError:
            parser.error(f"--epochs takes MODEL=EPOCHS, got {item!r}")
        if not (math.isfinite(epochs[model]) and epochs[model] > 0):
            parser.error(f"--epochs {item}: the budget must be > 0")
    return epochs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--epochs",
        nargs="*",
        default=[],
        metavar="MODEL=EPOCHS",
        help="budgets in effective epochs [mnistfc-dr=120 lenet-dr=80]",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--inner-steps",
        nargs="*",
        default=[],
        metavar="[METHOD=]L",
        help="L for every relaxation (a number) or for one (e.g. heat=10) [the presets']",
    )
    parser.add_argument(
        "--diagnostics",
        nargs="*",
        default=[],
        metavar="KEY=N",
        help=f"flatness settings {FULL_DIAGNOSTICS}",
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs-dir", default="runs/flatness")
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--compilation-cache-dir",
        default=None,
        help="JAX's persistent compilation cache (as relaxjax train's; default: its folder)",
    )
    parser.add_argument("--report-only", action="store_true", help="the report from the runs")
    parser.add_argument(
        "--rows-from",
        default=None,
        help="with --report-only: the report of this flatness.json's rows and settings (e.g. "
        "the committed one's), loading no data and reading no --runs-dir",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny generated data, few steps")
    parser.add_argument("--smoke-examples", type=int, default=256)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.rows_from and not args.report_only:
        parser.error("--rows-from re-renders a report: it needs --report-only")
    epochs = parse_epochs(args.epochs, parser)
    args.inner_steps = parse_inner_steps(args.inner_steps, parser)
    diag = dict(SMOKE_DIAGNOSTICS if args.smoke else FULL_DIAGNOSTICS)
    for item in args.diagnostics:
        key, _, value = item.partition("=")
        if key not in diag or not value.isdigit():
            parser.error(f"--diagnostics takes KEY=N with KEY in {sorted(diag)}, got {item!r}")
        diag[key] = int(value)
    args.diagnostics = diag
    if args.smoke:
        args.seeds, args.batch_size = args.seeds[:1], 32
        args.inner_steps = {m: 2 for m in RELAXATIONS} | args.inner_steps
        epochs = {m: 1.0 for m in epochs}
    args.epochs = {m: epochs[m] for m in args.models}
    if args.rows_from:
        return rerender(args)

    enable_compilation_cache(args.compilation_cache_dir)  # identical programs compile once
    data = load(args)
    data_name = "generated (smoke)" if args.smoke else "MNIST"
    n_train = len(data.train_labels)
    args.gradients_per_effective_epoch = effective_epoch(n_train, args.batch_size)
    cells = [
        Cell(model, method, seed, args.epochs[model])
        for seed in args.seeds
        for model in args.models
        for method in args.methods
    ]
    rows = []
    options = SMOKE_MODEL_OPTIONS if args.smoke else {}
    networks = {
        m: models.get_model(m, num_classes=data.num_classes, **options.get(m, {}))
        for m in args.models
    }
    losses = {m: make_loss_fn(net) for m, net in networks.items()}
    examples = min(args.diagnostics["examples"], n_train)
    batch = (data.train_images[:examples], data.train_labels[:examples])
    settings = {"cell": None, "batch_size": args.batch_size, "inner_steps": args.inner_steps}
    settings |= {"diagnostics": args.diagnostics, "data": data_name}
    for cell in cells:
        path = Path(args.runs_dir) / cell.name / "row.json"
        signature = json.loads(json.dumps(settings | {"cell": cell._asdict()}))
        if path.exists():
            saved = json.loads(path.read_text())
            if saved["settings"] == signature:
                rows.append(saved["row"])
                continue
        if args.report_only:
            continue
        start = time.perf_counter()
        row, params, model_state = run_cell(cell, args, data, networks[cell.model])
        row |= flatness(losses[cell.model], params, model_state, batch, args.diagnostics)
        row["total_seconds"] = time.perf_counter() - start
        row["command"] = command_line(__file__, argv)  # the command that trained it
        write_json(path, {"settings": signature, "row": row})
        rows.append(row)
        print(
            f"{cell.name}: {row['final_test_error']:.2f}% test error, λ₁ "
            f"{row['top_eigenvalues'][0]:.3g}, gap {row['local_entropy_gap']:.3g}, "
            f"{row['total_seconds']:.0f} s",
            flush=True,
        )
        report(args, rows, len(cells), data_name)
    result = report(args, rows, len(cells), data_name)
    for line in result["verdicts"]:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
