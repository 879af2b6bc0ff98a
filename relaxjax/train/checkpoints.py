"""Checkpoints of a run: written atomically, verified by SHA-256, restored with fallback.

A checkpoint is the folder ``checkpoints/<step>/``: the orbax checkpoint of the
:class:`~relaxjax.train.config.TrainState` (``default/``, the layout of
``orbax.checkpoint.CheckpointManager``), the metrics record of its epoch end
(``record.json``, absent for a checkpoint taken mid-epoch) and ``SHA256SUMS``, the
SHA-256 of every other file in ``sha256sum`` format (``cd checkpoints/<step> &&
sha256sum -c SHA256SUMS`` checks it by hand).

Writing: the checkpoint is assembled in a hidden staging folder, its files synced to
disk, its ``SHA256SUMS`` written last, and the folder renamed to ``<step>`` in one step,
so ``checkpoints/<step>`` exists only complete. It is then verified again from disk, and
only after that are older checkpoints deleted (the two newest are kept). A state with a
non-finite value is never written.

Restoring: the newest checkpoint whose files match their ``SHA256SUMS``, that orbax
reads and whose values are all finite is restored; a damaged newer one is renamed
``<step>.damaged`` (kept for inspection, never deleted) and the fallback is reported.

With several processes (``relaxjax.train.distributed``) every process calls
:meth:`Checkpoints.save` and :meth:`Checkpoints.restore_newest` at the same points:
orbax writes each array's shards once, from the process that holds them (a replicated
array from process 0), into the shared staging folder; process 0 alone writes the record
and ``SHA256SUMS``, commits, verifies and deletes; every process restores the state
onto its own devices from the same files (the run directory must be on a file system
that every process sees).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from relaxjax.core import tree_utils
from relaxjax.train import distributed
from relaxjax.train.runs import RunDirError, fault_point

CHECKSUMS = "SHA256SUMS"
RECORD = "record.json"
ITEM = "default"  # the item folder of orbax's CheckpointManager layout
KEEP = 2


class CheckpointError(RunDirError):
    """No checkpoint of a run can be restored (all missing or damaged), with the reasons."""


def all_finite(tree: Any) -> bool:
    """Whether every floating-point value of ``tree`` is finite (integer leaves pass)."""
    return bool(_all_finite(tree))


_all_finite = jax.jit(tree_utils.all_finite)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. a directory on a file system that cannot sync one
    finally:
        os.close(fd)


def verify(folder: Path) -> str | None:
    """Why the files of the checkpoint ``folder`` do not match its ``SHA256SUMS``, or
    None when they all do."""
    try:
        lines = (folder / CHECKSUMS).read_text().splitlines()
    except FileNotFoundError:
        return f"no {CHECKSUMS} (its write did not finish, or an older relaxjax wrote it)"
    except (OSError, UnicodeDecodeError) as error:
        return f"unreadable {CHECKSUMS} ({error})"
    listed = {}
    for line in lines:
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or ".." in Path(name).parts:
            return f"damaged {CHECKSUMS} (line {line[:60]!r})"
        listed[name] = digest
    if not listed:
        return f"empty {CHECKSUMS}"
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            return f"missing file {name}"
        if _sha256(path) != digest:
            return f"{name} does not match its SHA-256 (damaged or truncated)"
    return None


class Checkpoints:
    """The checkpoints of a run directory (``run_dir/checkpoints``).

    Args:
      run_dir: the run directory.
      keep: how many of the newest verified checkpoints to keep.
    """

    def __init__(self, run_dir: Path, keep: int = KEEP) -> None:
        self.root = Path(run_dir).absolute() / "checkpoints"
        self.keep = keep
        self._staging_tag: int | None = None

    def steps(self) -> list[int]:
        """The steps of the committed checkpoints, oldest first (not checked)."""
        if not self.root.is_dir():
            return []
        return sorted(int(p.name) for p in self.root.iterdir() if p.name.isdigit() and p.is_dir())

    def leftovers(self) -> list[str]:
        """Names in ``checkpoints/`` that are no committed checkpoint."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.isdigit())

    def clean_staging(self) -> None:
        """Removes the staging folders of writes that were interrupted (never a checkpoint)."""
        if self.root.is_dir():
            for p in self.root.glob(".staging-*"):
                shutil.rmtree(p, ignore_errors=True)

    def save(self, state: Any, record: dict[str, Any] | None = None) -> Path:
        """Writes, verifies and commits the checkpoint of ``state`` (and its epoch-end
        ``record``), then deletes checkpoints older than the ``keep`` newest.

        Raises:
          ValueError: if ``state`` holds a non-finite value (nothing is written).
        """
        step = int(state.step)
        if not all_finite(state):
            raise ValueError(f"the state at step {step} holds non-finite values; not saved")
        writer = distributed.is_writer()
        staging = self.root / f".staging-{step}-{self._tag()}"
        if writer:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
        distributed.barrier(f"checkpoint-{step}-staging")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None, enable_async_checkpointing=False, create=True
        )
        with ocp.CheckpointManager(staging, options=options) as manager:
            manager.save(step, args=ocp.args.StandardSave(state), force=True)
            manager.wait_until_finished()
        final = self.root / str(step)
        if writer:
            self._commit(staging, step, record)
        distributed.barrier(f"checkpoint-{step}-committed")
        return final

    def _tag(self) -> int:
        """The staging folders' tag: this process's id, process 0's with several."""
        if self._staging_tag is None:
            self._staging_tag = distributed.any_process(
                os.getpid() if distributed.is_writer() else 0
            )
        return self._staging_tag

    def _commit(self, staging: Path, step: int, record: dict[str, Any] | None) -> None:
        """Checksums, commits and verifies the written checkpoint; deletes older ones."""
        written = staging / str(step)
        if record is not None:
            (written / RECORD).write_text(json.dumps(record))
        fault_point("checkpoint-write", step)
        files = _files(written)
        for path in files:
            _fsync(path)
        sums = "".join(f"{_sha256(p)}  {p.relative_to(written).as_posix()}\n" for p in files)
        (written / CHECKSUMS).write_text(sums)
        _fsync(written / CHECKSUMS)
        final = self.root / str(step)
        if final.exists():
            self._set_aside(final, "replaced")
        os.rename(written, final)
        _fsync(self.root)
        shutil.rmtree(staging, ignore_errors=True)
        problem = verify(final)
        if problem is not None:  # the disk did not keep what was written: keep the older ones
            raise OSError(f"checkpoint {final} failed its verification after writing: {problem}")
        for old in self.steps()[: -self.keep]:
            shutil.rmtree(self.root / str(old), ignore_errors=True)

    def _set_aside(self, folder: Path, reason: str) -> Path:
        target = folder.with_name(f"{folder.name}.{reason}")
        n = 1
        while target.exists():
            n += 1
            target = folder.with_name(f"{folder.name}.{reason}-{n}")
        os.rename(folder, target)
        return target

    def load(self, step: int, template: Any) -> tuple[Any, dict[str, Any] | None]:
        """The verified state and record of checkpoint ``step``.

        Raises:
          CheckpointError: with the reason, if it is damaged.
        """
        folder = self.root / str(step)
        problem = verify(folder)
        if problem is not None:
            raise CheckpointError(problem)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            state = ocp.Checkpointer(ocp.StandardCheckpointHandler()).restore(
                folder / ITEM, args=ocp.args.StandardRestore(abstract)
            )
        except Exception as error:  # orbax and tensorstore raise many kinds
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            raise CheckpointError(
                f"orbax cannot read it ({type(error).__name__}: {first})"
            ) from None
        if int(state.step) != step:
            raise CheckpointError(f"it holds step {int(state.step)}, not {step}")
        if not all_finite(state):
            raise CheckpointError("it holds non-finite values")
        record = None
        if (folder / RECORD).exists():
            try:
                record = json.loads((folder / RECORD).read_text())
            except (OSError, ValueError) as error:
                raise CheckpointError(f"unreadable {RECORD} ({error})") from None
        return state, record

    def restore_newest(
        self, template: Any, log: Callable[[str], None]
    ) -> tuple[Any, dict[str, Any] | None] | None:
        """The newest intact checkpoint's (state, record), or None when there is none.

        Damaged newer checkpoints are renamed ``<step>.damaged`` once an intact one is
        found, and each is reported through ``log``.

        Raises:
          CheckpointError: if there are checkpoints but none is intact (nothing is moved).
        """
        damaged = []
        for step in reversed(self.steps()):
            try:
                state, record = self.load(step, template)
            except CheckpointError as error:
                damaged.append((step, str(error)))
                continue
            distributed.barrier(f"restored-{step}")  # every process read it before moves
            for bad, reason in damaged:
                if not distributed.is_writer():
                    continue
                moved = self._set_aside(self.root / str(bad), "damaged")
                log(
                    f"checkpoint {bad} is damaged ({reason}); moved it to "
                    f"{moved.relative_to(self.root.parent)} and fell back to checkpoint {step}"
                )
            return state, record
        if damaged:
            reasons = "; ".join(f"checkpoint {s}: {r}" for s, r in damaged)
            raise CheckpointError(
                f"no intact checkpoint in {self.root} ({reasons}); nothing was changed. Restore "
                "the files from a backup, or start the run again in a new --run-dir"
            )
        return None


def checkpoint_manager(run_dir: Path) -> Checkpoints:
    """The :class:`Checkpoints` of ``run_dir``."""
    return Checkpoints(run_dir)
