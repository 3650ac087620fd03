"""Write-ahead log: segment files of CRC-checked records, group commit, torn-tail recovery.

Files (little-endian throughout)::

    wal/<first_seq:020d>.wal       a segment: header, then records; named by its first record's seq
    wal/<segment>.torn-<offset>    a torn tail, copied aside by `Wal.open` before truncating
    wal/repair-<UTC time>/         every file `repair` changed (a copy) or removed (moved here)

Segment header, SEGMENT_HEADER = "<8sHHI" (16 bytes)::

    offset size field
    0      8    magic     b"MSPCWAL1"
    8      2    version   1
    10     2    reserved  0
    12     4    crc32     zlib.crc32 of bytes 0..12

Record, RECORD_HEADER = "<4sBBHQII" (24 bytes), then the payload::

    offset size field
    0      4    magic     b"MSRC": marks a record start, so a scan can tell a torn
                          tail (nothing valid after the damage) from mid-file damage
    4      1    version   1
    5      1    type      0..255, defined by the engine (engine.records); opaque here
    6      2    flags     0 (reserved, ignored on read)
    8      8    seq       u64, consecutive: +1 per record, across segments and restarts
    16     4    length    u32 payload bytes, at most max_record_bytes
    20     4    crc32     zlib.crc32 of header bytes 4..20, continued over the payload
    24     ...  payload

Invariants the recovery rules rely on:

* A segment is fsynced before the next one is created, and a new segment's
  header (and the directory) before any record goes in it. So a crash can only
  leave damage at the end of the *last* segment; damage anywhere else, or a
  valid record after damage, is corruption, never a crash artefact.
* Seqs are consecutive. A gap between segments is allowed only where every
  missing seq is at or below ``start_seq`` (the snapshot LSN: those records are
  in the snapshot).

Failure semantics: an ``OSError`` from a write or fsync propagates and leaves
the ``Wal`` unusable (every later call raises ``StorageError``); the caller must
treat its in-memory state as lost and recover from the files. A failed fsync is
never retried: the kernel may have dropped the dirty pages already.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Self

from memspace.errors import InvalidArgument, PayloadTooLarge, StorageError, WalCorruption
from memspace.storage import fsutil

if TYPE_CHECKING:
    from memspace.storage.walcheck import RepairReport, ScanReport

log = logging.getLogger("memspace.storage.wal")

SEGMENT_MAGIC = b"MSPCWAL1"
SEGMENT_VERSION = 1
SEGMENT_HEADER = struct.Struct("<8sHHI")
assert SEGMENT_HEADER.size == struct.calcsize("<8sHHI") == 16

RECORD_MAGIC = b"MSRC"
RECORD_VERSION = 1
RECORD_HEADER = struct.Struct("<4sBBHQII")
assert RECORD_HEADER.size == struct.calcsize("<4sBBHQII") == 24
CRC_FIELDS = struct.Struct("<BBHQI")  # record header bytes 4..20: the part the CRC covers
assert CRC_FIELDS.size == 16

FSYNC_POLICIES = ("always", "interval", "never")

_HDR = SEGMENT_HEADER.size
_REC = RECORD_HEADER.size


def segment_header() -> bytes:
    head = SEGMENT_MAGIC + struct.pack("<HH", SEGMENT_VERSION, 0)
    return head + struct.pack("<I", zlib.crc32(head))


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.wal"


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One segment file: ``records`` and ``last_seq`` count only valid records (before any damage)."""

    path: Path
    first_seq: int          # from the file name
    records: int
    last_seq: int | None
    bytes: int


class WalRecord(NamedTuple):
    seq: int
    type: int
    payload: bytes | memoryview


@dataclass(slots=True)
class _Chunk:
    """Appended bytes not yet handed to the OS; ``new_first`` set: they start a new segment."""

    new_first: int | None
    buf: bytearray = field(default_factory=bytearray)
    last_seq: int = 0


