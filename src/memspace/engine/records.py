"""Write records: every decision a write made, so applying them again gives the same state.

The engine *plans* a write into one of these records (ids generated,
duplicates resolved, auto-links chosen, timestamps fixed) and then *applies*
it. The durable layer logs ``encode(record)`` before applying, and on recovery
applies ``decode(type, payload)`` for each logged record: replay never repeats
a similarity search or asks the clock.

Payload layout (little-endian)::

    offset      size          field
    0           4             meta_len   u32
    4           meta_len      meta       orjson object (ids, content, tags, links, numbers)
    4+meta_len  count*dim*4   embeddings raw float32, row-major, in entry order

Only ``Remember`` carries embeddings (one row per "store" and "update" entry;
``meta["dim"]`` is the row length). Floats in ``meta`` round-trip exactly
(orjson writes the shortest repr of a float64). Decoding copies the embedding
block once, so a record never refers to the caller's buffer.

Failure semantics: :func:`decode` raises :class:`RecordFormatError` for a
payload it cannot read (unknown type, bad lengths, malformed meta). The WAL has
already checked its CRC, so this means a format mismatch, never bad luck.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

import numpy as np
import orjson

from memspace.engine.model import Link as MemoryLink
from memspace.engine.model import Vector
from memspace.errors import Internal

_U32 = struct.Struct("<I")
assert _U32.size == 4


class RecordType(IntEnum):
    REMEMBER = 1
    FORGET = 2
    LINK = 3
    TOUCH = 4


_TYPES = {int(t): t for t in RecordType}


class RecordFormatError(Internal):
    """A record payload that cannot be decoded (format mismatch or a bug, never user input)."""


def _same_vector(a: Vector, b: Vector) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass(frozen=True, slots=True, eq=False)
class StoreEntry:
    """A new memory. ``links`` are its outgoing links (explicit and auto); ``backlinks`` are
    auto-links *into* it, held by the neighbour: ``(neighbour id, weight)``, kind "similar"."""

    op: ClassVar[str] = "store"
    id: str
    content: str | None
    embedding: Vector
    confidence: float
    created_at: float
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    links: tuple[MemoryLink, ...] = ()
    backlinks: tuple[tuple[str, float], ...] = ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoreEntry):
            return NotImplemented
        return (
            (self.id, self.content, self.confidence, self.created_at, self.tags, dict(self.metadata),
             self.links, self.backlinks)
            == (other.id, other.content, other.confidence, other.created_at, other.tags, dict(other.metadata),
                other.links, other.backlinks)
            and _same_vector(self.embedding, other.embedding)
        )


@dataclass(frozen=True, slots=True)
class MergeEntry:
    """A duplicate of existing memory ``id``: reinforce it (access_count + 1, last_access = at),
    set its confidence to ``confidence``, add ``tags`` and ``links`` it does not have yet."""

    op: ClassVar[str] = "merge"
    id: str
    similarity: float
    at: float
    confidence: float
    tags: tuple[str, ...] = ()
    links: tuple[MemoryLink, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class UpdateEntry:
    """A client id that already exists: replace content, embedding, confidence, tags and
    metadata; keep the existing links and add ``links``; last_access = at."""

    op: ClassVar[str] = "update"
    id: str
    content: str | None
    embedding: Vector
    confidence: float
    at: float
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    links: tuple[MemoryLink, ...] = ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UpdateEntry):
            return NotImplemented
        return (
            (self.id, self.content, self.confidence, self.at, self.tags, dict(self.metadata), self.links)
            == (other.id, other.content, other.confidence, other.at, other.tags, dict(other.metadata),
                other.links)
            and _same_vector(self.embedding, other.embedding)
        )


Entry = StoreEntry | MergeEntry | UpdateEntry


@dataclass(frozen=True, slots=True)
class Remember:
    """One remember request (one item or a batch): atomic, idempotent by ``request_id``."""

    type: ClassVar[RecordType] = RecordType.REMEMBER
    entries: tuple[Entry, ...]
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Forget:
    """Ids resolved at plan time (also for forgets by filter); missing ids are skipped on apply."""

    type: ClassVar[RecordType] = RecordType.FORGET
    ids: tuple[str, ...]
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Link:
    """An explicit link ``source -> target`` (replaces an existing link between the two)."""

    type: ClassVar[RecordType] = RecordType.LINK
    source: str
    target: str
    weight: float
    kind: str
    created_at: float
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Touch:
    """Recall reinforcement of the returned memories: last_access = at, access_count + 1."""

    type: ClassVar[RecordType] = RecordType.TOUCH
    ids: tuple[str, ...]
    at: float
    request_id: str | None = None


Record = Remember | Forget | Link | Touch


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
    raise TypeError(f"not a record: {type(rec).__name__}")


def decode(type: int, payload: bytes | memoryview) -> Record:
    """The record ``encode`` produced; raises RecordFormatError if the payload does not fit."""
    kind = _TYPES.get(type)
    if kind is None:
        raise RecordFormatError(f"unknown record type {type}")
    try:
        (meta_len,) = _U32.unpack_from(payload, 0)
        end = 4 + meta_len
        if end > len(payload):
            raise ValueError(f"meta length {meta_len} runs past the payload ({len(payload)} bytes)")
        meta = orjson.loads(payload[4:end])
        if kind is RecordType.REMEMBER:
            return _decode_remember(meta, payload, end)
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


def peek_stores(payload: bytes | memoryview) -> tuple[Any, list[dict[str, Any]], memoryview, int] | None:
    """The parts of a REMEMBER payload whose entries are all stores, for bulk replay:
    ``(request id, entry objects as parsed, embedding bytes, dim)``.

    None when the payload is anything else or its framing is off (wrong lengths, a meta
    that is not an object, a non-store entry): :func:`decode` then handles it, errors
    included. Only the framing is checked here; the entries' values are the caller's to
    check, as :func:`decode` would use them.
    """
    try:
        (meta_len,) = _U32.unpack_from(payload, 0)
        end = 4 + meta_len
        if end > len(payload):
            return None
        meta = orjson.loads(payload[4:end])
        if type(meta) is not dict:
            return None
        rid, dim, entries = meta["rid"], meta["dim"], meta["entries"]
    except (KeyError, struct.error, orjson.JSONDecodeError):
        return None
    if type(dim) is not int or dim <= 0 or type(entries) is not list or not entries:
        return None
    for e in entries:
        if type(e) is not dict or e.get("op") != "store":
            return None
    vectors = memoryview(payload)[end:]
    if vectors.nbytes != 4 * dim * len(entries):
        return None
    return rid, entries, vectors, dim
