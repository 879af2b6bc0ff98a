"""The GPU benchmarks: the inner loop, its compile time and memory against L, PyTorch, CIFAR-10.

Run on a machine whose JAX sees a GPU (``pip install -U "jax[cuda12]"``), from anywhere::

    python benchmarks/gpu_benchmarks.py                    # the timings, into results/
    python benchmarks/gpu_benchmarks.py --cifar-seconds 3600 --data-dir ../shared/data
    python benchmarks/gpu_benchmarks.py --no-timings --cifar-seconds 3600 \\
        --cifar-optimizers sgd --cifar-seeds 0           # one All-CNN cell, an hour of it
    python benchmarks/gpu_benchmarks.py --smoke --out-dir /tmp/gpu   # tiny, any backend

It first asks JAX, in a child process, which backend and devices it has; with no GPU it
says so and stops (``--smoke`` runs anyway, on whatever backend there is). Each benchmark
then runs as its own process (``sys.executable``), so that each has the GPU to itself:
this process never starts JAX's backend, which would hold most of the GPU's memory.
Into ``--out-dir`` (``benchmarks/results/``) it writes

* ``inner_loop_gpu.{md,json}``: ``inner_loop.py`` on mnistfc and lenet;
* ``inner_loop_allcnn_gpu.{md,json}``: ``inner_loop.py`` on allcnn at L = 5;
* ``inner_loop_scaling_gpu.{md,json}``: compile time and peak temporary memory (XLA's
  ``temp_size_in_bytes`` of the compiled step) against L, mnistfc and lenet;
* ``pytorch_comparison_gpu.{md,json}``: ``compare_pytorch.py`` on CUDA, when PyTorch
  with CUDA is importable (``pip install ".[bench]"`` with a CUDA build of torch);
  otherwise the summary records that it was skipped, and why;
* ``gpu_benchmarks.{md,json}``: the machine with the GPU's name (``jax.devices()[0]
  .device_kind``, through ``_env.environment``), what ran, its exit status and seconds,
  what was skipped and why. A later call replaces the rows of what it runs again and keeps
  the others (of the same device and settings).

``--cifar-seconds N`` also trains the paper table's All-CNN cells on CIFAR-10
(``paper_table.py --models allcnn``, seed by seed, one cell per process) for at most N
seconds: at the deadline the cell being trained is interrupted as by Ctrl-C (it saves a
checkpoint) and no further cell is started. Each cell's record, finished or in progress,
goes to ``OUT_DIR/paper_runs/``; its run directory (``--runs-dir``, with the checkpoints)
stays, and the next call continues it (``relaxjax train --resume``). Cells recorded in
full are not trained again. Then ``python benchmarks/paper_table.py --report-only
--models mnistfc-dr lenet-dr mnistfc lenet lenet-pytorch allcnn --seeds 0 1 2`` rebuilds the
table and ``python benchmarks/collect_results.py`` RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results"
sys.path.insert(0, str(BENCHMARKS))
from _env import command_line, write_json  # noqa: E402

SUMMARY = "gpu_benchmarks"
INTERRUPT_GRACE_SECONDS = 120.0  # for a checkpoint after the SIGINT, then SIGKILL


@dataclasses.dataclass(frozen=True)
class Job:
    """One benchmark: ``script`` with ``args`` (``smoke_args`` with --smoke), writing
    ``<stem>.md`` and ``<stem>.json``."""

    stem: str
    title: str
    script: str
    args: tuple[str, ...]
    smoke_args: tuple[str, ...]


ALLCNN_CANDIDATES = ("--candidates", "default", "rolled scan, no", "no noise")
JOBS = (
    Job(
        "inner_loop_gpu",
        "inner loop, mnistfc and lenet",
        "inner_loop.py",
        ("--models", "mnistfc", "lenet", "--rounds", "3", "--no-scaling"),
        ("--smoke", "--no-scaling"),
    ),
    Job(
        "inner_loop_allcnn_gpu",
        "inner loop, allcnn at L = 5",
        "inner_loop.py",
        ("--models", "allcnn", "--L", "5", "--rounds", "3", "--repeats", "1", "--no-scaling")
        + ALLCNN_CANDIDATES,
        ("--smoke", "--no-scaling", "--candidates", "no noise"),  # --smoke: mnistfc
    ),
    Job(
        "inner_loop_scaling_gpu",
        "compile time and memory against L",
        "inner_loop.py",
        ("--models", "mnistfc", "lenet", "--scaling-only"),
        ("--smoke", "--scaling-only"),
    ),
    Job(
        "pytorch_comparison_gpu",
        "against an eager PyTorch Entropy-SGD",
        "compare_pytorch.py",
        ("--devices", "cuda"),
        ("--smoke",),  # the CPU, and CUDA when both JAX and PyTorch see a GPU
    ),
)

# Run in a child process: the backend and devices JAX sees, and the environment line
# every benchmark records.
JAX_PROBE = """
import json, jax, _env
devices = jax.devices()
print(json.dumps({**_env.environment(), "backend": jax.default_backend(),
                  "device_kind": devices[0].device_kind, "device_count": len(devices)}))
