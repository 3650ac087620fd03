"""The engine: one memory space in RAM (plus its lower tiers), with no I/O of its own.

Every write is planned, then applied::

    rec = engine.plan_remember(items, now, new_id)   # validates and decides; mutates nothing
    wal.append(*records.encode(rec))                 # the durable layer's job
    result = engine.apply(rec)                       # the only mutation; deterministic
    wal.commit()

``plan_*`` raise :mod:`memspace.errors` (InvalidArgument, MemoryNotFound,
QuotaExceeded) naming the offending field and leave the engine untouched.
``apply`` never raises for a record a plan produced; applied to the same
starting state, the same records give the same state, so recovery is
``engine.apply(records.decode(type, payload))`` per logged record
(``engine.replay(logged)`` does exactly that, in bulk: :mod:`.replay`). A record
that no longer fits is applied as far as it fits: a merge, link or touch of a
memory that is gone is skipped; an update of one stores it again (the record
holds the whole memory).

Tiers: the hot tier is this engine's struct of arrays (:mod:`.hot`); warm and
cold are :class:`~memspace.engine.tiers.TierStore` objects. Any change to a
warm or cold memory (merge, update, link from it, touch) first promotes it to
hot; forgetting one discards it from its tier. Links are directed and stored
with their source; forgetting a memory removes hot memories' links to it at
once, while links to it held by warm/cold entries (immutable) are skipped
lazily wherever links are read, and dropped when their holder is promoted.
Each request's work lives in its own module (:mod:`.remember`, :mod:`.restore`, :mod:`.forget`,
:mod:`.linking`, :mod:`.recall`, :mod:`.snapshots`, :mod:`.paging`); this class holds the state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from memspace.engine import recall as recall_mod
from memspace.engine import records, validate
from memspace.engine.ann import AnnIndex, catch_up
from memspace.engine.ann import available as ann_available
from memspace.engine.embedder import Embedder, get_embedder
from memspace.engine.forget import apply_forget, plan_forget
from memspace.engine.hot import Allocate, HotTier
from memspace.engine.linking import plan_link
from memspace.engine.model import (
    Hit,
    Limits,
    Link,
    Memory,
    Page,
    RememberResult,
    SpaceSettings,
    Vector,
)
from memspace.engine.paging import MAX_PAGE, page_ids
from memspace.engine.policy import Demotion, choose_demotions
from memspace.engine.remember import apply_entry, parse_items, plan_entries
from memspace.engine.replay import Logged, replay_records
from memspace.engine.restore import apply_restore, parse_restore_items, restore_entries
from memspace.engine.snapshots import check_snapshot, load_hot, snapshot_state
from memspace.engine.spreading import DEFAULT_DEPTH
from memspace.engine.tiers import TierStore
from memspace.engine.validate import invalid
from memspace.errors import InvalidArgument, MemoryNotFound, QuotaExceeded

DEFAULT_LIMITS = Limits()
# Index changes folded in per recall: bounds the pause a recall can take to update the index.
ANN_SYNC_BUDGET = 512


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of the engine's size. ``links`` counts links held by hot memories."""

    hot: int
    warm: int
    cold: int
    links: int
    dimension: int

    @property
    def memories(self) -> int:
        return self.hot + self.warm + self.cold


