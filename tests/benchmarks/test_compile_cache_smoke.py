"""A tiny run of benchmarks/compile_cache.py: three fresh starts of ``relaxjax train``
(no cache, an empty one, the filled one), and the results it writes."""

import json
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.subprocess
def test_compile_cache_benchmark_smoke(tmp_path, load_benchmark):
    """``--smoke``: mnistfc with SGD, whose every program is cacheable."""
    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
    data_args = ["--data-dir", str(shared)] if shared.is_dir() else []
    assert (
        load_benchmark("compile_cache").main(["--smoke", "--out-dir", str(tmp_path), *data_args])
        == 0
    )
    result = json.loads((tmp_path / "compile_cache.json").read_text())
    assert result["command"].startswith("python benchmarks/compile_cache.py --smoke")
    assert result["versions"].startswith("jax ") and result["machine"] and result["date"]
    rows = {r["mode"]: r for r in result["rows"]}
    assert list(rows) == ["off", "cold", "warm"]
    assert rows["off"]["cache_entries"] == 0
    assert rows["cold"]["entries_written"] == rows["cold"]["cache_entries"] > 0
    assert rows["warm"]["entries_written"] == 0  # every program was found in the cache
    assert rows["cold"]["step_cached"]
    for row in rows.values():
        assert 0 < row["imports"] < row["to_first_step"] and row["second_step"] > 0
    (summary,) = result["summary"]
    assert summary["warm_over_cold_data_to_first_step"] > 0
    assert "| mnistfc |" in (tmp_path / "compile_cache.md").read_text()
    page = (tmp_path / "compile_cache.md").read_text()
    (tmp_path / "compile_cache.md").unlink()
    assert load_benchmark("compile_cache").main(["--report-only", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "compile_cache.md").read_text() == page


@pytest.mark.parametrize("name", ["compile_cache", "compile_cache_sgd"])
def test_committed_reports_are_what_their_measurements_render(tmp_path, load_benchmark, name):
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    (tmp_path / f"{name}.json").write_text((results / f"{name}.json").read_text())
    argv = ["--report-only", "--out-dir", str(tmp_path), "--name", name]
    assert load_benchmark("compile_cache").main(argv) == 0
    assert (tmp_path / f"{name}.md").read_text() == (results / f"{name}.md").read_text()
