"""Bulk replay of logged records: the state ``engine.apply(records.decode(type, payload))``
record by record would give, in a fraction of the time.

Most of a WAL is REMEMBER records that store new memories (one per single
remember). Replaying those one at a time pays for a dataclass per record and
entry, a row-by-row hot-tier insert and a method call per link, and the cyclic
garbage collector walks the growing heap again and again. Here they are
gathered into a :class:`StoreRun` instead, with the collector paused:

* the payload is parsed straight into the values an insert needs
  (:func:`~memspace.engine.records.peek_stores`), with no record objects;
* each new memory gets its link slot at once, and its links and auto-backlinks
  go into flat lists of (source slot, target slot, weight, kind code);
* when the run ends, its memories are appended to the hot tier together
  (:meth:`HotTier.extend`, one array write per column) and its links to the
  link graph together (:meth:`LinkGraph.add_new`: a stable sort by source and
  a few array writes).

Anything else — forget, link, touch, a merge or update, a store whose id
already exists or already has a link slot (something links to it), one of
whose backlink neighbours is neither hot nor stored earlier, or one that a
link earlier in its record points at — first ends the run and then takes the
general path, which also raises the errors
:func:`~memspace.engine.records.decode` defines. So does a payload whose
values are not of the plain types the planner writes. The checks are made
before anything is changed, so the run only holds stores that the general path
would apply without a question.

Why the state is the same: rows are appended in entry order; every memory's
links are appended after those it held before the run, in the order ``apply``
would set them (its own links first, then backlinks in entry order); a pair an
entry names twice (a target, or a backlink neighbour) is kept once, at its
first position with its last weight and kind, as setting it twice would leave
it; and no other link of the run can replace one: the checks above make every
(source, target) pair new to the graph. In-degrees, counts and the reverse
index are counts and sets, so the order they are updated in does not matter;
and nothing reads the engine between the first entry of a run and its end.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from memspace.engine import records
from memspace.engine.hot import HotTier
from memspace.engine.model import AUTO_LINK_KIND, RememberResult
from memspace.engine.pool import Ints
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
    and :meth:`flush` nothing else may change the engine; the run's ids (and link
    targets that had none) get link slots in :meth:`take`, rows and links in :meth:`flush`.
    """

    def __init__(self, hot: HotTier, elsewhere: Callable[[str], bool]) -> None:
        self._hot = hot
        self._graph = hot.graph
        self._elsewhere = elsewhere
        self._dim = hot.dimension
        self._reset()

    def _reset(self) -> None:
        self._new: dict[str, int] = {}   # id -> its link slot, in entry order
        self._content: list[Any] = []
        self._confidence: list[float] = []
        self._created: list[float] = []
        self._tags: list[tuple[str, ...]] = []
        self._metadata: list[dict[str, Any]] = []
        self._vectors: list[memoryview] = []
        # The run's links in the order apply would set them: source and target slots, weight, kind
        # code. Taken apart while the parsed payload is fresh: going back to a run's worth of
        # parsed JSON at flush time costs cache misses that cost more than the work itself.
        self._sources: list[int] = []
        self._targets: list[int] = []
        self._weights: list[float] = []
        self._kinds: list[int] = []

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
        graph, new = self._graph, self._new
        links = _check(entries, self._hot.row, new, graph.slot, self._elsewhere)
        if links is None:
            return None
        intern = graph.intern
        for target in links.missing:
            intern(target)
        run = []
        for e in entries:
            memory_id = e["id"]
            s = new[memory_id] = intern(memory_id)
            run.append(s)
            self._content.append(e["content"])
            self._confidence.append(e["confidence"])
            self._created.append(e["created_at"])
            self._tags.append(tuple(e["tags"]))
            self._metadata.append(e["metadata"])
        # The record's own links (entry order), then its backlinks (entry order): per source,
        # the order apply sets them in (a memory's backlinks come from entries after it).
        slot_of = graph.slot.__getitem__
        for s, n in zip(run, links.own_counts):
            self._sources += [s] * n
        self._sources += map(slot_of, links.neighbours)
        self._targets += map(slot_of, links.targets)
        for s, n in zip(run, links.back_counts):
            self._targets += [s] * n
        self._weights += links.weights
        self._weights += links.back_weights
        codes: list[Any] = list(map(graph.kind_codes.get, links.kinds))
        if None in codes:   # a kind the graph has no code for yet
            codes = list(map(graph.kind_code, links.kinds))
        self._kinds += codes
        self._kinds += [graph.kind_code(AUTO_LINK_KIND)] * len(links.neighbours)
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
                         self._content, self._tags, self._metadata)
        self._graph.add_new(*_distinct(np.array(self._sources, dtype=np.int64),
                                       np.array(self._targets, dtype=np.int64),
                                       np.array(self._weights, dtype=np.float64),
                                       np.array(self._kinds, dtype=np.int32)))
        self._reset()
        return n


