"""XLA:CPU settings the training command and the benchmarks apply before JAX starts.

Both are process-wide XLA flags, read once when the backend starts, so they
cannot be set per ``jax.jit``; ``relaxjax train`` and the benchmark scripts
call :func:`apply_cpu_settings` first. In your own scripts call it before the
first JAX computation, or set the flags in ``XLA_FLAGS`` yourself (a flag
already there is left as it is). Neither affects GPU/TPU computations.

* **Sequential scheduler** (:func:`prefer_sequential_cpu_scheduler`). XLA's
  CPU backend runs independent operations of a compiled program concurrently
  (its "concurrency-optimized scheduler"). On a small machine that
  oversubscribes the cores: on 2 cores one LeNet gradient (batch 128) took
  23 ms with it and 13 ms without (inside ``lax.scan`` bodies, which run
  sequentially anyway, 13 ms either way; ``benchmarks/results/inner_loop.md``
  times both baselines). Only measured on 2 cores: on many-core machines
  compare both.
* **512-bit vectors on AVX-512 CPUs** (:func:`prefer_wide_vectors`). XLA
  compiles elementwise loops for 256-bit vectors by default. The Langevin
  noise draw (a hash and an inverse erf per parameter) is such a loop, bound
  by its arithmetic rather than by memory: on a 2-core AVX-512 Xeon, 512-bit
  vectors drew it for ``mnistfc`` in 0.53x the time of 256-bit ones and made
  the noisy step 0.93x as long, with the same values; LeNet's steps were
  unchanged (every step compiled with each width and timed in one process:
  ``benchmarks/xla_cpu_flags.py --in-process``; across alternated processes
  the draw took 1.19 against 2.12 ms, ``inner_loop_xla_cpu_flags.md``). Some
  older AVX-512 CPUs lower their clock under 512-bit code;
  ``XLA_FLAGS=--xla_cpu_prefer_vector_width=256`` keeps XLA's default.
* **Not set: LLVM loop interleaving.** LLVM vectorizes the draw's loop one
  vector per iteration, and the loop is bound by the latency of each weight's
  chain of dependent operations. LLVM's ``-force-vector-interleave=N``
  (through ``--xla_backend_extra_options``) runs N independent vectors per
  iteration: with N = 8 the ``mnistfc`` draw alone took 1.36 ms instead of
  2.42 ms, but the plain SGD steps slowed from 9.8 to 11.5 ms per gradient and
  compilation from 5.4 to 6.8 s, so the noisy step itself did not get faster
  (12.9 against 13.0 ms per gradient). With N = 4 the noisy step was faster
  (11.1 ms) but the noise-free one slower (1.12x against 0.98x its SGD steps):
  mixed (``benchmarks/results/inner_loop_xla_cpu_interleave.md``, 3 processes
  per setting). It is also an LLVM option that the GPU compilers read.
  relaxjax does not set it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "SCHEDULER_FLAG",
    "VECTOR_WIDTH_FLAG",
    "apply_cpu_settings",
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


def apply_cpu_settings() -> list[str]:
    """Both settings above; returns the flags it added to ``XLA_FLAGS``."""
    added = [SCHEDULER_FLAG] if prefer_sequential_cpu_scheduler() else []
    return added + ([VECTOR_WIDTH_FLAG] if prefer_wide_vectors() else [])
