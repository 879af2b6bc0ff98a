"""A restricted unpickler for the CIFAR python-version batches.

The official CIFAR files are Python 2 pickles (protocol 2) of dicts holding
str/bytes, lists of ints and uint8 numpy arrays. Unpickling an array needs
exactly three globals: ``numpy.core.multiarray._reconstruct`` (spelled
``numpy._core.multiarray._reconstruct`` when re-pickled by numpy >= 2),
``numpy.ndarray`` and ``numpy.dtype``. :class:`RestrictedUnpickler` admits
only those and refuses every other global *when the pickle names it*, i.e.
before any ``REDUCE`` opcode could call it, so a tampered file that would
run ``os.system`` (or anything else) through ``__reduce__`` is rejected before
any code runs. Objects are resolved from this table, never imported by name.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from .errors import DataError, UnsafePickleError

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "safe_loads"]

_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: only numpy arrays, dicts, lists, "
                "strings and numbers are allowed in a data file"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused persistent id in a data file")


def safe_loads(data: bytes, name: str = "<bytes>", encoding: str = "latin1") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    ``encoding="latin1"`` decodes Python 2 ``str`` objects (including numpy's
    raw array buffers) losslessly, as numpy recommends for Python 2 pickles.

    Raises:
      UnsafePickleError: the pickle references a refused global.
      DataError: the pickle is truncated or malformed.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{name}: {e}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        AttributeError,
        KeyError,
        MemoryError,
    ) as e:
        raise DataError(f"{name}: malformed or truncated pickle ({type(e).__name__}: {e})") from e