"""
TORCH_PROBE = """
import json, torch
cuda = torch.cuda.is_available()
print(json.dumps({"version": torch.__version__, "cuda": cuda,
                  "device": torch.cuda.get_device_name(0) if cuda else None}))
"""


def _child_env() -> dict[str, str]:
    paths = [str(ROOT), str(BENCHMARKS), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "PYTHONUNBUFFERED": "1",
    }


def _probe(code: str) -> tuple[dict[str, Any] | None, str]:
    """(what ``code`` printed as its last line, parsed) or (None, why it failed)."""
    found = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_child_env(),
        timeout=600,
    )
    lines = found.stdout.strip().splitlines()
    if found.returncode == 0 and lines:
        return json.loads(lines[-1]), ""
    errors = found.stderr.strip().splitlines()
    return None, errors[-1] if errors else f"exit status {found.returncode}"


def probe_jax() -> dict[str, Any]:
    """``_env.environment()`` with JAX's backend, its first device's kind and the count."""
    found, why = _probe(JAX_PROBE)
    if found is None:
        raise SystemExit(f"could not start JAX in a child process: {why}")
    return found


def no_gpu_note(found: dict[str, Any]) -> str | None:
    """None when JAX's default backend is a GPU, else the sentence saying there is none."""
    if found["backend"] == "gpu":
        return None
    return (
        f"no GPU: JAX's default backend here is {found['backend']!r} "
        f"({found['device_count']} × {found['device_kind']})"
    )


def torch_skip_reason(smoke: bool) -> str | None:
    """Why the PyTorch comparison cannot run here (None: it can). Without --smoke it
    needs PyTorch with CUDA; --smoke times the CPU when PyTorch has no GPU."""
    found, why = _probe(TORCH_PROBE)
    if found is None:
        return f'PyTorch is not importable ({why}); pip install ".[bench]"'
    if not found["cuda"] and not smoke:
        return (
            f"PyTorch {found['version']} sees no GPU (torch.cuda.is_available() is False): "
            "a CUDA build of torch is needed"
        )
    return None


def run(command: list[str], deadline: float | None = None, log=print) -> tuple[int, bool]:
    """Runs ``command`` from the checkout's root; returns (exit status, interrupted).

    At ``deadline`` (``time.monotonic()``) the process gets SIGINT, as on Ctrl-C (a
    training run then saves a checkpoint and stops), and SIGKILL if it is still running
    ``INTERRUPT_GRACE_SECONDS`` later."""
    log(f"$ {_shown(command)}")
    process = subprocess.Popen(command, cwd=ROOT, env=_child_env())
    if deadline is None:
        return process.wait(), False
    try:
        return process.wait(timeout=max(0.0, deadline - time.monotonic())), False
    except subprocess.TimeoutExpired:
        log(f"time box reached: interrupting {Path(command[1]).name}")
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=INTERRUPT_GRACE_SECONDS), True
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(), True


def _shown(command: list[str]) -> str:
    """``command`` as it would be typed at the checkout's root."""
    shown = ["python", *(arg.removeprefix(f"{ROOT}{os.sep}") for arg in command[1:])]
    return shlex.join(shown)


