"""Pictures of relaxed loss landscapes (Chaudhari et al. 2018, Deep Relaxation, Fig. 1 style).

Pure matplotlib with no pyplot state: figures are built with
:class:`matplotlib.figure.Figure` (works with any backend, including Agg) and
returned; save them with ``fig.savefig(path)``. The relaxed losses come from
the grid solvers of :mod:`relaxjax.pde`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from jax.typing import ArrayLike
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from relaxjax import pde

__all__ = ["relaxed_landscapes_1d", "plot_relaxed_landscapes_1d", "plot_contours_2d"]

# (label, line style, panel title) of each relaxation.
_RELAXATIONS = (
    ("viscous HJ", "-", "viscous HJ (local entropy)"),
    ("Hopf-Lax", "--", "non-viscous HJ (Hopf-Lax)"),
    ("heat", ":", "heat equation"),
)


def relaxed_landscapes_1d(
    f: pde.Loss, grid: pde.Grid, gammas: Sequence[float], beta: float
) -> dict[str, list[np.ndarray]]:
    """The relaxed losses plotted by :func:`plot_relaxed_landscapes_1d`, on the grid nodes.

    Returns ``{"viscous HJ": [...], "Hopf-Lax": [...], "heat": [...]}``, one array per
    ``gamma``: the viscous HJ solution (local entropy, inverse temperature ``beta``),
    the Hopf-Lax / Moreau envelope and the heat-equation smoothing, all at time
    ``t = gamma``.
    """
    out: dict[str, list[np.ndarray]] = {name: [] for name, _, _ in _RELAXATIONS}
    for gamma in gammas:
        out["viscous HJ"].append(np.asarray(pde.local_entropy(f, grid, gamma, beta)))
        out["Hopf-Lax"].append(np.asarray(pde.moreau_envelope(f, grid, gamma)[0]))
        out["heat"].append(np.asarray(pde.heat_smoothing(f, grid, gamma)))
    return out


def plot_relaxed_landscapes_1d(
    f: pde.Loss,
    grid: pde.Grid,
    gammas: Sequence[float],
    beta: float,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    xlim: tuple[float, float] | None = None,
) -> Figure:
    """Plots a 1-D loss and its PDE relaxations for several times ``gamma``.

    The relaxations (Chaudhari et al. 2018, Deep Relaxation) are the viscous
    Hamilton-Jacobi solution (local entropy, inverse temperature ``beta``), the
    non-viscous one (Hopf-Lax formula / Moreau envelope) and the heat equation,
    each at ``t = gamma``, computed on ``grid`` by :mod:`relaxjax.pde`.

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      grid: a 1-D :class:`relaxjax.pde.Grid`. Values near its ends are distorted
        by the truncated kernels; use a grid wider than ``xlim``.
      gammas: the times (scopes) to draw.
      beta: inverse temperature of the viscous equation.
      ax: ``None`` for a new figure with one panel per relaxation; a sequence of
        three axes to draw those panels into; or a single axes to draw everything
        into it (colour = ``gamma``, line style = relaxation).
      xlim: the x-range shown (default: the whole grid).

    Returns:
      The figure holding the axes.
    """
    if grid.ndim != 1:
        raise ValueError(f"need a 1-D grid, got {grid.ndim}-D")
    xs = np.asarray(grid.nodes())
    fx = np.asarray(pde.grid_values(f, grid))
    curves = relaxed_landscapes_1d(f, grid, gammas, beta)
    colors = [f"C{i % 10}" for i in range(len(gammas))]

    if ax is None:
        fig = Figure(figsize=(4.2 * len(_RELAXATIONS), 3.6), layout="constrained")
        axes = list(fig.subplots(1, len(_RELAXATIONS), sharey=True))
    elif isinstance(ax, Axes):
        axes = [ax]
    else:
        axes = list(ax)
        if len(axes) != len(_RELAXATIONS):
            raise ValueError(f"need {len(_RELAXATIONS)} axes, got {len(axes)}")

    if len(axes) == 1:
        a = axes[0]
        a.plot(xs, fx, color="k", lw=2, label="f")
        for (name, style, _), gamma_curves in zip(_RELAXATIONS, curves.values(), strict=True):
            for gamma, color, u in zip(gammas, colors, gamma_curves, strict=True):
                a.plot(xs, u, color=color, ls=style, label=f"{name}, γ={gamma:g}")
        a.set_title(f"relaxed losses (β={beta:g})")
        panels = [a]
    else:
        for a, (name, style, title), gamma_curves in zip(
            axes, _RELAXATIONS, curves.values(), strict=True
        ):
            a.plot(xs, fx, color="k", lw=2, label="f")
            for gamma, color, u in zip(gammas, colors, gamma_curves, strict=True):
                a.plot(xs, u, color=color, ls=style, label=f"γ={gamma:g}")
            a.set_title(title + (f", β={beta:g}" if name == "viscous HJ" else ""))
        panels = axes

    lo, hi = xlim if xlim is not None else (xs[0], xs[-1])
    shown = (xs >= lo) & (xs <= hi)
    ys = np.concatenate([fx[shown]] + [u[shown] for us in curves.values() for u in us])
    ys = ys[np.isfinite(ys)]
    pad = 0.05 * max(float(np.ptp(ys)), 1e-12) if ys.size else 1.0
    for a in panels:
        a.set_xlabel("x")
        a.set_xlim(lo, hi)
        if ys.size:
            a.set_ylim(ys.min() - pad, ys.max() + pad)
        a.legend(fontsize="small")
    panels[0].set_ylabel("loss")
    return panels[0].figure


def plot_contours_2d(
    f: pde.Loss,
    grid2d: pde.Grid,
    trajectories: Mapping[str, ArrayLike] | None = None,
    ax: Axes | None = None,
    *,
    levels: int = 30,
    log_scale: bool = False,
    title: str | None = None,
) -> Figure:
    """Contour plot of a 2-D loss with optimizer trajectories drawn over it.

    Args:
      f: the loss, a vectorised callable on ``(..., 2)`` points or its values on the grid.
      grid2d: a 2-D :class:`relaxjax.pde.Grid`; the plot covers its box.
      trajectories: ``{label: array of shape (T, 2)}``, the iterates of each optimizer
        (computed elsewhere). Each is drawn as a line with a circle at its start and
        a star at its end, and gets one legend entry.
      ax: axes to draw into; ``None`` creates a new figure.
      levels: number of contour levels.
      log_scale: contour ``log(f - min f + 1e-3 (max f - min f))``, for losses with a
        large dynamic range.
      title: optional axes title.

    Returns:
      The figure holding the axes.
    """
    if grid2d.ndim != 2:
        raise ValueError(f"need a 2-D grid, got {grid2d.ndim}-D")
    trajectories = dict(trajectories or {})
    paths = {}
    for label, traj in trajectories.items():
        arr = np.asarray(traj, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1:
            raise ValueError(f"trajectory {label!r} must have shape (T, 2), got {arr.shape}")
        paths[label] = arr

    if ax is None:
        fig = Figure(figsize=(5.5, 4.8), layout="constrained")
        ax = fig.add_subplot()
    xx, yy = (np.asarray(m) for m in grid2d.mesh())
    z = np.asarray(pde.grid_values(f, grid2d), dtype=float)
    if log_scale:
        span = float(z.max() - z.min())
        z = np.log(z - z.min() + 1e-3 * (span if span > 0 else 1.0))
    filled = ax.contourf(xx, yy, z, levels=levels, cmap="viridis", alpha=0.85)
    ax.contour(xx, yy, z, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    ax.figure.colorbar(filled, ax=ax, label="log loss" if log_scale else "loss")

    for i, (label, arr) in enumerate(paths.items()):
        color = f"C{(i + 1) % 10}"
        ax.plot(arr[:, 0], arr[:, 1], "-", color=color, lw=1.5, label=label)
        ax.plot(arr[:1, 0], arr[:1, 1], "o", color=color, ms=6, label="_nolegend_")
        ax.plot(arr[-1:, 0], arr[-1:, 1], "*", color=color, ms=11, mec="k", label="_nolegend_")
    ax.set_xlim(grid2d.lower[0], grid2d.upper[0])
    ax.set_ylim(grid2d.lower[1], grid2d.upper[1])
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title is not None:
        ax.set_title(title)
    if paths:
        ax.legend(fontsize="small", loc="upper right")
    return ax.figure
