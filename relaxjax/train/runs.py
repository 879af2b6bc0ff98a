"""The run directory: ``config.json``, ``metrics.jsonl``, its lock and the checks that
protect them, and the testing hook that injects faults at chosen points of a run."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relaxjax.data.atomic import atomic_write
from relaxjax.train.config import TrainConfig

# --------------------------------------------------------------------------- errors


class RunDirError(ValueError):
    """A run directory that cannot be used as asked: damaged, incomplete, in use, or
    holding another run. The message names the file and what to do."""


class MetricsError(RunDirError):
    """A ``metrics.jsonl`` line that is not a metrics record (truncated or damaged)."""


# --------------------------------------------------------------------------- files


def write_json_atomic(path: Path, value: Any) -> None:
    """Writes ``value`` as JSON to ``path`` atomically (``relaxjax.data.atomic.atomic_write``)."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True))


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as (f, _):
        f.write(text.encode())


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records of a run (``metrics.jsonl``).

    Args:
      run_dir: the run directory.

    Returns:
      One dict per line of ``metrics.jsonl`` (``[]`` if there is none yet).

    Raises:
      MetricsError: (a ``ValueError``) for a line that is not a JSON record with a
        ``step``, naming the file and the line.

    References:
      ``docs/cli.md`` §2 (the run directory).

    Example:
      >>> import json, tempfile
      >>> from pathlib import Path
      >>> from relaxjax import train
      >>> run_dir = Path(tempfile.mkdtemp())
      >>> train.read_metrics(run_dir)
      []
      >>> record = {"step": 10, "test_error": 0.1}
      >>> _ = (run_dir / "metrics.jsonl").write_text(json.dumps(record))
      >>> train.read_metrics(run_dir)
      [{'step': 10, 'test_error': 0.1}]
    """
    path = Path(run_dir) / "metrics.jsonl"
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise MetricsError(
                f"{path} line {number} is not a JSON record (truncated or damaged: {error.msg} "
                f"at column {error.colno}); repair or delete that line"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise MetricsError(
                f"{path} line {number} is not a metrics record (no integer 'step'); repair or "
                "delete that line"
            )
        records.append(record)
    return records


def write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Replaces ``metrics.jsonl`` by ``records``, atomically (never a half-written line)."""
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Appends ``record`` to ``metrics.jsonl`` by rewriting the file atomically."""
    write_metrics(run_dir, [*read_metrics(run_dir), record])


def reconcile_metrics(run_dir: Path, step: int, record: dict[str, Any] | None, log) -> None:
    """Makes ``metrics.jsonl`` end at the checkpoint a run continues from, at ``step``.

    Records after ``step`` are dropped (the resumed run writes them again, identically);
    the checkpoint's own record (``record``, kept in the checkpoint) is restored if the
    run stopped between the checkpoint and the metrics file. Both are reported.
    """
    records = read_metrics(run_dir)
    kept = [r for r in records if r["step"] <= step]
    if len(kept) < len(records):
        later = [r["step"] for r in records if r["step"] > step]
        log(
            f"dropped {len(later)} metrics record(s) after step {step} (steps "
            f"{', '.join(map(str, later))}); the run computes them again"
        )
    if record is not None and not any(r["step"] == step for r in kept):
        kept.append(record)
        log(f"restored the metrics record of step {step} from its checkpoint")
    if kept != records or (run_dir / "metrics.jsonl").exists():
        write_metrics(run_dir, kept)


def read_config(run_dir: Path) -> TrainConfig:
    """The saved ``config.json`` of ``run_dir``.

    Raises:
      RunDirError: if it is missing, not JSON or not a run configuration.
    """
    path = run_dir / "config.json"
    try:
        values = json.loads(path.read_text())
        return TrainConfig.from_json(values)
    except FileNotFoundError:
        raise RunDirError(f"{run_dir} holds no run (no config.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirError(
            f"{path} is damaged (not JSON: {error}); restore it or start over"
        ) from None
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise RunDirError(
            f"{path} is not a run configuration ({type(error).__name__}: {error})"
        ) from None


def config_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """``"field: saved A, given B"`` for every setting that differs (budget and data
    location aside: they may change when a run is resumed)."""
    a, b = saved.to_json(), given.to_json()
    for key in CHANGEABLE_ON_RESUME:
        a.pop(key), b.pop(key)
    flat = lambda d: {  # noqa: E731
        f"{k}.{k2}" if isinstance(v, dict) else k: v2
        for k, v in d.items()
        for k2, v2 in (v.items() if isinstance(v, dict) else [(None, v)])
    }
    fa, fb = flat(a), flat(b)
    return [f"{k}: saved {fa[k]!r}, given {fb.get(k)!r}" for k in fa if fa[k] != fb.get(k)]


CHANGEABLE_ON_RESUME = ("epochs", "data_dir")
"""The settings a resumed run may change: the budget, and where the data are found (they
are verified by checksum, so the location does not change the run)."""


def check_resume_config(saved: TrainConfig, config: TrainConfig) -> None:
    """Raises ``RunDirError`` listing the settings of ``config`` that differ from the run's."""
    differences = config_differences(saved, config)
    if differences:
        raise RunDirError(
            "--resume: the configuration differs from the saved run (only --epochs and "
            "--data-dir may change): " + "; ".join(differences)
        )


