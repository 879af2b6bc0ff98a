"""The suite's own compilation cache (``tests/conftest.py``): on in this process and in
child Pythons, in a folder of this session, never the user's cache directory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from conftest import SUITE_CACHE

pytestmark = pytest.mark.skipif(not SUITE_CACHE, reason="RELAXJAX_TEST_COMPILATION_CACHE=0")


def _entries(folder):
    return {p.name for p in folder.iterdir() if p.name.endswith("-cache")}


def test_a_program_compiled_here_is_written_to_the_session_folder(suite_compilation_cache):
    assert jax.config.jax_compilation_cache_dir == str(suite_compilation_cache)
    before = _entries(suite_compilation_cache)
    jax.jit(lambda x: jnp.cos(x) * 7.25 - x)(jnp.arange(11.0)).block_until_ready()
    assert _entries(suite_compilation_cache) - before


@pytest.mark.subprocess
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the child runs on JAX's CPU backend")
def test_a_child_python_reads_and_writes_the_session_folder(suite_compilation_cache, run_python):
    """The child finds the folder through JAX's own variables and reads back what this
    process compiled: its compilation of the same program is a cache hit."""
    program = "lambda x: jnp.tanh(x) * 3.5 + x"  # the child compiles this same text
    jax.jit(lambda x: jnp.tanh(x) * 3.5 + x)(jnp.arange(13.0)).block_until_ready()
    script = f"""
import jax, jax.numpy as jnp
from jax import monitoring
events = []
monitoring.register_event_listener(lambda event, **_: events.append(event))
x = jnp.arange(13.0)
del events[:]  # only what compiling the program asks of the cache
jax.jit({program})(x).block_until_ready()
print(jax.config.jax_compilation_cache_dir, events.count("/jax/compilation_cache/cache_hits"),
      events.count("/jax/compilation_cache/compile_requests_use_cache"))
"""
    done = run_python(script, timeout=120)
    assert done.returncode == 0, done.stderr
    folder, hits, requests = done.stdout.split()
    assert folder == str(suite_compilation_cache)
    assert int(requests) >= 1 and int(hits) == int(requests)  # the program came from disk
