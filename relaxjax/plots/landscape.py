"""Pictures of relaxed loss landscapes (Chaudhari et al. 2018, Deep Relaxation, Fig. 1 style).

Pure matplotlib with no pyplot state: figures are built with
:class:`matplotlib.figure.Figure` (works with any backend, including Agg) and
returned; save them with ``fig.savefig(path)``. The relaxed losses come from
the grid solvers of :mod:`relaxjax.pde`.

:func:`optimizer_trajectories` runs SGD, Entropy-SGD and HJ (the relaxjax
transforms) on a 2-D loss and :func:`plot_optimizer_trajectories` draws the
paths over the loss and over its two relaxations, the picture of *Deep
Relaxation*: the viscous relaxation (local entropy) smooths away ripples and
sharp minima, so its gradient leads out of local minima where SGD stops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from relaxjax import pde
from relaxjax.core.relaxation import hopf_lax, local_entropy

__all__ = [
    "relaxed_landscapes_1d",
    "plot_relaxed_landscapes_1d",
    "plot_contours_2d",
    "wide_and_sharp_2d",
    "DEMO_GRID_2D",
    "DEMO_START_2D",
    "optimizer_trajectories",
    "plot_optimizer_trajectories",
]

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

    Args:
      f: the loss, a vectorised callable or its values on ``grid``.
      grid: a 1-D :class:`relaxjax.pde.Grid`.
      gammas: the times (scopes).
      beta: inverse temperature of the viscous equation.

    Returns:
      ``{relaxation: [values on the grid nodes, one array per gamma]}``.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax import pde
      >>> from relaxjax.plots.landscape import relaxed_landscapes_1d
      >>> grid = pde.uniform_grid(-3.0, 3.0, 121)
      >>> curves = relaxed_landscapes_1d(lambda x: x**2, grid, [0.5], beta=10.0)
      >>> sorted(curves), curves["Hopf-Lax"][0].shape
      (['Hopf-Lax', 'heat', 'viscous HJ'], (121,))
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
    *,
    ax: Axes | Sequence[Axes] | None = None,
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

    Example:
      >>> from relaxjax import pde
      >>> from relaxjax.plots.landscape import plot_relaxed_landscapes_1d
      >>> grid = pde.uniform_grid(-3.0, 3.0, 121)
      >>> figure = plot_relaxed_landscapes_1d(lambda x: x**2, grid, [0.1, 1.0], beta=10.0)
      >>> len(figure.axes)
      3
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
    *,
    trajectories: Mapping[str, ArrayLike] | None = None,
    ax: Axes | None = None,
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

    Example:
      >>> import numpy as np
      >>> from relaxjax import pde
      >>> from relaxjax.plots.landscape import plot_contours_2d, wide_and_sharp_2d
      >>> grid = pde.uniform_grid((-2.0, -2.0), (2.0, 2.0), (41, 41))
      >>> path = np.array([[1.5, 1.5], [1.2, 0.8]])
      >>> figure = plot_contours_2d(wide_and_sharp_2d, grid, trajectories={"SGD": path})
      >>> figure.axes[0].get_legend().get_texts()[0].get_text()
      'SGD'
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


# ----------------------------------------------------------------------------
# Optimizer trajectories on a 2-D loss.
# ----------------------------------------------------------------------------


def wide_and_sharp_2d(p: ArrayLike) -> jax.Array:
    """A 2-D non-convex loss with a wide minimum, a deeper sharp one and ripples.

    f(p) = −exp(−|p − (1.2, 0.6)|²/0.98) − 1.2 exp(−|p − (−0.8, −0.6)|²/0.045)
    + 0.08 sin(4p₁) sin(4p₂) + 0.04|p|²: the wide valley of *Entropy-SGD*'s
    picture, a sharp global minimum, and ripples that trap gradient descent in
    shallow local minima. Vectorised over points of shape ``(..., 2)``.

    Args:
      p: points of shape ``(..., 2)``.

    Returns:
      f(p), of shape ``(...)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from relaxjax.plots.landscape import wide_and_sharp_2d
      >>> sharp, wide = jnp.array([-0.8, -0.6]), jnp.array([1.2, 0.6])
      >>> bool(wide_and_sharp_2d(sharp) < wide_and_sharp_2d(wide))  # the sharp one is deeper
      True
    """
    p = jnp.asarray(p)
    x, y = p[..., 0], p[..., 1]
    wide = -jnp.exp(-((x - 1.2) ** 2 + (y - 0.6) ** 2) / (2 * 0.7**2))
    sharp = -1.2 * jnp.exp(-((x + 0.8) ** 2 + (y + 0.6) ** 2) / (2 * 0.15**2))
    ripples = 0.08 * jnp.sin(4 * x) * jnp.sin(4 * y)
    return wide + sharp + ripples + 0.04 * (x**2 + y**2)


DEMO_GRID_2D = pde.uniform_grid((-2.5, -2.0), (2.5, 2.5), (201, 181))
"""A grid covering :func:`wide_and_sharp_2d`'s minima."""

