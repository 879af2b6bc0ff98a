"""Downloads (file:// sources and fake openers), search order and offline messages."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from relaxjax import data
from relaxjax.data import cifar, locations, mnist
from relaxjax.data.errors import ChecksumError, DataNotFoundError
from relaxjax.data.hashing import check_digest, file_digest
from relaxjax.data.idx import encode_idx


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv(locations.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(locations.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def make_mirror(directory: Path, seed=0, n=7) -> dict[str, np.ndarray]:
    """Gzipped MNIST-format files (random content) as a download mirror."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split in ("train", "test"):
        img, lab = mnist.MNIST_FILES[split]
        arrays[img] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[lab] = rng.integers(0, 10, n, dtype=np.uint8)
    for name, arr in arrays.items():
        (directory / f"{name}.gz").write_bytes(gzip.compress(encode_idx(arr)))
    return arrays


def md5s(arrays) -> dict[str, str]:
    return {k: hashlib.md5(encode_idx(v)).hexdigest() for k, v in arrays.items()}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def test_download_file_url_verified(tmp_path, monkeypatch):
    arrays = make_mirror(tmp_path / "mirror")
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", (f"{(tmp_path / 'mirror').as_uri()}/",))
    monkeypatch.setattr(mnist, "MNIST_MD5", md5s(arrays))
    cache = tmp_path / "cache"
    x, y = data.load_mnist("train", data_dir=tmp_path / "empty", cache=cache, progress=False)
    np.testing.assert_array_equal(x[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y, arrays["train-labels-idx1-ubyte"])
    assert leftovers(cache) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]

    def no_network(url, timeout):
        raise AssertionError("downloaded again")

    x2, _ = data.load_mnist("train", cache=cache, opener=no_network)  # found in the cache
    np.testing.assert_array_equal(x2, x)


def test_download_falls_back_to_next_mirror(tmp_path, monkeypatch):
    arrays = make_mirror(tmp_path / "mirror")
    mirrors = (f"{(tmp_path / 'nothing').as_uri()}/", f"{(tmp_path / 'mirror').as_uri()}/")
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", mirrors)
    monkeypatch.setattr(mnist, "MNIST_MD5", md5s(arrays))
    x, _ = data.load_mnist("test", cache=tmp_path / "cache", progress=False)
    assert x.shape == (7, 28, 28, 1)


def test_checksum_failure_leaves_no_file(tmp_path, monkeypatch):
    make_mirror(tmp_path / "mirror")  # content differs from the official MD5s
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", (f"{(tmp_path / 'mirror').as_uri()}/",))
    cache = tmp_path / "cache"
    with pytest.raises(DataNotFoundError) as e:
        data.load_mnist("train", cache=cache, progress=False)
    msg = str(e.value)
    assert "checksum mismatch" in msg and mnist.MNIST_MD5["train-images-idx3-ubyte"] in msg
    assert leftovers(cache) == []


class FakeResponse:
    """A urlopen-like response that delivers ``body`` then fails with ``error``."""

    def __init__(self, body: bytes, error: BaseException | None, length: int | None = None):
        self._body = io.BytesIO(body)
        self._error = error
        self.headers = {"Content-Length": str(length)} if length is not None else {}

    def read(self, n=-1):
        chunk = self._body.read(min(n, 1000))
        if not chunk and self._error is not None:
            raise self._error
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize(
    "error, length, match",
    [
        (ConnectionResetError("connection reset by peer"), None, "connection reset"),
        (None, 10**6, "transfer interrupted after 5000 of 1000000 bytes"),
    ],
)
def test_interrupted_transfer_leaves_no_file(tmp_path, error, length, match):
    dest = tmp_path / "dl" / "file.bin"
    seen = []

    def opener(url, timeout):
        seen.append(url)
        return FakeResponse(b"x" * 5000, error, length)

    with pytest.raises(data.DownloadError, match=match):
        data.download(
            ["https://a/file.bin", "https://b/file.bin"], dest, opener=opener, progress=False
        )
    assert seen == ["https://a/file.bin", "https://b/file.bin"]
    assert leftovers(tmp_path / "dl") == []


def test_keyboard_interrupt_leaves_no_file(tmp_path):
    dest = tmp_path / "dl" / "file.bin"
    opener = lambda url, timeout: FakeResponse(b"x" * 5000, KeyboardInterrupt())  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        data.download("https://a/file.bin", dest, opener=opener, progress=False)
    assert leftovers(tmp_path / "dl") == []


