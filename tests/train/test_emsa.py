"""``relaxjax train --optimizer emsa`` (E-MSA of Li, Chen, Tai, E; JMLR 2018): end to end,
exact resume, refused models, the CPU conv-layout path, and the benchmark's smoke run."""

import json
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from relaxjax import msa
from relaxjax.train import TrainConfig, cli, emsa, load_data, read_metrics
from relaxjax.train.optimizers import OptimizerConfig, make_optimizer

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
DATA_ARGS = ["--data-dir", str(SHARED_DATA)] if SHARED_DATA.is_dir() else []
# 200 examples / batch 50 = 4 E-MSA iterations per effective epoch, 3 L-BFGS steps per layer.
TINY = [
    "train",
    "--optimizer",
    "emsa",
    "--model",
    "msa-resnet-tiny",
    "--train-limit",
    "200",
    "--test-limit",
    "200",
    "--batch-size",
    "50",
    "--inner-steps",
    "3",
    "--no-progress",
    *DATA_ARGS,
]
TIMING_KEYS = {"seconds", "examples_per_second"}


def _without_timing(metrics):
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in metrics]


def _final_params(run_dir):
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as manager:
        return manager.restore(manager.latest_step())["params"]


@pytest.mark.slow
def test_cli_trains_emsa_and_plots(tmp_path, capsys):
    run = tmp_path / "emsa"
    assert cli.main([*TINY, "--epochs", "2", "--rho", "0.05", "--run-dir", str(run)]) == 0
    metrics = read_metrics(run)
    assert [m["effective_epochs"] for m in metrics] == [1.0, 2.0]
    assert [m["gradient_evaluations"] for m in metrics] == [4, 8]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[-1]["test_error"] < 0.6  # learning (chance: 0.9)
    assert all(m["hamiltonian_gain"] > 0 and m["augmented_gain"] >= 0 for m in metrics)
    optimizer = json.loads((run / "config.json").read_text())["optimizer"]
    assert optimizer["name"] == "emsa" and optimizer["msa_inner_steps"] == 3
    assert optimizer["msa_rho"] == 0.05 and optimizer["msa_inner_optimizer"] == "lbfgs"
    assert "test error" in capsys.readouterr().out

    png = tmp_path / "curves.png"
    assert cli.main(["plot", str(run), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_resumed_emsa_run_equals_uninterrupted_run(tmp_path):
    # A fixed-iteration inner solver (unrolled on CPU; cheap to compile) and init noise,
    # whose key is part of the checkpoint.
    argv = [*TINY, "--epochs", "2", "--msa-inner-optimizer", "sgd", "--msa-init-noise", "0.01"]
    config = cli.config_from_args(cli.build_parser().parse_args(argv))
    data = load_data(config)
    full = emsa.train_emsa(config, tmp_path / "full", data=data, progress=False)

    # 4 iterations per epoch: interrupted in the middle of epoch 2.
    resumed = tmp_path / "resumed"
    partial = emsa.train_emsa(
        config, resumed, data=data, progress=False, stop_after_steps=6, log=lambda _: None
    )
    assert _without_timing(partial) == _without_timing(full[:1])
    assert cli.main([*argv, "--run-dir", str(resumed), "--resume"]) == 0
    assert _without_timing(read_metrics(resumed)) == _without_timing(full)
    params = [_final_params(tmp_path / name) for name in ("full", "resumed")]
    jax.tree.map(np.testing.assert_array_equal, *params)


@pytest.mark.parametrize("model", ["lenet", "mnistfc"])
def test_emsa_refuses_models_that_are_not_layer_sequences(model, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--optimizer", "emsa", "--model", model, "--run-dir", str(run)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot train --model {model}" in err and "sequence of layers" in err
    assert "msa-resnet" in err and "BatchNorm" in err
    assert not run.exists()  # refused before anything is written
    config = TrainConfig(model=model, optimizer=OptimizerConfig("emsa"))
    with pytest.raises(ValueError, match="msa-resnet"):
        emsa.train_emsa(config, tmp_path / "api")
    with pytest.raises(ValueError, match="not an Optax transformation"):
        make_optimizer(OptimizerConfig("emsa"), 10)


def test_bad_emsa_options_are_refused_before_writing(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main([*TINY, "--rho", "-1", "--run-dir", str(run)]) == 2
    assert "argument --rho: expected a finite number >= 0, got '-1'" in capsys.readouterr().err
    assert cli.main([*TINY, "--inner-steps", "0", "--run-dir", str(run)]) == 2
    assert "argument --inner-steps: expected an integer >= 1" in capsys.readouterr().err
    assert not run.exists()


def test_msa_models_train_with_gradient_methods_from_the_same_start(tmp_path):
    run = tmp_path / "adam"
    at = TINY.index("--inner-steps")  # an E-MSA option: refused with adam
    argv = [a if a != "emsa" else "adam" for a in TINY[:at] + TINY[at + 2 :]]
    assert cli.main([*argv, "--epochs", "1", "--run-dir", str(run)]) == 0
    assert read_metrics(run)[0]["test_error"] < 0.9
    # relaxjax train's initial parameters for a seed are E-MSA's too.
    model = emsa.layer_model("msa-resnet-tiny")
    init_key = jax.random.split(jax.random.PRNGKey(0))[0]
    params, _ = model.init(init_key, np.zeros((1, 28, 28, 1), np.float32))
    config = TrainConfig(model="msa-resnet-tiny", optimizer=OptimizerConfig("emsa"))
    emsa_start = emsa._initial_state(config, model, np.zeros((1, 28, 28, 1), np.float32))
    jax.tree.map(np.testing.assert_array_equal, params, emsa_start.params)


@pytest.mark.slow
def test_canonical_line_search_matches_the_plain_one():
    """The conv-layout rewrite of L-BFGS's line search changes only rounding."""
    layers = msa.paper_mnist_net(
        jax.random.key(0), input_shape=(8, 8, 1), projection_channels=(4, 4), num_residual=1
    )
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 1))
    xs = msa.forward(layers, x)
    ps = msa.costates(layers, xs, jax.numpy.arange(6), msa.softmax_cross_entropy)
    t = 1  # the second projection layer: 4 -> 4 channels, tanh, max-pool
    args = (layers.params[t], xs[t], ps[t + 1], xs[t + 1], ps[t], 0.1, jax.random.key(2))
    results = []
    for inner in (optax.lbfgs(), emsa.canonical_inner_optimizer(optax.lbfgs())):
        solve = jax.jit(msa.layer_maximizer(inner, 3), static_argnums=(0, 1))
        results.append(solve(layers.apply_fns[t], None, *args))
    plain, canonical = results
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(canonical.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(canonical.aug_new, plain.aug_new, rtol=1e-5)
    assert float(canonical.aug_new) > float(canonical.aug_old)


def test_gray28_substitute_conversion(load_benchmark):
    bench = load_benchmark("msa_benchmark")
    rgb = np.zeros((2, 32, 32, 3), np.uint8)
    rgb[0] = 255
    rgb[1, ..., 1] = 100
    gray = bench.to_gray28(rgb)
    assert gray.shape == (2, 28, 28, 1) and gray.dtype == np.uint8
    assert np.all(gray[0] == 255) and np.all(gray[1] == round(0.587 * 100))


def test_msa_benchmark_smoke(tmp_path, load_benchmark):
    argv = ["--smoke", "--tasks", "sine", "mnist", "--out-dir", str(tmp_path)]
    assert load_benchmark("msa_benchmark").main(argv) == 0
    results = json.loads((tmp_path / "msa_smoke.json").read_text())
    tasks = {row["task"] for row in results["comparison"]}
    assert tasks == {"sine-good", "sine-zero", "mnist"}
    methods = {row["method"].split()[0] for row in results["comparison"]}
    assert methods == {"emsa", "sgd", "adagrad", "adam"}
    assert all(r["curve"][-1]["test_loss"] > 0 for r in results["runs"])
    markdown = (tmp_path / "msa_smoke.md").read_text()
    assert "### mnist (test accuracy)" in markdown and "| emsa (rho 0.03) |" in markdown
    assert (tmp_path / "msa_smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
