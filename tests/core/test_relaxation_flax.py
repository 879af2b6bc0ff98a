"""Relaxation transforms with a Flax model that has BatchNorm and dropout.

The documented pattern (README, "Models with BatchNorm and dropout"):
  * the outer evaluation at x (mini-batch 0) runs in train mode with
    ``mutable=['batch_stats']``; its updated running statistics are the only
    ones kept;
  * ``grad_fn(y, i)`` runs in train mode too (batch statistics of mini-batch
    i) but discards the statistics it computes, so the L inner evaluations at
    perturbed weights y never leak into the running averages;
  * inner step i uses dropout key ``keys[i]`` split from one per-step key,
    a fresh mask per inner mini-batch.
"""

import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import relaxjax


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(32)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        x = nn.Dropout(0.3, deterministic=not train)(x)
        return nn.Dense(2)(x)


MODEL = _Net()
NUM_STEPS = 4


def _loss(params, batch_stats, batch, key):
    images, labels = batch
    logits, mutated = MODEL.apply(
        {"params": params, "batch_stats": batch_stats},
        images,
        train=True,
        rngs={"dropout": key},
        mutable=["batch_stats"],
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, mutated["batch_stats"]


def _make_train_step(tx):
    @jax.jit
    def train_step(params, batch_stats, opt_state, batches, key):
        """``batches`` holds L mini-batches stacked on axis 0."""
        keys = jax.random.split(key, NUM_STEPS)
        batch = lambda i: jax.tree.map(lambda b: b[i], batches)  # noqa: E731
        (loss, new_stats), grads = jax.value_and_grad(_loss, has_aux=True)(
            params, batch_stats, batch(0), keys[0]
        )

        def grad_fn(p, i):
            return jax.grad(_loss, has_aux=True)(p, batch_stats, batch(i), keys[i])[0]

        updates, opt_state = tx.update(grads, opt_state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    return train_step


def _blobs(key, n):
    k1, k2 = jax.random.split(key)
    labels = jax.random.bernoulli(k1, 0.5, (n,)).astype(jnp.int32)
    centres = jnp.where(labels[:, None] == 1, 1.0, -1.0) * jnp.ones((n, 8))
    return centres + 0.8 * jax.random.normal(k2, (n, 8)), labels


def _init():
    variables = MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 8)), train=False)
    return variables["params"], variables["batch_stats"]


@pytest.mark.slow
def test_running_statistics_come_from_the_outer_evaluation_only():
    params, stats = _init()
    tx = relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=NUM_STEPS, step_size=0.05)
    images, labels = _blobs(jax.random.PRNGKey(1), NUM_STEPS * 16)
    batches = (images.reshape(NUM_STEPS, 16, 8), labels.reshape(NUM_STEPS, 16))
    key = jax.random.PRNGKey(2)
    _, new_stats, _, _ = _make_train_step(tx)(params, stats, tx.init(params), batches, key)
    first_key = jax.random.split(key, NUM_STEPS)[0]
    _, expected = _loss(params, stats, (batches[0][0], batches[1][0]), first_key)
    jax.tree.map(np.testing.assert_allclose, new_stats, expected)
    assert not np.allclose(new_stats["BatchNorm_0"]["mean"], stats["BatchNorm_0"]["mean"])


def test_each_inner_step_gets_its_own_dropout_key():
    params, stats = _init()
    images, labels = _blobs(jax.random.PRNGKey(1), 16)
    tx = relaxjax.hopf_lax(gamma=0.1, num_steps=NUM_STEPS, step_size=0.05)
    grad = lambda p, k: jax.grad(_loss, has_aux=True)(p, stats, (images, labels), k)[0]  # noqa: E731

    def relaxed(keys):
        def grad_fn(p, i):
            return grad(p, keys[i])

        return tx.update(grad(params, keys[0]), tx.init(params), params, grad_fn=grad_fn)[0]

    keys = jax.random.split(jax.random.PRNGKey(3), NUM_STEPS)
    distinct = relaxed(keys)
    repeated = relaxed(jnp.stack([keys[0]] * NUM_STEPS))
    assert not np.allclose(distinct["Dense_0"]["kernel"], repeated["Dense_0"]["kernel"])
    # Same keys, same answer: the only randomness is the dropout keys we pass.
    np.testing.assert_array_equal(relaxed(keys)["Dense_0"]["kernel"], distinct["Dense_0"]["kernel"])


def test_entropy_sgd_trains_a_batchnorm_dropout_model():
    params, stats = _init()
    tx = relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=NUM_STEPS, step_size=0.05)
    opt_state = tx.init(params)
    train_step = _make_train_step(tx)
    key = jax.random.PRNGKey(4)
    for _step in range(40):
        key, data_key, step_key = jax.random.split(key, 3)
        images, labels = _blobs(data_key, NUM_STEPS * 32)
        batches = (images.reshape(NUM_STEPS, 32, 8), labels.reshape(NUM_STEPS, 32))
        params, stats, opt_state, loss = train_step(params, stats, opt_state, batches, step_key)
    test_images, test_labels = _blobs(jax.random.PRNGKey(99), 512)
    logits = MODEL.apply({"params": params, "batch_stats": stats}, test_images, train=False)
    accuracy = float((logits.argmax(-1) == test_labels).mean())
    assert accuracy > 0.95, accuracy


_SHARDED_SCRIPT = textwrap.dedent(
    """
    import os
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = flags + " --xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np, optax, relaxjax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    assert jax.device_count() == 4, jax.devices()
    L, B, D = 3, 32, 16

    def loss(params, batch):
        x, y = batch
        return jnp.mean((jnp.tanh(x @ params["w"]) @ params["v"] - y) ** 2)

    tx = relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=L, step_size=0.05, noise=1e-2, seed=5)

    @jax.jit
    def step(params, state, batches):
        batch = lambda i: jax.tree.map(lambda b: b[i], batches)
        grads = jax.grad(loss)(params, batch(0))
        updates, state = tx.update(grads, state, params,
                                   grad_fn=lambda p, i: jax.grad(loss)(p, batch(i)))
        return optax.apply_updates(params, updates), state

    key = jax.random.PRNGKey(0)
    params = {"w": jax.random.normal(key, (D, 8)) / 4, "v": jnp.ones((8,)) / 8}
    x = jax.random.normal(jax.random.PRNGKey(1), (L, B, D))
    y = jnp.sin(x.sum(-1))

    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.device_put((x, y), NamedSharding(mesh, P(None, "data")))
    replicated = jax.device_put(params, NamedSharding(mesh, P()))
    assert len(sharded[0].sharding.device_set) == 4

    p1, s1 = params, tx.init(params)
    p2, s2 = replicated, tx.init(replicated)
    for _ in range(3):
        p1, s1 = step(p1, s1, (x, y))
        p2, s2 = step(p2, s2, sharded)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(p1["w"], params["w"])
    print("SHARDED-OK")
    """
)


@pytest.mark.subprocess
def test_sharded_batches_match_single_device(run_python):
    result = run_python(_SHARDED_SCRIPT)
    assert "SHARDED-OK" in result.stdout, result.stderr[-3000:]
