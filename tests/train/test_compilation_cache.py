"""Warm starts: ``relaxjax train`` keeps compiled programs in JAX's persistent compilation
cache by default, in relaxjax's cache directory; an option or a variable turns it off.

Each run is the tiny one of ``test_faults`` (``tiny_command``, SGD unless said), in this
process, with its own batch size and after clearing JAX's in-memory caches, so that its
programs are compiled or read from the disk cache (the in-memory caches would hide
whether the disk cache is written).
"""

from __future__ import annotations

from pathlib import Path

import jax
import pytest
from test_faults import tiny_command, untimed

from relaxjax.train import compilation_cache, read_metrics


@pytest.fixture(autouse=True)
def _default_cache_location(monkeypatch):
    """No cache directory chosen before the test, by a variable or another test (the
    session's settings come back after it: tests/conftest.py)."""
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setattr(compilation_cache, "_enabled_dir", compilation_cache._enabled_dir)
    for name in (
        compilation_cache.COMPILATION_CACHE_DIR_ENV,
        compilation_cache.NO_COMPILATION_CACHE_ENV,
        "JAX_COMPILATION_CACHE_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


def _train(tmp_path: Path, batch_size: int, *extra: str, optimizer: str = "sgd") -> None:
    # Programs compiled before, by this test or another one in this process, are in JAX's
    # in-memory caches, which would hide whether the disk cache is written.
    jax.clear_caches()
    argv = ["train", "--optimizer", optimizer, "--epochs", "1", "--batch-size", str(batch_size)]
    argv += [
        "--refresh-batches",
        "1",
        "--no-progress",
        "--run-dir",
        str(tmp_path / f"run{batch_size}"),
    ]
    assert tiny_command([*argv, *extra]) == 0


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_the_command_caches_its_programs_in_relaxjax_cache_dir_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAXJAX_CACHE_DIR", str(tmp_path / "cache"))
    _train(tmp_path, 8)
    entries = _entries(tmp_path / "cache" / "jax-compilation")
    assert len(entries) >= 3, entries  # the step, the evaluation, the initialisation, ...
    assert any(name.startswith("jit_train_step") for name in entries), entries


def test_the_relaxations_step_is_cached_and_read_back(tmp_path, monkeypatch):
    """The command checks the γ schedule over the run on the host, so its relaxation
    step holds no host callback and is cached like every other program; a second start
    reads it back (writes no new entry) and trains the same run. (Entropy-SGD here; HJ
    and HEAT build their step with the same option: tests/core/test_optax_contract.py.)"""
    optimizer = "entropy-sgd"
    monkeypatch.setenv("RELAXJAX_CACHE_DIR", str(tmp_path / "cache"))
    options = ("-L", "2", "--gamma", "1.0", "--step-size", "0.1")
    _train(tmp_path, 8, *options, optimizer=optimizer)
    folder = tmp_path / "cache" / "jax-compilation"
    cold = _entries(folder)
    assert any(name.startswith("jit_train_step") for name in cold), cold
    (tmp_path / "run8").rename(tmp_path / "cold")
    _train(tmp_path, 8, *options, optimizer=optimizer)
    assert _entries(folder) == cold
    assert untimed(read_metrics(tmp_path / "run8")) == untimed(read_metrics(tmp_path / "cold"))


def test_the_cache_is_relocated_by_option_and_by_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAXJAX_CACHE_DIR", str(tmp_path / "cache"))
    _train(tmp_path, 4, "--compilation-cache-dir", str(tmp_path / "option"))
    monkeypatch.setenv(compilation_cache.COMPILATION_CACHE_DIR_ENV, str(tmp_path / "variable"))
    _train(tmp_path, 2)
    for folder in ("option", "variable"):
        assert any(n.startswith("jit_train_step") for n in _entries(tmp_path / folder)), folder
    assert not (tmp_path / "cache" / "jax-compilation").exists()


def test_turned_off_the_command_writes_no_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAXJAX_CACHE_DIR", str(tmp_path / "cache"))
    _train(tmp_path, 16, "--no-compilation-cache")
    monkeypatch.setenv(compilation_cache.NO_COMPILATION_CACHE_ENV, "1")
    _train(tmp_path, 32)
    assert _entries(tmp_path / "cache" / "jax-compilation") == []
    assert not jax.config.jax_enable_compilation_cache
    # The option wins over the variable.
    _train(tmp_path, 64, "--compilation-cache")
    assert _entries(tmp_path / "cache" / "jax-compilation")


@pytest.mark.parametrize(
    "option, value, wanted",
    [
        (None, "", True),
        (None, "1", False),
        (None, "0", True),
        (True, "1", True),
        (False, "", False),
    ],
)
def test_cache_wanted(option, value, wanted, monkeypatch):
    monkeypatch.setenv(compilation_cache.NO_COMPILATION_CACHE_ENV, value)
    assert compilation_cache.cache_wanted(option) is wanted
