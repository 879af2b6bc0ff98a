"""Parle vs Entropy-SGD vs SGD on MNIST LeNet at equal wall-clock, on simulated devices.

Parle (Chaudhari et al., *Parle: parallelizing stochastic gradient descent*,
2017) runs n Entropy-SGD replicas coupled to a reference x̄ and communicates
once per outer step. This script, in one process with ``--devices`` simulated
CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count``):

1. trains LeNet on MNIST with ``relaxjax train``'s step functions, each
   method for the same training wall-clock budget (compilation and evaluation
   excluded), evaluating the test error at fixed fractions of the budget:
   ``parle`` (n replicas on the mesh axis ``'replica'``), ``entropy-sgd`` and
   ``sgd`` (data parallel over the ``'data'`` axis);
2. measures the communication of one outer step from the compiled HLO: every
   collective (all-reduce, all-gather, ...) with its payload, multiplied by the
   trip count of the loop it sits in;
3. times one outer step of Parle as the replicas go 1 … ``--devices`` (one
   device per replica) and of data-parallel Entropy-SGD as devices go 1 …
   ``--devices``, with the communication of each.

Simulated devices share the host's cores, so here n replicas cost n times
the compute of one: the wall-clock comparison is at equal total compute. On
real devices each replica has its own; ``results/parle.md`` projects that
case from the measured per-step communication.

    python benchmarks/parle_benchmark.py                  # ~12 min on 2 cores, writes results/
    python benchmarks/parle_benchmark.py --budget 600     # longer runs
    python benchmarks/parle_benchmark.py --smoke          # seconds; what the test runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

METHODS = ("parle", "entropy-sgd", "sgd")
_DTYPE_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2}
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_OP = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+ = (?P<shape>.+?) (?P<kind>"
    + "|".join(_COLLECTIVES)
    + r")(?:-start)?\((?P<rest>.*)$"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=150.0, help="training seconds per method")
    p.add_argument("--evals", type=int, default=6, help="test evaluations per run")
    p.add_argument("--devices", type=int, default=4, help="simulated CPU devices")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("-L", "--num-steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--model", default="lenet")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--timing-steps", type=int, default=3, help="timed steps per scaling point")
    p.add_argument("--scaling-max", type=int, default=None, help="largest scaling point [devices]")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    p.add_argument("--smoke", action="store_true", help="tiny settings, for the test")
    args = p.parse_args(argv)
    if args.smoke:
        args.budget, args.evals, args.num_steps, args.batch_size = 1.0, 1, 2, 32
        args.train_limit, args.test_limit, args.timing_steps = 1024, 200, 1
        args.model, args.scaling_max = "mnistfc", 2
    args.scaling_max = min(args.scaling_max or args.devices, args.devices)
    return args


# --------------------------------------------------------------------------- communication


def _bytes(shape: str) -> int:
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape):
        size = 1
        for d in filter(None, dims.split(",")):
            size *= int(d)
        total += size * _DTYPE_BYTES.get(dtype, 1)
    return total


def _group_size(rest: str) -> int | None:
    if m := re.search(r"replica_groups=\[([\d,]+)\]<=", rest):
        return int(m.group(1).split(",")[-1])
    if m := re.search(r"replica_groups=\{\{([\d,]*)\}", rest):
        return len(m.group(1).split(","))
    if m := re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", rest):
        sizes = dict(re.findall(r"'(\w+)'=(\d+)", m.group(1)))
        size = 1
        for axis in re.findall(r"'(\w+)'", m.group(2)):
            size *= int(sizes.get(axis, 1))
        return size
    return None


def _computations(hlo: str) -> tuple[dict[str, list[str]], str]:
    computations: dict[str, list[str]] = {}
    entry, current = "", None
    for line in hlo.splitlines():
        header = re.match(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if header and not line.startswith(" "):
            current = header.group(2)
            computations[current] = []
            entry = current if header.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None:
            computations[current].append(line)
    return computations, entry


def communication(hlo: str) -> dict[str, Any]:
    """Collectives executed by one call of a compiled module, from its HLO text.

    Loop bodies count ``known_trip_count`` times (once if XLA did not record
    it; ``unknown_trip_counts`` says how often). ``bytes`` is the payload
    (result shape) of each collective; ``ring_bytes_per_device`` what each
    device sends in a ring implementation: 2(g−1)/g of it for an all-reduce
    over g devices, (g−1)/g for an all-gather / reduce-scatter.
    """
    computations, entry = _computations(hlo)
    ops: list[dict[str, Any]] = []
    unknown = 0

    def visit(name: str, times: int, depth: int = 0) -> None:
        nonlocal unknown
        for line in computations.get(name, []):
            if m := _OP.match(line):
                payload, group = _bytes(m["shape"]), _group_size(m["rest"])
                ops.append({"kind": m["kind"], "bytes": payload, "group": group, "times": times})
            elif " while(" in line and (body := re.search(r"body=%?([\w.\-]+)", line)):
                trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
                unknown += trip is None
                visit(body.group(1), times * (int(trip.group(1)) if trip else 1), depth + 1)
            elif re.search(r" (call|conditional)\(", line):
                for callee in re.findall(
                    r"(?:to_apply|branch_computations|true_computation|false_computation)="
                    r"\{?%?([\w.\-]+)",
                    line,
                ):
                    visit(callee, times, depth + 1)

    visit(entry, 1)
    ring = 0.0
    for op in ops:
        g = op["group"] or 1
        share = 2 * (g - 1) / g if op["kind"] == "all-reduce" else (g - 1) / g
        ring += share * op["bytes"] * op["times"]
    return {
        "collectives": sum(op["times"] for op in ops),
        "bytes_per_outer_step": sum(op["bytes"] * op["times"] for op in ops),
        "ring_bytes_per_device": ring,
        "unknown_trip_counts": unknown,
        "ops": ops,
    }


# --------------------------------------------------------------------------- training


def _config(args, method: str, devices: int | None, replicas: int | None = None):
    from relaxjax import cli

    argv = ["train", "--model", args.model, "--optimizer", method, "--lr-milestones"]
    argv += ["-L", str(args.num_steps), "--batch-size", str(args.batch_size)]
    argv += ["--replicas", str(replicas or args.replicas)]
    for flag, value in (
        ("--devices", devices),
        ("--train-limit", args.train_limit),
        ("--test-limit", args.test_limit),
        ("--data-dir", args.data_dir),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return cli.config_from_args(cli.build_parser().parse_args(argv))


class _Run:
    """A method's compiled step, state and data, built with ``relaxjax.train``'s pieces."""

    def __init__(self, config, data):
        from relaxjax import models
        from relaxjax import train as T
        from relaxjax.optimizers import make_optimizer

        self.config, self.T = config, T
        self.n_train = len(data.train_labels)
        self.inner = config.optimizer.inner_steps
        self.steps_per_epoch = self.n_train // (config.batch_size * self.inner)
        model = models.get_model(config.model, num_classes=data.num_classes)
        mesh = T._make_mesh(config, lambda _: None)
        self.mesh = mesh
        tx = make_optimizer(config.optimizer, self.steps_per_epoch, seed=config.seed, mesh=mesh)
        self.state, step, self.eval_state = T._build(config, model, tx, data.train_images[:1], mesh)
        self.data = T._place_data(data, mesh)
        self.evaluate = T.make_eval_fn(model, config.eval_batch_size)
        self.step_count, self.perm, self.perm_epoch = 0, None, None
        start = time.perf_counter()
        self.step = step.lower(*self._args()).compile()
        self.compile_seconds = time.perf_counter() - start
        self.comm = communication(self.step.as_text())

    def _args(self):
        epoch, step_in_epoch = divmod(self.step_count, self.steps_per_epoch)
        if self.perm_epoch != epoch:
            self.perm = self.T.epoch_permutation(self.config.seed, epoch, self.n_train)
            self.perm_epoch = epoch
        images, labels = self.data.train_images, self.data.train_labels
        return self.state, images, labels, self.perm, step_in_epoch

    def advance(self) -> dict:
        self.state, metrics = self.step(*self._args())
        self.step_count += 1
        return metrics

    def test_error(self) -> float:
        params, model_state = self.state.params, self.eval_state(self.state.model_state)
        return self.evaluate(params, model_state, self.data.test_images, self.data.test_labels)[1]


def train_for(run: _Run, budget: float, evals: int) -> dict[str, Any]:
    """Steps ``run`` for ``budget`` training seconds; test error at every budget/evals."""
    curve, seconds, next_eval = [], 0.0, budget / evals
    while seconds < budget:
        start = time.perf_counter()
        float(run.advance()["loss"])  # wait for the step
        seconds += time.perf_counter() - start
        if seconds >= next_eval or seconds >= budget:
            curve.append(
                {
                    "seconds": seconds,
                    "outer_steps": run.step_count,
                    "effective_epochs": run.step_count / run.steps_per_epoch,
                    "test_error": run.test_error(),
                }
            )
            next_eval += budget / evals
    return {
        "method": run.config.optimizer.name,
        "mesh": dict(run.mesh.shape) if run.mesh is not None else None,
        "compile_seconds": run.compile_seconds,
        "seconds_per_outer_step": seconds / run.step_count,
        "gradient_evaluations_per_outer_step": run.inner,
        "curve": curve,
        "final_test_error": curve[-1]["test_error"],
    }


def time_steps(run: _Run, steps: int) -> float:
    """Median seconds per outer step after compilation."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        float(run.advance()["loss"])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scaling(args, data) -> list[dict[str, Any]]:
    rows = []
    top = args.scaling_max
    points = [("parle", n, n) for n in range(1, top + 1)]
    points += [("entropy-sgd", d, 1) for d in sorted({1, 2, top}) if d <= top]
    if args.smoke:  # one multi-device point of each
        points = [("parle", 2, 2), ("entropy-sgd", 2, 1)]
    for method, devices, replicas in points:
        run = _Run(_config(args, method, devices, replicas), data)
        row = {
            "method": method,
            "devices": devices,
            "replicas": replicas,
            "mesh": dict(run.mesh.shape),
            "seconds_per_outer_step": time_steps(run, args.timing_steps),
            "gradient_evaluations_per_outer_step": run.inner,
            **{k: run.comm[k] for k in ("collectives", "bytes_per_outer_step")},
            "ring_bytes_per_device": run.comm["ring_bytes_per_device"],
        }
        print(
            f"scaling {method:12s} devices {devices} replicas {replicas}: "
            f"{row['seconds_per_outer_step']:.3f} s/step, {row['collectives']} collectives, "
            f"{row['bytes_per_outer_step'] / 1e6:.3f} MB",
            flush=True,
        )
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- report


