"""Torn tails are cut (and copied aside), corruption is refused untouched, repair recovers the prefix."""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from memspace.errors import WalCorruption
from memspace.storage.wal import Wal, repair, scan, segment_header, segment_name

LOGGER = "memspace.storage.wal"


def payload(seq: int) -> bytes:
    return f"record-{seq}|".encode() * (1 + seq % 7)


def build(directory: Path, n: int, segment_bytes: int = 64 << 20) -> list[Path]:
    with Wal.open(directory, segment_bytes=segment_bytes) as w:
        for _ in range(n):
            w.append(1, payload(w.last_seq + 1))
        w.commit()
        return list(w.segments)


def seqs(directory: Path, **kwargs: object) -> list[int]:
    with Wal.open(directory, **kwargs) as w:  # type: ignore[arg-type]
        got = [(r.seq, bytes(r.payload)) for r in w.records()]
    assert all(p == payload(s) for s, p in got)
    return [s for s, _ in got]


def offsets(path: Path) -> list[int]:
    """Record start offsets in a segment, parsed straight from the documented layout."""
    data = path.read_bytes()
    off, found = 16, []
    while off + 24 <= len(data):
        found.append(off)
        off += 24 + struct.unpack_from("<I", data, off + 16)[0]
    return found


def flip(data: bytes, at: int, mask: int = 0x10) -> bytes:
    b = bytearray(data)
    b[at] ^= mask
    return bytes(b)


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def damaged_record(data: bytes, last: int) -> bytes:
    return flip(data, last + 30)


TORN: dict[str, Callable[[bytes, int], tuple[bytes, int]]] = {
    "cut inside the header": lambda d, last: (d[:last + 10], last),
    "cut right after the magic": lambda d, last: (d[:last + 4], last),
    "cut inside the payload": lambda d, last: (d[:last + 24 + 3], last),
    "flipped bit in the last payload": lambda d, last: (flip(d, len(d) - 1, 0x01), last),
    "flipped bit in the last seq": lambda d, last: (flip(d, last + 9), last),
    "zeros after the last record": lambda d, last: (d + bytes(4096), len(d)),
}


@pytest.mark.parametrize("case", list(TORN))
@pytest.mark.parametrize("segment_bytes", [64 << 20, 400])
def test_torn_tail_is_copied_aside_and_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                           case: str, segment_bytes: int) -> None:
    segments = build(tmp_path, 10, segment_bytes)
    seg = segments[-1]
    original = seg.read_bytes()
    damaged, cut = TORN[case](original, offsets(seg)[-1])
    seg.write_bytes(damaged)
    kept = 10 if case.startswith("zeros") else 9
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        w = Wal.open(tmp_path, segment_bytes=segment_bytes)
    aside = seg.with_name(f"{seg.name}.torn-{cut}")
    assert aside.read_bytes() == damaged[cut:]
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert seg.name in warnings[0].getMessage() and f"offset {cut}" in warnings[0].getMessage()
    assert w.last_seq == w.durable_seq == kept
    if cut > 16:
        assert seg.read_bytes() == damaged[:cut] == original[:cut]
    else:  # its only record was torn: the empty segment is gone
        assert not seg.exists()
    assert w.append(1, payload(kept + 1)) == kept + 1
    w.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert seqs(tmp_path, segment_bytes=segment_bytes) == list(range(1, kept + 2))
    assert caplog.records == []  # clean now: nothing more to cut
    assert len(list(tmp_path.glob("*.torn-*"))) == 1


def test_half_a_segment_header_is_a_torn_tail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    build(tmp_path, 10)
    new = tmp_path / segment_name(11)
    new.write_bytes(segment_header()[:8])  # crash while creating the next segment
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        w = Wal.open(tmp_path)
    assert (tmp_path / f"{new.name}.torn-0").read_bytes() == segment_header()[:8]
    assert "offset 0" in caplog.text and new.name in caplog.text
    assert not new.exists()
    assert w.last_seq == 10
    assert w.append(1, payload(11)) == 11
    w.close()
    assert not new.exists()  # 11 went on in segment 1, which had room
    assert seqs(tmp_path) == list(range(1, 12))


