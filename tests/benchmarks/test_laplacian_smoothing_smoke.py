"""A tiny run of benchmarks/laplacian_smoothing.py: it trains, and writes parseable results."""

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_laplacian_smoothing_benchmark_smoke(tmp_path, load_benchmark):
    """``--smoke``: generated data, one seed, three steps of SGD and of LS-SGD."""
    assert load_benchmark("laplacian_smoothing").main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "laplacian_smoothing.json").read_text())
    assert result["command"].startswith("python benchmarks/laplacian_smoothing.py --smoke")
    assert result["versions"].startswith("jax ") and result["machine"] and result["date"]
    assert result["config"]["data"] == "generated (smoke)"
    assert [(r["optimizer"], r["sigma"], r["steps"]) for r in result["rows"]] == [
        ("sgd", 0.0, 3),
        ("ls-sgd", 1.0, 3),
    ]
    for row in result["rows"]:
        assert 0 <= row["final_test_error"] <= 100 and row["ms_per_step"] > 0
    # Paired runs from one initialisation: the smoothing changes the trajectory.
    assert (
        result["rows"][0]["epochs"][0]["train_loss"] != result["rows"][1]["epochs"][0]["train_loss"]
    )
    assert len(result["paired_difference_ls_minus_sgd"]) == 1
    variance = result["gradient_variance"]
    assert 0 < variance["ratio"] < 1  # smoothing reduces the mini-batch gradient variance
    table = (tmp_path / "laplacian_smoothing.md").read_text()
    assert "| sgd | 0 | 1 |" in table and "| ls-sgd | 1 | 1 |" in table
    # The smoothing alone, timed on a vector of the network's size by both paths.
    solve = result["solve_timing"]
    assert solve["n"] > 1000 and solve["static_sigma_ms"] > 0 and solve["traced_sigma_ms"] > 0
    assert f"vector of the network's {solve['n']:,} parameters" in table
    assert "**Cost.** An LS-SGD step costs" in table
