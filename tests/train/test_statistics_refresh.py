"""Re-estimating BatchNorm statistics with dropout off before evaluation ("dry feed")."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from relaxjax import models
from relaxjax.train import (
    DataArrays,
    TrainConfig,
    cli,
    make_statistics_refresh,
    train,
)
from relaxjax.train.optimizers import OptimizerConfig


class _DropThenNorm(nn.Module):
    """x -> dropout(rate) -> BatchNorm: the running variance is the oracle's subject."""

    rate: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dropout(self.rate, deterministic=not train)(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)


class _NnxDropThenNorm(nnx.Module):
    def __init__(self, rate: float, rngs: nnx.Rngs):
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.norm = nnx.BatchNorm(4, momentum=0.9, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.drop(x))


def _gaussian(n, sigma, seed=0):
    return sigma * jax.random.normal(jax.random.PRNGKey(seed), (n, 4))


@pytest.mark.parametrize("name", ["mnistfc", "lenet"])
def test_feed_equals_train_mode_of_the_same_network_without_dropout(name):
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 28, 28, 1))
    model = models.get_model(name)
    params, state = model.init(jax.random.PRNGKey(0), x[:1])
    fed = model.feed_statistics(params, state, x)
    no_dropout = models.get_module(name).clone(dropout=0.0)
    if name == "mnistfc":
        no_dropout = no_dropout.clone(input_dropout=0.0)
    _, expected = models.functional(no_dropout).apply(
        params, state, x, train=True, dropout_key=jax.random.PRNGKey(5)
    )
    jax.tree.map(np.testing.assert_allclose, fed, expected)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), fed, state)
    assert all(jax.tree.leaves(changed))  # every running statistic moved


@pytest.mark.parametrize(
    "make",
    [
        lambda rate: models.functional(_DropThenNorm(rate)),
        lambda rate: models.functional(_NnxDropThenNorm(rate, nnx.Rngs(0, dropout=1))),
    ],
    ids=["linen", "nnx"],
)
@pytest.mark.slow
def test_refresh_recovers_the_variance_dropout_inflates(make):
    """Inverted dropout at rate p multiplies E[x²] by 1/(1-p): σ² = 4 is seen as 8 in training;
    re-estimated without dropout the running variance is σ² again (closed form)."""
    model = make(0.5)
    x = _gaussian(8192, sigma=2.0)
    params, state = model.init(jax.random.PRNGKey(0), x[:1])
    apply = jax.jit(model.apply, static_argnames="train")
    for i in range(60):  # training: BatchNorm statistics gathered with dropout on
        _, state = apply(
            params, state, x[i * 128 % 8192 :][:128], train=True, dropout_key=jax.random.PRNGKey(i)
        )
    trained_var = np.asarray(jax.tree.leaves(state)[-1])
    np.testing.assert_allclose(trained_var, 8.0, rtol=0.2)

    refresh = make_statistics_refresh(model, batch_size=128, num_batches=50)
    refreshed = refresh(params, state, x, 0, 1)
    var = np.asarray(jax.tree.leaves(refreshed)[-1])
    np.testing.assert_allclose(var, 4.0, rtol=0.1)
    np.testing.assert_allclose(np.asarray(jax.tree.leaves(refreshed)[0]), 0.0, atol=0.15)


def test_refresh_is_the_feeds_of_batches_fixed_by_seed_and_step():
    model = models.functional(_DropThenNorm())
    x = _gaussian(1000, sigma=1.0, seed=3)
    params, state = model.init(jax.random.PRNGKey(0), x[:1])
    refresh = make_statistics_refresh(model, batch_size=100, num_batches=4)
    once, again = refresh(params, state, x, 7, 3), refresh(params, state, x, 7, 3)
    jax.tree.map(np.testing.assert_array_equal, once, again)
    other = refresh(params, state, x, 7, 4)
    assert not np.allclose(jax.tree.leaves(other)[0], jax.tree.leaves(once)[0])

    # Four feeds of 100 distinct training examples, applied in order.
    seen = []
    traced = models.FunctionalModel(
        model.init,
        model.apply,
        lambda p, s, batch: (seen.append(np.asarray(batch)), model.feed_statistics(p, s, batch))[1],
    )
    with jax.disable_jit():  # the feed is jitted; record its concrete batches
        make_statistics_refresh(traced, batch_size=100, num_batches=4)(params, state, x, 7, 3)
    batches = np.stack(seen)
    assert batches.shape == (4, 100, 4)
    rows = {tuple(r) for r in batches.reshape(-1, 4)}
    assert len(rows) == 400 and rows <= {tuple(r) for r in np.asarray(x)}


