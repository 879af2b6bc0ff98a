"""``relaxjax.adapters.RelaxTrainState`` and ``linen_grad_fn``: a linen model with BatchNorm
and dropout, trained with the step of ``docs/adapters.md``."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.linen.fp8_ops import OVERWRITE_WITH_GRADIENT
from flax.training.train_state import TrainState

import relaxjax
from relaxjax.adapters import RelaxTrainState, linen_grad_fn

NUM_STEPS = 3
TX = relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=NUM_STEPS, step_size=0.05, noise=1e-3)
BATCHES = (NUM_STEPS, 32)


class _Net(nn.Module):
    rate: float = 0.3

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(32)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        x = nn.Dropout(self.rate, deterministic=not train)(x)
        return nn.Dense(2)(x)


class _State(RelaxTrainState):
    batch_stats: Any


def _create(tx=TX, rate=0.3):
    model = _Net(rate)
    variables = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8)), train=False))()
    return _State.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=tx,
    )


def _loss(params, state, batch, key):
    """Flax's loss with BatchNorm and dropout, taking the mini-batch and the key."""
    images, labels = batch
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats},
        images,
        train=True,
        rngs={"dropout": key},
        mutable=["batch_stats"],
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates


def _at(batches, i):
    return jax.tree.map(lambda b: b[i], batches)


@jax.jit
def _train_step(state, batches, key):
    """The documented step: Flax's, on mini-batch 0, plus ``grad_fn``."""

    def loss_fn(params, batch, key):
        return _loss(params, state, batch, key)

    grad_fn = linen_grad_fn(loss_fn, batches, key=key, has_aux=True)
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, _at(batches, 0), jax.random.fold_in(key, 0)
    )
    state = state.apply_gradients(grads=grads, grad_fn=grad_fn, batch_stats=updates["batch_stats"])
    return state, loss


def _blobs(key, shape):
    k1, k2 = jax.random.split(key)
    labels = jax.random.bernoulli(k1, 0.5, shape).astype(jnp.int32)
    centres = jnp.where(labels[..., None] == 1, 1.0, -1.0) * jnp.ones((*shape, 8))
    return centres + 0.8 * jax.random.normal(k2, (*shape, 8)), labels


