"""The API reference: every public name has a complete docstring, and the docs build.

A public name is one in the ``__all__`` of a package below. A function's docstring has
``Args:`` (if it takes parameters), ``Returns:`` or ``Yields:`` (unless it returns None)
and an ``Example`` whose doctest ``python -m pytest`` runs (``--doctest-modules``); a
class has a docstring of its own. The docs (``make docs``) build with every Sphinx
warning an error.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PACKAGES = (
    "relaxjax",
    "relaxjax.core",
    "relaxjax.adapters",
    "relaxjax.models",
    "relaxjax.pde",
    "relaxjax.diagnostics",
    "relaxjax.msa",
    "relaxjax.train",
    "relaxjax.data",
    "relaxjax.cpu",
    "relaxjax.plots",
)

# Public names whose docstrings lack a section, each with the reason. The test fails if
# one of them becomes complete, so that this list only shrinks.
KNOWN_GAPS: dict[str, str] = {}


def _public_objects():
    """(qualified home name, object) of every public function and class, once each."""
    seen = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue  # constants and type aliases: their doc comments are read by Sphinx
            if not (getattr(obj, "__module__", "") or "").startswith("relaxjax"):
                continue  # e.g. typing.Any re-exported as a type alias
            seen.setdefault(id(obj), (f"{obj.__module__}.{obj.__qualname__}", obj))
    return sorted(seen.values(), key=lambda item: item[0])


def _own_docstring(obj) -> str:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    if not doc:
        return ""
    # NamedTuples and dataclasses without a docstring get their signature as one.
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""
    return inspect.cleandoc(doc)


def _returns_something(fn) -> bool:
    annotation = inspect.signature(fn).return_annotation
    return annotation not in (None, "None")


def _missing_sections(obj) -> list[str]:
    doc = _own_docstring(obj)
    if not doc:
        return ["a docstring"]
    if inspect.isclass(obj):
        return []
    missing = []
    if inspect.signature(obj).parameters and "Args:" not in doc:
        missing.append("Args:")
    if inspect.isgeneratorfunction(obj):
        if "Yields:" not in doc:
            missing.append("Yields:")
    elif _returns_something(obj) and "Returns:" not in doc:
        missing.append("Returns:")
    if "Example" not in doc or ">>>" not in doc:
        missing.append("an Example with a doctest")
    return missing


def test_every_public_name_has_a_complete_docstring():
    offenders, fixed_gaps = [], []
    for qualified, obj in _public_objects():
        missing = _missing_sections(obj)
        if qualified in KNOWN_GAPS:
            if not missing:
                fixed_gaps.append(qualified)
        elif missing:
            offenders.append(f"{qualified}: no {', '.join(missing)}")
    assert not offenders, f"{len(offenders)} public names lack docstring sections:\n" + "\n".join(
        offenders
    )
    assert not fixed_gaps, f"remove from KNOWN_GAPS, now complete: {fixed_gaps}"


def test_known_gaps_are_public_names():
    names = {qualified for qualified, _ in _public_objects()}
    assert set(KNOWN_GAPS) <= names, set(KNOWN_GAPS) - names


def test_the_api_page_documents_every_public_name():
    """docs/api.md names every public object of every package's __all__ (at its home)."""
    text = (REPO / "docs" / "api.md").read_text()
    missing = []
    for package in (*PACKAGES, "relaxjax.plots", "relaxjax.cpu"):
        module = importlib.import_module(package)
        for name in module.__all__:
            if f".{name}`" not in text and f".{name}\n" not in text:
                missing.append(f"{package}.{name}")
    assert not missing, f"docs/api.md does not document: {missing}"


@pytest.mark.slow
@pytest.mark.subprocess
def test_docs_build_without_warnings(tmp_path):
    """``make docs``'s command, into a temporary folder: every warning fails the build."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-E",
        "-W",
        "--keep-going",
        "-q",
        "-b",
        "html",
        str(REPO / "docs"),
        str(tmp_path / "html"),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    assert (tmp_path / "html" / "api.html").exists()


def test_readme_and_docstrings_hold_no_dates_or_history():
    """History goes to CHANGELOG.md: no dates, commit hashes or 'before <date>' in the README,
    the docs pages or the library's sources."""
    import re

    root = Path(__file__).resolve().parents[1]
    date = re.compile(r"\b20\d\d-\d\d-\d\d\b|\bbefore 20\d\d\b|\bcommit [0-9a-f]{7,40}\b")
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    files += sorted((root / "relaxjax").rglob("*.py"))
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if date.search(line)
    ]
    assert not found, "\n".join(found)


# Utilities that implement no equation of the papers, so cite none.
UTILITIES = {
    "relaxjax.pde.uniform_grid",
    "relaxjax.pde.grid_values",
    "relaxjax.msa.from_pairs",
    "relaxjax.msa.sequential",
    "relaxjax.msa.l2_regularizer",
    "relaxjax.msa.softmax_cross_entropy",
    "relaxjax.msa.squared_error",
}


@pytest.mark.parametrize(
    "package", ["relaxjax", "relaxjax.diagnostics", "relaxjax.pde", "relaxjax.msa"]
)
def test_functions_implementing_the_papers_cite_them(package):
    """Every public function of the packages that implement the papers' equations has a
    ``References:`` section (the paper, and the project's docs page)."""
    module = importlib.import_module(package)
    missing = [
        f"{package}.{name}"
        for name in module.__all__
        if inspect.isfunction(getattr(module, name))
        and f"{package}.{name}" not in UTILITIES
        and "References:" not in (getattr(module, name).__doc__ or "")
    ]
    assert not missing, missing
