"""Fixtures shared by the test modules, and the XLA setting the tests compile with.

Most of the suite's time is XLA compiling small programs, and much of that is LLVM
optimizing the generated code. So the tests (and the child Pythons and notebook kernels
they start) compile at LLVM optimization level 1 instead of XLA:CPU's default 2
(``TEST_XLA_FLAGS``): the same XLA programs (every HLO pass still runs), less time in
LLVM. On a 2-core machine the suite took 500-570 s instead of 718 s, and
``tests/test_xla_cpu.py`` checks that LeNet's gradients at the level the suite uses equal
those at level 2. Level 0 would save more but is not trustworthy: with it, XLA:CPU
(jaxlib 0.10.2) computed LeNet's first-block gradients (window max after BatchNorm) off by
up to 0.10 from level 2 (``XLA_FLAGS=--xla_backend_optimization_level=0 python -m pytest
tests/test_xla_cpu.py -k optimization_level`` lists them), and
``test_lenet_convolution_implementations_agree`` failed. To run the tests at XLA's default
level, set the flag yourself, e.g.
``XLA_FLAGS=--xla_backend_optimization_level=2 python -m pytest -q``; a level already in
``XLA_FLAGS`` is left as it is. Timings belong in ``benchmarks/``, which never sets it.

The test processes also take the XLA:CPU settings of ``relaxjax train`` and the
benchmarks (:func:`relaxjax.cpu.apply_cpu_settings`: the scheduler, and 512-bit vectors
on AVX-512 CPUs) when this file is imported, before any backend starts, and pass them
to their child Pythons. So a computation in a test process and the same one in a child
(a killed run resumed in-process, a second ``jax.distributed`` process) compile alike
and agree bit for bit, whichever tests started JAX first.

JAX's persistent compilation cache, which ``relaxjax train`` turns on by default, is
off for the suite (``RELAXJAX_NO_COMPILATION_CACHE=1``), so the tests do not read
programs another run compiled; where a test turns it on without a folder, it goes to
one of the session's (``RELAXJAX_COMPILATION_CACHE_DIR``), never the user's cache
directory. The tests of the cache turn it on in their own folders.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from relaxjax.cpu import xla_flags

OPTIMIZATION_LEVEL_FLAG = "--xla_backend_optimization_level"
TEST_XLA_FLAGS = f"{OPTIMIZATION_LEVEL_FLAG}=1"


def with_test_flags(flags: str) -> str:
    return flags if OPTIMIZATION_LEVEL_FLAG in flags else f"{flags} {TEST_XLA_FLAGS}".strip()


# Set when pytest imports this file: before any test module starts a JAX backend.
os.environ["XLA_FLAGS"] = with_test_flags(os.environ.get("XLA_FLAGS", ""))
xla_flags.apply_cpu_settings()
os.environ.setdefault("RELAXJAX_NO_COMPILATION_CACHE", "1")

# The flags a child Python inherits: the level and relaxjax's CPU settings.
INHERITED_FLAGS = (OPTIMIZATION_LEVEL_FLAG, xla_flags.SCHEDULER_FLAG, xla_flags.VECTOR_WIDTH_FLAG)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache_in_a_temporary_folder(tmp_path_factory):
    """A command or notebook that turns the compilation cache on without saying where
    (``--compilation-cache``) writes to a folder of this session, not the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("jax-compilation")
        mp.setenv("RELAXJAX_COMPILATION_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture
def cpu_subprocess_env() -> dict[str, str]:
    """Environment for a child Python on JAX's CPU backend: of the parent's XLA_FLAGS only
    the tests' optimization level (``TEST_XLA_FLAGS``, or the level the user chose),
    first, and relaxjax's CPU settings (``INHERITED_FLAGS``).

    The child scripts add their own flags (e.g. four simulated host devices) before
    importing JAX; other inherited flags must not override them.
    """
    flags = os.environ["XLA_FLAGS"].split()
    kept = [f for prefix in INHERITED_FLAGS for f in flags if f.startswith(f"{prefix}=")]
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(kept))


@pytest.fixture
def load_benchmark():
    """``load_benchmark(name)``: the module of ``benchmarks/<name>.py`` (``benchmarks/`` is
    not a package: each script is a file run from the repository root)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load
