"""Tiny runs of the benchmark scripts: they run and write parseable results."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_inner_loop_benchmark_smoke(tmp_path):
    assert _load("inner_loop").main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "inner_loop.json").read_text())
    candidates = {row["candidate"] for row in results["timing"]}
    assert "baseline: L jitted SGD steps" in candidates and len(candidates) == 3
    assert all(row["seconds_per_outer_step"] > 0 for row in results["timing"])
    assert [(row["mode"], row["L"]) for row in results["scaling"]] == [
        (mode, L) for mode in ("reuse_gradient=True (default)", "reuse_gradient=False (train)")
        for L in (1, 2)
    ]  # fmt: skip
    assert [row["work"] for row in results["noise"]] == [
        "axpy only (no draw)",
        "hash noise (default)",
        "hash noise through jax.lax.erf_inv",
        "threefry noise",
    ]
    assert all(row["ms_per_inner_step"] > 0 for row in results["noise"])
    assert "| mnistfc |" in (tmp_path / "inner_loop.md").read_text()


def test_paper_table_runner_smoke(tmp_path):
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    data_args = ["--data-dir", str(shared)] if shared.is_dir() else []
    argv = ["--smoke", "--out-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]
    assert _load("paper_table").main(argv + data_args) == 0
    rows = json.loads((tmp_path / "paper_table.json").read_text())["rows"]
    assert [(r["model"], r["optimizer"], r["seeds"]) for r in rows] == [("mnistfc-dr", "hj", 2)]
    assert all(0 <= r["final_error"][0] <= 100 for r in rows)
    table = (tmp_path / "paper_table.md").read_text()
    assert "1.17 ± 0.04 @ 200" in table  # the paper's HJ cell beside ours
    assert (tmp_path / "paper_table.png").stat().st_size > 10_000
    assert "| 1 / 1 |" in table  # every seed reached the budget
    assert "- runs trained on: " in table and "cores" in table
    environment = json.loads(
        (tmp_path / "paper_runs" / "mnistfc-dr-hj-s1" / "environment.json").read_text()
    )
    assert environment["versions"].startswith("jax ")
    # --report-only rebuilds the same table from the run directories, training nothing.
    (tmp_path / "paper_table.json").unlink()
    assert _load("paper_table").main(argv + data_args + ["--report-only"]) == 0
    again = json.loads((tmp_path / "paper_table.json").read_text())["rows"]
    assert [r["final_error"] for r in again] == [r["final_error"] for r in rows]
    # Runs recorded in full are not trained again (a later session continues the table).
    records = tmp_path / "paper_runs"
    assert sorted(p.name for p in records.iterdir()) == ["mnistfc-dr-hj-s0", "mnistfc-dr-hj-s1"]
    before = (records / "mnistfc-dr-hj-s0" / "metrics.jsonl").read_text()
    # A run that has gone further than its record (a job still training) is recorded by
    # --record-in-progress; a plain --report-only leaves the records alone.
    (records / "mnistfc-dr-hj-s0" / "metrics.jsonl").write_text("")
    assert _load("paper_table").main(argv + data_args + ["--report-only"]) == 0
    assert (records / "mnistfc-dr-hj-s0" / "metrics.jsonl").read_text() == ""
    extra = ["--report-only", "--record-in-progress"]
    assert _load("paper_table").main(argv + data_args + extra) == 0
    assert (records / "mnistfc-dr-hj-s0" / "metrics.jsonl").read_text() == before
    shutil.rmtree(tmp_path / "runs")  # no checkpoints left: only the records remain
    assert _load("paper_table").main(argv + data_args) == 0
    assert not (tmp_path / "runs").exists()
    assert (records / "mnistfc-dr-hj-s0" / "metrics.jsonl").read_text() == before
    assert "| mnistfc-dr | hj | refreshed (50 batches) | 2 |" in table
    # A record of another configuration (here: written before the BatchNorm refresh
    # existed) is trained again; a run directory of that configuration is set aside.
    config_path = records / "mnistfc-dr-hj-s1" / "config.json"
    old_config = json.loads(config_path.read_text())
    del old_config["refresh_batches"]
    config_path.write_text(json.dumps(old_config))
    shutil.copytree(records / "mnistfc-dr-hj-s1", tmp_path / "runs" / "mnistfc-dr-hj-s1")
    assert _load("paper_table").main(argv + data_args + ["--report-only"]) == 0
    table = (tmp_path / "paper_table.md").read_text()
    assert "| mnistfc-dr | hj | as trained | 1 |" in table  # each protocol its own row
    assert _load("paper_table").main(argv + data_args) == 0
    assert json.loads(config_path.read_text())["refresh_batches"] == 50
    superseded = list((tmp_path / "runs" / "superseded").iterdir())
    assert [p.name.rsplit("-", 1)[0] for p in superseded] == ["mnistfc-dr-hj-s1"]
    assert (records / "mnistfc-dr-hj-s0" / "metrics.jsonl").read_text() == before


def test_input_pipeline_benchmark_smoke(tmp_path):
    assert _load("input_pipeline").main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "input_pipeline.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["mnistfc"]
    assert all(r["step_ms"] > 0 and r["input_ms"] > 0 for r in rows)


def test_xla_cpu_flags_benchmark_smoke(tmp_path):
    # One setting (one fresh process, ~40 s): the one whose flags reach LLVM through XLA.
    arguments = ["--smoke", "--settings", "w512-i8", "--out-dir", str(tmp_path)]
    assert _load("xla_cpu_flags").main(arguments) == 0
    results = json.loads((tmp_path / "inner_loop_xla_cpu_flags.json").read_text())
    assert [(row["model"], row["setting"]) for row in results["rows"]] == [("mnistfc", "w512-i8")]
    assert "-force-vector-interleave=8" in results["rows"][0]["flags"]
    assert all(
        row["draw_ms_per_inner_step"] > 0 and row["noisy_ratio"] > 0 for row in results["rows"]
    )
    assert (
        "| mnistfc | 512-bit vectors, interleave 8 |"
        in (tmp_path / "inner_loop_xla_cpu_flags.md").read_text()
    )


def test_notebook_client_stall_script_smoke(tmp_path, capsys):
    import nbformat

    notebook = tmp_path / "tiny.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nbformat.write(nb, notebook)
    script = _load("notebook_client_stall")
    for mode in ("stock", "sliced"):
        assert script.main([mode, "1", "--notebook", str(notebook), "--timeout", "120"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["stock run 0", "sliced run 0"]
    assert all(float(line.split(":")[1].removesuffix(" s")) > 0 for line in lines)
