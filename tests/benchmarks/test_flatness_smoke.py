"""A tiny run of benchmarks/flatness.py, and its pieces that are not ``relaxjax train``'s."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytestmark = [pytest.mark.slow]


def test_flatness_benchmark_smoke(tmp_path, load_benchmark):
    """``--smoke``: generated data, all six methods, tiny diagnostics, on ``mnistfc-dr``
    (each method on each network is its own compilation: ``lenet-dr`` would double the
    test's time and adds no code path of the benchmark; tests/models tests the network)."""
    flatness = load_benchmark("flatness")
    argv = ["--smoke", "--models", "mnistfc-dr", "--inner-steps", "heat=4"]
    argv += ["--out-dir", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs")]
    assert flatness.main([*argv, "--compilation-cache-dir", str(tmp_path / "jit")]) == 0
    result = json.loads((tmp_path / "out" / "flatness.json").read_text())
    assert result["command"].startswith("python benchmarks/flatness.py --smoke")
    assert result["versions"].startswith("jax ") and result["machine"] and result["date"]
    rows = result["rows"]
    assert [(r["model"], r["method"]) for r in rows] == [
        ("mnistfc-dr", method) for method in flatness.METHODS
    ]
    per_epoch = result["config"]["gradients_per_effective_epoch"]
    for r in rows:
        # Equal gradient evaluations: every method's budget, to within one outer step.
        assert abs(r["gradient_evaluations"] - per_epoch) < r["gradients_per_step"]
        assert 0 <= r["final_test_error"] <= 100
        assert len(r["top_eigenvalues"]) == 2 and r["top_eigenvalues"][0] >= r["top_eigenvalues"][1]
        assert np.isfinite(r["local_entropy_gap"]) and r["seconds_per_effective_epoch"] > 0
    steps = {(r["model"], r["method"]): r["gradients_per_step"] for r in rows}
    assert steps[("mnistfc-dr", "sam")] == 2 and steps[("mnistfc-dr", "entropy-sgd")] == 2
    assert steps[("mnistfc-dr", "heat")] == 4  # --inner-steps heat=4; the smoke's L is 2
    swa = [r for r in rows if r["method"] == "swa"]
    assert all(r["swa_snapshots"] >= 1 and r["iterate_final_test_error"] is not None for r in swa)
    assert len(result["verdicts"]) >= 2 and result["verdicts"][0].startswith("**mnistfc-dr**")
    table = (tmp_path / "out" / "flatness.md").read_text()
    assert "| mnistfc-dr | heat | 1 |" in table and "## Which method wins where" in table
    assert (tmp_path / "out" / "flatness.png").stat().st_size > 10_000
    # A second run finds every row done and trains nothing.
    before = (tmp_path / "runs" / "mnistfc-dr-sgd-s0" / "row.json").stat().st_mtime_ns
    assert flatness.main([*argv, "--report-only"]) == 0
    assert (tmp_path / "runs" / "mnistfc-dr-sgd-s0" / "row.json").stat().st_mtime_ns == before
    # The report re-rendered from a results file alone (no run directories), keeping the
    # rows' provenance and adding the report's; --rows-from trains nothing.
    saved = tmp_path / "saved.json"
    saved.write_text((tmp_path / "out" / "flatness.json").read_text())
    again = [*argv[:-2], "--runs-dir", str(tmp_path / "none"), "--report-only"]
    assert flatness.main([*again, "--rows-from", str(saved)]) == 0
    rerendered = json.loads((tmp_path / "out" / "flatness.json").read_text())
    assert rerendered["summary"] == result["summary"] and rerendered["rows"] == rows
    source_date = json.loads(saved.read_text())["date"]
    assert rerendered["date"] == source_date and rerendered["rows_from"] == str(saved)
    assert f"- rows read from `{saved}`" in (tmp_path / "out" / "flatness.md").read_text()
    assert not (tmp_path / "none").exists()
    with pytest.raises(SystemExit):
        flatness.main([*argv, "--rows-from", str(saved)])  # it needs --report-only


def test_train_with_is_relaxjax_train_loop(tmp_path, load_benchmark):
    """SAM and SWA's trainer, given the SGD that ``relaxjax train`` builds, reproduces
    ``relaxjax.train.train``'s run: same steps, evaluations and final weights."""
    from relaxjax import models, train
    from relaxjax.train import presets

    flatness = load_benchmark("flatness")
    images = jax.random.normal(jax.random.key(0), (64, 28, 28, 1))
    labels = (images.mean(axis=(1, 2, 3)) > 0).astype(jnp.int32)
    data = train.DataArrays(images, labels, images[:32], labels[:32], num_classes=2)
    model = models.get_model("mnistfc-dr", num_classes=2, hidden=8)
    config = presets.mnist(
        "sgd", epochs=2, batch_size=16, eval_batch_size=32, refresh_batches=2, seed=3
    )
    reference = train.train(config, tmp_path / "a", model=model, data=data, progress=False)
    tx = train.make_optimizer(config.optimizer, 4, seed=config.seed)
    ours = flatness.train_with(
        config, tmp_path / "b", tx, model=model, data=data, steps_per_epoch=4, total_steps=8
    )
    for key in ("step", "train_loss", "test_loss", "test_error"):
        assert [r[key] for r in ours] == [r[key] for r in reference]
    template = flatness.shapes(train.init_state(config, model, tx, images[:1]))
    a = flatness.final_state(tmp_path / "a", template)
    b = flatness.final_state(tmp_path / "b", template)
    assert all(
        bool(jnp.array_equal(x, y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_weight_averaging_keeps_the_mean_of_the_chosen_iterates(load_benchmark):
    flatness = load_benchmark("flatness")
    tx = flatness.weight_averaging(optax.sgd(1.0), start=2, every=2)
    x = jnp.zeros(2)
    state = tx.init(x)
    iterates = []
    for t in range(7):
        updates, state = tx.update(jnp.array([-1.0, -2.0 * t]), state, x)
        x = optax.apply_updates(x, updates)
        iterates.append(x)
    kept = [iterates[i] for i in (1, 3, 5)]  # after steps 2, 4 and 6
    assert int(state.count) == 3
    np.testing.assert_allclose(state.average, np.mean(kept, axis=0), rtol=1e-6)


def test_swa_learning_rate_is_the_recipe(load_benchmark):
    flatness = load_benchmark("flatness")
    rate = flatness.swa_learning_rate(0.1, 100)  # averaging from step 55
    values = [float(rate(t)) for t in (0, 27, 38.5, 49.5, 55, 99)]
    np.testing.assert_allclose(values, [0.1, 0.1, 0.075, 0.05, 0.05, 0.05], rtol=1e-5)
    assert flatness.swa_schedule(100, 10) == (55, 2)  # 45 steps / 20 snapshots
    assert flatness.swa_schedule(10_000, 10) == (5500, 10)  # once an epoch, as the recipe


def test_verdicts_follow_the_numbers(load_benchmark):
    flatness = load_benchmark("flatness")
    rows = []
    for seed in (0, 1, 2):
        for method, error, top in (("sgd", 2.0, 5.0), ("hj", 1.5, 3.0), ("sam", 2.5, 1.0)):
            rows.append(
                {
                    "model": "m",
                    "method": method,
                    "seed": seed,
                    "final_test_error": error + 0.1 * seed,
                    "top_eigenvalues": [top + seed],
                    "local_entropy_gap": top,
                    "smoothed_gap": 0.0,
                    "seconds_per_effective_epoch": 1.0 + (method == "sam"),
                    "train_loss_batch": 0.1,
                    "effective_epochs": 1.0,
                    "gradient_evaluations": 10,
                    "outer_steps": 10,
                }
            )
    text = "\n".join(flatness.verdicts(rows, flatness.summarise(rows)))
    assert "lowest mean test error: hj" in text
    assert "hj against SGD (same seeds): better" in text
    assert "sam against SGD (same seeds): worse" in text
    assert "Relaxations lower than SGD on every seed on m: hj" in text
    assert "Flattest by the top Hessian eigenvalue: sam" in text and "sam 2.00x" in text
    assert "Outer steps in the budget: hj 10 (each of L gradients), against sgd's 10" in text
    rows = [r for r in rows if r["method"] != "hj"]
    text = "\n".join(flatness.verdicts(rows, flatness.summarise(rows)))
    assert "lowest mean test error: sgd" in text and "relaxations" not in text.lower()


@pytest.mark.parametrize("bad", ["sgd=3", "heat=0", "heat=x", "ten"])
def test_inner_steps_option_names_the_problem(load_benchmark, bad, capsys):
    with pytest.raises(SystemExit):
        load_benchmark("flatness").main(["--smoke", "--inner-steps", bad])
    assert "--inner-steps takes L or METHOD=L" in capsys.readouterr().err


def test_readme_flatness_table_is_the_committed_measurement():
    """Every cell of the README's flatness table is the committed JSON's mean ± std."""
    root = Path(__file__).resolve().parents[2]
    summary = json.loads((root / "benchmarks/results/flatness.json").read_text())["summary"]
    cells = {
        (row["model"], row["method"]): "{:.2f} ± {:.2f}".format(*row["final_test_error"])
        for row in summary
    }
    readme = (root / "README.md").read_text()
    section = readme.split("### Flatness at equal gradient evaluations", 1)[1].split("\n## ", 1)[0]
    methods = ["sgd", "entropy-sgd", "hj", "heat", "sam", "swa"]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in rows] == ["mnistfc-dr", "lenet-dr"]
    for line in rows:
        model = line.split("`")[1]
        shown = [cell.strip() for cell in line.strip("|").split("|")[1:]]
        assert shown == [cells[(model, method)] for method in methods], model
