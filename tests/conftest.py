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
on for the suite in a folder of this session (``suite_compilation_cache``): much of the
suite compiles the same small programs again (the same network's step in many tests,
in child Pythons, in notebook kernels), and a program already compiled in the session is
read from disk instead. The folder is new for every session, so the tests never read
programs another run compiled, nor the user's cache directory; each pytest-xdist worker
has its own (children write it only while their worker waits for them). The tests of
the cache turn it on in their own folders; after every test the session's settings
hold again. On a 2-core machine the suite took 492 s with it and 555 s without.
``RELAXJAX_TEST_COMPILATION_CACHE=0`` runs the suite without it
(``RELAXJAX_NO_COMPILATION_CACHE=1`` for the commands and notebooks, as before).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
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
# The commands the doctests under relaxjax/ run (outside the session's fixtures' reach)
# must not turn the cache on in the user's cache directory; the session fixture sets it.
os.environ.setdefault("RELAXJAX_NO_COMPILATION_CACHE", "1")

SUITE_CACHE_ENV = "RELAXJAX_TEST_COMPILATION_CACHE"
SUITE_CACHE = os.environ.get(SUITE_CACHE_ENV, "1").strip().lower() not in ("0", "false", "no")
# The JAX settings of the suite's cache, also given to child Pythons as JAX's variables.
SUITE_CACHE_SETTINGS = {
    "jax_enable_compilation_cache": True,
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
}

# The flags a child Python inherits: the level and relaxjax's CPU settings.
INHERITED_FLAGS = (OPTIMIZATION_LEVEL_FLAG, xla_flags.SCHEDULER_FLAG, xla_flags.VECTOR_WIDTH_FLAG)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def suite_compilation_cache(_suite_compilation_settings) -> Path:
    """The session's compilation cache folder (this worker's)."""
    return _suite_compilation_settings[0]


@pytest.fixture(scope="session", autouse=True)
def _suite_compilation_settings(tmp_path_factory):
    """The session's cache folder, on for this process, for child Pythons (JAX's
    ``JAX_COMPILATION_CACHE_DIR`` and thresholds) and for commands and notebooks
    (``RELAXJAX_COMPILATION_CACHE_DIR``), unless ``RELAXJAX_TEST_COMPILATION_CACHE=0``.
    Off, a command or notebook that turns the cache on without saying where
    (``--compilation-cache``) still writes here, not to the user's cache. Yields the
    folder and JAX's cache settings as the session set them."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    folder = tmp_path_factory.getbasetemp() / "jax-compilation"
    folder.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELAXJAX_COMPILATION_CACHE_DIR", str(folder))
        mp.setenv("RELAXJAX_NO_COMPILATION_CACHE", "0" if SUITE_CACHE else "1")
        if SUITE_CACHE:
            settings = {"jax_compilation_cache_dir": str(folder), **SUITE_CACHE_SETTINGS}
            for name, value in settings.items():
                text = str(value).lower() if isinstance(value, bool) else str(value)
                mp.setenv(name.upper(), text)
                jax.config.update(name, value)
            compilation_cache.reset_cache()
        names = ("jax_compilation_cache_dir", *SUITE_CACHE_SETTINGS)
        yield folder, {name: getattr(jax.config, name) for name in names}


def _restore_cache_settings(settings: dict) -> None:
    """JAX's cache settings as ``settings`` has them, if anything changed them."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if any(getattr(jax.config, name) != value for name, value in settings.items()):
        for name, value in settings.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()


@pytest.fixture(autouse=True)
def _suite_compilation_settings_restored(_suite_compilation_settings):
    """Before and after every test, the session's settings, whatever ran in between (the
    cache's own tests, a benchmark given its own folder, a doctest that turns it off)."""
    _restore_cache_settings(_suite_compilation_settings[1])
    yield
    _restore_cache_settings(_suite_compilation_settings[1])


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
def run_python(cpu_subprocess_env):
    """``run_python(script, *args, timeout=300, env=None, **kwargs)``: ``python -c script
    args`` on JAX's CPU backend (``env`` defaults to :func:`cpu_subprocess_env`), its
    output captured as text; the :class:`subprocess.CompletedProcess`."""

    def run(script: str, *args, timeout: float = 300, env=None, **kwargs):
        return subprocess.run(
            [sys.executable, "-c", script, *map(str, args)],
            env=cpu_subprocess_env if env is None else env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    return run


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
