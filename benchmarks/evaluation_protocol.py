"""How the BatchNorm refresh before a test changes a trained network's test error.

Before every test the authors' code re-estimates BatchNorm's running statistics with
the training set fed in train mode, dropout off (their ``dry_feed``): the Lua code in
batches of 1024 over the whole set, the PyTorch port in batches of 128. ``relaxjax
train`` feeds 50 random batches of 128 (``--refresh-batches``). With BatchNorm's
momentum 0.1 each protocol's statistics are an exponential average over its last few
batches, so they differ in how many examples they average: about 10,000 for the Lua
pass and about 1,300 for relaxjax's. This script takes the final checkpoint of finished
``relaxjax train`` runs (their run directories, e.g. ``runs/paper_table/<run>``), and
measures the test error after each protocol from the same weights, with several draws
of the refresh batches:

* ``relaxjax``: 50 random batches of 128 (the command's default);
* ``lua``: 58 batches of 1024 (the Lua code's pass over the 60,000 images, in random
  order and without the last 608);
* ``pytorch``: 468 batches of 128 (the PyTorch port's pass).

Each draw of each protocol takes its own random batches (the seed folds in the draw and
the protocol). The batch sizes and counts recorded are those fed, which a small data
set caps (at its size, and at one pass).

    python benchmarks/evaluation_protocol.py runs/paper_table/lenet-entropy-sgd-s2 \
        runs/paper_table/lenet-sgd-s2
    python benchmarks/evaluation_protocol.py --smoke   # a tiny run trained here first
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

from relaxjax import models
from relaxjax.train import (
    OptimizerConfig,
    TrainConfig,
    enable_compilation_cache,
    load_data,
    load_run_state,
    make_eval_fn,
    make_statistics_refresh,
    train,
)
from relaxjax.train.runs import read_config

sys.path.insert(0, str(Path(__file__).parent))
from _env import command_line, environment, provenance_lines, smoke_data, write_json  # noqa: E402

# (name, batch size, batches fed) of each protocol.
PROTOCOLS = (("relaxjax", 128, 50), ("lua", 1024, 58), ("pytorch", 128, 468))


def fed(n: int, batch_size: int, batches: int) -> tuple[int, int]:
    """The (batch size, batches) ``make_statistics_refresh`` feeds from ``n`` examples."""
    size = min(batch_size, n)
    return size, max(1, min(batches, n // size))


def measure(run_dir: Path, draws: int, data_dir=None, data=None, scale: float = 1.0) -> dict:
    """Test error (%) after each protocol, ``draws`` draws of the refresh batches each
    (``scale`` times each protocol's batches, for the smoke run)."""
    config = read_config(run_dir)
    config = config if data_dir is None else dataclasses.replace(config, data_dir=data_dir)
    data = data if data is not None else load_data(config)
    model = models.get_model(config.model, num_classes=data.num_classes)
    state, record = load_run_state(run_dir, model, data)
    evaluate = make_eval_fn(model, config.eval_batch_size)
    step = int(state.step)
    row = {
        "run": run_dir.name,
        "model": config.model,
        "optimizer": config.optimizer.name,
        "step": step,
        "recorded_test_error": None if record is None else 100 * record["test_error"],
        "protocols": {},
    }
    for index, (name, batch_size, batches) in enumerate(PROTOCOLS):
        batch_size, batches = fed(len(data.train_labels), batch_size, round(batches * scale))
        refresh = make_statistics_refresh(model, batch_size, batches)
        errors = []
        for draw in range(draws):
            seed = 1000 + 10 * draw + index  # each draw of each protocol its own batches
            stats = refresh(state.params, state.model_state, data.train_images, seed, step)
            _, error = evaluate(state.params, stats, data.test_images, data.test_labels)
            errors.append(100 * error)
        row["protocols"][name] = {
            "batch_size": batch_size,
            "batches": batches,
            "test_errors": errors,
            "mean": statistics.mean(errors),
        }
    return row


def write_markdown(path: Path, result: dict) -> None:
    lines = [
        "# The BatchNorm refresh before a test, three ways",
        "",
        *provenance_lines(result),
        "",
        "Test error in % of each run's final checkpoint, its BatchNorm statistics "
        "re-estimated before the test by feeding training batches in train mode with "
        "dropout off, three ways (batch size x batches): "
        + "; ".join(f"{n} {b} x {k}" for n, b, k in result["protocols"])
        + f". Each protocol is drawn {result['draws']} times (different random batches); "
        "the cells give every draw.",
        "",
        "| run | recorded | " + " | ".join(n for n, _, _ in result["protocols"]) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in result["protocols"]) + " |",
    ]
    for row in result["rows"]:
        cells = [
            ", ".join(f"{e:.2f}" for e in row["protocols"][n]["test_errors"])
            for n, _, _ in result["protocols"]
        ]
        recorded = row["recorded_test_error"]
        lines.append(
            f"| {row['run']} | {'' if recorded is None else f'{recorded:.2f}'} | "
            + " | ".join(cells)
            + " |"
        )
    spread = max(
        abs(row["protocols"][a]["mean"] - row["protocols"][b]["mean"])
        for row in result["rows"]
        for a, _, _ in result["protocols"]
        for b, _, _ in result["protocols"]
    )
    lines += [
        "",
        f"The largest difference between two protocols' means on one run: {spread:.3f} points.",
    ]
    path.write_text("\n".join(lines) + "\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="finished relaxjax train run directories")
    parser.add_argument(
        "--draws", type=positive_int, default=3, help="draws of each protocol's batches"
    )
    parser.add_argument("--data-dir", default=None, help="[the runs' own]")
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--smoke", action="store_true", help="trains a tiny run here first")
    args = parser.parse_args(argv)
    enable_compilation_cache()  # each run's refresh and evaluation: the same programs
    scale, data = 1.0, None
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(r) for r in args.runs]
        if args.smoke:  # one epoch of mnistfc on 512 generated digits, 16 steps of 32
            data = smoke_data(1024)
            sgd = OptimizerConfig(name="sgd", lr=0.1)
            config = TrainConfig(
                model="mnistfc", optimizer=sgd, epochs=1.0, batch_size=32, refresh_batches=2
            )
            train(config, Path(tmp) / "smoke", data=data, progress=False)
            runs, args.draws, scale = [Path(tmp) / "smoke"], 2, 0.01
        if not runs:
            parser.error("give run directories, or --smoke")
        rows = [measure(run, args.draws, args.data_dir, data, scale) for run in runs]
    result = {
        "command": command_line(__file__, argv),
        **environment(),
        "draws": args.draws,
        "protocols": [
            [n, rows[0]["protocols"][n]["batch_size"], rows[0]["protocols"][n]["batches"]]
            for n, _, _ in PROTOCOLS
        ],
        "rows": rows,
    }
    out = Path(args.out_dir)
    write_json(out / "evaluation_protocol.json", result)
    write_markdown(out / "evaluation_protocol.md", result)
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
