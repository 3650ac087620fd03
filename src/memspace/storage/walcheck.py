"""Validating a WAL directory: the torn-tail/corruption decision, `scan` and `repair`.

The format is drawn at the top of :mod:`memspace.storage.wal`. The rules:

* A record is *bad* if its header is incomplete, its magic or version is wrong,
  its length exceeds ``max_record_bytes``, its payload is incomplete, its CRC
  does not match, or its seq is not the expected one (seqs are consecutive; a
  segment's first record carries the seq in the segment's name).
* A bad record (or a bad segment header) in the **last** segment with no record
  at or after it whose CRC verifies is a **torn tail**: what a crash mid-write
  leaves. ``Wal.open`` copies it aside and truncates.
* Anything else is **corruption**: damage followed by a valid record, damage in
  a non-last segment, or a gap in seqs between segments that is not covered by
  the snapshot (``start_seq``). ``Wal.open`` refuses; ``repair`` cuts the WAL
  back to the last good record after copying everything it touches.
"""

from __future__ import annotations

import datetime
import mmap
import os
import re
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from memspace.storage import fsutil
from memspace.storage.wal import RECORD_HEADER, SEGMENT_HEADER, SegmentInfo, segment_header

_HDR = SEGMENT_HEADER.size
_REC = RECORD_HEADER.size
_SEGMENT_RE = re.compile(r"^(\d{20})\.wal$")


@dataclass(frozen=True)
class WalProblem:
    """The first damage found; ``torn``: a torn tail that ``Wal.open`` cuts off by itself."""

    path: Path
    offset: int
    reason: str
    torn: bool


