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
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt

from memspace.engine import recall as recall_mod
from memspace.engine import records, validate
from memspace.engine.ann import AnnIndex
from memspace.engine.ann import available as ann_available
from memspace.engine.embedder import Embedder, get_embedder
from memspace.engine.hot import Allocate, HotTier
from memspace.engine.links import links_from_arrays, links_from_v1
from memspace.engine.model import (
    AUTO_LINK_KIND,
    MODES,
    TIERS,
    Hit,
    Limits,
    Link,
    Memory,
    Page,
    RememberResult,
    SpaceSettings,
    Vector,
)
from memspace.engine.policy import Demotion, choose_demotions
from memspace.engine.remember import plan_entries
from memspace.engine.replay import Logged, gc_paused, replay_records
from memspace.engine.spreading import DEFAULT_DEPTH, MAX_DEPTH
from memspace.engine.tiers import TierStore
from memspace.engine.validate import invalid
from memspace.errors import InvalidArgument, MemoryNotFound, QuotaExceeded

#: 2: links as arrays (``link_*``); 1 (still read): links in the meta.
SNAPSHOT_VERSION = 2
DEFAULT_LIMITS = Limits()
MAX_PAGE = 1000
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
        self._check_tier(tier)
        store = {"hot": self._hot, "warm": self.warm, "cold": self.cold}[tier]
        return len(store) if store is not None else 0

    def stats(self) -> EngineStats:
        return EngineStats(len(self._hot), self.count("warm"), self.count("cold"), self._hot.link_count,
                           self.settings.dimension)

    def page(self, limit: int = 100, cursor: str | None = None, tier: str | None = None) -> Page:
        """Memories in id order, ``limit`` at a time. ``cursor`` is the previous page's
        ``next_cursor`` (opaque); paging stays consistent while memories come and go: nothing
        present for the whole walk is skipped or repeated."""
        limit = validate.integer(limit, "limit", 1, MAX_PAGE)
        if tier is not None:
            self._check_tier(tier)
        after = "" if cursor is None else _decode_cursor(cursor)
        ids = self._sorted_ids(tier)
        start = bisect.bisect_right(ids, after) if after else 0
        chunk = ids[start:start + limit]
        more = start + limit < len(ids)
        return Page([self.get(i) for i in chunk], _encode_cursor(chunk[-1]) if more and chunk else None)

    def _sorted_ids(self, tier: str | None) -> list[str]:
        cached = self._sorted.get(tier)
        if cached is not None and cached[0] == self._membership:
            return cached[1]
        stores: list[Any] = [self._hot.ids] if tier in (None, "hot") else []
        stores += [t.ids() for t in (self.warm, self.cold) if t is not None and tier in (None, t.name)]
        ids = sorted(i for s in stores for i in s)
        self._sorted[tier] = (self._membership, ids)
        return ids

    @staticmethod
    def _check_tier(tier: str) -> None:
        if tier not in TIERS:
            raise invalid("tier", f"must be one of {', '.join(TIERS)}, got {tier!r}")

    # -- plans ----------------------------------------------------------------------------------------

    def plan_remember(self, items: Sequence[Mapping[str, Any]], now: float, new_id: Callable[[], str],
                      request_id: str | None = None) -> records.Remember:
        """Plan storing ``items`` (one request; a batch is one atomic record). See :mod:`.remember`."""
        now = validate.timestamp(now, "now")
        if isinstance(items, Mapping) or not isinstance(items, Sequence):
            raise invalid("items", "must be a list of items")
        if not items:
            raise invalid("items", "must contain at least one item")
        if len(items) > self.limits.max_batch:
            raise invalid("items", f"has {len(items)} items, at most {self.limits.max_batch} per batch")
        batch = len(items) > 1
        parsed = [validate.item(raw, f"items[{i}]." if batch else "", self.settings.dimension, self.limits)
                  for i, raw in enumerate(items)]
        self._embed(parsed)
        entries = plan_entries(parsed, self._hot, self.exists, self.settings, now, new_id)
        stores = sum(1 for e in entries if isinstance(e, records.StoreEntry))
        if self.limits.max_memories and stores and self.count() + stores > self.limits.max_memories:
            raise QuotaExceeded(
                f"the space holds {self.count()} memories; storing {stores} more would pass its quota of "
                f"{self.limits.max_memories}", {"limit": self.limits.max_memories, "count": self.count()})
        return records.Remember(tuple(entries), request_id)

    def plan_restore(self, items: Sequence[Mapping[str, Any]], now: float, request_id: str | None = None
                     ) -> records.Restore:
        """Plan putting memories in exactly as exported (an import; a batch is one atomic record).

        Each item is validated (:func:`.validate.restore_item`; errors name ``items[i].field``,
        also for a single item) and becomes a :class:`~.records.RestoreEntry` holding the whole
        memory: embedding (as given; computed from the content when absent), confidence,
        created_at (default ``now``), last_access (default created_at), access_count, tags,
        metadata and its links as given. No dedup, no auto-links, and links may name ids the
        space does not hold (yet). Raises InvalidArgument, or QuotaExceeded when the new ids
        would pass ``limits.max_memories``; nothing changes on a raise.

        Applying replaces a memory with the same id in full (whatever its tier; later items of
        a batch replace earlier ones), so restoring the same memories again changes nothing.
        Links *into* a replaced memory belong to the memories holding them and are kept.
        """
        now = validate.timestamp(now, "now")
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
            raise invalid("items", "must be a list of memories")
        if not items:
            raise invalid("items", "must contain at least one memory")
        if len(items) > self.limits.max_batch:
            raise invalid("items", f"has {len(items)} memories, at most {self.limits.max_batch} per batch")
        parsed = [validate.restore_item(raw, f"items[{i}].", self.settings.dimension, self.limits)
                  for i, raw in enumerate(items)]
        self._embed(parsed)
        new = len({it.id for it in parsed if it.id is not None and not self.exists(it.id)})
        if self.limits.max_memories and new and self.count() + new > self.limits.max_memories:
            raise QuotaExceeded(
                f"the space holds {self.count()} memories; restoring {new} new ones would pass its quota of "
                f"{self.limits.max_memories}", {"limit": self.limits.max_memories, "count": self.count()})
        entries = []
        for it in parsed:
            assert it.id is not None and it.embedding is not None   # required / embedded above
            created = now if it.created_at is None else it.created_at
            entries.append(records.RestoreEntry(
                it.id, it.content, it.embedding, it.confidence, created,
                created if it.last_access is None else it.last_access, it.access_count, it.tags, it.metadata,
                it.links))
        return records.Restore(tuple(entries), now, request_id)

    def _embed(self, items: Sequence[validate.Item]) -> None:
        todo = [it for it in items if it.embedding is None]
        if not todo:
            return
        try:
            vectors = self.embedder.embed([it.content or "" for it in todo])
        except InvalidArgument as exc:
            index = exc.details.get("index")
            if isinstance(index, int) and 0 <= index < len(todo):
                field = todo[index].field("content")
                raise InvalidArgument(f"{field}: {exc.message}", {"field": field}) from None
            raise
        for it, vec in zip(todo, vectors):
            it.embedding = validate.unit_vector(vec, self.settings.dimension, it.field("content"))

    def plan_forget(self, ids: Sequence[str] | None = None, *, tags: Sequence[str] | None = None,
                    before: float | None = None, request_id: str | None = None) -> records.Forget:
        """Resolve what to forget: ``ids`` and/or a filter (memories with ALL ``tags``, created
        before ``before``); given together they intersect. Neither ids nor a non-empty filter is
        InvalidArgument: an empty filter would match every memory. A single explicit id that does
        not exist is MemoryNotFound; in a list, missing ids are ignored (the applied count tells)."""
        want_tags = () if tags is None else validate.tags(tags, "tags", self.limits)
        cutoff = None if before is None else validate.timestamp(before, "before")
        if ids is None and not want_tags and cutoff is None:
            raise invalid("ids", "forget needs ids or a filter (non-empty tags, before)")

        def matches(m_tags: Sequence[str], created_at: float) -> bool:
            return all(t in m_tags for t in want_tags) and (cutoff is None or created_at < cutoff)

        if ids is not None:
            if isinstance(ids, str) or not isinstance(ids, Sequence):
                raise invalid("ids", "must be a list of memory ids")
            wanted = [validate.memory_id(i, f"ids[{n}]") for n, i in enumerate(ids)]
            if len(wanted) == 1 and not self.exists(wanted[0]):
                raise MemoryNotFound(f"memory {wanted[0]!r} does not exist", {"id": wanted[0], "field": "ids[0]"})
            chosen = []
            for i in dict.fromkeys(wanted):
                if not self.exists(i):
                    continue
                m_tags, created = self._tags_created(i)
                if matches(m_tags, created):
                    chosen.append(i)
            return records.Forget(tuple(chosen), request_id)
        hot = self._hot
        rows = hot.rows_with_tags(want_tags)
        if cutoff is not None:
            rows = rows[hot.created_at[rows] < cutoff]
        chosen = [hot.ids[r] for r in rows.tolist()]
        for tier in (t for t in (self.warm, self.cold) if t is not None):
            for i in tier.ids():
                m = tier.get(i)
                if m is not None and matches(m.tags, m.created_at):
                    chosen.append(i)
        return records.Forget(tuple(chosen), request_id)

    def _tags_created(self, memory_id: str) -> tuple[tuple[str, ...], float]:
        r = self._hot.row.get(memory_id)
        if r is not None:
            return self._hot.tags[r], float(self._hot.created_at[r])
        m = self.get(memory_id)
        return m.tags, m.created_at

    def plan_link(self, source: str, target: str, weight: float = 1.0, kind: str = "related", *, now: float,
                  request_id: str | None = None) -> records.Link:
        """Link ``source -> target`` (replacing an existing link between them). Both must exist."""
        now = validate.timestamp(now, "now")
        source = validate.memory_id(source, "source")
        target = validate.memory_id(target, "target")
        w = validate.weight(weight, "weight")
        k = validate.kind(kind, "kind")
        if source == target:
            raise invalid("target", "a memory cannot link to itself")
        for name, memory_id in (("source", source), ("target", target)):
            if not self.exists(memory_id):
                raise MemoryNotFound(f"{name}: memory {memory_id!r} does not exist", {"field": name, "id": memory_id})
        held = self._links_of(source)
        if target not in held and len(held) >= self.limits.max_links:
            raise QuotaExceeded(f"source: memory {source!r} already has {len(held)} links, the limit",
                                {"field": "source", "limit": self.limits.max_links})
        return records.Link(source, target, w, k, now, request_id)

    def _links_of(self, memory_id: str) -> set[str]:
        if memory_id in self._hot.row:
            return set(self._hot.link_targets(memory_id))
        return {link.target for link in self.get(memory_id).links}

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
            return self._apply_forget(rec.ids)
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
            return self._apply_restore(rec.entries)
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
        hot = self._hot
        if isinstance(e, records.MergeEntry):
            if self._promote(e.id):
                r = hot.row[e.id]
                hot.access_count[r] += 1
                hot.last_access[r] = e.at
                hot.confidence[r] = e.confidence
                if e.tags:
                    hot.set_tags(e.id, hot.tags[r] + tuple(t for t in e.tags if t not in hot.tags[r]))
                for link in e.links:
                    hot.set_link(e.id, link)
            return RememberResult(e.id, "merged", e.similarity)
        if isinstance(e, records.UpdateEntry) or self.exists(e.id):
            at = e.at if isinstance(e, records.UpdateEntry) else e.created_at
            if not self._promote(e.id):  # an update whose memory is gone: store it again
                hot.insert(e.id, e.embedding, e.confidence, at, at, 0, e.content, e.tags, e.metadata)
                self._membership += 1
            r = hot.row[e.id]
            hot.set_embedding(e.id, e.embedding)
            hot.confidence[r] = e.confidence
            hot.last_access[r] = at
            hot.content[r] = e.content
            hot.metadata[r] = dict(e.metadata)
            hot.set_tags(e.id, e.tags)
            for link in e.links:
                hot.set_link(e.id, link)
            return RememberResult(e.id, "updated")
        hot.insert(e.id, e.embedding, e.confidence, e.created_at, e.created_at, 0, e.content, e.tags, e.metadata,
                   e.links)
        self._membership += 1
        # promoting a neighbour does not depend on the links set before it: promote, then link
        hot.link_into(e.id, [(n, w) for n, w in e.backlinks if self._promote(n)], AUTO_LINK_KIND)
        return RememberResult(e.id, "stored", None, tuple(n for n, _ in e.backlinks))

    def _apply_restore(self, entries: Sequence[records.RestoreEntry]) -> int:
        """Put each memory in as it is given, replacing one with its id (from whichever tier).

        Removing the old memory drops the links it held; the links other memories hold into it
        stay (the link graph keeps its slot while anything links to it), so the memory put in
        under the same id has them again. A link to an id that exists nowhere is held like any
        other (``get`` shows it); recall follows it once a memory with that id arrives."""
        hot = self._hot
        for e in entries:
            if e.id in hot.row:
                hot.remove(e.id)
            else:
                tier = self._lower(e.id)
                if tier is not None:
                    tier.discard(e.id)
            hot.insert(e.id, e.embedding, e.confidence, e.created_at, e.last_access, e.access_count, e.content,
                       e.tags, e.metadata, e.links)
        self._membership += 1
        return len(entries)

    def _apply_forget(self, ids: Sequence[str]) -> int:
        forgotten = 0
        for memory_id in ids:
            if memory_id in self._hot.row:
                self._hot.remove(memory_id)
            else:
                tier = self._lower(memory_id)
                if tier is None:
                    continue
                tier.discard(memory_id)
            self._hot.drop_links_to(memory_id)
            forgotten += 1
        if forgotten:
            self._membership += 1
        return forgotten

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
        dim = self.settings.dimension
        if query is None and embedding is None:
            raise invalid("query", "recall needs a query text or an embedding")
        vector = None if embedding is None else validate.unit_vector(embedding, dim, "embedding")
        if query is not None:
            if not isinstance(query, str) or not query.strip():
                raise invalid("query", "must be a non-empty string")
            text_vec = self.embedder.embed([query])[0]
            vector = text_vec if vector is None else validate.unit_vector(vector + text_vec, dim, "embedding")
        assert vector is not None
        if mode not in MODES:
            raise invalid("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        if tiers is not None:
            if isinstance(tiers, str) or not tiers or any(t not in TIERS for t in tiers):
                raise invalid("tiers", f"must be a non-empty list drawn from {', '.join(TIERS)}, got {tiers!r}")
            tiers = tuple(tiers)
        q = recall_mod.Query(
            vector=vector, k=validate.integer(k, "k", 1, self.limits.max_k),
            threshold=validate.number(threshold, "threshold", -1.0, 1.0), mode=mode,
            max_depth=validate.integer(max_depth, "max_depth", 0, MAX_DEPTH),
            tags=() if tags is None else validate.tags(tags, "tags", self.limits),
            since=None if since is None else validate.timestamp(since, "since"),
            until=None if until is None else validate.timestamp(until, "until"),
            tiers=tiers, now=validate.timestamp(now, "now"),
        )
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
        if self._ann is None or hot.changed is None:
            self._ann = AnnIndex(self.settings.dimension, capacity=2 * len(hot))
            hot.changed = dict.fromkeys(hot.ids)
        changed = hot.changed
        if max_items is None or max_items >= len(changed):
            batch = list(changed)
            changed.clear()
        else:
            batch = list(islice(changed, max_items))
            for memory_id in batch:
                del changed[memory_id]
        self._ann.sync(hot, batch)
        return len(changed)

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
        themselves (``TierStore.state()``)."""
        hot = self._hot
        arrays: dict[str, np.ndarray] = {
            "embeddings": hot.embeddings.copy(), "confidence": hot.confidence.copy(),
            "created_at": hot.created_at.copy(), "last_access": hot.last_access.copy(),
            "access_count": hot.access_count.copy(),
        }
        link_arrays, link_meta = hot.graph.export(hot.slots)
        arrays.update(link_arrays)
        meta = {
            "version": SNAPSHOT_VERSION, "dimension": self.settings.dimension, "ids": list(hot.ids),
            "content": list(hot.content), "tags": [list(t) for t in hot.tags],
            "metadata": [dict(m) for m in hot.metadata], **link_meta,
        }
        return arrays, meta

    @classmethod
    def restore(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], settings: SpaceSettings, *,
                limits: Limits = DEFAULT_LIMITS, embedder: Embedder | None = None, warm: TierStore | None = None,
                cold: TierStore | None = None, ann_threshold: int = 0) -> Engine:
        """An engine whose hot tier is the snapshot's (rows in the same order). Reads this
        version's snapshots and version 1 (links in the meta). Raises InvalidArgument if the
        snapshot does not fit the settings or its columns do not fit together."""
        version = meta.get("version")
        if version not in (1, SNAPSHOT_VERSION) or meta.get("dimension") != settings.dimension:
            raise InvalidArgument(f"snapshot version {version} / dimension {meta.get('dimension')} "
                                  f"does not match {SNAPSHOT_VERSION} / {settings.dimension}", {"field": "snapshot"})
        engine = cls(settings, limits=limits, embedder=embedder, warm=warm, cold=cold, ann_threshold=ann_threshold)
        ids = list(meta["ids"])
        n = len(ids)
        columns = [meta[c] for c in ("content", "tags", "metadata")]
        columns += [arrays[c] for c in ("embeddings", "confidence", "created_at", "last_access", "access_count")]
        if any(len(c) < n for c in columns):
            raise InvalidArgument(f"snapshot has {n} ids but shorter columns", {"field": "snapshot"})
        links = links_from_arrays(arrays, meta, ids) if version == SNAPSHOT_VERSION else links_from_v1(meta, ids)
        hot = engine._hot = HotTier(settings.dimension, capacity=max(n, 256))
        with gc_paused():  # a few objects per memory, none in a cycle (see replay.gc_paused)
            hot.graph.load(ids, *links)
            hot.extend(ids, arrays["embeddings"][:n], arrays["confidence"][:n], arrays["created_at"][:n],
                       arrays["last_access"][:n], arrays["access_count"][:n], meta["content"][:n],
                       [tuple(t) for t in meta["tags"][:n]], [dict(m) for m in meta["metadata"][:n]])
        return engine


def _encode_cursor(memory_id: str) -> str:
    return base64.urlsafe_b64encode(memory_id.encode("utf-8")).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
        return validate.memory_id(raw, "cursor")
    except (binascii.Error, UnicodeDecodeError, InvalidArgument, TypeError):
        raise invalid("cursor", f"{cursor!r} is not a cursor this engine returned") from None

