"""The notebooks' first code cell: installs relaxjax from a source it can reach, or stops
with one instruction (relaxjax is not on PyPI, so ``pip install relaxjax`` would fail)."""

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def _install_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    return "".join(code[0]["source"])


def test_every_notebook_has_the_same_install_cell():
    cells = {path.name: _install_cell(path) for path in NOTEBOOKS}
    assert len(cells) == 3 and len(set(cells.values())) == 1, sorted(cells)
    assert '"relaxjax"]' not in next(iter(cells.values()))  # never the bare PyPI name


def _run_cell(tmp_path, monkeypatch, env=None):
    """Runs the cell in ``tmp_path`` as if relaxjax were not importable; returns the
    pip arguments it ran, or raises what the cell raised."""
    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RELAXJAX_PIP_SPEC", raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "relaxjax" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(subprocess, "check_call", lambda args: calls.append(args))
    exec(compile(_install_cell(NOTEBOOKS[0]), "install-cell", "exec"), {})
    return calls


def test_without_a_source_it_stops_with_one_instruction(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match=r"not on PyPI: upload the wheel .*RELAXJAX_PIP_SPEC"):
        _run_cell(tmp_path, monkeypatch)


def test_it_installs_an_uploaded_wheel_with_the_notebook_extra(tmp_path, monkeypatch):
    wheel = tmp_path / "relaxjax-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    (calls,) = _run_cell(tmp_path, monkeypatch)
    assert calls[-1] == f"{wheel}[notebook]" and calls[1:4] == ["-m", "pip", "install"]


def test_it_installs_the_enclosing_checkout(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "relaxjax").mkdir()
    (tmp_path / "notebooks").mkdir()
    (calls,) = _run_cell(tmp_path / "notebooks", monkeypatch)
    assert calls[-1] == f"{tmp_path.resolve()}[notebook]"


def test_the_environment_variable_wins(tmp_path, monkeypatch):
    (tmp_path / "relaxjax-0.1.0-py3-none-any.whl").write_bytes(b"")
    spec = "relaxjax[notebook] @ git+https://example.org/relaxjax"
    (calls,) = _run_cell(tmp_path, monkeypatch, {"RELAXJAX_PIP_SPEC": spec})
    assert calls[-1] == spec
