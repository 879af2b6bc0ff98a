"""XLA:CPU flag settings: the inner loop under each of ``relaxjax.cpu.xla_flags``'s choices.

XLA's flags are process-wide (read when the backend starts), so two settings
cannot be timed in one process. This script runs ``inner_loop.py``
(``default`` and ``no noise`` candidates, without the L scaling) in fresh
processes, one per setting in turn, ``--pairs`` rounds of them so that drifts
of a shared machine fall on all, and reports per setting the medians over
processes of: the baseline gradient, the noisy and noise-free relaxation
ratios, the noisy step's time and compile time, and the Langevin draw per
inner step. Settings: the vector width XLA compiles elementwise loops for
(``--xla_cpu_prefer_vector_width``, 256 or 512 bits) and LLVM's loop
interleaving (``-force-vector-interleave=8``, which relaxjax does not set); and the
kernel libraries XLA:CPU can hand dots and convolutions to (XNNPACK, oneDNN), which
relaxjax does not turn on; ``relaxjax.cpu.xla_flags`` chooses its defaults from these
figures.

    python benchmarks/xla_cpu_flags.py                    # mnistfc, 3 rounds of processes
    python benchmarks/xla_cpu_flags.py --models mnistfc lenet --pairs 2
    python benchmarks/xla_cpu_flags.py --settings w256 w512   # a subset
    python benchmarks/xla_cpu_flags.py --smoke            # seconds; what the test runs

The vector width is also a per-compilation option (``compiler_options`` of
``jax.jit(...).lower(...).compile``), so ``--in-process`` compares the widths in
one process instead: every step compiled once per width, all timed in
interleaved rounds, so the drift between processes of a shared VM (up to 2x
here) does not enter the comparison. LLVM's options cannot be set that way.

    python benchmarks/xla_cpu_flags.py --in-process --models mnistfc lenet lenet-dr
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

sys.path.insert(0, str(Path(__file__).parent))
from _env import command_line, environment, write_json  # noqa: E402
from inner_loop import (  # noqa: E402
    BASELINE,
    CANDIDATES,
    NOISE_WORK,
    SCAN_BASELINE,
    _problem,
    _relaxation_step,
    interleaved_medians,
    noise_loop,
    sgd_baseline,
)

from relaxjax.cpu.xla_flags import SCHEDULER_FLAG, VECTOR_WIDTH_FLAG, has_avx512  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_STEM = "inner_loop_xla_cpu_flags"
# LLVM's loop interleaving (independent vectors per loop iteration), passed through XLA.
_INTERLEAVE = "--xla_backend_extra_options=-force-vector-interleave="
# name -> (description, XLA_FLAGS beyond the sequential scheduler every setting uses[,
# environment variables of the process: glibc's malloc settings])
_HUGE_PAGES = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
SETTINGS = {
    "w256": ("256-bit vectors (XLA's default)", f"{VECTOR_WIDTH_FLAG}=256"),
    "w512": ("512-bit vectors", f"{VECTOR_WIDTH_FLAG}=512"),
    "w256-i8": ("256-bit vectors, interleave 8", f"{VECTOR_WIDTH_FLAG}=256 {_INTERLEAVE}8"),
    "w512-i4": ("512-bit vectors, interleave 4", f"{VECTOR_WIDTH_FLAG}=512 {_INTERLEAVE}4"),
    "w512-i8": ("512-bit vectors, interleave 8", f"{VECTOR_WIDTH_FLAG}=512 {_INTERLEAVE}8"),
    # The kernel libraries XLA:CPU can call for dots and convolutions instead of its own.
    "xnnpack": ("XNNPACK kernels", "--xla_cpu_use_xnnpack=true"),
    "xnn-dot": ("dots fused into XNNPACK calls", "--xla_cpu_experimental_xnn_fusion_type=dot"),
    "onednn": ("oneDNN kernels", "--xla_cpu_use_onednn=true"),
    # glibc's malloc on transparent huge pages (madvise): XLA:CPU allocates an execution's
    # buffers anew at every call, and a large one is mapped fresh, so a separately jitted
    # step pays its page faults at every call, a step inside a loop once per loop.
    "w256-hugetlb": (
        "256-bit vectors, malloc on huge pages",
        f"{VECTOR_WIDTH_FLAG}=256",
        _HUGE_PAGES,
    ),
    "w512-hugetlb": (
        "512-bit vectors, malloc on huge pages",
        f"{VECTOR_WIDTH_FLAG}=512",
        _HUGE_PAGES,
    ),
}


def setting_environment(setting: str) -> dict[str, str]:
    """The environment variables ``setting`` gives its processes (none for most)."""
    return dict(SETTINGS[setting][2]) if len(SETTINGS[setting]) > 2 else {}


# The variables some setting gives its processes: no process inherits them from this one.
SETTING_VARIABLES = {name for setting in SETTINGS for name in setting_environment(setting)}


# The labels of inner_loop.py's rows this script reads.
DEFAULT = "default (rolled scan, canonical convs, hash noise)"
NOISE_FREE = "no noise (Hopf-Lax cost)"
DRAW = "hash noise (default)"
assert {DEFAULT, NOISE_FREE} <= set(CANDIDATES) and DRAW in NOISE_WORK


def run_once(setting: str, models: list[str], rounds: int, smoke: bool, out_dir: Path) -> dict:
    """One fresh ``inner_loop.py`` process under ``setting``'s flags; its JSON results."""
    # The whole of XLA_FLAGS is replaced: the parent's own flags must not leak in.
    # So is every variable a setting may set (e.g. GLIBC_TUNABLES exported by the user).
    env = {k: v for k, v in os.environ.items() if k not in SETTING_VARIABLES}
    env["XLA_FLAGS"] = f"{SCHEDULER_FLAG}=false {SETTINGS[setting][1]}"
    env.update(setting_environment(setting))
    command = [sys.executable, str(HERE / "inner_loop.py"), "--no-scaling"]
    command += ["--smoke"] if smoke else ["--models", *models, "--rounds", str(rounds)]
    command += ["--candidates", "default", "no noise", "--noise-work", DRAW]
    command += ["--out-dir", str(out_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"inner_loop.py under {setting} failed:\n{done.stderr[-3000:]}")
    return json.loads((out_dir / "inner_loop.json").read_text())


def _median(results: list[dict], model: str, section: str, key: str, label: str, value: str):
    """Median over processes of ``value`` in the ``section`` row of ``model`` named ``label``."""
    return statistics.median(
        row[value]
        for result in results
        for row in result[section]
        if row["model"] == model and row[key] == label
    )


# figure -> (section of inner_loop.py's results, row key, row label, value)
FIGURES = {
    "baseline_ms_per_gradient": ("timing", "candidate", BASELINE, "ms_per_gradient"),
    "scan_sgd_ms_per_gradient": ("timing", "candidate", SCAN_BASELINE, "ms_per_gradient"),
    "noisy_ms_per_gradient": ("timing", "candidate", DEFAULT, "ms_per_gradient"),
    "noisy_ratio": ("timing", "candidate", DEFAULT, "ratio_to_baseline"),
    "noisy_compile_seconds": ("timing", "candidate", DEFAULT, "compile_seconds"),
    "noise_free_ratio": ("timing", "candidate", NOISE_FREE, "ratio_to_baseline"),
    "draw_ms_per_inner_step": ("noise", "work", DRAW, "ms_per_inner_step"),
}


def summarize(runs: dict[str, list[dict]]) -> list[dict]:
    """Per (model, setting): medians over processes of the figures each process measured."""
    first = next(iter(runs.values()))
    models = sorted({row["model"] for result in first for row in result["timing"]})
    return [
        {
            "model": model,
            "setting": setting,
            "flags": SETTINGS[setting][1],
            "environment": setting_environment(setting),
            "processes": len(results),
            **{name: _median(results, model, *spec) for name, spec in FIGURES.items()},
        }
        for model in models
        for setting, results in runs.items()
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
        setting: [
            {"timing": result["timing"], "noise": result["noise"], "date": result["date"]}
            for result in results
        ]
        for setting, results in runs.items()
    }
    write_json(out_dir / f"{stem}.json", {**header, "rows": rows, "processes": processes})
    lines = [
        "# XLA:CPU flag settings",
        "",
        f"- command: `{command}`",
        f"- machine: {header['machine']} (AVX-512F: {'yes' if header['avx512'] else 'no'}; "
        "the XLA_FLAGS shown are this script's own: each process gets only "
        f"`{SCHEDULER_FLAG}=false` and its setting's flags, as in the table)",
        f"- versions: {header['versions']}",
        f"- date: {header['date']}",
        f"- {args.pairs} rounds of fresh `inner_loop.py` processes, one per setting in turn; "
        f"each process: L = {setting['L']}, batch {setting['batch_size']}, medians of "
        f"{setting['rounds']} interleaved rounds",
        "",
        "Medians over the processes. 'noisy' is the default Entropy-SGD step, 'noise-free' "
        "the same loop without the Langevin draw (Hopf-Lax), both as ratios to L jitted "
        "plain SGD steps in the same process (which run under the same flags); 'SGD in a "
        "scan' the same L SGD steps inside one `lax.scan`; 'draw' is the hash noise alone "
        "per inner step; 'compile' that of the noisy outer step. 'environment': variables "
        "the setting gives its processes beside XLA_FLAGS.",
        "",
        "| model | setting | flags | environment | baseline ms / gradient "
        "| SGD in a scan ms / gradient | noisy ms / gradient "
        "| noisy ratio | noise-free ratio | draw ms / inner step | compile (s) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        environment_text = " ".join(f"`{k}={v}`" for k, v in row["environment"].items())
        lines.append(
            f"| {row['model']} | {SETTINGS[row['setting']][0]} | `{row['flags']}` "
            f"| {environment_text or '-'} | {row['baseline_ms_per_gradient']:.1f} "
            f"| {row['scan_sgd_ms_per_gradient']:.1f} "
            f"| {row['noisy_ms_per_gradient']:.1f} | {row['noisy_ratio']:.2f} "
            f"| {row['noise_free_ratio']:.2f} | {row['draw_ms_per_inner_step']:.2f} "
            f"| {row['noisy_compile_seconds']:.1f} |"
        )
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- in one process


WIDTHS = (256, 512)
IN_PROCESS_FIGURES = (
    "baseline_ms_per_gradient",
    "noisy_ms_per_gradient",
    "noise_free_ms_per_gradient",
    "draw_ms_per_inner_step",
)


def in_process(models: list[str], L: int, batch_size: int, rounds: int, repeats: int):
    """Per model and vector width: L jitted SGD steps, the noisy and noise-free relaxation
    step and the draw loop, each compiled with that width, all timed interleaved."""
    import jax

    rows = []
    for name in models:
        params, batches, grad = _problem(name, L, batch_size)
        runners, compile_seconds = {}, {}
        key = jax.random.PRNGKey(0)
        for width in WIDTHS:
            options = {VECTOR_WIDTH_FLAG.removeprefix("--"): width}
            runners[width, "baseline"] = sgd_baseline(grad, params, batches, L, options)
            for label, extra in (("noisy", {}), ("noise_free", {"noise": 0.0})):
                tx, relaxed = _relaxation_step(grad, L, **extra)
                tx_state = tx.init(params)
                start = time.perf_counter()
                compiled = relaxed.lower(params, tx_state, batches).compile(options)
                compile_seconds[width, label] = time.perf_counter() - start
                runners[width, label] = (compiled, (params, tx_state, batches))
            draw = jax.jit(noise_loop("hash", L)).lower(key, params).compile(options)
            runners[width, "draw"] = (draw, (key, params))
        medians = interleaved_medians(runners, rounds, repeats)
        ms = {label: 1e3 * m / L for label, m in medians.items()}
        for width in WIDTHS:
            base = ms[width, "baseline"]
            rows.append(
                {
                    "model": name,
                    "width": width,
                    "baseline_ms_per_gradient": base,
                    "noisy_ms_per_gradient": ms[width, "noisy"],
                    "noise_free_ms_per_gradient": ms[width, "noise_free"],
                    "draw_ms_per_inner_step": ms[width, "draw"],
                    "noisy_ratio": ms[width, "noisy"] / base,
                    "noise_free_ratio": ms[width, "noise_free"] / base,
                    "noisy_compile_seconds": compile_seconds[width, "noisy"],
                }
            )
        print(
            *(f"{name} {r['width']}: {r['noisy_ratio']:.2f}" for r in rows[-2:]),
            sep="\n",
            flush=True,
        )
    return rows


def write_in_process(out_dir: Path, stem: str, command: str, rows: list[dict], args) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {
        "command": command,
        **environment(),
        "avx512": has_avx512(),
        "L": args.L,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "repeats": args.repeats,
    }
    write_json(out_dir / f"{stem}.json", {**header, "rows": rows})
    lines = [
        "# XLA:CPU vector width, in one process",
        "",
        f"- command: `{command}`",
        f"- machine: {header['machine']} (AVX-512F: {'yes' if header['avx512'] else 'no'}; "
        "each step below was compiled with the width shown, whatever XLA_FLAGS says)",
        f"- versions: {header['versions']}",
        f"- date: {header['date']}",
        f"- L = {args.L}, batch {args.batch_size}; medians of {args.rounds} interleaved rounds "
        f"x {args.repeats} repeats, after compilation",
        "",
        "Every step compiled once per vector width (`compiler_options`, "
        f"`{VECTOR_WIDTH_FLAG.removeprefix('--')}`), all timed in the same rounds: "
        "'baseline' is L jitted plain SGD steps, 'noisy' the default Entropy-SGD step, "
        "'noise-free' the same loop without the Langevin draw (Hopf-Lax), 'draw' the hash "
        "noise alone per inner step; ratios are to the baseline of the same width. The "
        "'512 / 256' rows divide the 512-bit figures by the 256-bit ones of the same run.",
        "",
        "| model | width | baseline ms / gradient | noisy ms / gradient | noisy ratio "
        "| noise-free ms / gradient | noise-free ratio | draw ms / inner step | compile (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['width']} | {row['baseline_ms_per_gradient']:.1f} "
            f"| {row['noisy_ms_per_gradient']:.1f} | {row['noisy_ratio']:.2f} "
            f"| {row['noise_free_ms_per_gradient']:.1f} | {row['noise_free_ratio']:.2f} "
            f"| {row['draw_ms_per_inner_step']:.2f} | {row['noisy_compile_seconds']:.1f} |"
        )
        if row["width"] == WIDTHS[-1]:
            low = next(r for r in rows if r["model"] == row["model"] and r["width"] == WIDTHS[0])
            ratios = [row[f] / low[f] for f in IN_PROCESS_FIGURES]
            lines.append(
                f"| {row['model']} | 512 / 256 | {ratios[0]:.2f} | {ratios[1]:.2f} | "
                f"| {ratios[2]:.2f} | | {ratios[3]:.2f} | |"
            )
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnistfc"])
    parser.add_argument("--pairs", type=int, default=3, help="processes per setting")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--rounds", type=int, default=5, help="rounds inside each process")
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    parser.add_argument("--stem", default=DEFAULT_STEM)
    parser.add_argument("--smoke", action="store_true", help="tiny settings, for the test")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="compare the vector widths in one process (per-compilation options)",
    )
    parser.add_argument("--L", type=int, default=20, help="with --in-process")
    parser.add_argument("--batch-size", type=int, default=128, help="with --in-process")
    parser.add_argument("--repeats", type=int, default=2, help="with --in-process")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs = 1
    command = command_line(__file__, argv)
    if args.in_process:
        if args.smoke:
            args.models, args.L, args.batch_size, args.rounds, args.repeats = (
                ["mnistfc"],
                2,
                4,
                1,
                1,
            )
        rows = in_process(args.models, args.L, args.batch_size, args.rounds, args.repeats)
        stem = args.stem if args.stem != DEFAULT_STEM else "inner_loop_vector_width_in_process"
        write_in_process(Path(args.out_dir), stem, command.strip(), rows, args)
        return 0
    runs: dict[str, list[dict]] = {name: [] for name in args.settings}
    with tempfile.TemporaryDirectory() as scratch:
        for pair in range(args.pairs):
            for name in args.settings:
                result = run_once(name, args.models, args.rounds, args.smoke, Path(scratch))
                runs[name].append(result)
                print(f"round {pair} {name}: done", flush=True)
    rows = summarize(runs)
    for row in rows:
        print(
            f"{row['model']:8s} {row['setting']:8s}: noisy {row['noisy_ratio']:.2f}, "
            f"noise-free {row['noise_free_ratio']:.2f}, draw {row['draw_ms_per_inner_step']:.2f} ms"
        )
    first = runs[args.settings[0]][0]
    setting = {key: first[key] for key in ("L", "batch_size", "rounds")}
    write_results(Path(args.out_dir), args.stem, command.strip(), runs, rows, setting, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
