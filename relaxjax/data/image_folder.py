"""Image-folder data sets ``root/<split>/<class>/<image>`` (JPEG, PNG, ...): directory or tar.

The tree may be a directory or a (compressed) tar archive, read directly
without extracting. All image paths must share the same prefix before
``<split>/<class>/<file>`` (e.g. ``cifar10-jpeg/`` in
``cifar10-jpeg.tar.gz``). Classes are sorted by name unless an explicit class
list gives their order (for CIFAR-10 sorting gives the standard label order);
the class set is the union over all splits, so labels agree between splits, and a
split lacking a class (or a class folder without images) is refused.
Within a class, images are ordered by file name, so results do not depend on
archive order.

Decoding tens of thousands of JPEGs is slow, so each decoded split is cached
as an uncompressed ``.npz`` (loaded with ``allow_pickle=False``) under
``<cache>/imagefolder/``, keyed by the SHA-256 of the archive (for a directory:
of its file list with sizes and modification times) and the loading options,
and written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .atomic import atomic_write
from .errors import DataError
from .hashing import check_digest, file_digest
from .locations import cache_dir

__all__ = [
    "IMAGE_EXTENSIONS",
    "LabeledImages",
    "read_image_folder",
    "load_image_folder",
    "source_digest",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".webp"})
_CACHE_FORMAT = 2  # 2: splits checked to hold every class


class LabeledImages(NamedTuple):
    """Decoded split: uint8 NHWC ``images``, int32 ``labels``, ``classes`` (label -> name).

    Attributes:
      images: uint8 ``(N, H, W, C)``.
      labels: int32 ``(N,)``.
      classes: the class names; label i is ``classes[i]``.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]


def _split_path(name: str) -> tuple[str, ...] | None:
    """Path components of an image member, or ``None`` for anything else."""
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if len(parts) < 3 or ".." in parts:
        return None
    fname = parts[-1]
    if fname.startswith(".") or os.path.splitext(fname)[1].lower() not in IMAGE_EXTENSIONS:
        return None
    return parts


def _iter_tar(path: Path) -> Iterator[tuple[tuple[str, ...], tarfile.TarFile, tarfile.TarInfo]]:
    try:
        with tarfile.open(path, "r:*") as tf:
            for info in tf:
                parts = _split_path(info.name) if info.isfile() else None
                if parts is not None:
                    yield parts, tf, info
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{path}: corrupt or truncated archive ({type(e).__name__}: {e})") from e


