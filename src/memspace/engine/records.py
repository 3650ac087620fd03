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
something new, and most batches) is logged as a STORE record instead, laid out
so that recovery can read it in bulk: numbers in binary (no float parsing, and
each is a float by construction), the ids as one ASCII text, and orjson only
for what clients wrote::

    offset  size              field
    0       24                n entries (>= 1), dim, L links, B backlinks, ids_len, meta_len: u32 each
    24      8n                links per entry u32[n], then backlinks per entry u32[n]
    ..      8(2n + L + B)     f64: confidence[n], created_at[n], link weights[L], backlink weights[B]
    ..      4L                u32: each link's kind, an index into meta["kinds"]
    ..      ids_len           ASCII, space-separated: the n ids, the L link targets, the B backlink
                              neighbours (memory ids have neither spaces nor non-ASCII characters)
    ..      meta_len          orjson [request id or null, content [n], tags [n lists], metadata [n objects],
                              kinds [str]]
    ..      4·n·dim           embeddings raw float32, row-major, in entry order

Links and backlinks are listed entry by entry. ``encode`` falls back to the
REMEMBER layout for an id the ASCII text cannot carry. Both layouts decode to
the same :class:`Remember`.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import chain
from operator import getitem
from typing import Any, ClassVar, NamedTuple, cast

import numpy as np
import numpy.typing as npt
import orjson

from memspace.engine.model import Link as MemoryLink
from memspace.engine.model import Vector
from memspace.errors import Internal

_U32 = struct.Struct("<I")
assert _U32.size == 4
_STORE_HEAD = struct.Struct("<6I")   # n, dim, links, backlinks, ids_len, meta_len
assert _STORE_HEAD.size == 24


class RecordType(IntEnum):
    REMEMBER = 1
    FORGET = 2
    LINK = 3
    TOUCH = 4
    STORE = 5   # a REMEMBER of new memories only, in the bulk layout
    RESTORE = 6  # memories put in exactly as given (an import of exported memories)


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


@dataclass(frozen=True, slots=True, eq=False)
class RestoreEntry:
    """A memory exactly as it is to be: every field, its links as given (also to ids not in
    the space), no dedup and no auto-links. An existing memory with the same id is replaced."""

    id: str
    content: str | None
    embedding: Vector
    confidence: float
    created_at: float
    last_access: float
    access_count: int
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    links: tuple[MemoryLink, ...] = ()

    def _key(self) -> tuple[Any, ...]:
        return (self.id, self.content, self.confidence, self.created_at, self.last_access, self.access_count,
                self.tags, dict(self.metadata), self.links)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RestoreEntry):
            return NotImplemented
        return self._key() == other._key() and _same_vector(self.embedding, other.embedding)


@dataclass(frozen=True, slots=True)
class Restore:
    """Memories restored (an import): atomic, idempotent by ``request_id`` and by content (a
    memory restored again is replaced by the same memory). ``at``: when it was planned."""

    type: ClassVar[RecordType] = RecordType.RESTORE
    entries: tuple[RestoreEntry, ...]
    at: float
    request_id: str | None = None


Record = Remember | Forget | Link | Touch | Restore


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
            payload = _encode_store(stores, rec.request_id)
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
        return store_record(store_columns(payload))
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


# -- the STORE layout ----------------------------------------------------------------------------

_NUMBERS: dict[tuple[int, int, int], struct.Struct] = {}


def _numbers(n: int, links: int, backlinks: int) -> struct.Struct:
    """The STORE layout's binary block for ``n`` entries with so many links and backlinks."""
    key = (n, links, backlinks)
    layout = _NUMBERS.get(key)
    if layout is None:
        if len(_NUMBERS) >= 1024:   # shapes repeat (single remembers); a flood of new ones does not pile up
            _NUMBERS.clear()
        layout = _NUMBERS[key] = struct.Struct(f"<{2 * n}I{2 * n + links + backlinks}d{links}I")
    return layout


