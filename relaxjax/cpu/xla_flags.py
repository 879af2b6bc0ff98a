"""XLA:CPU settings the training command and the benchmarks apply before JAX starts.

Both are process-wide XLA flags, read once when the backend starts, so they
cannot be set per ``jax.jit``; ``relaxjax train`` and the benchmark scripts
call :func:`apply_cpu_settings` first. In your own scripts call it before the
first JAX computation, or set the flags in ``XLA_FLAGS`` yourself (a flag
already there is left as it is); called later, it warns. Neither affects
GPU/TPU computations.

* **Sequential scheduler** (:func:`prefer_sequential_cpu_scheduler`). XLA's
  CPU backend runs independent operations of a compiled program concurrently
  (its "concurrency-optimized scheduler"). On a machine with few cores that
  oversubscribes them, and a gradient outside a loop body runs slower than
  with the sequential schedule (loop bodies run sequentially either way).
  It was measured on 2 cores; on many-core machines compare both.
* **512-bit vectors on AVX-512 CPUs** (:func:`prefer_wide_vectors`). XLA
  compiles elementwise loops for 256-bit vectors by default. The Langevin
  noise draw (a hash and an inverse erf per parameter) is such a loop, bound
  by its arithmetic rather than by memory, so twice as wide vectors draw it in
  about half the time, with the same values. Some older AVX-512 CPUs lower
  their clock under 512-bit code; ``XLA_FLAGS=--xla_cpu_prefer_vector_width=256``
  keeps XLA's default.
* **Not set: LLVM loop interleaving** (``-force-vector-interleave=N`` through
  ``--xla_backend_extra_options``). It shortens the draw's dependency chains but
  slows the other loops of the step and its compilation, with no net gain for
  the noisy step; it is also an LLVM option that the GPU compilers read.

The measurements behind each choice are in ``benchmarks/RESULTS.md``
(``benchmarks/xla_cpu_flags.py``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

__all__ = [
    "SCHEDULER_FLAG",
    "VECTOR_WIDTH_FLAG",
    "apply_cpu_settings",
    "backend_started",
    "has_avx512",
    "prefer_sequential_cpu_scheduler",
    "prefer_wide_vectors",
]

SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width"


def _add_flag(flag: str, value: str) -> bool:
    """Appends ``flag=value`` to ``XLA_FLAGS`` unless ``flag`` is set there already."""
    flags = os.environ.get("XLA_FLAGS", "")
    if flag in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {flag}={value}".strip()
    return True


def prefer_sequential_cpu_scheduler() -> bool:
    """Adds ``SCHEDULER_FLAG=false`` to ``XLA_FLAGS`` unless it is already set there.

    Returns whether the flag was added. It has no effect once a JAX backend
    has started (the flags are read once), and none on GPU/TPU computations.
    """
    return _add_flag(SCHEDULER_FLAG, "false")


def has_avx512(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has AVX-512F, from ``/proc/cpuinfo`` (``False`` where unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return "avx512f" in flags.split(":", 1)[-1].split()


def prefer_wide_vectors() -> bool:
    """Adds ``VECTOR_WIDTH_FLAG=512`` on AVX-512 CPUs unless the flag is already set.

    Returns whether the flag was added. Like the scheduler flag, it only acts
    if set before the backend starts.
    """
    return has_avx512() and _add_flag(VECTOR_WIDTH_FLAG, "512")


def backend_started() -> bool:
    """Whether JAX has already started a backend in this process (then ``XLA_FLAGS`` is read)."""
    from jax._src import xla_bridge  # no public API tells; both spellings across versions

    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if started is not None else bool(getattr(xla_bridge, "_backends", {}))


def apply_cpu_settings() -> list[str]:
    """Adds both settings above to ``XLA_FLAGS`` (flags already there are kept).

    Call it before the first JAX computation: XLA reads ``XLA_FLAGS`` once, when
    JAX starts its backend. Called later, it still updates ``XLA_FLAGS`` (for child
    processes) but warns that this process keeps its flags.

    Returns:
      The flags it added (none when the user already set them, or on a CPU
      without AVX-512 for the vector width).

    Warns:
      RuntimeWarning: if JAX's backend had already started.

    Example:
      >>> from relaxjax.cpu import apply_cpu_settings
      >>> isinstance(apply_cpu_settings(), list)  # doctest: +SKIP
      True
    """
    started = backend_started()
    added = [SCHEDULER_FLAG] if prefer_sequential_cpu_scheduler() else []
    added += [VECTOR_WIDTH_FLAG] if prefer_wide_vectors() else []
    if started and added:
        warnings.warn(
            f"apply_cpu_settings() called after JAX started its backend: {', '.join(added)} "
            "take no effect in this process (XLA reads XLA_FLAGS once, at start). Call it "
            "before the first JAX computation, or set XLA_FLAGS before starting Python.",
            RuntimeWarning,
            stacklevel=2,
        )
    return added
