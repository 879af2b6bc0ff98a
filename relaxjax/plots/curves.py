"""Training curves: error against effective epochs, one panel per model, mean over seeds.

The figures of ``relaxjax plot RUN_DIR...`` and of the paper-table benchmark
(``benchmarks/paper_table.py``). Pure matplotlib with no pyplot state: figures are
:class:`matplotlib.figure.Figure` objects (any backend, Agg included).

* :class:`RunCurve` is one run's curve; :func:`run_curves` makes them from the
  ``(run_dir, config, metrics)`` tuples of ``relaxjax.train.iterate_runs``.
* :func:`mean_over_seeds` averages the seeds of each (model, optimizer) on a common
  epoch grid, with the min–max band over seeds.
* :func:`plot_curves` draws one panel per model and one colour per optimizer
  (:data:`OPTIMIZER_COLORS`, the same in every panel), optionally with the paper's
  cells marked; :func:`plot_runs` is both steps at once.

Effective epochs count gradient evaluations (an outer step with L inner steps counts
L), so methods are compared at equal work.

This module is a lower layer than :mod:`relaxjax.train`: it reads runs duck-typed and
never imports the training code.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = [
    "FALLBACK_COLORS",
    "OPTIMIZER_COLORS",
    "RunCurve",
    "SeedMean",
    "mean_over_seeds",
    "optimizer_colors",
    "plot_curves",
    "plot_runs",
    "run_curves",
]

OPTIMIZER_COLORS: Mapping[str, str] = MappingProxyType(
    {
        "sgd": "tab:blue",
        "entropy-sgd": "tab:red",
        "hj": "tab:green",
        "adam": "tab:orange",
        "entropy-adam": "tab:purple",
        "parle": "tab:brown",
        "emsa": "tab:pink",
    }
)
"""The colour of each optimizer of ``relaxjax train``, the same in every figure."""

FALLBACK_COLORS: tuple[str, ...] = (
    "tab:cyan",
    "tab:olive",
    "tab:gray",
    "black",
    "gold",
    "navy",
    "lime",
    "teal",
)
"""Colours given, in order of first appearance, to optimizers not in :data:`OPTIMIZER_COLORS`
(e.g. a named variant such as ``"hj (inner-nesterov)"``); they cycle when exhausted."""

_LABELS = {
    "test_error": "test error (%)",
    "train_error": "train error (%)",
    "test_loss": "test loss",
    "train_loss": "train loss",
}


class RunCurve(NamedTuple):
    """One run's curve: ``values`` of a metric at ``epochs`` effective epochs.

    ``values`` are in the unit drawn: percent for errors (as :func:`run_curves`
    makes them). ``run`` optionally names the run directory it came from.
    """

    model: str
    optimizer: str
    seed: int
    epochs: Sequence[float]
    values: Sequence[float]
    run: str = ""


class SeedMean(NamedTuple):
    """The seeds of one (model, optimizer) on a common epoch grid.

    ``mean`` is the mean over seeds at each of ``epochs``; ``low`` and ``high`` the
    minimum and maximum over seeds (equal to ``mean`` for a single seed).
    """

    model: str
    optimizer: str
    seeds: tuple[int, ...]
    epochs: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def run_curves(
    runs: Iterable[tuple[Any, Any, Sequence[Mapping[str, Any]]]], *, metric: str = "test_error"
) -> list[RunCurve]:
    """Turns ``(run_dir, config, metrics)`` tuples into :class:`RunCurve` curves.

    The tuples are those of ``relaxjax.train.iterate_runs``, read duck-typed:
    ``config`` has ``.model``, ``.seed`` and ``.optimizer.name``; ``metrics`` is a list
    of dicts with ``"effective_epochs"`` and ``metric``. Errors (a ``metric`` ending in
    ``"error"``, stored as fractions) become percent. Runs without metrics are left
    out, and so are records without ``metric``. Runs that repeat a (model, optimizer,
    seed) are not all seeds of one configuration (e.g. two learning rates): when a seed
    repeats, every run of that (model, optimizer) gets the optimizer label
    ``"<name> (<run directory name>)"``, so that none of them are averaged together.

    Args:
      runs: ``(run_dir, config, metrics)`` for each run.
      metric: the metrics key to read.

    Returns:
      One curve per run with metrics, in the order of ``runs``.

    Example:
      >>> from types import SimpleNamespace as NS
      >>> config = NS(model="lenet", seed=0, optimizer=NS(name="sgd"))
      >>> metrics = [{"effective_epochs": 1.0, "test_error": 0.02},
      ...            {"effective_epochs": 2.0, "test_error": 0.01}]
      >>> curve, = run_curves([("runs/a", config, metrics)])
      >>> curve.model, curve.optimizer, curve.seed, curve.epochs, curve.values
      ('lenet', 'sgd', 0, [1.0, 2.0], [2.0, 1.0])
    """
    scale = 100.0 if metric.endswith("error") else 1.0
    curves = []
    for run_dir, config, metrics in runs:
        rows = [m for m in metrics or () if m.get(metric) is not None]
        if not rows:
            continue
        curves.append(
            RunCurve(
                model=str(config.model),
                optimizer=str(config.optimizer.name),
                seed=int(config.seed),
                epochs=[float(m["effective_epochs"]) for m in rows],
                values=[scale * float(m[metric]) for m in rows],
                run=str(run_dir),
            )
        )
    seeds = Counter((c.model, c.optimizer, c.seed) for c in curves)
    ambiguous = {(model, optimizer) for (model, optimizer, _), n in seeds.items() if n > 1}
    return [
        c._replace(optimizer=f"{c.optimizer} ({Path(c.run).name})")
        if (c.model, c.optimizer) in ambiguous
        else c
        for c in curves
    ]


def _common_grid(curves: Sequence[RunCurve]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The seeds' values on one epoch grid: their own if they share it, else interpolated."""
    pairs = []
    for c in curves:
        e, v = np.asarray(c.epochs, dtype=float), np.asarray(c.values, dtype=float)
        if e.shape != v.shape or e.ndim != 1 or e.size == 0:
            raise ValueError(f"curve {c.run or c[:3]}: need equal, non-empty 1-D epochs and values")
        order = np.argsort(e, kind="stable")
        pairs.append((e[order], v[order]))
    first = pairs[0][0]
    if all(e.shape == first.shape and np.allclose(e, first) for e, _ in pairs):
        return first, [v for _, v in pairs]
    lo = max(e[0] for e, _ in pairs)
    hi = min(e[-1] for e, _ in pairs)
    if lo > hi:
        raise ValueError(
            f"the seeds of {curves[0].model} / {curves[0].optimizer} share no epoch range"
        )
    shortest = min(pairs, key=lambda p: p[0][-1])[0]
    grid = shortest[(shortest >= lo) & (shortest <= hi)]
    return grid, [np.interp(grid, e, v) for e, v in pairs]


