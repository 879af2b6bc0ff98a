"""File formats: IDX (MNIST), CIFAR python batches (restricted unpickling), image folders."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from relaxjax import data
from relaxjax.data import cifar, image_folder, mnist
from relaxjax.data.errors import ChecksumError, DataError, UnsafePickleError
from relaxjax.data.idx import encode_idx, parse_idx, read_idx

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


# ----------------------------------------------------------------------------- helpers
def write_mnist(directory: Path, n_train=12, n_test=5, gz=True, seed=0) -> dict:
    """Write the four MNIST files (IDX, optionally gzip) with random content."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        img_name, lab_name = mnist.MNIST_FILES[split]
        arrays[split] = (
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n, dtype=np.uint8),
        )
        for name, arr in zip((img_name, lab_name), arrays[split], strict=True):
            raw = encode_idx(arr)
            if gz:
                (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (directory / name).write_bytes(raw)
    return arrays


def content_md5s(arrays: dict) -> dict[str, str]:
    out = {}
    for split, (imgs, labs) in arrays.items():
        img_name, lab_name = mnist.MNIST_FILES[split]
        out[img_name] = hashlib.md5(encode_idx(imgs)).hexdigest()
        out[lab_name] = hashlib.md5(encode_idx(labs)).hexdigest()
    return out


_RECONSTRUCT = np.empty(0).__reduce__()[0]


class Py2Pickler(pickle._Pickler):
    """Writes pickles like Python 2 / numpy 1.x did for the official CIFAR files.

    Protocol 2, ``bytes`` as Python-2 ``str`` (BINSTRING) and the array
    reconstructor under its numpy-1 name ``numpy.core.multiarray._reconstruct``.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_dumps(obj) -> bytes:
    f = io.BytesIO()
    Py2Pickler(f, protocol=2).dump(obj)
    return f.getvalue()


def cifar_batch(n: int, rng, label_keys=(b"labels",), num_classes=10) -> dict:
    d = {
        b"batch_label": b"fake batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    for k in label_keys:
        d[k] = [int(v) for v in rng.integers(0, num_classes, n)]
    return d


def add_member(tf: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tf.addfile(info, io.BytesIO(payload))


def write_cifar10(root: Path, n=4, seed=0, replace: dict | None = None) -> dict:
    """A cifar-10-python.tar.gz with the official member layout; returns the batches."""
    rng = np.random.default_rng(seed)
    members = {f"data_batch_{i}": cifar_batch(n, rng) for i in range(1, 6)}
    members["test_batch"] = cifar_batch(n, rng)
    members["batches.meta"] = {b"label_names": [c.encode() for c in data.CIFAR10_CLASSES]}
    payloads = {k: py2_dumps(v) for k, v in members.items()}
    payloads.update(replace or {})
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tf:
        for k, p in payloads.items():
            add_member(tf, f"cifar-10-batches-py/{k}", p)
    return members


def to_nhwc(flat: np.ndarray) -> np.ndarray:
    return flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


# ----------------------------------------------------------------------------- IDX
@pytest.mark.parametrize(
    "arr",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-3, 7], dtype=np.int32),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
        np.array([1.5, -2.25]),
    ],
)
def test_idx_roundtrip(arr):
    out = parse_idx(encode_idx(arr))
    assert out.dtype == arr.dtype.newbyteorder("=") and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_roundtrip(tmp_path, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    for split in ("train", "test"):
        x, y = data.load_mnist(split, data_dir=tmp_path, download=False, verify=False)
        assert x.shape == (len(arrays[split][0]), 28, 28, 1) and x.dtype == np.uint8
        assert y.dtype == np.int32
        np.testing.assert_array_equal(x[..., 0], arrays[split][0])
        np.testing.assert_array_equal(y, arrays[split][1])


def test_mnist_verifies_uncompressed_md5(tmp_path, monkeypatch):
    arrays = write_mnist(tmp_path)
    with pytest.raises(ChecksumError) as e:
        data.load_mnist("train", data_dir=tmp_path, download=False)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and "md5 checksum mismatch" in msg
    assert mnist.MNIST_MD5["train-images-idx3-ubyte"] in msg
    # With the content MD5s (not those of the .gz wrappers) registered, it verifies.
    monkeypatch.setattr(mnist, "MNIST_MD5", content_md5s(arrays))
    x, _ = data.load_mnist("train", data_dir=tmp_path, download=False)
    assert len(x) == 12


def test_truncated_idx_is_a_clear_error(tmp_path):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as e:
        data.load_mnist("train", data_dir=tmp_path, download=False, verify=False)
    msg = str(e.value)
    assert str(path) in msg and "truncated" in msg and str(12 * 28 * 28 + 16) in msg


def test_truncated_gzip_is_a_clear_error(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="truncated gzip") as e:
        data.load_mnist("train", data_dir=tmp_path, download=False, verify=False)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x01\x02" + b[2:], "not an IDX file"),
        (lambda b: b + b"\x00", "trailing bytes"),
        (lambda b: b[:10], "truncated IDX header"),
        (lambda b: b[:3], "truncated IDX file"),
    ],
)
def test_bad_idx_headers(tmp_path, mutate, message):
    raw = encode_idx(np.zeros((2, 28, 28), np.uint8))
    path = tmp_path / "x.idx"
    path.write_bytes(mutate(raw))
    with pytest.raises(DataError, match=message) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_mnist_rejects_wrong_kind_of_file(tmp_path):
    write_mnist(tmp_path, gz=False)
    labels = (tmp_path / "t10k-labels-idx1-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(labels)
    with pytest.raises(DataError, match="not an MNIST image file.*0x00000803"):
        data.load_mnist("test", data_dir=tmp_path, download=False, verify=False)


@pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir(), reason=f"real MNIST not present at {SHARED_DATA}/mnist"
)
def test_real_mnist_loads_and_verifies(tmp_path):
    x, y = data.load_mnist("train", data_dir=SHARED_DATA, download=False, cache=tmp_path)
    assert x.shape == (60000, 28, 28, 1) and y.shape == (60000,)
    assert y[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    xt, yt = data.load_dataset("mnist", "test", data_dir=SHARED_DATA / "mnist", download=False)
    assert xt.shape == (10000, 28, 28, 1) and np.bincount(yt).sum() == 10000
    assert yt[:5].tolist() == [7, 2, 1, 0, 4]


# ----------------------------------------------------------------------------- CIFAR
def test_py2_pickle_helper_matches_official_globals():
    """The fake files reference exactly the globals the official ones do."""
    import pickletools

    blob = py2_dumps(cifar_batch(2, np.random.default_rng(0)))
    globals_ = {arg for op, arg, _ in pickletools.genops(blob) if op.name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


def test_cifar10_archive_roundtrip(tmp_path):
    batches = write_cifar10(tmp_path)
    x, y = data.load_cifar10("train", data_dir=tmp_path, download=False, verify=False)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int32
    expected = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    np.testing.assert_array_equal(x, to_nhwc(expected))
    assert y.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    xt, yt = data.load_dataset("cifar10", "test", data_dir=tmp_path, download=False, verify=False)
    np.testing.assert_array_equal(xt, to_nhwc(batches["test_batch"][b"data"]))
    assert yt.tolist() == batches["test_batch"][b"labels"]
    # Channel-major -> NHWC: pixel (0, 0) of image 0 is (R, G, B) = data[0, [0, 1024, 2048]].
    assert x[0, 0, 0].tolist() == expected[0, [0, 1024, 2048]].tolist()


def test_cifar10_extracted_folder(tmp_path):
    batches = write_cifar10(tmp_path / "src")
    with tarfile.open(tmp_path / "src" / "cifar-10-python.tar.gz") as tf:
        tf.extractall(tmp_path / "cifar10", filter="data")
    x, _ = data.load_cifar10("test", data_dir=tmp_path, download=False, verify=False)
    np.testing.assert_array_equal(x, to_nhwc(batches["test_batch"][b"data"]))
    with pytest.raises(ChecksumError, match="test_batch"):
        data.load_cifar10("test", data_dir=tmp_path, download=False)


def test_cifar10_bad_archive_checksum(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(ChecksumError) as e:
        data.load_cifar10("train", data_dir=tmp_path, download=False)
    msg = str(e.value)
    assert "cifar-10-python.tar.gz" in msg and cifar.CIFAR10.archive_md5 in msg


def test_cifar10_truncated_archive(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError, match="corrupt or truncated archive") as e:
        data.load_cifar10("train", data_dir=tmp_path, download=False, verify=False)
    assert str(path) in str(e.value)


def test_cifar100_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(1)
    keys = (b"fine_labels", b"coarse_labels")
    train, test = cifar_batch(6, rng, keys, 20), cifar_batch(3, rng, keys, 20)
    meta = {b"fine_label_names": [b"c%d" % i for i in range(100)], b"coarse_label_names": []}
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tf:
        for name, obj in (("train", train), ("test", test), ("meta", meta)):
            add_member(tf, f"cifar-100-python/{name}", py2_dumps(obj))
    x, y = data.load_cifar100("train", data_dir=tmp_path, download=False, verify=False)
    np.testing.assert_array_equal(x, to_nhwc(train[b"data"]))
    assert y.tolist() == train[b"fine_labels"]
    _, yc = data.load_cifar100(
        "test", data_dir=tmp_path, download=False, label_mode="coarse", verify=False
    )
    assert yc.tolist() == test[b"coarse_labels"]
    xs, _ = data.load_dataset("cifar100", "test", data_dir=tmp_path, download=False, verify=False)
    assert xs.shape == (3, 32, 32, 3)


class _SystemPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_SystemPayload, _ExecPayload])
def test_tampered_pickle_is_refused_before_running(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = {b"data": payload(marker), b"labels": [0]}
    write_cifar10(tmp_path / "d", replace={"data_batch_1": py2_dumps(evil)})
    with pytest.raises(UnsafePickleError) as e:
        data.load_cifar10("train", data_dir=tmp_path / "d", download=False, verify=False)
    msg = str(e.value)
    assert "refused" in msg and "data_batch_1" in msg
    assert ("system" in msg) if payload is _SystemPayload else ("exec" in msg)
    assert not marker.exists()


def test_exec_payload_would_really_run_with_plain_pickle(tmp_path):
    """Sanity check of the test above: the payload is live under ``pickle.loads``."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_ExecPayload(marker)))
    assert marker.exists()


def test_restricted_unpickler_refuses_other_numpy_globals():
    blob = pickle.dumps(np.float64(1.0), protocol=2)  # needs numpy._core.multiarray.scalar
    with pytest.raises(UnsafePickleError, match="scalar"):
        data.safe_loads(blob, "x")
    with pytest.raises(DataError, match="malformed or truncated pickle"):
        data.safe_loads(py2_dumps({b"a": 1})[:-3], "x")


def test_cifar_rejects_wrong_array_dtype(tmp_path):
    bad = {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}
    write_cifar10(tmp_path, replace={"test_batch": py2_dumps(bad)})
    with pytest.raises(DataError, match="uint8 array of shape"):
        data.load_cifar10("test", data_dir=tmp_path, download=False, verify=False)


# ----------------------------------------------------------------------------- image folders
CLASSES = ("dog", "cat", "bird")  # deliberately unsorted


def image_for(split: str, cls: int, i: int, size=(6, 5)) -> np.ndarray:
    base = 40 * cls + 7 * i + (100 if split == "test" else 0)
    rng = np.random.default_rng(base)
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def write_tree(root: Path, fmt="PNG", n=3) -> None:
    for split in ("train", "test"):
        for c, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ext = "png" if fmt == "PNG" else "jpg"
                Image.fromarray(image_for(split, c, i)).save(d / f"{i:04d}.{ext}", format=fmt)


def tar_tree(root: Path, archive: Path, prefix: str) -> None:
    with tarfile.open(archive, "w:gz") as tf:
        for p in sorted(root.rglob("*"), reverse=True):  # scrambled order on purpose
            if p.is_file():
                tf.add(p, arcname=f"{prefix}/{p.relative_to(root).as_posix()}")


def test_image_folder_directory_and_tar(tmp_path):
    write_tree(tmp_path / "tree")
    tar_tree(tmp_path / "tree", tmp_path / "set.tar.gz", "myset")
    cache = tmp_path / "cache"
    sorted_classes = sorted(CLASSES)
    for source in (tmp_path / "tree", tmp_path / "set.tar.gz"):
        d = data.read_image_folder(source, "train", cache=cache)
        assert d.classes == tuple(sorted_classes)
        assert d.images.shape == (9, 6, 5, 3) and d.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
        for k, (label, i) in enumerate((lab, i) for lab in range(3) for i in range(3)):
            original = CLASSES.index(sorted_classes[label])
            np.testing.assert_array_equal(d.images[k], image_for("train", original, i))
    x, y = data.load_dataset(
        "imagefolder", "test", path=tmp_path / "set.tar.gz", classes=CLASSES, cache=cache
    )
    assert y.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    np.testing.assert_array_equal(x[0], image_for("test", 0, 0))


def test_image_folder_jpeg(tmp_path):
    write_tree(tmp_path / "tree", fmt="JPEG", n=2)
    x, y = data.load_image_folder(tmp_path / "tree", "test", use_cache=False)
    assert x.shape == (6, 6, 5, 3) and x.dtype == np.uint8
    with Image.open(tmp_path / "tree/test/bird/0000.jpg") as im:  # same decoder, exact
        np.testing.assert_array_equal(x[0], np.asarray(im.convert("RGB")))
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    g, _ = data.load_image_folder(tmp_path / "tree", "test", mode="L", use_cache=False)
    assert g.shape == (6, 6, 5, 1)


def test_image_folder_cache(tmp_path, monkeypatch):
    write_tree(tmp_path / "tree")
    tar_tree(tmp_path / "tree", tmp_path / "set.tar.gz", "myset")
    cache = tmp_path / "cache"
    first = data.read_image_folder(tmp_path / "set.tar.gz", "train", cache=cache)
    files = sorted((cache / "imagefolder").glob("*.npz"))
    digest = hashlib.sha256((tmp_path / "set.tar.gz").read_bytes()).hexdigest()
    # both splits decoded in the one pass, keyed by the archive's sha256
    assert len(files) == 2 and all(digest[:16] in f.name for f in files)
    assert not list((cache / "imagefolder").glob("*.part"))
    with np.load(files[0], allow_pickle=False) as z:
        assert set(z.files) == {"images", "labels", "classes"}

    def no_decoding(*args):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(image_folder, "_decode", no_decoding)
    again = data.read_image_folder(tmp_path / "set.tar.gz", "train", cache=cache)
    np.testing.assert_array_equal(again.images, first.images)
    assert again.classes == first.classes
    data.read_image_folder(tmp_path / "set.tar.gz", "test", cache=cache)  # cached too


def test_image_folder_sha256_check(tmp_path):
    write_tree(tmp_path / "tree", n=1)
    tar_tree(tmp_path / "tree", tmp_path / "set.tar.gz", "s")
    with pytest.raises(ChecksumError, match="sha256 checksum mismatch"):
        data.read_image_folder(tmp_path / "set.tar.gz", "train", sha256="0" * 64, use_cache=False)


def test_image_folder_errors(tmp_path):
    write_tree(tmp_path / "tree", n=1)
    with pytest.raises(DataError, match=r"no images for split 'val'.*'test', 'train'"):
        data.read_image_folder(tmp_path / "tree", "val", use_cache=False)
    with pytest.raises(DataError, match="no class folder"):
        data.read_image_folder(tmp_path / "tree", "train", classes=["cat", "cow"], use_cache=False)
    Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(tmp_path / "tree/train/cat/big.png")
    with pytest.raises(DataError, match="same size"):
        data.read_image_folder(tmp_path / "tree", "train", use_cache=False)
    (tmp_path / "tree/train/cat/big.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="big.png: cannot decode image"):
        data.read_image_folder(tmp_path / "tree", "train", use_cache=False)


# ----------------------------------------------------------------------------- registry
def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as e:
        data.load_dataset("imagenet", "train")
    for name in ("mnist", "cifar10", "cifar100", "imagefolder"):
        assert name in str(e.value)
    with pytest.raises(ValueError, match="unknown split 'val'.*'train', 'test'"):
        data.load_dataset("mnist", "val")
    with pytest.raises(ValueError, match="needs path="):
        data.load_dataset("imagefolder", "train")
    assert data.dataset_info("CIFAR100").num_classes == 100


@pytest.mark.skipif(
    not (SHARED_DATA / "cifar10-jpeg.tar.gz").is_file(),
    reason=f"cifar10-jpeg.tar.gz not present in {SHARED_DATA}",
)
def test_real_cifar10_jpeg_archive_digest():
    """The offline JPEG copy matches the sha256 that load_dataset('cifar10-jpeg') checks."""
    digest = image_folder.source_digest(SHARED_DATA / "cifar10-jpeg.tar.gz")
    assert digest == data.CIFAR10_JPEG_SHA256
