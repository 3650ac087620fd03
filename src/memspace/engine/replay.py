"""Bulk replay of logged records: the state ``engine.apply(records.decode(type, payload))``
record by record would give, in a fraction of the time.

Most of a WAL is STORE records (new memories: every single remember of
something new, most batches). Replaying those one at a time pays for a
dataclass per record, entry and link, a row-by-row hot-tier insert and a method
call per link, and the cyclic garbage collector walks the growing heap again
and again. Here consecutive STORE records are gathered into a run
(:class:`StoreRun`, up to :data:`RUN_LIMIT` records) and applied together, with
the collector paused:

* the run's payloads are read together (:func:`~memspace.engine.storelayout.decode_stores`:
  binary numbers and lengths as arrays, the ids as one ASCII text, one orjson
  call for the client values), with no record objects;
* every link end is resolved at once, to an entry of the run or a hot row;
* the run's memories are appended to the hot tier together
  (:meth:`HotTier.extend`, one array write per column) and its links to the
  link graph together (:meth:`LinkGraph.add_new`: a stable sort by source and
  a few array writes).

The records that fit are the longest prefix of the run whose every entry is a
new memory (no link slot: not hot, and nothing links to it; in no lower tier;
not stored twice), whose links point at no entry of the run but earlier ones,
and whose backlinks come from hot memories or earlier entries. The first
record that does not fit (a store of an id something linked to before, a
backlink into a warm memory, ...) takes the general path, and the rest of the
run is tried again; after :data:`MAX_RETRIES` such records the rest of the run
goes one by one. A payload that does not fit the STORE layout sends the run one
by one too, so ``decode`` raises its error with every record before it
applied. Forget, link, touch and REMEMBER records (merges, updates, and what
older versions logged) end the run and take the general path.

The hooks see each record in order before its run is applied; one that raises
leaves its record and those before it applied, none after.

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
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from memspace.engine import records, storelayout
from memspace.engine.hot import HotTier
from memspace.engine.model import AUTO_LINK_KIND, RememberResult
from memspace.engine.pool import Ints
from memspace.engine.tiers import TierStore

#: Records buffered before a run is flushed: bounds the payload bytes a run pins.
RUN_LIMIT = 4096
#: Records of a run left to ``apply`` before the rest of the run goes there too, one by one.
MAX_RETRIES = 8


#: A logged record as replay reads it: ``(seq, type, payload)``.
Logged = tuple[int, int, "bytes | memoryview"]


def replay_records(logged: Iterable[Logged], hot: HotTier, lower: Sequence[TierStore],
                   apply: Callable[[records.Record], Any], on_result: Callable[[str, Any], None] | None,
                   on_record: Callable[[int, records.Record], None] | None, record_after: int = 0) -> int:
    """``Engine.replay``: runs of STORE records in bulk, everything else through ``apply``."""
    hooks = Hooks(on_result, on_record, record_after)
    run = StoreRun(hot, _elsewhere(lower), apply, hooks)
    count = 0
    store, decode = records.RecordType.STORE, records.decode
    with gc_paused():
        try:
            for seq, type_, payload in logged:
                count += 1
                if type_ == store:
                    run.add(seq, payload)
                    continue
                run.flush()
                decoded = decode(type_, payload)
                hooks(seq, decoded, apply(decoded))
        finally:
            run.flush()
    return count


class Hooks:
    """``Engine.replay``'s hooks: ``on_record`` for records after ``record_after``, then
    ``on_result`` for records with a request id."""

    def __init__(self, on_result: Callable[[str, Any], None] | None,
                 on_record: Callable[[int, records.Record], None] | None, record_after: int) -> None:
        self.on_result, self.on_record, self.record_after = on_result, on_record, record_after

    def __call__(self, seq: int, rec: records.Record, result: Any) -> None:
        if self.on_record is not None and seq > self.record_after:
            self.on_record(seq, rec)
        if rec.request_id is not None and self.on_result is not None:
            self.on_result(rec.request_id, result)

    def stored(self, seq: int, payload: bytes | memoryview, request_id: str | None,
               results: Stored | None) -> None:
        """The hooks for a STORE record applied in bulk (decoded only if ``on_record`` wants it)."""
        if self.on_record is not None and seq > self.record_after:
            self.on_record(seq, records.decode(records.RecordType.STORE, payload))
        if request_id is not None and self.on_result is not None:
            self.on_result(request_id, results)


class Stored(tuple[list[str], list[tuple[str, ...]]]):
    """What ``apply`` returns for a STORE record applied in bulk, kept as ``(ids, auto-links
    per id)`` until :meth:`results` builds it (a list of "stored" :class:`RememberResult`):
    a replayed request's result mostly waits in a cache for a retry that never comes."""

    __slots__ = ()

    def results(self) -> list[RememberResult]:
        ids, links = self
        return [RememberResult(memory_id, "stored", None, auto) for memory_id, auto in zip(ids, links)]


