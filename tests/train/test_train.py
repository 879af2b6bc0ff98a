"""The training command: end to end on MNIST, exact resume, plots, user models, bad names."""

import dataclasses
import json
from pathlib import Path

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import relaxjax
from relaxjax import models
from relaxjax.train import DataArrays, TrainConfig, cli, read_metrics, train
from relaxjax.train.optimizers import OptimizerConfig, make_optimizer

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# The shared MNIST beside the checkout (CI has it); elsewhere the loader finds or downloads it.
DATA_ARGS = ["--data-dir", str(SHARED_DATA)] if SHARED_DATA.is_dir() else []
SMALL = ["--train-limit", "1024", "--test-limit", "500", "--batch-size", "64", "--no-progress"]
TIMING_KEYS = {"seconds", "examples_per_second"}


def _without_timing(metrics):
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in metrics]


@pytest.mark.slow
def test_cli_trains_entropy_sgd_on_mnist_and_plots(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--model", "mnistfc", "--optimizer", "entropy-sgd", "-L", "2"]
    assert cli.main([*argv, "--epochs", "2", "--run-dir", str(run), *SMALL, *DATA_ARGS]) == 0
    metrics = read_metrics(run)
    assert [m["effective_epochs"] for m in metrics] == [1.0, 2.0]
    # 1024 examples / (64 x 2) = 8 outer steps per effective epoch, 2 gradients each.
    assert [m["gradient_evaluations"] for m in metrics] == [16, 32]
    assert metrics[-1]["test_error"] < 0.5  # learning, not chance (0.9)
    assert json.loads((run / "config.json").read_text())["optimizer"]["num_steps"] == 2
    assert "test error" in capsys.readouterr().out

    sgd = tmp_path / "sgd"
    assert (
        cli.main(
            ["train", "--optimizer", "sgd", "--epochs", "1", "--run-dir", str(sgd)]
            + SMALL
            + DATA_ARGS
        )
        == 0
    )
    assert read_metrics(sgd)[0]["gradient_evaluations"] == 16  # 1024 / 64

    png = tmp_path / "curves.png"
    assert cli.main(["plot", str(run), str(sgd), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize(
    "inner",
    [[], ["--inner-momentum", "0.9", "--inner-momentum-buffer", "keep"]],
    ids=["sgd", "momentum"],
)
def test_resumed_run_equals_uninterrupted_run(tmp_path, inner):
    # With the inner momentum kept across outer steps the relaxation's state holds the
    # momentum buffer, which the checkpoint must carry across the interruption.
    argv = ["train", "--optimizer", "hj", "-L", "3", "--epochs", "2", *inner, *SMALL, *DATA_ARGS]
    config = cli.config_from_args(cli.build_parser().parse_args(argv))
    full = train(config, tmp_path / "full", progress=False)

    # 1024 // (64 x 3) = 5 outer steps per epoch: interrupted mid-way through epoch 2.
    partial = train(config, tmp_path / "resumed", progress=False, stop_after_steps=7)
    assert _without_timing(partial) == _without_timing(full[:1])
    assert cli.main([*argv, "--run-dir", str(tmp_path / "resumed"), "--resume"]) == 0
    resumed = read_metrics(tmp_path / "resumed")
    assert _without_timing(resumed) == _without_timing(full)

    params = [_final_params(tmp_path / name, config) for name in ("full", "resumed")]
    jax.tree.map(np.testing.assert_array_equal, *params)


def _final_params(run_dir, config):
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as manager:
        restored = manager.restore(manager.latest_step())
    return restored["params"]


def test_resume_refuses_a_different_configuration(tmp_path, capsys):
    argv = ["train", "--optimizer", "sgd", "--epochs", "1", "--run-dir", str(tmp_path / "r")]
    assert cli.main([*argv, *SMALL, *DATA_ARGS]) == 0
    assert cli.main([*argv, "--seed", "1", "--resume", *SMALL, *DATA_ARGS]) == 2
    assert "--seed 1 (saved: 0)" in capsys.readouterr().err
    assert cli.main([*argv, *SMALL, *DATA_ARGS]) == 2  # would overwrite a finished run
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="entropy-sgd", inner_momentum=1.0), "inner_momentum must be in"),
        (dict(name="sgd", inner_momentum=0.9), "not 'sgd'"),
        (dict(name="entropy-adam", inner_momentum=0.9), "not 'entropy-adam'"),
    ],
)
def test_bad_inner_momentum_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OptimizerConfig(**kwargs)


