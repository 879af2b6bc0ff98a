"""Strict reader for the IDX format of the MNIST files (LeCun et al.).

Layout: two zero bytes, a type code (``0x08`` = unsigned byte, ...), the number
of dimensions ``d``, then ``d`` big-endian uint32 sizes and the row-major data.
The MNIST "magic numbers" are ``0x00000803`` (images) and ``0x00000801``
(labels). The reader checks the header and that the file holds *exactly* the
bytes the header announces; gzip-compressed files are recognised by their
magic bytes and decompressed in memory.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError
from .hashing import check_digest, digest_bytes

__all__ = ["IDX_DTYPES", "parse_idx", "encode_idx", "read_maybe_gzip", "read_idx"]

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file into a native-endian array.

    Args:
      data: the file's bytes.
      name: the file's name, for error messages.

    Returns:
      The array, of the header's shape and dtype.

    Raises:
      DataError: bad magic number / type code, truncated header or data, or
        trailing bytes; the message starts with ``name``.

    Example:
      >>> from relaxjax import data
      >>> header = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
      >>> data.parse_idx(header + bytes(range(6))).tolist()
      [[0, 1, 2], [3, 4, 5]]
      >>> data.parse_idx(header + bytes(5), "images.idx")  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      relaxjax.data.errors.DataError: images.idx: IDX file truncated: 17 bytes, but ...
    """
    if len(data) < 4:
        raise DataError(f"{name}: truncated IDX file ({len(data)} bytes; the header needs 4)")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES or data[3] == 0:
        raise DataError(
            f"{name}: not an IDX file (magic number 0x{magic:08x}; expected 0x0000TTDD with "
            f"type TT in {{{', '.join(f'{t:02x}' for t in IDX_DTYPES)}}} and DD >= 1 dimensions)"
        )
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{name}: truncated IDX header ({len(data)} bytes; {ndim} dimensions need {header})"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = math.prod(shape)
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{name}: IDX file {problem}: {len(data)} bytes, but the header "
            f"(magic 0x{magic:08x}, shape {shape}) requires exactly {expected}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def encode_idx(arr: np.ndarray) -> bytes:
    """Inverse of :func:`parse_idx` (used to write test files)."""
    arr = np.asarray(arr)
    matches = [
        (code, dt)
        for code, dt in IDX_DTYPES.items()
        if arr.dtype.kind == dt.kind and arr.dtype.itemsize == dt.itemsize
    ]
    if not matches:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    code, dtype = matches[0]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(dtype, copy=False).tobytes(order="C")


def read_maybe_gzip(path: str | os.PathLike) -> bytes:
    """A file's bytes, gunzipped if it starts with the gzip magic bytes.

    Raises:
      DataError: unreadable file or corrupt/truncated gzip stream.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as e:
        raise DataError(f"{path}: truncated gzip file ({e})") from e
    except (OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip file ({e})") from e


def read_idx(path: str | os.PathLike, md5: str | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip), optionally verifying the MD5 of the *uncompressed* bytes.

    The structure is checked first (so a truncated file is reported as
    truncated), then the checksum.

    Args:
      path: the file, raw or gzip-compressed.
      md5: the expected MD5 of the uncompressed bytes, or None.

    Returns:
      The array (see :func:`parse_idx`).

    Raises:
      DataError: an unreadable, corrupt or truncated file.
      ChecksumError: an MD5 mismatch.

    Example:
      >>> import gzip, hashlib, tempfile
      >>> from pathlib import Path
      >>> import numpy as np
      >>> from relaxjax import data
      >>> from relaxjax.data.idx import encode_idx
      >>> raw = encode_idx(np.arange(4, dtype=np.uint8))
      >>> path = Path(tempfile.mkdtemp()) / "labels.gz"
      >>> _ = path.write_bytes(gzip.compress(raw))
      >>> data.read_idx(path, md5=hashlib.md5(raw).hexdigest()).tolist()
      [0, 1, 2, 3]
    """
    data = read_maybe_gzip(path)
    arr = parse_idx(data, str(path))
    if md5 is not None:
        check_digest(digest_bytes(data, "md5"), md5, f"{path} (uncompressed content)")
    return arr
