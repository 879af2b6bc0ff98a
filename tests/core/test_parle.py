"""Parle (Chaudhari et al., *Parle: parallelizing stochastic gradient descent*, 2017).

* one replica without elastic coupling is Entropy-SGD, step for step;
* uncoupled replicas (ρ = 0) are independent Entropy-SGD runs on their own
  data streams and Langevin keys; coupling pulls them together; x̄ is their
  average;
* on 4 simulated devices (a subprocess): replicas sharded over the mesh axis
  'replica' give the vmapped answer, the only collective of a Parle step is
  one all-reduce, and ``relaxjax train --optimizer parle --devices 4`` (mesh
  2 replicas x 2 data) matches the single-device run (data parallelism
  alone: ``test_data_parallel.py``);
* ``relaxjax train --optimizer parle --replicas 2``: a short run, and a run
  interrupted and resumed, end with the same replicas and metrics.
"""

import functools
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import relaxjax
from relaxjax.core.parle import coupling_schedule, parle, parle_step, replica_key
from relaxjax.train import cli, read_metrics, train

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
DATA_ARGS = ["--data-dir", str(SHARED_DATA)] if SHARED_DATA.is_dir() else []
L, B, D = 3, 16, 8
HYPER = dict(gamma=0.5, num_steps=L, step_size=0.05, noise=1e-2)


def _loss(params, batch):
    x, y = batch
    return jnp.mean((jnp.tanh(x @ params["w"]) @ params["v"] - y) ** 2)


_grad = jax.grad(_loss)


def _params():
    return {"w": jax.random.normal(jax.random.PRNGKey(0), (D, 4)) / 3, "v": jnp.ones(4) / 4}


def _streams(num_replicas, steps=4):
    """Per outer step, per replica, L mini-batches: x [steps, n, L, B, D]."""
    x = jax.random.normal(jax.random.PRNGKey(1), (steps, num_replicas, L, B, D))
    return x, jnp.sin(x.sum(-1))


def _run_parle(tx, data):
    step = jax.jit(functools.partial(parle_step, tx, grad_fn=_grad))
    reference, state = _params(), tx.init(_params())
    for x, y in zip(*data, strict=True):
        reference, state = step(reference, state, batches=(x, y))
    return reference, state


@jax.jit
def _entropy_sgd_step(params, state, batches):
    """The README's Entropy-SGD step (the seed lives in the state, not in the update)."""
    tx = relaxjax.entropy_sgd(0.1, **HYPER)
    batch = lambda i: jax.tree.map(lambda b: b[i], batches)  # noqa: E731
    grads = _grad(params, batch(0))
    updates, state = tx.update(grads, state, params, grad_fn=lambda p, i: _grad(p, batch(i)))
    return optax.apply_updates(params, updates), state


def _run_entropy_sgd(seed, x, y):
    """``relaxjax.entropy_sgd(0.1, seed=seed, **HYPER)`` on one stream x [steps, L, B, D]."""
    params, state = _params(), relaxjax.entropy_sgd(0.1, seed=seed, **HYPER).init(_params())
    for k in range(len(x)):
        params, state = _entropy_sgd_step(params, state, (x[k], y[k]))
    return params


def _replica(state, a):
    return jax.tree.map(lambda r: r[a], state.replicas)


def test_one_replica_without_coupling_is_entropy_sgd():
    x, y = _streams(1)
    reference, state = _run_parle(parle(0.1, rho=0.0, num_replicas=1, seed=7, **HYPER), (x, y))
    expected = _run_entropy_sgd(7, x[:, 0], y[:, 0])
    jax.tree.map(np.testing.assert_array_equal, _replica(state, 0), expected)
    jax.tree.map(np.testing.assert_array_equal, reference, expected)  # x̄ = the one replica
    assert not np.allclose(expected["w"], _params()["w"])


def test_uncoupled_replicas_are_independent_runs_and_coupling_pulls_them_together():
    n = 3
    x, y = _streams(n)
    reference, state = _run_parle(parle(0.1, rho=0.0, num_replicas=n, seed=7, **HYPER), (x, y))
    for a in range(n):
        expected = _run_entropy_sgd(replica_key(7, a), x[:, a], y[:, a])
        jax.tree.map(np.testing.assert_array_equal, _replica(state, a), expected)
    # x̄ is the replicas' average (reference_rate 1).
    average = jax.tree.map(lambda r: r.mean(0), state.replicas)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), reference, average)

    def spread(state, reference):
        return float(jnp.abs(state.replicas["w"] - reference["w"]).mean())

    rho = coupling_schedule(2.0, 0.5, maximum=5.0)
    coupled = _run_parle(parle(0.1, rho=rho, num_replicas=n, seed=7, **HYPER), (x, y))
    assert spread(*coupled[::-1]) < 0.5 * spread(state, reference)


def test_parle_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_replicas"):
        parle(0.1, rho=0.0, num_replicas=0, **HYPER)
    with pytest.raises(ValueError, match="reference_rate"):
        parle(0.1, rho=0.0, num_replicas=2, reference_rate=0.0, **HYPER)
    with pytest.raises(ValueError, match="rho"):
        parle(0.1, rho=-1.0, num_replicas=2, **HYPER)