@pytest.mark.parametrize("name", ["entropy-sgd", "hj", "heat"])
def test_inner_momentum_buffer_lives_in_the_optimizer_state(name):
    """``keep`` (the Deep Relaxation research code) carries the buffer in the state;
    ``reset`` (the default: the Entropy-SGD code zeroes it every outer step) has none."""
    config = OptimizerConfig(name, inner_momentum=0.9, inner_momentum_buffer="keep")
    params = {"w": jnp.ones(3)}
    relaxation_state = make_optimizer(config, 10).init(params)[0]
    (trace,) = [s for s in relaxation_state.inner_state if hasattr(s, "trace")]
    chex.assert_trees_all_equal(trace.trace, {"w": jnp.zeros(3)})
    for config in (OptimizerConfig(name), OptimizerConfig(name, inner_momentum=0.9)):
        state = make_optimizer(config, 10).init(params)[0]
        assert type(state) is relaxjax.RelaxationState  # checkpoints keep their layout


def test_the_run_checks_its_gamma_schedule_on_the_host_before_it_starts():
    """With the run's length, make_optimizer checks η′ < 2γ_t at every outer step (the
    scoping lowers γ_t) and names the options; the same schedule over a shorter run
    passes, with no update-time check left in the relaxation."""
    # γ_t = 1 · 1.1^−t falls below η′/2 = 0.05 at t = 32.
    config = OptimizerConfig("entropy-sgd", num_steps=2, gamma=1.0, scoping=0.1, step_size=0.1)
    with pytest.raises(
        ValueError, match=r"lowers gamma to 0\.0243 by step 39 of this run's 40"
    ) as error:
        make_optimizer(config, 10, total_steps=40)
    error.match("Lower --step-size or --scoping, raise --gamma")
    params = {"w": jnp.ones(3)}

    def step_text(tx) -> str:
        step = jax.jit(lambda p, s: tx.update(p, s, p, grad_fn=lambda y, i: y))
        return step.lower(params, tx.init(params)).as_text()

    assert "callback" not in step_text(make_optimizer(config, 10, total_steps=30))
    # The run's length unknown: the relaxation checks at every update.
    assert "callback" in step_text(make_optimizer(config, 10))


def test_inner_momentum_buffer_reset_or_kept_changes_the_steps():
    """From the second outer step on, a kept buffer moves the weights otherwise."""
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grad = jax.grad(lambda p: 0.5 * jnp.sum(p["w"] ** 4))
    finals = {}
    for buffer in ("reset", "keep"):
        config = OptimizerConfig(
            "hj", num_steps=4, gamma=1.0, inner_momentum=0.9, inner_momentum_buffer=buffer
        )
        tx, p = make_optimizer(config, 10), params
        state = tx.init(p)
        for _ in range(3):
            updates, state = tx.update(grad(p), state, p, grad_fn=lambda y, i: grad(y))
            p = optax.apply_updates(p, updates)
        finals[buffer] = p["w"]
    assert not np.allclose(finals["reset"], finals["keep"])
    with pytest.raises(ValueError, match="inner_momentum_buffer must be one of"):
        OptimizerConfig("hj", inner_momentum=0.9, inner_momentum_buffer="zero")
    with pytest.raises(ValueError, match="needs an inner_momentum"):
        OptimizerConfig("hj", inner_momentum_buffer="keep")


