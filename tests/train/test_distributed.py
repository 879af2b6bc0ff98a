"""More than one machine: ``relaxjax train`` in two processes joined by ``jax.distributed``.

Two CPU processes on localhost (JAX's CPU collectives), one device each, train a short
mnistfc job on a small MNIST written here in the real IDX format. Their metrics match
those of one process with two simulated devices (``--devices 2``) to float tolerance;
a SIGTERM that reaches process 0 only stops both at the same step with one checkpoint,
and both resume from it to the same end. Each process runs
``python tests/train/test_distributed.py ARGV`` (``child_main``): ``relaxjax train``,
with MNIST's published checksums replaced by those of the files written here.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

HERE = Path(__file__).resolve()
MD5_ENV = "RELAXJAX_TEST_MNIST_MD5"
TIMING = {"seconds", "examples_per_second"}
# 512 examples / (16 x L = 2): 16 outer steps per effective epoch, 2 epochs.
ARGV = ["train", "--model", "mnistfc", "--optimizer", "entropy-sgd", "-L", "2", "--epochs", "2"]
ARGV += ["--batch-size", "16", "--refresh-batches", "2", "--no-progress"]
STEPS_PER_EPOCH = 16


def write_mnist(root: Path, n_train: int = 512, n_test: int = 100) -> dict[str, str]:
    """Small MNIST-format files (IDX, as published) in ``root/mnist``: class-dependent
    blobs with noise. Returns the MD5 of each file, as ``relaxjax.data.mnist.MNIST_MD5``."""
    from relaxjax.data import mnist
    from relaxjax.data.idx import encode_idx

    rng = np.random.default_rng(0)
    folder = root / "mnist"
    folder.mkdir(parents=True)
    md5 = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        rows = (np.arange(28)[None, :, None] // 3 == labels[:, None, None]).astype(float)
        images = np.clip(200 * rows + rng.normal(40, 30, (n, 28, 28)), 0, 255).astype(np.uint8)
        for name, array in zip(mnist.MNIST_FILES[split], (images, labels), strict=True):
            content = encode_idx(array)
            (folder / name).write_bytes(content)
            md5[name] = hashlib.md5(content).hexdigest()
    return md5


def child_main(argv: list[str]) -> int:
    """``relaxjax train ARGV``, accepting the files of ``write_mnist`` (their MD5s in
    ``$RELAXJAX_TEST_MNIST_MD5``)."""
    from relaxjax.data import mnist
    from relaxjax.train import cli

    mnist.MNIST_MD5.update(json.loads(os.environ[MD5_ENV]))
    return cli.main(argv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(argv, env, **extra_env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE), *argv],
        env={**env, **extra_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _two_processes(argv, env, fault: str | None = None) -> list[tuple[int, str]]:
    """Runs ``argv`` in processes 0 and 1 (``fault``: the testing hook, process 0 only)."""
    join = ["--coordinator-address", f"127.0.0.1:{_free_port()}", "--num-processes", "2"]
    children = [
        _start(
            [*argv, *join, "--process-id", str(i)],
            env,
            **({"RELAXJAX_FAULT": fault} if fault and i == 0 else {}),
        )
        for i in range(2)
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=240)
        results.append((child.returncode, out))
    return results


def _records(run_dir: Path) -> list[dict]:
    from relaxjax.train import read_metrics

    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


def _assert_close(records, reference):
    assert [r["step"] for r in records] == [r["step"] for r in reference]
    for got, want in zip(records, reference, strict=True):
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-6, err_msg=key)


def _final_params(run_dir: Path):
    """The parameters of the run's last checkpoint, onto this process's one device."""
    import jax
    import orbax.checkpoint as ocp

    checkpoints = run_dir.absolute() / "checkpoints"
    path = checkpoints / str(max(int(p.name) for p in checkpoints.iterdir())) / "default"
    checkpointer = ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        checkpointer.metadata(path).item_metadata,
    )
    return checkpointer.restore(path, target)["params"]


def test_two_processes_train_as_one_with_two_devices_and_resume(tmp_path, cpu_subprocess_env):
    import jax

    md5 = write_mnist(tmp_path / "data")
    env = {
        **cpu_subprocess_env,
        MD5_ENV: json.dumps(md5),
        "RELAXJAX_COMPILATION_CACHE_DIR": str(tmp_path / "jit"),
        "RELAXJAX_CACHE_DIR": str(tmp_path / "cache"),
    }
    argv = [*ARGV, "--data-dir", str(tmp_path / "data")]

    # The reference: one process with two simulated devices.
    one = _start(
        [*argv, "--devices", "2", "--run-dir", str(tmp_path / "one")],
        {
            **env,
            "XLA_FLAGS": f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
        },
    )
    out, _ = one.communicate(timeout=240)
    assert one.returncode == 0, out
    reference = _records(tmp_path / "one")
    assert [r["step"] for r in reference] == [16, 32]

    # Two processes; SIGTERM reaches process 0 after step 18: both stop at step 20, the
    # next step at which they agree (every 10 steps), with one checkpoint.
    run_dir = tmp_path / "two"
    stopped = _two_processes([*argv, "--run-dir", str(run_dir)], env, fault="step:18:TERM")
    assert [code for code, _ in stopped] == [143, 143], stopped
    assert "interrupted at step 20 of 32" in stopped[0][1]
    assert "epoch 1.00" in stopped[0][1] and "epoch" not in stopped[1][1]  # logged once
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["16", "20"]
    _assert_close(_records(run_dir), reference[:1])

    # Both resume from checkpoint 20 and end as the one-process run.
    resumed = _two_processes([*argv, "--run-dir", str(run_dir), "--resume"], env)
    assert [code for code, _ in resumed] == [0, 0], resumed
    assert "resumed" in resumed[0][1] and "resumed" not in resumed[1][1]
    _assert_close(_records(run_dir), reference)
    assert json.loads((run_dir / "config.json").read_text())["devices"] == 2
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
        _final_params(run_dir),
        _final_params(tmp_path / "one"),
    )


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