def results_of(result: Any) -> Any:
    """``result`` as ``apply`` returns it (a :class:`Stored` built)."""
    return result.results() if isinstance(result, Stored) else result


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
    """Logged STORE records, held until :meth:`flush` applies them: in bulk the longest
    prefix that fits (see the module doc), the first record that does not through the
    general path, and so on.

    ``elsewhere(id)`` answers whether a lower tier holds ``id``. Nothing else may change
    the engine between :meth:`add` and :meth:`flush`.
    """

    def __init__(self, hot: HotTier, elsewhere: Callable[[str], bool], apply: Callable[[records.Record], Any],
                 hooks: Hooks) -> None:
        self._hot = hot
        self._graph = hot.graph
        self._elsewhere = elsewhere
        self._apply = apply
        self._hooks = hooks
        self._dim = hot.dimension
        self._pending: list[tuple[int, bytes | memoryview]] = []

    def add(self, seq: int, payload: bytes | memoryview) -> None:
        self._pending.append((seq, payload))
        if len(self._pending) >= RUN_LIMIT:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        retries = MAX_RETRIES
        while pending:
            batch = storelayout.decode_stores([p for _, p in pending], self._dim) if retries else None
            if batch is None:   # one at a time: decode finds (and raises) what does not fit
                for seq, payload in pending:
                    self._general(seq, payload)
                return
            fits = self._resolve(batch)
            self._bulk(fits.prefix(len(batch) if fits.first_bad is None else fits.first_bad), pending)
            if fits.first_bad is None:
                return
            self._general(*pending[fits.first_bad])
            pending = pending[fits.first_bad + 1:]
            retries -= 1

    def _general(self, seq: int, payload: bytes | memoryview) -> None:
        rec = records.decode(records.RecordType.STORE, payload)
        self._hooks(seq, rec, self._apply(rec))

    def _resolve(self, b: storelayout.StoreBatch) -> Resolved:
        """Where each link of the batch goes, and the first record that does not fit."""
        graph, hot = self._graph, self._hot
        ids, m = b.ids, len(b.ids)
        record_of = np.repeat(np.arange(len(b)), b.entries)      # entry -> its record
        bad = np.zeros(m, np.bool_)                                # per entry
        pos = dict(zip(ids, range(m)))
        if len(pos) != m:   # an id stored twice: the second time is for apply
            seen: set[str] = set()
            for e, memory_id in enumerate(ids):
                bad[e] |= memory_id in seen
                seen.add(memory_id)
        # new ids: no link slot (nothing links to them and they are not hot), in no lower tier
        slots = graph.slot
        bad |= np.fromiter(map(slots.__contains__, ids), np.bool_, m)
        bad |= np.fromiter(map(self._elsewhere, ids), np.bool_, m)
        # each name a link mentions: an entry of the batch, a hot row, or neither. A lookup in a
        # large dict is a cache miss or two, so each name is looked up once: when only auto-links
        # were made the backlinks name the links' targets, in the same order
        nl = len(b.targets)
        if b.neighbours == b.targets:
            tpos = npos = np.fromiter(map(pos.get, b.targets, repeat(-1)), np.int64, nl)
            trow = nrow = np.fromiter(map(hot.row.get, b.targets, repeat(-1)), np.int64, nl)
        else:
            names = b.targets + b.neighbours
            local = dict.fromkeys(names)
            unique = list(local)
            local.update(zip(unique, range(len(unique))))
            at = np.fromiter(map(local.__getitem__, names), np.int64, len(names))
            upos = np.fromiter(map(pos.get, unique, repeat(-1)), np.int64, len(unique))
            urow = np.fromiter(map(hot.row.get, unique, repeat(-1)), np.int64, len(unique))
            tpos, trow = upos[at[:nl]], urow[at[:nl]]
            npos, nrow = upos[at[nl:]], urow[at[nl:]]
        tsrc = np.repeat(np.arange(m), b.link_counts)
        nsrc = np.repeat(np.arange(m), b.back_counts)
        # a link may point at an earlier entry of the batch, never at its own or a later one
        late = tpos >= tsrc
        np.logical_or.at(bad, tsrc[late], True)
        # a backlink comes from a hot memory or an earlier entry
        unheld = np.where(npos >= 0, npos >= nsrc, nrow < 0)
        np.logical_or.at(bad, nsrc[unheld], True)
        first = np.flatnonzero(bad)
        first_bad = int(record_of[first[0]]) if len(first) else None
        return Resolved(b, first_bad, tpos, trow, npos, nrow, tsrc)

    def _bulk(self, r: Resolved, pending: list[tuple[int, bytes | memoryview]]) -> None:
        """Apply the batch of ``r`` (its links resolved): hooks, then rows and links. A hook
        that raises leaves its record and those before it applied, none after."""
        b = r.batch
        k = len(b)
        if not k:
            return
        hooks = self._hooks
        if hooks.on_record is not None or hooks.on_result is not None:
            entry_at = [0, *np.cumsum(b.entries).tolist()]
            back_at = [0, *np.cumsum(b.back_counts).tolist()]
            ids, neighbours = b.ids, b.neighbours
            for i in range(k):
                rid = b.request_ids[i]
                results = None
                if rid is not None and hooks.on_result is not None:
                    e0, e1 = entry_at[i], entry_at[i + 1]
                    results = tuple.__new__(Stored, (ids[e0:e1], [tuple(neighbours[back_at[e]:back_at[e + 1]])
                                                                   for e in range(e0, e1)]))
                try:
                    hooks.stored(pending[i][0], pending[i][1], rid, results)
                except BaseException:
                    self._store(r.prefix(i + 1))
                    raise
        self._store(r)

    def _store(self, r: Resolved) -> None:
        graph, hot, b = self._graph, self._hot, r.batch
        m = len(b.ids)
        new = np.array(graph.intern_new(b.ids), np.int64)
        # link ends: an entry of the batch, a hot memory, or (rarely) another id, given a slot if it has none
        hot_slots = hot.slots
        targets = _ends(r.tpos, r.trow, new, hot_slots)
        other = np.flatnonzero((r.tpos < 0) & (r.trow < 0))
        if len(other):
            targets[other] = [graph.intern(b.targets[i]) for i in other.tolist()]
        neighbours = _ends(r.npos, r.nrow, new, hot_slots)
        rows = np.frombuffer(b.rows, dtype="<f4").reshape(m, self._dim)
        # a stored memory starts with last_access = created_at and no accesses (Engine._apply_entry)
        hot.extend(b.ids, rows, b.confidence, b.created_at, b.created_at, 0, b.content,
                   list(map(tuple, b.tags)), b.metadata, slots=new)
        codes = np.array([graph.kind_code(k) for k in b.kind_names], np.int32)
        auto = graph.kind_code(AUTO_LINK_KIND)
        graph.add_new(*_distinct(
            np.concatenate([np.repeat(new, b.link_counts), neighbours]),
            np.concatenate([targets, np.repeat(new, b.back_counts)]),
            np.concatenate([b.weights, b.back_weights]),
            np.concatenate([codes[b.kinds], np.full(len(neighbours), auto, np.int32)])))


