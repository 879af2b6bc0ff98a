"""Checkpoints of a run (orbax, written atomically) and their restoration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from relaxjax.train.runs import truncate_metrics


def checkpoint_manager(run_dir: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(run_dir.absolute() / "checkpoints", options=options)


def restore_latest(
    manager: ocp.CheckpointManager,
    state: Any,
    resume: bool,
    run_dir: Path,
    total_steps: int,
    log: Callable[[str], None],
) -> Any:
    """The latest checkpoint's state when resuming (else ``state``); drops metrics past it."""
    if resume and manager.latest_step() is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
        log(f"resumed {run_dir} at step {int(state.step)} of {total_steps}")
    truncate_metrics(run_dir, int(state.step))
    return state
