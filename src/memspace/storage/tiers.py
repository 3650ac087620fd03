"""File-backed lower tiers: warm (memory-mapped float16) and cold (zlib-compressed blocks).

Both implement :class:`memspace.engine.tiers.TierStore` over immutable
*segment files* in one directory (``<space>/warm/`` or ``<space>/cold/``):

* ``add(memories)`` writes one NEW segment (tmp file, fsync, rename, fsync
  directory) and returns only when it is durable. Nothing is ever written in
  place.
* ``discard(id)`` only marks a tombstone in RAM; ``state()`` returns the
  manifest ``{"tier", "format", "dimension", "segments": [{"name", "count",
  "bytes"}], "tombstones": [[segment, id], ...]}`` that the space stores in
  its snapshot. Tombstones name the segment because an id may be discarded
  from an old segment and live again in a newer one.
* ``open(directory, manifest)`` loads exactly the manifest's segments (in
  its order, which is add order), applies its tombstones, and deletes (and
  logs) this tier's segment files that no manifest references: orphans of a
  crash between writing a segment and writing the snapshot. Segments named by
  the ``keep`` manifests (an older snapshot kept as a fallback) are spared.
* Compaction (on ``add`` or :meth:`compact`) rewrites each segment whose live
  fraction is below ``min_live_fraction`` and merges runs of adjacent small
  segments (fewer than ``merge_below`` live rows, up to ``merge_max`` rows per
  result) so that many small demotions do not become many open files. The
  replaced files are NOT deleted at once: the snapshot on disk still names
  them until the space writes one with the new manifest. They are deleted by
  :meth:`collect` (call it once that snapshot is durable) or by the next
  ``open``.
* A segment the manifest names that is missing, truncated or fails a checksum
  raises :class:`~memspace.errors.StorageError` naming the file; damage found
  later (a warm record or a cold block read on demand) raises the same.

Not thread-safe: a space's worker owns its tiers. A tier is unusable after
:meth:`close`.

Segment file layout (little-endian), shared 64-byte header::

    0   8  magic        b"MSWARM01" | b"MSCOLD01"
    8   2  version      1
    10  2  reserved     0
    12  4  dimension
    16  8  count        rows
    24  8  data_offset  warm: embeddings start (64); cold: 0
    32  8  dir_offset   directory start
    40  8  dir_length
    48  4  data_crc     warm: CRC-32 of the embeddings; cold: 0
    52  4  dir_crc      CRC-32 of the directory bytes
    56  4  reserved     0
    60  4  header_crc   CRC-32 of bytes 0..60

* warm: ``count x dimension`` float16 embeddings (memory-mapped), then one
  orjson record per row (content, tags, metadata, timestamps, confidence,
  access count), then the orjson directory ``{"ids", "offsets" (count + 1
  record boundaries), "crcs" (per record), "links"}``. Open reads the header,
  directory and embeddings (checksum and norms); records are read per ``get``.
* cold: zlib blocks of up to 32 rows (``u32 meta length | orjson records |
  float16 embeddings``), then the zlib-compressed orjson directory
  ``{"blocks": [[offset, length, crc, rows]], "ids", "links"}``. ``get``
  reads and inflates one block. zlib, not lzma: measured on 32-record blocks
  of 384-d embeddings, zlib inflates ~16x faster (75 us vs 1.2 ms per block)
  and lzma saves under 10% (float data is near-incompressible either way),
  while a cold search inflates every block. Embeddings stay float16, as in
  warm, so demoting warm -> cold loses no further precision.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import sys
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Self

import numpy as np
import numpy.typing as npt
import orjson

from memspace.engine.model import Link, Memory, Vector
from memspace.errors import InvalidArgument, StorageError

log = logging.getLogger(__name__)

FORMAT = 1
_HEADER = struct.Struct("<8sHHIQQQQII4x")
assert _HEADER.size == 60  # + a 4-byte header CRC = 64
HEADER_SIZE = 64
_F16 = np.dtype("<f2")
_NO_LINKS: tuple[Link, ...] = ()
_CHUNK_ROWS = 4096          # rows per write batch
_SEARCH_BYTES = 8 << 20     # float32 scratch per search block
_COLD_BLOCK_ROWS = 32
Floats = npt.NDArray[np.float32]


def plan_compaction(segments: Sequence[tuple[int, int]], *, min_live_fraction: float = 0.5,
                    merge_below: int = 1024, merge_max: int = 65536) -> list[tuple[int, int]]:
    """Which runs ``[start, end)`` of segments ``(live, total)`` to rewrite, each into one segment.

    A segment is *sparse* when ``live < min_live_fraction * total`` and *small*
    when ``live < merge_below``. Adjacent sparse-or-small segments are grouped
    (up to ``merge_max`` live rows, a lone segment may exceed it); a group is
    rewritten if it holds a sparse segment or at least two segments.
    """
    def candidate(i: int) -> bool:
        live, total = segments[i]
        return live < min_live_fraction * total or live < merge_below

    plan: list[tuple[int, int]] = []
    i, n = 0, len(segments)
    while i < n:
        if not candidate(i):
            i += 1
            continue
        j, rows = i, 0
        while j < n and candidate(j) and (j == i or rows + segments[j][0] <= merge_max):
            rows += segments[j][0]
            j += 1
        if j - i >= 2 or any(segments[s][0] < min_live_fraction * segments[s][1] for s in range(i, j)):
            plan.append((i, j))
        i = j
    return plan


# -- file helpers ---------------------------------------------------------------------------------

def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` via a tmp file: fsync, rename, fsync the directory. No partial file is left."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _header(magic: bytes, dim: int, count: int, data_offset: int, dir_offset: int, dir_length: int,
            data_crc: int, dir_crc: int) -> bytes:
    head = _HEADER.pack(magic, FORMAT, 0, dim, count, data_offset, dir_offset, dir_length, data_crc, dir_crc)
    return head + struct.pack("<I", zlib.crc32(head))


def _corrupt(path: Path, reason: str) -> StorageError:
    return StorageError(f"tier segment {path} is unusable: {reason}", {"file": str(path), "reason": reason})


def _batches(items: Iterable[Memory], size: int) -> Iterator[list[Memory]]:
    batch: list[Memory] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _record(m: Memory) -> dict[str, Any]:
    return {"id": m.id, "content": m.content, "confidence": m.confidence, "created_at": m.created_at,
            "last_access": m.last_access, "access_count": m.access_count, "tags": list(m.tags),
            "metadata": dict(m.metadata)}


def _memory(rec: Mapping[str, Any], embedding: Floats, links: tuple[Link, ...], tier: str) -> Memory:
    return replace(Memory.from_dict(rec, embedding=embedding), links=links, tier=tier)


def _links_out(links: tuple[Link, ...]) -> list[list[Any]]:
    return [[link.target, link.weight, link.kind] for link in links]


def _links_in(raw: list[list[Any]]) -> tuple[Link, ...]:
    # Links stay in RAM for every row: share the empty tuple and intern the few distinct kinds.
    if not raw:
        return _NO_LINKS
    return tuple(Link(str(t), float(w), sys.intern(str(k))) for t, w, k in raw)


# -- segments -------------------------------------------------------------------------------------

class _Segment:
    """One loaded, immutable segment file: ids, links and a live mask in RAM; the rest on demand."""

    magic: ClassVar[bytes]
    suffix: ClassVar[str]

    def __init__(self, name: str, path: Path, fd: int, size: int, dim: int,
                 ids: list[str], links: list[tuple[Link, ...]]) -> None:
        self.name, self.path, self.size, self.dim = name, path, size, dim
        self.ids, self.links = ids, links
        self.alive = np.ones(len(ids), dtype=bool)
        self.live = len(ids)
        self._fd = fd

    def kill(self, row: int) -> None:
        if self.alive[row]:
            self.alive[row] = False
            self.live -= 1

    def _pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise _corrupt(self.path, f"short read of {length} bytes at offset {offset}")
        return data

    @classmethod
    def _open(cls, path: Path) -> tuple[int, int, tuple[Any, ...]]:
        """Open ``path`` and check its header; returns (fd, size, header fields)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise _corrupt(path, "file is missing") from None
        try:
            size = os.fstat(fd).st_size
            raw = os.pread(fd, HEADER_SIZE, 0)
            if len(raw) < HEADER_SIZE:
                raise _corrupt(path, f"{size} bytes is shorter than the header")
            if struct.unpack("<I", raw[60:64])[0] != zlib.crc32(raw[:60]):
                raise _corrupt(path, "header checksum mismatch")
            fields = _HEADER.unpack(raw[:60])
            if fields[0] != cls.magic or fields[1] != FORMAT:
                raise _corrupt(path, f"not a {cls.suffix} segment (magic {fields[0]!r}, version {fields[1]})")
            if fields[6] + fields[7] > size:
                raise _corrupt(path, f"truncated: directory ends at {fields[6] + fields[7]}, file has {size} bytes")
            return fd, size, fields
        except BaseException:
            os.close(fd)
            raise

    def _directory(self, offset: int, length: int, crc: int) -> Any:
        raw = self._pread(offset, length)
        if zlib.crc32(raw) != crc:
            raise _corrupt(self.path, "directory checksum mismatch")
        return raw

    def read(self, row: int) -> tuple[dict[str, Any], Floats]:
        """Record and float32 embedding of ``row``."""
        raise NotImplementedError

    def similarities(self, query: Floats) -> Iterator[tuple[int, Floats]]:
        """Cosine of every row to ``query`` as ``(first row, sims)`` blocks; dead rows included."""
        raise NotImplementedError

    def rows(self) -> Iterator[tuple[int, dict[str, Any], Floats]]:
        for row in range(len(self.ids)):
            yield (row, *self.read(row))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _WarmSegment(_Segment):
    magic = b"MSWARM01"
    suffix = "warm"

    @classmethod
    def write(cls, path: Path, memories: Iterable[Memory], count: int, dim: int) -> None:
        emb_bytes = count * dim * _F16.itemsize

        def body(f: BinaryIO) -> None:
            fd = f.fileno()
            # Embeddings have a known size, so they go first (aligned for the memmap) and the
            # records stream after them: one pass over ``memories``, whatever its length.
            rec_pos = HEADER_SIZE + emb_bytes
            offsets, crcs, ids, links = [rec_pos], [], [], []
            emb_crc, row = 0, 0
            for batch in _batches(memories, _CHUNK_ROWS):
                block = np.stack([m.embedding for m in batch]).astype(_F16).tobytes()
                os.pwrite(fd, block, HEADER_SIZE + row * dim * _F16.itemsize)
                emb_crc = zlib.crc32(block, emb_crc)
                row += len(batch)
                chunk = []
                for m in batch:
                    rec = orjson.dumps(_record(m))
                    chunk.append(rec)
                    offsets.append(offsets[-1] + len(rec))
                    crcs.append(zlib.crc32(rec))
                    ids.append(m.id)
                    links.append(_links_out(m.links))
                os.pwrite(fd, b"".join(chunk), rec_pos)
                rec_pos = offsets[-1]
            if row != count:
                raise ValueError(f"segment writer got {row} memories, expected {count}")
            directory = orjson.dumps({"ids": ids, "offsets": offsets, "crcs": crcs, "links": links})
            os.pwrite(fd, directory, rec_pos)
            os.pwrite(fd, _header(cls.magic, dim, count, HEADER_SIZE, rec_pos, len(directory),
                                  emb_crc, zlib.crc32(directory)), 0)

        _write_durably(path, body)

    @classmethod
    def load(cls, path: Path, name: str) -> _WarmSegment:
        fd, size, (_, _, _, dim, count, data_off, dir_off, dir_len, data_crc, dir_crc) = cls._open(path)
        seg = cls(name, path, fd, size, dim, [], [])
        try:
            seg._load(count, data_off, dir_off, dir_len, data_crc, dir_crc)
        except BaseException:
            seg.close()
            raise
        return seg

    def _load(self, count: int, data_off: int, dir_off: int, dir_len: int, data_crc: int, dir_crc: int) -> None:
        if data_off + count * self.dim * _F16.itemsize > dir_off:
            raise _corrupt(self.path, "embeddings overlap the directory")
        try:
            d = orjson.loads(self._directory(dir_off, dir_len, dir_crc))
            self.ids = [str(i) for i in d["ids"]]
            self.links = [_links_in(x) for x in d["links"]]
            self._offsets = np.asarray(d["offsets"], dtype=np.int64)
            self._crcs = np.asarray(d["crcs"], dtype=np.uint32)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise _corrupt(self.path, f"directory unreadable: {e}") from None
        if not (len(self.ids) == len(self.links) == len(self._crcs) == count == len(self._offsets) - 1):
            raise _corrupt(self.path, f"directory lists {len(self.ids)} rows, header says {count}")
        self.alive = np.ones(count, dtype=bool)
        self.live = count
        self._emb: Any = np.memmap(self.path, dtype=_F16, mode="r", offset=data_off, shape=(count, self.dim))
        # One pass over the embeddings at open: verify them, and keep 1/norm per row so search
        # gives the exact cosine of the stored float16 vector (quantisation moves the norm ~1e-3).
        crc, self._inv_norm = 0, np.empty(count, dtype=np.float32)
        for start, block in self._blocks():
            crc = zlib.crc32(self._emb[start:start + len(block)].tobytes(), crc)
            norms = np.linalg.norm(block, axis=1)
            self._inv_norm[start:start + len(block)] = np.divide(1.0, norms, out=np.zeros_like(norms),
                                                                 where=norms > 0)
        if crc != data_crc:
            raise _corrupt(self.path, "embeddings checksum mismatch")

    def _blocks(self) -> Iterator[tuple[int, Floats]]:
        step = max(1, _SEARCH_BYTES // (4 * self.dim))
        for start in range(0, len(self.ids), step):
            yield start, np.asarray(self._emb[start:start + step], dtype=np.float32)

    def read(self, row: int) -> tuple[dict[str, Any], Floats]:
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        raw = self._pread(start, end - start)
        if zlib.crc32(raw) != int(self._crcs[row]):
            raise _corrupt(self.path, f"record {row} ({self.ids[row]!r}) checksum mismatch at offset {start}")
        return orjson.loads(raw), np.array(self._emb[row], dtype=np.float32)

    def similarities(self, query: Floats) -> Iterator[tuple[int, Floats]]:
        # numpy has no fast float16 matmul: convert a block at a time to float32.
        for start, block in self._blocks():
            yield start, (block @ query) * self._inv_norm[start:start + len(block)]

    def close(self) -> None:
        emb: Any = getattr(self, "_emb", None)
        if emb is not None and getattr(emb, "_mmap", None) is not None:
            emb._mmap.close()   # release the mapping now rather than when the GC runs
        self._emb = None
        super().close()


class _ColdSegment(_Segment):
    magic = b"MSCOLD01"
    suffix = "cold"

    @classmethod
    def write(cls, path: Path, memories: Iterable[Memory], count: int, dim: int) -> None:
        def body(f: BinaryIO) -> None:
            f.write(b"\0" * HEADER_SIZE)
            pos, blocks, ids, links = HEADER_SIZE, list[list[int]](), list[str](), list[list[Any]]()
            for batch in _batches(memories, _COLD_BLOCK_ROWS):
                meta = orjson.dumps([_record(m) for m in batch])
                emb = np.stack([m.embedding for m in batch]).astype(_F16).tobytes()
                data = zlib.compress(struct.pack("<I", len(meta)) + meta + emb, 6)
                f.write(data)
                blocks.append([pos, len(data), zlib.crc32(data), len(batch)])
                pos += len(data)
                ids.extend(m.id for m in batch)
                links.extend(_links_out(m.links) for m in batch)
            if len(ids) != count:
                raise ValueError(f"segment writer got {len(ids)} memories, expected {count}")
            directory = zlib.compress(orjson.dumps({"blocks": blocks, "ids": ids, "links": links}), 6)
            f.write(directory)
            f.seek(0)
            f.write(_header(cls.magic, dim, count, 0, pos, len(directory), 0, zlib.crc32(directory)))

        _write_durably(path, body)

    @classmethod
    def load(cls, path: Path, name: str) -> _ColdSegment:
        fd, size, (_, _, _, dim, count, _, dir_off, dir_len, _, dir_crc) = cls._open(path)
        seg = cls(name, path, fd, size, dim, [], [])
        try:
            seg._load(count, dir_off, dir_len, dir_crc)
        except BaseException:
            seg.close()
            raise
        return seg

    def _load(self, count: int, dir_off: int, dir_len: int, dir_crc: int) -> None:
        try:
            d = orjson.loads(zlib.decompress(self._directory(dir_off, dir_len, dir_crc)))
            self.ids = [str(i) for i in d["ids"]]
            self.links = [_links_in(x) for x in d["links"]]
            self._blocks = [(int(o), int(n), int(c), int(r)) for o, n, c, r in d["blocks"]]
        except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise _corrupt(self.path, f"directory unreadable: {e}") from None
        self._starts = np.cumsum([0] + [b[3] for b in self._blocks]).tolist()
        if not (len(self.ids) == len(self.links) == count == self._starts[-1]):
            raise _corrupt(self.path, f"directory lists {len(self.ids)} rows, header says {count}")
        if self._blocks and self._blocks[-1][0] + self._blocks[-1][1] > dir_off:
            raise _corrupt(self.path, "blocks overlap the directory")
        self.alive = np.ones(count, dtype=bool)
        self.live = count
        # The last inflated block: get() of neighbours and compaction read blocks in order.
        self._cached: tuple[int, list[dict[str, Any]], Floats] | None = None

    def _block(self, b: int) -> tuple[list[dict[str, Any]], Floats]:
        if self._cached is not None and self._cached[0] == b:
            return self._cached[1], self._cached[2]
        offset, length, crc, rows = self._blocks[b]
        data = self._pread(offset, length)
        if zlib.crc32(data) != crc:
            raise _corrupt(self.path, f"block {b} checksum mismatch at offset {offset}")
        try:
            raw = zlib.decompress(data)
            (meta_len,) = struct.unpack_from("<I", raw)
            records = orjson.loads(raw[4:4 + meta_len])
            emb = np.frombuffer(raw, dtype=_F16, offset=4 + meta_len).reshape(rows, self.dim)
        except (zlib.error, struct.error, orjson.JSONDecodeError, ValueError) as e:
            raise _corrupt(self.path, f"block {b} at offset {offset} unreadable: {e}") from None
        self._cached = (b, records, emb.astype(np.float32))
        return records, self._cached[2]

    def read(self, row: int) -> tuple[dict[str, Any], Floats]:
        b = bisect_right(self._starts, row) - 1
        records, emb = self._block(b)
        return records[row - self._starts[b]], emb[row - self._starts[b]].copy()

    def rows(self) -> Iterator[tuple[int, dict[str, Any], Floats]]:
        for b in range(len(self._blocks)):
            records, emb = self._block(b)
            for i, rec in enumerate(records):
                yield self._starts[b] + i, rec, emb[i]

    def similarities(self, query: Floats) -> Iterator[tuple[int, Floats]]:
        for b in range(len(self._blocks)):
            start, end = self._starts[b], self._starts[b + 1]
            if not self.alive[start:end].any():
                continue   # nothing live here: skip the inflate
            _, emb = self._block(b)
            norms = np.linalg.norm(emb, axis=1)
            yield start, ((emb @ query) / np.where(norms > 0, norms, 1.0)).astype(np.float32)


# -- tiers ----------------------------------------------------------------------------------------

class _SegmentTier:
    """The segment bookkeeping both tiers share; see the module docstring for the contract."""

    name: str
    _kind: ClassVar[type[_WarmSegment | _ColdSegment]]

    def __init__(self, directory: Path, *, min_live_fraction: float = 0.5, merge_below: int = 1024,
                 merge_max: int = 65536) -> None:
        self.directory = directory
        self._options = {"min_live_fraction": min_live_fraction, "merge_below": merge_below,
                         "merge_max": merge_max}
        self._segments: list[_Segment] = []
        self._index: dict[str, tuple[_Segment, int]] = {}
        self._retired: list[str] = []
        self._dim: int | None = None
        self._next = 1

    @classmethod
    def open(cls, directory: str | os.PathLike[str], manifest: Mapping[str, Any] | None = None,
             *, keep: Iterable[Mapping[str, Any]] = (), min_live_fraction: float = 0.5,
             merge_below: int = 1024, merge_max: int = 65536) -> Self:
        """Load the tier ``manifest`` (None: empty) describes; delete unreferenced segment files.

        ``keep``: manifests of other snapshots (fallbacks) whose segments must not be deleted.
        Raises StorageError naming the file for a missing or damaged segment.
        """
        directory = Path(directory)
        if not directory.is_dir():
            directory.mkdir(parents=True)
            _fsync_dir(directory.parent)
        tier = cls(directory, min_live_fraction=min_live_fraction, merge_below=merge_below,
                   merge_max=merge_max)
        entries, tombstones, tier._dim = cls._parse(manifest)
        needed = {name for name, _ in entries}
        for other in keep:
            needed.update(name for name, _ in cls._parse(other)[0])
        pattern = re.compile(rf"(\d+)\.{cls._kind.suffix}(\.tmp)?")
        ours = [(p, m) for p in sorted(directory.iterdir()) if (m := pattern.fullmatch(p.name)) is not None]
        # Names only grow, past every file on disk and every name a manifest mentions.
        tier._next = max([1] + [int(m[1]) + 1 for _, m in ours] + [int(n.split(".")[0]) + 1 for n in needed])
        try:
            for name, count in entries:
                seg = cls._kind.load(directory / name, name)
                tier._segments.append(seg)
                if len(seg.ids) != count or seg.dim != tier._dim:
                    raise _corrupt(seg.path, f"holds {len(seg.ids)} rows of dimension {seg.dim}, "
                                             f"the manifest says {count} of {tier._dim}")
            tier._apply_tombstones(tombstones)
            tier._reindex()
        except BaseException:
            tier.close()
            raise
        # Only once this manifest loaded: a caller that falls back to an older snapshot after a
        # failure here must still find that snapshot's segments.
        orphans = [p for p, _ in ours if p.name not in needed]
        for path in orphans:
            log.warning("deleting %s tier segment %s: no manifest references it", cls.name, path)
            path.unlink()
        if orphans:
            _fsync_dir(directory)
        return tier

    @classmethod
    def _parse(cls, manifest: Mapping[str, Any] | None) -> tuple[list[tuple[str, int]], list[list[str]], int | None]:
        """(segments as (name, count), tombstones as [segment, id], dimension); StorageError if malformed."""
        if manifest is None:
            return [], [], None
        try:
            if manifest["tier"] != cls.name or manifest["format"] != FORMAT:
                raise ValueError(f"it is for tier {manifest['tier']!r} format {manifest['format']!r}")
            pattern = re.compile(rf"\d+\.{cls._kind.suffix}")
            entries = [(str(s["name"]), int(s["count"])) for s in manifest["segments"]]
            bad = [name for name, _ in entries if pattern.fullmatch(name) is None]
            if bad:
                raise ValueError(f"{bad} are not {cls._kind.suffix} segment names")
            tombstones = [[str(seg), str(mid)] for seg, mid in manifest["tombstones"]]
            dim = manifest["dimension"]
            return entries, tombstones, None if dim is None else int(dim)
        except (KeyError, TypeError, ValueError) as e:
            raise StorageError(f"{cls.name} tier manifest is invalid: {e}", {"reason": str(e)}) from None

    def _apply_tombstones(self, tombstones: list[list[str]]) -> None:
        by_name = {s.name: s for s in self._segments}
        rows: dict[str, dict[str, int]] = {}
        for name, mid in tombstones:
            seg = by_name.get(name)
            if seg is None:
                raise StorageError(f"{self.name} tier manifest has a tombstone for unknown segment {name}",
                                   {"segment": name})
            if name not in rows:
                rows[name] = {i: r for r, i in enumerate(seg.ids)}
            if mid not in rows[name]:
                raise _corrupt(seg.path, f"manifest tombstone {mid!r} is not in this segment")
            seg.kill(rows[name][mid])

    def _reindex(self) -> None:
        """Rebuild id -> (segment, row) in add order; an id live twice keeps its newest copy."""
        self._index = {}
        for seg in self._segments:
            for row in np.flatnonzero(seg.alive).tolist():
                old = self._index.pop(seg.ids[row], None)
                if old is not None:
                    log.warning("%s tier: %r live in %s and %s; keeping the newer",
                                self.name, seg.ids[row], old[0].name, seg.name)
                    old[0].kill(old[1])
                self._index[seg.ids[row]] = (seg, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, memory_id: object) -> bool:
        return isinstance(memory_id, str) and memory_id in self._index

    def ids(self) -> Iterator[str]:
        return iter(list(self._index))

    def get(self, memory_id: str) -> Memory | None:
        loc = self._index.get(memory_id)
        if loc is None:
            return None
        seg, row = loc
        rec, emb = seg.read(row)
        return _memory(rec, emb, seg.links[row], self.name)

    def links(self, memory_id: str) -> tuple[Link, ...]:
        loc = self._index.get(memory_id)
        return loc[0].links[loc[1]] if loc is not None else _NO_LINKS

    def search(self, query: Vector, k: int) -> list[tuple[str, float]]:
        """Exact cosine over live rows, best first; ties keep add order."""
        if k <= 0 or not self._index:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self._dim:
            raise InvalidArgument(f"query has dimension {q.shape[0]}, the {self.name} tier holds {self._dim}",
                                  {"field": "embedding"})
        ids: list[str] = []
        sims: list[Floats] = []
        for seg in self._segments:
            if seg.live == 0:
                continue
            for start, block in seg.similarities(q):
                live = np.flatnonzero(seg.alive[start:start + len(block)])
                if len(live) > k:
                    live = np.sort(live[np.argpartition(-block[live], k - 1)[:k]])
                ids.extend(seg.ids[start + r] for r in live.tolist())
                sims.append(block[live].astype(np.float32))
        allsims = np.concatenate(sims)
        order = np.argsort(-allsims, kind="stable")[:k]
        return [(ids[i], float(allsims[i])) for i in order.tolist()]

    def add(self, memories: Sequence[Memory]) -> None:
        """Write ``memories`` as one new segment, durable on return; an id already here is replaced.

        Raises InvalidArgument (nothing written) for a repeated id or a wrong dimension, OSError
        if the write fails (nothing changes). Then compacts as the module docstring says; if that
        finds a damaged segment, StorageError propagates but the add itself has taken effect.
        """
        if not memories:
            return
        seen: set[str] = set()
        dim = self._dim if self._dim is not None else int(np.asarray(memories[0].embedding).shape[-1])
        for m in memories:
            if m.id in seen:
                raise InvalidArgument(f"memory id {m.id!r} appears twice in one {self.name} tier add",
                                      {"field": "id", "id": m.id})
            seen.add(m.id)
            if np.shape(m.embedding) != (dim,):
                raise InvalidArgument(f"memory {m.id!r} has embedding shape {np.shape(m.embedding)}, "
                                      f"the {self.name} tier holds dimension {dim}", {"field": "embedding"})
        seg = self._write(memories, len(memories), dim)
        self._dim = dim
        for m in memories:
            old = self._index.pop(m.id, None)
            if old is not None:
                old[0].kill(old[1])
        self._segments.append(seg)
        for row, mid in enumerate(seg.ids):
            self._index[mid] = (seg, row)
        self.compact()

    def _write(self, memories: Iterable[Memory], count: int, dim: int) -> _Segment:
        name = f"{self._next:08d}.{self._kind.suffix}"
        self._next += 1
        path = self.directory / name
        self._kind.write(path, memories, count, dim)
        return self._kind.load(path, name)   # re-reading verifies what was written

    def discard(self, memory_id: str) -> None:
        loc = self._index.pop(memory_id, None)
        if loc is not None:
            loc[0].kill(loc[1])

    def compact(self) -> dict[str, Any]:
        """Rewrite sparse segments and merge small neighbours (durably); returns the new manifest.

        The replaced files stay on disk until :meth:`collect` or the next ``open``.
        """
        plan = plan_compaction([(s.live, len(s.ids)) for s in self._segments],
                               min_live_fraction=float(self._options["min_live_fraction"]),
                               merge_below=int(self._options["merge_below"]),
                               merge_max=int(self._options["merge_max"]))
        try:
            for start, end in reversed(plan):   # back to front, so earlier indices stay valid
                group = self._segments[start:end]
                live = sum(s.live for s in group)
                fresh = [self._write(self._live(group), live, int(self._dim or 0))] if live else []
                self._segments[start:end] = fresh
                for old in group:
                    old.close()
                    self._retired.append(old.name)
        finally:
            if plan:   # also after a failed group: the groups done so far are in place
                self._reindex()
        return self.state()

    def _live(self, group: Sequence[_Segment]) -> Iterator[Memory]:
        for seg in group:
            for row, rec, emb in seg.rows():
                if seg.alive[row]:
                    yield _memory(rec, emb, seg.links[row], self.name)

    def collect(self, keep: Iterable[Mapping[str, Any]] = ()) -> list[str]:
        """Delete segment files compaction replaced, except those ``keep`` manifests still name.

        Call after the snapshot holding :meth:`state` is durable. Returns the deleted names.
        """
        needed = {s.name for s in self._segments}
        for other in keep:
            needed.update(name for name, _ in self._parse(other)[0])
        deleted = [n for n in self._retired if n not in needed]
        for name in deleted:
            (self.directory / name).unlink(missing_ok=True)
        self._retired = [n for n in self._retired if n in needed]
        if deleted:
            _fsync_dir(self.directory)
        return deleted

    def state(self) -> dict[str, Any]:
        return {
            "tier": self.name, "format": FORMAT, "dimension": self._dim,
            "segments": [{"name": s.name, "count": len(s.ids), "bytes": s.size} for s in self._segments],
            "tombstones": [[s.name, s.ids[r]] for s in self._segments for r in np.flatnonzero(~s.alive).tolist()],
        }

    def close(self) -> None:
        """Release file descriptors and memory maps. Idempotent."""
        for seg in self._segments:
            seg.close()
        self._segments, self._index = [], {}


class WarmTier(_SegmentTier):
    """Memories on disk, embeddings memory-mapped as float16; exact cosine search over them."""

    name = "warm"
    _kind = _WarmSegment


class ColdTier(_SegmentTier):
    """Memories in zlib-compressed blocks; ``get`` inflates one block, ``search`` all live ones."""

    name = "cold"
    _kind = _ColdSegment
