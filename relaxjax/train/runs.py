"""The run directory: ``config.json``, ``metrics.jsonl`` and the checks that protect them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relaxjax.data.atomic import atomic_write
from relaxjax.train.config import TrainConfig

# --------------------------------------------------------------------------- run directory


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
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drops records written after the checkpoint at ``step`` (they will be redone)."""
    kept = [m for m in read_metrics(run_dir) if m["step"] <= step]
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in kept))


def config_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """``"field: saved A, given B"`` for every setting that differs (the budget aside)."""
    a, b = saved.to_json(), given.to_json()
    a.pop("epochs"), b.pop("epochs")
    flat = lambda d: {  # noqa: E731
        f"{k}.{k2}" if isinstance(v, dict) else k: v2
        for k, v in d.items()
        for k2, v2 in (v.items() if isinstance(v, dict) else [(None, v)])
    }
    fa, fb = flat(a), flat(b)
    return [f"{k}: saved {fa[k]!r}, given {fb.get(k)!r}" for k in fa if fa[k] != fb.get(k)]


def prepare_run_dir(config: TrainConfig, run_dir: Path, resume: bool) -> None:
    """Checks ``--resume`` against the saved ``config.json`` (only ``epochs`` may differ),
    refuses to overwrite a finished or started run, and writes ``config.json``."""
    config_path = run_dir / "config.json"
    if resume:
        if not config_path.exists():
            raise FileNotFoundError(f"--resume: no run to resume in {run_dir} (no config.json)")
        saved = TrainConfig.from_json(json.loads(config_path.read_text()))
        differences = config_differences(saved, config)
        if differences:
            raise ValueError(
                "--resume: the configuration differs from the saved run "
                "(only --epochs may change):\n  " + "\n  ".join(differences)
            )
    elif config_path.exists() and read_metrics(run_dir):
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another "
            "--run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config_path, config.to_json())


def iterate_runs(paths: list[str]) -> Iterator[tuple[str, TrainConfig, list[dict[str, Any]]]]:
    """(run dir, config, metrics) for each run directory.

    Args:
      paths: run directories, each with a ``config.json``.

    Yields:
      ``(path, TrainConfig, metrics records)`` per directory, in order.

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
        config = TrainConfig.from_json(json.loads((Path(path) / "config.json").read_text()))
        yield path, config, read_metrics(path)