@pytest.mark.slow
def test_cli_trains_heat_with_the_research_codes_settings(tmp_path):
    """``--optimizer heat``: coupling 10 (γ = 0.1), no scoping, L inner steps a step."""
    run = tmp_path / "heat"
    argv = ["train", "--optimizer", "heat", "-L", "4", "--epochs", "1", "--refresh-batches", "2"]
    argv += ["--run-dir", str(run)]
    assert cli.main([*argv, *SMALL, *DATA_ARGS]) == 0
    saved = json.loads((run / "config.json").read_text())["optimizer"]
    assert (saved["name"], saved["gamma"], saved["scoping"], saved["num_steps"]) == (
        "heat",
        0.1,
        0.0,
        4,
    )
    (metrics,) = read_metrics(run)
    assert metrics["gradient_evaluations"] == 4 * (1024 // (64 * 4))
    assert metrics["gamma"] == pytest.approx(0.1)  # no scoping
    assert np.isfinite(metrics["train_loss"]) and metrics["test_error"] < 0.9
    default = cli.config_from_args(cli.build_parser().parse_args(["train", "--optimizer", "heat"]))
    assert default.optimizer.num_steps == 100  # the research code's L


@pytest.mark.parametrize(
    "flag, value, valid", [("--model", "vgg", "mnistfc"), ("--optimizer", "lbfgs", "entropy-sgd")]
)
def test_unknown_names_list_the_valid_ones(flag, value, valid, capsys):
    assert cli.main(["train", flag, value]) == 2
    err = capsys.readouterr().err
    assert f"invalid choice: '{value}'" in err and valid in err


def test_unknown_dataset_lists_the_valid_ones(capsys):
    assert cli.main(["train", "--dataset", "svhn"]) == 2
    assert "cifar10" in capsys.readouterr().err


class _LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(32)(x)))
        return nn.Dense(3)(x)


class _NnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(16, 32, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.out = nnx.Linear(32, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.dense(x.reshape(x.shape[0], -1)))))


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.eye(3, 16)[labels] * 3.0
    images = (centres + rng.normal(size=(n, 16))).reshape(n, 4, 4, 1)
    return jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)


@pytest.mark.parametrize("make", [lambda: _LinenNet(), lambda: _NnxNet(nnx.Rngs(0))])
def test_a_users_flax_model_plugs_into_the_training_step(make, tmp_path):
    data = DataArrays(*_blobs(768, 0), *_blobs(300, 1), num_classes=3)
    config = TrainConfig(
        model="user",
        optimizer=OptimizerConfig("entropy-sgd", lr=1.0, num_steps=3, gamma=10.0),
        epochs=3,
        batch_size=32,
    )
    metrics = train(config, tmp_path, model=models.functional(make()), data=data, progress=False)
    assert len(metrics) == 3
    assert metrics[-1]["test_error"] < 0.1
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]


def test_on_device_crop_and_flip():
    from relaxjax.train.inputs import crop_flip as _crop_flip

    images = jnp.arange(2 * 8 * 8 * 1, dtype=jnp.float32).reshape(2, 8, 8, 1) + 1
    outs = [_crop_flip(jax.random.PRNGKey(k), jnp.repeat(images, 50, axis=0)) for k in (0, 0, 1)]
    np.testing.assert_array_equal(outs[0], outs[1])  # deterministic given the key
    assert not np.array_equal(outs[0], outs[2])
    out = np.asarray(outs[0])
    assert out.shape == (100, 8, 8, 1)
    originals = np.asarray(jnp.repeat(images, 50, axis=0))
    flipped = originals[:, :, ::-1]
    # Some outputs are shifted (zero padding enters), some are flipped copies.
    assert (out == 0).any(axis=(1, 2, 3)).mean() > 0.5
    assert any(np.array_equal(o, f) for o, f in zip(out, flipped, strict=True))
    # Every crop is a window of the padded (possibly flipped) image: values are preserved.
    assert set(np.unique(out)) <= set(np.unique(originals)) | {0.0}


def test_training_step_evaluates_the_first_gradient_inside_the_loop():
    """make_optimizer's relaxations take reuse_gradient=False: same step, and XLA drops the
    step's own backward pass at x, so the compiled step holds one gradient, not two."""
    import optax

    from relaxjax import local_entropy
    from relaxjax.train import init_state, make_train_step
    from relaxjax.train.optimizers import make_optimizer

    images, labels = _blobs(256, 0)
    model = models.functional(_LinenNet())
    config = TrainConfig(model="user", optimizer=OptimizerConfig("entropy-sgd", num_steps=3))
    perm = jnp.arange(256)

    def relaxation(reuse):
        return optax.chain(
            local_entropy(gamma=10.0, num_steps=3, noise=1e-3, reuse_gradient=reuse),
            optax.sgd(1.0, momentum=0.9, nesterov=True),
        )

    results, dots = {}, {}
    for name, tx in [
        ("reuse", relaxation(True)),
        ("in_loop", relaxation(False)),
        ("make_optimizer", make_optimizer(config.optimizer, 2.0)),
    ]:
        step = make_train_step(model, tx, 3, 32)
        state = init_state(config, model, tx, images[:1])
        hlo = step.lower(state, images, labels, perm, 0).compile().as_text()
        dots[name] = hlo.count(" dot(")
        for s in range(2):
            state, _ = step(state, images, labels, perm, s)
        results[name] = state.params
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        results["reuse"],
        results["in_loop"],
    )
    # Two dense layers: a gradient is 2 forward and 3 backward dots (no input gradient).
    assert dots["reuse"] == 5 + 5, dots  # the step's own gradient, and the loop body's
    assert dots["in_loop"] == 2 + 5, dots  # the loss at x (forward only), the loop body
    assert dots["make_optimizer"] == dots["in_loop"], dots


