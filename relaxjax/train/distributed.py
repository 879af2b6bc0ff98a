"""More than one machine: ``relaxjax train`` under JAX's multi-process runtime.

One process per host (or per GPU), all started with the same command line, joined by
``jax.distributed.initialize``. The run's mesh (``relaxjax.core.mesh``) then spans the
devices of every process: each process holds the (small) preprocessed data set and
each device gathers its own slice of every mini-batch inside the step; parameters and
optimizer state are global arrays, replicated (Parle's replicas: sharded over the mesh
axis ``'replica'``), so every process steps the same state. Checkpoints are written
once: orbax writes each array's shards from the process that holds them (a replicated
array from process 0) and process 0 alone checksums and commits the folder; every
process restores from it, so the run directory must be on a file system all processes
see. Metrics, messages and the progress bar come from process 0 only. A signal that
reaches any process stops all of them at the same step (they agree every
:data:`STOP_CHECK_EVERY` steps and at every epoch end) with a checkpoint.

Joining: ``--coordinator-address HOST:PORT --num-processes N --process-id I`` (or
``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES``, ``$JAX_PROCESS_ID``), or
``--distributed`` alone where JAX finds them itself (Slurm, Open MPI, Cloud TPU, ...).
On a CPU the processes communicate through JAX's CPU collectives (gloo).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np

__all__ = [
    "STOP_CHECK_EVERY",
    "any_process",
    "barrier",
    "initialize",
    "is_writer",
    "multi_process",
]

STOP_CHECK_EVERY = 10
"""Outer steps between the processes' agreements on a stop request (a collective)."""

ENV = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}
"""The environment variable of each option (the first is JAX's own)."""


def _from_env(name: str) -> str | int | None:
    value = os.environ.get(ENV[name], "").strip()
    if not value:
        return None
    if name == "coordinator_address":
        return value
    if not value.isdigit():
        raise ValueError(f"${ENV[name]}={value!r} is not a non-negative integer")
    return int(value)


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> bool:
    """Joins JAX's multi-process runtime if asked to; call before any JAX computation.

    Each argument left None is read from its environment variable (:data:`ENV`). With
    none of them set and ``auto`` False nothing happens (one process). With ``auto``
    (``--distributed``) JAX detects the missing ones itself (Slurm, Open MPI, Cloud
    TPU, Kubernetes).

    Args:
      coordinator_address: ``HOST:PORT`` of process 0, where it serves the coordinator.
      num_processes: how many processes take part.
      process_id: this process's number, 0 … ``num_processes`` − 1.
      auto: let JAX detect what is not given.

    Returns:
      Whether ``jax.distributed.initialize`` was called.

    Raises:
      ValueError: for inconsistent settings or a malformed environment variable.
      RuntimeError: if JAX's backend already started (or initialize ran before).

    References:
      ``docs/cli.md`` §1.6 (more than one machine).

    Example:
      One process: nothing to join.

      >>> from relaxjax.train import distributed
      >>> distributed.initialize()
      False
    """
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    settings = {k: v if v is not None else _from_env(k) for k, v in given.items()}
    if not auto and all(v is None for v in settings.values()):
        return False
    n, i = settings["num_processes"], settings["process_id"]
    if n is not None and n < 1:
        raise ValueError(f"--num-processes must be >= 1, got {n}")
    if n is not None and i is not None and not 0 <= i < n:
        raise ValueError(f"--process-id must be in 0 … {n - 1} for {n} processes, got {i}")
    if not auto and None in settings.values():
        missing = [f"--{k.replace('_', '-')} (${ENV[k]})" for k, v in settings.items() if v is None]
        raise ValueError(
            f"joining several processes needs {', '.join(missing)} too, or --distributed to "
            "let JAX find them (Slurm, Open MPI, Cloud TPU)"
        )
    jax.distributed.initialize(**settings)
    return True


def multi_process() -> bool:
    """Whether more than one process takes part in the computation.

    Returns:
      ``jax.process_count() > 1``.

    Example:
      >>> from relaxjax.train import distributed
      >>> distributed.multi_process()
      False
    """
    return jax.process_count() > 1


def is_writer() -> bool:
    """Whether this process writes the run directory and prints: process 0.

    Returns:
      ``jax.process_index() == 0``.

    Example:
      >>> from relaxjax.train import distributed
      >>> distributed.is_writer()
      True
    """
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reached the barrier ``name`` (nothing with one process).

    Args:
      name: the barrier's name, the same on every process.

    Example:
      >>> from relaxjax.train import distributed
      >>> distributed.barrier("ready")  # one process: returns at once
    """
    if multi_process():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"relaxjax:{name}")


def any_process(value: int) -> int:
    """The largest of the processes' ``value`` (a collective every process must call).

    Args:
      value: this process's integer, e.g. 0 or a signal's number.

    Returns:
      The maximum over the processes (``value`` itself with one process).

    Example:
      >>> from relaxjax.train import distributed
      >>> distributed.any_process(15)
      15
    """
    if not multi_process():
        return value
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def writer_only(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` on process 0, a function that prints nothing on the others."""
    return log if is_writer() else (lambda message: None)
