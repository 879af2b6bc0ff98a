"""XLA:CPU settings the training command and the benchmarks apply before JAX starts.

XLA's CPU backend runs independent operations of a compiled program
concurrently (its "concurrency-optimized scheduler"). On a small machine that
oversubscribes the cores: on 2 cores one LeNet gradient (batch 128) took
23 ms with it and 13 ms without (inside ``lax.scan`` bodies, which run
sequentially anyway, 13 ms either way; ``benchmarks/results/inner_loop.md``
times both baselines). The setting is a process-wide XLA flag, read when
the backend starts, so it cannot be set per ``jax.jit``; ``relaxjax train``
and the benchmark scripts call :func:`prefer_sequential_cpu_scheduler` first.
In your own scripts call it before the first JAX computation, or set
``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false``.
Only measured on 2 cores: on many-core machines compare both.
"""

from __future__ import annotations

import os

__all__ = ["SCHEDULER_FLAG", "prefer_sequential_cpu_scheduler"]

SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def prefer_sequential_cpu_scheduler() -> bool:
    """Adds ``SCHEDULER_FLAG=false`` to ``XLA_FLAGS`` unless it is already set there.

    Returns whether the flag was added. It has no effect once a JAX backend
    has started (the flags are read once), and none on GPU/TPU computations.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if SCHEDULER_FLAG in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {SCHEDULER_FLAG}=false".strip()
    return True