def _row(name: str, title: str, **fields: Any) -> dict[str, Any]:
    row = {"benchmark": name, "title": title, "status": "", "exit_status": None}
    row |= {"seconds": None, "command": None, "files": [], "reason": None}
    return row | fields


def run_job(job: Job, out_dir: Path, smoke: bool, skip: str | None, log=print) -> dict:
    """One timing benchmark into ``out_dir``, or its row saying why it was skipped."""
    if skip:
        log(f"{job.stem}: skipped: {skip}")
        return _row(job.stem, job.title, status="skipped", reason=skip)
    command = [sys.executable, str(BENCHMARKS / job.script)]
    command += [*(job.smoke_args if smoke else job.args), "--stem", job.stem]
    command += ["--out-dir", str(out_dir)]
    start, started = time.perf_counter(), time.time()
    status, _ = run(command, log=log)
    written = [out_dir / f"{job.stem}.{ext}" for ext in ("md", "json")]
    files = [p.name for p in written if p.is_file() and p.stat().st_mtime >= started - 1]
    return _row(
        job.stem,
        job.title,
        status="ran" if status == 0 else "failed",
        exit_status=status,
        seconds=round(time.perf_counter() - start, 1),
        command=_shown(command),
        files=files,
    )


def _reached(record: Path) -> str | None:
    """'reached / budget' effective epochs of a paper-table record, if there is one."""
    if not (record / "metrics.jsonl").is_file():
        return None
    lines = (record / "metrics.jsonl").read_text().splitlines()
    if not lines:
        return None
    reached = json.loads(lines[-1])["effective_epochs"]
    budget = json.loads((record / "config.json").read_text())["epochs"]
    return f"{reached:g} / {budget:g} effective epochs"


def cifar(args: argparse.Namespace, out_dir: Path, log=print) -> list[dict]:
    """The paper table's All-CNN cells, seed by seed, for at most ``args.cifar_seconds``."""
    deadline = time.monotonic() + args.cifar_seconds
    records = out_dir / "paper_runs"
    rows = []
    for seed in args.cifar_seeds:
        for optimizer in args.cifar_optimizers:
            name = f"allcnn-{optimizer}-s{seed}"  # paper_table.run_name
            title = f"paper table: All-CNN on CIFAR-10, {optimizer}, seed {seed}"
            if time.monotonic() >= deadline:
                rows.append(_row(name, title, status="not started: the time box is spent"))
                continue
            command = [sys.executable, str(BENCHMARKS / "paper_table.py"), "--models", "allcnn"]
            command += ["--optimizers", optimizer, "--seeds", str(seed)]
            command += ["--budget-scale", f"{args.budget_scale:g}"]
            command += ["--runs-dir", str(args.runs_dir), "--records-dir", str(records)]
            # This cell's table only: the full one is rebuilt from every record.
            command += ["--out-dir", str(args.runs_dir / "table")]
            command += ["--data-dir", str(args.data_dir)] if args.data_dir else []
            command += ["--smoke"] if args.smoke else []
            start = time.perf_counter()
            status, interrupted = run(command, deadline, log)
            reached = _reached(records / name)
            if interrupted:
                state = "stopped at the time box (the next call continues it)"
            else:
                state = "ran" if status == 0 else "failed"
            rows.append(
                _row(
                    name,
                    title,
                    status=state,
                    exit_status=status,
                    seconds=round(time.perf_counter() - start, 1),
                    command=_shown(command),
                    files=[f"paper_runs/{name}"] if reached else [],
                    reason=reached,
                )
            )
    return rows