def test_limits_give_every_class_of_a_class_sorted_split():
    """An image folder is stored class by class: its first N examples are one class, so a
    limited run takes N evenly spaced examples instead; a shuffled split keeps its first N."""
    from relaxjax.train.inputs import _limited

    images = np.arange(300)[:, None]
    sorted_labels = np.repeat(np.arange(3), 100)
    x, y = _limited(images, sorted_labels, 30)
    assert len(y) == 30 and np.bincount(y).tolist() == [10, 10, 10]
    assert (y == sorted_labels[x[:, 0]]).all()  # each image keeps its label
    shuffled = np.random.default_rng(0).permutation(sorted_labels)
    x, y = _limited(images, shuffled, 30)
    assert (y == shuffled[:30]).all() and (x[:, 0] == np.arange(30)).all()
    assert _limited(images, sorted_labels, None)[1] is sorted_labels
    assert len(_limited(images, sorted_labels, 1000)[1]) == 300


def test_throughput_counts_the_steps_of_each_window(monkeypatch):
    """The progress bar's examples per second: steps since the last reading over the time
    since then (not since the epoch started, and not reset by dispatch)."""
    from relaxjax.train import loop

    clock = iter([100.0, 102.0, 103.0, 110.0, 110.5])
    monkeypatch.setattr(loop.time, "perf_counter", lambda: next(clock))
    meter = loop.Throughput(examples_per_step=64, start_step=0)  # window opens at t = 100
    assert meter.update(10) == pytest.approx(10 * 64 / 2.0)  # t = 102
    assert meter.update(20) == pytest.approx(10 * 64 / 1.0)  # t = 103: only the new window
    meter.restart(20)  # t = 110: after an evaluation
    assert meter.update(25) == pytest.approx(5 * 64 / 0.5)  # t = 110.5


def test_input_scaling_lua_is_the_lua_codes_and_channel_is_the_default(monkeypatch):
    """``--input-scaling lua`` gives (x − 126)/126 (the Lua Entropy-SGD code's utils.lua);
    the default standardises each channel by the training set's statistics; with ZCA the
    option is refused, naming the problem."""
    from relaxjax import data as data_lib
    from relaxjax.train import TrainConfig, load_data

    rng = np.random.default_rng(0)
    splits = {
        "train": (rng.integers(0, 256, (20, 28, 28, 1), np.uint8), np.arange(20) % 10),
        "test": (rng.integers(0, 256, (8, 28, 28, 1), np.uint8), np.arange(8) % 10),
    }
    monkeypatch.setattr(data_lib, "load_dataset", lambda name, split, data_dir=None: splits[split])
    argv = ["train", "--input-scaling", "lua", "--data-dir", "unused"]
    config = cli.config_from_args(cli.build_parser().parse_args(argv))
    assert config.input_scaling == "lua" and TrainConfig().input_scaling == "channel"
    lua = load_data(config)
    for got, split in ((lua.train_images, "train"), (lua.test_images, "test")):
        np.testing.assert_allclose(np.asarray(got), (splits[split][0] - 126.0) / 126.0, rtol=1e-6)
    channel = load_data(dataclasses.replace(config, input_scaling="channel"))
    train = np.asarray(channel.train_images)
    assert abs(train.mean()) < 1e-5 and abs(train.std() - 1) < 1e-3
    with pytest.raises(ValueError, match="input_scaling must be one of"):
        TrainConfig(input_scaling="minmax")
    with pytest.raises(ValueError, match="turn ZCA off"):
        TrainConfig(dataset="cifar10", input_scaling="lua")
