"""Times relaxjax's jitted Entropy-SGD step against an eager PyTorch Entropy-SGD.

Side by side in one process, for each model (``mnistfc``, ``lenet``, or the Deep
Relaxation code's ``mnistfc-dr``, ``lenet-dr``) and each
device (CPU; CUDA too when both JAX and PyTorch see a GPU):

* **relaxjax**: one outer step of ``relaxjax.train.make_train_step``, built as
  ``relaxjax.train.train`` builds it (``models.get_model``,
  ``optimizers.make_optimizer(OptimizerConfig("entropy-sgd", num_steps=L))``,
  data as on-device random arrays of MNIST shape (N, 28, 28, 1) and a
  permutation), timed after compilation with ``jax.block_until_ready``; with
  the library's default ``unroll`` of the inner ``lax.scan`` and, for
  comparison, ``unroll=True`` (the same chain built by hand);
* **PyTorch**: ``EntropySGD.step(closure)`` of ``torch_entropy_sgd.py``, L
  closure calls (forward + backward on the next mini-batch of random
  (N, 1, 28, 28) data held in memory) per outer step.

The implementations are interleaved (``--rounds`` rounds of ``--steps`` outer
steps each, the order alternating between rounds) and the median time per
outer step is reported, with the time per gradient evaluation (outer step / L),
per effective epoch (``--epoch-size``/B gradient evaluations, 60000/128 for
MNIST) and the ratio relaxjax / PyTorch. Results go to
``<out-dir>/<stem>.{md,json}`` (``--stem``, default ``pytorch_comparison``) with
the command line, machine, library versions, date and load averages.

Run from the repository root::

    python benchmarks/compare_pytorch.py            # mnistfc and lenet, B = 128, L = 20
    python benchmarks/compare_pytorch.py --models lenet-dr --stem pytorch_comparison_lenet_dr
    python benchmarks/compare_pytorch.py --smoke --out-dir /tmp/bench
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
import torch
import torch.nn.functional as F

import relaxjax
from relaxjax import models as models_lib
from relaxjax import train as train_lib
from relaxjax.cpu.xla_flags import apply_cpu_settings
from relaxjax.train.optimizers import OptimizerConfig, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import write_json  # noqa: E402
from torch_entropy_sgd import EntropySGD, get_torch_model  # noqa: E402

TARGET_RATIO = 0.8  # the target: relaxjax <= 0.8 x PyTorch per effective epoch
DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "results"
SCRIPT = "benchmarks/compare_pytorch.py"  # as run from the repository root

Runner = Callable[[int], None]
"""``run(n)`` takes n outer steps and returns once they have finished."""


@dataclasses.dataclass
class Case:
    """One implementation on one model and device, and its measured times."""

    impl: str  # "relaxjax" or "pytorch"
    variant: str  # relaxjax: "unroll=default" / "unroll=true"; pytorch: "eager, N threads"
    model: str
    device: str
    run: Runner = dataclasses.field(repr=False)
    setup_s: float = 0.0  # compilation + first step (relaxjax), first step (pytorch)
    seconds_per_step: list[float] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.impl} ({self.variant})"


# --------------------------------------------------------------------------- relaxjax


def _entropy_sgd_config(num_steps: int) -> OptimizerConfig:
    return OptimizerConfig("entropy-sgd", num_steps=num_steps, gamma=1e4)


def _hand_built_chain(
    config: OptimizerConfig, unroll: bool | int
) -> optax.GradientTransformationExtraArgs:
    """``make_optimizer(config)`` (no lr milestones) with an explicit scan ``unroll``."""
    gamma = relaxjax.scoping(config.gamma, config.scoping)
    relaxation = relaxjax.local_entropy(
        gamma=gamma,
        num_steps=config.num_steps,
        step_size=config.step_size,
        noise=config.noise,
        alpha=config.alpha,
        weight_decay=config.weight_decay,
        seed=0,
        unroll=unroll,
    )
    outer = optax.sgd(lambda t: config.lr * gamma(t), momentum=config.momentum, nesterov=True)
    return optax.chain(relaxation, outer)


def relaxjax_runner(
    model_name: str,
    num_steps: int,
    batch_size: int,
    num_examples: int,
    device: jax.Device,
    unroll: bool | None,
) -> tuple[Runner, float]:
    """A runner of relaxjax's jitted outer step, and its compile + first-step time."""
    config = _entropy_sgd_config(num_steps)
    steps_per_epoch = num_examples // (batch_size * num_steps)
    model = models_lib.get_model(model_name)
    if unroll is None:
        tx = make_optimizer(config, steps_per_epoch, seed=0)
    else:
        tx = _hand_built_chain(config, unroll)
    with jax.default_device(device):
        key = jax.random.PRNGKey(0)
        images = jax.random.normal(key, (num_examples, 28, 28, 1), np.float32)
        labels = jax.random.randint(jax.random.fold_in(key, 1), (num_examples,), 0, 10)
        perm = jax.random.permutation(jax.random.fold_in(key, 2), num_examples)
        train_config = train_lib.TrainConfig(
            model=model_name, batch_size=batch_size, optimizer=config
        )
        state = train_lib.init_state(train_config, model, tx, images[:1])
    # Committed to ``device``, so the jitted step runs there whatever the default device.
    images, labels, perm, state = jax.device_put((images, labels, perm, state), device)
    train_step = train_lib.make_train_step(model, tx, num_steps, batch_size, augment=False)
    holder = {"state": state, "step": 0}

    def run(n: int) -> None:
        state = holder["state"]
        for _ in range(n):
            state, _ = train_step(state, images, labels, perm, holder["step"] % steps_per_epoch)
            holder["step"] += 1
        holder["state"] = jax.block_until_ready(state)

    start = time.perf_counter()
    run(1)
    return run, time.perf_counter() - start


