"""Atomic file creation: write to a temporary file in the target directory, then ``os.replace``.

A reader never sees a half-written file, and an interrupted writer (exception,
``KeyboardInterrupt``) leaves nothing behind but, at worst, nothing at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_copy", "atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[tuple[BinaryIO, Path]]:
    """Context manager yielding ``(file, temp_path)`` that becomes ``path`` on success.

    The temporary file lives in ``path``'s directory (created if needed) so the
    final ``os.replace`` is atomic on POSIX and Windows. If the body raises
    (including ``KeyboardInterrupt``), the temporary file is removed and
    ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp_path
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0o600; data files are not secret
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copies the file ``source`` to ``path`` through :func:`atomic_write`."""
    with atomic_write(path) as (target, _), open(source, "rb") as f:
        shutil.copyfileobj(f, target)