def _ends(pos: Ints, row: Ints, new: Ints, hot_slots: Ints) -> Ints:
    """Slots of link ends: ``new[pos]`` where ``pos >= 0``, else ``hot_slots[row]`` where
    ``row >= 0``, else -1."""
    out = np.full(len(pos), -1, np.int64)
    batch, hot = pos >= 0, (pos < 0) & (row >= 0)
    out[batch] = new[pos[batch]]
    out[hot] = hot_slots[row[hot]]
    return out


@dataclass(frozen=True, slots=True)
class Resolved:
    """Per link of a batch: the entry it points at (``tpos``, -1 if none) or the hot row
    (``trow``); per backlink, the same for its neighbour; and the first record (index) that
    the bulk path must leave to ``apply``, None if there is none."""

    batch: storelayout.StoreBatch
    first_bad: int | None
    tpos: Ints
    trow: Ints
    npos: Ints
    nrow: Ints
    tsrc: Ints

    def prefix(self, k: int) -> Resolved:
        """The same for the batch's first ``k`` records (whose links point before them)."""
        b = self.batch
        if k == len(b):
            return self
        m = int(b.entries[:k].sum())
        nl, nb = int(b.link_counts[:m].sum()), int(b.back_counts[:m].sum())
        return Resolved(b.part(0, k), None, self.tpos[:nl], self.trow[:nl], self.npos[:nb], self.nrow[:nb],
                        self.tsrc[:nl])


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


