"""JAX's persistent compilation cache for warm starts of ``relaxjax train`` and notebooks.

Every start of a training run compiles its jitted functions anew (the outer step takes
seconds on MNIST and tens of seconds on a convolutional network); with the persistent
compilation cache a later start with the same shapes and settings reads the compiled
programs from disk instead. ``relaxjax train`` turns it on by default, in the
``jax-compilation`` folder of relaxjax's cache directory
(:func:`relaxjax.data.cache_dir`: ``$RELAXJAX_CACHE_DIR``, else
``$XDG_CACHE_HOME/relaxjax``, else ``~/.cache/relaxjax``).

Where it goes, first match wins: the ``path`` argument (the command's
``--compilation-cache-dir``), ``$RELAXJAX_COMPILATION_CACHE_DIR``, JAX's own
``$JAX_COMPILATION_CACHE_DIR`` (or ``jax_compilation_cache_dir`` set before), then the
default above. ``--no-compilation-cache`` or ``RELAXJAX_NO_COMPILATION_CACHE=1`` turn it
off. Every compiled program is cached, however fast it compiled (JAX's default skips
those under a second, which on a CPU are most of a run's start-up), and the entries are
keyed by the program, the JAX version, the device and the compiler flags, so a changed
setting compiles anew rather than reading a stale entry. In a multi-process run only
process 0 writes entries (JAX's rule); every process reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from relaxjax.data.locations import cache_dir

__all__ = [
    "COMPILATION_CACHE_DIR_ENV",
    "NO_COMPILATION_CACHE_ENV",
    "compilation_cache_dir",
    "disable_compilation_cache",
    "enable_compilation_cache",
]

COMPILATION_CACHE_DIR_ENV = "RELAXJAX_COMPILATION_CACHE_DIR"
"""The environment variable that relocates the compilation cache."""
NO_COMPILATION_CACHE_ENV = "RELAXJAX_NO_COMPILATION_CACHE"
"""The environment variable that turns the command's compilation cache off (``1``)."""
SUBDIR = "jax-compilation"


def compilation_cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where the compilation cache goes (not created here).

    Args:
      path: a directory to use (``~`` expanded); default: ``$RELAXJAX_COMPILATION_CACHE_DIR``,
        else JAX's configured ``jax_compilation_cache_dir`` (``$JAX_COMPILATION_CACHE_DIR``),
        else ``<relaxjax.data.cache_dir()>/jax-compilation``.

    Returns:
      The directory, a :class:`~pathlib.Path`.

    Example:
      >>> import os
      >>> from unittest import mock
      >>> from relaxjax.train import compilation_cache_dir
      >>> compilation_cache_dir("/tmp/jit").as_posix()
      '/tmp/jit'
      >>> with mock.patch.dict(os.environ, {"RELAXJAX_COMPILATION_CACHE_DIR": "/data/jit"}):
      ...     compilation_cache_dir().as_posix()
      '/data/jit'
    """
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(COMPILATION_CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    configured = jax.config.jax_compilation_cache_dir
    if configured and configured != _enabled_dir:
        return Path(configured).expanduser()
    return cache_dir() / SUBDIR


_enabled_dir: str | None = None  # the directory this module set, if any


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Turns JAX's persistent compilation cache on, in ``path`` or relaxjax's default.

    Call it before the first compilation you want cached (in a notebook: its first
    cell). Every program is cached whatever its compile time; calling it again with
    another directory switches to that one.

    Args:
      path: the cache directory (see :func:`compilation_cache_dir` for the default).

    Returns:
      The directory, created if needed.

    References:
      ``docs/cli.md`` §1.5 (warm starts).

    Example:
      >>> import tempfile
      >>> import jax, jax.numpy as jnp
      >>> from pathlib import Path
      >>> from relaxjax.train import disable_compilation_cache, enable_compilation_cache
      >>> folder = enable_compilation_cache(Path(tempfile.mkdtemp()) / "jit")
      >>> _ = jax.jit(lambda x: jnp.sin(x) * 3.0 + 0.5)(jnp.arange(7.0)).block_until_ready()
      >>> any(folder.iterdir())
      True
      >>> disable_compilation_cache()
    """
    global _enabled_dir
    directory = compilation_cache_dir(path)
    directory.mkdir(parents=True, exist_ok=True)
    target = str(directory)
    jax.config.update("jax_compilation_cache_dir", target)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_enable_compilation_cache", True)
    _reset()
    _enabled_dir = target
    return directory


def disable_compilation_cache() -> None:
    """Turns JAX's persistent compilation cache off for this process (nothing read or written).

    Returns:
      None.

    Example:
      >>> import jax
      >>> from relaxjax.train import disable_compilation_cache
      >>> disable_compilation_cache()
      >>> jax.config.jax_enable_compilation_cache
      False
    """
    jax.config.update("jax_enable_compilation_cache", False)
    _reset()


def _reset() -> None:
    """Makes JAX read the settings again at its next compilation: it decides once whether
    to use the cache, and an opened cache keeps its directory, until this reset."""
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()


def cache_wanted(enabled: bool | None) -> bool:
    """Whether the command uses the cache: ``enabled`` if given (``--[no-]compilation-cache``),
    else on unless ``$RELAXJAX_NO_COMPILATION_CACHE`` is set to something other than
    ``0``, ``false``, ``no`` or the empty string."""
    if enabled is not None:
        return enabled
    return os.environ.get(NO_COMPILATION_CACHE_ENV, "").strip().lower() in ("", "0", "false", "no")


def apply_cache_options(enabled: bool | None, path: str | os.PathLike | None) -> Path | None:
    """What ``relaxjax train`` does with ``--[no-]compilation-cache`` and
    ``--compilation-cache-dir``: turns the cache on (returning its directory) or off
    (None). A directory that cannot be created leaves the cache off with a warning;
    the run goes on, compiling as it would without one."""
    if not cache_wanted(enabled):
        disable_compilation_cache()
        return None
    try:
        return enable_compilation_cache(path)
    except OSError as error:
        import sys

        disable_compilation_cache()
        print(
            f"relaxjax train: warning: no compilation cache ({error}); compiling from scratch",
            file=sys.stderr,
        )
        return None
