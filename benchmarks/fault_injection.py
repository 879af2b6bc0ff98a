"""Interrupts a short ``relaxjax train`` run at N random points and resumes each one.

Every trial starts the same run (mnistfc on 512 MNIST examples, Entropy-SGD with L = 2,
batch 64, 3 effective epochs of 4 outer steps) as ``python -m relaxjax train`` and stops
it with SIGINT or SIGKILL (alternately) at a random point, chosen one of two ways (also
alternately):

* ``timer``: the signal comes from outside after a delay drawn uniformly over the
  reference run's life after its first line of output (data loading, compilation,
  training, evaluation and checkpoint writes alike);
* ``hook``: the run sends it itself at a random point of a random step through the
  ``RELAXJAX_FAULT`` testing hook (``relaxjax.train.runs.FAULT_ENV``): mid-epoch,
  during evaluation, while the checkpoint is written, between the checkpoint and its
  metrics record, or right after an epoch end.

Each interrupted run is then continued with ``relaxjax train --run-dir DIR --resume``
(no other option) and compared with an uninterrupted run: the metrics records (timing
aside) and every array of the final checkpoint (parameters, BatchNorm statistics,
optimizer state, keys) must be equal bit for bit. The figure is how many of the N
trials end bit-identical.

    python benchmarks/fault_injection.py            # N = 20, about 5 minutes on 2 cores

JAX's persistent compilation cache (a temporary folder) is shared by the runs, so all but
the first load their compiled programs instead of compiling them again; a loaded program
is the compiled one, so results are unaffected.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import _env  # noqa: E402  (apply_cpu_settings before JAX starts)
import jax  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

from relaxjax.train import read_metrics  # noqa: E402
from relaxjax.train.checkpoints import verify  # noqa: E402
from relaxjax.train.runs import FAULT_ENV, FAULT_POINTS  # noqa: E402

logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's notes on untyped restores
STEPS_PER_EPOCH, EPOCHS = 4, 3
TIMING = {"seconds", "examples_per_second"}


def _data_args() -> list[str]:
    shared = ROOT.parent / "shared" / "data"
    return ["--data-dir", str(shared)] if shared.is_dir() else []


RUN = [
    "train", "--model", "mnistfc", "--optimizer", "entropy-sgd", "-L", "2",
    "--epochs", str(EPOCHS), "--train-limit", "512", "--test-limit", "200",
    "--batch-size", "64", "--refresh-batches", "2", "--no-progress", *_data_args(),
]  # fmt: skip


def _env_for(cache: Path, fault: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env.update(
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return env


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "relaxjax", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _run(argv: list[str], env: dict[str, str], delay: float | None = None, signum=None):
    """(exit status, output, whether the signal was sent before the run ended, seconds
    from the command's first line to its end)."""
    process = _start(argv, env)
    assert process.stdout is not None
    header = process.stdout.readline()  # the command has started
    begin = time.perf_counter()
    sent = False
    if delay is not None:
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signum)
            sent = True
    output = header + process.stdout.read()
    return process.wait(), output, sent, time.perf_counter() - begin


def _final_state(run_dir: Path):
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert verify(run_dir / "checkpoints" / str(steps[-1])) is None
    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as manager:
        return manager.restore(steps[-1])


