"""The warm segment format: float16 embeddings memory-mapped, one checksummed record per row.

After the shared header (:mod:`.segment`):

``count x dimension`` float16 embeddings (memory-mapped), then one
orjson record per row (content, tags, metadata, timestamps, confidence,
access count), then the orjson directory ``{"ids", "offsets" (count + 1
record boundaries), "crcs" (per record), "links"}``. Open reads the header,
directory and embeddings (checksum and norms); records are read per ``get``.

Writing streams ``memories`` once, whatever their number: embeddings have a
known size, so they go first and the records follow them.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from memspace.engine.model import Memory
from memspace.storage.tiers.segment import (
    F16,
    HEADER_SIZE,
    Floats,
    Segment,
    batches,
    corrupt,
    links_in,
    links_out,
    pack_header,
    to_record,
    write_durably,
)

_CHUNK_ROWS = 4096          # rows per write batch
_SEARCH_BYTES = 8 << 20     # float32 scratch per search block


class WarmSegment(Segment):
    magic = b"MSWARM01"
    suffix = "warm"

    @classmethod
    def write(cls, path: Path, memories: Iterable[Memory], count: int, dim: int) -> None:
        emb_bytes = count * dim * F16.itemsize

        def body(f: BinaryIO) -> None:
            fd = f.fileno()
            # Embeddings have a known size, so they go first (aligned for the memmap) and the
            # records stream after them: one pass over ``memories``, whatever its length.
            rec_pos = HEADER_SIZE + emb_bytes
            offsets, crcs, ids, links = [rec_pos], [], [], []
            emb_crc, row = 0, 0
            for batch in batches(memories, _CHUNK_ROWS):
                block = np.stack([m.embedding for m in batch]).astype(F16).tobytes()
                os.pwrite(fd, block, HEADER_SIZE + row * dim * F16.itemsize)
                emb_crc = zlib.crc32(block, emb_crc)
                row += len(batch)
                chunk = []
                for m in batch:
                    rec = orjson.dumps(to_record(m))
                    chunk.append(rec)
                    offsets.append(offsets[-1] + len(rec))
                    crcs.append(zlib.crc32(rec))
                    ids.append(m.id)
                    links.append(links_out(m.links))
                os.pwrite(fd, b"".join(chunk), rec_pos)
                rec_pos = offsets[-1]
            if row != count:
                raise ValueError(f"segment writer got {row} memories, expected {count}")
            directory = orjson.dumps({"ids": ids, "offsets": offsets, "crcs": crcs, "links": links})
            os.pwrite(fd, directory, rec_pos)
            os.pwrite(fd, pack_header(cls.magic, dim, count, HEADER_SIZE, rec_pos, len(directory),
                                  emb_crc, zlib.crc32(directory)), 0)

        write_durably(path, body)

    @classmethod
    def load(cls, path: Path, name: str) -> WarmSegment:
        fd, size, (_, _, _, dim, count, data_off, dir_off, dir_len, data_crc, dir_crc) = cls._open(path)
        seg = cls(name, path, fd, size, dim, [], [])
        try:
            seg._load(count, data_off, dir_off, dir_len, data_crc, dir_crc)
        except BaseException:
            seg.close()
            raise
        return seg

    def _load(self, count: int, data_off: int, dir_off: int, dir_len: int, data_crc: int, dir_crc: int) -> None:
        if data_off + count * self.dim * F16.itemsize > dir_off:
            raise corrupt(self.path, "embeddings overlap the directory")
        try:
            d = orjson.loads(self._directory(dir_off, dir_len, dir_crc))
            self.ids = [str(i) for i in d["ids"]]
            self.links = [links_in(x) for x in d["links"]]
            self._offsets = np.asarray(d["offsets"], dtype=np.int64)
            self._crcs = np.asarray(d["crcs"], dtype=np.uint32)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise corrupt(self.path, f"directory unreadable: {e}") from None
        if not (len(self.ids) == len(self.links) == len(self._crcs) == count == len(self._offsets) - 1):
            raise corrupt(self.path, f"directory lists {len(self.ids)} rows, header says {count}")
        self.alive = np.ones(count, dtype=bool)
        self.live = count
        self._emb: Any = np.memmap(self.path, dtype=F16, mode="r", offset=data_off, shape=(count, self.dim))
        # One pass over the embeddings at open: verify them, and keep 1/norm per row so search
        # gives the exact cosine of the stored float16 vector (quantisation moves the norm ~1e-3).
        crc, self._inv_norm = 0, np.empty(count, dtype=np.float32)
        for start, block in self._blocks():
            crc = zlib.crc32(self._emb[start:start + len(block)].tobytes(), crc)
            norms = np.linalg.norm(block, axis=1)
            self._inv_norm[start:start + len(block)] = np.divide(1.0, norms, out=np.zeros_like(norms),
                                                                 where=norms > 0)
        if crc != data_crc:
            raise corrupt(self.path, "embeddings checksum mismatch")

    def _blocks(self) -> Iterator[tuple[int, Floats]]:
        step = max(1, _SEARCH_BYTES // (4 * self.dim))
        for start in range(0, len(self.ids), step):
            yield start, np.asarray(self._emb[start:start + step], dtype=np.float32)

    def read(self, row: int) -> tuple[dict[str, Any], Floats]:
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        raw = self._pread(start, end - start)
        if zlib.crc32(raw) != int(self._crcs[row]):
            raise corrupt(self.path, f"record {row} ({self.ids[row]!r}) checksum mismatch at offset {start}")
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