DEMO_START_2D = (-1.5, 1.5)
"""A start from which gradient descent on :func:`wide_and_sharp_2d` stops in a ripple."""


def _run(
    tx: optax.GradientTransformationExtraArgs,
    grad: Callable[[jax.Array, jax.Array], jax.Array],
    x0: jax.Array,
    num_steps: int,
    key: jax.Array,
) -> np.ndarray:
    """Iterates ``x ← x + tx.update(...)`` and returns the path, shape (num_steps + 1, 2).

    Outer step t evaluates the gradient at x with key (t, 0) and inner
    gradients with keys (t, i), i = 1 … L − 1.
    """

    def step(carry, t):
        x, state = carry
        step_key = jax.random.fold_in(key, t)
        g0 = grad(x, jax.random.fold_in(step_key, 0))
        updates, state = tx.update(
            g0, state, x, grad_fn=lambda y, i: grad(y, jax.random.fold_in(step_key, i))
        )
        x = optax.apply_updates(x, updates)
        return (x, state), x

    @jax.jit
    def run(x0):
        _, xs = jax.lax.scan(step, (x0, tx.init(x0)), jnp.arange(num_steps))
        return xs

    return np.concatenate([np.asarray(x0)[None], np.asarray(run(x0))])


def optimizer_trajectories(
    f: Callable[[jax.Array], jax.Array],
    *,
    x0: ArrayLike = DEMO_START_2D,
    outer_steps: int = 60,
    inner_steps: int = 20,
    learning_rate: float = 0.05,
    gamma: float = 1.0,
    noise: float = 0.3,
    alpha: float = 0.9,
    relaxed_learning_rate: float = 1.0,
    gradient_noise: float = 0.0,
    seed: int = 0,
    methods: Sequence[str] = ("SGD", "Entropy-SGD", "HJ"),
) -> dict[str, np.ndarray]:
    """Paths of SGD, Entropy-SGD and HJ on a 2-D loss, at equal gradient evaluations.

    * ``"SGD"``: ``outer_steps · inner_steps`` steps x ← x − η g(x).
    * ``"Entropy-SGD"``: ``outer_steps`` steps of
      ``optax.chain(relaxjax.local_entropy(gamma, inner_steps, η, noise, alpha),
      optax.sgd(relaxed_learning_rate · gamma))``: gradient descent on the local
      entropy f_γ at inverse temperature β = 1/noise² (*Deep Relaxation*, viscous HJ).
    * ``"HJ"``: the same with ``relaxjax.hopf_lax`` (non-viscous HJ, Moreau envelope).

    η = ``learning_rate`` is also the inner step size, and ``relaxed_learning_rate``
    is the rate on x − μ of ``relaxjax train`` (1: x moves to the inner average μ),
    so every method spends ``inner_steps`` gradient evaluations of step η per
    outer step. g is the exact gradient plus ``gradient_noise`` · ξ, ξ ~ N(0, I),
    fresh at every evaluation (a stand-in for mini-batch noise).

    Args:
      f: the loss, vectorised over points of shape ``(..., 2)`` (a scalar for one
        point), written with ``jax.numpy``.
      x0: the start, shape ``(2,)``.
      outer_steps: outer steps of the relaxations.
      inner_steps: L, gradient evaluations per outer step.
      learning_rate: η, SGD's step and the inner step size.
      gamma: the scope γ.
      noise: ε, the Langevin noise of Entropy-SGD.
      alpha: α, weight of the old running average in the inner loops.
      relaxed_learning_rate: outer rate on x − μ of the relaxations.
      gradient_noise: standard deviation of the gradient noise (0: exact gradients).
      seed: seeds the gradient noise and the Langevin noise.
      methods: which of ``"SGD"``, ``"Entropy-SGD"``, ``"HJ"`` to run, in this order.

    Returns:
      ``{method: array of shape (T + 1, 2)}``, the start included; T is
      ``outer_steps · inner_steps`` for SGD and ``outer_steps`` for the relaxations.
      Pass it to :func:`plot_contours_2d` or :func:`plot_optimizer_trajectories`.

    Example:
      >>> from relaxjax.plots.landscape import optimizer_trajectories, wide_and_sharp_2d
      >>> paths = optimizer_trajectories(wide_and_sharp_2d, outer_steps=3, inner_steps=4)
      >>> {name: path.shape for name, path in paths.items()}
      {'SGD': (13, 2), 'Entropy-SGD': (4, 2), 'HJ': (4, 2)}
    """
    x0 = jnp.asarray(x0, dtype=jnp.result_type(float))
    if x0.shape != (2,):
        raise ValueError(f"x0 must have shape (2,), got {x0.shape}")
    known = ("SGD", "Entropy-SGD", "HJ")
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {known}")
    exact = jax.grad(lambda p: f(p))

    def grad(y: jax.Array, key: jax.Array) -> jax.Array:
        g = exact(y)
        if gradient_noise:
            g = g + gradient_noise * jax.random.normal(key, g.shape, g.dtype)
        return g

    key = jax.random.PRNGKey(seed)
    outer = optax.sgd(relaxed_learning_rate * gamma)
    common = dict(gamma=gamma, num_steps=inner_steps, step_size=learning_rate, alpha=alpha)
    paths = {}
    for method in methods:
        if method == "SGD":
            tx = optax.with_extra_args_support(optax.sgd(learning_rate))
            paths[method] = _run(tx, grad, x0, outer_steps * inner_steps, key)
        elif method == "Entropy-SGD":
            tx = optax.chain(local_entropy(**common, noise=noise, seed=seed), outer)
            paths[method] = _run(tx, grad, x0, outer_steps, key)
        else:
            tx = optax.chain(hopf_lax(**common), outer)
            paths[method] = _run(tx, grad, x0, outer_steps, key)
    return paths


