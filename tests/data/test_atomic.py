"""Atomic file creation: whole files or nothing, never a half-written target."""

import pytest

from relaxjax.data.atomic import atomic_copy, atomic_write


def test_atomic_copy_makes_an_identical_file_and_leaves_no_temporary(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    target = tmp_path / "deeper" / "copy.bin"
    atomic_copy(source, target)
    assert target.read_bytes() == source.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["copy.bin"]


def test_an_interrupted_write_leaves_the_old_file_untouched(tmp_path):
    target = tmp_path / "file.txt"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as (f, _):
        f.write(b"half of the new")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "missing", target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]
