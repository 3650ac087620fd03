"""Bulk replay of logged records: the state ``engine.apply(records.decode(type, payload))``
record by record would give, in a fraction of the time.

Most of a WAL is REMEMBER records that store new memories (one per single
remember). Replaying those one at a time pays for a dataclass per record and
entry, a row-by-row hot-tier insert and a method call per link, and the cyclic
garbage collector walks the growing heap again and again. Here they are
gathered into a :class:`StoreRun` instead, with the collector paused:

* the payload is parsed straight into the values an insert needs
  (:func:`~memspace.engine.records.peek_stores`), with no record objects;
* an entry's auto-backlinks are set at once: into a hot memory through
  :meth:`HotTier.link_into`, into a memory stored earlier in the run in the
  run's own link dict for it;
* when the run ends, its memories are appended to the hot tier together
  (:meth:`HotTier.extend`, one array write per column), those link dicts
  becoming the new rows' links.

Anything else — forget, link, touch, a merge or update, a store whose id
already exists or one of whose backlink neighbours is neither hot nor stored
earlier, or a payload whose values are not of the plain types the planner
writes — first ends the run and then takes the general path, which also raises
the errors :func:`~memspace.engine.records.decode` defines. The checks are made
before anything is changed, so the run only holds stores that the general path
would apply without a question.

Why the state is the same: rows are appended in entry order; every link dict
receives the same links in the same order (its own links first, then
backlinks in entry order); the indexes (tags, inbound links, link count) are
sets and counts, so the order they are updated in does not matter; and nothing
reads the engine between the first entry of a run and its end.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np

from memspace.engine import records
from memspace.engine.hot import HotTier
from memspace.engine.model import AUTO_LINK_KIND, Link, RememberResult
from memspace.engine.tiers import TierStore

#: Entries buffered before a run is flushed: bounds the payload bytes a run pins.
RUN_LIMIT = 4096


class Logged(Protocol):
    """A logged record as replay reads it (``storage.wal.WalRecord`` is one)."""

    @property
    def seq(self) -> int: ...

    @property
    def type(self) -> int: ...

    @property
    def payload(self) -> bytes | memoryview: ...


def replay_records(logged: Iterable[Logged], hot: HotTier, lower: Sequence[TierStore],
                   apply: Callable[[records.Record], Any], on_result: Callable[[str, Any], None] | None,
                   on_record: Callable[[int, records.Record], None] | None) -> int:
    """``Engine.replay``: runs of plain stores in bulk, everything else through ``apply``."""
    run = StoreRun(hot, _elsewhere(lower))
    count = 0
    with gc_paused():
        try:
            for rec in logged:
                count += 1
                type_, payload = rec.type, rec.payload
                if type_ == records.RecordType.REMEMBER:
                    taken = run.take(payload)
                    if taken is not None:
                        if on_record is not None:
                            on_record(rec.seq, records.decode(type_, payload))
                        if taken[0] is not None and on_result is not None:
                            on_result(taken[0], taken[1])
                        if run.full:
                            run.flush()
                        continue
                run.flush()
                decoded = records.decode(type_, payload)
                result = apply(decoded)
                if on_record is not None:
                    on_record(rec.seq, decoded)
                if decoded.request_id is not None and on_result is not None:
                    on_result(decoded.request_id, result)
        finally:
            run.flush()
    return count


def _elsewhere(lower: Sequence[TierStore]) -> Callable[[str], bool]:
    """``id -> whether a lower tier holds it``, for the length of a replay. Applying records
    never adds to a lower tier (only demotion does), so a tier empty now stays empty."""
    tiers = [t for t in lower if len(t)]
    if not tiers:
        return lambda memory_id: False
    return lambda memory_id: any(memory_id in t for t in tiers)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (if it runs) for a bulk load.

    Replay allocates a few objects per memory and link, none of them in a cycle;
    with the collector on, the growing heap is traversed again and again (about
    half the replay time at 100k memories). Reference counting still frees
    everything as usual, and objects are only moved between generations here,
    never left out of later collections.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # What the load allocated is still in the youngest generation, where the next
        # collection would traverse all of it (and the next few again, as it ages). Freezing and
        # unfreezing moves every tracked object into the oldest generation without a traversal,
        # but would also thaw what someone froze on purpose (a pre-fork server): not then.
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()


class StoreRun:
    """Logged stores of new memories, held until :meth:`flush` appends them to the hot tier.

    ``elsewhere(id)`` answers whether a lower tier holds ``id``. Between :meth:`take`
    and :meth:`flush` nothing else may change the engine. Auto-backlinks into memories
    that are already hot are set at once; those into memories of the run go into the
    run's own link dicts, which become the new rows' link dicts.
    """

    def __init__(self, hot: HotTier, elsewhere: Callable[[str], bool]) -> None:
        self._hot = hot
        self._elsewhere = elsewhere
        self._dim = hot.dimension
        self._reset()

    def _reset(self) -> None:
        self._new: dict[str, dict[str, Link]] = {}   # id -> its links, in entry order
        self._content: list[Any] = []
        self._confidence: list[float] = []
        self._created: list[float] = []
        self._tags: list[tuple[str, ...]] = []
        self._metadata: list[dict[str, Any]] = []
        self._vectors: list[memoryview] = []

    @property
    def full(self) -> bool:
        return len(self._new) >= RUN_LIMIT

    def take(self, payload: bytes | memoryview) -> tuple[Any, list[RememberResult] | None] | None:
        """Add a REMEMBER payload's stores to the run: ``(request id, results)`` (results only
        when there is a request id), or None, having changed nothing, if the run cannot take it."""
        peeked = records.peek_stores(payload)
        if peeked is None:
            return None
        rid, entries, vectors, dim = peeked
        if dim != self._dim:
            return None
        hot_rows, new = self._hot.row, self._new
        checked = _check(entries, hot_rows, new, self._elsewhere)
        if checked is None:
            return None
        hot_links = self._hot.links
        for e, links in zip(entries, checked):
            memory_id = e["id"]
            new[memory_id] = links
            self._content.append(e["content"])
            self._confidence.append(e["confidence"])
            self._created.append(e["created_at"])
            self._tags.append(tuple(e["tags"]))
            self._metadata.append(e["metadata"])
            into_hot = []
            for neighbour, weight in e["backlinks"]:
                link = Link(memory_id, weight, AUTO_LINK_KIND)
                r = hot_rows.get(neighbour)
                if r is None:
                    new[neighbour][memory_id] = link
                else:
                    into_hot.append((hot_links[r], neighbour, link))
            if into_hot:
                self._hot.link_into(memory_id, into_hot)
        self._vectors.append(vectors)
        if rid is None:
            return None, None
        return rid, [RememberResult(e["id"], "stored", None, tuple([n for n, _ in e["backlinks"]])) for e in entries]

    def flush(self) -> int:
        """Append the run to the hot tier; returns how many memories it stored."""
        n = len(self._new)
        if not n:
            return 0
        embeddings = np.frombuffer(b"".join(self._vectors), dtype="<f4").reshape(n, self._dim)
        # a stored memory starts with last_access = created_at and no accesses (Engine._apply_entry)
        self._hot.extend(list(self._new), embeddings, self._confidence, self._created, self._created, 0,
                         self._content, self._tags, self._metadata, list(self._new.values()))
        self._reset()
        return n


def _check(entries: list[dict[str, Any]], hot_rows: dict[str, int], new: dict[str, dict[str, Link]],
           elsewhere: Callable[[str], bool]) -> list[dict[str, Link]] | None:
    """Each entry's own links, if every entry is a store the run can take; else None.

    Takes only values the hot tier's arrays and indexes accept without a question, new
    ids, and backlinks into memories that are hot or stored earlier (in the run or in
    this record): anything else — a neighbour to promote, or one that is gone — is for
    the general path to decide.
    """
    plain = (float, int)
    seen: set[str] = set()
    out = []
    try:
        for e in entries:
            memory_id = e["id"]
            if (type(memory_id) is not str or memory_id in hot_rows or memory_id in new or memory_id in seen
                    or elsewhere(memory_id)):
                return None
            confidence, created, tags, metadata = e["confidence"], e["created_at"], e["tags"], e["metadata"]
            if ("content" not in e or type(confidence) not in plain or type(created) not in plain or type(tags) is not list
                    or type(metadata) is not dict):
                return None
            for t in tags:
                if type(t) is not str:
                    return None
            back = e["backlinks"]
            if type(back) is not list:
                return None
            for neighbour, _ in back:
                if neighbour not in hot_rows and neighbour not in new and neighbour not in seen:
                    return None
            out.append({target: Link(target, weight, kind) for target, weight, kind in e["links"]})
            seen.add(memory_id)
    except (KeyError, TypeError, ValueError):
        return None
    return out
