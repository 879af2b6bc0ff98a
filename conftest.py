"""pytest's configuration for the whole checkout: the tests under tests/ and the doctests
of the docstrings under relaxjax/ (``--doctest-modules``, pyproject.toml).

The suite compiles with the XLA setting that ``tests/conftest.py`` sets and explains
(``TEST_XLA_FLAGS``, read before any JAX backend starts). pytest loads that file only for
tests under tests/, so ``python -m pytest relaxjax`` (the doctests alone) would compile at
XLA's default level. This file applies the same setting for every test under the
repository root with that file's own helper, loaded from its path (pytest imports every
``conftest.py`` as a module named ``conftest``, so one cannot import the other by name).
Applying it twice is harmless: a level already in ``XLA_FLAGS`` is kept. The fixtures of
``tests/conftest.py`` are untouched; pytest loads that file for tests/ as before.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "relaxjax_tests_conftest", Path(__file__).parent / "tests" / "conftest.py"
)
_tests_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tests_conftest)

os.environ["XLA_FLAGS"] = _tests_conftest.with_test_flags(os.environ.get("XLA_FLAGS", ""))