@dataclass(frozen=True)
class ScanReport:
    """What a WAL directory holds, up to its first problem.

    ``segments`` are those read (the last one is where the problem is, if any);
    ``unscanned`` are the segment files after a problem. ``records``,
    ``first_seq``, ``last_seq`` count the valid records before the problem.
    """

    directory: Path
    segments: tuple[SegmentInfo, ...]
    unscanned: tuple[Path, ...]
    records: int
    first_seq: int | None
    last_seq: int | None
    problem: WalProblem | None
    # for Wal.open: the problem segment's bytes (to copy a torn tail aside), and the
    # seq whose end position is ends[0] when positions were collected
    problem_data: bytes | None = field(default=None, repr=False, compare=False)
    ends_base: int = field(default=0, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class RepairReport:
    """What ``repair`` did. ``changed`` False: nothing was wrong (or only a torn tail), nothing touched."""

    changed: bool
    message: str
    file: Path | None = None
    offset: int | None = None
    reason: str | None = None
    records_kept: int = 0
    last_seq_kept: int | None = None
    backup_dir: Path | None = None
    bytes_moved: int = 0


def segment_files(directory: Path) -> list[tuple[int, Path]]:
    """``(first_seq, path)`` of every segment file, oldest first; other files are ignored."""
    if not directory.is_dir():
        return []
    found = []
    for entry in os.scandir(directory):
        m = _SEGMENT_RE.match(entry.name)
        if m and entry.is_file():
            found.append((int(m.group(1)), Path(entry.path)))
    return sorted(found)


def examine(directory: Path, start_seq: int | None, max_record: int,
            ends: array[int] | None = None) -> ScanReport:
    """Validate every segment in seq order, stopping at the first problem. Read-only.

    ``start_seq``: the snapshot LSN (records up to it may be missing); None when
    unknown, which leaves the start of the WAL unchecked. ``ends``, if given,
    receives the log position just after each valid record (see ``Wal.bytes_since``).
    """
    files = segment_files(directory)
    scanned: list[SegmentInfo] = []
    total = 0
    first_seq: int | None = None
    last_seq: int | None = None
    ends_base = 0
    pos = 0  # log position: bytes of the segments before this one
    for i, (name_seq, path) in enumerate(files):
        data = fsutil.map_readonly(path)   # no copy: the CRCs read every byte once
        problem_at: tuple[int, str] | None = None
        count, seg_last = 0, None
        if len(data) < _HDR:
            problem_at = (0, f"incomplete segment header ({len(data)} of {_HDR} bytes)")
        elif data[:_HDR] != segment_header():
            problem_at = (0, "bad segment header (magic, version or CRC)")
        elif len(data) > _HDR:
            problem_at = _continuity(name_seq, last_seq, start_seq)
            if problem_at is None:
                if last_seq is None or name_seq != last_seq + 1:
                    # first records, or a gap the snapshot covers: positions restart here
                    if ends is not None:
                        del ends[:]
                    ends_base = name_seq
                count, seg_last, off, reason = _parse(data, name_seq, max_record, ends, pos)
                if reason is not None:
                    problem_at = (off, reason)
        scanned.append(SegmentInfo(path, name_seq, count, seg_last, len(data)))
        if count:
            total += count
            first_seq = name_seq if first_seq is None else first_seq
            last_seq = seg_last
        if problem_at is not None:
            offset, reason = problem_at
            torn = i == len(files) - 1 and not _valid_record_from(data, offset)
            # a copy: the caller may truncate the segment, and must not read a map past its end
            return ScanReport(directory, tuple(scanned), tuple(p for _, p in files[i + 1:]), total,
                              first_seq, last_seq, WalProblem(path, offset, reason, torn), bytes(data),
                              ends_base)
        pos += len(data)
    return ScanReport(directory, tuple(scanned), (), total, first_seq, last_seq, None, None, ends_base)


def _continuity(name_seq: int, last_seq: int | None, start_seq: int | None) -> tuple[int, str] | None:
    """Check a segment's first seq (its name) against the records before it."""
    if last_seq is None:
        if start_seq is not None and name_seq > start_seq + 1:
            return (_HDR, (f"records {start_seq + 1}..{name_seq - 1} are missing: the WAL starts "
                           f"at seq {name_seq} but the snapshot covers only up to {start_seq}"))
        return None
    if name_seq <= last_seq:
        return (_HDR, f"segment starts at seq {name_seq} but the previous one ends at {last_seq}")
    if name_seq > last_seq + 1 and (start_seq is None or name_seq - 1 > start_seq):
        return (_HDR, f"seq gap: records {last_seq + 1}..{name_seq - 1} are missing")
    return None


def _parse(data: bytes | mmap.mmap, expect: int, max_record: int, ends: array[int] | None,
           pos: int) -> tuple[int, int | None, int, str | None]:
    """Walk one segment's records: ``(valid records, last seq, stop offset, problem or None)``."""
    n = len(data)
    mv = memoryview(data)
    unpack = RECORD_HEADER.unpack_from
    crc32 = zlib.crc32
    off, count, last = _HDR, 0, None
    while off < n:
        if n - off < _REC:
            return count, last, off, f"incomplete record header ({n - off} of {_REC} bytes)"
        magic, version, _type, _flags, seq, length, crc = unpack(data, off)
        end = off + _REC + length
        if magic != b"MSRC":
            reason = f"bad record magic {bytes(magic)!r}"
        elif version != 1:
            reason = f"unknown record version {version}"
        elif length > max_record:
            reason = f"record length {length} exceeds max_record_bytes={max_record}"
        elif end > n:
            reason = f"incomplete payload ({n - off - _REC} of {length} bytes)"
        elif crc32(mv[off + _REC:end], crc32(mv[off + 4:off + 20])) != crc:
            reason = "CRC mismatch"
        elif seq != expect:
            reason = (f"first record has seq {seq} but the segment name says {expect}" if count == 0
                      else f"seq {seq} where {expect} was expected")
        else:
            off, last, expect = end, seq, seq + 1
            count += 1
            if ends is not None:
                ends.append(pos + end)
            continue
        return count, last, off, reason
    return count, last, off, None


def _valid_record_from(data: bytes | mmap.mmap, start: int) -> bool:
    """Whether any record whose CRC verifies starts at or after ``start`` (torn tail or not)."""
    mv = memoryview(data)
    n = len(data)
    p = data.find(b"MSRC", start)
    while p != -1:
        if p + _REC <= n:
            length, crc = RECORD_HEADER.unpack_from(data, p)[5:]
            end = p + _REC + length
            if end <= n and zlib.crc32(mv[p + _REC:end], zlib.crc32(mv[p + 4:p + 20])) == crc:
                return True
        p = data.find(b"MSRC", p + 1)
    return False


def scan(directory: fsutil.StrPath, *, start_seq: int | None = None,
         max_record_bytes: int = 64 << 20) -> ScanReport:
    """Read-only check: segments, valid records, and the first problem (torn tail or corruption).

    Pass the LSN of the snapshot a recovery would start from as ``start_seq``:
    without it, a gap between segments is reported even where the snapshot covers it.
    """
    report = examine(Path(directory), start_seq, max_record_bytes)
    return _without_data(report)


def _without_data(r: ScanReport) -> ScanReport:
    return ScanReport(r.directory, r.segments, r.unscanned, r.records, r.first_seq, r.last_seq, r.problem)


def repair(directory: fsutil.StrPath, *, start_seq: int | None = None,
           max_record_bytes: int = 64 << 20) -> RepairReport:
    """Cut a corrupt WAL back to the last good record before its first corruption.

    Into a new ``repair-<UTC time>/`` directory it first copies the damaged
    segment, then moves every later segment there; then it truncates the damaged
    segment at the bad offset (or moves it whole if no record before the damage
    remains in it). Everything is fsynced; a crash part-way leaves the damage in
    place, so running ``repair`` again finishes the job without losing bytes.
    Idempotent: on a WAL without corruption it changes nothing and says so (a
    torn tail is left for ``Wal.open`` to cut). Pass the snapshot LSN as
    ``start_seq`` (see ``scan``).
    """
    path = Path(directory)
    exam = examine(path, start_seq, max_record_bytes)
    p = exam.problem
    if p is None or p.torn:
        note = "" if p is None else f"; the torn tail at {p.path.name} offset {p.offset} is cut on open"
        return RepairReport(False, f"no corruption in {path} ({exam.records} records){note}; nothing changed",
                            records_kept=exam.records, last_seq_kept=exam.last_seq)
    backup = _new_backup_dir(path)
    damaged_size = len(exam.problem_data or b"")
    keep_part = p.offset > _HDR
    moved = 0
    if keep_part:
        fsutil.copy_durable(p.path, backup / p.path.name)
        moved += damaged_size - p.offset
    for later in exam.unscanned:
        moved += later.stat().st_size
        os.rename(later, backup / later.name)
    if not keep_part:
        moved += damaged_size
        os.rename(p.path, backup / p.path.name)
    fsutil.fsync_dir(backup)
    fsutil.fsync_dir(path)
    if keep_part:
        fsutil.truncate_durable(p.path, p.offset)
    return RepairReport(
        True,
        f"cut {path} back to seq {exam.last_seq} ({exam.records} records kept): {p.reason} in "
        f"{p.path.name} at offset {p.offset}; {moved} bytes removed, originals in {backup}",
        p.path, p.offset, p.reason, exam.records, exam.last_seq, backup, moved)


def _new_backup_dir(wal_dir: Path) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = wal_dir / f"repair-{stamp}"
    n = 0
    while backup.exists():
        n += 1
        backup = wal_dir / f"repair-{stamp}-{n}"
    backup.mkdir()
    fsutil.fsync_dir(wal_dir)
    return backup
