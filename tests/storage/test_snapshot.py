"""Snapshots on real files: round trip, pruning, verification and fallback, interrupted writes."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from memspace.errors import InvalidArgument, SnapshotCorruption
from memspace.storage import fsutil
from memspace.storage.snapshot import (
    HEADER,
    list_snapshots,
    load_latest,
    load_snapshot,
    snapshot_name,
    write_snapshot,
)

LOGGER = "memspace.storage.snapshot"


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((40, 12)).astype(np.float32)
    return {
        "embeddings": base,
        "half": rng.standard_normal((5, 3)).astype(np.float16),
        "ids": np.arange(1000, 1040, dtype=np.int64),
        "flags": rng.random(17) > 0.5,
        "names": np.array(["alpha", "β-beta", "", "gamma-long"], dtype="<U12"),
        "raw": np.array([b"ab", b"\x00\xff", b"zzzz"], dtype="S4"),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "scalar": np.array(3.25),
        "empty": np.zeros((0, 384), np.float32),
        "strided": base[::3, ::2],  # not contiguous: written in C order
        "records": np.array([(1, 2.5), (3, -1.0)], dtype=[("n", "<i4"), ("w", "<f8")]),
        "cube": rng.integers(0, 255, (3, 4, 5), dtype=np.uint8),
    }


META: dict[str, Any] = {"format": 1, "engine": {"ids": ["a", "b"], "n": 2, "x": None},
                        "text": "snow ❄ and ice", "nested": [[1, 2.5, True], {"k": []}]}


def test_round_trip_of_dtypes_and_shapes(tmp_path: Path) -> None:
    original = arrays()
    path = write_snapshot(tmp_path / "snapshots", 42, original, META)
    assert path == tmp_path / "snapshots" / "00000000000000000042.snap"
    snap = load_latest(tmp_path / "snapshots")
    assert snap is not None
    assert (snap.lsn, snap.path, snap.meta) == (42, path, META)
    assert list(snap.arrays) == list(original)
    for name, a in original.items():
        got = snap.arrays[name]
        assert got.dtype == a.dtype and got.shape == a.shape, name
        np.testing.assert_array_equal(got, a, err_msg=name)


def test_loaded_arrays_are_writable_and_independent_of_the_file(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 1, {"e": np.ones((4, 3), np.float32), "i": np.arange(3)}, {})
    snap = load_latest(tmp_path)
    assert snap is not None
    e = snap.arrays["e"]
    assert e.flags.writeable
    e[1, :] = 7.0
    snap.arrays["i"][0] = -5
    assert e[1].tolist() == [7.0, 7.0, 7.0] and snap.arrays["i"].tolist() == [-5, 1, 2]
    again = load_latest(tmp_path)
    assert again is not None and again.arrays["e"][1].tolist() == [1.0, 1.0, 1.0]


def test_data_blocks_are_64_byte_aligned(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path, 3, {"a": np.arange(3, dtype=np.int8), "b": np.arange(5.0)}, {"m": 1})
    data = path.read_bytes()
    magic, version, _, index_len, lsn, size, index_crc, header_crc = HEADER.unpack_from(data)
    assert (magic, version, lsn, size) == (b"MSPCSNP1", 1, 3, len(data))
    assert header_crc == zlib.crc32(data[:36])
    index = orjson.loads(data[40:40 + index_len])
    assert zlib.crc32(data[40:40 + index_len]) == index_crc
    start = -(-(40 + index_len) // 64) * 64
    assert [e["offset"] % 64 for e in index["arrays"]] == [0, 0] and index["meta"]["offset"] % 64 == 0
    b = index["arrays"][1]
    assert data[start + b["offset"]:start + b["offset"] + b["nbytes"]] == np.arange(5.0).tobytes()


def test_keep_prunes_all_but_the_newest(tmp_path: Path) -> None:
    for lsn in (5, 9, 12):
        write_snapshot(tmp_path, lsn, {"a": np.arange(lsn)}, {"lsn": lsn})
    assert [lsn for lsn, _ in list_snapshots(tmp_path)] == [9, 12]
    write_snapshot(tmp_path, 20, {}, {}, keep=1)
    assert list_snapshots(tmp_path) == [(20, tmp_path / snapshot_name(20))]
    for lsn in (21, 22, 23):
        write_snapshot(tmp_path, lsn, {}, {}, keep=3)
    assert [lsn for lsn, _ in list_snapshots(tmp_path)] == [21, 22, 23]


def test_an_older_lsn_written_last_is_not_pruned_away(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 10, {}, {})
    write_snapshot(tmp_path, 11, {}, {})
    path = write_snapshot(tmp_path, 4, {}, {"old": True})
    assert path.exists()


def corrupt(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def index_of(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    index_len = struct.unpack_from("<I", data, 12)[0]
    index: dict[str, Any] = orjson.loads(data[40:40 + index_len])
    index["data_start"] = -(-(40 + index_len) // 64) * 64
    return index


@pytest.mark.parametrize("where,reason", [
    ("magic", "magic"), ("lsn", "header CRC"), ("index", "index CRC"), ("array", "array 'e' CRC"),
    ("meta", "meta CRC"), ("truncated", "bytes, header says"), ("appended", "bytes, header says"),
    ("renamed", "does not match the file name"), ("empty", "too short"),
])
def test_every_kind_of_damage_is_detected(tmp_path: Path, where: str, reason: str) -> None:
    path = write_snapshot(tmp_path, 8, {"e": np.arange(100, dtype=np.float32)}, {"k": "v" * 50})
    index = index_of(path)
    if where == "magic":
        corrupt(path, 2)
    elif where == "lsn":
        corrupt(path, 17)
    elif where == "index":
        corrupt(path, 45)
    elif where == "array":
        corrupt(path, index["data_start"] + index["arrays"][0]["offset"] + 7)
    elif where == "meta":
        corrupt(path, index["data_start"] + index["meta"]["offset"] + 3)
    elif where == "truncated":
        path.write_bytes(path.read_bytes()[:-10])
    elif where == "appended":
        path.write_bytes(path.read_bytes() + b"\x00")
    elif where == "renamed":
        path = path.rename(tmp_path / snapshot_name(9))
    elif where == "empty":
        path.write_bytes(b"")
    with pytest.raises(SnapshotCorruption) as err:
        load_snapshot(path)
    assert reason in err.value.message and err.value.path == str(path)


def test_newest_corrupt_falls_back_to_the_previous(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_snapshot(tmp_path, 10, {"e": np.full(8, 1.0)}, {"lsn": 10})
    newest = write_snapshot(tmp_path, 20, {"e": np.full(8, 2.0)}, {"lsn": 20})
    corrupt(newest, newest.stat().st_size - 2)  # in the meta block
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        snap = load_latest(tmp_path)
    assert snap is not None and (snap.lsn, snap.meta) == (10, {"lsn": 10})
    assert snap.arrays["e"].tolist() == [1.0] * 8
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(newest.name in m and "meta CRC" in m for m in warned)


def test_all_corrupt_raises(tmp_path: Path) -> None:
    for lsn in (10, 20):
        corrupt(write_snapshot(tmp_path, lsn, {"e": np.zeros(4)}, {}), 20)
    with pytest.raises(SnapshotCorruption) as err:
        load_latest(tmp_path)
    assert err.value.path == str(tmp_path / snapshot_name(20))
    assert snapshot_name(10) in err.value.message and snapshot_name(20) in err.value.message


def test_no_snapshot_is_none(tmp_path: Path) -> None:
    assert load_latest(tmp_path / "missing") is None
    assert load_latest(tmp_path) is None
    assert list_snapshots(tmp_path / "missing") == []


def test_interrupted_write_leftovers_are_ignored_then_cleaned(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 10, {"e": np.arange(3)}, {"v": 10})
    leftover = tmp_path / (snapshot_name(30) + fsutil.TMP_SUFFIX)  # crash before the rename
    leftover.write_bytes(b"MSPCSNP1 half written")
    assert [lsn for lsn, _ in list_snapshots(tmp_path)] == [10]
    snap = load_latest(tmp_path)
    assert snap is not None and snap.lsn == 10
    write_snapshot(tmp_path, 11, {}, {})
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [snapshot_name(10), snapshot_name(11)]


def test_failed_write_keeps_the_previous_snapshots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_snapshot(tmp_path, 10, {"e": np.arange(3)}, {"v": 10})
    write_snapshot(tmp_path, 11, {"e": np.arange(4)}, {"v": 11})

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="No space"):
        write_snapshot(tmp_path, 12, {"e": np.arange(5)}, {"v": 12})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [snapshot_name(10), snapshot_name(11)]
    snap = load_latest(tmp_path)
    assert snap is not None and snap.meta == {"v": 11}


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="'objs'"):
        write_snapshot(tmp_path, 1, {"objs": np.array([object()])}, {})
    with pytest.raises(InvalidArgument, match="keep"):
        write_snapshot(tmp_path, 1, {}, {}, keep=0)
    with pytest.raises(InvalidArgument, match="lsn"):
        write_snapshot(tmp_path, -1, {}, {})
    with pytest.raises(TypeError):
        write_snapshot(tmp_path, 1, {}, {"x": object()})
    assert list_snapshots(tmp_path) == []
