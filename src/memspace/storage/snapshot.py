"""Snapshots (checkpoints): named numpy arrays + a JSON-able meta dict, as of one WAL seq.

Files: ``snapshots/<lsn:020d>.snap``; ``<name>.tmp`` is an interrupted write
(ignored by readers, deleted by the next ``write_snapshot``). The ``keep``
newest snapshots are kept so recovery can fall back when the newest is damaged.

File layout (little-endian), HEADER = "<8sHHIQQII" (40 bytes)::

    offset size field
    0      8    magic      b"MSPCSNP1"
    8      2    version    1
    10     2    reserved   0
    12     4    index_len  u32 bytes of the index
    16     8    lsn        u64: the snapshot holds every WAL record with seq <= lsn
    24     8    file_size  u64: total bytes (a shorter file was cut short)
    32     4    index_crc  zlib.crc32 of the index
    36     4    header_crc zlib.crc32 of bytes 0..36
    40     ...  index      orjson {"arrays": [{"name", "dtype", "shape", "offset", "nbytes", "crc32"}, ...],
                                   "meta": {"offset", "nbytes", "crc32"}}
           pad  to a multiple of 64: the data area starts here; index offsets are relative to it
           ...  data blocks, each at a multiple of 64: the arrays (C order) in index order, then
                meta (orjson)

``dtype`` is numpy's ``dtype_to_descr`` (e.g. ``"<f4"``; structured dtypes as
lists), so byte order is explicit. Loading reads the file into one writable
uint8 buffer and hands out views of it: the arrays are writable, with no copy
beyond the read (they share that buffer, which lives as long as any of them).
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from memspace.errors import InvalidArgument, SnapshotCorruption
from memspace.storage import fsutil

log = logging.getLogger("memspace.storage.snapshot")

MAGIC = b"MSPCSNP1"
VERSION = 1
HEADER = struct.Struct("<8sHHIQQII")
assert HEADER.size == struct.calcsize("<8sHHIQQII") == 40
ALIGN = 64

_NAME_RE = re.compile(r"^(\d{20})\.snap$")


@dataclass
class Snapshot:
    lsn: int
    arrays: dict[str, npt.NDArray[Any]]
    meta: dict[str, Any]
    path: Path


def snapshot_name(lsn: int) -> str:
    return f"{lsn:020d}.snap"


def list_snapshots(directory: fsutil.StrPath) -> list[tuple[int, Path]]:
    """``(lsn, path)`` of every snapshot file, oldest first (unverified; tmp files excluded)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for entry in os.scandir(d):
        m = _NAME_RE.match(entry.name)
        if m and entry.is_file():
            found.append((int(m.group(1)), Path(entry.path)))
    return sorted(found)


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def write_snapshot(directory: fsutil.StrPath, lsn: int, arrays: Mapping[str, npt.NDArray[Any]],
                   meta: Mapping[str, Any], keep: int = 2) -> Path:
    """Write ``<directory>/<lsn>.snap`` crash-atomically, then delete all but the ``keep`` newest.

    Returns only when the snapshot and its directory entry are durable. The file
    just written is never deleted by the pruning. Raises ``InvalidArgument`` for
    object arrays, a negative lsn or ``keep < 1``; orjson's ``TypeError`` for meta
    it cannot encode; ``OSError`` from the file system (no snapshot is then added).
    """
    if lsn < 0:
        raise InvalidArgument(f"snapshot lsn must be >= 0, not {lsn}", {"field": "lsn"})
    if keep < 1:
        raise InvalidArgument(f"snapshots to keep must be >= 1, not {keep}", {"field": "keep"})
    d = fsutil.makedirs_durable(directory)
    for entry in os.scandir(d):  # leftovers of an interrupted write
        if entry.name.endswith(".snap" + fsutil.TMP_SUFFIX):
            os.unlink(entry.path)
    blocks: list[memoryview] = []
    entries: list[dict[str, Any]] = []
    rel = 0
    for name, arr in arrays.items():
        if arr.dtype.hasobject:
            raise InvalidArgument(f"snapshot array {name!r} has dtype {arr.dtype}, which holds Python objects",
                                  {"field": name})
        a = arr if arr.flags.c_contiguous else arr.copy(order="C")
        raw = a.reshape(-1).view(np.uint8).data
        entries.append({"name": name, "dtype": np.lib.format.dtype_to_descr(a.dtype), "shape": list(a.shape),
                        "offset": rel, "nbytes": raw.nbytes, "crc32": zlib.crc32(raw)})
        blocks.append(raw)
        rel = _align(rel + raw.nbytes)
    meta_bytes = orjson.dumps(meta, option=orjson.OPT_SERIALIZE_NUMPY)
    index = orjson.dumps({"arrays": entries,
                          "meta": {"offset": rel, "nbytes": len(meta_bytes), "crc32": zlib.crc32(meta_bytes)}})
    data_start = _align(HEADER.size + len(index))
    file_size = data_start + rel + len(meta_bytes)
    head = HEADER.pack(MAGIC, VERSION, 0, len(index), lsn, file_size, zlib.crc32(index), 0)
    head = head[:36] + struct.pack("<I", zlib.crc32(head[:36]))

    def chunks() -> Any:
        yield head + index + bytes(data_start - HEADER.size - len(index))
        for raw_block in blocks:
            yield raw_block
            yield bytes(_align(len(raw_block)) - len(raw_block))
        yield meta_bytes

    path = d / snapshot_name(lsn)
    fsutil.atomic_write(path, chunks())
    pruned = [p for _, p in list_snapshots(d)[:-keep] if p != path]
    for p in pruned:
        os.unlink(p)
    if pruned:
        fsutil.fsync_dir(d)
    return path