def mean_over_seeds(curves: Iterable[RunCurve]) -> list[SeedMean]:
    """The mean and the min–max band over seeds of each (model, optimizer).

    The seeds are compared on a common epoch grid: the recorded epochs when every
    seed recorded the same ones, otherwise the epochs of the seed with the shortest
    range, limited to the range all seeds cover, with every seed linearly
    interpolated onto them.

    Args:
      curves: run curves; those with equal ``(model, optimizer)`` are seeds of one cell.

    Returns:
      One :class:`SeedMean` per (model, optimizer), in order of first appearance.

    Example:
      >>> a = RunCurve("lenet", "sgd", 0, [1, 2], [2.0, 1.0])
      >>> b = RunCurve("lenet", "sgd", 1, [1, 2], [4.0, 3.0])
      >>> m, = mean_over_seeds([a, b])
      >>> m.seeds, m.mean.tolist(), m.low.tolist(), m.high.tolist()
      ((0, 1), [3.0, 2.0], [2.0, 1.0], [4.0, 3.0])
    """
    groups: dict[tuple[str, str], list[RunCurve]] = {}
    for c in curves:
        groups.setdefault((c.model, c.optimizer), []).append(c)
    out = []
    for (model, optimizer), members in groups.items():
        grid, values = _common_grid(members)
        stack = np.stack(values)
        out.append(
            SeedMean(
                model=model,
                optimizer=optimizer,
                seeds=tuple(c.seed for c in members),
                epochs=grid,
                mean=stack.mean(axis=0),
                low=stack.min(axis=0),
                high=stack.max(axis=0),
            )
        )
    return out


