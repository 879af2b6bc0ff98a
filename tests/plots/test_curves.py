"""The training-curve figures: seed means and bands, colours, panels, legend, ticks, paper cells."""

import doctest
import json
import subprocess
import sys
from types import SimpleNamespace as NS

import matplotlib.image
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from relaxjax.plots import curves
from relaxjax.plots.curves import (
    OPTIMIZER_COLORS,
    RunCurve,
    mean_over_seeds,
    plot_curves,
    plot_runs,
    run_curves,
)

EPOCHS = [1.0, 2.0, 3.0, 4.0]


def _curve(model, optimizer, seed, values, epochs=EPOCHS):
    return RunCurve(model, optimizer, seed, list(epochs), list(values))


def _drawn(figure: Figure):
    """Draws the figure on an Agg canvas and returns its renderer."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def _mean_lines(ax):
    """{label: Line2D} of the mean curves of one panel (not the paper markers)."""
    return {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}


def test_doctests_run():
    result = doctest.testmod(curves)
    assert result.attempted >= 4 and result.failed == 0


def test_mean_and_band_of_two_seeds():
    a = _curve("lenet", "sgd", 0, [4.0, 3.0, 2.0, 1.0])
    b = _curve("lenet", "sgd", 1, [2.0, 3.0, 4.0, 1.5])
    (m,) = mean_over_seeds([a, b])
    assert m.seeds == (0, 1)
    np.testing.assert_allclose(m.epochs, EPOCHS)
    np.testing.assert_allclose(m.mean, [3.0, 3.0, 3.0, 1.25])
    np.testing.assert_allclose(m.low, [2.0, 3.0, 2.0, 1.0])
    np.testing.assert_allclose(m.high, [4.0, 3.0, 4.0, 1.5])

    figure = plot_curves([a, b])
    ax = figure.axes[0]
    line = _mean_lines(ax)["sgd"]
    np.testing.assert_allclose(line.get_xdata(), EPOCHS)
    np.testing.assert_allclose(line.get_ydata(), m.mean)
    (band,) = ax.collections  # fill_between: one polygon from low to high
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(1.0) and ys.max() == pytest.approx(4.0)


def test_seeds_on_different_epochs_are_interpolated_on_the_shortest_common_range():
    a = _curve("m", "hj", 0, [4.0, 3.0, 2.0, 1.0], epochs=[0.0, 1.0, 2.0, 3.0])
    b = _curve("m", "hj", 1, [1.0, 1.0, 1.0], epochs=[0.5, 1.5, 2.5])
    (m,) = mean_over_seeds([a, b])
    np.testing.assert_allclose(m.epochs, [0.5, 1.5, 2.5])
    np.testing.assert_allclose(m.high, [3.5, 2.5, 1.5])  # a, interpolated
    np.testing.assert_allclose(m.mean, [2.25, 1.75, 1.25])
    with pytest.raises(ValueError, match="share no epoch range"):
        mean_over_seeds([a, _curve("m", "hj", 2, [1.0, 1.0], epochs=[5.0, 6.0])])


def test_single_seed_is_a_line_without_band():
    figure = plot_curves([_curve("lenet", "sgd", 0, [3.0, 2.0, 1.5, 1.0])])
    assert not figure.axes[0].collections
    assert len(_mean_lines(figure.axes[0])) == 1


def _two_models():
    out = []
    for model in ("mnistfc", "lenet"):
        for k, optimizer in enumerate(("sgd", "entropy-sgd", "hj", "my-variant")):
            for seed in (0, 1):
                values = np.array([4.0, 2.0, 1.5, 1.0]) * (1 + 0.1 * k + 0.05 * seed)
                out.append(_curve(model, optimizer, seed, values))
    return out


def test_one_axes_per_model_in_order_of_appearance():
    figure = plot_curves(_two_models() + [_curve("allcnn", "sgd", 0, [9, 8, 8, 7])])
    assert [ax.get_title() for ax in figure.axes] == ["mnistfc", "lenet", "allcnn"]
    for ax in figure.axes:
        assert ax.get_xlabel() == "effective epochs"
        assert ax.get_ylabel() == "test error (%)"
        assert ax.get_yscale() == "log"
    lenet = figure.axes[1]
    assert set(_mean_lines(lenet)) == {"sgd", "entropy-sgd", "hj", "my-variant"}


def test_one_colour_per_optimizer_across_panels():
    figure = plot_curves(_two_models())
    colours = [
        {label: to_rgba(line.get_color()) for label, line in _mean_lines(ax).items()}
        for ax in figure.axes
    ]
    assert len(colours) == 2 and colours[0] == colours[1]
    assert len(set(colours[0].values())) == 4  # distinct optimizers, distinct colours
    for name in ("sgd", "entropy-sgd", "hj"):
        assert colours[0][name] == to_rgba(OPTIMIZER_COLORS[name])
    assert colours[0]["my-variant"] not in {to_rgba(c) for c in OPTIMIZER_COLORS.values()}
    # The legend has one entry per optimizer, in the same colours.
    (legend,) = figure.legends
    entries = {
        t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    for name, colour in colours[0].items():
        assert to_rgba(entries[name].get_color()) == colour


@pytest.mark.parametrize("n_models", [1, 2, 4])
def test_legend_outside_every_axes_and_labels_inside_the_figure(n_models):
    models = ["mnistfc-dr", "lenet-dr", "mnistfc", "lenet"][:n_models]
    data = [c._replace(model=models[i % n_models]) for i, c in enumerate(_two_models())]
    cells = {(m, "sgd"): (1.0, 0.05, 4) for m in models}
    figure = plot_curves(data, paper_cells=cells)
    renderer = _drawn(figure)
    (legend,) = figure.legends
    box = legend.get_window_extent(renderer)
    page = figure.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
    for ax in figure.axes:
        assert not box.overlaps(ax.get_window_extent(renderer))
        for label in (ax.xaxis.label, ax.yaxis.label, ax.title):
            extent = label.get_window_extent(renderer)
            assert page.x0 <= extent.x0 and extent.x1 <= page.x1
            assert page.y0 <= extent.y0 and extent.y1 <= page.y1
            assert not box.overlaps(extent)


@pytest.mark.parametrize(
    "values",
    [
        [0.7, 0.55, 0.5, 0.45],  # a fraction of a decade
        [4.0, 1.5, 0.8, 0.45],  # about a decade
        [60.0, 10.0, 2.0, 0.3],  # over two decades
    ],
    ids=["narrow", "decade", "wide"],
)
def test_tick_labels_are_plain_numbers(values):
    figure = plot_curves([_curve("lenet", "sgd", 0, values), _curve("lenet", "hj", 0, values)])
    _drawn(figure)
    ax = figure.axes[0]
    texts = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)]
    texts += [t.get_text() for t in ax.get_xticklabels()]
    for text in texts:
        assert "\\times" not in text and "10^" not in text and "×" not in text, texts
        assert "$" not in text, texts
    shown = [t for t in (t.get_text() for t in ax.get_yticklabels(minor=True)) if t]
    shown += [t for t in (t.get_text() for t in ax.get_yticklabels()) if t]
    lo, hi = ax.get_ylim()
    numbers = [float(t.replace("\N{MINUS SIGN}", "-")) for t in shown]
    assert len([x for x in numbers if lo <= x <= hi]) >= 2, shown
    assert not ax.yaxis.get_offset_text().get_text()


def test_paper_cell_is_marked_in_the_optimizers_colour():
    data = _two_models()
    cells = {("lenet", "entropy-sgd"): (0.5, 0.01, 80), ("allcnn", "sgd"): (7.9, 0.06, 195)}
    figure = plot_curves(data, paper_cells=cells)
    mnistfc, lenet = figure.axes
    assert not [c for c in mnistfc.containers if isinstance(c, ErrorbarContainer)]
    (bar,) = [c for c in lenet.containers if isinstance(c, ErrorbarContainer)]
    marker, _, (segments,) = bar.lines
    assert list(marker.get_xdata()) == [80] and list(marker.get_ydata()) == [0.5]
    assert marker.get_marker() == "D"
    assert to_rgba(marker.get_color()) == to_rgba(OPTIMIZER_COLORS["entropy-sgd"])
    (segment,) = segments.get_segments()
    np.testing.assert_allclose(segment[:, 1], [0.49, 0.51])
    (legend,) = figure.legends
    assert "paper's cell (± std)" in [t.get_text() for t in legend.get_texts()]


def _runs():
    """``iterate_runs``-style tuples, duck-typed."""
    for optimizer in ("sgd", "hj"):
        for seed in (0, 1):
            config = NS(model="mnistfc", seed=seed, optimizer=NS(name=optimizer))
            metrics = [
                {"effective_epochs": e, "test_error": 0.03 / e * (1 + seed / 10), "test_loss": 1}
                for e in (1.0, 2.0, 3.0)
            ]
            yield f"runs/{optimizer}-s{seed}", config, metrics
    yield "runs/empty", NS(model="mnistfc", seed=0, optimizer=NS(name="adam")), []


def test_run_curves_reads_iterate_runs_tuples():
    found = run_curves(_runs())
    assert [(c.model, c.optimizer, c.seed) for c in found] == [
        ("mnistfc", "sgd", 0),
        ("mnistfc", "sgd", 1),
        ("mnistfc", "hj", 0),
        ("mnistfc", "hj", 1),
    ]
    np.testing.assert_allclose(found[0].values, [3.0, 1.5, 1.0])  # percent
    assert found[0].run == "runs/sgd-s0"
    np.testing.assert_allclose(run_curves(_runs(), metric="test_loss")[0].values, [1, 1, 1])


def test_runs_repeating_a_seed_are_not_averaged():
    config = NS(model="lenet", seed=0, optimizer=NS(name="sgd"))
    metrics = [{"effective_epochs": 1.0, "test_error": 0.01}]
    seed1 = NS(model="lenet", seed=1, optimizer=NS(name="sgd"))
    hj = NS(model="lenet", seed=0, optimizer=NS(name="hj"))
    runs = [
        ("runs/lr-0.1", config, metrics),
        ("runs/lr-1", config, metrics),
        ("runs/lr-1-s1", seed1, metrics),
        ("runs/hj", hj, metrics),
    ]
    found = run_curves(runs)
    assert [c.optimizer for c in found] == [
        "sgd (lr-0.1)",
        "sgd (lr-1)",
        "sgd (lr-1-s1)",  # not averaged with either: which one's seed is it?
        "hj",
    ]


def test_plot_runs_writes_a_png(tmp_path):
    png = tmp_path / "runs.png"
    figure = plot_runs(_runs(), output=png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(png).shape[0] > 300
    (ax,) = figure.axes
    assert ax.get_title() == "mnistfc"
    np.testing.assert_allclose(_mean_lines(ax)["sgd"].get_ydata(), [3.15, 1.575, 1.05])
    assert len(ax.collections) == 2  # a band per optimizer


def test_relaxjax_plot_on_run_directories(tmp_path, capsys):
    from relaxjax.train import OptimizerConfig, TrainConfig, cli

    dirs = []
    for optimizer in ("sgd", "entropy-sgd"):
        for seed in (0, 1):
            run = tmp_path / f"{optimizer}-s{seed}"
            run.mkdir()
            config = TrainConfig(
                model="lenet", seed=seed, optimizer=OptimizerConfig(name=optimizer)
            )
            (run / "config.json").write_text(json.dumps(config.to_json()))
            lines = [
                json.dumps(
                    {
                        "step": int(10 * e),
                        "effective_epochs": e,
                        "test_error": 0.01 / e,
                        "test_loss": 0.1,
                    }
                )
                for e in (1.0, 2.0)
            ]
            (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
            dirs.append(str(run))
    png = tmp_path / "out.png"
    assert cli.main(["plot", *dirs, "-o", str(png), "--metric", "test_loss"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in capsys.readouterr().out


@pytest.mark.subprocess
def test_curves_do_not_load_the_training_code():
    code = (
        "import sys, relaxjax.plots.curves; "
        "print(sorted(m for m in sys.modules if m.startswith(('relaxjax.train', 'relaxjax.data'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