def _merged(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with the rows of an earlier summary at ``path`` for the same device
    and settings that this call did not run again."""
    if not path.is_file():
        return summary
    earlier = json.loads(path.read_text())
    same = ("device_kind", "backend", "smoke")
    if any(earlier.get(key) != summary[key] for key in same):
        return summary
    ran = {row["benchmark"] for row in summary["benchmarks"]}
    kept = [row for row in earlier["benchmarks"] if row["benchmark"] not in ran]
    return summary | {"benchmarks": kept + summary["benchmarks"]}


def markdown(summary: dict[str, Any]) -> str:
    gpu = summary["note"] or (
        f"{summary['device_kind']} ({summary['device_count']} device"
        f"{'s' if summary['device_count'] > 1 else ''}, JAX backend {summary['backend']})"
    )
    lines = [
        "# GPU benchmarks",
        "",
        f"- command: `{summary['command']}`",
        f"- GPU: {gpu}",
        f"- machine: {summary['machine']}",
        f"- versions: {summary['versions']}",
        f"- date: {summary['date']}",
    ]
    if summary["smoke"]:
        lines.append(
            "- settings: --smoke (tiny: these files test the script, they measure nothing)"
        )
    lines += [
        "",
        "Each benchmark ran as its own process on this machine; its results file has its "
        "command, machine line and numbers.",
        "",
        "| benchmark | what | status | seconds | files / why |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for row in summary["benchmarks"]:
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.0f}"
        where = ", ".join(f"`{name}`" for name in row["files"])
        detail = "; ".join(text for text in (where, row["reason"]) if text)
        lines.append(
            f"| {row['benchmark']} | {row['title']} | {row['status']} | {seconds} | {detail} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help=f"where the results go [{RESULTS.relative_to(ROOT)}; with --smoke "
        "runs/gpu_benchmarks_smoke]",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny settings on any backend (the test)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="STEM",
        choices=[job.stem for job in JOBS],
        default=None,
        help="run only these timing benchmarks (by result stem) [all]",
    )
    parser.add_argument(
        "--no-timings",
        dest="timings",
        action="store_false",
        help="skip the timing benchmarks (with --cifar-seconds: CIFAR-10 only)",
    )
    parser.add_argument(
        "--cifar-seconds",
        type=float,
        default=0.0,
        help="train the paper table's All-CNN cells on CIFAR-10 for at most this long [0: no]",
    )
    parser.add_argument(
        "--cifar-optimizers",
        nargs="+",
        choices=["sgd", "entropy-sgd", "hj"],
        default=["sgd", "entropy-sgd", "hj"],
    )
    parser.add_argument("--cifar-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget-scale", type=float, default=1.0, help="paper_table.py's")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="holding cifar10-jpeg.tar.gz [relaxjax's]"
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=ROOT / "runs" / "paper_table",
        help="the CIFAR-10 run directories, with their checkpoints [runs/paper_table, "
        "paper_table.py's]",
    )
    args = parser.parse_args(argv)
    default_out = ROOT / "runs" / "gpu_benchmarks_smoke" if args.smoke else RESULTS
    out_dir = (args.out_dir or default_out).resolve()
    args.runs_dir = args.runs_dir.resolve()
    args.data_dir = args.data_dir.resolve() if args.data_dir else None
    command = command_line(__file__, argv)
    found = probe_jax()
    note = no_gpu_note(found)
    if note and not args.smoke:
        print(
            f"{note}. gpu_benchmarks.py measures a GPU: run it on a machine whose JAX sees "
            'one (pip install -U "jax[cuda12]"), or pass --smoke to try the script with '
            "tiny settings on this backend.",
            file=sys.stderr,
        )
        return 2
    print(f"GPU: {note or found['device_kind']}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.timings:
        torch_skip = torch_skip_reason(args.smoke)
        for job in JOBS:
            if args.only is not None and job.stem not in args.only:
                continue
            skip = torch_skip if job.script == "compare_pytorch.py" else None
            rows.append(run_job(job, out_dir, args.smoke, skip))
    if args.cifar_seconds > 0:
        rows += cifar(args, out_dir)
    summary = {
        "command": command,
        **found,
        "gpu": note is None,
        "note": note,
        "smoke": args.smoke,
        "benchmarks": rows,
    }
    summary = _merged(out_dir / f"{SUMMARY}.json", summary)
    write_json(out_dir / f"{SUMMARY}.json", summary)
    (out_dir / f"{SUMMARY}.md").write_text(markdown(summary))
    print(markdown(summary))
    if any(row["benchmark"].startswith("allcnn-") for row in rows):
        print(
            "the paper table with these records: python benchmarks/paper_table.py --report-only "
            "--models mnistfc-dr lenet-dr mnistfc lenet lenet-pytorch allcnn --seeds 0 1 2"
        )
    failed = [row["benchmark"] for row in rows if row["status"] == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
