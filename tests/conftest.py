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
"""

from __future__ import annotations

import os

import pytest

OPTIMIZATION_LEVEL_FLAG = "--xla_backend_optimization_level"
TEST_XLA_FLAGS = f"{OPTIMIZATION_LEVEL_FLAG}=1"


def with_test_flags(flags: str) -> str:
    return flags if OPTIMIZATION_LEVEL_FLAG in flags else f"{flags} {TEST_XLA_FLAGS}".strip()


# Set when pytest imports this file: before any test module starts a JAX backend.
os.environ["XLA_FLAGS"] = with_test_flags(os.environ.get("XLA_FLAGS", ""))


@pytest.fixture
def cpu_subprocess_env() -> dict[str, str]:
    """Environment for a child Python on JAX's CPU backend: of the parent's XLA_FLAGS only
    the tests' optimization level (``TEST_XLA_FLAGS``, or the level the user chose).

    The child scripts add their own flags (e.g. four simulated host devices) before
    importing JAX; other inherited flags must not override them.
    """
    level = [f for f in os.environ["XLA_FLAGS"].split() if f.startswith(OPTIMIZATION_LEVEL_FLAG)]
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(level))