def _identical(run_dir: Path, reference: Path) -> tuple[bool, str]:
    untimed = lambda d: [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(d)]  # noqa: E731
    if untimed(run_dir) != untimed(reference):
        return False, "metrics differ"
    a, b = _final_state(run_dir), _final_state(reference)
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    if tree_a != tree_b:
        return False, "checkpoint structure differs"
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            return False, "final state differs"
    return True, "bit-identical"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="relaxjax-faults-"))
    cache = work / "jax-cache"
    started = time.perf_counter()
    try:
        reference = work / "reference"
        status, output, _, _ = _run([*RUN, "--run-dir", str(reference)], _env_for(cache))
        assert status == 0, output
        # Timed again with the compiled programs cached, as the trials run.
        status, output, _, span = _run([*RUN, "--run-dir", str(work / "timed")], _env_for(cache))
        assert status == 0, output
        rows = []
        for trial in range(args.trials):
            signum = signal.SIGINT if trial % 2 == 0 else signal.SIGKILL
            mode = "timer" if trial % 4 < 2 else "hook"
            run_dir = work / f"trial-{trial}"
            delay, fault = None, None
            if mode == "timer":
                delay = rng.uniform(0.0, span)
                where = f"after {delay:.2f} s"
            else:
                point = rng.choice(FAULT_POINTS)
                epoch_end = point != "step"
                step = rng.randrange(1, EPOCHS) * STEPS_PER_EPOCH if epoch_end else None
                step = step or rng.choice([s for s in range(1, 12) if s % STEPS_PER_EPOCH])
                fault = f"{point}:{step}:{signum.name.removeprefix('SIG')}"
                where = fault
            status, output, sent, _ = _run(
                [*RUN, "--run-dir", str(run_dir)], _env_for(cache, fault), delay, signum
            )
            interrupted = sent or fault is not None
            checkpoints = sorted(
                int(p.name)
                for p in (run_dir / "checkpoints").glob("*")
                if p.name.isdigit()
            ) if (run_dir / "checkpoints").is_dir() else []  # fmt: skip
            stopped_at = checkpoints[-1] if checkpoints else 0
            # A run stopped before it wrote its config.json left nothing: it is rerun.
            again = ["train", "--run-dir", str(run_dir), "--resume", "--no-progress"]
            if not (run_dir / "config.json").exists():
                again = [*RUN, "--run-dir", str(run_dir)]
                where += " (nothing written: rerun)"
            resume_status, resume_output, _, _ = _run(again, _env_for(cache))
            if resume_status != 0:
                ok, why = False, f"--resume exited {resume_status}: {resume_output[-300:]!r}"
            else:
                ok, why = _identical(run_dir, reference)
            rows.append(
                {
                    "trial": trial,
                    "signal": signum.name,
                    "mode": mode,
                    "where": where,
                    "interrupted": interrupted,
                    "exit_status": status,
                    "checkpoint_step_after_interrupt": stopped_at,
                    "resume_exit_status": resume_status,
                    "bit_identical": ok,
                    "outcome": why,
                }
            )
            print(
                f"trial {trial:2d} {signum.name:7s} {mode:5s} {where:28s} exit {status:4d} "
                f"checkpoint {stopped_at:2d} -> {why}",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    identical = sum(r["bit_identical"] for r in rows)
    command = _env.command_line(__file__, argv)
    result = {
        "command": command,
        **_env.environment(),
        "run": " ".join(RUN),
        "trials": len(rows),
        "bit_identical": identical,
        "interrupted_before_the_end": sum(r["interrupted"] for r in rows),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    out = Path(args.out_dir)
    _env.write_json(out / "fault_injection.json", result)
    lines = [
        "# Fault injection: interrupted runs resumed",
        "",
        f"- command: `{command}`",
        f"- machine: {result['machine']}",
        f"- versions: {result['versions']}",
        f"- date: {result['date']}",
        f"- run: `relaxjax {result['run'].replace(str(ROOT.parent), '..')}` (12 outer steps)",
        "",
        f"**{identical} of {len(rows)}** interrupted runs ended bit-identical to the "
        "uninterrupted run after one `relaxjax train --run-dir DIR --resume` (metrics "
        "records without their timing, and every array of the final checkpoint). "
        f"{result['interrupted_before_the_end']} of the signals arrived before the run "
        f"ended. Total time {result['seconds']:.0f} s.",
        "",
        "| trial | signal | how | where | exit | checkpoint left | resumed |",
        "| ---: | --- | --- | --- | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['trial']} | {r['signal']} | {r['mode']} | {r['where']} | {r['exit_status']} "
            f"| {r['checkpoint_step_after_interrupt']} | {r['outcome']} |"
        )
    (out / "fault_injection.md").write_text("\n".join(lines) + "\n")
    print(f"{identical} of {len(rows)} bit-identical; wrote {out / 'fault_injection.md'}")
    return 0 if identical == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
