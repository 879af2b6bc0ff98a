"""A tiny run of benchmarks/scaling.py: the collectives of the compiled steps of
data-parallel Entropy-SGD and of Parle on two simulated devices, and the projection."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling.py"


def test_scaling_benchmark_smoke(tmp_path, cpu_subprocess_env):
    # A child process: the script sets the number of simulated devices before JAX starts.
    command = [sys.executable, str(SCRIPT), "--smoke", "--out-dir", str(tmp_path)]
    done = subprocess.run(command, env=cpu_subprocess_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert result["command"].startswith("python benchmarks/scaling.py --smoke")
    (model,) = result["models"]
    layouts = {row["layout"]: row for row in model["layouts"]}
    dp, parle = layouts["data parallel"], layouts["one replica per device"]
    # Parle all-reduces x̄ once per outer step: the parameters' bytes, and a few scalars
    # (the step's metrics) that XLA's all-reduce combiner folds into the same collective;
    # data parallel all-reduces a gradient at each of its L = 2 inner steps, and more.
    assert parle["collectives"] == 1
    extra = parle["bytes_per_outer_step"] - model["parameter_bytes"]
    assert 0 <= extra <= 16, extra
    assert dp["collectives"] > 2 and dp["bytes_per_outer_step"] >= 2 * model["parameter_bytes"]
    # L = 2 gradient evaluations at least (XLA's own count has the loop body once).
    assert model["flops_per_outer_step"] >= 2 * model["flops_per_sgd_step"] > 0
    assert [[p["devices"] for p in rows] for rows in model["projection"]] == [[8, 64, 512]] * 2
    for rows in model["projection"]:
        assert rows[0]["parle"] < rows[0]["entropy-sgd"]
        assert rows[2]["dp_fixed_batch_compute_seconds"] is None  # batch 16 < 512 devices
    assert "## Projected: 8, 64 and 512 devices" in (tmp_path / "scaling.md").read_text()