def optimizer_colors(optimizers: Iterable[str]) -> dict[str, str]:
    """A colour for each optimizer name: :data:`OPTIMIZER_COLORS`, else the next of
    :data:`FALLBACK_COLORS` in order of first appearance.

    Args:
      optimizers: optimizer names (repeats are ignored).

    Returns:
      ``{name: matplotlib colour}``, in order of first appearance.

    Example:
      >>> optimizer_colors(["hj", "my-method", "sgd"])
      {'hj': 'tab:green', 'my-method': 'tab:cyan', 'sgd': 'tab:blue'}
    """
    colors: dict[str, str] = {}
    extra = 0
    for name in optimizers:
        if name in colors:
            continue
        if name in OPTIMIZER_COLORS:
            colors[name] = OPTIMIZER_COLORS[name]
        else:
            colors[name] = FALLBACK_COLORS[extra % len(FALLBACK_COLORS)]
            extra += 1
    return colors


def _plain(x: float) -> str:
    """A tick value as plain text: 0.5, 1, 20 (no 4×10⁰)."""
    return f"{x:.6g}"


class _PlainLogFormatter(ticker.Formatter):
    """Plain tick labels (0.5, 1, 2) for a log axis, thinned to the decades shown.

    Labels every tick when the view spans up to 0.6 decades, the mantissas 1, 2, 3,
    4, 5, 6, 8 up to one decade, 1, 2, 3, 5 up to 1.6 decades, 1, 2, 5 up to 2.5
    decades and only the powers of ten beyond, so that labels do not collide.
    """

    def __call__(self, x: float, pos: int | None = None) -> str:
        if not (x > 0 and math.isfinite(x)):
            return ""
        lo, hi = sorted(float(v) for v in self.axis.get_view_interval())
        decades = math.log10(hi / lo) if lo > 0 and hi > 0 else math.inf
        mantissa = x / 10.0 ** math.floor(math.log10(x) + 1e-9)
        if decades <= 0.6:
            keep = None
        elif decades <= 1.0:
            keep = (1, 2, 3, 4, 5, 6, 8)
        elif decades <= 1.6:
            keep = (1, 2, 3, 5)
        elif decades <= 2.5:
            keep = (1, 2, 5)
        else:
            keep = (1,)
        if keep is not None and not any(math.isclose(mantissa, k, rel_tol=1e-6) for k in keep):
            return ""
        return _plain(x)


