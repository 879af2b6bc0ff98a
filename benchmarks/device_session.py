"""Prepared calls for a session lent a GPU (the workplace's ``device`` tool).

Device time is scarce (minutes per session), so each device call is one phase below,
prepared and smoke-tested here on the CPU. The device machine's ``python3`` already has
JAX with CUDA, Flax, Optax, Orbax and PyTorch; this checkout travels there uninstalled
(run from its root, ``PYTHONPATH=.``), and what a phase writes under ``--out`` ($OUT)
comes back. ``$OUT`` takes at most 8 files, two folders deep, so each phase writes few.

On this machine, once::

    python benchmarks/device_session.py prepare
        copies the CIFAR-10 JPEG archive into .device/data (git-ignored) and prints
        the device calls, to be given `carry: [".device"]`

Device calls (each at most 10 minutes; ``timeout_s`` a little above ``--seconds``)::

    PYTHONPATH=. python3 benchmarks/device_session.py timings --out $OUT
        inner_loop.py (mnistfc, lenet; allcnn at L = 5) and compare_pytorch.py on the
        GPU, into $OUT/results/*_gpu.{md,json}, with the GPU's name in environment_gpu.txt
    PYTHONPATH=. python3 benchmarks/device_session.py cifar --optimizer sgd --seed 0 \\
        --seconds 480 --out $OUT
        the paper table's All-CNN cell on CIFAR-10, resumed from .device/run if a
        previous call left it there, stopped with a checkpoint after --seconds (as
        Ctrl-C does); the run's record into $OUT/paper_runs/<run>/, and its last
        checkpoint as $OUT/run/<run>.tar.gz.partNN

After each call, here::

    python benchmarks/device_session.py unpack FILES_AT
        results into benchmarks/results/, records into benchmarks/results/paper_runs/,
        the run archive into .device/run/ (carried by the next cifar call to resume);
        then `python benchmarks/paper_table.py --report-only --models ... allcnn` and
        `python benchmarks/collect_results.py`

``--smoke`` runs each device phase with tiny settings on whatever JAX sees (the test).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
DEVICE_DIR = ROOT / ".device"  # git-ignored (.git/info/exclude); carried to the device
CIFAR_ARCHIVE = "cifar10-jpeg.tar.gz"
PART_BYTES = 15 * 2**20  # under the 16 MiB a file from $OUT may have
RUNS_DIR = ROOT / "runs" / "device_paper_table"


def run_name(optimizer: str, seed: int) -> str:
    return f"allcnn-{optimizer}-s{seed}"


# ----------------------------------------------------------------------------- host side


def prepare(shared_data: Path) -> None:
    """Copies the CIFAR archive into .device/data and git-ignores .device."""
    source = shared_data / CIFAR_ARCHIVE
    if not source.is_file():
        raise SystemExit(f"{source} not found: pass --shared-data (the folder holding it)")
    from relaxjax.data.atomic import atomic_copy

    data = DEVICE_DIR / "data"
    if not (data / CIFAR_ARCHIVE).is_file():
        atomic_copy(source, data / CIFAR_ARCHIVE)
    exclude = ROOT / ".git" / "info" / "exclude"
    if exclude.parent.is_dir():
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        if "/.device/" not in lines:
            exclude.write_text("\n".join([*lines, "/.device/"]) + "\n")
    print(f"ready: {data / CIFAR_ARCHIVE}; device calls carry ['.device']:")
    print("  PYTHONPATH=. python3 benchmarks/device_session.py timings --out $OUT")
    print(
        "  PYTHONPATH=. python3 benchmarks/device_session.py cifar --optimizer sgd --seed 0 "
        "--seconds 480 --out $OUT"
    )


def unpack(
    files_at: Path, results: Path = BENCHMARKS / "results", device_dir: Path = DEVICE_DIR
) -> list[Path]:
    """Puts what a device call brought back where the repository keeps it."""
    placed = []
    for path in sorted(files_at.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(files_at)
        top = relative.parts[0]
        if top == "results":
            target = results / relative.name
        elif top == "paper_runs":
            target = results / relative
        elif top == "run":
            target = device_dir / "run" / relative.name
        else:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        placed.append(target)
        print(f"{relative} -> {target}")
    return placed


# --------------------------------------------------------------------------- device side


def _python() -> str:
    return sys.executable or "python3"


def _run(command: list[str], deadline: float, log) -> int:
    """Runs ``command`` from the checkout's root, sending SIGINT at ``deadline`` (a
    training run then checkpoints and stops, as on Ctrl-C) and killing it 60 s later."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    log(f"$ {' '.join(command)}")
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        return process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        log(f"deadline reached: interrupting {command[1]}")
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


def environment_text() -> str:
    lines = []
    try:
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        lines.append(gpus.stdout.strip() or gpus.stderr.strip())
    except (OSError, subprocess.TimeoutExpired) as e:
        lines.append(f"nvidia-smi: {e}")
    # The machine and versions lines every benchmark record carries (benchmarks/_env.py),
    # in a child process: importing JAX here would start its backend in this one.
    probe = "import _env; print(*_env.environment().values(), sep='\\n')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCHMARKS)])}
    found = subprocess.run([_python(), "-c", probe], capture_output=True, text=True, env=env)
    lines.append((found.stdout + found.stderr).strip())
    return "\n".join(lines) + "\n"


