"""Smoke tests of the landscape figures: valid, non-blank PNGs with the expected artists."""

import jax.numpy as jnp
import matplotlib
import matplotlib.image
import numpy as np
import pytest
from matplotlib._pylab_helpers import Gcf
from matplotlib.figure import Figure

from relaxjax import pde
from relaxjax.plots import landscape

GAMMAS = (0.1, 0.5, 2.0)


def f1(y):
    return y**4 / 4 - y**2 / 2 + 0.3 * jnp.sin(5 * y)


def f2(y):
    return (1 - y[..., 0]) ** 2 + 5 * (y[..., 1] - y[..., 0] ** 2) ** 2


def check_png(path, min_colors=20):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    flat = img[..., :3].reshape(-1, 3)
    assert flat.std() > 0.05  # not blank
    assert len(np.unique(np.round(flat, 2), axis=0)) >= min_colors


def test_relaxed_landscapes_panels(tmp_path):
    grid = pde.uniform_grid(-3, 3, 241)
    n_managers = Gcf.get_num_fig_managers()
    fig = landscape.plot_relaxed_landscapes_1d(f1, grid, GAMMAS, beta=2.0, xlim=(-2, 2))
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    for ax in fig.axes:
        assert len(ax.get_lines()) == 1 + len(GAMMAS)
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert texts == ["f"] + [f"γ={g:g}" for g in GAMMAS]
        assert ax.get_xlim() == (-2, 2)
    # The drawn curves are the solver outputs, ordered by gamma.
    ref = pde.moreau_envelope(f1, grid, GAMMAS[1])[0]
    np.testing.assert_allclose(fig.axes[1].get_lines()[2].get_ydata(), ref, rtol=1e-6)
    # Relaxations lie below f (Hopf-Lax) and decrease with gamma.
    hl = [line.get_ydata() for line in fig.axes[1].get_lines()]
    assert all(np.all(hl[i + 1] <= hl[i] + 1e-5) for i in range(len(hl) - 1))
    fig.savefig(tmp_path / "panels.png", dpi=60)
    check_png(tmp_path / "panels.png")
    assert Gcf.get_num_fig_managers() == n_managers  # no pyplot state


def test_relaxed_landscapes_single_axes(tmp_path):
    grid = pde.uniform_grid(-3, 3, 241)
    fig = Figure()
    ax = fig.add_subplot()
    out = landscape.plot_relaxed_landscapes_1d(f1, grid, GAMMAS[:2], beta=1.0, ax=ax)
    assert out is fig
    assert len(ax.get_lines()) == 1 + 3 * 2
    assert len(ax.get_legend().get_texts()) == 1 + 3 * 2
    styles = {line.get_linestyle() for line in ax.get_lines()[1:]}
    assert styles == {"-", "--", ":"}
    fig.savefig(tmp_path / "single.png", dpi=60)
    check_png(tmp_path / "single.png")
    with pytest.raises(ValueError):
        landscape.plot_relaxed_landscapes_1d(f1, grid, GAMMAS, 1.0, ax=[ax])
    with pytest.raises(ValueError):
        landscape.plot_relaxed_landscapes_1d(f2, pde.uniform_grid(-1, 1, (5, 5)), GAMMAS, 1.0)


def test_contours_with_trajectories(tmp_path):
    grid = pde.uniform_grid((-2, -1), (2, 3), (81, 81))
    s = np.linspace(0, 1, 50)[:, None]
    trajectories = {
        "SGD": np.hstack([-1.5 + 2.5 * s, 2.5 - 1.5 * s]),
        "Entropy-SGD": jnp.asarray(np.hstack([-1.0 + 2.0 * s, -0.5 + 1.5 * s**2])),
    }
    fig = landscape.plot_contours_2d(
        f2, grid, trajectories=trajectories, log_scale=True, title="demo"
    )
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 3 * len(trajectories)  # path, start marker, end marker
    np.testing.assert_allclose(lines[0].get_xydata(), trajectories["SGD"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(trajectories)
    assert len(fig.axes) == 2  # contour axes and colour bar
    assert ax.get_title() == "demo"
    fig.savefig(tmp_path / "contours.png", dpi=60)
    check_png(tmp_path / "contours.png")
    # Into given axes, from sampled values, without trajectories.
    fig2 = Figure()
    ax2 = fig2.add_subplot()
    assert landscape.plot_contours_2d(pde.grid_values(f2, grid), grid, ax=ax2) is fig2
    assert ax2.get_legend() is None and len(ax2.get_lines()) == 0
    with pytest.raises(ValueError):
        landscape.plot_contours_2d(f2, grid, trajectories={"bad": np.zeros((5, 3))})
