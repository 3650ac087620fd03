"""WAL on real files: format, append/commit/replay, seq continuity, rotation, fsync policies."""

from __future__ import annotations

import errno
import os
import struct
import zlib
from pathlib import Path

import pytest

from memspace.errors import InvalidArgument, PayloadTooLarge, StorageError, WalCorruption
from memspace.storage import wal as walmod
from memspace.storage.wal import Wal, scan


def payload(seq: int) -> bytes:
    return f"record-{seq}|".encode() * (1 + seq % 7)


def fill(directory: Path, n: int, **kwargs: object) -> Wal:
    w = Wal.open(directory, **kwargs)  # type: ignore[arg-type]
    for _ in range(n):
        seq = w.last_seq + 1
        assert w.append(seq % 256, payload(seq)) == seq
    w.commit()
    return w


def replay(w: Wal, after: int = 0) -> list[tuple[int, int, bytes]]:
    return [(r.seq, r.type, bytes(r.payload)) for r in w.records(after)]


def expected(first: int, last: int) -> list[tuple[int, int, bytes]]:
    return [(s, s % 256, payload(s)) for s in range(first, last + 1)]


class Counter:
    """Counts os.fsync / os.fdatasync calls (still performing them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsync = self.fdatasync = 0
        real_fsync, real_fdatasync = os.fsync, os.fdatasync

        def fsync(fd: int) -> None:
            self.fsync += 1
            real_fsync(fd)

        def fdatasync(fd: int) -> None:
            self.fdatasync += 1
            real_fdatasync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync)


def test_bytes_on_disk_follow_the_documented_format(tmp_path: Path) -> None:
    with Wal.open(tmp_path) as w:
        w.append(7, b"hello")
    data = (tmp_path / "00000000000000000001.wal").read_bytes()
    head = b"MSPCWAL1" + struct.pack("<HH", 1, 0)
    fields = struct.pack("<BBHQI", 1, 7, 0, 1, 5)
    crc = zlib.crc32(b"hello", zlib.crc32(fields))
    assert data == head + struct.pack("<I", zlib.crc32(head)) + b"MSRC" + fields + struct.pack("<I", crc) + b"hello"


def test_append_commit_reopen_replay(tmp_path: Path) -> None:
    w = fill(tmp_path, 25)
    assert (w.last_seq, w.durable_seq) == (25, 25)
    assert replay(w) == expected(1, 25)
    w.close()
    w.close()  # idempotent
    with Wal.open(tmp_path) as w:
        assert (w.last_seq, w.durable_seq) == (25, 25)
        assert replay(w) == expected(1, 25)
        assert replay(w, after=20) == expected(21, 25)
        assert replay(w, after=25) == []
        assert w.append(1, b"x") == 26
        assert replay(w)[-1] == (25, 25, payload(25))  # 26 not written yet
        w.commit()
        assert replay(w, after=25) == [(26, 1, b"x")]
    with Wal.open(tmp_path) as w:
        assert w.last_seq == 26
        assert len(w.segments) == 1  # reopened segment is appended to


def test_empty_payload_and_type_bounds(tmp_path: Path) -> None:
    with Wal.open(tmp_path) as w:
        w.append(0, b"")
        w.append(255, b"z")
        with pytest.raises(InvalidArgument, match="256"):
            w.append(256, b"x")
        with pytest.raises(InvalidArgument):
            w.append(-1, b"x")
        assert w.last_seq == 2
    with Wal.open(tmp_path) as w:
        assert replay(w) == [(1, 0, b""), (2, 255, b"z")]


def test_payload_too_large_appends_nothing(tmp_path: Path) -> None:
    with Wal.open(tmp_path, max_record_bytes=100) as w:
        w.append(1, b"a" * 100)
        with pytest.raises(PayloadTooLarge, match="101 bytes"):
            w.append(1, b"a" * 101)
        assert w.last_seq == 1
        w.append(1, b"b")
    with Wal.open(tmp_path, max_record_bytes=100) as w:
        assert [r.seq for r in w.records()] == [1, 2]


@pytest.mark.parametrize("kwargs", [
    {"fsync": "sometimes"}, {"segment_bytes": 10}, {"start_seq": -1}, {"fsync_interval_s": -1.0},
    {"max_record_bytes": 1 << 32},
])
def test_bad_options_are_refused(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument, match=next(iter(kwargs))):
        Wal.open(tmp_path / "wal", **kwargs)  # type: ignore[arg-type]


def test_segment_rotation(tmp_path: Path) -> None:
    # 16-byte header + 2 records of 24 + 50 bytes = 164 <= 200 < 238: two records per segment
    with Wal.open(tmp_path, segment_bytes=200) as w:
        for _ in range(7):
            w.append(1, b"p" * 50)
        w.commit()
        assert [p.name for p in w.segments] == [f"{s:020d}.wal" for s in (1, 3, 5, 7)]
        w.append(2, b"q" * 500)  # bigger than a segment: gets one of its own
        w.append(3, b"r")
        w.commit()
        assert [p.name[-8:] for p in w.segments] == ["0001.wal", "0003.wal", "0005.wal", "0007.wal",
                                                     "0008.wal", "0009.wal"]
    sizes = [p.stat().st_size for p in sorted(tmp_path.glob("*.wal"))]
    assert sizes == [164, 164, 164, 90, 16 + 24 + 500, 16 + 25]
    with Wal.open(tmp_path, segment_bytes=200) as w:
        assert [r.seq for r in w.records()] == list(range(1, 10))
        assert [r.seq for r in w.records(after_seq=4)] == list(range(5, 10))
        w.append(1, b"s" * 50)  # last segment (41 bytes) has room
        w.commit()
        assert len(w.segments) == 6


def test_total_bytes_and_bytes_since(tmp_path: Path) -> None:
    w = fill(tmp_path, 10, segment_bytes=300)
    sizes = {s: 24 + len(payload(s)) for s in range(1, 11)}
    assert w.total_bytes == sum(p.stat().st_size for p in w.segments)
    for seq in range(11):
        since = w.bytes_since(seq)
        record_bytes = sum(sizes[s] for s in range(seq + 1, 11))
        # the headers of segments starting after seq are included
        headers = 16 * sum(1 for p in w.segments if int(p.name[:20]) > seq)
        assert since == record_bytes + headers, seq
    rotates = w.segments[-1].stat().st_size + 34 > 300
    w.append(1, b"x" * 10)
    since_10 = 34 + 16 * rotates
    assert w.bytes_since(10) == since_10
    assert w.total_bytes == sum(p.stat().st_size for p in w.segments) + since_10  # pending included
    w.close()
    with Wal.open(tmp_path, segment_bytes=300) as w2:
        assert w2.total_bytes == sum(p.stat().st_size for p in w2.segments)
        assert w2.bytes_since(10) == since_10
        assert w2.bytes_since(11) == 0


def test_drop_through_keeps_seq_monotonic(tmp_path: Path) -> None:
    w = fill(tmp_path, 30, segment_bytes=200)
    firsts = [int(p.name[:20]) for p in w.segments]
    assert len(firsts) > 5
    dropped = w.drop_through(20)
    assert dropped and all(not p.exists() for p in dropped)
    remaining = [int(p.name[:20]) for p in w.segments]
    # every dropped segment ends at or before 20; the first kept one still holds seq 21
    assert remaining[0] <= 21 and [int(p.name[:20]) for p in dropped] == firsts[:len(dropped)]
    assert w.total_bytes == sum(p.stat().st_size for p in w.segments)
    assert replay(w, after=20) == expected(21, 30)
    kept = len(w.segments)
    assert len(w.drop_through(1000)) == kept - 1
    assert len(w.segments) == 1  # the active segment is never dropped
    assert w.bytes_since(20) == w.total_bytes
    w.close()
    # a WAL that starts above 1 needs the snapshot LSN that covers the dropped part
    first_left = int(min(tmp_path.glob("*.wal")).name[:20])
    with pytest.raises(WalCorruption, match="missing"):
        Wal.open(tmp_path, segment_bytes=200)
    with Wal.open(tmp_path, segment_bytes=200, start_seq=first_left - 1) as w:
        assert w.last_seq == 30
        assert w.append(1, b"x") == 31


def test_start_seq_continues_after_all_segments_are_gone(tmp_path: Path) -> None:
    fill(tmp_path, 5).close()
    for p in tmp_path.glob("*.wal"):
        p.unlink()  # as if every segment had been dropped after a checkpoint at lsn 40
    with Wal.open(tmp_path, start_seq=40) as w:
        assert (w.last_seq, w.durable_seq) == (40, 40)
        assert w.bytes_since(40) == 0
        assert w.append(1, b"a") == 41
    with Wal.open(tmp_path, start_seq=40) as w:
        assert replay(w, after=40) == [(41, 1, b"a")]


def test_snapshot_ahead_of_wal_starts_a_new_segment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, 5).close()
    with Wal.open(tmp_path, start_seq=9) as w:
        assert "ends at seq 5" in caplog.text
        assert w.append(1, b"a") == 10
    assert sorted(p.name[-6:] for p in tmp_path.glob("*.wal")) == ["01.wal", "10.wal"]
    # the gap 6..9 is covered by the snapshot: fine with its lsn, a gap without it
    with Wal.open(tmp_path, start_seq=9) as w:
        assert [r.seq for r in w.records(after_seq=9)] == [10]
    assert scan(tmp_path, start_seq=9).ok
    problem = scan(tmp_path).problem
    assert problem is not None and not problem.torn and "6..9" in problem.reason
    with pytest.raises(WalCorruption):
        Wal.open(tmp_path, start_seq=8)


def test_fsync_always_syncs_every_commit_that_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = fill(tmp_path, 1)
    n = Counter(monkeypatch)
    for i in range(5):
        w.append(1, b"x")
        w.append(1, b"y")
        assert w.durable_seq == 1 + 2 * i
        assert w.commit() is True
        assert w.durable_seq == w.last_seq == 3 + 2 * i
    assert w.commit() is False  # nothing new
    assert (n.fdatasync, n.fsync) == (5, 0)
    assert w.sync_due() is None
    w.close()
    assert (n.fdatasync, n.fsync) == (5, 0)


def test_fsync_interval_uses_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]  # times and interval exact in binary floating point
    w = Wal.open(tmp_path, fsync="interval", fsync_interval_s=0.5, clock=lambda: now[0])
    n = Counter(monkeypatch)
    assert w.sync_due() is None
    w.append(1, b"a")
    assert w.sync_due() == 0.5
    assert w.commit() is False  # 0 s since open
    now[0] = 100.25
    w.append(1, b"b")
    assert w.commit() is False
    assert w.sync_due() == 0.25
    assert (w.durable_seq, n.fdatasync) == (0, 0)
    now[0] = 100.5
    assert w.sync_due() == 0.0
    assert w.commit() is True  # nothing new to write, but written records were due
    assert (w.durable_seq, n.fdatasync) == (2, 1)
    assert w.sync_due() is None
    now[0] = 100.75
    w.append(1, b"c")
    assert w.commit() is False
    w.sync()  # the timer the caller scheduled at sync_due()
    assert (w.durable_seq, n.fdatasync) == (3, 2)
    now[0] = 200.0
    w.append(1, b"d")
    assert w.commit() is True  # long idle: the first commit syncs at once
    assert n.fdatasync == 3
    w.close()
    assert n.fdatasync == 3


def test_fsync_never_leaves_it_to_sync_and_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = fill(tmp_path, 1, fsync="never")
    n = Counter(monkeypatch)
    for _ in range(10):
        w.append(1, b"x")
        assert w.commit() is False
    assert (w.durable_seq, n.fdatasync, n.fsync) == (0, 0, 0)
    assert w.sync_due() is None
    assert replay(w)[-1][0] == 11  # written to the OS all the same
    w.sync()
    assert (w.durable_seq, n.fdatasync) == (11, 1)
    w.sync()
    assert n.fdatasync == 1
    w.append(1, b"y")
    w.close()
    assert (w.durable_seq, n.fdatasync) == (12, 2)


def test_rotation_syncs_the_old_segment_and_the_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # whatever the policy: a crash may then only tear the last segment
    n = Counter(monkeypatch)
    w = Wal.open(tmp_path, fsync="never", segment_bytes=200)
    for _ in range(6):  # 3 segments of 2 records
        w.append(1, b"p" * 50)
    assert w.commit() is False
    assert len(w.segments) == 3
    assert n.fdatasync == 2  # segments 1 and 2 before 2 and 3 were created
    assert n.fsync == 2 * 3  # each new file + the directory
    assert w.durable_seq == 4
    w.close()


def test_failed_fsync_makes_the_wal_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = fill(tmp_path, 3)
    calls = []

    def failing(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fdatasync", failing)
    w.append(1, b"lost?")
    with pytest.raises(OSError, match="I/O error"):
        w.commit()
    assert w.durable_seq == 3
    with pytest.raises(StorageError, match="unusable"):
        w.append(1, b"x")
    with pytest.raises(StorageError, match="unusable"):
        w.sync()
    w.close()  # releases without retrying the fsync
    assert len(calls) == 1
    monkeypatch.undo()
    with Wal.open(tmp_path) as w2:  # recovery reads what reached the files
        assert [r.seq for r in w2.records()] == [1, 2, 3, 4]


def test_closed_wal_refuses_writes(tmp_path: Path) -> None:
    w = fill(tmp_path, 1)
    w.close()
    with pytest.raises(StorageError, match="closed"):
        w.append(1, b"x")


def test_replay_detects_damage_made_after_open(tmp_path: Path) -> None:
    w = fill(tmp_path, 5)
    seg = w.segments[0]
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruption, match="CRC") as err:
        list(w.records())
    assert (err.value.path, err.value.offset) == (str(seg), len(data) - 24 - len(payload(5)))
    assert [r.seq for r in w.records(after_seq=5)] == []  # records not replayed are not CRC-checked
    w.close()


def test_other_files_in_the_directory_are_ignored(tmp_path: Path) -> None:
    fill(tmp_path, 2).close()
    (tmp_path / "00000000000000000009.wal.torn-40").write_bytes(b"junk")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "repair-20240101T000000Z").mkdir()
    with Wal.open(tmp_path) as w:
        assert replay(w) == expected(1, 2)
    assert walmod.segment_name(12) == "00000000000000000012.wal"


def test_payloads_are_the_records_in_place(tmp_path: Path) -> None:
    """The replay path: what ``records`` gives, as views of the mapped segments."""
    with Wal.open(tmp_path, segment_bytes=300) as w:
        for seq in range(1, 13):
            w.append(seq % 256, payload(seq))
        w.commit()
        assert len(w.segments) > 2
        views = list(w.payloads())
        assert all(isinstance(p, memoryview) for _, _, p in views)
        assert [(s, t, bytes(p)) for s, t, p in views] == expected(1, 12)
        assert [(s, t, bytes(p)) for s, t, p in w.payloads(after_seq=7)] == expected(8, 12)
        assert list(w.payloads(after_seq=12)) == []
        w.append(1, b"late")
        w.commit()
        assert [(s, bytes(p)) for s, _, p in w.payloads(after_seq=12)] == [(13, b"late")]
    with Wal.open(tmp_path, segment_bytes=300) as w:
        assert [(s, t, bytes(p)) for s, t, p in w.payloads()] == [*expected(1, 12), (13, 1, b"late")]


def test_payloads_refuse_a_header_that_runs_past_the_segment(tmp_path: Path) -> None:
    w = fill(tmp_path, 3)
    seg = w.segments[0]
    data = bytearray(seg.read_bytes())
    struct.pack_into("<I", data, 16 + 16, 10_000)    # the first record's length
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruption, match="bad record header") as err:
        list(w.payloads())
    assert (err.value.path, err.value.offset) == (str(seg), 16)
    w.close()
