"""Segment files, the unit both file-backed tiers are made of: header, checks, shared helpers.

A segment is an immutable file written once, durably (tmp file, fsync, rename,
fsync directory: :func:`write_durably`), and read through one file
descriptor. :class:`Segment` is what a loaded segment keeps in RAM (ids, links,
a live mask); its subclasses (:mod:`.warm`, :mod:`.cold`) define the body
layout and how rows are read. Every check that fails raises
:class:`~memspace.errors.StorageError` naming the file (:func:`corrupt`).

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

The body after the header is the warm or the cold format (see :mod:`.warm`,
:mod:`.cold`).
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np
import numpy.typing as npt

from memspace.engine.model import Link, Memory
from memspace.errors import StorageError

FORMAT = 1
_HEADER = struct.Struct("<8sHHIQQQQII4x")
assert _HEADER.size == 60  # + a 4-byte header CRC = 64
HEADER_SIZE = 64
F16 = np.dtype("<f2")
NO_LINKS: tuple[Link, ...] = ()
Floats = npt.NDArray[np.float32]


# -- file helpers ---------------------------------------------------------------------------------

def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, write: Callable[[BinaryIO], None]) -> None:
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
    fsync_dir(path.parent)


def pack_header(magic: bytes, dim: int, count: int, data_offset: int, dir_offset: int, dir_length: int,
            data_crc: int, dir_crc: int) -> bytes:
    head = _HEADER.pack(magic, FORMAT, 0, dim, count, data_offset, dir_offset, dir_length, data_crc, dir_crc)
    return head + struct.pack("<I", zlib.crc32(head))


def corrupt(path: Path, reason: str) -> StorageError:
    return StorageError(f"tier segment {path} is unusable: {reason}", {"file": str(path), "reason": reason})


def batches(items: Iterable[Memory], size: int) -> Iterator[list[Memory]]:
    batch: list[Memory] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def to_record(m: Memory) -> dict[str, Any]:
    return {"id": m.id, "content": m.content, "confidence": m.confidence, "created_at": m.created_at,
            "last_access": m.last_access, "access_count": m.access_count, "tags": list(m.tags),
            "metadata": dict(m.metadata)}


def to_memory(rec: Mapping[str, Any], embedding: Floats, links: tuple[Link, ...], tier: str) -> Memory:
    return replace(Memory.from_dict(rec, embedding=embedding), links=links, tier=tier)


def links_out(links: tuple[Link, ...]) -> list[list[Any]]:
    return [[link.target, link.weight, link.kind] for link in links]


def links_in(raw: list[list[Any]]) -> tuple[Link, ...]:
    # Links stay in RAM for every row: share the empty tuple and intern the few distinct kinds.
    if not raw:
        return NO_LINKS
    return tuple(Link(str(t), float(w), sys.intern(str(k))) for t, w, k in raw)


# -- segments -------------------------------------------------------------------------------------

class Segment:
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
            raise corrupt(self.path, f"short read of {length} bytes at offset {offset}")
        return data

    @classmethod
    def _open(cls, path: Path) -> tuple[int, int, tuple[Any, ...]]:
        """Open ``path`` and check its header; returns (fd, size, header fields)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise corrupt(path, "file is missing") from None
        try:
            size = os.fstat(fd).st_size
            raw = os.pread(fd, HEADER_SIZE, 0)
            if len(raw) < HEADER_SIZE:
                raise corrupt(path, f"{size} bytes is shorter than the header")
            if struct.unpack("<I", raw[60:64])[0] != zlib.crc32(raw[:60]):
                raise corrupt(path, "header checksum mismatch")
            fields = _HEADER.unpack(raw[:60])
            if fields[0] != cls.magic or fields[1] != FORMAT:
                raise corrupt(path, f"not a {cls.suffix} segment (magic {fields[0]!r}, version {fields[1]})")
            if fields[6] + fields[7] > size:
                raise corrupt(path, f"truncated: directory ends at {fields[6] + fields[7]}, file has {size} bytes")
            return fd, size, fields
        except BaseException:
            os.close(fd)
            raise

    def _directory(self, offset: int, length: int, crc: int) -> Any:
        raw = self._pread(offset, length)
        if zlib.crc32(raw) != crc:
            raise corrupt(self.path, "directory checksum mismatch")
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