def _encode_store(entries: list[StoreEntry], request_id: str | None) -> bytes | None:
    """The STORE payload of ``entries``, or None when its ASCII id text cannot carry them."""
    dim = entries[0].embedding.shape[0] if entries[0].embedding.ndim == 1 else 0
    if not dim:
        return None
    names, targets, neighbours = [], [], []
    link_counts, back_counts, confidence, created = [], [], [], []
    weights: list[float] = []
    back_weights: list[float] = []
    codes: list[int] = []
    kinds: dict[str, int] = {}
    rows = []
    for e in entries:
        vec = np.ascontiguousarray(e.embedding, dtype="<f4")
        if vec.shape != (dim,):
            raise RecordFormatError(f"entries of one record have embeddings of {dim} and {vec.shape[0]} dims")
        rows.append(vec.tobytes())
        names.append(e.id)
        confidence.append(e.confidence)
        created.append(e.created_at)
        link_counts.append(len(e.links))
        back_counts.append(len(e.backlinks))
        for link in e.links:
            targets.append(link.target)
            weights.append(link.weight)
            codes.append(kinds.setdefault(link.kind, len(kinds)))
        for neighbour, weight in e.backlinks:
            neighbours.append(neighbour)
            back_weights.append(weight)
    words = names + targets + neighbours
    try:
        text = " ".join(words).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        return None
    if text.count(b" ") != len(words) - 1:
        return None
    numbers = _numbers(len(entries), len(targets), len(neighbours)).pack(
        *link_counts, *back_counts, *confidence, *created, *weights, *back_weights, *codes)
    meta = orjson.dumps([request_id, [e.content for e in entries], [e.tags for e in entries],
                         [e.metadata for e in entries], list(kinds)])
    head = _STORE_HEAD.pack(len(entries), dim, len(targets), len(neighbours), len(text), len(meta))
    return b"".join((head, numbers, text, meta, *rows))


class StoreColumns(NamedTuple):
    """A STORE payload taken apart, entry by entry; links and backlinks flat, in entry order."""

    request_id: str | None
    dim: int
    ids: list[str]
    link_counts: tuple[int, ...]
    back_counts: tuple[int, ...]
    confidence: tuple[float, ...]
    created_at: tuple[float, ...]
    targets: list[str]
    weights: tuple[float, ...]
    kinds: list[str]             # the record's kinds; a link's kind is kinds[codes[i]]
    codes: tuple[int, ...]
    neighbours: list[str]
    back_weights: tuple[float, ...]
    content: list[str | None]
    tags: list[list[str]]
    metadata: list[dict[str, Any]]
    embeddings: memoryview       # n rows of dim float32, a view of the payload


def store_columns(payload: bytes | memoryview) -> StoreColumns:
    """Read a STORE payload; raises RecordFormatError where it does not fit the layout.

    Every value has the type the layout promises (ids and link ends ``str``, numbers
    ``float``, content ``str`` or None, tags lists of ``str``, metadata dicts), so a
    consumer needs no checks of its own. ``embeddings`` is a view of ``payload``.
    """
    try:
        n, dim, nl, nb, ids_len, meta_len = _STORE_HEAD.unpack_from(payload, 0)
        if not n or not dim:
            raise ValueError(f"{n} entries of dimension {dim}")
        numbers_at = _STORE_HEAD.size
        text_at = numbers_at + 8 * n + 8 * (2 * n + nl + nb) + 4 * nl
        meta_at = text_at + ids_len
        rows_at = meta_at + meta_len
        if rows_at + 4 * n * dim != len(payload):
            raise ValueError(f"{len(payload)} bytes where the header implies {rows_at + 4 * n * dim}")
        v = _numbers(n, nl, nb).unpack_from(payload, numbers_at)
        a, b = 4 * n + nl, 4 * n + nl + nb
        link_counts, back_counts, codes = v[:n], v[n:2 * n], v[b:]
        if sum(link_counts) != nl or sum(back_counts) != nb:
            raise ValueError("link counts do not add up")
        mv = memoryview(payload)
        words = str(mv[text_at:meta_at], "ascii").split(" ")
        if len(words) != n + nl + nb:
            raise ValueError(f"{len(words)} ids where {n + nl + nb} were expected")
        meta = orjson.loads(mv[meta_at:rows_at])
        if type(meta) is not list or len(meta) != 5:
            raise ValueError("malformed meta")
        rid, content, tags, metadata, kinds = meta
        if not (type(content) is list and type(tags) is list and type(metadata) is list and type(kinds) is list
                and len(content) == len(tags) == len(metadata) == n and (rid is None or type(rid) is str)):
            raise ValueError("malformed meta")
        for c in content:
            if c is not None and type(c) is not str:
                raise ValueError(f"content of type {type(c).__name__}")
        for row_tags in tags:
            if type(row_tags) is not list:
                raise ValueError(f"tags of type {type(row_tags).__name__}")
            for t in row_tags:
                if type(t) is not str:
                    raise ValueError(f"a tag of type {type(t).__name__}")
        for m in metadata:
            if type(m) is not dict:
                raise ValueError(f"metadata of type {type(m).__name__}")
        for k in kinds:
            if type(k) is not str:
                raise ValueError(f"a link kind of type {type(k).__name__}")
        if codes and max(codes) >= len(kinds):
            raise ValueError(f"link kind {max(codes)} of {len(kinds)}")
    except (ValueError, KeyError, TypeError, struct.error, orjson.JSONDecodeError) as exc:
        raise RecordFormatError(f"cannot decode STORE record: {exc}") from None
    return tuple.__new__(StoreColumns, (
        rid, dim, words[:n], link_counts, back_counts, v[2 * n:3 * n], v[3 * n:4 * n], words[n:n + nl],
        v[4 * n:a], kinds, codes, words[n + nl:], v[a:b], content, tags, metadata, mv[rows_at:]))


