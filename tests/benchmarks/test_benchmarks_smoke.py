"""Tiny runs of the benchmark scripts: they run and write parseable results."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


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
    assert candidates == {
        "baseline: L jitted SGD steps",
        "reference: the same L SGD steps inside one lax.scan",
        "default (rolled scan, canonical convs, hash noise)",
    }
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


def test_inner_loop_flax_dropout_reference_traces_threefry_masks():
    """The flax-dropout reference row really traces flax's threefry masks (one
    ``random_bits`` per activation), through the networks' ``dropout_masks`` option."""
    import re

    import jax

    inner_loop = _load("inner_loop")

    def mask_bits_shapes(model_options=()):
        params, batches, grad = inner_loop._problem("mnistfc", 1, 4, model_options)
        jaxpr = str(jax.make_jaxpr(lambda p: grad(p, batches, 0))(params))
        return set(re.findall(r"random_bits\[bit_width=32 shape=(\([^)]*\))", jaxpr))

    assert mask_bits_shapes() == {"(2,)"}  # the hash's key words only
    assert {"(4, 784)", "(4, 1024)"} <= mask_bits_shapes((("dropout_masks", "threefry"),))
    assert any(
        o.get("model") == {"dropout_masks": "threefry"} for o in inner_loop.CANDIDATES.values()
    )


