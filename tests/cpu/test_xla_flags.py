"""relaxjax.cpu.xla_flags: the XLA:CPU flags the command and benchmarks set."""

import os
import subprocess
import sys

import pytest

from relaxjax.cpu import xla_flags
from relaxjax.train import cli


def test_adds_the_flag_when_absent(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert xla_flags.prefer_sequential_cpu_scheduler() is True
    flags = os.environ["XLA_FLAGS"].split()
    assert flags == [
        "--xla_force_host_platform_device_count=4",
        f"{xla_flags.SCHEDULER_FLAG}=false",
    ]


def test_respects_a_user_choice(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"{xla_flags.SCHEDULER_FLAG}=true")
    assert xla_flags.prefer_sequential_cpu_scheduler() is False
    assert os.environ["XLA_FLAGS"] == f"{xla_flags.SCHEDULER_FLAG}=true"


def test_without_xla_flags(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla_flags.prefer_sequential_cpu_scheduler() is True
    assert os.environ["XLA_FLAGS"] == f"{xla_flags.SCHEDULER_FLAG}=false"


def test_the_command_sets_them_before_parsing(monkeypatch, capsys):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(xla_flags, "has_avx512", lambda: True)
    assert cli.main([]) == 2  # no sub-command: help, exit status 2
    assert os.environ["XLA_FLAGS"].split() == [
        f"{xla_flags.SCHEDULER_FLAG}=false",
        f"{xla_flags.VECTOR_WIDTH_FLAG}=512",
    ]
    assert "train" in capsys.readouterr().out


CPUINFO = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu sse2 avx2 {extra}fma
"""


def test_avx512_is_read_from_the_cpu_flags():
    assert xla_flags.has_avx512(CPUINFO.format(extra="avx512f avx512bw "))
    assert not xla_flags.has_avx512(CPUINFO.format(extra=""))
    assert not xla_flags.has_avx512(CPUINFO.format(extra="avx512_bf16 "))  # not AVX-512F itself
    assert not xla_flags.has_avx512("")


def test_wide_vectors_only_on_avx512_and_only_if_unset(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(xla_flags, "has_avx512", lambda: False)
    assert xla_flags.apply_cpu_settings() == [xla_flags.SCHEDULER_FLAG]
    assert xla_flags.VECTOR_WIDTH_FLAG not in os.environ["XLA_FLAGS"]
    monkeypatch.setattr(xla_flags, "has_avx512", lambda: True)
    assert xla_flags.apply_cpu_settings() == [xla_flags.VECTOR_WIDTH_FLAG]  # scheduler already set
    monkeypatch.setenv("XLA_FLAGS", f"{xla_flags.VECTOR_WIDTH_FLAG}=256")
    assert xla_flags.prefer_wide_vectors() is False
    assert os.environ["XLA_FLAGS"] == f"{xla_flags.VECTOR_WIDTH_FLAG}=256"


_LENET_GRADIENT_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np
from relaxjax import models

x = jax.random.normal(jax.random.PRNGKey(0), (8, 28, 28, 1))
out = {}
for name in ("lenet", "lenet-dr"):
    net = models.get_module(name)
    variables = jax.jit(net.init)(jax.random.PRNGKey(1), x)

    def loss(params):
        logits, _ = net.apply(
            {**variables, "params": params}, x, train=True,
            rngs={"dropout": jax.random.PRNGKey(3)}, mutable=["batch_stats"],
        )
        return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        out[name + jax.tree_util.keystr(path)] = np.asarray(leaf)
np.savez(sys.argv[1], **out)
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_tests_optimization_level_computes_what_the_default_level_does(
    tmp_path, cpu_subprocess_env
):
    """The suite compiles at LLVM level 1 (tests/conftest.py), or at the level set in
    XLA_FLAGS; a LeNet gradient, where level 0 went wrong, is the same at that level as at
    XLA:CPU's default level 2."""

    import numpy as np

    script = tmp_path / "lenet_gradients.py"
    script.write_text(_LENET_GRADIENT_SCRIPT)
    results = {}
    suite_flags = cpu_subprocess_env["XLA_FLAGS"]  # the level this suite compiles at, first
    suite_level, *settings = suite_flags.split()
    flag = "--xla_backend_optimization_level"
    assert suite_level.startswith(f"{flag}=")
    default_flags = " ".join([f"{flag}=2", *settings])  # only the level differs
    for label, flags in (("tests", suite_flags), ("default", default_flags)):
        env = dict(cpu_subprocess_env, XLA_FLAGS=flags)
        command = [sys.executable, str(script), str(tmp_path / f"{label}.npz")]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[label] = np.load(tmp_path / f"{label}.npz")
    assert len(results["tests"].files) > 10
    # Every leaf that differs beyond assert_allclose's rtol 1e-4 / atol 1e-5, with its
    # largest absolute difference (rerun at level 0 to see what that level gets wrong).
    mismatched = {}
    for name, expected in results["default"].items():
        got = results["tests"][name]
        if got.shape != expected.shape:
            mismatched[name] = f"shape {got.shape} != {expected.shape}"
        elif not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
            mismatched[name] = float(np.max(np.abs(got - expected)))
    assert not mismatched, f"{suite_level} against level 2: {mismatched}"


_LATE = """
import warnings
import jax
from relaxjax.cpu import xla_flags

early = xla_flags.backend_started()
with warnings.catch_warnings(record=True) as before:
    warnings.simplefilter("always")
    xla_flags.apply_cpu_settings()
jax.numpy.zeros(1).block_until_ready()  # starts the backend
import os
import subprocess
import sys

import pytest
os.environ.pop("XLA_FLAGS")
with warnings.catch_warnings(record=True) as after:
    warnings.simplefilter("always")
    added = xla_flags.apply_cpu_settings()
print(early, len(before), xla_flags.backend_started(), len(added), [str(w.message) for w in after])
"""


@pytest.mark.subprocess
def test_settings_applied_after_the_backend_started_warn(cpu_subprocess_env, run_python):
    """Before the backend starts: no warning; after: a RuntimeWarning naming the flags."""
    env = {k: v for k, v in cpu_subprocess_env.items() if k != "XLA_FLAGS"}
    result = run_python(_LATE, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    early, before, started, added, messages = result.stdout.strip().split(" ", 4)
    assert (early, before, started) == ("False", "0", "True")
    assert int(added) >= 1 and "take no effect in this process" in messages
    assert xla_flags.SCHEDULER_FLAG in messages
