"""A tiny run of benchmarks/evaluation_protocol.py: it trains, refreshes three ways, writes."""

import json

import pytest

pytestmark = [pytest.mark.slow]


def test_evaluation_protocol_smoke(tmp_path, load_benchmark):
    """``--smoke``: a run trained on generated digits, its final checkpoint evaluated after
    each protocol's BatchNorm refresh, every draw recorded."""
    script = load_benchmark("evaluation_protocol")
    assert script.main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "evaluation_protocol.json").read_text())
    assert result["command"].startswith("python benchmarks/evaluation_protocol.py --smoke")
    assert [p[0] for p in result["protocols"]] == ["relaxjax", "lua", "pytorch"]
    (row,) = result["rows"]
    assert row["step"] == 16 and row["recorded_test_error"] is not None
    # What each protocol fed from the 512 examples (its counts scaled down for the smoke).
    assert result["protocols"] == [["relaxjax", 128, 1], ["lua", 512, 1], ["pytorch", 128, 4]]
    for name, batch_size, batches in result["protocols"]:
        measured = row["protocols"][name]
        assert (measured["batch_size"], measured["batches"]) == (batch_size, batches)
        assert len(measured["test_errors"]) == result["draws"] == 2
        assert all(0 <= e <= 100 for e in measured["test_errors"])
    page = (tmp_path / "evaluation_protocol.md").read_text()
    assert "| smoke |" in page and "largest difference between two protocols" in page
    with pytest.raises(SystemExit):
        script.main(["--out-dir", str(tmp_path)])  # no runs and no --smoke


def test_load_run_state_refuses_a_directory_without_checkpoints(tmp_path):
    from relaxjax.train import TrainConfig, load_run_state

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(TrainConfig().to_json()))
    with pytest.raises(ValueError, match="no checkpoint"):
        load_run_state(tmp_path / "run", model=None, data=None)
