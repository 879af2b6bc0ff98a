"""The notebooks: committed without outputs, and executed end to end under small settings.

Each notebook reads ``RELAXJAX_NB_SMALL=1`` (tiny data and budgets) and
``RELAXJAX_DATA_DIR`` (MNIST in ``shared/data`` beside the checkout) and is run
by nbclient in a fresh kernel of this interpreter, inside a temporary working
directory (its ``runs/`` go there).
"""

import os
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from queue import Empty

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.notebook, pytest.mark.slow, pytest.mark.subprocess]

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"

# Minimum number of figures (PNG outputs) and Markdown tables each notebook shows. With
# ipywidgets installed (the `dev` extra) 02's interactive figures are widget views, whose
# pictures a headless kernel does not render: each view counts as one figure.
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
EXPECTED = {
    "01_quickstart": {"image/png": 1},
    "02_relaxed_landscapes": {"image/png": 5},
    "03_reproduction": {"image/png": 2, "text/markdown": 2},
}


# The longest single wait on the kernel's shell channel, in seconds (see SlicedPollClient).
SHELL_POLL_SLICE = 1.0


class SlicedPollClient(NotebookClient):
    """nbclient's client, waiting on the shell channel in slices of at most a second.

    nbclient waits for a cell's reply with one ``poll`` of the shell socket lasting the
    whole cell timeout. With ipywidgets (notebook 02's sliders) that poll sometimes misses
    the reply and returns it only when the timeout runs out: the test took ~600 s, the
    timeout, while its cells took 17 s (jupyter/nbclient#312, open). Polling in slices
    looks again every second; the cell timeout still holds, as the sum of the slices.
    """

    async def async_start_new_kernel_client(self):
        client = await super().async_start_new_kernel_client()
        get_msg = client.shell_channel.get_msg

        async def get_msg_in_slices(timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = SHELL_POLL_SLICE if deadline is None else deadline - time.monotonic()
                try:
                    return await get_msg(timeout=max(0.0, min(SHELL_POLL_SLICE, left)))
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

        client.shell_channel.get_msg = get_msg_in_slices
        return client


def _cell_seconds(nb) -> tuple[dict[int, float], datetime | None, datetime | None]:
    """Seconds from each code cell's busy to its idle message (nbclient records both),
    and the first busy and last idle times."""
    found, first_busy, last_idle = {}, None, None
    for index, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.status.busy" in timing and "iopub.status.idle" in timing:
            busy, idle = (
                datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                for k in ("iopub.status.busy", "iopub.status.idle")
            )
            found[index] = round((idle - busy).total_seconds(), 1)
            first_busy, last_idle = first_busy or busy, idle
    return found, first_busy, last_idle


def test_the_three_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == list(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [], f"{path.name}: strip the outputs before committing"
        assert cell.execution_count is None, f"{path.name}: clear the execution counts"
    # The first code cell installs relaxjax only when it is not importable (Colab).
    assert 'importlib.util.find_spec("relaxjax") is None' in code[0].source
    assert "RELAXJAX_NB_SMALL" in "".join(cell.source for cell in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_small_settings(path, tmp_path, monkeypatch):
    monkeypatch.setenv("RELAXJAX_NB_SMALL", "1")
    monkeypatch.setenv("RELAXJAX_DATA_DIR", str(DATA_DIR))
    # Should relaxjax not be importable in the kernel, install this checkout, never PyPI's.
    monkeypatch.setenv("RELAXJAX_PIP_SPEC", str(REPO))
    monkeypatch.delenv("RELAXJAX_NB_EPOCHS", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows figures
    nb = nbformat.read(path, as_version=4)
    client = SlicedPollClient(
        nb,
        timeout=600,
        kernel_name="python3",
        shutdown_kernel="immediate",  # no graceful-shutdown wait once the last cell is done
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start, started_at = time.perf_counter(), datetime.now(timezone.utc)
    client.execute(env=dict(os.environ))
    seconds = time.perf_counter() - start
    if seconds > 120:  # alone each notebook takes 15-50 s; say where the time went
        cells, first_busy, last_idle = _cell_seconds(nb)
        ended_at = started_at + timedelta(seconds=seconds)
        before = (first_busy - started_at).total_seconds() if first_busy else float("nan")
        after = (ended_at - last_idle).total_seconds() if last_idle else float("nan")
        warnings.warn(
            f"{path.name} took {seconds:.0f} s: cells {cells}; before the first cell "
            f"(kernel start) {before:.0f} s, after the last (shutdown) {after:.0f} s",
            stacklevel=1,
        )

    shown = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            assert output.output_type != "error"
            for mime in output.get("data", {}):
                shown[mime] = shown.get(mime, 0) + 1
    shown["image/png"] = shown.get("image/png", 0) + shown.pop(WIDGET_VIEW, 0)
    for mime, minimum in EXPECTED[path.stem].items():
        assert shown.get(mime, 0) >= minimum, f"{path.name}: {shown}"
