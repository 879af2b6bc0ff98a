"""Reproduces the notebook-test stall (jupyter/nbclient#312) and times the fix.

Runs ``notebooks/02_relaxed_landscapes.ipynb`` the way ``tests/test_notebooks.py``
does (small settings, 600 s cell timeout) N times and prints each run's wall time,
with nbclient's own ``NotebookClient`` (``stock``) or the test's
``SlicedPollClient`` (``sliced``). A stalled stock run takes the whole timeout
while its cells take ~17 s; the stall showed up with other work on the CPU.

    python benchmarks/notebook_client_stall.py stock 5
    python benchmarks/notebook_client_stall.py sliced 10
    python benchmarks/notebook_client_stall.py sliced 1 --notebook other.ipynb
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("stock", "sliced"), help="nbclient's client or the test's")
    parser.add_argument("runs", type=int)
    parser.add_argument(
        "--notebook",
        type=Path,
        default=ROOT / "notebooks" / "02_relaxed_landscapes.ipynb",
        help="notebook to run [notebook 02, whose widgets showed the stall]",
    )
    parser.add_argument(
        "--timeout", type=int, default=600, help="cell timeout in seconds [the test's, 600]"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from test_notebooks import DATA_DIR, SlicedPollClient

    client_type = {"stock": NotebookClient, "sliced": SlicedPollClient}[args.mode]
    env = dict(
        os.environ,
        RELAXJAX_NB_SMALL="1",
        RELAXJAX_DATA_DIR=str(DATA_DIR),
        RELAXJAX_PIP_SPEC=str(ROOT),
    )
    env.pop("MPLBACKEND", None)
    for run in range(args.runs):
        nb = nbformat.read(args.notebook, as_version=4)
        with tempfile.TemporaryDirectory() as work:
            client = client_type(
                nb,
                timeout=args.timeout,
                kernel_name="python3",
                shutdown_kernel="immediate",
                resources={"metadata": {"path": work}},
            )
            start = time.perf_counter()
            client.execute(env=env)
        print(f"{args.mode} run {run}: {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
