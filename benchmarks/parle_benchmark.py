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

    python benchmarks/parle_benchmark.py                  # ~12 min on 2 cores; writes results/
    python benchmarks/parle_benchmark.py --budget 600     # longer runs
    python benchmarks/parle_benchmark.py --smoke          # seconds; what the test runs
"""

from __future__ import annotations

import argparse
import json
import os
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
    p.add_argument("--budget", type=float, default=120.0, help="training seconds per method")
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
    p.add_argument("--report-only", action="store_true", help="re-render parle.md from the json")
    args = p.parse_args(argv)
    if args.smoke:
        args.budget, args.evals, args.num_steps, args.batch_size = 0.5, 1, 2, 32
        args.train_limit, args.test_limit, args.timing_steps = 1024, 100, 1
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


def _config(args, method: str, devices: int | None, replicas: int | None = None, dataset=None):
    from relaxjax.train import cli

    argv = ["train", "--model", args.model, "--optimizer", method, "--lr-milestones"]
    argv += ["--dataset", dataset] if dataset else []
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
        from relaxjax.train.optimizers import make_optimizer

        self.config, self.T = config, T
        self.n_train = len(data.train_labels)
        self.inner = config.optimizer.inner_steps
        self.steps_per_epoch = self.n_train // (config.batch_size * self.inner)
        model = models.get_model(config.model, num_classes=data.num_classes)
        mesh = T.loop.run_mesh(config, lambda _: None)
        self.mesh = mesh
        tx = make_optimizer(config.optimizer, self.steps_per_epoch, seed=config.seed, mesh=mesh)
        self.state, step, self.eval_state = T.loop.initial_state_and_step(
            config, model, tx, data.train_images[:1], mesh
        )
        self.data = T.loop.place_data(data, mesh)
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
    if args.smoke:  # one multi-device point
        points = [("parle", 2, 2)]
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
    """The shared machine record (``_env``), plus the simulated devices and the host's load."""
    import jax
    from _env import machine as host

    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "not available"
    return (
        f"{host()}, {jax.device_count()} simulated devices; 1-min load average {load} "
        "at the end (other work shared the host)"
    )


def versions() -> str:
    from _env import versions as library_versions

    return library_versions()


LINK_BYTES_PER_SECOND = 25e9  # assumed for the projection: ~200 Gb/s per device
HOP_LATENCY_SECONDS = 10e-6  # assumed per step of a collective


def _allreduce_seconds(payload: float, n: int) -> float:
    """Ring all-reduce time of ``payload`` bytes over n devices under the assumptions above."""
    if n < 2:
        return 0.0
    return 2 * (n - 1) / n * payload / LINK_BYTES_PER_SECOND + 2 * (n - 1) * HOP_LATENCY_SECONDS


