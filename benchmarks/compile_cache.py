"""Warm starts: time to the first finished step of ``relaxjax train``, cold and warm.

``relaxjax train`` keeps its compiled programs in JAX's persistent compilation cache
(``relaxjax.train.compilation_cache``). For each model this script starts the command
in fresh Python processes, each timed from its start to the end of its first outer
step (the step's result on the host), then stops it:

* ``off``: ``--no-compilation-cache`` (what every start cost before);
* ``cold``: the cache on, in an empty folder (compiles, and writes the entries);
* ``warm``: the same folder again (reads them).

Each child also reports when its imports ended, when its data were loaded and how long
a second step took (the step's own computation, which no cache removes). Small data
limits and a batch of 32 keep every start short; the programs are those of a full run
with that batch (a program's shape does not depend on the data set's size).

    python benchmarks/compile_cache.py                          # mnistfc, lenet, allcnn
    python benchmarks/compile_cache.py --optimizer sgd --name compile_cache_sgd
    python benchmarks/compile_cache.py --smoke                  # seconds; what the test runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODES = ("off", "cold", "warm")
DATASETS = {"mnistfc": "mnist", "lenet": "mnist", "allcnn": "cifar10-jpeg"}

TARGET = 0.20  # warm ≤ 20 % of cold
RELAXATIONS = ("entropy-sgd", "entropy-adam", "hj")  # the optimizers with inner steps L


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--optimizer", default="entropy-sgd")
    p.add_argument("--rounds", type=int, default=1, help="off/cold/warm triples per model")
    p.add_argument("-L", "--num-steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--name", default="compile_cache", help="results file stem")
    p.add_argument("--smoke", action="store_true", help="mnistfc, sgd, batch 16; for the test")
    p.add_argument(
        "--report-only", action="store_true", help="rewrite NAME.md from NAME.json; runs nothing"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.models, args.batch_size, args.rounds = ["mnistfc"], 16, 1
        args.optimizer = "sgd"
    return args


# --------------------------------------------------------------------------- the child


class _FirstSteps(BaseException):
    """Raised after the second step: stops the command (not an Exception, which the
    command would report as an error)."""


def child(train_args: list[str]) -> int:
    """Runs ``relaxjax train TRAIN_ARGS`` until two steps finished; prints the times."""
    started = time.monotonic()
    import jax

    from relaxjax.train import cli, loop

    times: dict[str, float] = {"started": started, "imported": time.monotonic()}
    load_data, make_train_step = loop.load_data, loop.make_train_step

    def timed_load(config):
        data = load_data(config)
        jax.block_until_ready(data[:4])
        times["data_loaded"] = time.monotonic()
        return data

    def timed_make(*args, **kwargs):
        step = make_train_step(*args, **kwargs)

        def run(*step_args):
            before = time.monotonic()
            out = jax.block_until_ready(step(*step_args))
            key = "first_step" if "first_step" not in times else "second_step"
            times[key] = time.monotonic()
            times[f"{key}_seconds"] = times[key] - before
            if key == "second_step":
                raise _FirstSteps
            return out

        return run

    loop.load_data, loop.make_train_step = timed_load, timed_make
    try:
        status = cli.main(["train", *train_args])
    except _FirstSteps:
        status = 0
    print("TIMES " + json.dumps(times), flush=True)
    return status


# --------------------------------------------------------------------------- the parent


def _inner_steps(args) -> int:
    return args.num_steps if args.optimizer in RELAXATIONS else 1


def _train_args(args, model: str, mode: str, cache: Path, run_dir: Path) -> list[str]:
    argv = ["--model", model, "--dataset", DATASETS[model], "--optimizer", args.optimizer]
    argv += ["--batch-size", str(args.batch_size)]
    if args.optimizer in RELAXATIONS:
        argv += ["-L", str(args.num_steps)]
    limit = args.batch_size * _inner_steps(args)  # one outer step's examples
    argv += ["--train-limit", str(2 * limit), "--test-limit", "100", "--epochs", "1"]
    argv += ["--refresh-batches", "1", "--no-progress", "--run-dir", str(run_dir)]
    argv += ["--no-compilation-cache"] if mode == "off" else ["--compilation-cache-dir", str(cache)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    return argv


def measure(args, model: str, mode: str, cache: Path, work: Path) -> dict[str, Any]:
    """One fresh process of ``relaxjax train`` in ``mode``: its times, in seconds."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{model}-{mode}-", dir=work))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--train-args"]
    command += _train_args(args, model, mode, cache, run_dir)
    env = dict(os.environ)
    env.pop("RELAXJAX_NO_COMPILATION_CACHE", None)
    before = len(list(cache.iterdir())) if cache.is_dir() else 0
    t0 = time.monotonic()  # system-wide: comparable with the child's readings
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    lines = [line for line in done.stdout.splitlines() if line.startswith("TIMES ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{model} {mode}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    times = json.loads(lines[-1][len("TIMES ") :])
    entries = [p for p in cache.iterdir()] if cache.is_dir() else []
    return {
        "model": model,
        "mode": mode,
        "to_first_step": times["first_step"] - t0,  # from the process's start
        "command_to_first_step": times["first_step"] - times["imported"],
        "data_to_first_step": times["first_step"] - times["data_loaded"],
        "imports": times["imported"] - t0,
        "data": times["data_loaded"] - times["imported"],
        "first_step_call": times["first_step_seconds"],
        "second_step": times["second_step_seconds"],
        "process_wall": wall,
        "cache_entries": len(entries),
        "entries_written": len(entries) - before,
        "step_cached": any(p.name.startswith("jit_train_step") for p in entries),
        "cache_bytes": sum(p.stat().st_size for p in entries),
    }


def run(args) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="compile-cache-") as work:
        work = Path(work)
        for round_ in range(args.rounds):
            for model in args.models:
                cache = work / f"cache-{model}-{round_}"
                for mode in MODES:
                    row = measure(args, model, mode, cache, work)
                    row["round"] = round_
                    print(
                        f"{model:8s} {mode:4s}: first step {row['to_first_step']:6.2f} s after "
                        f"the start (imports {row['imports']:.2f} s, data {row['data']:.2f} s, "
                        f"then {row['data_to_first_step']:.2f} s; a second step "
                        f"{row['second_step']:.2f} s), {row['cache_entries']} cache entries",
                        flush=True,
                    )
                    rows.append(row)
    return {"rows": rows, "summary": summarise(rows, args.models)}


def _median(rows, model, mode, key):
    return statistics.median(r[key] for r in rows if r["model"] == model and r["mode"] == mode)


def summarise(rows: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    summary = []
    for model in models:
        item = {"model": model}
        for mode in MODES:
            for key in ("to_first_step", "command_to_first_step", "data_to_first_step"):
                item[f"{mode}_{key}"] = _median(rows, model, mode, key)
        for key in ("imports", "data", "second_step"):
            item[key] = _median(rows, model, "warm", key)
        item["cache_entries"] = _median(rows, model, "cold", "cache_entries")
        item["step_cached"] = all(
            r["step_cached"] for r in rows if r["model"] == model and r["mode"] == "warm"
        )
        item["warm_entries_written"] = max(
            r["entries_written"] for r in rows if r["model"] == model and r["mode"] == "warm"
        )
        item["cache_bytes"] = _median(rows, model, "cold", "cache_bytes")
        for key in ("to_first_step", "command_to_first_step", "data_to_first_step"):
            item[f"warm_over_cold_{key}"] = item[f"warm_{key}"] / item[f"cold_{key}"]
        summary.append(item)
    return summary


# --------------------------------------------------------------------------- report


def write_markdown(result: dict[str, Any], path: Path) -> None:
    config = result["config"]
    lines = [
        "# Warm starts: time to the first finished step, cold and warm",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}",
        f"- versions: {result['versions']}",
        f"- date: {result['date']}",
        f"- `relaxjax train --model MODEL --optimizer {config['optimizer']}"
        + (f" -L {config['L']}" if config["optimizer"] in RELAXATIONS else "")
        + f" --batch-size {config['batch_size']}` (the programs of a full run with this batch; "
        f"{config['train_limit_per_step']} training examples per outer step, 100 test "
        "examples); medians of "
        f"{config['rounds']} round(s), each start a fresh process",
        "",
        "Times in seconds from the process's start to the end of its first outer step "
        "(its result on the host). `off`: `--no-compilation-cache`; `cold`: the cache on, "
        "in an empty folder; `warm`: the same folder again. 'after the data' counts from "
        "the data set loaded (and preprocessed) to the end of the first step: the part "
        "that compilation takes, plus the step's own computation (the 'second step' "
        "column, which no cache removes). Imports and data loading are the same in every "
        "mode. 'entries': the programs the cold start wrote to the cache; 'written warm': "
        "those the warm start still had to compile and write (0: it found every one).",
        "",
        "| model | off | cold | warm | warm / cold | after the data: cold | warm | warm / cold "
        "| imports | data | second step | entries (MB) | written warm |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for s in result["summary"]:
        lines.append(
            f"| {s['model']} | {s['off_to_first_step']:.2f} | {s['cold_to_first_step']:.2f} | "
            f"{s['warm_to_first_step']:.2f} | {s['warm_over_cold_to_first_step']:.2f} | "
            f"{s['cold_data_to_first_step']:.2f} | {s['warm_data_to_first_step']:.2f} | "
            f"{s['warm_over_cold_data_to_first_step']:.2f} | {s['imports']:.2f} | "
            f"{s['data']:.2f} | {s['second_step']:.2f} | {s['cache_entries']:.0f} "
            f"({s['cache_bytes'] / 1e6:.1f}) | {s['warm_entries_written']} |"
        )
    lines += ["", _reading(result), ""]
    path.write_text("\n".join(lines) + "\n")


def _uncacheable(s: dict[str, Any]) -> float:
    """The share of a cold start that a warm one keeps whatever the cache holds."""
    return (s["imports"] + s["data"] + s["second_step"]) / s["cold_to_first_step"]


def _reading(result: dict[str, Any]) -> str:
    met = [s["model"] for s in result["summary"] if s["warm_over_cold_to_first_step"] <= TARGET]
    missed = [s for s in result["summary"] if s["warm_over_cold_to_first_step"] > TARGET]
    text = (
        f"**Target** (warm ≤ {TARGET:.0%} of cold, from the process's start): "
        + (f"met for {', '.join(met)}" if met else "met for no model")
        + "."
    )
    if missed:
        text += " Missed: " + "; ".join(
            f"{s['model']} {s['warm_over_cold_to_first_step']:.0%} (of its warm "
            f"{s['warm_to_first_step']:.2f} s, {s['imports']:.2f} s are imports, "
            f"{s['data']:.2f} s the data and {s['second_step']:.2f} s the step's own "
            "computation)"
            for s in missed
        )
        text += "."
        text += " What no cache removes (imports, data and the step's own computation) is " + (
            "; ".join(f"{s['model']} {_uncacheable(s):.0%} of cold" for s in missed)
        )
        text += (
            ": where that part is above the target, no cache can meet it on this machine "
            "(the rest of a warm start is tracing, lowering and reading the cache)."
        )
    after = ", ".join(
        f"{s['model']} {s['warm_over_cold_data_to_first_step']:.0%}" for s in result["summary"]
    )
    text += f" After the data, warm / cold: {after}."
    uncached = [s["model"] for s in result["summary"] if not s["step_cached"]]
    if uncached:
        text += (
            f" The outer step itself is not in the cache ({', '.join(uncached)}): JAX does not "
            "cache a program that calls back into Python, and the relaxations' step holds such "
            "a call (the update-time check of η′ < 2γ in `relaxjax.core.relaxation`), so every "
            "start still compiles it; the cache saves the other programs' compilation."
        )
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args.train_args)
    out = Path(args.out_dir)
    if args.report_only:
        result = json.loads((out / f"{args.name}.json").read_text())
        write_markdown(result, out / f"{args.name}.md")
        print(f"wrote {out / (args.name + '.md')}")
        return 0
    sys.path.insert(0, str(HERE))
    from _env import command_line, environment, write_json

    result = {
        "command": command_line(__file__, argv),
        **environment(),
        "config": {
            "optimizer": args.optimizer,
            "L": _inner_steps(args),
            "batch_size": args.batch_size,
            "train_limit_per_step": args.batch_size * _inner_steps(args),
            "rounds": args.rounds,
            "models": args.models,
        },
        **run(args),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{args.name}.json", result)
    write_markdown(result, out / f"{args.name}.md")
    print(f"wrote {out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
