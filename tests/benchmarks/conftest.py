"""The benchmark scripts, loaded as modules by the smoke tests (``benchmarks/`` is not a
package: each script is a file run from the repository root)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def load_benchmark():
    """``load_benchmark(name)``: the module of ``benchmarks/<name>.py``."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load