def store_record(c: StoreColumns) -> Remember:
    """The :class:`Remember` a STORE payload holds (its embeddings copied out of the payload)."""
    n = len(c.ids)
    rows = np.frombuffer(bytes(c.embeddings), dtype="<f4").reshape(n, c.dim)
    entries: list[Entry] = []
    li = bi = 0
    for i in range(n):
        nl, nb = c.link_counts[i], c.back_counts[i]
        links = tuple([MemoryLink(c.targets[j], c.weights[j], c.kinds[c.codes[j]]) for j in range(li, li + nl)])
        back = tuple(zip(c.neighbours[bi:bi + nb], c.back_weights[bi:bi + nb]))
        li, bi = li + nl, bi + nb
        entries.append(StoreEntry(c.ids[i], c.content[i], rows[i], c.confidence[i], c.created_at[i],
                                  tuple(c.tags[i]), c.metadata[i], links, back))
    return Remember(tuple(entries), c.request_id)


# -- many STORE payloads at once -------------------------------------------------------------------

@dataclass(frozen=True, slots=True, eq=False)
class StoreBatch:
    """Consecutive STORE payloads taken apart together (:func:`decode_stores`): per record,
    per entry (in record order), per link and per backlink (in entry order), all flat."""

    dim: int
    request_ids: list[str | None]          # per record
    entries: npt.NDArray[np.int64]         # per record: its entries (n)
    ids: list[str]                         # per entry, and so on
    link_counts: npt.NDArray[np.int64]
    back_counts: npt.NDArray[np.int64]
    confidence: npt.NDArray[np.float64]
    created_at: npt.NDArray[np.float64]
    content: list[str | None]
    tags: list[list[str]]
    metadata: list[dict[str, Any]]
    rows: bytes                            # len(ids) rows of dim float32
    targets: list[str]                     # per link
    weights: npt.NDArray[np.float64]
    kinds: npt.NDArray[np.int64]           # index into kind_names
    kind_names: list[str]
    neighbours: list[str]                  # per backlink
    back_weights: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.request_ids)

    def part(self, start: int, stop: int) -> StoreBatch:
        """Records ``start..stop-1`` as a batch of their own."""
        def bounds(counts: npt.NDArray[np.int64], lo: int, hi: int) -> tuple[int, int]:
            ends = np.concatenate(([0], np.cumsum(counts)))
            return int(ends[lo]), int(ends[hi])

        e0, e1 = bounds(self.entries, start, stop)
        l0, l1 = bounds(self.link_counts, e0, e1)
        b0, b1 = bounds(self.back_counts, e0, e1)
        row = 4 * self.dim
        return StoreBatch(self.dim, self.request_ids[start:stop], self.entries[start:stop], self.ids[e0:e1],
                          self.link_counts[e0:e1], self.back_counts[e0:e1], self.confidence[e0:e1],
                          self.created_at[e0:e1], self.content[e0:e1], self.tags[e0:e1], self.metadata[e0:e1],
                          self.rows[e0 * row:e1 * row], self.targets[l0:l1], self.weights[l0:l1],
                          self.kinds[l0:l1], self.kind_names, self.neighbours[b0:b1], self.back_weights[b0:b1])