def _projection(result: dict) -> list[str]:
    """Per-outer-step communication of Parle and data-parallel Entropy-SGD at scale."""
    param_bytes, rows, L = result["parameter_bytes"], result["scaling"], result["L"]
    esgd = [r for r in rows if r["method"] == "entropy-sgd" and r["devices"] > 1]
    dp = max(esgd, key=lambda r: r["devices"]) if esgd else None
    lines = [
        "| devices | Parle (1 replica / device): MB sent per device | collectives | "
        "all-reduce time (ms) | data-parallel Entropy-SGD: MB sent per device | "
        "collectives | their time (ms) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in (2, 4, 64, 1024, 4096):
        parle = 2 * (n - 1) / n * param_bytes
        cells = [
            f"{n}",
            f"{parle / 1e6:.2f}",
            "1",
            f"{1e3 * _allreduce_seconds(param_bytes, n):.2f}",
        ]
        if dp is not None:
            payload = dp["bytes_per_outer_step"]
            seconds = sum(
                _allreduce_seconds(payload / dp["collectives"], n) for _ in range(dp["collectives"])
            )
            cells += [f"{2 * (n - 1) / n * payload / 1e6:.2f}", str(dp["collectives"])]
            cells += [f"{1e3 * seconds:.2f}" if n <= result["batch_size"] else "batch < devices"]
        else:
            cells += ["n/a"] * 3
        lines.append("| " + " | ".join(cells) + " |")
    del L
    return lines


def _paragraph(result: dict) -> str:
    """How cost grows with replicas and devices: measured here, projected beyond."""
    rows, param_bytes, L = result["scaling"], result["parameter_bytes"], result["L"]
    parle = {r["replicas"]: r for r in rows if r["method"] == "parle"}
    esgd = {r["devices"]: r for r in rows if r["method"] == "entropy-sgd"}
    if not parle or 1 not in parle:
        return ""
    t1, top = parle[1]["seconds_per_outer_step"], max(parle)
    times = ", ".join(f"{parle[n]['seconds_per_outer_step']:.2f} s" for n in sorted(parle))
    ratios = ", ".join(f"{parle[n]['seconds_per_outer_step'] / t1:.2f}" for n in sorted(parle))
    payloads = sorted({parle[n]["bytes_per_outer_step"] for n in parle if n > 1})
    comm_big = _allreduce_seconds(param_bytes, 4096)
    text = (
        f"**How the cost grows.** Measured here (simulated devices sharing "
        f"{os.cpu_count()} cores): one Parle outer step with n = 1 … {top} replicas, one "
        f"per device, takes {times} (×{ratios} the one-replica step): each replica does "
        f"its own L = {L} gradient evaluations, so on shared cores the compute grows "
        f"linearly with n, while the communication does not grow: the compiled step of "
        f"every n > 1 holds exactly one collective, the all-reduce of x̄ "
        f"({', '.join(f'{b / 1e6:.3f} MB' for b in payloads)} of payload = the "
        f"{param_bytes / 1e6:.3f} MB of float32 parameters, whatever n). With one device "
        f"per replica the compute of an outer step stays that of one replica "
        f"({t1:.2f} s here) and n replicas consume n·L mini-batches per outer step, so "
        f"effective epochs per second grow n-fold; the added cost is that one all-reduce "
        f"every L gradient evaluations: a ring sends 2(n−1)/n × {param_bytes / 1e6:.3f} MB "
        f"< {2 * param_bytes / 1e6:.3f} MB per device, about "
        f"{1e3 * _allreduce_seconds(param_bytes, 4):.2f} ms at n = 4 and "
        f"{1e3 * comm_big:.2f} ms at n = 4096 (projected, assuming "
        f"{LINK_BYTES_PER_SECOND / 1e9:.0f} GB/s per device and "
        f"{HOP_LATENCY_SECONDS * 1e6:.0f} µs per ring step; the latency term 2(n−1)·α "
        f"dominates at large n, a tree all-reduce would make it 2·log₂n·α), i.e. "
        f"{100 * comm_big / t1:.2f}% of the one-replica step time measured here."
    )
    if len(esgd) > 1:
        d_top = max(esgd)
        e = esgd[d_top]
        text += (
            f" Data-parallel Entropy-SGD on d devices instead communicates at every inner "
            f"step: its compiled step holds {e['collectives']} collectives per outer step "
            f"(gradients and BatchNorm statistics, {e['bytes_per_outer_step'] / 1e6:.3f} MB "
            f"of payload, ~L× Parle's), measured at "
            + ", ".join(
                f"{esgd[d]['seconds_per_outer_step']:.2f} s (d = {d})" for d in sorted(esgd)
            )
            + f" per outer step here, and it cannot use more devices than the batch has "
            f"examples (B = {result['batch_size']}); Parle scales by adding replicas, each "
            f"with a full batch."
        )
    return text


def _reading(result: dict) -> str:
    """What the equal-wall-clock table says, and what a device per replica would change."""
    runs = {r["method"]: r for r in result["runs"]}
    ones = [r for r in result["scaling"] if r["method"] == "parle" and r["replicas"] == 1]
    if not {"parle", "entropy-sgd", "sgd"} <= set(runs) or not ones:
        return ""
    parle, esgd = runs["parle"], runs["entropy-sgd"]
    steps = {m: r["curve"][-1]["outer_steps"] for m, r in runs.items()}
    budget, t1 = result["budget_seconds"], ones[0]["seconds_per_outer_step"]
    projected = budget / (t1 + _allreduce_seconds(result["parameter_bytes"], result["replicas"]))
    per_epoch = parle["curve"][-1]["outer_steps"] / parle["curve"][-1]["effective_epochs"]
    best = min(runs.values(), key=lambda r: r["final_test_error"])
    return (
        f"**Reading.** At equal wall-clock on this host the {result['replicas']} replicas "
        f"share the cores, so Parle takes {steps['parle']} outer steps (each replica "
        f"{steps['parle']} Entropy-SGD steps) where Entropy-SGD takes {steps['entropy-sgd']}; "
        f"both do about the same number of gradient evaluations "
        f"({parle['curve'][-1]['effective_epochs']:.2f} vs "
        f"{esgd['curve'][-1]['effective_epochs']:.2f} effective epochs), and after this short "
        f"budget {best['method']} has the lowest test error "
        f"({100 * best['final_test_error']:.2f}%; Parle's x̄ "
        f"{100 * parle['final_test_error']:.2f}%, Entropy-SGD "
        f"{100 * esgd['final_test_error']:.2f}%). The paper's gains of Parle (LeNet MNIST "
        f"0.44% vs 0.50% for SGD) come from full training runs, which this budget does not "
        f"reach. With one device per replica an outer step would cost about the one-replica "
        f"step measured here ({t1:.2f} s) plus one all-reduce, i.e. about "
        f"{projected:.0f} outer steps ({projected / per_epoch:.1f} effective epochs) in the "
        f"same {budget:g} s (projected, not measured)."
    )


def write_markdown(result: dict, out_dir: Path) -> None:
    """``parle.md`` from the results dictionary (``--report-only`` re-renders it)."""
    lines = [
        "# Parle vs Entropy-SGD vs SGD at equal wall-clock (simulated devices)",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}",
        f"- versions: {result['versions']}",
        f"- date: {result['date']}",
        f"- MNIST {result['model']}, batch {result['batch_size']}, L = {result['L']}; Parle "
        f"with {result['replicas']} replicas; the `relaxjax train` defaults of each method "
        f"(constant learning rate: no milestones); {result['budget_seconds']:g} s of training "
        "per method (compilation and evaluation excluded; reduced from the paper's budgets "
        "to keep the run under 15 minutes). Test error of x̄ for Parle (with the replicas' "
        "averaged BatchNorm statistics). Effective epochs count the gradient evaluations of "
        "all replicas.",
        "",
        "| method | mesh (replica × data) | s / outer step | gradients / outer step | "
        "effective epochs | final test error (%) | test error during the run (%) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in result["runs"]:
        mesh = "×".join(str(v) for v in r["mesh"].values()) if r["mesh"] else "1"
        curve = ", ".join(f"{100 * c['test_error']:.2f} @ {c['seconds']:.0f} s" for c in r["curve"])
        lines.append(
            f"| {r['method']} | {mesh} | {r['seconds_per_outer_step']:.3f} | "
            f"{r['gradient_evaluations_per_outer_step']} | "
            f"{r['curve'][-1]['effective_epochs']:.2f} | {100 * r['final_test_error']:.2f} | "
            f"{curve} |"
        )
    lines += [
        "",
        "## Communication per outer step (measured: compiled HLO)",
        "",
        "Every collective of the compiled training step, loop bodies counted by their trip "
        "count. Payload = result shape of the collective; ring = bytes each device sends "
        "in a ring implementation (2(g−1)/g × payload for an all-reduce over g devices).",
        "",
        "| method | collectives | payload (MB) | ring bytes / device (MB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for method, c in result["communication"].items():
        lines.append(
            f"| {method} | {c['collectives']} | {c['bytes_per_outer_step'] / 1e6:.3f} | "
            f"{c['ring_bytes_per_device'] / 1e6:.3f} |"
        )
    lines += [
        "",
        "## Cost against replicas and devices (measured)",
        "",
        "Parle with n replicas on n devices (mesh n × 1); data-parallel Entropy-SGD on d "
        "devices (mesh 1 × d). Simulated devices share the host's cores.",
        "",
        "| method | devices | replicas | s / outer step | collectives | payload (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["scaling"]:
        lines.append(
            f"| {r['method']} | {r['devices']} | {r['replicas']} | "
            f"{r['seconds_per_outer_step']:.3f} | {r['collectives']} | "
            f"{r['bytes_per_outer_step'] / 1e6:.3f} |"
        )
    lines += [
        "",
        "## Projected communication at scale",
        "",
        f"From the measured per-step communication ({result['parameter_bytes'] / 1e6:.3f} MB "
        "of float32 parameters) with a ring all-reduce, "
        f"{LINK_BYTES_PER_SECOND / 1e9:.0f} GB/s per device and "
        f"{HOP_LATENCY_SECONDS * 1e6:.0f} µs per ring step (assumptions, not measurements).",
        "",
        *_projection(result),
        "",
        _paragraph(result),
        "",
        _reading(result),
        "",
    ]
    (out_dir / "parle.md").write_text("\n".join(lines) + "\n")


def write_results(out_dir: Path, command: str, args, runs, comm, rows, param_bytes) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
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
        "runs": runs,
        "communication": comm,
        "scaling": rows,
    }
    from _env import write_json

    write_json(out_dir / "parle.json", result)
    write_markdown(result, out_dir)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        out_dir = Path(args.out_dir)
        write_markdown(json.loads((out_dir / "parle.json").read_text()), out_dir)
        return 0
    if "jax" in sys.modules:
        raise RuntimeError("run this script in a fresh process: it sets the simulated devices")
    # Simulated devices share the host's cores: on a busy host one device's program can
    # lag the others' by more than XLA's default 40 s collective timeout.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={args.devices}"
        + " --xla_cpu_collective_call_terminate_timeout_seconds=600"
        + " --xla_cpu_collective_timeout_seconds=600"
    )
    import jax
    from _env import command_line

    from relaxjax import models
    from relaxjax.train import load_data

    command = command_line(__file__, argv)
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