def test_inner_loop_scan_reference_runs_the_baselines_sgd_steps():
    """The 'lax.scan' reference row times the very SGD steps of the baseline."""
    import jax

    inner_loop = _load("inner_loop")
    params, batches, grad = inner_loop._problem("mnistfc", 3, 4)
    separate, separate_args = inner_loop.sgd_baseline(grad, params, batches, 3)
    scanned, scanned_args = inner_loop.sgd_scan(grad, params, batches, 3)
    after_separate, after_scan = separate(*separate_args), scanned(*scanned_args)
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), after_separate, params)
    assert max(jax.tree.leaves(moved)) > 0  # the steps did move the weights
    for a, b in zip(jax.tree.leaves(after_separate), jax.tree.leaves(after_scan), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_paper_table_runner_smoke(tmp_path):
    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
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
    # Every run recorded now says how its dropout masks were drawn, and the table says it.
    assert "Dropout masks: the runs `mnistfc-dr-hj-s0`, `mnistfc-dr-hj-s1` drew them" in table
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


def test_paper_table_allcnn_cells(tmp_path):
    """All-CNN trains on the CIFAR-10 JPEG copy with the CIFAR defaults, and its rows say
    which data they were measured on (no training here: one CIFAR step is a GPU's work)."""
    table = _load("paper_table")
    config = table.cell_config("allcnn", "entropy-sgd", 0, 200.0, [])
    assert config.dataset == "cifar10-jpeg"
    assert config.use_zca and config.use_augmentation
    assert config.optimizer.weight_decay == 1e-3
    assert abs(config.optimizer.gamma - 1 / 0.03) < 1e-9
    assert table.cell_config("mnistfc-dr", "sgd", 0, 1.0, []).dataset == "mnist"
    assert [table.budget("allcnn", o) for o in ("sgd", "entropy-sgd", "hj")] == [195, 200, 145]
    # A record (as a device session would bring back) makes a row beside the paper's cells.
    record = tmp_path / "paper_runs" / "allcnn-sgd-s0"
    record.mkdir(parents=True)
    sgd = table.cell_config("allcnn", "sgd", 0, 195.0, [])
    (record / "config.json").write_text(json.dumps(sgd.to_json()))
    metrics = [
        {"effective_epochs": e, "test_error": err, "train_loss": 0.1, "seconds": 1.0}
        for e, err in ((97.5, 0.1), (195.0, 0.0799))
    ]
    (record / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    argv = ["--report-only", "--models", "allcnn", "--optimizers", "sgd", "--seeds", "0"]
    assert table.main(argv + ["--out-dir", str(tmp_path)]) == 0
    text = (tmp_path / "paper_table.md").read_text()
    assert "| allcnn | sgd | refreshed (50 batches) | 1 | 195 / 195 | 7.99 |" in text
    assert "| 1/1, @ 195 | met | 7.94 ± 0.06 @ 195 | 7.71 ± 0.19 @ 180 |" in text
    assert "JPEG re-encoding of CIFAR-10" in text


def test_paper_table_target_verdict():
    """A cell meets issue 4's target when its best error (mean over seeds) is at or below
    the paper's DR edge and was reached in no more effective epochs than the paper's."""
    verdict = _load("paper_table").target_verdict
    paper = {"DR": (0.50, 0.01, 70)}

    def row(best, epoch, complete=True):
        return {
            "best_error": (best, 0.02), "best_epoch": (epoch, 5.0), "complete": complete,
            "paper": paper, "paper_threshold": 0.51,
        }  # fmt: skip

    assert verdict(row(0.51, 70.0)) == "met"  # both at the edge
    assert verdict(row(0.45, 12.0)) == "met"  # lower error, sooner: better than the paper
    assert verdict(row(0.5133, 48.3)) == "not met: error 0.513 > 0.51"
    assert verdict(row(0.50, 70.5)) == "not met: @ 70.5 > 70"
    assert verdict(row(0.60, 80.0)) == "not met: error 0.600 > 0.51, @ 80.0 > 70"
    assert verdict(row(0.40, 10.0, complete=False)) == "in progress"


def test_input_pipeline_benchmark_smoke(tmp_path):
    assert _load("input_pipeline").main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "input_pipeline.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["mnistfc"]
    assert all(r["step_ms"] > 0 and r["input_ms"] > 0 for r in rows)


def test_xla_cpu_flags_benchmark_smoke(tmp_path):
    # One setting (one fresh process, ~25 s alone) whose flag is not XLA's default. The
    # interleaving settings pass LLVM options too, but double the compile time.
    arguments = ["--smoke", "--settings", "w512", "--out-dir", str(tmp_path)]
    assert _load("xla_cpu_flags").main(arguments) == 0
    results = json.loads((tmp_path / "inner_loop_xla_cpu_flags.json").read_text())
    assert [(row["model"], row["setting"]) for row in results["rows"]] == [("mnistfc", "w512")]
    assert "--xla_cpu_prefer_vector_width=512" in results["rows"][0]["flags"]
    (process,) = results["processes"]["w512"]  # one child process, timing one draw
    assert all(
        row["draw_ms_per_inner_step"] > 0 and row["noisy_ratio"] > 0 for row in results["rows"]
    )
    assert [row["work"] for row in process["noise"]] == ["hash noise (default)"]
    assert "| mnistfc | 512-bit vectors |" in (tmp_path / "inner_loop_xla_cpu_flags.md").read_text()


def test_xla_cpu_flags_in_process_smoke(tmp_path):
    """Both widths compiled and timed in one process, with the 512 / 256 ratios."""
    arguments = ["--in-process", "--smoke", "--out-dir", str(tmp_path)]
    assert _load("xla_cpu_flags").main(arguments) == 0
    results = json.loads((tmp_path / "inner_loop_vector_width_in_process.json").read_text())
    assert [(row["model"], row["width"]) for row in results["rows"]] == [
        ("mnistfc", 256),
        ("mnistfc", 512),
    ]
    assert all(row["draw_ms_per_inner_step"] > 0 for row in results["rows"])
    assert (
        "| mnistfc | 512 / 256 |"
        in (tmp_path / "inner_loop_vector_width_in_process.md").read_text()
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


def test_device_session_round_trip(tmp_path, monkeypatch):
    """The prepared device calls: a run's last checkpoint travels in parts under the 16 MiB
    a returned file may have and is rebuilt for the next call; what comes back is placed
    where the repository keeps it; the timing phase runs each benchmark into $OUT."""
    session = _load("device_session")
    run = tmp_path / "runs" / "allcnn-sgd-s0"
    for step in (10, 20):
        (run / "checkpoints" / str(step)).mkdir(parents=True)
    payload = np.random.default_rng(0).bytes(20 * 2**20)  # incompressible: two parts
    (run / "checkpoints" / "20" / "state").write_bytes(payload)
    (run / "checkpoints" / "10" / "state").write_bytes(b"older")
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"effective_epochs": 1.0}\n')
    out = tmp_path / "out"
    parts = session.archive_run(run, out / "run")
    assert [p.name for p in parts] == [f"allcnn-sgd-s0.tar.gz.part0{i}" for i in (0, 1)]
    assert all(p.stat().st_size <= 15 * 2**20 for p in parts)
    (out / "paper_runs" / "allcnn-sgd-s0").mkdir(parents=True)
    (out / "paper_runs" / "allcnn-sgd-s0" / "metrics.jsonl").write_text("{}\n")
    (out / "results").mkdir()
    (out / "results" / "inner_loop_gpu.md").write_text("# gpu\n")
    home = tmp_path / "home"
    placed = session.unpack(out, results=home / "results", device_dir=home / ".device")
    assert {p.relative_to(home).as_posix() for p in placed} == {
        "results/inner_loop_gpu.md",
        "results/paper_runs/allcnn-sgd-s0/metrics.jsonl",
        ".device/run/allcnn-sgd-s0.tar.gz.part00",
        ".device/run/allcnn-sgd-s0.tar.gz.part01",
    }
    rebuilt = tmp_path / "rebuilt"
    assert session.restore_run(home / ".device" / "run", "allcnn-sgd-s0", rebuilt)
    assert (rebuilt / "allcnn-sgd-s0" / "checkpoints" / "20" / "state").read_bytes() == payload
    assert not (rebuilt / "allcnn-sgd-s0" / "checkpoints" / "10").exists()  # the last only
    assert not session.restore_run(home / ".device" / "run", "allcnn-hj-s0", rebuilt)
    commands = []
    monkeypatch.setattr(session, "_run", lambda command, deadline, log: commands.append(command))
    session.timings(tmp_path / "gpu", seconds=60, smoke=False, log=lambda *_: None)
    assert [Path(c[1]).name for c in commands] == [
        "inner_loop.py",
        "inner_loop.py",
        "compare_pytorch.py",
    ]
    assert all(str(tmp_path / "gpu" / "results") in c for c in commands)
    stems = [c[c.index("--stem") + 1] for c in commands]
    assert len(set(stems)) == 3 and all(s.endswith("_gpu") for s in stems)
    assert "cuda" in commands[2]
    assert (tmp_path / "gpu" / "results" / "environment_gpu.txt").read_text().strip()