class Engine:
    """One memory space. Not thread-safe: one caller at a time (the space's worker)."""

    def __init__(self, settings: SpaceSettings, *, limits: Limits = DEFAULT_LIMITS,
                 embedder: Embedder | None = None, warm: TierStore | None = None, cold: TierStore | None = None,
                 ann_threshold: int = 0) -> None:
        if embedder is not None and embedder.dimension != settings.dimension:
            raise InvalidArgument(f"embedder {embedder.name!r} has dimension {embedder.dimension}, "
                                  f"the space has {settings.dimension}", {"field": "dimension"})
        self.settings = settings
        self.limits = limits
        self.warm = warm
        self.cold = cold
        self.ann_threshold = ann_threshold
        self._embedder = embedder
        self._hot = HotTier(settings.dimension)
        self._ann: AnnIndex | None = None           # derived; built on demand (see catch_up_index)
        self._ann_usable = ann_threshold > 0 and ann_available()
        self._membership = 0                      # bumped whenever the set of ids changes
        self._sorted: dict[str | None, tuple[int, list[str]]] = {}

    @property
    def embedder(self) -> Embedder:
        """The space's embedder, created on first use from ``settings.embedder``."""
        if self._embedder is None:
            self._embedder = get_embedder(self.settings.embedder, self.settings.dimension)
        return self._embedder

    # -- lookups ------------------------------------------------------------------------------------

    def _lower(self, memory_id: str) -> TierStore | None:
        for tier in (self.warm, self.cold):
            if tier is not None and memory_id in tier:
                return tier
        return None

    def exists(self, memory_id: str) -> bool:
        return memory_id in self._hot.row or self._lower(memory_id) is not None

    def tier_of(self, memory_id: str) -> str | None:
        if memory_id in self._hot.row:
            return "hot"
        tier = self._lower(memory_id)
        return tier.name if tier is not None else None

    def get(self, memory_id: str) -> Memory:
        """The memory in whichever tier holds it; MemoryNotFound if none does. Mutates nothing."""
        if memory_id in self._hot.row:
            return self._hot.memory(memory_id)
        tier = self._lower(memory_id)
        m = tier.get(memory_id) if tier is not None else None
        if m is None:
            raise MemoryNotFound(f"memory {memory_id!r} does not exist", {"id": memory_id})
        return self._without_dangling(m)

    def _without_dangling(self, m: Memory) -> Memory:
        live = tuple(link for link in m.links if self.exists(link.target))
        return m if len(live) == len(m.links) else replace(m, links=live)

    def count(self, tier: str | None = None) -> int:
        if tier is None:
            return len(self._hot) + sum(len(t) for t in (self.warm, self.cold) if t is not None)
        validate.tier(tier, "tier")
        store = {"hot": self._hot, "warm": self.warm, "cold": self.cold}[tier]
        return len(store) if store is not None else 0

    def stats(self) -> EngineStats:
        return EngineStats(len(self._hot), self.count("warm"), self.count("cold"), self._hot.link_count,
                           self.settings.dimension)

    def page(self, limit: int = 100, cursor: str | None = None, tier: str | None = None) -> Page:
        """Memories in id order, ``limit`` at a time; ``cursor`` is the previous page's
        ``next_cursor`` (opaque; a walk stays consistent while memories come and go: :mod:`.paging`)."""
        limit = validate.integer(limit, "limit", 1, MAX_PAGE)
        if tier is not None:
            validate.tier(tier, "tier")
        chunk, next_cursor = page_ids(self._sorted_ids(tier), limit, cursor)
        return Page([self.get(i) for i in chunk], next_cursor)

    def _sorted_ids(self, tier: str | None) -> list[str]:
        cached = self._sorted.get(tier)
        if cached is not None and cached[0] == self._membership:
            return cached[1]
        stores: list[Any] = [self._hot.ids] if tier in (None, "hot") else []
        stores += [t.ids() for t in (self.warm, self.cold) if t is not None and tier in (None, t.name)]
        ids = sorted(i for s in stores for i in s)
        self._sorted[tier] = (self._membership, ids)
        return ids

    # -- plans ----------------------------------------------------------------------------------------

    def plan_remember(self, items: Sequence[Mapping[str, Any]], now: float, new_id: Callable[[], str],
                      request_id: str | None = None) -> records.Remember:
        """Plan storing ``items`` (one request; a batch is one atomic record). See :mod:`.remember`."""
        now = validate.timestamp(now, "now")
        parsed = parse_items(items, self.settings.dimension, self.limits)
        self._embed(parsed)
        entries = plan_entries(parsed, self._hot, self.exists, self.settings, now, new_id)
        stores = sum(1 for e in entries if isinstance(e, records.StoreEntry))
        self._check_quota(stores, f"storing {stores} more")
        return records.Remember(tuple(entries), request_id)

    def plan_restore(self, items: Sequence[Mapping[str, Any]], now: float, request_id: str | None = None
                     ) -> records.Restore:
        """Plan putting memories in exactly as exported (an import; a batch is one atomic record;
        see :mod:`.restore`). Raises InvalidArgument naming ``items[i].field`` (also for a single
        item), or QuotaExceeded when the new ids would pass ``limits.max_memories``; nothing
        changes on a raise. Applying replaces a memory with the same id in full, whatever its tier."""
        now = validate.timestamp(now, "now")
        parsed = parse_restore_items(items, self.settings.dimension, self.limits)
        self._embed(parsed)
        new = len({it.id for it in parsed if it.id is not None and not self.exists(it.id)})
        self._check_quota(new, f"restoring {new} new ones")
        return records.Restore(restore_entries(parsed, now), now, request_id)

    def _check_quota(self, adding: int, doing: str) -> None:
        limit = self.limits.max_memories
        if limit and adding and self.count() + adding > limit:
            raise QuotaExceeded(f"the space holds {self.count()} memories; {doing} would pass its quota of {limit}",
                                {"limit": limit, "count": self.count()})

    def _embed(self, items: Sequence[validate.Item]) -> None:
        # the embedder is created only if an item needs it
        validate.fill_embeddings(items, lambda texts: self.embedder.embed(texts), self.settings.dimension)

    def plan_forget(self, ids: Sequence[str] | None = None, *, tags: Sequence[str] | None = None,
                    before: float | None = None, request_id: str | None = None) -> records.Forget:
        """Resolve what to forget: ``ids`` and/or a filter (memories with ALL ``tags``, created
        before ``before``); see :mod:`.forget`."""
        lower = [t for t in (self.warm, self.cold) if t is not None]
        return plan_forget(self._hot, lower, self.exists, self.get, self.limits, ids, tags, before, request_id)

    def plan_link(self, source: str, target: str, weight: float = 1.0, kind: str = "related", *, now: float,
                  request_id: str | None = None) -> records.Link:
        """Link ``source -> target`` (replacing an existing link between them). Both must exist;
        see :mod:`.linking`."""
        return plan_link(source, target, weight, kind, now, request_id, exists=self.exists,
                         targets_of=self._links_of, limits=self.limits)

    def _links_of(self, memory_id: str) -> Iterable[str]:
        if memory_id in self._hot.row:
            return self._hot.link_targets(memory_id)
        return [link.target for link in self.get(memory_id).links]

    def plan_touch(self, ids: Sequence[str], now: float) -> records.Touch:
        """Reinforce recalled memories; ids that no longer exist are left out."""
        now = validate.timestamp(now, "now")
        if isinstance(ids, str) or not isinstance(ids, Sequence):
            raise invalid("ids", "must be a list of memory ids")
        return records.Touch(tuple(i for i in dict.fromkeys(ids) if isinstance(i, str) and self.exists(i)), now)

    # -- apply ------------------------------------------------------------------------------------------

    def apply(self, rec: records.Record) -> list[RememberResult] | int | Link | None:
        """Apply a planned (or replayed) record: the only method that changes state."""
        if isinstance(rec, records.Remember):
            return [self._apply_entry(e) for e in rec.entries]
        if isinstance(rec, records.Forget):
            forgotten = apply_forget(self._hot, self._lower, rec.ids)
            if forgotten:
                self._membership += 1
            return forgotten
        if isinstance(rec, records.Link):
            link = Link(rec.target, rec.weight, rec.kind)
            if self._promote(rec.source):
                self._hot.set_link(rec.source, link)
            return link
        if isinstance(rec, records.Touch):
            hot = self._hot
            for memory_id in rec.ids:
                if self._promote(memory_id):
                    r = hot.row[memory_id]
                    hot.access_count[r] += 1
                    hot.last_access[r] = rec.at
            return None
        if isinstance(rec, records.Restore):
            apply_restore(self._hot, self._lower, rec.entries)
            self._membership += 1
            return len(rec.entries)
        raise TypeError(f"not a record: {type(rec).__name__}")

    def replay(self, logged: Iterable[Logged], *, on_result: Callable[[str, Any], None] | None = None,
               on_record: Callable[[int, records.Record], None] | None = None, record_after: int = 0,
               expected: int = 0, allocate: Allocate | None = None) -> int:
        """Apply logged records (``(seq, type, payload)`` tuples: a WAL's records) in order and
        return how many; the state is that of ``apply(records.decode(type, payload))`` for each,
        reached in bulk (see :mod:`.replay`).

        Per record, in order: ``on_record(seq, record)`` with the decoded record (decoded only
        for this hook; only for seq > ``record_after``), then ``on_result(request_id, result)``
        if it carries a request id, ``result`` being what ``apply`` returns (for a STORE record
        applied in bulk, a :class:`~memspace.engine.replay.Stored` that builds it on request:
        ``replay.results_of(result)``). The hooks may see a
        record before the hot tier shows it. A payload that cannot be decoded raises
        ``RecordFormatError``, and an exception from a hook propagates, with every record up to
        it applied and none after. ``expected``: at most how many new memories the records
        hold (room for that many is made at once, with ``allocate`` if given: see
        :meth:`HotTier.reserve`).
        """
        lower = [t for t in (self.warm, self.cold) if t is not None]
        self._hot.reserve(expected, allocate)
        try:
            return replay_records(logged, self._hot, lower, self.apply, on_result, on_record, record_after)
        finally:
            self._membership += 1

    def _apply_entry(self, e: records.Entry) -> RememberResult:
        result, added = apply_entry(self._hot, e, self._promote, self.exists)
        if added:
            self._membership += 1
        return result

    def _promote(self, memory_id: str) -> bool:
        """Make ``memory_id`` hot (moving it out of warm/cold); False if it exists nowhere."""
        if memory_id in self._hot.row:
            return True
        tier = self._lower(memory_id)
        m = tier.get(memory_id) if tier is not None else None
        if tier is None or m is None:
            return False
        m = self._without_dangling(m)
        tier.discard(memory_id)
        self._hot.insert_memory(m)
        self._membership += 1
        return True

    # -- recall -----------------------------------------------------------------------------------------

    def recall(self, *, query: str | None = None, embedding: Any = None, k: int = 10, threshold: float = 0.0,
               mode: str = "spreading", max_depth: int = DEFAULT_DEPTH, tags: Sequence[str] | None = None,
               since: float | None = None, until: float | None = None, tiers: Sequence[str] | None = None,
               now: float) -> list[Hit]:
        """Ranked memories for a cue (see :mod:`.recall`). Mutates no memory (only the derived
        approximate index may catch up): the caller plans a touch for the returned ids. Cue:
        ``embedding`` and/or ``query`` text (both: their normalised sum)."""
        q = recall_mod.make_query(lambda text: self.embedder.embed([text])[0], self.settings.dimension,
                                  self.limits, query=query, embedding=embedding, k=k, threshold=threshold,
                                  mode=mode, max_depth=max_depth, tags=tags, since=since, until=until,
                                  tiers=tiers, now=now)
        return recall_mod.run(self._hot, self.warm, self.cold, self.settings, q, self._ann_search)

    def catch_up_index(self, max_items: int | None = None) -> int:
        """Fold up to ``max_items`` (None: all) pending hot-tier changes into the approximate
        index, building it on first use (every hot memory is then pending); returns how many
        changes are still pending. With the index off (``ann_threshold`` 0, hnswlib missing) or a
        hot tier below ``ann_threshold`` there is no index (an existing one is dropped) and this
        returns 0. Recall does a bounded step itself; a worker can call this when idle so the
        first recalls after a restart need not scan exactly."""
        hot = self._hot
        if not self._ann_usable or len(hot) < self.ann_threshold:
            self._ann, hot.changed = None, None
            return 0
        self._ann, pending = catch_up(self._ann, hot, max_items)
        return pending

    def _ann_search(self, query: Vector, k: int) -> npt.NDArray[np.intp] | None:
        """Candidate hot rows from the approximate index, or None to scan exactly (index off,
        hot tier small, or the index still more than ANN_SYNC_BUDGET changes behind)."""
        if self.catch_up_index(ANN_SYNC_BUDGET) or self._ann is None:
            return None
        return self._ann.search(self._hot, query, k)

    # -- tiers ------------------------------------------------------------------------------------------

    def plan_demotion(self, hot_capacity: int, warm_capacity: int) -> Demotion:
        """Least recently accessed memories that must leave hot (and warm) to fit the capacities."""
        hot = self._hot
        warm_ids = self.warm.ids() if self.warm is not None else None
        return choose_demotions(hot.ids, hot.last_access, hot_capacity, warm_ids, self.count("warm"),
                                warm_capacity, has_cold=self.cold is not None)

    def demote(self, d: Demotion) -> None:
        """Move memories down: ``warm.add`` first (durable when it returns), then drop from hot;
        likewise warm -> cold. Ids no longer where the plan found them are skipped."""
        hot = self._hot
        if d.to_warm and self.warm is not None:
            moving = [hot.memory(i) for i in d.to_warm if i in hot.row]
            self.warm.add(moving)
            for m in moving:
                hot.remove(m.id)
        if d.to_cold and self.warm is not None and self.cold is not None:
            found = [self.warm.get(i) for i in d.to_cold]
            cooling = [m for m in found if m is not None]
            self.cold.add(cooling)
            for m in cooling:
                self.warm.discard(m.id)
        self._membership += 1

    # -- snapshots --------------------------------------------------------------------------------------

    def snapshot_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The hot tier as arrays (copies, safe to write from another thread) and JSON-safe meta.

        Links are arrays too (``link_*``: per row its link count, then every link's target,
        weight and kind code; see ``LinkGraph.export``). Warm and cold tiers snapshot
        themselves (``TierStore.state()``); the format is drawn in :mod:`.snapshots`."""
        return snapshot_state(self._hot, self.settings.dimension)

    @classmethod
    def restore(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], settings: SpaceSettings, *,
                limits: Limits = DEFAULT_LIMITS, embedder: Embedder | None = None, warm: TierStore | None = None,
                cold: TierStore | None = None, ann_threshold: int = 0) -> Engine:
        """An engine whose hot tier is the snapshot's (rows in the same order). Reads this
        version's snapshots and version 1 (links in the meta). Raises InvalidArgument if the
        snapshot does not fit the settings or its columns do not fit together."""
        version = check_snapshot(meta, settings.dimension)
        engine = cls(settings, limits=limits, embedder=embedder, warm=warm, cold=cold, ann_threshold=ann_threshold)
        engine._hot = load_hot(arrays, meta, settings.dimension, version)
        return engine