_PANELS = ("loss", "local entropy", "Hopf-Lax")


def plot_optimizer_trajectories(
    f: pde.Loss,
    grid2d: pde.Grid,
    trajectories: Mapping[str, ArrayLike],
    *,
    gamma: float,
    beta: float,
    panels: Sequence[str] = _PANELS,
    axes: Sequence[Axes] | None = None,
    levels: int = 30,
) -> Figure:
    """Optimizer paths over a 2-D loss and over its relaxations (*Deep Relaxation* style).

    One :func:`plot_contours_2d` panel per entry of ``panels``: ``"loss"`` (f),
    ``"local entropy"`` (the viscous HJ solution f_γ at inverse temperature
    ``beta``, the landscape Entropy-SGD descends) and ``"Hopf-Lax"`` (the Moreau
    envelope, HJ's landscape), each at time ``gamma`` on ``grid2d``, with the same
    ``trajectories`` (e.g. from :func:`optimizer_trajectories`; use β = 1/noise²).

    Args:
      f: the loss, a vectorised callable on ``(..., 2)`` points or its values on the grid.
      grid2d: a 2-D :class:`relaxjax.pde.Grid`.
      trajectories: ``{label: array of shape (T, 2)}``.
      gamma: the time (scope) of the relaxations.
      beta: inverse temperature of the local entropy.
      panels: which of ``"loss"``, ``"local entropy"``, ``"Hopf-Lax"`` to draw.
      axes: one axes per panel to draw into; ``None`` creates a new figure.
      levels: number of contour levels.

    Returns:
      The figure (new unless ``axes`` is given, one axes per panel).

    Example:
      >>> import numpy as np
      >>> from relaxjax import pde
      >>> from relaxjax.plots.landscape import plot_optimizer_trajectories, wide_and_sharp_2d
      >>> grid = pde.uniform_grid((-2.0, -2.0), (2.0, 2.0), (31, 31))
      >>> paths = {"SGD": np.array([[1.5, 1.5], [1.2, 0.8]])}
      >>> figure = plot_optimizer_trajectories(
      ...     wide_and_sharp_2d, grid, paths, gamma=0.1, beta=10.0)
      >>> [axes.get_title().split()[0] for axes in figure.axes if axes.get_title()]
      ['loss', 'local', 'Hopf-Lax']
    """
    unknown = [p for p in panels if p not in _PANELS]
    if unknown or not panels:
        raise ValueError(f"panels must be a non-empty selection of {_PANELS}, got {panels}")
    if axes is None:
        fig = Figure(figsize=(5.2 * len(panels), 4.6), layout="constrained")
        axes = list(np.atleast_1d(fig.subplots(1, len(panels))))
    elif len(axes) != len(panels):
        raise ValueError(f"need {len(panels)} axes, got {len(axes)}")
    fy = pde.grid_values(f, grid2d)  # sampled once: the solvers compile per grid, not per f
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "loss":
            values, title = fy, "loss f"
        elif panel == "local entropy":
            values = pde.local_entropy(fy, grid2d, gamma, beta)
            title = f"local entropy $f_\\gamma$ (γ={gamma:g}, β={beta:.3g})"
        else:
            values = pde.moreau_envelope(fy, grid2d, gamma, refine=False)[0]
            title = f"Hopf-Lax $u(\\cdot, \\gamma)$ (γ={gamma:g})"
        plot_contours_2d(
            values, grid2d, trajectories=trajectories, ax=ax, levels=levels, title=title
        )
    return axes[0].figure
