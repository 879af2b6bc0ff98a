"""Reproduces the notebook-test stall (jupyter/nbclient#312) and times the fix.

Runs ``notebooks/02_relaxed_landscapes.ipynb`` the way ``tests/test_notebooks.py``
does (small settings, 600 s cell timeout) N times and prints each run's wall time,
with nbclient's own ``NotebookClient`` (``stock``) or the test's
``SlicedPollClient`` (``sliced``). A stalled stock run takes the whole timeout
while its cells take ~17 s; the stall showed up with other work on the CPU.

    python benchmarks/notebook_client_stall.py stock 5
    python benchmarks/notebook_client_stall.py sliced 10
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    mode, runs = argv[0], int(argv[1])
    sys.path.insert(0, str(ROOT / "tests"))
    from test_notebooks import DATA_DIR, SlicedPollClient

    client_type = {"stock": NotebookClient, "sliced": SlicedPollClient}[mode]
    os.environ.update(
        RELAXJAX_NB_SMALL="1", RELAXJAX_DATA_DIR=str(DATA_DIR), RELAXJAX_PIP_SPEC=str(ROOT)
    )
    os.environ.pop("MPLBACKEND", None)
    for run in range(runs):
        nb = nbformat.read(ROOT / "notebooks" / "02_relaxed_landscapes.ipynb", as_version=4)
        with tempfile.TemporaryDirectory() as work:
            client = client_type(
                nb,
                timeout=600,
                kernel_name="python3",
                shutdown_kernel="immediate",
                resources={"metadata": {"path": work}},
            )
            start = time.perf_counter()
            client.execute(env=dict(os.environ))
        print(f"{mode} run {run}: {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