def relaxjax_default_unroll(num_steps: int) -> str:
    """What ``unroll=None`` resolves to in the installed relaxjax (private helper)."""
    from relaxjax.core import relaxation

    resolve = getattr(relaxation, "_inner_loop_unroll", None)
    return repr(resolve(None, num_steps)) if resolve else "unknown"


# --------------------------------------------------------------------------- PyTorch


def pytorch_runner(
    model_name: str,
    num_steps: int,
    batch_size: int,
    num_examples: int,
    device: str,
    num_threads: int,
) -> tuple[Runner, float]:
    """A runner of the eager ``EntropySGD.step(closure)``, and its first-step time.

    The runner sets ``torch.set_num_threads(num_threads)`` before its steps.
    """
    torch.manual_seed(0)
    config = _entropy_sgd_config(num_steps)
    net = get_torch_model(model_name).to(device).train()
    images = torch.randn(num_examples, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (num_examples,), device=device)
    perm = torch.randperm(num_examples, device=device)
    optimizer = EntropySGD(
        net.parameters(),
        lr=config.lr * config.gamma,  # relaxjax's outer rate lr·γ_t at t = 0
        gamma=config.gamma,
        scoping=config.scoping,
        num_steps=num_steps,
        step_size=config.step_size,
        noise=config.noise,
        alpha=config.alpha,
        momentum=config.momentum,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    batches_per_pass = num_examples // batch_size
    cursor = {"batch": 0}

    def closure() -> torch.Tensor:
        start = (cursor["batch"] % batches_per_pass) * batch_size
        cursor["batch"] += 1
        index = perm[start : start + batch_size]
        optimizer.zero_grad()
        loss = F.cross_entropy(net(images[index]), labels[index])
        loss.backward()
        return loss

    def run(n: int) -> None:
        torch.set_num_threads(num_threads)
        for _ in range(n):
            optimizer.step(closure)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    start = time.perf_counter()
    run(1)
    return run, time.perf_counter() - start


# --------------------------------------------------------------------------- timing


def build_cases(args: argparse.Namespace, device: str) -> list[Case]:
    """Every implementation for every model on ``device`` ("cpu" or "cuda")."""
    jax_device = jax.devices("cpu" if device == "cpu" else "gpu")[0]
    common = (args.L, args.batch_size, args.num_examples)
    cases = []
    for model in args.models:
        for unroll in args.unroll:
            value = {"default": None, "true": True}[unroll]
            run, setup = relaxjax_runner(model, *common, jax_device, value)
            cases.append(Case("relaxjax", f"unroll={unroll}", model, device, run, setup))
        for threads in args.torch_threads if device == "cpu" else [torch.get_num_threads()]:
            run, setup = pytorch_runner(model, *common, device, threads)
            variant = f"eager, {threads} thread{'s' if threads > 1 else ''}"
            cases.append(Case("pytorch", variant, model, device, run, setup))
    return cases


def time_cases(cases: list[Case], rounds: int, steps: int) -> None:
    """Interleaves the cases: each round times ``steps`` outer steps of every case."""
    for r in range(rounds):
        order = cases if r % 2 == 0 else cases[::-1]
        for case in order:
            start = time.perf_counter()
            case.run(steps)
            case.seconds_per_step.append((time.perf_counter() - start) / steps)
        print(f"  round {r + 1}/{rounds} done", flush=True)


def summarize(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    """The case's figures: median outer step, per gradient evaluation and per effective epoch."""
    step_s = statistics.median(case.seconds_per_step)
    grad_s = step_s / args.L
    return {
        "impl": case.impl,
        "variant": case.variant,
        "model": case.model,
        "device": case.device,
        "outer_step_ms_median": 1e3 * step_s,
        "outer_step_ms_min": 1e3 * min(case.seconds_per_step),
        "outer_step_ms_max": 1e3 * max(case.seconds_per_step),
        "outer_step_ms_per_round": [1e3 * s for s in case.seconds_per_step],
        "grad_eval_ms": 1e3 * grad_s,
        "effective_epoch_s": grad_s * args.epoch_size / args.batch_size,
        "setup_s": case.setup_s,
    }


def add_ratios(rows: list[dict[str, Any]], machine_threads: int) -> None:
    """Adds each row's time per effective epoch over PyTorch's, on the same model and device.

    ``ratio_vs_pytorch``: over PyTorch with as many threads as the machine has
    cores (the baseline of the issue); ``ratio_vs_fastest_pytorch``: over the
    fastest PyTorch variant measured (the conservative comparison: on a loaded
    machine, OpenMP with fewer threads can be faster). ``meets_target`` uses
    the latter. Per effective epoch = per gradient evaluation: both
    implementations take L gradient evaluations per outer step.
    """
    for row in rows:
        same = [
            r
            for r in rows
            if r["impl"] == "pytorch" and (r["model"], r["device"]) == (row["model"], row["device"])
        ]
        if not same:
            row.update(ratio_vs_pytorch=None, ratio_vs_fastest_pytorch=None, meets_target=None)
            continue
        machine = [r for r in same if r["variant"].startswith(f"eager, {machine_threads} ")]
        baseline = (machine or same)[0]["effective_epoch_s"]
        fastest = min(r["effective_epoch_s"] for r in same)
        row["ratio_vs_pytorch"] = row["effective_epoch_s"] / baseline
        row["ratio_vs_fastest_pytorch"] = row["effective_epoch_s"] / fastest
        meets = row["ratio_vs_fastest_pytorch"] <= TARGET_RATIO
        row["meets_target"] = meets if row["impl"] == "relaxjax" else None


# --------------------------------------------------------------------------- reporting


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(
    args: argparse.Namespace, argv: Sequence[str], devices: list[str]
) -> dict[str, Any]:
    """Command line, machine, versions and date of the run."""
    return {
        "command": shlex.join(["python", SCRIPT, *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": _usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "jax": jax.__version__,
            "jaxlib": _version("jaxlib"),
            "torch": torch.__version__,
            "relaxjax": relaxjax.__version__,
            "optax": optax.__version__,
            "flax": _version("flax"),
        },
        "devices": devices,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_devices": [str(d) for d in jax.devices()],
        "torch_num_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "relaxjax_default_unroll": relaxjax_default_unroll(args.L),
        "settings": {
            "models": args.models,
            "L": args.L,
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "steps": args.steps,
            "num_examples": args.num_examples,
            "epoch_size": args.epoch_size,
            "unroll": args.unroll,
            "torch_threads": args.torch_threads,
        },
        "note": args.note,
    }


def _fmt(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}"


def markdown(env: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown page with a table."""
    s = env["settings"]
    load = env["load_average"]
    threads = env["cpu_cores_usable"]
    lines = [
        "# relaxjax vs. eager PyTorch Entropy-SGD",
        "",
        f"- command: `{env['command']}`",
        f"- date (UTC): {env['date']}",
        f"- machine: {env['cpu_model']}, {env['cpu_cores']} cores "
        f"({env['cpu_cores_usable']} usable); {env['platform']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- PyTorch threads: {env['torch_num_threads']}; JAX devices: "
        f"{', '.join(env['jax_devices'])}; relaxjax default inner-scan unroll at "
        f"L={s['L']}: {env['relaxjax_default_unroll']}; XLA_FLAGS: "
        f"`{env.get('xla_flags', '')}`",
        f"- L = {s['L']}, batch {s['batch_size']}, {s['rounds']} rounds x {s['steps']} outer "
        f"steps per implementation (interleaved, order alternating), median per outer step; "
        f"effective epoch = {s['epoch_size']}/{s['batch_size']} gradient evaluations",
        f"- load average (1, 5, 15 min) before: {load['before']}, after: {load['after']}",
    ]
    if env["note"]:
        lines.append(f"- note: {env['note']}")
    lines += [
        "",
        "| device | model | implementation | ms / outer step (median) | min-max | "
        f"ms / gradient eval | s / effective epoch | ratio vs PyTorch ({threads} threads) | "
        "ratio vs fastest PyTorch | <= 0.8 vs fastest? | setup s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        ratio, fastest = (_fmt(r[k]) for k in ("ratio_vs_pytorch", "ratio_vs_fastest_pytorch"))
        target = {None: "", True: "yes", False: "no"}[r["meets_target"]]
        lines.append(
            f"| {r['device']} | {r['model']} | {r['impl']} ({r['variant']}) "
            f"| {r['outer_step_ms_median']:.1f} "
            f"| {r['outer_step_ms_min']:.1f}-{r['outer_step_ms_max']:.1f} "
            f"| {r['grad_eval_ms']:.2f} | {r['effective_epoch_s']:.2f} | {ratio} | {fastest} "
            f"| {target} | {r['setup_s']:.1f} |"
        )
    lines += [
        "",
        "Ratios are relaxjax / PyTorch time per effective epoch (equal to the ratio per "
        "gradient evaluation: both take L gradient evaluations per outer step), against "
        "PyTorch with one thread per core and against the fastest PyTorch thread count "
        "measured (on a loaded machine, OpenMP with fewer threads can be faster). "
        "Setup = relaxjax compilation + first step, PyTorch first step (not in the medians). "
        "Data are random arrays of MNIST shape held on the device; no input pipeline is timed.",
        "",
    ]
    return "\n".join(lines)


def write_results(
    out_dir: Path, env: dict[str, Any], rows: list[dict[str, Any]], stem: str = "pytorch_comparison"
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"environment": env, "results": rows}
    write_json(out_dir / f"{stem}.json", payload)
    (out_dir / f"{stem}.md").write_text(markdown(env, rows))


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["mnistfc", "lenet"])
    p.add_argument("--L", type=int, default=20, help="inner steps per outer step")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="outer steps per round")
    p.add_argument("--num-examples", type=int, default=60000, help="size of the random data")
    p.add_argument("--epoch-size", type=int, default=60000, help="examples per effective epoch")
    p.add_argument(
        "--unroll",
        nargs="+",
        choices=["default", "true"],
        default=["default", "true"],
        help="relaxjax variants: the library's default scan unroll, and/or unroll=True",
    )
    p.add_argument(
        "--torch-threads",
        nargs="+",
        type=int,
        default=None,
        help="PyTorch CPU thread counts to time (default: one per core, and 1)",
    )
    p.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=None)
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    p.add_argument("--note", default="", help="free text recorded with the results")
    p.add_argument(
        "--stem", default="pytorch_comparison", help="results file name, without extension"
    )
    p.add_argument("--smoke", action="store_true", help="tiny run: 1 round, 1 step, L=2")
    args = p.parse_args(argv)
    if args.torch_threads is None:
        args.torch_threads = sorted({_usable_cores(), 1}, reverse=True)
    if args.smoke:
        args.rounds, args.steps, args.L = 1, 1, 2
        args.num_examples = min(args.num_examples, 4 * args.batch_size * args.L)
    if args.num_examples < args.batch_size * args.L:
        p.error("--num-examples must hold at least one outer step (batch-size x L)")
    return args


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def available_devices() -> list[str]:
    """CPU, plus CUDA when both PyTorch and JAX see a GPU."""
    jax_gpu = any(d.platform == "gpu" for d in jax.devices())
    return ["cpu", "cuda"] if torch.cuda.is_available() and jax_gpu else ["cpu"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    apply_cpu_settings()  # as `relaxjax train` does; before JAX starts
    args = parse_args(argv)
    devices = args.devices or available_devices()
    torch.set_num_threads(_usable_cores())
    env = environment(args, argv, devices)
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for device in devices:
        print(f"[{device}] compiling / warming up {', '.join(args.models)} ...", flush=True)
        cases = build_cases(args, device)
        time_cases(cases, args.rounds, args.steps)
        rows += [summarize(case, args) for case in cases]
    add_ratios(rows, _usable_cores())
    env["load_average"] = {
        "before": load_before,
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    write_results(args.out_dir, env, rows, args.stem)
    print(markdown(env, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