def holds_run(run_dir: Path) -> list[str]:
    """What in ``run_dir`` belongs to a started run (metrics, checkpoints), if anything."""
    found = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists() and metrics.stat().st_size:
        found.append("metrics.jsonl")
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir():
        kept = sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith("."))
        found += [f"checkpoints/{name}" for name in kept]
    return found


def check_run_dir(config: TrainConfig, run_dir: Path, resume: bool) -> TrainConfig | None:
    """The checks made before anything is loaded or written.

    A fresh run (``resume=False``) refuses a directory that holds a started run (metrics or
    checkpoints); a directory with only a ``config.json`` (a start that failed before its
    first checkpoint) is accepted. ``resume=True`` needs the saved configuration and checks
    ``config`` against it. Returns the saved configuration when resuming.
    """
    if resume:
        saved = read_config(run_dir)
        check_resume_config(saved, config)
        return saved
    started = holds_run(run_dir)
    if started:
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(started[:3])}"
            f"{', ...' if len(started) > 3 else ''}); pass --resume to continue it, or choose "
            "another --run-dir"
        )
    return None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Holds ``run_dir/.lock`` (an exclusive ``flock``) for the life of a run, so that two
    processes never train into the same directory.

    Raises:
      RunDirError: if another process holds it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        yield
        return
    with open(run_dir / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunDirError(
                f"{run_dir} is in use by another relaxjax train ({holder}); wait for it or "
                "choose another --run-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def iterate_runs(paths: list[str]) -> Iterator[tuple[str, TrainConfig, list[dict[str, Any]]]]:
    """(run dir, config, metrics) for each run directory.

    Args:
      paths: run directories, each with a ``config.json``.

    Yields:
      ``(path, TrainConfig, metrics records)`` per directory, in order.

    Raises:
      RunDirError: (a ``ValueError``) for a missing or damaged ``config.json`` or a
        damaged ``metrics.jsonl``, naming the file.

    References:
      ``docs/cli.md`` §2 and §4 (``relaxjax plot`` reads runs this way).

    Example:
      >>> import json, tempfile
      >>> from pathlib import Path
      >>> from relaxjax import train
      >>> run_dir = Path(tempfile.mkdtemp())
      >>> config = train.TrainConfig(model="lenet", epochs=1)
      >>> _ = (run_dir / "config.json").write_text(json.dumps(config.to_json()))
      >>> [(c.model, m) for _, c, m in train.iterate_runs([str(run_dir)])]
      [('lenet', [])]
    """
    for path in paths:
        yield path, read_config(Path(path)), read_metrics(path)


# --------------------------------------------------------------------------- fault injection

FAULT_ENV = "RELAXJAX_FAULT"
"""Testing hook: ``POINT:STEP[:ACTION]`` (comma-separated for several) makes a run act at
``POINT`` of outer step ``STEP``. Points: ``step`` (step STEP has just been dispatched,
mid-epoch), ``evaluation`` (during the epoch-end evaluation), ``checkpoint-write`` (the
checkpoint's files are written, not yet verified and committed), ``metrics-write`` (the
checkpoint is committed, its metrics record not yet appended) and ``epoch-end`` (right
after the epoch end, before the next step is dispatched). Actions: ``INT`` (default),
``TERM`` or ``KILL`` (the process sends itself that signal), ``NAN`` (the parameters become
NaN, at ``step`` only). For the tests and ``benchmarks/fault_injection.py``."""

FAULT_POINTS = ("step", "evaluation", "checkpoint-write", "metrics-write", "epoch-end")


def _faults() -> list[tuple[str, int, str]]:
    spec = os.environ.get(FAULT_ENV, "")
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        if len(parts) not in (2, 3) or parts[0] not in FAULT_POINTS or not parts[1].isdigit():
            raise RunDirError(
                f"${FAULT_ENV}={spec!r}: expected POINT:STEP[:INT|TERM|KILL|NAN] with POINT "
                f"one of {', '.join(FAULT_POINTS)}"
            )
        faults.append((parts[0], int(parts[1]), (parts[2] if len(parts) == 3 else "INT").upper()))
    return faults


_fired: set[tuple[str, int, str]] = set()


def fault_point(point: str, step: int, state: Any = None) -> Any:
    """The testing hook of :data:`FAULT_ENV` at ``point`` of step ``step``; returns ``state``
    (its parameters made NaN for a ``NAN`` fault). Without the variable it does nothing."""
    if FAULT_ENV not in os.environ:
        return state
    for fault in _faults():
        if fault[:2] != (point, step) or fault in _fired:
            continue
        _fired.add(fault)  # once per process: a resumed run in the same process is not hit
        action = fault[2]
        if action == "NAN":
            import jax
            import jax.numpy as jnp

            poison = lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.inexact) else x  # noqa: E731
            return state._replace(params=jax.tree.map(poison, state.params))
        sys.stdout.flush()
        os.kill(os.getpid(), getattr(signal, f"SIG{action}"))
    return state


def finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite float or int (not NaN or infinite, not None)."""
    return isinstance(value, (int, float)) and math.isfinite(value)
