"""Training curves from run directories (``relaxjax plot RUN_DIR...``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from matplotlib.figure import Figure

from relaxjax.train import iterate_runs

__all__ = ["plot_runs"]

_LABELS = {
    "test_error": "test error (%)",
    "train_error": "train error (%)",
    "test_loss": "test loss",
    "train_loss": "train loss",
}


def plot_runs(
    run_dirs: Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    metric: str = "test_error",
) -> Figure:
    """Draws ``metric`` against effective epochs for each run; saves a PNG if ``output``.

    Effective epochs count gradient evaluations (an outer step with L inner
    steps counts L), so methods are compared at equal work.
    """
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    scale = 100.0 if metric.endswith("error") else 1.0
    for run_dir, config, metrics in iterate_runs([str(r) for r in run_dirs]):
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