class Wal:
    """An open write-ahead log directory. Single-threaded; one process per directory.

    ``append`` only buffers; ``commit`` hands the buffer to the OS and fsyncs per
    policy (``always``: every commit that wrote something; ``interval``: when
    ``fsync_interval_s`` has passed since the last fsync, the caller schedules a
    ``sync`` at ``sync_due()`` for the rest; ``never``: only ``sync``/``close`` and
    segment rotation). ``durable_seq`` is the highest seq known to be on stable storage.
    """

    def __init__(self, directory: Path, segments: list[SegmentInfo], *, fsync: str,
                 fsync_interval_s: float, segment_bytes: int, max_record_bytes: int,
                 clock: Callable[[], float], last_seq: int, ends: array[int], ends_base: int) -> None:
        self._dir = directory
        self._segments = segments          # on disk, oldest first; records of [i] < [i+1].first_seq
        self._policy = fsync
        self._interval = fsync_interval_s
        self._segment_bytes = segment_bytes
        self._max_record = max_record_bytes
        self._clock = clock
        self._last_seq = last_seq          # appended
        self._written_seq = last_seq       # handed to the OS
        self._durable_seq = last_seq       # fsynced (open fsyncs what it found)
        self._synced_at = clock()
        self._pending: list[_Chunk] = []
        self._fd: int | None = None
        self._need_new = True              # next append starts a segment
        self._tail_bytes = 0               # size of the segment appends go to, pending included
        self._tail_records = 0
        # bytes_since(): ends[i] = log position just after record ends_base + i
        self._ends = ends
        self._ends_base = ends_base
        self._pos = sum(s.bytes for s in segments)
        self._dropped = 0
        self._failed: BaseException | None = None
        self._closed = False

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: fsutil.StrPath, *, fsync: str = "always", fsync_interval_s: float = 0.05,
             segment_bytes: int = 64 << 20, start_seq: int = 0, clock: Callable[[], float] = time.monotonic,
             max_record_bytes: int = 64 << 20) -> Wal:
        """Open (creating if needed) the WAL in ``directory`` and recover it.

        Every segment is validated (CRCs, seq continuity). A torn tail of the last
        segment is copied to ``<segment>.torn-<offset>``, cut off and logged as a
        WARNING; an empty last segment is removed; the last segment is fsynced, so
        everything ``records()`` replays is durable. Any other damage raises
        ``WalCorruption(path, offset, reason)`` with nothing on disk modified.
        ``start_seq`` is the LSN of the snapshot recovery starts from: appends
        continue at ``max(last seq on disk, start_seq) + 1``.
        """
        if fsync not in FSYNC_POLICIES:
            raise InvalidArgument(f"wal fsync policy must be one of {FSYNC_POLICIES}, not {fsync!r}",
                                  {"field": "fsync", "value": fsync})
        if fsync_interval_s < 0:
            raise InvalidArgument(f"fsync_interval_s must be >= 0, not {fsync_interval_s}",
                                  {"field": "fsync_interval_s"})
        if segment_bytes < _HDR + _REC:
            raise InvalidArgument(f"segment_bytes must be >= {_HDR + _REC}, not {segment_bytes}",
                                  {"field": "segment_bytes"})
        if not 0 <= max_record_bytes <= 0xFFFFFFFF:
            raise InvalidArgument(f"max_record_bytes must be in 0..2**32-1, not {max_record_bytes}",
                                  {"field": "max_record_bytes"})
        if start_seq < 0:
            raise InvalidArgument(f"start_seq must be >= 0, not {start_seq}", {"field": "start_seq"})
        # walcheck builds on this module's format; imported here to keep the dependency one-way
        from memspace.storage.walcheck import examine

        path = fsutil.makedirs_durable(directory)
        ends: array[int] = array("q")
        exam = examine(path, start_seq, max_record_bytes, ends)
        problem = exam.problem
        segments = list(exam.segments)
        if problem is not None:
            if not problem.torn:
                raise WalCorruption(str(problem.path), problem.offset, problem.reason)
            assert exam.problem_data is not None
            _cut_tail(problem.path, problem.offset, problem.reason, exam.problem_data)
            segments[-1] = replace(segments[-1], bytes=problem.offset)
        if segments and segments[-1].records == 0:
            # nothing but a header (crash right after creating it, or all of it torn)
            while segments and segments[-1].records == 0:
                os.unlink(segments.pop().path)
            fsutil.fsync_dir(path)
        on_disk = exam.last_seq if exam.last_seq is not None else 0
        last_seq = max(on_disk, start_seq)
        if exam.last_seq is None or start_seq > on_disk:
            ends = array("q")
            ends_base = last_seq + 1
        else:
            ends_base = exam.ends_base
        if segments and start_seq > on_disk:
            log.warning("WAL %s ends at seq %d but the snapshot covers up to %d; continuing at %d",
                        path, on_disk, start_seq, start_seq + 1)
        wal = cls(path, segments, fsync=fsync, fsync_interval_s=fsync_interval_s,
                  segment_bytes=segment_bytes, max_record_bytes=max_record_bytes, clock=clock,
                  last_seq=last_seq, ends=ends, ends_base=ends_base)
        if segments:
            wal._adopt_last_segment(append=on_disk >= start_seq)
        return wal

    def _adopt_last_segment(self, append: bool) -> None:
        """fsync the last segment (replayed data must be durable) and keep appending to it if it fits."""
        last = self._segments[-1]
        append = append and last.bytes < self._segment_bytes
        fd = os.open(last.path, os.O_WRONLY | os.O_APPEND if append else os.O_RDONLY)
        try:
            fsutil.fdatasync(fd)
        except BaseException:
            os.close(fd)
            raise
        if not append:
            os.close(fd)
            return
        self._fd, self._need_new = fd, False
        self._tail_bytes, self._tail_records = last.bytes, last.records

    # -- state -------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def last_seq(self) -> int:
        """Highest seq appended (buffered or written)."""
        return self._last_seq

    @property
    def durable_seq(self) -> int:
        """Highest seq known to be fsynced."""
        return self._durable_seq

    @property
    def segments(self) -> tuple[Path, ...]:
        """Segment files on disk, oldest first."""
        return tuple(s.path for s in self._segments)

    @property
    def total_bytes(self) -> int:
        """Bytes of the WAL: segment files on disk plus appended bytes not yet written."""
        return self._pos - self._dropped

    @property
    def first_seq(self) -> int:
        """The seq of the oldest record on disk (``last_seq + 1`` when there is none)."""
        for seg in self._segments:
            if seg.records:
                return seg.first_seq
        return self._last_seq + 1

    def bytes_since(self, seq: int) -> int:
        """WAL bytes holding records after ``seq`` (all bytes when ``seq`` predates the segments)."""
        if seq >= self._last_seq:
            return 0
        i = seq - self._ends_base
        if i < 0:
            return self.total_bytes
        return self._pos - self._ends[i]

    # -- reading -----------------------------------------------------------------------------

    def records(self, after_seq: int = 0) -> Iterator[WalRecord]:
        """Yield the records on disk with seq > ``after_seq``, oldest first, CRC-checked.

        Payloads are ``bytes`` copies, so keeping one does not pin a segment. Appended
        records are included once ``commit``/``sync`` wrote them. Damage raises
        ``WalCorruption``. (Recovery reads :meth:`payloads` instead.)
        """
        for path in self._segments_after(after_seq):
            yield from _segment_records(path, after_seq, self._max_record)

    def payloads(self, after_seq: int = 0) -> Iterator[tuple[int, int, memoryview]]:
        """``(seq, type, payload)`` of the records on disk with seq > ``after_seq``, oldest
        first, unchecked: the hot path of a restart, replaying right after :meth:`open`
        has checked every record.

        Nothing is copied: each payload is a view of the memory-mapped segment, valid for
        as long as it is referenced (keeping one keeps its segment mapped). Headers are
        walked, not checked, beyond their magic and length.
        """
        for path in self._segments_after(after_seq):
            yield from _segment_views(path, after_seq)

    def _segments_after(self, after_seq: int) -> list[Path]:
        """The segments that may hold records with seq > ``after_seq``."""
        segments = list(self._segments)
        return [seg.path for i, seg in enumerate(segments)
                if i + 1 == len(segments) or segments[i + 1].first_seq - 1 > after_seq]

    # -- writing -----------------------------------------------------------------------------

    def append(self, type: int, payload: bytes) -> int:
        """Buffer one record and return its seq. No I/O; ``commit`` writes it.

        Raises ``InvalidArgument`` for a type outside 0..255 and ``PayloadTooLarge``
        above ``max_record_bytes``; nothing is appended then.
        """
        self._check_usable()
        if not 0 <= type <= 255:
            raise InvalidArgument(f"WAL record type must be in 0..255, not {type}", {"field": "type"})
        n = len(payload)
        if n > self._max_record:
            raise PayloadTooLarge(f"WAL record of {n} bytes exceeds max_record_bytes={self._max_record}",
                                  {"field": "payload", "bytes": n, "max": self._max_record})
        seq = self._last_seq + 1
        size = _REC + n
        if self._need_new or (self._tail_records and self._tail_bytes + size > self._segment_bytes):
            self._pending.append(_Chunk(seq))
            self._need_new = False
            self._tail_bytes = self._tail_records = 0
            self._tail_bytes += _HDR
            self._pos += _HDR
        elif not self._pending:
            self._pending.append(_Chunk(None))
        chunk = self._pending[-1]
        crc = zlib.crc32(payload, zlib.crc32(CRC_FIELDS.pack(RECORD_VERSION, type, 0, seq, n)))
        chunk.buf += RECORD_HEADER.pack(RECORD_MAGIC, RECORD_VERSION, type, 0, seq, n, crc)
        chunk.buf += payload
        chunk.last_seq = seq
        self._tail_bytes += size
        self._tail_records += 1
        self._pos += size
        self._ends.append(self._pos)
        self._last_seq = seq
        return seq

    def commit(self) -> bool:
        """Write the buffer to the OS, then fsync per policy; return True if it fsynced.

        An ``OSError`` propagates and the ``Wal`` becomes unusable (see module doc).
        """
        self._check_usable()
        self._write()
        if self._written_seq <= self._durable_seq:
            return False
        if self._policy == "always" or (
                self._policy == "interval" and self._clock() - self._synced_at >= self._interval):
            self._fsync()
            return True
        return False

    def flush(self) -> None:
        """Hand buffered records to the OS without an fsync (they survive a crash of this
        process, not of the machine). For records nobody waits on, e.g. recall reinforcement."""
        self._check_usable()
        self._write()

    @property
    def buffered_bytes(self) -> int:
        """Bytes appended but not yet handed to the OS."""
        return sum(len(chunk.buf) for chunk in self._pending)

    def sync(self) -> None:
        """Write the buffer and fsync, whatever the policy (checkpoints, close, interval timers)."""
        self._check_usable()
        self._write()
        if self._written_seq > self._durable_seq:
            self._fsync()

    def sync_due(self) -> float | None:
        """``interval`` policy: seconds until unsynced records are due an fsync; else None."""
        if self._policy != "interval" or self._last_seq <= self._durable_seq:
            return None
        return max(0.0, self._synced_at + self._interval - self._clock())

    def drop_through(self, seq: int) -> list[Path]:
        """Delete closed segments whose records are all <= ``seq``; return their paths.

        The newest segment on disk is never deleted. Pass the LSN of the *oldest*
        snapshot recovery may fall back to, or that fallback finds records missing.
        """
        self._check_usable()
        dropped: list[Path] = []
        while len(self._segments) > 1 and self._segments[1].first_seq - 1 <= seq:
            seg = self._segments.pop(0)
            os.unlink(seg.path)
            self._dropped += seg.bytes
            dropped.append(seg.path)
        if dropped:
            fsutil.fsync_dir(self._dir)
            k = self._segments[0].first_seq - self._ends_base
            if k > 0:
                del self._ends[:k]
                self._ends_base += k
        return dropped

    def close(self) -> None:
        """``sync`` and release the file. Idempotent. After an I/O failure: release only."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.sync()
        finally:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Wal {self._dir} last_seq={self._last_seq} durable_seq={self._durable_seq} "
                f"segments={len(self._segments)} fsync={self._policy}>")

    # -- internals ---------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise StorageError(f"WAL {self._dir} is unusable after an I/O error ({self._failed}); "
                               "reopen it to recover from the files", {"file": str(self._dir)})
        if self._closed:
            raise StorageError(f"WAL {self._dir} is closed", {"file": str(self._dir)})

    def _write(self) -> None:
        if not self._pending:
            return
        try:
            for chunk in self._pending:
                if chunk.new_first is not None:
                    if self._fd is not None:
                        # the old segment must be durable before a newer one exists (module doc)
                        fsutil.fdatasync(self._fd)
                        self._durable_seq = self._written_seq
                        self._synced_at = self._clock()
                        os.close(self._fd)
                        self._fd = None
                    self._fd = self._create_segment(chunk.new_first)
                assert self._fd is not None
                fsutil.write_all(self._fd, chunk.buf)
                seg = self._segments[-1]
                self._segments[-1] = replace(seg, bytes=seg.bytes + len(chunk.buf), last_seq=chunk.last_seq,
                                             records=chunk.last_seq - seg.first_seq + 1)
                self._written_seq = chunk.last_seq
        except BaseException as e:
            self._failed = e
            raise
        self._pending.clear()

    def _create_segment(self, first_seq: int) -> int:
        path = self._dir / segment_name(first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fsutil.write_all(fd, segment_header())
            os.fsync(fd)
            fsutil.fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            raise
        self._segments.append(SegmentInfo(path, first_seq, 0, None, _HDR))
        return fd

    def _fsync(self) -> None:
        assert self._fd is not None
        try:
            fsutil.fdatasync(self._fd)
        except BaseException as e:
            self._failed = e
            raise
        self._durable_seq = self._written_seq
        self._synced_at = self._clock()


def _segment_records(path: Path, after_seq: int, max_record: int) -> Iterator[WalRecord]:
    data = fsutil.map_readonly(path)
    n = len(data)
    if n < _HDR or data[:_HDR] != segment_header():
        raise WalCorruption(str(path), 0, "bad segment header")
    mv = memoryview(data)
    unpack = RECORD_HEADER.unpack_from
    crc32 = zlib.crc32
    off = _HDR
    prev = -1
    while off < n:
        if n - off < _REC:
            raise WalCorruption(str(path), off, "incomplete record header")
        magic, version, type_, _flags, seq, length, crc = unpack(data, off)
        start = off + _REC
        end = start + length
        if magic != RECORD_MAGIC or version != RECORD_VERSION or length > max_record or end > n or seq <= prev:
            raise WalCorruption(str(path), off, "bad record header")
        if seq > after_seq:
            if crc32(mv[start:end], crc32(mv[off + 4:off + 20])) != crc:
                raise WalCorruption(str(path), off, "CRC mismatch")
            yield WalRecord(seq, type_, data[start:end])   # a copy: it does not keep the map alive
        prev = seq
        off = end


def _segment_views(path: Path, after_seq: int) -> Iterator[tuple[int, int, memoryview]]:
    data = fsutil.map_readonly(path)
    n = len(data)
    mv = memoryview(data)
    unpack = RECORD_HEADER.unpack_from
    off = _HDR
    while off + _REC <= n:
        magic, _version, type_, _flags, seq, length, _crc = unpack(data, off)
        start = off + _REC
        off = start + length
        if magic != RECORD_MAGIC or off > n:
            raise WalCorruption(str(path), start - _REC, "bad record header")
        if seq > after_seq:
            yield seq, type_, mv[start:off]
    if off != n and n > _HDR:
        raise WalCorruption(str(path), off, "incomplete record header")


def _cut_tail(path: Path, offset: int, reason: str, data: bytes) -> None:
    """Copy ``data[offset:]`` aside (durably), then truncate segment ``path`` at ``offset``."""
    aside = path.with_name(f"{path.name}.torn-{offset}")
    n = 0
    while aside.exists():  # torn at the same place before: keep both copies
        n += 1
        aside = path.with_name(f"{path.name}.torn-{offset}.{n}")
    fsutil.atomic_write(aside, memoryview(data)[offset:])
    fsutil.truncate_durable(path, offset)
    log.warning("torn WAL tail in %s at offset %d (%s): %d bytes copied to %s, segment truncated",
                path, offset, reason, len(data) - offset, aside.name)


def scan(directory: fsutil.StrPath, *, start_seq: int | None = None,
         max_record_bytes: int = 64 << 20) -> ScanReport:
    """Read-only check of a WAL directory; see :func:`memspace.storage.walcheck.scan`."""
    from memspace.storage import walcheck

    return walcheck.scan(directory, start_seq=start_seq, max_record_bytes=max_record_bytes)


def repair(directory: fsutil.StrPath, *, start_seq: int | None = None,
           max_record_bytes: int = 64 << 20) -> RepairReport:
    """Cut a corrupt WAL back to its last good record; see :func:`memspace.storage.walcheck.repair`."""
    from memspace.storage import walcheck

    return walcheck.repair(directory, start_seq=start_seq, max_record_bytes=max_record_bytes)
