"""``benchmarks/authors_code.py``: the patch to the authors' code, and a smoke run.

The patch is checked without PyTorch: it is a well-formed unified diff of their
``python/`` folder, and, when their code is here (``RELAXJAX_AUTHORS_CODE``: a checkout
of github.com/ucla-vision/entropy-sgd), it applies cleanly and leaves no indexing of a
0-dim tensor in their training script. The smoke run (tiny synthetic data, both
implementations) needs PyTorch and their code, and is skipped without either.
"""

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
PATCH = BENCHMARKS / "patches" / "entropy-sgd-python.patch"
ENV = "RELAXJAX_AUTHORS_CODE"
NO_CODE = (
    f"the authors' code is not here: set {ENV} to a checkout of "
    "github.com/ucla-vision/entropy-sgd (git clone https://github.com/ucla-vision/entropy-sgd)"
)
HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _their_python_folder() -> Path | None:
    root = os.environ.get(ENV)
    for folder in (Path(root) / "python", Path(root)) if root else ():
        if (folder / "train.py").is_file() and (folder / "optim.py").is_file():
            return folder
    return None


def _hunks(lines: list[str]) -> list[tuple[str, int, int, int, int]]:
    """(file, old count, new count, old lines seen, new lines seen) of every hunk."""
    hunks, target = [], None
    for line in lines:
        if line.startswith("+++ "):
            target = line[4:].strip()
        elif match := HUNK.match(line):
            old, new = (int(match.group(i) or 1) for i in (2, 4))
            hunks.append([target, old, new, 0, 0])
        elif hunks and line[:1] in (" ", "-", "+") and not line.startswith("--- "):
            hunks[-1][3] += line[0] in " -"
            hunks[-1][4] += line[0] in " +"
    return [tuple(h) for h in hunks]


def test_patch_is_a_well_formed_diff_of_their_python_folder():
    lines = PATCH.read_text().splitlines()
    headers = [(a, b) for a, b in zip(lines, lines[1:], strict=False) if a.startswith("--- a/")]
    assert headers and all(b.startswith("+++ b/") for _, b in headers)
    assert all(a[6:] == b[6:] and a[6:].startswith("python/") for a, b in headers)
    hunks = _hunks(lines[lines.index(headers[0][0]) :])
    assert hunks
    for target, old, new, old_seen, new_seen in hunks:
        assert (old_seen, new_seen) == (old, new), f"hunk of {target}: line counts differ"


def test_patch_applies_to_their_code(tmp_path):
    folder = _their_python_folder()
    if folder is None:
        pytest.skip(NO_CODE)
    tool = shutil.which("patch")
    if tool is None:
        pytest.skip("no `patch` command")
    shutil.copytree(folder, tmp_path / "python")
    done = subprocess.run(
        [tool, "-p1", "--forward", "--batch", "-i", str(PATCH)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "offset" not in done.stdout and "fuzz" not in done.stdout, done.stdout
    patched = (tmp_path / "python" / "train.py").read_text()
    # Indexing a 0-dim tensor raises on PyTorch >= 0.4: none is left in their script.
    assert not re.search(r"\.data\[0\]|prec1\[0\]", patched)
    assert patched != (folder / "train.py").read_text()


@pytest.mark.slow
def test_authors_code_smoke(tmp_path):
    pytest.importorskip("torch", reason="needs PyTorch (pip install '.[bench]')")
    folder = _their_python_folder()
    if folder is None:
        pytest.skip(NO_CODE)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        authors_code = importlib.import_module("authors_code")
    finally:
        sys.path.remove(str(BENCHMARKS))
    argv = ["--smoke", "--models", "mnistfc", "--authors-code", str(folder)]
    # JAX has started in this process: its thread pool has one thread per usable core.
    argv += ["--threads", str(len(os.sched_getaffinity(0)))]
    assert authors_code.main([*argv, "--out-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "authors_code.json").read_text())
    assert results["environment"]["command"].startswith("python benchmarks/authors_code.py")
    (timing,) = results["timing"]
    rows = timing["rows"]
    # Their outer step evaluates L + 1 gradients (L = 2 in the smoke run), relaxjax's L.
    assert rows["authors"]["gradients_per_outer_step"] == 3
    assert rows["relaxjax"]["gradients_per_outer_step"] == 2
    assert all(r["outer_step_ms_median"] > 0 for r in rows.values())
    # The bare gradients, timed in the same rounds, and the ratio of relaxjax's jitted
    # SGD step to their time per gradient.
    bare = timing["gradients"]
    assert set(bare) == {"authors", "relaxjax"} and all(g["ms_median"] > 0 for g in bare.values())
    sgd_ratio = bare["relaxjax"]["ms_median"] / rows["authors"]["ms_per_gradient"]
    assert timing["jitted_sgd_ratio_per_effective_epoch"] == pytest.approx(sgd_ratio)
    # Their defaults, read from their run; the coupling their code really uses.
    used = results["settings_used"]
    assert (used["lr"], used["gamma"], used["scoping"], used["inner_momentum"]) == (
        0.1,
        1e4,
        0.0,
        0.9,
    )
    runs = results["runs"]
    assert {r["impl"] for r in runs} == {"authors", "relaxjax"}
    # The same network from the same weights: the same logits at the start.
    assert all(r["start_logit_gap"] < 1e-5 for r in runs)
    assert all(r["curve"] and r["reached"] for r in runs)
    page = (tmp_path / "authors_code.md").read_text()
    assert "| mnistfc (mnistfc) | relaxjax |" in page
    assert "## What one gradient costs" in page and "It is not a strict bound" in page
    # --report-only writes the same page again from the JSON, running nothing.
    (tmp_path / "authors_code.md").unlink()
    assert authors_code.main(["--report-only", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "authors_code.md").read_text() == page


@pytest.mark.parametrize("stem", ["authors_code", "authors_code_gradients", "authors_code_avx512"])
def test_committed_report_is_what_its_measurements_render(tmp_path, load_benchmark, stem):
    """benchmarks/results/<stem>.md is regenerated from <stem>.json (no PyTorch, no
    authors' code): the page holds no figure its measurements lack."""
    results = BENCHMARKS / "results"
    shutil.copy(results / f"{stem}.json", tmp_path / f"{stem}.json")
    argv = ["--report-only", "--out-dir", str(tmp_path), "--stem", stem]
    assert load_benchmark("authors_code").main(argv) == 0
    assert (tmp_path / f"{stem}.md").read_text() == (results / f"{stem}.md").read_text()
