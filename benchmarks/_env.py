"""Machine and library versions recorded beside every benchmark figure, and the one way
the benchmarks write JSON (``write_json``: strict JSON, null where a value is missing)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

import relaxjax
from relaxjax.cpu.xla_flags import apply_cpu_settings
from relaxjax.data.atomic import atomic_write

__all__ = [
    "command_line",
    "environment",
    "json_text",
    "machine",
    "now",
    "provenance_lines",
    "smoke_mnist",
    "versions",
    "write_json",
]

# What `relaxjax train` uses; the scripts import this module before any JAX computation.
apply_cpu_settings()


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    flags = os.environ.get("XLA_FLAGS", "")
    return (
        f"{cpu}, {os.cpu_count()} cores; JAX backend {jax.default_backend()} ({devices}); "
        f"XLA_FLAGS `{flags}`"
    )


def versions() -> str:
    import flax
    import jaxlib

    return (
        f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, optax {optax.__version__}, "
        f"flax {flax.__version__}, relaxjax {relaxjax.__version__}, "
        f"python {sys.version.split()[0]}"
    )


def now() -> str:
    """The UTC date and time, to the second (ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment(date_key: str = "date") -> dict[str, str]:
    """The machine, library versions and date written beside every figure."""
    return {"machine": machine(), "versions": versions(), date_key: now()}


def provenance_lines(result: dict[str, Any]) -> list[str]:
    """The Markdown list that heads a results file: command, machine, versions, date."""
    return [
        f"- {key}: `{result[key]}`" if key == "command" else f"- {key}: {result[key]}"
        for key in ("command", "machine", "versions", "date")
    ]


def smoke_mnist(num_examples: int) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Generated MNIST-shaped (train, test) uint8 images and int32 labels for ``--smoke``
    runs: two classes told apart by brightness, half the examples in each split."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(num_examples, 28, 28, 1), dtype=np.uint8)
    labels = (images.mean(axis=(1, 2, 3)) > 127.5).astype(np.int32)
    split = num_examples // 2
    return (images[:split], labels[:split]), (images[split:], labels[split:])


def smoke_data(num_examples: int):
    """``smoke_mnist``'s digits as ``relaxjax.train.DataArrays``, normalised per channel
    as ``relaxjax train`` normalises MNIST (two classes)."""
    import jax.numpy as jnp

    from relaxjax import data
    from relaxjax.train import DataArrays

    (train_x, train_y), (test_x, test_y) = smoke_mnist(num_examples)
    stats = data.channel_stats(train_x)
    return DataArrays(
        jnp.asarray(data.normalize(train_x, stats)),
        jnp.asarray(train_y),
        jnp.asarray(data.normalize(test_x, stats)),
        jnp.asarray(test_y),
        num_classes=2,
    )


def command_line(script: str, argv: list[str] | None) -> str:
    """The shell command that reruns ``script`` (a ``benchmarks/`` file) with ``argv``
    (``sys.argv[1:]`` when None), quoted, as run from the repository root."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *args])


def repo_relative(path: Path) -> str:
    """``path`` from the repository root when it lies inside it (as the results cite it),
    else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return str(path)


def json_text(value: Any, **options: Any) -> str:
    """``json.dumps(value, **options)`` as strict JSON: a NaN or infinity raises ValueError.
    A measurement that does not exist is written None (null), never NaN."""
    return json.dumps(value, allow_nan=False, **options)


def write_json(
    path: str | os.PathLike,
    value: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> None:
    """Writes ``value`` to ``path`` as strict JSON (``json_text``), atomically
    (``relaxjax.data.atomic``: a failed write leaves the old file), creating its folder."""
    text = json_text(value, indent=indent, sort_keys=sort_keys, default=default)
    with atomic_write(path) as (f, _):
        f.write(text.encode())
