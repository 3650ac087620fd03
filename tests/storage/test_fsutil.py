"""Durability helpers: what gets fsynced, and what a failure leaves behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memspace.storage import fsutil


class Synced:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            self.paths.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


def test_atomic_write_syncs_file_then_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "space.json"
    target.write_bytes(b"old")
    synced = Synced(monkeypatch)
    fsutil.atomic_write(target, [b"new ", bytearray(b"content"), memoryview(b"!")])
    assert target.read_bytes() == b"new content!"
    assert synced.paths == [str(tmp_path / "space.json.tmp"), str(tmp_path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.json"]


def test_atomic_write_failure_keeps_the_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def chunks():  # type: ignore[no-untyped-def]
        yield b"partial"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        fsutil.atomic_write(target, chunks())
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_copy_and_truncate_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "a"
    src.write_bytes(os.urandom(20000))
    synced = Synced(monkeypatch)
    assert fsutil.copy_durable(src, tmp_path / "b") == 20000
    assert (tmp_path / "b").read_bytes() == src.read_bytes()
    fsutil.truncate_durable(src, 123)
    assert src.stat().st_size == 123
    assert synced.paths[-1] == str(src)


def test_makedirs_durable_syncs_each_new_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = Synced(monkeypatch)
    made = fsutil.makedirs_durable(tmp_path / "x" / "y")
    assert made.is_dir()
    assert synced.paths == [str(tmp_path), str(tmp_path / "x")]
    synced.paths.clear()
    fsutil.makedirs_durable(tmp_path / "x" / "y")
    assert synced.paths == []


def test_populated_zeros_is_a_writable_zeroed_array() -> None:
    import numpy as np

    a = fsutil.populated_zeros((3, 5), np.float32)
    assert a.shape == (3, 5) and a.dtype == np.float32 and not a.any()
    a[1] = 2.5
    assert a.sum() == 12.5
    empty = fsutil.populated_zeros((0, 5), np.float32)
    assert empty.shape == (0, 5)


def test_map_readonly_gives_the_bytes_without_a_copy(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abcdef")
    m = fsutil.map_readonly(p)
    assert m[1:4] == b"bcd" and len(m) == 6
    (tmp_path / "empty").write_bytes(b"")
    assert fsutil.map_readonly(tmp_path / "empty") == b""