def test_a_header_only_last_segment_is_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    build(tmp_path, 3)
    (tmp_path / segment_name(4)).write_bytes(segment_header())  # created, no record yet
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert seqs(tmp_path) == [1, 2, 3]
    assert caplog.records == [] and not list(tmp_path.glob("*.torn-*"))
    assert [p.name for p in tmp_path.glob("*.wal")] == [segment_name(1)]


def test_torn_twice_at_the_same_offset_keeps_both_copies(tmp_path: Path) -> None:
    seg = build(tmp_path, 3)[0]
    clean = seg.read_bytes()
    last = offsets(seg)[-1]
    for junk in (b"MSRC\x01first", b"MSRC\x01second"):
        seg.write_bytes(clean[:last] + junk)
        Wal.open(tmp_path).close()
    assert seg.with_name(f"{seg.name}.torn-{last}").read_bytes() == b"MSRC\x01first"
    assert seg.with_name(f"{seg.name}.torn-{last}.1").read_bytes() == b"MSRC\x01second"


# -- corruption: refused, nothing modified ------------------------------------------------------

def refuse(directory: Path, **kwargs: object) -> WalCorruption:
    before = tree(directory)
    with pytest.raises(WalCorruption) as err:
        Wal.open(directory, **kwargs)  # type: ignore[arg-type]
    assert tree(directory) == before
    return err.value


@pytest.mark.parametrize("where,reason", [(30, "CRC"), (9, "CRC"), (0, "magic"), (4, "version"),
                                          (19, "length")])
def test_damage_in_record_3_of_10_is_corruption(tmp_path: Path, where: int, reason: str) -> None:
    seg = build(tmp_path, 10)[0]
    third = offsets(seg)[2]
    seg.write_bytes(flip(seg.read_bytes(), third + where, 0x40))
    err = refuse(tmp_path)
    assert (err.path, err.offset) == (str(seg), third)
    assert reason in err.reason
    assert err.details == {"file": str(seg), "offset": third, "reason": err.reason}


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damage_in_a_non_last_segment_is_corruption(tmp_path: Path, damage: str) -> None:
    segments = build(tmp_path, 12, segment_bytes=300)
    assert len(segments) >= 3
    first = segments[0]
    last = offsets(first)[-1]
    data = first.read_bytes()
    first.write_bytes(data[:last + 30] if damage == "truncate" else flip(data, len(data) - 1))
    err = refuse(tmp_path, segment_bytes=300)
    assert (err.path, err.offset) == (str(first), last)


def test_bad_header_of_a_non_last_segment_is_corruption(tmp_path: Path) -> None:
    segments = build(tmp_path, 12, segment_bytes=300)
    segments[1].write_bytes(flip(segments[1].read_bytes(), 3))
    err = refuse(tmp_path, segment_bytes=300)
    assert (err.path, err.offset) == (str(segments[1]), 0)


def test_seq_gap_between_segments_is_corruption(tmp_path: Path) -> None:
    segments = build(tmp_path, 12, segment_bytes=300)
    gone = segments[1]
    missing_from = int(gone.name[:20])
    gone.unlink()
    err = refuse(tmp_path, segment_bytes=300)
    assert (err.path, err.offset) == (str(segments[2]), 16)
    assert f"records {missing_from}..{int(segments[2].name[:20]) - 1} are missing" in err.reason


def test_valid_record_after_damage_in_the_last_segment_is_corruption(tmp_path: Path) -> None:
    seg = build(tmp_path, 10)[0]
    ninth = offsets(seg)[8]
    seg.write_bytes(flip(seg.read_bytes(), ninth + 30))  # record 10 after it still verifies
    err = refuse(tmp_path)
    assert (err.path, err.offset, err.reason) == (str(seg), ninth, "CRC mismatch")


