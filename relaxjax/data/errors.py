"""Exceptions raised by :mod:`relaxjax.data`.

Every problem with a data file (missing, truncated, corrupt, wrong checksum,
unsafe pickle) is reported as a :class:`DataError` whose message names the file
and the problem, instead of a low-level numpy/zlib/pickle traceback.
"""

from __future__ import annotations

__all__ = ["DataError", "DataNotFoundError", "ChecksumError", "UnsafePickleError"]


class DataError(ValueError):
    """A data file is missing, malformed, truncated or fails verification."""


class DataNotFoundError(DataError):
    """A data set is not on disk and could not (or may not) be downloaded.

    The message lists the directories searched and the files to put there.
    """


class ChecksumError(DataError):
    """A file's digest differs from the published one."""


class UnsafePickleError(DataError):
    """A pickle asked for a global that the restricted unpickler refuses."""