def _ranges(starts: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The concatenation of ``arange(s, s + c)`` for each ``(s, c)``, in order."""
    total = int(counts.sum())
    if not total:
        return np.empty(0, np.int64)
    return np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total, dtype=np.int64)


def _starts(lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Where each of consecutive spans of these lengths starts."""
    return (np.cumsum(lengths) - lengths).astype(np.int64)


def _spans(payloads: Sequence[bytes | memoryview], starts: npt.NDArray[np.int64], stops: npt.NDArray[np.int64],
           sep: bytes = b"") -> bytes:
    """``payloads[i][starts[i]:stops[i]]`` for every ``i``, joined by ``sep``."""
    return sep.join(map(_part, payloads, map(slice, starts.tolist(), stops.tolist())))


_part = cast(Callable[[bytes | memoryview, slice], bytes], getitem)


def decode_stores(payloads: Sequence[bytes | memoryview], dim: int) -> StoreBatch | None:
    """Consecutive STORE payloads, all of embedding dimension ``dim``, read together: what
    :func:`store_columns` gives record by record, in a few array operations per run
    rather than a few dozen Python steps per record.

    None when there are none, or any does not fit the layout or has another dimension: reading
    them one at a time then finds which (and :func:`decode` raises its error). Accepts
    nothing that :func:`store_columns` refuses.
    """
    k = len(payloads)
    sizes = np.fromiter(map(len, payloads), np.int64, k)
    if not k or (sizes < _STORE_HEAD.size).any():
        return None
    zero = np.zeros(k, np.int64)
    head = np.frombuffer(_spans(payloads, zero, zero + _STORE_HEAD.size), "<u4").reshape(k, 6).astype(np.int64)
    n, dims, nl, nb, ids_len, meta_len = (head[:, i] for i in range(6))
    numbers_at = zero + _STORE_HEAD.size
    text_at = numbers_at + 8 * n + 8 * (2 * n + nl + nb) + 4 * nl
    meta_at = text_at + ids_len
    rows_at = meta_at + meta_len
    if ((n < 1) | (dims != dim) | (ids_len < 1) | (rows_at + 4 * n * dim != sizes)).any():
        return None
    # the binary part of every record, as u32 words: n + n counts, 2n + L + B float64 (two words
    # each: the gathered pairs are contiguous, so they read as float64), L kind codes
    words32 = np.frombuffer(_spans(payloads, numbers_at, text_at), "<u4")
    nf = 2 * n + nl + nb
    at = _starts(2 * n + 2 * nf + nl)
    counts = words32[_ranges(at, 2 * n)].astype(np.int64)
    floats = words32[_ranges(at + 2 * n, 2 * nf)].view("<f8")
    codes = words32[_ranges(at + 2 * n + 2 * nf, nl)].astype(np.int64)
    at = _starts(2 * n)
    link_counts, back_counts = counts[_ranges(at, n)], counts[_ranges(at + n, n)]
    entry_record = np.repeat(np.arange(k), n)
    if ((np.bincount(entry_record, link_counts, k) != nl).any()
            or (np.bincount(entry_record, back_counts, k) != nb).any()):
        return None
    at = _starts(nf)
    confidence, created = floats[_ranges(at, n)], floats[_ranges(at + n, n)]
    weights, back_weights = floats[_ranges(at + 2 * n, nl)], floats[_ranges(at + 2 * n + nl, nb)]
    text = _spans(payloads, text_at, meta_at, b" ")
    # each record's text holds its n + L + B words: one space fewer, and one more joining it to the next
    spaces = np.add.reduceat(np.frombuffer(text, np.uint8) == 0x20, _starts(ids_len + 1))
    spaces[-1] += 1
    if (spaces != n + nl + nb).any():
        return None
    try:
        words = np.array(text.decode("ascii").split(" "), dtype=object)
        metas = orjson.loads(b"[" + _spans(payloads, meta_at, rows_at, b",") + b"]")
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        return None
    if type(metas) is not list or len(metas) != k or set(map(type, metas)) != {list} or set(map(len, metas)) != {5}:
        return None
    request_ids, *per_record = map(list, zip(*metas))
    if any(set(map(type, column)) != {list} for column in per_record):
        return None
    content_lists, tag_lists, metadata_lists, kind_lists = per_record
    if any((np.fromiter(map(len, column), np.int64, k) != n).any() for column in per_record[:3]):
        return None
    content = list(chain.from_iterable(content_lists))
    tags = list(chain.from_iterable(tag_lists))
    metadata = list(chain.from_iterable(metadata_lists))
    kind_names = list(chain.from_iterable(kind_lists))
    if not (set(map(type, request_ids)) <= _STR_OR_NONE and set(map(type, content)) <= _STR_OR_NONE
            and set(map(type, tags)) <= {list} and set(map(type, chain.from_iterable(tags))) <= {str}
            and set(map(type, metadata)) <= {dict} and set(map(type, kind_names)) <= {str}):
        return None
    kinds_per_record = np.fromiter(map(len, kind_lists), np.int64, k)
    link_record = np.repeat(np.arange(k), nl)
    if (codes >= kinds_per_record[link_record]).any():
        return None
    # words: per record its ids, link targets and backlink neighbours
    at = _starts(n + nl + nb)
    return StoreBatch(dim, request_ids, n, words[_ranges(at, n)].tolist(), link_counts, back_counts,
                      confidence, created, content, tags, metadata, _spans(payloads, rows_at, sizes),
                      words[_ranges(at + n, nl)].tolist(), weights,
                      codes + _starts(kinds_per_record)[link_record], kind_names,
                      words[_ranges(at + n + nl, nb)].tolist(), back_weights)


_STR_OR_NONE = {str, type(None)}
