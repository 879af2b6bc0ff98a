"""Pictures: the relaxed landscapes of the PDE toolkit and training curves of runs.

Needs the ``[plots]`` extra (matplotlib). :mod:`relaxjax.plots.landscape` draws the
paper's 1-D and 2-D pictures; :mod:`relaxjax.plots.curves` draws error against
effective epochs (``relaxjax plot`` and the paper-table benchmark).
"""

from relaxjax.plots.curves import plot_runs
from relaxjax.plots.landscape import (
    optimizer_trajectories,
    plot_contours_2d,
    plot_optimizer_trajectories,
    plot_relaxed_landscapes_1d,
    relaxed_landscapes_1d,
    wide_and_sharp_2d,
)

__all__ = [
    "optimizer_trajectories",
    "plot_contours_2d",
    "plot_optimizer_trajectories",
    "plot_relaxed_landscapes_1d",
    "plot_runs",
    "relaxed_landscapes_1d",
    "wide_and_sharp_2d",
]
