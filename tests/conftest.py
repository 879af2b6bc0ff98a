"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def cpu_subprocess_env() -> dict[str, str]:
    """Environment for a child Python on JAX's CPU backend, without the parent's XLA_FLAGS.

    The child scripts set their own flags (e.g. four simulated host devices) before
    importing JAX; an inherited ``XLA_FLAGS`` must not override them.
    """
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return env