def load_snapshot(path: fsutil.StrPath) -> Snapshot:
    """Read and verify one snapshot file; ``SnapshotCorruption`` says what is wrong with it."""
    path = Path(path)
    try:
        return _load(path)
    except SnapshotCorruption:
        raise
    except (OSError, ValueError, TypeError, KeyError) as e:  # unreadable, or an index that lies
        raise SnapshotCorruption(str(path), f"{type(e).__name__}: {e}") from e


def _load(path: Path) -> Snapshot:
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        # np.empty, not bytearray: no zero-filling ~150 MB before reading over it
        buf = np.empty(size, np.uint8)
        view = buf.data
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
    if got < HEADER.size:
        raise SnapshotCorruption(str(path), f"file too short ({got} bytes)")
    magic, version, _reserved, index_len, lsn, file_size, index_crc, header_crc = HEADER.unpack_from(view)
    if magic != MAGIC:
        raise SnapshotCorruption(str(path), f"bad magic {bytes(magic)!r}")
    if zlib.crc32(view[:36]) != header_crc:
        raise SnapshotCorruption(str(path), "header CRC mismatch")
    if version != VERSION:
        raise SnapshotCorruption(str(path), f"unknown format version {version}")
    if file_size != got:
        raise SnapshotCorruption(str(path), f"file has {got} bytes, header says {file_size}")
    m = _NAME_RE.match(path.name)
    if m and int(m.group(1)) != lsn:
        raise SnapshotCorruption(str(path), f"header lsn {lsn} does not match the file name")
    index_end = HEADER.size + index_len
    if index_end > got or zlib.crc32(view[HEADER.size:index_end]) != index_crc:
        raise SnapshotCorruption(str(path), "index CRC mismatch")
    index = orjson.loads(view[HEADER.size:index_end])
    data_start = _align(index_end)

    def block(name: str, spec: Mapping[str, Any]) -> memoryview:
        start = data_start + int(spec["offset"])
        end = start + int(spec["nbytes"])
        if start < data_start or end > got:
            raise SnapshotCorruption(str(path), f"{name} block lies outside the file")
        if zlib.crc32(view[start:end]) != spec["crc32"]:
            raise SnapshotCorruption(str(path), f"{name} CRC mismatch")
        return view[start:end]

    arrays: dict[str, npt.NDArray[Any]] = {}
    for spec in index["arrays"]:
        name = spec["name"]
        raw = block(f"array {name!r}", spec)
        dtype = np.lib.format.descr_to_dtype(spec["dtype"])
        shape = tuple(int(x) for x in spec["shape"])
        count = math.prod(shape)
        if count * dtype.itemsize != len(raw):
            raise SnapshotCorruption(str(path), f"array {name!r}: shape {shape} x {dtype} != {len(raw)} bytes")
        if count == 0:
            arrays[name] = np.empty(shape, dtype)
        else:
            start = data_start + int(spec["offset"])
            arrays[name] = buf[start:start + len(raw)].view(dtype).reshape(shape)
    meta = orjson.loads(block("meta", index["meta"]))
    if not isinstance(meta, dict):
        raise SnapshotCorruption(str(path), "meta is not an object")
    return Snapshot(lsn, arrays, meta, path)


def load_latest(directory: fsutil.StrPath) -> Snapshot | None:
    """The newest snapshot that verifies, or None if there is none at all.

    A newest snapshot that fails verification is logged (WARNING) and the next
    older one is tried. If snapshot files exist but none verifies, raises
    ``SnapshotCorruption`` naming the newest: starting empty would silently drop
    every memory the snapshots hold.
    """
    found = list_snapshots(directory)
    failures: list[str] = []
    for _lsn, path in reversed(found):
        try:
            snap = load_snapshot(path)
        except SnapshotCorruption as e:
            log.warning("snapshot %s unusable (%s); trying an older one", path, e.details.get("reason"))
            failures.append(f"{path.name}: {e.details.get('reason')}")
            continue
        if failures:
            log.warning("recovering from older snapshot %s (lsn %d)", path, snap.lsn)
        return snap
    if failures:
        raise SnapshotCorruption(str(found[-1][1]), "no snapshot verifies: " + "; ".join(failures))
    return None
