"""Data parallelism on 4 simulated CPU devices (a subprocess: the device count is set at import).

* every relaxjax transform (``entropy_sgd``, ``hj_sgd``, ``entropy_adam``, and
  ``local_entropy`` under ``optax.inject_hyperparams``) gives the
  single-device update when the outer and every inner mini-batch are
  sharded over a ``NamedSharding`` mesh under ``jit``;
* ``relaxjax train --devices 4`` (the training step with its batches
  constrained to the mesh axis ``'data'``) matches the single-device run, and
  leaves the parameters replicated.
"""

import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import os
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = flags + " --xla_force_host_platform_device_count=4"
    import sys
    import flax.linen as nn
    import jax, jax.numpy as jnp, numpy as np, optax, relaxjax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from relaxjax import models
    from relaxjax.core.mesh import make_mesh
    from relaxjax.train.optimizers import OptimizerConfig
    from relaxjax.train import DataArrays, TrainConfig, train

    assert jax.device_count() == 4, jax.devices()
    L, B, D = 3, 32, 16
    mesh = make_mesh(4)
    assert dict(mesh.shape) == {"replica": 1, "data": 4}

    # 1. Every transform with sharded batches = unsharded.
    def loss(params, batch):
        x, y = batch
        return jnp.mean((jnp.tanh(x @ params["w"]) @ params["v"] - y) ** 2)

    def make_step(tx):
        @jax.jit
        def step(params, state, batches):
            batch = lambda i: jax.tree.map(lambda b: b[i], batches)
            grads = jax.grad(loss)(params, batch(0))
            updates, state = tx.update(grads, state, params,
                                       grad_fn=lambda p, i: jax.grad(loss)(p, batch(i)))
            return optax.apply_updates(params, updates), state
        return step

    transforms = {
        "entropy_sgd": relaxjax.entropy_sgd(1.0, gamma=0.1, num_steps=L, step_size=0.05,
                                            noise=1e-2, seed=5),
        "hj_sgd": relaxjax.hj_sgd(1.0, gamma=0.1, num_steps=L, step_size=0.05),
        "entropy_adam": relaxjax.entropy_adam(1.0, gamma=0.1, num_steps=L, noise=1e-2),
        "injected local_entropy": optax.inject_hyperparams(
            relaxjax.local_entropy, static_args=("num_steps",))(
            gamma=0.1, num_steps=L, step_size=0.05, noise=1e-2),
    }
    params = {"w": jax.random.normal(jax.random.PRNGKey(0), (D, 8)) / 4, "v": jnp.ones(8) / 8}
    x = jax.random.normal(jax.random.PRNGKey(1), (L, B, D))
    y = jnp.sin(x.sum(-1))
    sharded = jax.device_put((x, y), NamedSharding(mesh, P(None, "data")))
    replicated = jax.device_put(params, NamedSharding(mesh, P()))
    for name, tx in transforms.items():
        step = make_step(tx)
        p1, s1, p2, s2 = params, tx.init(params), replicated, tx.init(replicated)
        for _ in range(2):
            p1, s1 = step(p1, s1, (x, y))
            p2, s2 = step(p2, s2, sharded)
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
        assert len(p2["w"].sharding.device_set) == 4, name
        assert not np.allclose(p1["w"], params["w"]), name

    # 2. train --devices 4 (BatchNorm + dropout model) = the single-device run.
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Dense(32)(x.reshape(x.shape[0], -1))
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
            return nn.Dense(3)(nn.Dropout(0.1, deterministic=not train)(x))

    def blobs(n, seed):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 3, n)
        images = (np.eye(3, 16)[labels] * 3.0 + rng.normal(size=(n, 16))).reshape(n, 4, 4, 1)
        return jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)

    data = DataArrays(*blobs(768, 0), *blobs(300, 1), num_classes=3)
    optimizer = OptimizerConfig("entropy-sgd", lr=1.0, num_steps=2, gamma=10.0)
    runs = []
    for devices in (None, 4):
        config = TrainConfig(model="user", optimizer=optimizer, epochs=2, batch_size=32,
                             devices=devices)
        runs.append(train(config, os.path.join(sys.argv[1], str(devices)),
                          model=models.functional(Net()), data=data, progress=False,
                          log=lambda _: None))
    for single, sharded in zip(*runs):
        for key in ("train_loss", "train_error", "test_loss", "test_error"):
            np.testing.assert_allclose(single[key], sharded[key], rtol=2e-4, atol=2e-4)
    assert runs[0][-1]["test_error"] < 0.2, runs[0]
    print("DATA-PARALLEL-OK")
    """
)


@pytest.mark.slow
@pytest.mark.subprocess
def test_transforms_and_training_with_sharded_batches_match_single_device(
    tmp_path, cpu_subprocess_env
):
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=cpu_subprocess_env,
        timeout=300,
    )
    assert "DATA-PARALLEL-OK" in result.stdout, result.stderr[-4000:]
