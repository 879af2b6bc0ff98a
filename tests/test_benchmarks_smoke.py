"""Tiny runs of the benchmark scripts: they run and write parseable results."""

import importlib.util
import json
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
    assert "baseline: L jitted SGD steps" in candidates and len(candidates) >= 5
    assert all(row["seconds_per_outer_step"] > 0 for row in results["timing"])
    assert [row["L"] for row in results["scaling"]] == [1, 2]
    assert "| mnistfc |" in (tmp_path / "inner_loop.md").read_text()
