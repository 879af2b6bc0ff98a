"""CIFAR-10 / CIFAR-100 from the official python-version archives (Krizhevsky 2009).

``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/{data_batch_1..5,
test_batch, batches.meta}``; ``cifar-100-python.tar.gz`` holds
``cifar-100-python/{train, test, meta}``. Each batch is a pickled dict with a
uint8 ``data`` array of shape ``(N, 3072)`` (channel-major 32x32 RGB) and a
list of labels (``labels``; ``fine_labels``/``coarse_labels`` for CIFAR-100).

Members are read straight from the ``.tar.gz`` in one sequential pass (nothing
is extracted to disk) and unpickled with
:class:`~relaxjax.data.safe_pickle.RestrictedUnpickler`. The archive MD5 (and
each member's MD5, the values torchvision also uses) is verified unless
``verify=False``. An already extracted ``cifar-10-batches-py/`` folder works
too. CIFAR-10 is the All-CNN data set of Deep Relaxation (Chaudhari et al.
2018, section 3).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .download import DownloadError, Opener
from .download import download as fetch
from .errors import DataError, DataNotFoundError
from .hashing import check_digest, digest_bytes, file_digest
from .locations import cache_dir, candidate_dirs, missing_message
from .safe_pickle import safe_loads

__all__ = [
    "CifarSpec",
    "CIFAR10",
    "CIFAR100",
    "load_cifar",
    "load_cifar10",
    "load_cifar100",
    "read_cifar_batch",
]


class CifarSpec(NamedTuple):
    """Layout and checksums of one official CIFAR python-version archive."""

    name: str
    subdir: str
    archive: str
    archive_md5: str
    url: str
    folder: str
    splits: dict[str, tuple[str, ...]]
    meta: str
    member_md5: dict[str, str]
    num_classes: int


CIFAR10 = CifarSpec(
    name="CIFAR-10",
    subdir="cifar10",
    archive="cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    splits={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    meta="batches.meta",
    member_md5={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    num_classes=10,
)

CIFAR100 = CifarSpec(
    name="CIFAR-100",
    subdir="cifar100",
    archive="cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    folder="cifar-100-python",
    splits={"train": ("train",), "test": ("test",)},
    meta="meta",
    member_md5={
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
    num_classes=100,
)


def _str_keys(d: dict[Any, Any]) -> dict[str, Any]:
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def read_cifar_batch(
    data: bytes, name: str, label_key: str = "labels", num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pickled CIFAR batch into uint8 NHWC images and int32 labels."""
    obj = safe_loads(data, name)
    if not isinstance(obj, dict):
        raise DataError(f"{name}: expected a pickled dict, got {type(obj).__name__}")
    obj = _str_keys(obj)
    for key in ("data", label_key):
        if key not in obj:
            raise DataError(f"{name}: missing key {key!r} (keys: {sorted(obj)})")
    images, labels = obj["data"], obj[label_key]
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 2
        or images.shape[1] != 3 * 32 * 32
    ):
        desc = (
            f"{images.dtype} array of shape {images.shape}"
            if isinstance(images, np.ndarray)
            else type(images).__name__
        )
        raise DataError(f"{name}: 'data' must be a uint8 array of shape (N, 3072), got {desc}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name}: {label_key!r} is not a list of integers ({e})") from e
    if labels.shape != (len(images),):
        raise DataError(f"{name}: {len(images)} images but {label_key!r} has shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{name}: labels outside 0..{num_classes - 1}")
    nhwc = images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(nhwc), labels.astype(np.int32)


def _read_members_from_tar(path: Path, folder: str, members: tuple[str, ...]) -> dict[str, bytes]:
    wanted = {f"{folder}/{m}": m for m in members}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for info in tf:
                key = wanted.get(info.name.removeprefix("./"))
                if key is None or not info.isfile():
                    continue
                f = tf.extractfile(info)
                assert f is not None
                out[key] = f.read()
                if len(out) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{path}: corrupt or truncated archive ({type(e).__name__}: {e})") from e
    missing = [name for name in wanted if wanted[name] not in out]
    if missing:
        raise DataError(f"{path}: archive lacks member(s) {', '.join(missing)}")
    return out


def _read_members_from_dir(folder: Path, members: tuple[str, ...]) -> dict[str, bytes]:
    out = {}
    for m in members:
        try:
            out[m] = (folder / m).read_bytes()
        except OSError as e:
            raise DataError(f"{folder / m}: cannot read ({e.strerror or e})") from e
    return out


def _locate(spec: CifarSpec, members: tuple[str, ...], dirs: list[Path]) -> Path | None:
    for d in dirs:
        if (d / spec.archive).is_file():
            return d / spec.archive
        if all((d / spec.folder / m).is_file() for m in members):
            return d / spec.folder
    return None