def test_verifying_record_with_a_wrong_seq_is_corruption_not_torn(tmp_path: Path) -> None:
    seg = build(tmp_path, 3)[0]
    fields = struct.pack("<BBHQI", 1, 1, 0, 2, 3)  # seq 2 again
    rogue = b"MSRC" + fields + struct.pack("<I", zlib.crc32(b"abc", zlib.crc32(fields))) + b"abc"
    end = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(rogue)
    err = refuse(tmp_path)
    assert (err.offset, err.reason) == (end, "seq 2 where 4 was expected")


def test_oversize_but_valid_last_record_is_not_cut(tmp_path: Path) -> None:
    seg = build(tmp_path, 3)[0]
    # payloads are 18, 27, 36 bytes: record 3 is too long, but it verifies, so it is not torn data
    err = refuse(tmp_path, max_record_bytes=30)
    assert err.offset == offsets(seg)[2] and "exceeds max_record_bytes" in err.reason


# -- repair -----------------------------------------------------------------------------------

def test_repair_keeps_the_records_before_the_damage(tmp_path: Path) -> None:
    seg = build(tmp_path, 10)[0]
    third = offsets(seg)[2]
    damaged = flip(seg.read_bytes(), third + 30)
    seg.write_bytes(damaged)
    report = repair(tmp_path)
    assert report.changed
    assert (report.file, report.offset, report.reason) == (seg, third, "CRC mismatch")
    assert (report.records_kept, report.last_seq_kept) == (2, 2)
    assert report.bytes_moved == len(damaged) - third
    assert report.backup_dir is not None and report.backup_dir.parent == tmp_path
    assert report.backup_dir.name.startswith("repair-")
    assert (report.backup_dir / seg.name).read_bytes() == damaged
    assert seg.read_bytes() == damaged[:third]
    assert seqs(tmp_path) == [1, 2]
    with Wal.open(tmp_path) as w:
        assert w.append(1, payload(3)) == 3
    after = tree(tmp_path)
    again = repair(tmp_path)
    assert not again.changed and "nothing changed" in again.message
    assert (again.records_kept, again.last_seq_kept) == (3, 3)
    assert tree(tmp_path) == after


def test_repair_moves_later_segments_aside(tmp_path: Path) -> None:
    segments = build(tmp_path, 20, segment_bytes=300)
    assert len(segments) >= 4
    target = segments[1]
    second = offsets(target)[1]
    kept_seq = int(target.name[:20])  # records before the damage: all of segment 0 and one more
    originals = {p.name: p.read_bytes() for p in segments}
    target.write_bytes(flip(originals[target.name], second + 2))
    report = repair(tmp_path)
    assert report.changed and (report.file, report.offset) == (target, second)
    assert report.last_seq_kept == kept_seq and report.records_kept == kept_seq
    backup = report.backup_dir
    assert backup is not None
    assert sorted(p.name for p in backup.iterdir()) == sorted(p.name for p in segments[1:])
    for p in segments[2:]:
        assert (backup / p.name).read_bytes() == originals[p.name]
        assert not p.exists()
    assert (backup / target.name).read_bytes() == flip(originals[target.name], second + 2)
    moved = sum(len(originals[p.name]) for p in segments[2:]) + len(originals[target.name]) - second
    assert report.bytes_moved == moved
    assert seqs(tmp_path, segment_bytes=300) == list(range(1, kept_seq + 1))


def test_repair_of_a_gap_moves_whole_segments(tmp_path: Path) -> None:
    segments = build(tmp_path, 20, segment_bytes=300)
    segments[2].unlink()
    kept = int(segments[2].name[:20]) - 1
    originals = {p.name: p.read_bytes() for p in segments[3:]}
    report = repair(tmp_path)
    assert report.changed and (report.file, report.offset) == (segments[3], 16)
    assert report.backup_dir is not None
    assert {p.name: p.read_bytes() for p in report.backup_dir.iterdir()} == originals
    assert report.bytes_moved == sum(len(b) for b in originals.values())
    assert seqs(tmp_path, segment_bytes=300) == list(range(1, kept + 1))
    assert not repair(tmp_path).changed


