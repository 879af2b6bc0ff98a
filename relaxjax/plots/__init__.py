"""Pictures: the relaxed landscapes of the PDE toolkit and training curves of runs.

Needs the ``[plots]`` extra (matplotlib). :mod:`relaxjax.plots.landscape` draws the
paper's 1-D and 2-D pictures; :mod:`relaxjax.plots.curves` draws error against
effective epochs, one panel per model and one colour per optimizer, the mean over
seeds with its band (``relaxjax plot`` and the paper-table benchmark).
"""

from relaxjax.plots.curves import (
    OPTIMIZER_COLORS,
    RunCurve,
    SeedMean,
    mean_over_seeds,
    optimizer_colors,
    plot_curves,
    plot_runs,
    run_curves,
)
from relaxjax.plots.landscape import (
    optimizer_trajectories,
    plot_contours_2d,
    plot_optimizer_trajectories,
    plot_relaxed_landscapes_1d,
    relaxed_landscapes_1d,
    wide_and_sharp_2d,
)

__all__ = [
    "OPTIMIZER_COLORS",
    "RunCurve",
    "SeedMean",
    "mean_over_seeds",
    "optimizer_colors",
    "optimizer_trajectories",
    "plot_contours_2d",
    "plot_curves",
    "plot_optimizer_trajectories",
    "plot_relaxed_landscapes_1d",
    "plot_runs",
    "relaxed_landscapes_1d",
    "run_curves",
    "wide_and_sharp_2d",
]
