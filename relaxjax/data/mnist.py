"""MNIST from the four official IDX files (LeCun, Cortes, Burges).

The files may be raw or gzip-compressed (``name`` or ``name.gz``); each is
verified by the MD5 of its *uncompressed* content, which is what the official
distribution publishes (gzip wrappers differ between mirrors). This is the
data of the ``mnistfc`` and LeNet experiments of Deep Relaxation (Chaudhari et
al. 2018, section 3 of ``docs/deep-relaxation.md``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .download import DownloadError, Opener
from .download import download as fetch
from .errors import DataError, DataNotFoundError
from .idx import read_idx
from .locations import cache_dir, candidate_dirs, missing_message

__all__ = ["MNIST_FILES", "MNIST_MD5", "MNIST_MIRRORS", "MNIST_SUBDIR", "load_mnist", "find_files"]

MNIST_SUBDIR = "mnist"
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


def _find(name: str, directory: Path) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_files(names: tuple[str, ...], dirs: list[Path]) -> list[Path] | None:
    """Paths of all ``names`` (raw or ``.gz``) from the first directory holding all of them."""
    for d in dirs:
        found = [_find(n, d) for n in names]
        if all(p is not None for p in found):
            return found  # type: ignore[return-value]
    return None


def _download_missing(
    names: tuple[str, ...], target: Path, opener: Opener | None, progress: bool
) -> list[Path]:
    paths = []
    for name in names:
        existing = _find(name, target)
        if existing is not None:
            paths.append(existing)
            continue
        urls = [f"{m}{name}.gz" for m in MNIST_MIRRORS]

        def verify(tmp: Path, name: str = name) -> None:
            _read_checked(tmp, name, verify=True)

        paths.append(
            fetch(urls, target / f"{name}.gz", verify=verify, opener=opener, progress=progress)
        )
    return paths


def _read_checked(path: Path, name: str, verify: bool) -> np.ndarray:
    arr = read_idx(path, MNIST_MD5[name] if verify else None)
    images = "images" in name
    want_ndim = 3 if images else 1
    if arr.dtype != np.uint8 or arr.ndim != want_ndim or (images and arr.shape[1:] != (28, 28)):
        raise DataError(
            f"{path}: not an MNIST {'image' if images else 'label'} file: got dtype {arr.dtype}, "
            f"shape {arr.shape}; expected uint8 "
            + ("(N, 28, 28), magic 0x00000803" if images else "(N,), magic 0x00000801")
        )
    return arr


def load_mnist(
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
    cache: str | os.PathLike | None = None,
    opener: Opener | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split.

    Args:
      split: ``"train"`` (60,000) or ``"test"`` (10,000).
      data_dir: searched first (``data_dir/mnist`` then ``data_dir``); see
        :mod:`relaxjax.data.locations` for the full search order.
      download: fetch missing files from :data:`MNIST_MIRRORS` into
        ``<cache>/mnist`` (verified, atomic).
      verify: check the official MD5s. Only set ``False`` for files you made
        yourself; the IDX structure is always checked.
      cache: overrides the per-user cache directory.
      opener: replaces ``urllib.request.urlopen`` for downloads.
      progress: download progress bar on a terminal.

    Returns:
      ``(images, labels)``: uint8 ``(N, 28, 28, 1)`` and int32 ``(N,)``.

    Raises:
      ValueError: for an unknown split.
      DataNotFoundError: not on disk and not downloadable.
      DataError: a corrupt or truncated file, a failed checksum, or mismatched
        image and label counts.

    References:
      LeCun, Cortes, Burges, the MNIST database; ``docs/deep-relaxation.md`` §3.2.

    Example:
      >>> import tempfile
      >>> from pathlib import Path
      >>> import numpy as np
      >>> from relaxjax import data
      >>> from relaxjax.data.idx import encode_idx
      >>> root = Path(tempfile.mkdtemp()) / "mnist"
      >>> root.mkdir()
      >>> images, labels = np.zeros((2, 28, 28), np.uint8), np.array([7, 0], np.uint8)
      >>> _ = (root / "train-images-idx3-ubyte").write_bytes(encode_idx(images))
      >>> _ = (root / "train-labels-idx1-ubyte").write_bytes(encode_idx(labels))
      >>> x, y = data.load_mnist("train", data_dir=root.parent, download=False, verify=False)
      >>> x.shape, y.tolist()
      ((2, 28, 28, 1), [7, 0])
    """
    if split not in MNIST_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; valid: {sorted(MNIST_FILES)}")
    names = MNIST_FILES[split]
    dirs = candidate_dirs(MNIST_SUBDIR, data_dir, cache)
    paths = find_files(names, dirs)
    if paths is None:
        files = [f"{n}.gz (or {n})" for n in names]
        target = cache_dir(cache) / MNIST_SUBDIR
        if not download:
            raise DataNotFoundError(missing_message(f"MNIST ({split})", files, dirs))
        try:
            paths = _download_missing(names, target, opener, progress)
        except DownloadError as e:
            raise DataNotFoundError(
                missing_message(f"MNIST ({split})", files, dirs, target, str(e))
            ) from e
    images = _read_checked(paths[0], names[0], verify)
    labels = _read_checked(paths[1], names[1], verify)
    if len(images) != len(labels):
        raise DataError(
            f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{paths[1]}: label {labels.max()} out of range 0..9")
    return images[..., None], labels.astype(np.int32)