def test_download_verify_and_replace(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    good = hashlib.md5(b"payload").hexdigest()
    dest = tmp_path / "out" / "f.bin"

    def check(expected):
        def verify(p: Path):
            check_digest(file_digest(p), expected, "f.bin")

        return verify

    with pytest.raises(data.DownloadError) as e:
        data.download(src.as_uri(), dest, verify=check("0" * 32), progress=False)
    assert isinstance(e.value.errors[0][1], ChecksumError) and not dest.exists()
    assert data.download(src.as_uri(), dest, verify=check(good), progress=False) == dest
    assert dest.read_bytes() == b"payload" and leftovers(tmp_path / "out") == ["f.bin"]


def test_offline_error_says_where_to_put_files(tmp_path):
    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    with pytest.raises(DataNotFoundError) as e:
        data.load_mnist(
            "test", data_dir=tmp_path / "d", cache=tmp_path / "c", opener=offline, progress=False
        )
    msg = str(e.value)
    for needle in (
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        str(tmp_path / "d" / "mnist"),
        str(tmp_path / "c"),
        "RELAXJAX_DATA_DIR",
        "name resolution",
        "ossci-datasets",
    ):
        assert needle in msg, needle
    with pytest.raises(DataNotFoundError, match="download=False") as e:
        data.load_dataset(
            "cifar10", "train", data_dir=tmp_path / "d", download=False, cache=tmp_path / "c"
        )
    assert "cifar-10-python.tar.gz" in str(e.value) and str(tmp_path / "d") in str(e.value)
    with pytest.raises(DataNotFoundError, match="cifar10-jpeg.tar.gz"):
        data.load_dataset("cifar10-jpeg", "train", data_dir=tmp_path / "d", cache=tmp_path / "c")


def test_cifar_download_file_url(tmp_path):
    rng = np.random.default_rng(0)
    archive = tmp_path / "srv" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    import pickle

    batch = {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [3, 4]}
    with tarfile.open(archive, "w:gz") as tf:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            blob = pickle.dumps(batch, protocol=3)  # numpy-2 style globals are admitted too
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    spec = cifar.CIFAR10._replace(url=archive.as_uri(), archive_md5=md5)
    cache = tmp_path / "cache"
    x, y = cifar.load_cifar(
        spec, "test", data_dir=tmp_path / "none", cache=cache, verify=False, progress=False
    )
    assert x.shape == (2, 32, 32, 3) and y.tolist() == [3, 4]
    assert (cache / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    bad = spec._replace(archive_md5="0" * 32)
    with pytest.raises(DataNotFoundError, match="checksum mismatch"):
        cifar.load_cifar(bad, "test", cache=tmp_path / "cache2", progress=False)
    assert leftovers(tmp_path / "cache2") == []


def test_search_order(tmp_path, monkeypatch):
    a = make_mirror(tmp_path / "explicit" / "mnist", seed=1)
    b = make_mirror(tmp_path / "env", seed=2)
    c = make_mirror(tmp_path / "cache" / "mnist", seed=3)
    monkeypatch.setenv(locations.DATA_DIR_ENV, str(tmp_path / "env"))
    monkeypatch.setenv(locations.CACHE_DIR_ENV, str(tmp_path / "cache"))
    kw = dict(download=False, verify=False)
    first = lambda arrays: arrays["t10k-images-idx3-ubyte"][..., None]  # noqa: E731
    np.testing.assert_array_equal(
        data.load_mnist("test", data_dir=tmp_path / "explicit", **kw)[0], first(a)
    )
    np.testing.assert_array_equal(data.load_mnist("test", **kw)[0], first(b))
    monkeypatch.delenv(locations.DATA_DIR_ENV)
    np.testing.assert_array_equal(data.load_mnist("test", **kw)[0], first(c))


def test_cache_dir_resolution(tmp_path, monkeypatch):
    assert data.cache_dir() == tmp_path / "xdg" / "relaxjax"
    monkeypatch.setenv(locations.CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert data.cache_dir() == tmp_path / "mine"
    assert data.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(locations.CACHE_DIR_ENV)
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir() == Path.home() / ".cache" / "relaxjax"
