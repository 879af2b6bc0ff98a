"""One entry point for every data set: :func:`load_dataset`.

- ``mnist``: the four official IDX files (raw or .gz); 10 classes, 28x28x1.
- ``cifar10``: ``cifar-10-python.tar.gz`` (official); 10 classes, 32x32x3.
- ``cifar100``: ``cifar-100-python.tar.gz`` (official, fine labels); 100 classes.
- ``cifar10-jpeg``: ``cifar10-jpeg.tar.gz`` (JPEG image folder); 10 classes, 32x32x3.
- ``imagefolder``: any ``root/<split>/<class>/<image>`` tree or archive (``path=``).

``cifar10-jpeg`` is the JPEG re-encoding kept in the project's offline data
folder (pixel values differ slightly from the official files); it is looked
for like the others (``data_dir``, ``$RELAXJAX_DATA_DIR``, cache), verified
by its SHA-256, and never downloaded.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from .cifar import load_cifar10, load_cifar100
from .errors import DataNotFoundError
from .image_folder import load_image_folder
from .locations import candidate_dirs, missing_message
from .mnist import load_mnist

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "CIFAR10_CLASSES",
    "CIFAR10_JPEG_SHA256",
    "load_dataset",
    "dataset_info",
]

#: CIFAR-10's class names in label order.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
#: The SHA-256 of ``cifar10-jpeg.tar.gz``, the project's JPEG copy of CIFAR-10.
CIFAR10_JPEG_SHA256 = "094972270ae47c50e842bda89f879bf59be9a653349d49f7a754e65cfabfcd1b"


class DatasetInfo(NamedTuple):
    """Static facts about a named data set (``None`` where it depends on the files).

    Attributes:
      name: the registry name.
      num_classes: the number of classes.
      image_shape: one image's (height, width, channels).
      splits: the split names.
    """

    name: str
    num_classes: int | None
    image_shape: tuple[int, int, int] | None
    splits: tuple[str, ...] | None


#: The named data sets of :func:`load_dataset`, with their static facts.
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 10, (28, 28, 1), ("train", "test")),
    "cifar10": DatasetInfo("cifar10", 10, (32, 32, 3), ("train", "test")),
    "cifar100": DatasetInfo("cifar100", 100, (32, 32, 3), ("train", "test")),
    "cifar10-jpeg": DatasetInfo("cifar10-jpeg", 10, (32, 32, 3), ("train", "test")),
    "imagefolder": DatasetInfo("imagefolder", None, None, None),
}


def dataset_info(name: str) -> DatasetInfo:
    """:class:`DatasetInfo` of ``name``; unknown names raise ``ValueError`` listing valid ones.

    Args:
      name: a name of :data:`DATASETS` (any case).

    Returns:
      Its :class:`DatasetInfo`.

    Raises:
      ValueError: for an unknown name.

    Example:
      >>> from relaxjax import data
      >>> info = data.dataset_info("CIFAR100")
      >>> info.name, info.num_classes, info.image_shape, info.splits
      ('cifar100', 100, (32, 32, 3), ('train', 'test'))
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[key]


_DOWNLOAD_ONLY = ("opener", "progress")


def _folder_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop download options, which mean nothing for local image folders."""
    return {k: v for k, v in kwargs.items() if k not in _DOWNLOAD_ONLY}


def _load_cifar10_jpeg(
    split: str, data_dir: Any, *, verify: bool = True, cache: Any = None, **kwargs: Any
) -> tuple[np.ndarray, np.ndarray]:
    dirs = candidate_dirs("cifar10", data_dir, cache)
    for d in dirs:
        for candidate in (d / CIFAR10_JPEG_ARCHIVE, d / "cifar10-jpeg"):
            if candidate.exists():
                return load_image_folder(
                    candidate,
                    split,
                    classes=CIFAR10_CLASSES,
                    cache=cache,
                    sha256=CIFAR10_JPEG_SHA256 if verify and candidate.is_file() else None,
                    **_folder_kwargs(kwargs),
                )
    raise DataNotFoundError(
        missing_message("CIFAR-10 (JPEG image folder)", [CIFAR10_JPEG_ARCHIVE], dirs)
        + "\n(This copy is never downloaded; use 'cifar10' for the official archive.)"
    )


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a split of a named data set as ``(images uint8 NHWC, labels int32)``.

    Args:
      name: one of :data:`DATASETS` (``mnist``, ``cifar10``, ``cifar100``,
        ``cifar10-jpeg``, ``imagefolder``).
      split: ``"train"`` or ``"test"`` (for ``imagefolder``: any folder name).
      data_dir: searched first; then ``$RELAXJAX_DATA_DIR``, then the cache dir.
      download: allow fetching official files that are nowhere on disk.
      path: the directory or archive, for ``imagefolder`` only.
      **kwargs: passed to the loader, e.g. ``verify=False`` (your own files
        only), ``cache=...``, ``opener=...``; ``classes=``/``mode=`` for
        image folders; ``label_mode="coarse"`` for CIFAR-100.

    Returns:
      ``(images, labels)``: uint8 NHWC images and int32 labels.

    Raises:
      ValueError: unknown name or split.
      DataNotFoundError: not on disk and not downloadable; says where to put what.
      DataError: a file is corrupt, truncated or fails its checksum.

    References:
      ``docs/deep-relaxation.md`` §3.2, ``docs/cli.md`` §1.4 (where the data come
      from).

    Example:
      MNIST from four IDX files written here (so ``verify=False``: they are not the
      official ones):

      >>> import tempfile
      >>> from pathlib import Path
      >>> import numpy as np
      >>> from relaxjax import data
      >>> from relaxjax.data.idx import encode_idx
      >>> root = Path(tempfile.mkdtemp())
      >>> for prefix in ("train", "t10k"):
      ...     images, labels = np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3], np.uint8)
      ...     _ = (root / f"{prefix}-images-idx3-ubyte").write_bytes(encode_idx(images))
      ...     _ = (root / f"{prefix}-labels-idx1-ubyte").write_bytes(encode_idx(labels))
      >>> x, y = data.load_dataset("mnist", "test", data_dir=root, download=False, verify=False)
      >>> x.shape, x.dtype, y.tolist()
      ((3, 28, 28, 1), dtype('uint8'), [1, 2, 3])
    """
    info = dataset_info(name)
    if info.splits is not None and split not in info.splits:
        raise ValueError(f"unknown split {split!r} for {info.name}; valid: {list(info.splits)}")
    if info.name == "imagefolder":
        if path is None:
            raise ValueError("load_dataset('imagefolder', ...) needs path=<directory or archive>")
        kwargs.pop("verify", None)  # nothing published to verify a user's folder against
        return load_image_folder(path, split, **_folder_kwargs(kwargs))
    if path is not None:
        raise ValueError(f"path= is only for 'imagefolder'; use data_dir= for {info.name}")
    if info.name == "mnist":
        return load_mnist(split, data_dir=data_dir, download=download, **kwargs)
    if info.name == "cifar10":
        return load_cifar10(split, data_dir=data_dir, download=download, **kwargs)
    if info.name == "cifar100":
        return load_cifar100(split, data_dir=data_dir, download=download, **kwargs)
    return _load_cifar10_jpeg(split, data_dir, **kwargs)