def _list_dir(root: Path) -> list[tuple[tuple[str, ...], Path]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for fn in sorted(filenames):
            parts = _split_path(f"{rel}/{fn}")
            if parts is not None:
                out.append((parts, Path(dirpath) / fn))
    return out


def source_digest(path: str | os.PathLike) -> str:
    """SHA-256 of an archive, or of a directory's image list with sizes and mtimes."""
    path = Path(path)
    if path.is_file():
        return file_digest(path, "sha256")
    h = hashlib.sha256()
    for parts, p in _list_dir(path):
        st = p.stat()
        h.update(f"{'/'.join(parts)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _decode(data: bytes, name: str, mode: str) -> np.ndarray:
    from PIL import Image  # the [train] extra, imported when an image is decoded

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert(mode), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{name}: cannot decode image ({e})") from e
    return arr[..., None] if arr.ndim == 2 else arr


class _Entry(NamedTuple):
    cls: str
    fname: str
    image: np.ndarray


def _scan(
    path: Path, decode: Callable[[str], bool], mode: str, wanted: set[str] | None
) -> tuple[dict[str, list[_Entry]], dict[str, set[str]], set[str]]:
    """One pass over the tree: decode splits for which ``decode(split)``; collect all names
    (the classes of each split, and of all)."""
    entries: dict[str, list[_Entry]] = {}
    splits: dict[str, set[str]] = {}
    classes: set[str] = set()
    prefix: tuple[str, ...] | None = None

    def visit(parts: tuple[str, ...], where: str) -> list[_Entry] | None:
        nonlocal prefix
        if prefix is None:
            prefix = parts[:-3]
        elif parts[:-3] != prefix:
            raise DataError(
                f"{path}: images at different depths ({'/'.join(prefix)}/... and {where}); "
                "expected root/<split>/<class>/<image>"
            )
        s, c = parts[-3], parts[-2]
        if s not in splits:
            splits[s] = set()
            if decode(s):
                entries[s] = []
        classes.add(c)
        splits[s].add(c)
        return entries.get(s) if wanted is None or c in wanted else None

    if path.is_file():
        for parts, tf, info in _iter_tar(path):
            where = f"{path}:{info.name}"
            if (out := visit(parts, where)) is not None:
                f = tf.extractfile(info)
                assert f is not None
                out.append(_Entry(parts[-2], parts[-1], _decode(f.read(), where, mode)))
    elif path.is_dir():
        for parts, p in _list_dir(path):
            if (out := visit(parts, str(p))) is not None:
                out.append(_Entry(parts[-2], parts[-1], _decode(p.read_bytes(), str(p), mode)))
    else:
        raise DataError(f"{path}: no such image folder or archive")
    if path.is_dir() and prefix is not None:  # class folders without a single image
        for s in splits:
            split_dir = path.joinpath(*prefix, s)
            for folder in sorted(split_dir.iterdir()):
                if folder.is_dir() and not folder.name.startswith("."):
                    if folder.name not in splits[s] and (wanted is None or folder.name in wanted):
                        raise DataError(
                            f"{path}: class folder {s}/{folder.name} holds no images; remove it "
                            "or fill it (every class needs images in every split)"
                        )
    return entries, splits, classes


def _check_classes(path: Path, split: str, splits: dict[str, set[str]], classes) -> None:
    """Refuses a split that lacks classes the other splits (or the class list) have."""
    missing = [c for c in classes if c not in splits.get(split, set())]
    if missing and split in splits:
        raise DataError(
            f"{path}: split {split!r} has no images of class(es) {missing}, which "
            f"{'the other splits have' if len(splits) > 1 else 'the class list names'}; every "
            "split needs every class, or its labels would not mean the same"
        )


def _assemble(
    path: Path,
    split: str,
    entries: list[_Entry],
    splits: dict[str, set[str]],
    classes: tuple[str, ...],
) -> LabeledImages:
    if not entries:
        raise DataError(
            f"{path}: no images for split {split!r} (splits found: {sorted(splits) or 'none'})"
        )
    index = {c: i for i, c in enumerate(classes)}
    entries.sort(key=lambda e: (index[e.cls], e.fname))
    shape = entries[0].image.shape
    for e in entries:
        if e.image.shape != shape:
            raise DataError(
                f"{path}: {split}/{e.cls}/{e.fname} has shape {e.image.shape}, but "
                f"{split}/{entries[0].cls}/{entries[0].fname} has {shape}; all images of a "
                "split must have the same size"
            )
    images = np.stack([e.image for e in entries])
    labels = np.array([index[e.cls] for e in entries], dtype=np.int32)
    return LabeledImages(images, labels, classes)


def _cache_path(
    root: Path, path: Path, digest: str, split: str, classes: Sequence[str] | None, mode: str
) -> Path:
    opts = json.dumps([_CACHE_FORMAT, split, list(classes) if classes else None, mode])
    tag = hashlib.sha256(opts.encode()).hexdigest()[:12]
    stem = path.name.split(".")[0] or "images"
    return root / "imagefolder" / f"{stem}-{digest[:16]}-{split}-{tag}.npz"


def _load_cache(p: Path) -> LabeledImages | None:
    try:
        with np.load(p, allow_pickle=False) as z:
            return LabeledImages(
                z["images"], z["labels"].astype(np.int32), tuple(str(c) for c in z["classes"])
            )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        warnings.warn(f"ignoring unreadable cache {p} ({e}); decoding again", stacklevel=3)
        return None


def _save_cache(p: Path, data: LabeledImages) -> None:
    try:
        with atomic_write(p) as (f, _):
            np.savez(f, images=data.images, labels=data.labels, classes=np.array(data.classes))
    except OSError as e:
        warnings.warn(f"could not write cache {p} ({e})", stacklevel=3)


def read_image_folder(
    path: str | os.PathLike,
    split: str,
    *,
    classes: Sequence[str] | None = None,
    mode: str = "RGB",
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
    sha256: str | None = None,
) -> LabeledImages:
    """Decode one split of an image-folder tree or archive (cached; see module docstring).

    Args:
      path: directory or tar archive (``.tar``, ``.tar.gz``, ...).
      split: name of the first-level folder, e.g. ``"train"``.
      classes: label order; images of other classes are skipped. Default:
        all class folders of all splits, sorted by name.
      mode: Pillow mode to convert to (``"RGB"`` -> 3 channels, ``"L"`` -> 1).
      cache: overrides the per-user cache directory; ``use_cache=False``
        neither reads nor writes it.
      sha256: if given, ``path`` (an archive) must have this SHA-256.

    Returns:
      :class:`LabeledImages` with uint8 ``(N, H, W, C)`` images.

    Raises:
      DataError: a missing or corrupt tree, images of different sizes, absent class
        folders, a class folder without images, a split lacking classes that the other
        splits (or ``classes``) have, no images for the split, or a SHA-256 mismatch.
      ValueError: duplicate class names.

    Example:
      >>> import tempfile
      >>> from pathlib import Path
      >>> import numpy as np
      >>> from PIL import Image
      >>> from relaxjax import data
      >>> root = Path(tempfile.mkdtemp())
      >>> for name in ("dog", "cat"):
      ...     (root / "train" / name).mkdir(parents=True)
      ...     Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "train" / name / "0.png")
      >>> split = data.read_image_folder(root, "train", use_cache=False)
      >>> split.images.shape, split.labels.tolist(), split.classes
      ((2, 4, 4, 3), [0, 1], ('cat', 'dog'))
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such image folder or archive")
    if classes is not None:
        classes = tuple(classes)
        if len(set(classes)) != len(classes):
            raise ValueError(f"duplicate class names in {classes}")
    digest = source_digest(path) if (use_cache or sha256) else ""
    if sha256 is not None:
        if not path.is_file():
            raise DataError(f"{path}: a sha256 can only be checked for an archive file")
        check_digest(digest, sha256, str(path), "sha256")
    root = cache_dir(cache)
    if use_cache and (hit := _load_cache(_cache_path(root, path, digest, split, classes, mode))):
        return hit
    # Decode, in the same pass, every other split that is not cached yet (a tar.gz can only
    # be read sequentially, so this saves a second pass when the next split is asked for).

    def decode(s: str) -> bool:
        return s == split or (
            use_cache and not _cache_path(root, path, digest, s, classes, mode).exists()
        )

    entries, splits, found = _scan(path, decode, mode, set(classes) if classes else None)
    if classes is not None:
        absent = [c for c in classes if c not in found]
        if absent:
            raise DataError(f"{path}: no class folder(s) {absent} (found: {sorted(found)})")
    order = classes or tuple(sorted(found))
    _check_classes(path, split, splits, order)
    result = _assemble(path, split, entries.pop(split, []), splits, order)
    if use_cache:
        _save_cache(_cache_path(root, path, digest, split, classes, mode), result)
        for s, ents in entries.items():
            if ents and not set(order) - splits[s]:  # a split lacking classes raises when read
                _save_cache(
                    _cache_path(root, path, digest, s, classes, mode),
                    _assemble(path, s, ents, splits, order),
                )
    return result


def load_image_folder(
    path: str | os.PathLike, split: str, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of :func:`read_image_folder` (same arguments).

    Args:
      path: directory or tar archive.
      split: name of the first-level folder, e.g. ``"train"``.
      **kwargs: ``classes``, ``mode``, ``cache``, ``use_cache``, ``sha256`` (see
        :func:`read_image_folder`).

    Returns:
      ``(images, labels)``: uint8 NHWC and int32.

    Raises:
      DataError: as :func:`read_image_folder`.

    Example:
      >>> import tempfile
      >>> from pathlib import Path
      >>> import numpy as np
      >>> from PIL import Image
      >>> from relaxjax import data
      >>> root = Path(tempfile.mkdtemp())
      >>> (root / "test" / "zebra").mkdir(parents=True)
      >>> Image.fromarray(np.zeros((2, 2), np.uint8)).save(root / "test" / "zebra" / "0.png")
      >>> images, labels = data.load_image_folder(root, "test", mode="L", use_cache=False)
      >>> images.shape, labels.tolist()
      ((1, 2, 2, 1), [0])
    """
    data = read_image_folder(path, split, **kwargs)
    return data.images, data.labels
