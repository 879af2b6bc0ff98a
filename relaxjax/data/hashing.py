"""Streaming file digests (MD5 for the official MNIST/CIFAR checksums, SHA-256 for caches)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from .errors import ChecksumError

__all__ = ["digest_bytes", "digest_chunks", "file_digest", "check_digest"]

_CHUNK = 1 << 20


def digest_chunks(chunks: Iterable[bytes], algorithm: str = "md5") -> str:
    """Hex digest of the concatenation of ``chunks``."""
    h = hashlib.new(algorithm)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def digest_bytes(data: bytes, algorithm: str = "md5") -> str:
    """Hex digest of ``data``."""
    return hashlib.new(algorithm, data).hexdigest()


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return digest_chunks(iter(lambda: f.read(_CHUNK), b""), algorithm)


def check_digest(actual: str, expected: str, what: str, algorithm: str = "md5") -> None:
    """Raise :class:`ChecksumError` naming ``what`` when the digests differ."""
    if actual.lower() != expected.lower():
        raise ChecksumError(
            f"{what}: {algorithm} checksum mismatch (expected {expected}, got {actual}); "
            "the file is corrupt, truncated or not the official one"
        )
