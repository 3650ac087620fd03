"""Write records: every decision a write made, so applying them again gives the same state.

The engine *plans* a write into one of these records (ids generated,
duplicates resolved, auto-links chosen, timestamps fixed) and then *applies*
it. The durable layer logs ``encode(record)`` before applying, and on recovery
applies ``decode(type, payload)`` for each logged record: replay never repeats
a similarity search or asks the clock.

Payload layouts (little-endian). FORGET, LINK, TOUCH, RESTORE, and a REMEMBER
that merges or updates::

    offset      size          field
    0           4             meta_len   u32
    4           meta_len      meta       orjson object (ids, content, tags, links, numbers)
    4+meta_len  count*dim*4   embeddings raw float32, row-major, in entry order

A REMEMBER whose entries all store new memories (every single remember of
something new, and most batches) is logged as a STORE record instead, in the
layout :mod:`memspace.engine.storelayout` draws, made for reading in bulk;
``encode`` falls back to the REMEMBER layout for an id that layout cannot carry.
Both decode to the same :class:`Remember`. The record types themselves are in
:mod:`memspace.engine.recordtypes` (and importable from here).

``Remember`` (one row per "store" and "update" entry) and ``Restore`` (one row
per memory) carry embeddings; ``meta["dim"]`` is the row length. A RESTORE
record's meta is ``{"rid", "at", "dim", "memories": [{"id", "content",
"confidence", "created_at", "last_access", "access_count", "tags", "metadata",
"links": [[target, weight, kind], ...]}, ...]}``. Floats in ``meta`` round-trip exactly
(orjson writes the shortest repr of a float64). Decoding copies the embedding
block once, so a record never refers to the caller's buffer.

Failure semantics: :func:`decode` raises :class:`RecordFormatError` for a
payload it cannot read (unknown type, bad lengths, malformed meta). The WAL has
already checked its CRC, so this means a format mismatch, never bad luck.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from memspace.engine import storelayout
from memspace.engine.model import Link as MemoryLink
from memspace.engine.recordtypes import (
    Entry,
    Forget,
    Link,
    MergeEntry,
    Record,
    RecordFormatError,
    RecordType,
    Remember,
    Restore,
    RestoreEntry,
    StoreEntry,
    Touch,
    UpdateEntry,
)

__all__ = [
    "Entry", "Forget", "Link", "MergeEntry", "Record", "RecordFormatError", "RecordType", "Remember", "Restore",
    "RestoreEntry", "StoreEntry", "Touch", "UpdateEntry", "decode", "encode",
]

_U32 = struct.Struct("<I")
assert _U32.size == 4
_TYPES = {int(t): t for t in RecordType}


# -- encoding ------------------------------------------------------------------------------------

def _links_out(links: tuple[MemoryLink, ...]) -> list[list[Any]]:
    return [[link.target, link.weight, link.kind] for link in links]


def _links_in(raw: list[list[Any]]) -> tuple[MemoryLink, ...]:
    return tuple([MemoryLink(t, w, k) for t, w, k in raw]) if raw else ()


def _pack(meta: dict[str, Any], vectors: bytes = b"") -> bytes:
    body = orjson.dumps(meta)
    return b"".join((_U32.pack(len(body)), body, vectors))


def encode(rec: Record) -> tuple[int, bytes]:
    """``(RecordType, payload)`` for the WAL."""
    if isinstance(rec, Remember):
        stores = [e for e in rec.entries if isinstance(e, StoreEntry)]
        if stores and len(stores) == len(rec.entries):
            payload = storelayout.encode_store(stores, rec.request_id)
            if payload is not None:
                return RecordType.STORE, payload
        entries: list[dict[str, Any]] = []
        rows: list[bytes] = []
        dim = 0
        for e in rec.entries:
            if isinstance(e, StoreEntry):
                entries.append({"op": "store", "id": e.id, "content": e.content, "confidence": e.confidence,
                                "created_at": e.created_at, "tags": e.tags, "metadata": e.metadata,
                                "links": _links_out(e.links), "backlinks": e.backlinks})
            elif isinstance(e, UpdateEntry):
                entries.append({"op": "update", "id": e.id, "content": e.content, "confidence": e.confidence,
                                "at": e.at, "tags": e.tags, "metadata": e.metadata,
                                "links": _links_out(e.links)})
            else:
                entries.append({"op": "merge", "id": e.id, "similarity": e.similarity, "at": e.at,
                                "confidence": e.confidence, "tags": e.tags, "links": _links_out(e.links)})
                continue
            vec = np.ascontiguousarray(e.embedding, dtype="<f4")
            if dim and vec.shape[0] != dim:
                raise RecordFormatError(f"entries of one record have embeddings of {dim} and {vec.shape[0]} dims")
            dim = vec.shape[0]
            rows.append(vec.tobytes())
        meta = {"rid": rec.request_id, "dim": dim, "entries": entries}
        return RecordType.REMEMBER, _pack(meta, b"".join(rows))
    if isinstance(rec, Forget):
        return RecordType.FORGET, _pack({"rid": rec.request_id, "ids": rec.ids})
    if isinstance(rec, Link):
        return RecordType.LINK, _pack({"rid": rec.request_id, "source": rec.source, "target": rec.target,
                                       "weight": rec.weight, "kind": rec.kind, "created_at": rec.created_at})
    if isinstance(rec, Touch):
        return RecordType.TOUCH, _pack({"rid": rec.request_id, "ids": rec.ids, "at": rec.at})
    if isinstance(rec, Restore):
        return RecordType.RESTORE, _encode_restore(rec)
    raise TypeError(f"not a record: {type(rec).__name__}")


def decode(type: int, payload: bytes | memoryview) -> Record:
    """The record ``encode`` produced; raises RecordFormatError if the payload does not fit."""
    kind = _TYPES.get(type)
    if kind is None:
        raise RecordFormatError(f"unknown record type {type}")
    if kind is RecordType.STORE:
        return storelayout.store_record(storelayout.store_columns(payload))
    try:
        (meta_len,) = _U32.unpack_from(payload, 0)
        end = 4 + meta_len
        if end > len(payload):
            raise ValueError(f"meta length {meta_len} runs past the payload ({len(payload)} bytes)")
        meta = orjson.loads(payload[4:end])
        if kind is RecordType.REMEMBER:
            return _decode_remember(meta, payload, end)
        if kind is RecordType.RESTORE:
            return _decode_restore(meta, payload, end)
        if end != len(payload):
            raise ValueError(f"{len(payload) - end} unexpected bytes after the meta")
        rid = meta["rid"]
        if kind is RecordType.FORGET:
            return Forget(tuple(meta["ids"]), rid)
        if kind is RecordType.LINK:
            return Link(meta["source"], meta["target"], meta["weight"], meta["kind"], meta["created_at"], rid)
        return Touch(tuple(meta["ids"]), meta["at"], rid)
    except RecordFormatError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, struct.error, orjson.JSONDecodeError) as exc:
        raise RecordFormatError(f"cannot decode {kind.name} record: {exc}") from None


def _decode_remember(meta: dict[str, Any], payload: bytes | memoryview, start: int) -> Remember:
    dim = meta["dim"]
    # Slicing copies the block out of the caller's buffer (bytes or memoryview alike), so the
    # record never pins it; the arrays are read-only views of that private copy.
    flat = np.frombuffer(bytes(payload[start:]), dtype="<f4")
    entries: list[Entry] = []
    at = 0
    for e in meta["entries"]:
        op = e["op"]
        if op == "merge":
            entries.append(MergeEntry(e["id"], e["similarity"], e["at"], e["confidence"], tuple(e["tags"]),
                                      _links_in(e["links"])))
            continue
        if op != "store" and op != "update":
            raise ValueError(f"unknown entry op {op!r}")
        vec = flat[at:at + dim]
        if vec.shape[0] != dim or dim == 0:
            raise ValueError(f"{flat.shape[0] * 4} embedding bytes are too few for rows of {dim} float32")
        at += dim
        if op == "store":
            back = e["backlinks"]
            entries.append(StoreEntry(e["id"], e["content"], vec, e["confidence"], e["created_at"],
                                      tuple(e["tags"]), e["metadata"], _links_in(e["links"]),
                                      tuple(map(tuple, back)) if back else ()))
        else:
            entries.append(UpdateEntry(e["id"], e["content"], vec, e["confidence"], e["at"],
                                       tuple(e["tags"]), e["metadata"], _links_in(e["links"])))
    if at != flat.shape[0]:
        raise ValueError(f"{flat.shape[0] * 4} embedding bytes for {at // max(dim, 1)} rows of {dim} float32")
    return Remember(tuple(entries), meta["rid"])


def _encode_restore(rec: Restore) -> bytes:
    rows: list[bytes] = []
    memories: list[dict[str, Any]] = []
    dim = 0
    for e in rec.entries:
        vec = np.ascontiguousarray(e.embedding, dtype="<f4")
        if vec.ndim != 1 or (dim and vec.shape[0] != dim):
            raise RecordFormatError(f"memories of one record have embeddings of {dim} and {vec.shape} dims")
        dim = vec.shape[0]
        rows.append(vec.tobytes())
        memories.append({"id": e.id, "content": e.content, "confidence": e.confidence, "created_at": e.created_at,
                         "last_access": e.last_access, "access_count": e.access_count, "tags": e.tags,
                         "metadata": e.metadata, "links": _links_out(e.links)})
    return _pack({"rid": rec.request_id, "at": rec.at, "dim": dim, "memories": memories}, b"".join(rows))


def _decode_restore(meta: dict[str, Any], payload: bytes | memoryview, start: int) -> Restore:
    dim, memories = meta["dim"], meta["memories"]
    # one private copy of the rows (see _decode_remember)
    flat = np.frombuffer(bytes(payload[start:]), dtype="<f4")
    if not memories or dim < 1 or flat.shape[0] != dim * len(memories):
        raise ValueError(f"{flat.shape[0] * 4} embedding bytes for {len(memories)} rows of {dim} float32")
    rows = flat.reshape(len(memories), dim)
    entries = tuple([
        RestoreEntry(m["id"], m["content"], rows[i], m["confidence"], m["created_at"], m["last_access"],
                     m["access_count"], tuple(m["tags"]), m["metadata"], _links_in(m["links"]))
        for i, m in enumerate(memories)])
    return Restore(entries, meta["at"], meta["rid"])