def timings(out: Path, seconds: float, smoke: bool, log=print) -> None:
    deadline = time.monotonic() + seconds
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "environment_gpu.txt").write_text(environment_text())
    log((results / "environment_gpu.txt").read_text())
    common = ["--out-dir", str(results)]
    inner = [_python(), str(BENCHMARKS / "inner_loop.py"), *common]
    jobs = [
        inner
        + (["--smoke"] if smoke else ["--models", "mnistfc", "lenet", "--rounds", "3"])
        + ["--no-scaling", "--stem", "inner_loop_gpu"],
        inner
        + (
            ["--smoke"]
            if smoke
            else ["--models", "allcnn", "--L", "5", "--rounds", "3", "--repeats", "1"]
        )
        + ["--no-scaling", "--stem", "inner_loop_allcnn_gpu"]
        + ["--candidates", "default", "rolled scan, no", "no noise"],
    ]
    compare = [_python(), str(BENCHMARKS / "compare_pytorch.py"), *common]
    compare += ["--stem", "pytorch_comparison_gpu"]
    compare += ["--smoke"] if smoke else ["--devices", "cuda"]
    jobs.append(compare)
    for job in jobs:
        if time.monotonic() >= deadline:
            log(f"no time left for: {' '.join(job)}")
            continue
        log(f"exit status {_run(job, deadline, log)}")


def _latest_checkpoint(run_dir: Path) -> Path | None:
    steps = [p for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, key=lambda p: int(p.name)) if steps else None


def archive_run(run_dir: Path, out_dir: Path) -> list[Path]:
    """The run's config, metrics and last checkpoint as a tar.gz in parts of ≤ 15 MiB."""
    out_dir.mkdir(parents=True, exist_ok=True)
    whole = out_dir / f"{run_dir.name}.tar.gz"
    with tarfile.open(whole, "w:gz") as tar:
        for name in ("config.json", "metrics.jsonl"):
            if (run_dir / name).exists():
                tar.add(run_dir / name, arcname=f"{run_dir.name}/{name}")
        latest = _latest_checkpoint(run_dir)
        if latest is not None:
            tar.add(latest, arcname=f"{run_dir.name}/checkpoints/{latest.name}")
    parts = []
    with open(whole, "rb") as f:
        while chunk := f.read(PART_BYTES):
            part = out_dir / f"{whole.name}.part{len(parts):02d}"
            part.write_bytes(chunk)
            parts.append(part)
    whole.unlink()
    return parts


def restore_run(parts_dir: Path, name: str, runs_dir: Path) -> bool:
    """Rebuilds a run directory from the parts a previous call brought back."""
    parts = sorted(parts_dir.glob(f"{name}.tar.gz.part*"))
    if not parts:
        return False
    whole = runs_dir / f".{name}.tar.gz"
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(whole, "wb") as f:
        for part in parts:
            f.write(part.read_bytes())
    shutil.rmtree(runs_dir / name, ignore_errors=True)
    with tarfile.open(whole, "r:gz") as tar:
        tar.extractall(runs_dir, filter="data")
    whole.unlink()
    return True


def cifar(args: argparse.Namespace, log=print) -> None:
    deadline = time.monotonic() + args.seconds
    name = run_name(args.optimizer, args.seed)
    runs_dir = Path(args.runs_dir)
    if restore_run(DEVICE_DIR / "run", name, runs_dir):
        log(f"resuming {name} from the carried archive")
    command = [
        _python(),
        str(BENCHMARKS / "paper_table.py"),
        "--models",
        "allcnn",
        "--optimizers",
        args.optimizer,
        "--seeds",
        str(args.seed),
        "--budget-scale",
        f"{args.budget_scale:g}",
        "--data-dir",
        str(args.data_dir),
        "--runs-dir",
        str(runs_dir),
        "--records-dir",
        str(args.out / "paper_runs"),
        "--out-dir",
        str(runs_dir / "table"),  # the table is rebuilt at home from every record
        *args.extra,
    ]
    log(f"exit status {_run(command, deadline, log)}")
    if (runs_dir / name).is_dir():
        for part in archive_run(runs_dir / name, args.out / "run"):
            log(f"{part.name}: {part.stat().st_size / 2**20:.1f} MiB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="phase", required=True)
    p = sub.add_parser("prepare", help="copy the CIFAR archive into .device (here)")
    p.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data")
    p = sub.add_parser("unpack", help="place what a device call brought back (here)")
    p.add_argument("files_at", type=Path)
    p = sub.add_parser("timings", help="GPU timings (device)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=540)
    p.add_argument("--smoke", action="store_true")
    p = sub.add_parser("cifar", help="one All-CNN cell of the paper table (device)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--optimizer", choices=["sgd", "entropy-sgd", "hj"], default="sgd")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=480)
    p.add_argument("--budget-scale", type=float, default=1.0)
    p.add_argument("--data-dir", type=Path, default=DEVICE_DIR / "data")
    p.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    p.add_argument(
        "extra", nargs="*", help="after --: more `paper_table.py` arguments (the test's limits)"
    )
    args = parser.parse_args(argv)
    if args.phase == "prepare":
        prepare(args.shared_data)
    elif args.phase == "unpack":
        unpack(args.files_at)
    elif args.phase == "timings":
        timings(args.out, args.seconds, args.smoke)
    else:
        cifar(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
