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
    """``pickle.Unpickler`` whose ``find_class`` only returns :data:`ALLOWED_GLOBALS`.

    Example:
      >>> import io, os, pickle
      >>> from relaxjax import data
      >>> class Evil:
      ...     def __reduce__(self):
      ...         return (os.system, ("echo pwned",))
      >>> data.RestrictedUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      relaxjax.data.errors.UnsafePickleError: refused to load global ...system: only numpy ...
    """

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

    Args:
      data: the pickle's bytes.
      name: the file's name, for error messages.
      encoding: how Python 2 ``str`` objects are decoded.

    Returns:
      The unpickled object (dicts, lists, strings, numbers, numpy arrays).

    Raises:
      UnsafePickleError: the pickle references a refused global.
      DataError: the pickle is truncated or malformed.

    Example:
      >>> import pickle
      >>> import numpy as np
      >>> from relaxjax import data
      >>> batch = data.safe_loads(pickle.dumps({"labels": [1, 2], "data": np.zeros(3, np.uint8)}))
      >>> batch["labels"], batch["data"].dtype
      ([1, 2], dtype('uint8'))
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