@jax.jit
def _test_loss(state, batch):
    images, labels = batch
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = state.apply_fn(variables, images, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def test_entropy_sgd_trains_under_jit():
    state = _create()
    test_batch = _blobs(jax.random.key(99), BATCHES[1:])
    before = float(_test_loss(state, test_batch))
    key = jax.random.key(1)
    for _ in range(15):
        key, data_key, step_key = jax.random.split(key, 3)
        state, _ = _train_step(state, _blobs(data_key, BATCHES), step_key)
    assert int(state.step) == 15
    assert float(_test_loss(state, test_batch)) < 0.5 * before


def test_batch_norm_keeps_the_statistics_of_the_outer_evaluation_only():
    state = _create()
    batches = _blobs(jax.random.key(2), BATCHES)  # a different mini-batch per inner step
    key = jax.random.key(3)
    new_state, _ = _train_step(state, batches, key)

    outer = jax.jit(_loss)(state.params, state, _at(batches, 0), jax.random.fold_in(key, 0))
    expected = outer[1]["batch_stats"]
    close = lambda a, b: np.allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
    assert all(jax.tree.leaves(jax.tree.map(close, new_state.batch_stats, expected)))
    assert not close(expected["BatchNorm_0"]["mean"], state.batch_stats["BatchNorm_0"]["mean"])
    # Statistics updated by an inner step's mini-batch as well would differ from these.
    leaky = state.replace(batch_stats=expected)
    inner = jax.jit(_loss)(state.params, leaky, _at(batches, 1), jax.random.fold_in(key, 1))
    assert not close(
        inner[1]["batch_stats"]["BatchNorm_0"]["mean"], expected["BatchNorm_0"]["mean"]
    )


@jax.jit
def _inner_grads(state, batches, key):
    def loss_fn(params, batch, key):
        return _loss(params, state, batch, key)

    grad_fn = linen_grad_fn(loss_fn, batches, key=key, has_aux=True)
    grads = [grad_fn(state.params, jnp.int32(i))["Dense_0"]["kernel"] for i in range(NUM_STEPS)]
    direct = jax.grad(loss_fn, has_aux=True)(
        state.params, _at(batches, 1), jax.random.fold_in(key, 1)
    )[0]
    return grads, direct["Dense_0"]["kernel"]


def _same_batch_everywhere():
    images, labels = _blobs(jax.random.key(4), BATCHES[1:])
    return jnp.stack([images] * NUM_STEPS), jnp.stack([labels] * NUM_STEPS)


def test_each_inner_step_draws_its_own_dropout_key():
    (g0, g1, g2), direct = _inner_grads(_create(), _same_batch_everywhere(), jax.random.key(5))
    assert not np.allclose(g1, g2) and not np.allclose(g0, g1)  # one mini-batch: masks differ
    np.testing.assert_array_equal(g1, direct)  # inner step i's key is fold_in(key, i)


def test_without_dropout_every_inner_step_is_the_same():
    """The control of the test above: the masks are what differs between steps."""
    (_, g1, g2), _ = _inner_grads(_create(rate=0.0), _same_batch_everywhere(), jax.random.key(5))
    np.testing.assert_allclose(g1, g2)


def test_linen_grad_fn_without_a_key_or_aux_takes_batches_from_a_function():
    loss = lambda p, batch: jnp.sum(p * batch) ** 2 / 2  # noqa: E731
    grad_fn = linen_grad_fn(loss, lambda i: jnp.full(2, i, jnp.float32))
    np.testing.assert_allclose(grad_fn(jnp.ones(2), jnp.int32(3)), [18.0, 18.0])


@pytest.mark.parametrize("tx", [optax.adam(1e-2), optax.sgd(0.1)], ids=["adam", "sgd"])
def test_apply_gradients_is_flaxs_for_plain_optax_with_or_without_grad_fn(tx):
    params = {"w": jnp.arange(3.0)}
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}
    flax_state = TrainState.create(apply_fn=None, params=params, tx=tx)
    expected = flax_state.apply_gradients(grads=grads)
    state = RelaxTrainState.create(apply_fn=None, params=params, tx=tx)
    for grad_fn in (None, lambda p, i: grads):  # a plain optimizer ignores grad_fn
        new = state.apply_gradients(grads=grads, grad_fn=grad_fn)
        assert int(new.step) == 1
        np.testing.assert_array_equal(new.params["w"], expected.params["w"])
        jax.tree.map(np.testing.assert_array_equal, new.opt_state, expected.opt_state)


def test_grad_fn_sees_the_full_tree_with_an_overwrite_with_gradient_collection():
    tx = relaxjax.hopf_lax(gamma=1.0, num_steps=2, step_size=0.1)
    params = {"params": {"w": jnp.ones(2)}, OVERWRITE_WITH_GRADIENT: {"scale": jnp.ones(())}}
    grads = {"params": {"w": jnp.ones(2)}, OVERWRITE_WITH_GRADIENT: {"scale": jnp.full((), 7.0)}}
    seen = []

    def grad_fn(p, i):
        seen.append(jax.tree.structure(p))
        return {
            "params": {"w": 2 * p["params"]["w"]},
            OVERWRITE_WITH_GRADIENT: grads[OVERWRITE_WITH_GRADIENT],
        }

    new = RelaxTrainState.create(apply_fn=None, params=params, tx=tx).apply_gradients(
        grads=grads, grad_fn=grad_fn
    )
    assert seen and all(s == jax.tree.structure(params) for s in seen)  # at trace time
    expected, _ = tx.update(
        grads["params"],
        tx.init(params["params"]),
        params["params"],
        grad_fn=lambda p, i: {"w": 2 * p["w"]},
    )
    np.testing.assert_allclose(new.params["params"]["w"], params["params"]["w"] + expected["w"])
    assert float(new.params[OVERWRITE_WITH_GRADIENT]["scale"]) == 7.0