def machine() -> str:
    import jax

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores (1-min load average {load:.1f} at the end); "
        f"JAX backend {jax.default_backend()} with {jax.device_count()} simulated devices"
    )


def versions() -> str:
    import flax
    import jax
    import jaxlib
    import optax

    import relaxjax

    return (
        f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, optax {optax.__version__}, "
        f"flax {flax.__version__}, relaxjax {relaxjax.__version__}, "
        f"python {sys.version.split()[0]}"
    )


def _projection(param_bytes: int, rows: list[dict]) -> list[str]:
    """Per-outer-step communication of Parle and data-parallel Entropy-SGD at scale."""
    esgd = [r for r in rows if r["method"] == "entropy-sgd" and r["devices"] > 1]
    dp = max(esgd, key=lambda r: r["devices"]) if esgd else None
    lines = [
        "| devices (= replicas for Parle) | Parle: bytes sent per device / outer step | "
        "Parle: collectives / outer step | data-parallel Entropy-SGD: bytes per device | "
        "its collectives |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in (4, 64, 1024, 4096):
        parle = 2 * (n - 1) / n * param_bytes
        if dp is not None:
            per_inner = dp["ring_bytes_per_device"] / (2 * (dp["devices"] - 1) / dp["devices"])
            esgd_bytes = f"{2 * (n - 1) / n * per_inner / 1e6:.2f} MB"
            esgd_count = str(dp["collectives"])
        else:
            esgd_bytes = esgd_count = "n/a"
        lines.append(f"| {n} | {parle / 1e6:.2f} MB | 1 | {esgd_bytes} | {esgd_count} |")
    return lines


def write_results(out_dir: Path, command: str, args, runs, comm, rows, param_bytes) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {
        "command": command,
        "machine": machine(),
        "versions": versions(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": args.model,
        "L": args.num_steps,
        "batch_size": args.batch_size,
        "replicas": args.replicas,
        "budget_seconds": args.budget,
        "parameter_bytes": param_bytes,
    }
    result = {**header, "runs": runs, "communication": comm, "scaling": rows}
    (out_dir / "parle.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Parle vs Entropy-SGD vs SGD at equal wall-clock (simulated devices)",
        "",
        f"- command: `{command}`",
        f"- machine: {header['machine']}",
        f"- versions: {header['versions']}",
        f"- date: {header['date']}",
        f"- MNIST {args.model}, batch {args.batch_size}, L = {args.num_steps}; Parle with "
        f"{args.replicas} replicas; the `relaxjax train` defaults of each method (constant "
        f"learning rate: no milestones); {args.budget:g} s of training per method "
        "(compilation and evaluation excluded). Test error of x̄ (Parle) / x.",
        "",
        "| method | mesh (replica × data) | s / outer step | gradients / outer step | "
        "effective epochs | final test error (%) | error at each budget fraction (%) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in runs:
        mesh = "×".join(str(v) for v in r["mesh"].values()) if r["mesh"] else "1"
        curve = ", ".join(f"{100 * c['test_error']:.2f}" for c in r["curve"])
        lines.append(
            f"| {r['method']} | {mesh} | {r['seconds_per_outer_step']:.3f} | "
            f"{r['gradient_evaluations_per_outer_step']} | "
            f"{r['curve'][-1]['effective_epochs']:.2f} | {100 * r['final_test_error']:.2f} | "
            f"{curve} |"
        )
    lines += [
        "",
        "## Communication per outer step (from the compiled HLO)",
        "",
        "Every collective of the compiled training step, loop bodies counted by their trip "
        "count. Payload = result shape of the collective; ring = bytes each device sends "
        "in a ring all-reduce (2(g−1)/g × payload over g devices).",
        "",
        "| method | collectives | payload (MB) | ring bytes / device (MB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for method, c in comm.items():
        lines.append(
            f"| {method} | {c['collectives']} | {c['bytes_per_outer_step'] / 1e6:.3f} | "
            f"{c['ring_bytes_per_device'] / 1e6:.3f} |"
        )
    lines += [
        "",
        "## Cost against replicas and devices (measured)",
        "",
        "Parle with n replicas on n devices (mesh n × 1), data-parallel Entropy-SGD on d "
        "devices (mesh 1 × d). Simulated devices share the host's cores.",
        "",
        "| method | devices | replicas | s / outer step | collectives | payload (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['devices']} | {r['replicas']} | "
            f"{r['seconds_per_outer_step']:.3f} | {r['collectives']} | "
            f"{r['bytes_per_outer_step'] / 1e6:.3f} |"
        )
    lines += [
        "",
        "## Projected communication at scale",
        "",
        f"From the measured per-step communication (parameters: {param_bytes / 1e6:.3f} MB "
        "in float32) and a ring all-reduce: Parle all-reduces x̄ once per outer step; "
        "data-parallel Entropy-SGD all-reduces the gradient (and BatchNorm statistics) at "
        "every one of its L inner steps.",
        "",
        *_projection(param_bytes, rows),
        "",
    ]
    (out_dir / "parle.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "jax" in sys.modules:
        raise RuntimeError("run this script in a fresh process: it sets the simulated devices")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    )
    import jax

    from relaxjax import models
    from relaxjax.train import load_data

    command = "python benchmarks/parle_benchmark.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    data = load_data(_config(args, "sgd", None))
    runs, comm = [], {}
    for method in METHODS:
        devices = args.devices
        run = _Run(_config(args, method, devices), data)
        comm[method] = run.comm
        result = train_for(run, args.budget, args.evals)
        print(
            f"{method:12s} mesh {result['mesh']}: {result['seconds_per_outer_step']:.3f} s/step, "
            f"{result['curve'][-1]['effective_epochs']:.2f} effective epochs, test error "
            f"{100 * result['final_test_error']:.2f}%, {run.comm['collectives']} collectives "
            f"({run.comm['bytes_per_outer_step'] / 1e6:.3f} MB) per outer step",
            flush=True,
        )
        runs.append(result)
        del run
    rows = scaling(args, data)
    params, _ = models.get_model(args.model).init(jax.random.PRNGKey(0), data.train_images[:1])
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    write_results(Path(args.out_dir), command.strip(), args, runs, comm, rows, param_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