def _distinct(sources: Ints, targets: Ints, weights: npt.NDArray[np.float64], kinds: npt.NDArray[np.int32]
              ) -> tuple[Ints, Ints, npt.NDArray[np.float64], npt.NDArray[np.int32]]:
    """The links with each (source, target) pair once: where a pair repeats (an entry naming a
    target or a backlink neighbour twice) it keeps its first position and its last weight and
    kind, as setting the link twice would."""
    keys = sources * (int(max(sources.max(initial=0), targets.max(initial=0))) + 1) + targets
    ordered = np.sort(keys)
    if not (ordered[1:] == ordered[:-1]).any():
        return sources, targets, weights, kinds
    order = np.argsort(keys, kind="stable")
    head = np.ones(len(keys), np.bool_)
    head[1:] = keys[order[1:]] != keys[order[:-1]]
    starts = np.flatnonzero(head)
    first, last = order[starts], order[np.append(starts[1:], len(keys)) - 1]
    weights[first], kinds[first] = weights[last], kinds[last]
    keep = np.zeros(len(keys), np.bool_)
    keep[first] = True
    return sources[keep], targets[keep], weights[keep], kinds[keep]


_NUMBER = (float, int)   # exact types: a bool is neither


@dataclass(slots=True)
class _Links:
    """A record's links as :func:`_check` found them, ids not yet slots."""

    missing: dict[str, None] = field(default_factory=dict)   # targets with no link slot, first mention first
    own_counts: list[int] = field(default_factory=list)      # per entry: its links, then their columns
    targets: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    back_counts: list[int] = field(default_factory=list)     # per entry: its backlinks, then their columns
    neighbours: list[str] = field(default_factory=list)
    back_weights: list[float] = field(default_factory=list)


def _check(entries: list[dict[str, Any]], hot_rows: dict[str, int], new: dict[str, int], slots: dict[str, int],
           elsewhere: Callable[[str], bool]) -> _Links | None:
    """The links of a REMEMBER record's entries, if every entry is a store the run can take;
    else None.

    Takes only values the hot tier's arrays and the link graph accept without a question;
    new ids that nothing links to yet (no link slot: every hot or run id has one) and that
    no link earlier in the record points at; and backlinks into memories that are hot or
    stored earlier (in the run or in this record). Anything else — a neighbour to promote,
    one that is gone, a link that could replace one held already — is for the general path
    to decide.
    """
    seen: set[str] = set()
    out = _Links()
    missing = out.missing
    add_target, add_weight, add_kind = out.targets.append, out.weights.append, out.kinds.append
    add_neighbour, add_back_weight = out.neighbours.append, out.back_weights.append
    try:
        for e in entries:
            memory_id = e["id"]
            if (type(memory_id) is not str or memory_id in slots or memory_id in seen or memory_id in missing
                    or elsewhere(memory_id)):
                return None
            confidence, created, tags, metadata = e["confidence"], e["created_at"], e["tags"], e["metadata"]
            if ("content" not in e or type(confidence) not in _NUMBER or type(created) not in _NUMBER
                    or type(tags) is not list or type(metadata) is not dict):
                return None
            for t in tags:
                if type(t) is not str:
                    return None
            links, back = e["links"], e["backlinks"]
            if type(links) is not list or type(back) is not list:
                return None
            for target, weight, kind in links:
                if type(target) is not str or type(weight) not in _NUMBER or type(kind) is not str:
                    return None
                if target not in slots:
                    missing[target] = None
                add_target(target)
                add_weight(weight)
                add_kind(kind)
            for neighbour, weight in back:
                if type(weight) not in _NUMBER or not (neighbour in hot_rows or neighbour in new or neighbour in seen):
                    return None
                add_neighbour(neighbour)
                add_back_weight(weight)
            out.own_counts.append(len(links))
            out.back_counts.append(len(back))
            seen.add(memory_id)
    except (KeyError, TypeError, ValueError):
        return None
    return out
