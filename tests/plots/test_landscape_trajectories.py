"""Optimizer trajectories on a 2-D loss (SGD, Entropy-SGD, HJ) and their figure."""

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from relaxjax import pde
from relaxjax.plots import landscape as lp

f = lp.wide_and_sharp_2d


def test_demo_entropy_sgd_leaves_the_ripple_where_sgd_and_hj_stop():
    paths = lp.optimizer_trajectories(f)  # the demo defaults: exact gradients
    assert list(paths) == ["SGD", "Entropy-SGD", "HJ"]
    assert paths["SGD"].shape == (60 * 20 + 1, 2)
    assert paths["Entropy-SGD"].shape == paths["HJ"].shape == (61, 2)
    for path in paths.values():
        np.testing.assert_allclose(path[0], lp.DEMO_START_2D)
    grad = jax.grad(f)
    sgd_end, hj_end, esgd_end = paths["SGD"][-1], paths["HJ"][-1], paths["Entropy-SGD"][-1]
    # SGD and (noiseless) HJ stop at the same shallow ripple minimum ...
    assert np.linalg.norm(grad(jnp.asarray(sgd_end))) < 1e-3
    np.testing.assert_allclose(hj_end, sgd_end, atol=1e-2)
    assert float(f(sgd_end)) > -0.1
    # ... while Entropy-SGD descends the local entropy into the wide valley.
    assert np.linalg.norm(esgd_end - np.array([1.2, 0.6])) < 0.4
    assert float(f(esgd_end)) < -0.8


def test_sgd_path_is_gradient_descent_and_noise_is_seeded():
    x0 = (0.3, -1.0)
    paths = lp.optimizer_trajectories(
        f, x0=x0, outer_steps=2, inner_steps=3, learning_rate=0.1, methods=("SGD",)
    )
    x = np.array(x0)
    expected = [x]
    for _ in range(6):
        x = x - 0.1 * np.asarray(jax.grad(f)(jnp.asarray(x, jnp.float32)))
        expected.append(x)
    np.testing.assert_allclose(paths["SGD"], np.array(expected), rtol=1e-5, atol=1e-6)

    kwargs = dict(outer_steps=3, inner_steps=4, gradient_noise=0.5, methods=("SGD", "HJ"))
    a = lp.optimizer_trajectories(f, x0=x0, seed=1, **kwargs)
    b = lp.optimizer_trajectories(f, x0=x0, seed=1, **kwargs)
    c = lp.optimizer_trajectories(f, x0=x0, seed=2, **kwargs)
    np.testing.assert_array_equal(a["HJ"], b["HJ"])
    assert not np.allclose(a["SGD"], c["SGD"])
    with pytest.raises(ValueError, match="unknown methods"):
        lp.optimizer_trajectories(f, methods=("Adam",))
    with pytest.raises(ValueError, match="shape"):
        lp.optimizer_trajectories(f, x0=(0.0, 0.0, 0.0))


def test_trajectory_figure_has_one_panel_per_landscape(tmp_path):
    grid = pde.uniform_grid((-2.5, -2.0), (2.5, 2.5), (61, 55))
    paths = lp.optimizer_trajectories(f, outer_steps=5, inner_steps=5)
    fig = lp.plot_optimizer_trajectories(f, grid, paths, gamma=1.0, beta=1 / 0.3**2)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3 and len(fig.axes) == 6  # three panels, three colour bars
    titles = [ax.get_title() for ax in panels]
    assert titles[0] == "loss f" and "local entropy" in titles[1] and "Hopf-Lax" in titles[2]
    for ax in panels:
        assert len(ax.get_lines()) == 3 * len(paths)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(paths)
    fig.savefig(tmp_path / "trajectories.png", dpi=50)
    image = matplotlib.image.imread(tmp_path / "trajectories.png")
    assert image.shape[1] > 2 * image.shape[0] and image[..., :3].std() > 0.05

    one = lp.plot_optimizer_trajectories(
        f, grid, paths, gamma=1.0, beta=4.0, panels=("local entropy",)
    )
    assert len(one.axes) == 2
    with pytest.raises(ValueError, match="panels"):
        lp.plot_optimizer_trajectories(f, grid, paths, gamma=1.0, beta=4.0, panels=("heat",))
