"""Verified, atomic downloads.

A file is streamed into a temporary file next to its destination, checked by
a caller-supplied ``verify`` function (e.g. an MD5 comparison), and only then
moved into place with ``os.replace``. A failed checksum, a short transfer or an
interruption (including ``KeyboardInterrupt``) removes the temporary file, so
no partial download ever survives under the final name.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .errors import DataError

__all__ = ["DownloadError", "Opener", "download", "urlopen"]

_CHUNK = 1 << 16

Opener = Callable[[str, float], Any]
"""``opener(url, timeout)`` returning a context manager with ``.read(n)`` (like ``urlopen``)."""


class DownloadError(DataError):
    """No URL delivered a file that passed verification. ``errors`` lists ``(url, exception)``."""

    def __init__(self, message: str, errors: Sequence[tuple[str, BaseException]]):
        super().__init__(message)
        self.errors = list(errors)


def urlopen(url: str, timeout: float) -> Any:
    """Default opener: :func:`urllib.request.urlopen` (handles http, https and file URLs)."""
    req = urllib.request.Request(url, headers={"User-Agent": "relaxjax"})
    return urllib.request.urlopen(req, timeout=timeout)


def _content_length(resp: Any) -> int | None:
    headers = getattr(resp, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _fetch_one(
    url: str,
    dest: Path,
    verify: Callable[[Path], None] | None,
    opener: Opener,
    timeout: float,
    progress: bool,
) -> None:
    with atomic_write(dest) as (f, tmp):
        with opener(url, timeout) as resp:
            total = _content_length(resp)
            bar = _progress_bar(total, dest.name) if progress else None
            received = 0
            try:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        if total is not None and received != total:
            raise DataError(f"{url}: transfer interrupted after {received} of {total} bytes")
        f.flush()
        if verify is not None:
            verify(tmp)


def _progress_bar(total: int | None, name: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None, leave=False)


def download(
    urls: str | Sequence[str],
    dest: str | os.PathLike,
    *,
    verify: Callable[[Path], None] | None = None,
    opener: Opener | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download the first of ``urls`` that works to ``dest``, verified and atomically.

    Args:
      urls: one URL or mirrors tried in order (``http(s)://`` or ``file://``).
      dest: final path; its directory is created if needed.
      verify: called with the complete temporary file; raises (e.g.
        :class:`~relaxjax.data.errors.ChecksumError`) to reject it, in which
        case the next mirror is tried.
      opener: replaces :func:`urlopen` (tests, proxies).
      timeout: socket timeout in seconds.
      progress: show a tqdm bar when attached to a terminal.

    Returns:
      ``dest`` as a :class:`~pathlib.Path`.

    Raises:
      DownloadError: every URL failed; the message lists each failure.

    Example:
      A ``file://`` mirror after one that does not exist:

      >>> import tempfile
      >>> from pathlib import Path
      >>> from relaxjax import data
      >>> root = Path(tempfile.mkdtemp())
      >>> _ = (root / "source.txt").write_text("hello")
      >>> urls = [(root / "missing.txt").as_uri(), (root / "source.txt").as_uri()]
      >>> dest = data.download(urls, root / "copy" / "hello.txt", progress=False)
      >>> dest.read_text(), sorted(p.name for p in dest.parent.iterdir())  # no temporary left
      ('hello', ['hello.txt'])
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    opener = opener or urlopen
    errors: list[tuple[str, BaseException]] = []
    for url in urls:
        try:
            _fetch_one(url, dest, verify, opener, timeout, progress)
            return dest
        except Exception as e:  # noqa: BLE001 - any failure means: try the next mirror
            errors.append((url, e))
    detail = "\n".join(f"  {u}: {type(e).__name__}: {e}" for u, e in errors)
    raise DownloadError(f"could not download {dest.name}:\n{detail}", errors)