def load_cifar(
    spec: CifarSpec,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    label_key: str = "labels",
    verify: bool = True,
    cache: str | os.PathLike | None = None,
    opener: Opener | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a split of the CIFAR data set described by ``spec``; see :func:`load_cifar10`."""
    if split not in spec.splits:
        raise ValueError(f"unknown {spec.name} split {split!r}; valid: {sorted(spec.splits)}")
    members = spec.splits[split]
    dirs = candidate_dirs(spec.subdir, data_dir, cache)
    source = _locate(spec, members, dirs)
    if source is None:
        files = [f"{spec.archive} (or its extracted {spec.folder}/)"]
        target = cache_dir(cache) / spec.subdir / spec.archive
        if not download:
            raise DataNotFoundError(missing_message(f"{spec.name} ({split})", files, dirs))

        def check(tmp: Path) -> None:
            check_digest(file_digest(tmp, "md5"), spec.archive_md5, f"{spec.url}")

        try:
            source = fetch(spec.url, target, verify=check, opener=opener, progress=progress)
        except DownloadError as e:
            raise DataNotFoundError(
                missing_message(f"{spec.name} ({split})", files, dirs, target.parent, str(e))
            ) from e
    if source.is_file():
        if verify:
            check_digest(file_digest(source, "md5"), spec.archive_md5, str(source))
        raw = _read_members_from_tar(source, spec.folder, members)
    else:
        raw = _read_members_from_dir(source, members)
    parts = []
    for m in members:
        where = f"{source}:{m}" if source.is_file() else str(source / m)
        if verify:
            check_digest(digest_bytes(raw[m], "md5"), spec.member_md5[m], where)
        parts.append(read_cifar_batch(raw.pop(m), where, label_key, spec.num_classes))
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return images, labels


def load_cifar10(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Load CIFAR-10 (50,000 train / 10,000 test).

    Args:
      split: ``"train"`` or ``"test"``.
      data_dir: searched first (``data_dir/cifar10`` then ``data_dir``) for
        ``cifar-10-python.tar.gz`` or an extracted ``cifar-10-batches-py/``.
      download: fetch the archive from the official URL into
        ``<cache>/cifar10`` when it is nowhere to be found (MD5-verified, atomic).
      **kwargs: ``verify`` (default ``True``; set ``False`` only for files you
        made yourself), ``cache``, ``opener``, ``progress``.

    Returns:
      ``(images, labels)``: uint8 ``(N, 32, 32, 3)`` and int32 ``(N,)``.

    Raises:
      ValueError: for an unknown split.
      DataNotFoundError: not on disk and not downloadable.
      DataError: a corrupt archive or batch, or a failed checksum.

    References:
      Krizhevsky, *Learning multiple layers of features from tiny images* (2009);
      ``docs/deep-relaxation.md`` §3.2.

    Example:
      An extracted ``cifar-10-batches-py/`` folder of one image per batch, made here
      (so ``verify=False``):

      >>> import pickle, tempfile
      >>> from pathlib import Path
      >>> import numpy as np
      >>> from relaxjax import data
      >>> folder = Path(tempfile.mkdtemp()) / "cifar-10-batches-py"
      >>> folder.mkdir()
      >>> for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
      ...     batch = {"data": np.zeros((1, 3072), np.uint8), "labels": [3]}
      ...     _ = (folder / name).write_bytes(pickle.dumps(batch))
      >>> images, labels = data.load_cifar10(
      ...     "train", data_dir=folder.parent, download=False, verify=False
      ... )
      >>> images.shape, labels.tolist()
      ((5, 32, 32, 3), [3, 3, 3, 3, 3])
    """
    return load_cifar(CIFAR10, split, data_dir=data_dir, download=download, **kwargs)


def load_cifar100(
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    label_mode: str = "fine",
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Load CIFAR-100 with ``fine_labels`` (100 classes) or, with ``label_mode="coarse"``, 20.

    Same arguments as :func:`load_cifar10`; files are ``cifar-100-python.tar.gz``
    or ``cifar-100-python/``, looked for in ``<root>/cifar100`` and ``<root>``.

    Args:
      split: ``"train"`` or ``"test"``.
      data_dir: searched first (``data_dir/cifar100`` then ``data_dir``).
      download: fetch the official archive when it is nowhere to be found.
      label_mode: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).
      **kwargs: ``verify``, ``cache``, ``opener``, ``progress`` (see
        :func:`load_cifar10`).

    Returns:
      ``(images, labels)``: uint8 ``(N, 32, 32, 3)`` and int32 ``(N,)``.

    Raises:
      ValueError: for an unknown split or ``label_mode``.
      DataNotFoundError: not on disk and not downloadable.
      DataError: a corrupt archive or batch, or a failed checksum.

    Example:
      >>> import pickle, tempfile
      >>> from pathlib import Path
      >>> import numpy as np
      >>> from relaxjax import data
      >>> folder = Path(tempfile.mkdtemp()) / "cifar-100-python"
      >>> folder.mkdir()
      >>> images = np.zeros((2, 3072), np.uint8)
      >>> batch = {"data": images, "fine_labels": [7, 99], "coarse_labels": [1, 19]}
      >>> _ = (folder / "test").write_bytes(pickle.dumps(batch))
      >>> kwargs = dict(data_dir=folder.parent, download=False, verify=False)
      >>> data.load_cifar100("test", **kwargs)[1].tolist()
      [7, 99]
      >>> data.load_cifar100("test", label_mode="coarse", **kwargs)[1].tolist()
      [1, 19]
    """
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    spec = CIFAR100 if label_mode == "fine" else CIFAR100._replace(num_classes=20)
    return load_cifar(
        spec,
        split,
        data_dir=data_dir,
        download=download,
        label_key=f"{label_mode}_labels",
        **kwargs,
    )
