"""XLA:CPU vector width: the inner loop with 256- and 512-bit vectors.

The vector width XLA compiles elementwise loops for is a process-wide flag
(``--xla_cpu_prefer_vector_width``, read when the backend starts), so the two
widths cannot be timed in one process. This script runs ``inner_loop.py``
(``default`` and ``no noise`` candidates, without the L scaling) in fresh
processes, alternating the widths ``--pairs`` times so that drifts of a
shared machine fall on both, and reports per width the medians over
processes of: the baseline gradient, the noisy and noise-free relaxation
ratios, the noisy step's time, and the Langevin draw per inner step.
``relaxjax.xla_cpu`` asks for 512-bit vectors on AVX-512 CPUs from these
figures.

    python benchmarks/vector_width.py                     # mnistfc, 3 pairs
    python benchmarks/vector_width.py --models mnistfc lenet --pairs 5
    python benchmarks/vector_width.py --smoke             # seconds; what the test runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _env import command_line, environment  # noqa: E402

from relaxjax.xla_cpu import SCHEDULER_FLAG, VECTOR_WIDTH_FLAG, has_avx512  # noqa: E402

HERE = Path(__file__).resolve().parent
WIDTHS = (256, 512)
DEFAULT = "default (rolled scan, canonical convs, hash noise)"
NOISE_FREE = "no noise (Hopf-Lax cost)"
BASELINE = "baseline: L jitted SGD steps"
DRAW = "hash noise (default)"


def run_once(width: int, models: list[str], rounds: int, smoke: bool, out_dir: Path) -> dict:
    """One fresh ``inner_loop.py`` process at ``width``; its JSON results."""
    env = dict(os.environ, XLA_FLAGS=f"{SCHEDULER_FLAG}=false {VECTOR_WIDTH_FLAG}={width}")
    command = [sys.executable, str(HERE / "inner_loop.py"), "--no-scaling"]
    command += ["--smoke"] if smoke else ["--models", *models, "--rounds", str(rounds)]
    command += ["--candidates", "default", "no noise", "--out-dir", str(out_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"inner_loop.py at width {width} failed:\n{done.stderr[-3000:]}")
    return json.loads((out_dir / "inner_loop.json").read_text())


def _median(results: list[dict], model: str, section: str, key: str, label: str, value: str):
    """Median over processes of ``value`` in the ``section`` row of ``model`` named ``label``."""
    return statistics.median(
        row[value]
        for result in results
        for row in result[section]
        if row["model"] == model and row[key] == label
    )


def summarize(runs: dict[int, list[dict]]) -> list[dict]:
    """Per (model, width): medians over processes of the figures each process measured."""
    models = sorted({row["model"] for result in runs[WIDTHS[0]] for row in result["timing"]})
    return [
        {
            "model": model,
            "width": width,
            "processes": len(results),
            "baseline_ms_per_gradient": _median(
                results, model, "timing", "candidate", BASELINE, "ms_per_gradient"
            ),
            "noisy_ms_per_gradient": _median(
                results, model, "timing", "candidate", DEFAULT, "ms_per_gradient"
            ),
            "noisy_ratio": _median(
                results, model, "timing", "candidate", DEFAULT, "ratio_to_baseline"
            ),
            "noise_free_ratio": _median(
                results, model, "timing", "candidate", NOISE_FREE, "ratio_to_baseline"
            ),
            "draw_ms_per_inner_step": _median(
                results, model, "noise", "work", DRAW, "ms_per_inner_step"
            ),
        }
        for model in models
        for width, results in runs.items()
    ]


def write_results(
    out_dir: Path, stem: str, command: str, runs: dict, rows: list[dict], setting: dict, args
) -> None:
    """``setting``: L, batch_size and rounds of the ``inner_loop.py`` processes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {
        "command": command,
        **environment(),
        "avx512": has_avx512(),
        "pairs": args.pairs,
        **setting,
    }
    processes = {
        str(width): [
            {"timing": result["timing"], "noise": result["noise"], "date": result["date"]}
            for result in results
        ]
        for width, results in runs.items()
    }
    (out_dir / f"{stem}.json").write_text(
        json.dumps({**header, "rows": rows, "processes": processes}, indent=2)
    )
    lines = [
        "# XLA:CPU vector width (256 vs 512 bits)",
        "",
        f"- command: `{command}`",
        f"- machine: {header['machine']} (AVX-512F: {'yes' if header['avx512'] else 'no'}; "
        "each process sets its own width, as in the table)",
        f"- versions: {header['versions']}",
        f"- date: {header['date']}",
        f"- {args.pairs} pairs of fresh `inner_loop.py` processes, widths alternated; "
        f"each process: L = {setting['L']}, batch {setting['batch_size']}, medians of "
        f"{setting['rounds']} interleaved rounds",
        "",
        "Medians over the processes. 'noisy' is the default Entropy-SGD step, 'noise-free' "
        "the same loop without the Langevin draw (Hopf-Lax), both as ratios to L jitted "
        "plain SGD steps in the same process; 'draw' is the hash noise alone per inner step.",
        "",
        "| model | vector width (bits) | baseline ms / gradient | noisy ms / gradient "
        "| noisy ratio | noise-free ratio | draw ms / inner step |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['width']} | {row['baseline_ms_per_gradient']:.1f} "
            f"| {row['noisy_ms_per_gradient']:.1f} | {row['noisy_ratio']:.2f} "
            f"| {row['noise_free_ratio']:.2f} | {row['draw_ms_per_inner_step']:.2f} |"
        )
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnistfc"])
    parser.add_argument("--pairs", type=int, default=3, help="processes per width")
    parser.add_argument("--rounds", type=int, default=5, help="rounds inside each process")
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    parser.add_argument("--stem", default="inner_loop_vector_width")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, for the test")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs = 1
    command = command_line(__file__, argv)
    runs: dict[int, list[dict]] = {width: [] for width in WIDTHS}
    with tempfile.TemporaryDirectory() as scratch:
        for pair in range(args.pairs):
            for width in WIDTHS:
                result = run_once(width, args.models, args.rounds, args.smoke, Path(scratch))
                runs[width].append(result)
                print(f"pair {pair} width {width}: done", flush=True)
    rows = summarize(runs)
    for row in rows:
        print(
            f"{row['model']:8s} {row['width']} bits: noisy {row['noisy_ratio']:.2f}, "
            f"noise-free {row['noise_free_ratio']:.2f}, draw {row['draw_ms_per_inner_step']:.2f} ms"
        )
    first = runs[WIDTHS[0]][0]
    setting = {key: first[key] for key in ("L", "batch_size", "rounds")}
    write_results(Path(args.out_dir), args.stem, command.strip(), runs, rows, setting, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
