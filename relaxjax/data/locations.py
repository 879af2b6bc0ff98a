"""Where data sets are looked for, and where downloads and caches go.

Search order for a data set's files (first match wins):

1. the explicit ``data_dir`` argument;
2. the directories in the environment variable ``RELAXJAX_DATA_DIR``
   (``os.pathsep``-separated);
3. the per-user cache directory (:func:`cache_dir`).

Inside each of these roots a data set is looked for in ``<root>/<subdir>``
(e.g. ``<root>/mnist``) and then in ``<root>`` itself. Downloads and decoded
caches are written under the cache directory, never into ``data_dir``
(which may be read-only).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_DIR_ENV", "CACHE_DIR_ENV", "cache_dir", "search_roots", "candidate_dirs"]

#: The environment variable of extra data directories (``os.pathsep``-separated).
DATA_DIR_ENV = "RELAXJAX_DATA_DIR"
#: The environment variable that overrides the per-user cache directory.
CACHE_DIR_ENV = "RELAXJAX_CACHE_DIR"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The per-user cache directory.

    ``override`` if given, else ``$RELAXJAX_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/relaxjax``, else ``~/.cache/relaxjax``. Not created here.

    Args:
      override: a directory to use instead (``~`` expanded).

    Returns:
      The cache directory, a :class:`~pathlib.Path`.

    Example:
      >>> import os
      >>> from unittest import mock
      >>> from relaxjax import data
      >>> data.cache_dir("/tmp/my-cache").as_posix()
      '/tmp/my-cache'
      >>> with mock.patch.dict(os.environ, {data.CACHE_DIR_ENV: "/data/cache"}):
      ...     data.cache_dir().as_posix()
      '/data/cache'
    """
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "relaxjax"


def search_roots(
    data_dir: str | os.PathLike | None = None, cache: str | os.PathLike | None = None
) -> list[Path]:
    """Root directories to search, in priority order (duplicates removed)."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        roots.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    roots.append(cache_dir(cache))
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def candidate_dirs(
    subdir: str,
    data_dir: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
) -> list[Path]:
    """``<root>/<subdir>`` then ``<root>`` for every root of :func:`search_roots`."""
    dirs: list[Path] = []
    for root in search_roots(data_dir, cache):
        for d in (root / subdir, root):
            if d not in dirs:
                dirs.append(d)
    return dirs


def missing_message(
    what: str,
    files: list[str],
    dirs: list[Path],
    download_dir: Path | None = None,
    download_errors: str | None = None,
) -> str:
    """Explain which files are missing and where to put them (offline instructions)."""
    lines = [f"{what} not found.", "Looked in:"]
    lines += [f"  {d}" for d in dirs]
    if download_errors:
        lines += ["The download failed:", download_errors]
    elif download_dir is None:
        lines.append("Downloading is disabled (download=False).")
    lines.append(
        f"To use it offline, put {', '.join(files)} into one of the directories above "
        f"(e.g. {dirs[0]}), or point data_dir=... or ${DATA_DIR_ENV} at a directory holding them."
    )
    return "\n".join(lines)