def _grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of the panels: one row up to 3 panels, 2 × 2 for 4, then 3 wide."""
    cols = n if n <= 3 else 2 if n == 4 else 3
    return math.ceil(n / cols), cols


def plot_curves(
    curves: Iterable[RunCurve],
    *,
    metric: str = "test_error",
    paper_cells: Mapping[tuple[str, str], Sequence[float]] | None = None,
    output: str | os.PathLike | None = None,
) -> Figure:
    """Draws the curves: one panel per model, one colour per optimizer, mean over seeds.

    Each panel (titled with the model's name, in order of first appearance) shows, for
    each optimizer, the mean over seeds (:func:`mean_over_seeds`) as a line and the
    band between the minimum and maximum over seeds (none for a single seed). An
    optimizer has the same colour in every panel (:func:`optimizer_colors`). A paper's
    cell is a diamond at its effective epochs and error, with its std as error bar,
    in the optimizer's colour. Errors are drawn on a log axis with plain tick labels
    (0.5, 1, 2). One legend, for all panels, sits outside them on the right.

    Args:
      curves: the runs' curves (values in percent for errors, as :func:`run_curves`).
      metric: what the values are, for the y label (``"test_error"``,
        ``"train_error"``, ``"test_loss"``, ``"train_loss"`` or any name); a metric
        ending in ``"error"`` gets a log y-axis.
      paper_cells: ``{(model, optimizer): (error %, std %, effective epochs)}``, the
        paper's numbers to mark; cells of models without curves are not drawn.
      output: if given, the figure is also saved there (PNG at 150 dpi).

    Returns:
      The figure (constrained layout), one axes per model.

    Example:
      >>> a = RunCurve("lenet", "sgd", 0, [1, 2, 3], [2.0, 1.0, 0.8])
      >>> b = RunCurve("lenet", "sgd", 1, [1, 2, 3], [2.4, 1.2, 0.7])
      >>> c = RunCurve("mnistfc", "hj", 0, [1, 2, 3], [3.0, 2.0, 1.5])
      >>> fig = plot_curves([a, b, c], paper_cells={("lenet", "sgd"): (0.5, 0.02, 3)})
      >>> [ax.get_title() for ax in fig.axes]
      ['lenet', 'mnistfc']
    """
    curves = list(curves)
    paper_cells = dict(paper_cells or {})
    means = mean_over_seeds(curves)
    models = list(dict.fromkeys(m.model for m in means))
    colors = optimizer_colors(
        [m.optimizer for m in means] + [o for (mod, o) in paper_cells if mod in models]
    )
    is_error = metric.endswith("error")

    rows, cols = _grid_shape(max(len(models), 1))
    # Room for the legend beside the panels: about 0.085 in per character at 10 pt.
    legend_width = 0.9 + 0.085 * max([len(o) for o in colors] + [len("min–max over seeds")])
    figure = Figure(figsize=(4.4 * cols + legend_width, 3.3 * rows + 0.2), layout="constrained")
    axes = [figure.add_subplot(rows, cols, i + 1) for i in range(max(len(models), 1))]
    banded = False
    marked = False
    for ax, model in zip(axes, models, strict=False):
        for m in (m for m in means if m.model == model):
            color = colors[m.optimizer]
            ax.plot(m.epochs, m.mean, color=color, lw=1.3, label=m.optimizer)
            if len(m.seeds) > 1:
                ax.fill_between(m.epochs, m.low, m.high, color=color, alpha=0.15, lw=0)
                banded = True
        for (cell_model, optimizer), cell in paper_cells.items():
            if cell_model != model:
                continue
            error, std, epochs = (float(v) for v in cell[:3])
            ax.errorbar(
                [epochs],
                [error],
                yerr=[std],
                fmt="D",
                color=colors[optimizer],
                mec="black",
                mew=0.8,
                ms=6,
                capsize=3,
                elinewidth=1.2,
                zorder=5,
                label="_paper",
            )
            marked = True
        ax.set_title(model)
    for ax in axes:
        ax.set_xlabel("effective epochs")
        ax.set_ylabel(_LABELS.get(metric, metric))
        ax.grid(True, which="major", alpha=0.4)
        if is_error and models:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(_PlainLogFormatter())
            ax.yaxis.set_minor_formatter(_PlainLogFormatter())
            ax.grid(True, which="minor", alpha=0.15)
        ax.set_xlim(left=0)

    handles: list[Any] = [Line2D([], [], color=colors[o], lw=2, label=o) for o in colors]
    if banded:
        handles.append(Patch(color="0.5", alpha=0.3, lw=0, label="min–max over seeds"))
    if marked:
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="D",
                color="0.5",
                mec="black",
                label="paper's cell (± std)",
            )
        )
    if handles:
        figure.legend(handles=handles, loc="outside right upper", title="mean over seeds")
    if output is not None:
        figure.savefig(output, dpi=150)
    return figure


def plot_runs(
    runs: Iterable[tuple[Any, Any, Sequence[Mapping[str, Any]]]],
    *,
    output: str | os.PathLike | None = None,
    metric: str = "test_error",
) -> Figure:
    """Draws ``metric`` against effective epochs for run directories (``relaxjax plot``).

    :func:`run_curves` then :func:`plot_curves`: one panel per model, one colour per
    optimizer, the mean over the seeds of each (model, optimizer) with its min–max band.

    Args:
      runs: ``(run_dir, config, metrics)`` tuples, as ``relaxjax.train.iterate_runs``
        yields them (``config`` with ``.model``, ``.seed`` and ``.optimizer.name``).
      output: if given, the figure is also saved there as a PNG.
      metric: the metrics key to draw (errors in percent on a log axis).

    Returns:
      The figure.

    Example:
      >>> from types import SimpleNamespace as NS
      >>> config = NS(model="lenet", seed=0, optimizer=NS(name="hj"))
      >>> metrics = [{"effective_epochs": e, "test_error": 0.02 / e} for e in (1, 2, 3)]
      >>> fig = plot_runs([("runs/hj", config, metrics)])
      >>> len(fig.axes), fig.axes[0].get_ylabel()
      (1, 'test error (%)')
    """
    return plot_curves(run_curves(runs, metric=metric), metric=metric, output=output)
