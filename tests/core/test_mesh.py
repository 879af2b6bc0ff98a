"""Data parallelism on 4 simulated CPU devices (a subprocess: the device count is set at import).

``relaxjax train --devices 4`` (the training step with its batches constrained to the
mesh axis ``'data'``) matches the single-device run and leaves the parameters
replicated. Every transform with sharded batches is checked by the Optax contract
(``tests/core/test_optax_contract.py``).
"""

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
    from relaxjax import models
    from relaxjax.core.mesh import make_mesh
    from relaxjax.train.optimizers import OptimizerConfig
    from relaxjax.train import DataArrays, TrainConfig, train

    assert jax.device_count() == 4, jax.devices()
    mesh = make_mesh(4)
    assert dict(mesh.shape) == {"replica": 1, "data": 4}

    # train --devices 4 (BatchNorm + dropout model) = the single-device run.
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
def test_training_with_sharded_batches_matches_single_device(tmp_path, run_python):
    result = run_python(_SCRIPT, tmp_path)
    assert "DATA-PARALLEL-OK" in result.stdout, result.stderr[-4000:]