_SHARDED_SCRIPT = textwrap.dedent(
    """
    import os
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = flags + " --xla_force_host_platform_device_count=4"
    import functools, re, sys
    import flax.linen as nn
    import jax, jax.numpy as jnp, numpy as np
    import relaxjax
    from relaxjax import models
    from relaxjax.core.mesh import make_mesh
    from relaxjax.train.optimizers import OptimizerConfig
    from relaxjax.core.parle import coupling_schedule, parle, parle_step
    from relaxjax.train import DataArrays, TrainConfig, train

    assert jax.device_count() == 4, jax.devices()
    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    from test_parle import _grad, _params, _streams, HYPER, L

    # 1. parle_step: 4 replicas sharded over the mesh axis 'replica' = vmapped.
    n = 4
    data = _streams(n, steps=3)
    results = []
    for mesh in (None, make_mesh(4, num_replicas=n)):
        tx = parle(0.1, rho=coupling_schedule(0.5, 0.1, maximum=2.0), num_replicas=n, mesh=mesh,
                   **{**HYPER, "gamma": relaxjax.scoping(0.5, 0.1)})
        reference, state = _params(), tx.init(_params())
        step = jax.jit(functools.partial(parle_step, tx, grad_fn=_grad))
        step = step.lower(reference, state, batches=(data[0][0], data[1][0])).compile()
        for x, y in zip(*data):
            reference, state = step(reference, state, batches=(x, y))
        results.append((reference, state))
    assert state.replicas["w"].sharding.spec[0] == "replica"
    assert len(state.replicas["w"].sharding.device_set) == 4
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Communication: one all-reduce (x̄ = the replicas' mean) per outer step.
    ops = re.findall(r"= [^=]*? (all-reduce|all-gather|all-to-all|"
                     r"collective-permute|reduce-scatter)(?:-start)?\\(", step.as_text())
    assert ops == ["all-reduce"], ops

    # 2. train --optimizer parle --devices 4 (mesh 2 x 2) matches the single-device run.
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
    optimizer = OptimizerConfig("parle", lr=1.0, num_steps=2, gamma=10.0, replicas=2,
                                elastic_rho=0.1, noise=1e-3)
    runs = []
    for devices in (None, 4):
        config = TrainConfig(model="user", optimizer=optimizer, epochs=1, batch_size=32,
                             devices=devices)
        runs.append(train(config, os.path.join(sys.argv[2], str(devices)),
                          model=models.functional(Net()), data=data, progress=False,
                          log=lambda _: None))
    for single, sharded in zip(*runs):
        for key in ("train_loss", "train_error", "test_loss", "test_error"):
            np.testing.assert_allclose(single[key], sharded[key], rtol=2e-4, atol=2e-4)
    assert runs[0][-1]["test_error"] < 0.2, runs[0]
    print("PARLE-SHARDED-OK")
    """
)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sharded_parle_matches_vmapped_and_single_device(tmp_path, run_python):
    result = run_python(_SHARDED_SCRIPT, __file__, tmp_path, cwd=ROOT)
    assert "PARLE-SHARDED-OK" in result.stdout, result.stderr[-4000:]


def _replicas(run_dir):
    with ocp.CheckpointManager((Path(run_dir) / "checkpoints").absolute()) as manager:
        restored = manager.restore(manager.latest_step())
    return restored["opt_state"], restored["params"]


def _without_timing(metrics):
    return [
        {k: v for k, v in m.items() if k not in ("seconds", "examples_per_second")} for m in metrics
    ]


@pytest.mark.slow
def test_cli_parle_run_and_resume(tmp_path, capsys):
    argv = ["train", "--optimizer", "parle", "--replicas", "2", "-L", "2", "--epochs", "2"]
    argv += ["--train-limit", "512", "--test-limit", "100", "--batch-size", "64"]
    argv += ["--no-progress", *DATA_ARGS]
    assert cli.main([*argv, "--run-dir", str(tmp_path / "full")]) == 0
    assert "x 2 replicas" in capsys.readouterr().out
    full = read_metrics(tmp_path / "full")
    # 512 // (64 x 2 inner steps x 2 replicas) = 2 outer steps per effective epoch.
    assert [m["gradient_evaluations"] for m in full] == [8, 16]
    assert full[-1]["test_error"] < 0.6  # learning: chance is 0.9

    config = cli.config_from_args(cli.build_parser().parse_args(argv))
    partial = train(config, tmp_path / "resumed", progress=False, stop_after_steps=3)
    assert _without_timing(partial) == _without_timing(full[:1])
    assert cli.main([*argv, "--run-dir", str(tmp_path / "resumed"), "--resume"]) == 0
    assert _without_timing(read_metrics(tmp_path / "resumed")) == _without_timing(full)
    jax.tree.map(
        np.testing.assert_array_equal, *map(_replicas, [tmp_path / "full", tmp_path / "resumed"])
    )


@pytest.mark.slow
@pytest.mark.subprocess
def test_parle_benchmark_smoke(tmp_path, cpu_subprocess_env):
    command = [sys.executable, str(ROOT / "benchmarks" / "parle_benchmark.py"), "--smoke"]
    command += ["--out-dir", str(tmp_path), *DATA_ARGS]
    result = subprocess.run(
        command, capture_output=True, text=True, env=cpu_subprocess_env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    import json

    results = json.loads((tmp_path / "parle.json").read_text())
    assert {r["method"] for r in results["runs"]} == {"sgd", "entropy-sgd", "parle"}
    parle_comm = results["communication"]["parle"]
    assert parle_comm["collectives"] == 1 and parle_comm["bytes_per_outer_step"] > 0
    assert "| parle |" in (tmp_path / "parle.md").read_text()
