"""Nothing lost: interrupts at chosen points, damaged checkpoints and run directories.

Each fault is injected by the test itself: a signal at a chosen point of the loop (the
``RELAXJAX_FAULT`` testing hook of ``relaxjax.train.runs``, in this process for SIGINT and
in a child process for SIGKILL), byte-level damage to checkpoint files, deleted or renamed
folders, bad lines in ``metrics.jsonl``. The outcome is checked against an uninterrupted
run: the same metrics (timing aside) and a bit-identical final state, BatchNorm statistics
and optimizer state included; or a one-line error that changes nothing.

The runs are tiny (a 64-unit BatchNorm network on 256 random 8x8 images, 8 outer steps of
Entropy-SGD with L = 2 per effective epoch, 3 epochs) and go through ``relaxjax train``
(``cli.main``) with the data set and the network swapped for these (``tiny_command``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from relaxjax import models
from relaxjax.train import DataArrays, TrainState, cli, loop, read_metrics, runs
from relaxjax.train.checkpoints import CHECKSUMS, Checkpoints
from relaxjax.train.runs import FAULT_ENV, run_lock

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
STEPS_PER_EPOCH = 8  # 256 examples / (16 x L = 2)
ARGV = ["train", "-L", "2", "--epochs", "3", "--batch-size", "16", "--refresh-batches", "2"]
ARGV += ["--no-progress"]
TIMING = {"seconds", "examples_per_second"}


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(64)(x.reshape(x.shape[0], -1))
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        return nn.Dense(10)(x)


def _tiny_data(config=None):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 320)
    images = np.eye(10, 64)[labels] * 2.0 + rng.normal(size=(320, 64))
    images = jnp.asarray(images.reshape(320, 8, 8, 1), jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    return DataArrays(images[:256], labels[:256], images[256:], labels[256:], num_classes=10)


def _patch(setattr_):
    setattr_(loop, "load_data", _tiny_data)
    setattr_(loop.models_lib, "get_model", lambda name, num_classes: models.functional(_Tiny()))


def tiny_command(argv: list[str]) -> int:
    """``relaxjax train`` (``cli.main``) on the tiny data set and network."""
    with pytest.MonkeyPatch.context() as mp:
        _patch(mp.setattr)
        return cli.main(argv)


def child_main(argv: list[str]) -> int:
    """The same in a child process (``python tests/train/test_faults.py ARGV``)."""
    _patch(setattr)
    return cli.main(argv)


def run(run_dir: Path, *extra: str, fault: str | None = None) -> int:
    env = {FAULT_ENV: fault} if fault else {}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        if not fault:
            mp.delenv(FAULT_ENV, raising=False)
        runs._fired.clear()  # the hook fires once per process
        return tiny_command([*ARGV, "--run-dir", str(run_dir), *extra])


def resume(run_dir: Path, *extra: str) -> int:
    return run(run_dir, "--resume", *extra)


def final_state(run_dir: Path):
    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as manager:
        return manager.restore(manager.latest_step())


def untimed(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    assert untimed(read_metrics(run_dir)) == untimed(read_metrics(reference))
    a, b = final_state(run_dir), final_state(reference)
    assert int(a["step"]) == int(b["step"]) == 3 * STEPS_PER_EPOCH
    jax.tree.map(np.testing.assert_array_equal, a, b)  # params, BatchNorm stats, opt state


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert run(run_dir) == 0
    assert len(read_metrics(run_dir)) == 3
    return run_dir


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, reference):
    """A run stopped (SIGINT) right after its second epoch end, to copy and damage."""
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    assert run(run_dir, fault=f"epoch-end:{2 * STEPS_PER_EPOCH}:INT") == 130
    assert Checkpoints(run_dir).steps() == [8, 16]
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run"


# --------------------------------------------------------------------------- 1, 2: interrupts


@pytest.mark.parametrize(
    "point, step",
    [
        ("step", 11),  # mid-epoch
        ("evaluation", 8),  # during the epoch-end evaluation (case 1)
        ("checkpoint-write", 8),  # during the epoch-end save (case 2)
        ("metrics-write", 16),  # checkpoint committed, metrics record not yet written
        ("epoch-end", 8),  # right after an epoch end, before the next dispatch (case 2)
    ],
)
def test_sigint_at_every_point_resumes_exactly(point, step, tmp_path, reference, capsys):
    run_dir = tmp_path / "run"
    assert run(run_dir, fault=f"{point}:{step}:INT") == 130
    out, err = capsys.readouterr()
    assert f"interrupted at step {step} of 24, saved as checkpoint {step}" in out
    assert "SIGINT received" in err and "Traceback" not in err
    assert Checkpoints(run_dir).steps()[-1] == step
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(8, step + 1, 8))
    assert resume(run_dir) == 0
    assert f"resumed {run_dir} at step {step} of 24" in capsys.readouterr().out
    assert_same_run(run_dir, reference)


def _child(run_dir: Path, fault: str, env: dict) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(HERE), *ARGV, "--run-dir", str(run_dir)]
    return subprocess.run(
        argv, env={**env, FAULT_ENV: fault}, capture_output=True, text=True, timeout=300
    )


@pytest.mark.subprocess
def test_sigkill_during_checkpoint_and_metrics_writes_resumes_exactly(
    tmp_path, reference, cpu_subprocess_env, capsys
):
    env = {**cpu_subprocess_env, "PYTHONPATH": str(ROOT)}
    # Killed while writing the checkpoint of step 16: its staging folder is left behind,
    # and the run continues from checkpoint 8.
    first = _child(tmp_path / "a", "checkpoint-write:16:KILL", env)
    assert first.returncode == -9, first.stderr
    assert Checkpoints(tmp_path / "a").steps() == [8]
    assert [p.name.split("-")[0] for p in (tmp_path / "a/checkpoints").glob(".staging-*")]
    assert resume(tmp_path / "a") == 0
    assert not list((tmp_path / "a/checkpoints").glob(".staging-*"))
    assert_same_run(tmp_path / "a", reference)
    # Killed after checkpoint 16 was committed, before its metrics record was appended:
    # the resumed run takes the record back from the checkpoint.
    second = _child(tmp_path / "b", "metrics-write:16:KILL", env)
    assert second.returncode == -9, second.stderr
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [8]
    capsys.readouterr()
    assert resume(tmp_path / "b") == 0
    assert "restored the metrics record of step 16 from its checkpoint" in capsys.readouterr().out
    assert_same_run(tmp_path / "b", reference)


@pytest.mark.subprocess
def test_a_real_ctrl_c_exits_130_with_one_message(tmp_path, cpu_subprocess_env):
    env = {**cpu_subprocess_env, "PYTHONPATH": str(ROOT)}
    done = _child(tmp_path / "run", "evaluation:8:INT", env)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert "interrupted at step 8 of 24" in done.stdout and "done:" not in done.stdout
    assert Checkpoints(tmp_path / "run").steps() == [8]


# --------------------------------------------------------------------------- 3, 6: damage


def _data_files(checkpoint: Path) -> list[Path]:
    return sorted((checkpoint / "default" / "ocdbt.process_0" / "d").iterdir())


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), 7):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))  # same size


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda c: [_garble(p) for p in _data_files(c)], "does not match its SHA-256"),
        (lambda c: os.truncate(_data_files(c)[0], 10), "does not match its SHA-256"),
        (lambda c: (c / "default/manifest.ocdbt").write_bytes(b""), "manifest.ocdbt does not"),
        (lambda c: (c / "default/_METADATA").unlink(), "missing file default/_METADATA"),
        (lambda c: (c / CHECKSUMS).unlink(), f"no {CHECKSUMS}"),
    ],
    ids=["garbled", "truncated", "empty-manifest", "no-metadata", "no-checksums"],
)
def test_a_damaged_checkpoint_falls_back_to_the_newest_intact_one(
    damage, reason, tmp_path, stopped, reference, capsys
):
    run_dir = copy_of(stopped, tmp_path)
    damage(run_dir / "checkpoints" / "16")
    assert resume(run_dir) == 0
    out = capsys.readouterr().out
    assert "checkpoint 16 is damaged (" in out and f"{reason}" in out.split("damaged (")[1]
    assert "moved it to checkpoints/16.damaged and fell back to checkpoint 8" in out
    assert "dropped 1 metrics record(s) after step 8" in out
    assert (run_dir / "checkpoints" / "16.damaged").is_dir()  # kept for inspection
    assert_same_run(run_dir, reference)


def test_no_intact_checkpoint_is_a_clear_error_that_changes_nothing(tmp_path, stopped, capsys):
    run_dir = copy_of(stopped, tmp_path)
    _garble(_data_files(run_dir / "checkpoints" / "16")[0])
    (run_dir / "checkpoints" / "8" / "default" / "_METADATA").unlink()
    before = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    assert resume(run_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("relaxjax train: error: no intact checkpoint")
    assert "checkpoint 16: default/ocdbt.process_0/d/" in err
    assert "checkpoint 8: missing file default/_METADATA" in err
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) == before
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics


def test_old_checkpoints_are_deleted_only_after_the_new_one_verifies(
    tmp_path, stopped, monkeypatch
):
    run_dir = copy_of(stopped, tmp_path)
    from relaxjax.train import checkpoints

    monkeypatch.setattr(checkpoints, "verify", lambda folder: "simulated bad disk")
    with pytest.raises(OSError, match="failed its verification after writing"):
        Checkpoints(run_dir).save(TrainState(**{**final_state(run_dir), "step": jnp.int32(20)}))
    assert Checkpoints(run_dir).steps() == [8, 16, 20]  # nothing older deleted


def test_a_damaged_metrics_line_is_named(tmp_path, stopped, capsys):
    run_dir = copy_of(stopped, tmp_path)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:120] + "\n")
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    assert resume(run_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{run_dir / 'metrics.jsonl'} line 2 is not a JSON record (truncated or damaged" in err
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics


# --------------------------------------------------------------------------- 4, 5, 8: run dirs


@pytest.mark.parametrize("how", ["deleted", "unfinished"])
def test_resume_without_checkpoints_refuses_and_keeps_the_metrics(how, tmp_path, stopped, capsys):
    run_dir = copy_of(stopped, tmp_path)
    checkpoints = run_dir / "checkpoints"
    if how == "deleted":
        shutil.rmtree(checkpoints)
    else:
        for p in list(checkpoints.iterdir()):
            p.rename(p.with_name(f"{p.name}.orbax-checkpoint-tmp-1"))
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    assert resume(run_dir) == 2
    err = capsys.readouterr().err
    assert "records 2 epoch end(s) up to step 16" in err and err.count("\n") == 1
    assert ("missing" if how == "deleted" else "16.orbax-checkpoint-tmp-1") in err
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics


def test_a_fresh_run_refuses_a_dir_holding_a_run_stopped_before_its_first_epoch_end(
    tmp_path, capsys
):
    run_dir = tmp_path / "run"
    assert run(run_dir, "--lr", "0.5", fault="step:3:INT") == 130
    config = (run_dir / "config.json").read_bytes()
    assert run(run_dir, "--lr", "0.3") == 2
    err = capsys.readouterr().err
    assert "already holds a run (checkpoints/3); pass --resume" in err
    assert (run_dir / "config.json").read_bytes() == config  # the old run's, untouched


def test_a_failed_start_leaves_nothing_and_a_start_that_wrote_only_its_config_is_accepted(
    tmp_path, monkeypatch, capsys
):
    from relaxjax.data import DataError

    def bad_data(config):
        raise DataError("train-images-idx3-ubyte: corrupt")

    with pytest.MonkeyPatch.context() as mp:
        _patch(mp.setattr)
        mp.setattr(loop, "load_data", bad_data)
        assert cli.main([*ARGV, "--run-dir", str(tmp_path / "run")]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    # A start that got as far as config.json (killed before its first checkpoint) is no run.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    assert run(tmp_path / "run", "--epochs", "1") == 0
    assert len(read_metrics(tmp_path / "run")) == 1


def test_a_run_dir_in_use_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with run_lock(run_dir):
        assert run(run_dir, "--epochs", "1") == 2
    assert "is in use by another relaxjax train (pid" in capsys.readouterr().err
    assert not (run_dir / "config.json").exists()


# --------------------------------------------------------------------------- 13: divergence


def test_divergence_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(run_dir, fault="step:12:NAN") == cli.EXIT_DIVERGED  # params NaN after step 12
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "training diverged: the training loss became nan at step 13" in err
    assert "the last good checkpoint is" in err and "(step 8)" in err
    assert Checkpoints(run_dir).steps() == [8]
    assert [r["step"] for r in read_metrics(run_dir)] == [8]
    state = final_state(run_dir)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


# --------------------------------------------------------------------------- 14: resume flags


def test_resume_takes_the_saved_configuration(tmp_path, capsys):
    run_dir = tmp_path / "run"
    started = ["--optimizer", "hj", "--lr", "0.5", "--gamma", "3", "--seed", "4"]
    assert run(run_dir, *started, fault="step:5:INT") == 130
    saved = json.loads((run_dir / "config.json").read_text())
    bare = ["--run-dir", str(run_dir), "--resume", "--no-progress"]
    assert tiny_command(["train", *bare]) == 0  # no flag retyped
    assert json.loads((run_dir / "config.json").read_text()) == saved
    assert read_metrics(run_dir)[-1]["step"] == 24
    assert tiny_command(["train", *bare, "--epochs", "4"]) == 0  # extends the budget
    assert read_metrics(run_dir)[-1]["step"] == 32
    assert json.loads((run_dir / "config.json").read_text())["optimizer"] == saved["optimizer"]
    capsys.readouterr()
    assert tiny_command(["train", *bare, "--seed", "5", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--seed 5 (saved: 4)" in err and "--lr" not in err.split("may):")[1]


# --------------------------------------------------------------------------- 7: image folders


def test_an_empty_or_missing_class_in_a_split_is_refused(tmp_path):
    from PIL import Image

    from relaxjax import data

    for split in ("train", "test"):
        for name in ("cat", "dog", "emu"):
            folder = tmp_path / "set" / split / name
            folder.mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "0.png")
    (tmp_path / "set/train/emu/0.png").unlink()  # an empty class folder in train only
    with pytest.raises(data.DataError, match="class folder train/emu holds no images"):
        data.read_image_folder(tmp_path / "set", "train", use_cache=False)
    (tmp_path / "set/train/emu").rmdir()  # a class the test split has, train has not
    with pytest.raises(data.DataError, match=r"split 'train' has no images of class\(es\) \['emu'"):
        data.read_image_folder(tmp_path / "set", "train", use_cache=False)
    assert data.read_image_folder(tmp_path / "set", "test", use_cache=False).classes == (
        "cat",
        "dog",
        "emu",
    )


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
