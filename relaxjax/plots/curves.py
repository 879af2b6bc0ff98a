"""Training curves from run directories (``relaxjax plot RUN_DIR...``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

__all__ = ["plot_runs"]

_LABELS = {
    "test_error": "test error (%)",
    "train_error": "train error (%)",
    "test_loss": "test loss",
    "train_loss": "train loss",
}


def plot_runs(
    runs: Iterable[tuple[str, Any, Sequence[Mapping[str, Any]]]],
    *,
    output: str | os.PathLike | None = None,
    metric: str = "test_error",
) -> Figure:
    """Draws ``metric`` against effective epochs for each run; saves a PNG if ``output``.

    ``runs`` yields ``(run_dir, config, metrics)`` as ``relaxjax.train.iterate_runs`` does
    (``config`` with ``.model``, ``.seed`` and ``.optimizer.name``).

    Effective epochs count gradient evaluations (an outer step with L inner
    steps counts L), so methods are compared at equal work.
    """
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    scale = 100.0 if metric.endswith("error") else 1.0
    for run_dir, config, metrics in runs:
        if not metrics:
            continue
        label = f"{config.optimizer.name} ({config.model}, seed {config.seed})"
        ax.plot(
            [m["effective_epochs"] for m in metrics],
            [scale * m[metric] for m in metrics],
            marker="o",
            markersize=3,
            label=label,
        )
        del run_dir
    ax.set_xlabel("effective epochs")
    ax.set_ylabel(_LABELS.get(metric, metric))
    if metric.endswith("error"):
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if output is not None:
        figure.savefig(output, dpi=120)
    return figure