def test_refresh_leaves_the_state_alone_when_it_cannot_or_should_not_run():
    model = models.functional(_DropThenNorm())
    x = _gaussian(256, sigma=1.0)
    params, state = model.init(jax.random.PRNGKey(0), x[:1])
    assert make_statistics_refresh(model, 32, 0)(params, state, x, 0, 1) is state
    no_feed = models.FunctionalModel(model.init, model.apply)
    assert make_statistics_refresh(no_feed, 32, 5)(params, state, x, 0, 1) is state
    assert make_statistics_refresh(model, 32, 5)(params, {}, x, 0, 1) == {}
    # fewer examples than a batch: one batch of everything
    small = make_statistics_refresh(model, 512, 5)(params, state, x, 0, 1)
    np.testing.assert_allclose(
        jax.tree.leaves(small)[0], 0.1 * jnp.mean(x, axis=0), rtol=1e-5, atol=1e-7
    )


@pytest.mark.slow
def test_training_stores_and_evaluates_with_the_refreshed_statistics(tmp_path):
    """With the refresh, the checkpointed BatchNorm statistics are those the test error used;
    the weights' trajectory is the same with or without it."""
    data = DataArrays(*_classes(512, 0), *_classes(200, 1), num_classes=3)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Dropout(0.5, deterministic=not train)(x.reshape(x.shape[0], -1))
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Dense(16)(x)))
            return nn.Dense(3)(x)

    optimizer = OptimizerConfig("sgd", lr=0.1)
    runs = {}
    for batches in (0, 8):
        config = TrainConfig(
            model="user", optimizer=optimizer, epochs=2, batch_size=32, refresh_batches=batches
        )
        metrics = train(
            config,
            tmp_path / str(batches),
            model=models.functional(Net()),
            data=data,
            progress=False,
        )
        runs[batches] = (metrics, _checkpoint(tmp_path / str(batches)))
    (plain, plain_ckpt), (fed, fed_ckpt) = runs[0], runs[8]
    jax.tree.map(np.testing.assert_array_equal, plain_ckpt["params"], fed_ckpt["params"])
    assert plain[-1]["train_loss"] == fed[-1]["train_loss"]
    stats = jax.tree.leaves(fed_ckpt["model_state"])
    assert not np.allclose(stats[-1], jax.tree.leaves(plain_ckpt["model_state"])[-1])

    evaluate_with = _test_error(Net(), data, fed_ckpt)
    assert fed[-1]["test_error"] == pytest.approx(evaluate_with)


def _classes(n, seed):
    labels = jax.random.randint(jax.random.PRNGKey(seed), (n,), 0, 3)
    noise = jax.random.normal(jax.random.PRNGKey(seed + 100), (n, 2, 2, 4))
    return noise + 2.0 * jax.nn.one_hot(labels, 16).reshape(n, 2, 2, 4), labels


def _checkpoint(run_dir):
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as manager:
        return manager.restore(manager.latest_step())


def _test_error(module, data, checkpoint):
    logits, _ = models.functional(module).apply(
        checkpoint["params"], checkpoint["model_state"], data.test_images, train=False
    )
    return float(jnp.mean(jnp.argmax(logits, -1) != data.test_labels))


def test_the_command_line_sets_the_refresh_and_old_runs_read_as_without_one():
    parse = cli.build_parser().parse_args
    assert cli.config_from_args(parse(["train"])).refresh_batches == 50
    assert cli.config_from_args(parse(["train", "--refresh-batches", "0"])).refresh_batches == 0
    saved = TrainConfig().to_json()
    del saved["refresh_batches"]  # a config.json written before the option existed
    assert TrainConfig.from_json(json.loads(json.dumps(saved))).refresh_batches == 0
    with pytest.raises(ValueError, match="refresh_batches must be >= 0"):
        TrainConfig(refresh_batches=-1)