def test_repair_of_a_healthy_or_torn_wal_changes_nothing(tmp_path: Path) -> None:
    seg = build(tmp_path, 5)[0]
    before = tree(tmp_path)
    report = repair(tmp_path)
    assert not report.changed and report.backup_dir is None and "no corruption" in report.message
    assert (report.records_kept, report.last_seq_kept) == (5, 5)
    data = seg.read_bytes()
    seg.write_bytes(data[:-3])
    before = tree(tmp_path)
    report = repair(tmp_path)
    assert not report.changed and "torn tail" in report.message and report.last_seq_kept == 4
    assert tree(tmp_path) == before
    assert seqs(tmp_path) == [1, 2, 3, 4]


def test_repair_of_a_missing_directory_changes_nothing(tmp_path: Path) -> None:
    report = repair(tmp_path / "nope")
    assert not report.changed and report.records_kept == 0
    assert not (tmp_path / "nope").exists()


# -- scan -------------------------------------------------------------------------------------

def test_scan_reports_segments_and_the_first_problem_read_only(tmp_path: Path) -> None:
    segments = build(tmp_path, 12, segment_bytes=300)
    report = scan(tmp_path)
    assert report.ok and (report.records, report.first_seq, report.last_seq) == (12, 1, 12)
    assert [s.path for s in report.segments] == segments
    assert sum(s.records for s in report.segments) == 12
    assert [s.bytes for s in report.segments] == [p.stat().st_size for p in segments]

    last = segments[-1]
    last.write_bytes(last.read_bytes()[:-2])
    before = tree(tmp_path)
    torn = scan(tmp_path)
    assert torn.problem is not None and torn.problem.torn and torn.problem.path == last
    assert torn.last_seq == 11 and torn.unscanned == ()
    assert tree(tmp_path) == before

    segments[0].write_bytes(flip(segments[0].read_bytes(), 40))
    bad = scan(tmp_path)
    assert bad.problem is not None and not bad.problem.torn
    assert (bad.problem.path, bad.problem.offset) == (segments[0], 16)
    assert bad.records == 0 and bad.unscanned == tuple(segments[1:])
    assert tree(tmp_path) == {**before, segments[0].name: segments[0].read_bytes()}


# -- exhaustive: every cut point and every byte -------------------------------------------------

def restore(directory: Path, files: dict[str, bytes]) -> None:
    for p in directory.iterdir():
        p.unlink()
    for name, data in files.items():
        (directory / name).write_bytes(data)


def test_every_cut_point_of_the_last_segment_is_a_torn_tail(tmp_path: Path) -> None:
    segments = build(tmp_path, 9, segment_bytes=400)
    last = segments[-1]
    files = {p.name: p.read_bytes() for p in segments}
    starts = offsets(last)
    first_in_last = int(last.name[:20])
    for cut in range(len(files[last.name])):
        restore(tmp_path, files)
        last.write_bytes(files[last.name][:cut])
        complete = sum(1 for i, s in enumerate(starts) if s + 24 + len(payload(first_in_last + i)) <= cut)
        assert seqs(tmp_path, segment_bytes=400) == list(range(1, first_in_last + complete)), cut


def test_every_flipped_byte_is_caught(tmp_path: Path) -> None:
    segments = build(tmp_path, 9, segment_bytes=400)
    files = {p.name: p.read_bytes() for p in segments}
    for seg in segments:
        starts = offsets(seg)
        for at in range(len(files[seg.name])):
            restore(tmp_path, files)
            seg.write_bytes(flip(files[seg.name], at, 1 << (at % 8)))
            record = max((s for s in starts if s <= at), default=0)
            if seg == segments[-1] and record == starts[-1]:
                # in the very last record: a torn tail, everything before it is kept
                assert seqs(tmp_path, segment_bytes=400) == list(range(1, 9)), at
                assert seg.with_name(f"{seg.name}.torn-{record}").read_bytes() == flip(
                    files[seg.name], at, 1 << (at % 8))[record:]
            else:
                with pytest.raises(WalCorruption) as err:
                    Wal.open(tmp_path, segment_bytes=400)
                assert (err.value.path, err.value.offset) == (str(seg), record), at
