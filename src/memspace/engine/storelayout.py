"""The STORE record layout: a remember of new memories, laid out to be read in bulk.

Most of a WAL is these (every single remember of something new, most
batches), so recovery reads runs of them together (:func:`decode_stores`, used
by :mod:`memspace.engine.replay`). The layout puts numbers in binary (no float
parsing, and each is a float by construction), the ids in one ASCII text, and
orjson only around what clients wrote::

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

Links and backlinks are listed entry by entry. :func:`encode_store` gives None
for an id the ASCII text cannot carry (``records.encode`` then uses the
REMEMBER layout). Both layouts decode to the same :class:`Remember`.

Failure semantics: :func:`store_columns` raises :class:`RecordFormatError` for a
payload that does not fit; :func:`decode_stores` returns None for a run with
one, so that reading them one at a time finds (and raises for) it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import getitem
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt
import orjson

from memspace.engine.model import Link as MemoryLink
from memspace.engine.pool import ranges
from memspace.engine.recordtypes import Entry, RecordFormatError, Remember, StoreEntry

_STORE_HEAD = struct.Struct("<6I")   # n, dim, links, backlinks, ids_len, meta_len
assert _STORE_HEAD.size == 24


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


def encode_store(entries: list[StoreEntry], request_id: str | None) -> bytes | None:
    """The STORE payload of ``entries``, or None when its ASCII id text cannot carry them.
    Raises RecordFormatError for entries whose embeddings differ in length."""
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
        _only(content, (str, type(None)), "content")
        _only(tags, (list,), "tags")
        for row_tags in tags:
            _only(row_tags, (str,), "a tag")
        _only(metadata, (dict,), "metadata")
        _only(kinds, (str,), "a link kind")
        if codes and max(codes) >= len(kinds):
            raise ValueError(f"link kind {max(codes)} of {len(kinds)}")
    except (ValueError, KeyError, TypeError, struct.error, orjson.JSONDecodeError) as exc:
        raise RecordFormatError(f"cannot decode STORE record: {exc}") from None
    return tuple.__new__(StoreColumns, (
        rid, dim, words[:n], link_counts, back_counts, v[2 * n:3 * n], v[3 * n:4 * n], words[n:n + nl],
        v[4 * n:a], kinds, codes, words[n + nl:], v[a:b], content, tags, metadata, mv[rows_at:]))


def _only(values: list[Any], types: tuple[type, ...], what: str) -> None:
    """Raise ValueError naming ``what`` and the type of the first value of another type."""
    for v in values:
        if type(v) not in types:
            raise ValueError(f"{what} of type {type(v).__name__}")


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
    counts = words32[ranges(at, 2 * n)].astype(np.int64)
    floats = words32[ranges(at + 2 * n, 2 * nf)].view("<f8")
    codes = words32[ranges(at + 2 * n + 2 * nf, nl)].astype(np.int64)
    at = _starts(2 * n)
    link_counts, back_counts = counts[ranges(at, n)], counts[ranges(at + n, n)]
    entry_record = np.repeat(np.arange(k), n)
    if ((np.bincount(entry_record, link_counts, k) != nl).any()
            or (np.bincount(entry_record, back_counts, k) != nb).any()):
        return None
    at = _starts(nf)
    confidence, created = floats[ranges(at, n)], floats[ranges(at + n, n)]
    weights, back_weights = floats[ranges(at + 2 * n, nl)], floats[ranges(at + 2 * n + nl, nb)]
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
    return StoreBatch(dim, request_ids, n, words[ranges(at, n)].tolist(), link_counts, back_counts,
                      confidence, created, content, tags, metadata, _spans(payloads, rows_at, sizes),
                      words[ranges(at + n, nl)].tolist(), weights,
                      codes + _starts(kinds_per_record)[link_record], kind_names,
                      words[ranges(at + n + nl, nb)].tolist(), back_weights)


_STR_OR_NONE = {str, type(None)}
