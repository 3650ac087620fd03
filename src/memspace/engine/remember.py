"""Planning (and applying) a remember batch: dedup, updates, new ids and auto-links.

For each item, in order:

* an item with a client ``id`` that exists (in any tier, or stored earlier in
  the batch) is an **update**; a client ``id`` that does not exist is a
  **store** under that id. Client ids are never deduplicated away: the
  client named the memory and will refer to it by that name.
* an item without an id whose best match (exact cosine against the hot tier
  and against the memories stored or updated earlier in the same batch) is
  ``>= dedup_threshold`` is a **merge** into that memory: its confidence
  becomes ``m + 0.1 * (1 - m)`` with ``m = max(old, new)`` (capped at 1), its
  tags and explicit links are added, and it counts one more access.
* anything else is a **store** under ``new_id()``, auto-linked both ways to
  at most ``max_auto_links`` nearest neighbours with cosine ``> link_threshold``
  (kind "similar", weight = cosine), skipping targets it links to explicitly.

The hot-tier similarities for the whole batch come from one chunked matrix
product; only the few best rows per item are looked at afterwards.

:func:`parse_items` validates a request before planning; :func:`apply_entry`
applies one planned entry (the engine's ``apply`` for a Remember record). A
merge into a memory that is gone by then is skipped, and an update of one
stores it again (the entry holds the whole memory).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from memspace.engine import validate
from memspace.engine.hot import HotTier
from memspace.engine.model import (
    AUTO_LINK_KIND,
    Limits,
    Link,
    RememberResult,
    SpaceSettings,
    Vector,
)
from memspace.engine.records import Entry, MergeEntry, StoreEntry, UpdateEntry
from memspace.engine.validate import Item, invalid
from memspace.errors import Internal, MemoryNotFound

_CHUNK = 64  # items per matrix product: bounds the temporary (chunk x hot rows) similarity block


def reinforced_confidence(old: float, new: float) -> float:
    """Confidence after a duplicate arrives: the larger of the two, nudged towards 1."""
    m = max(old, new)
    return min(1.0, m + 0.1 * (1.0 - m))


@dataclass(slots=True)
class _Pending:
    """A memory as this batch leaves it, for later items of the same batch."""

    confidence: float
    tags: tuple[str, ...]


def _hot_candidates(matrix: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], width: int
                    ) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]]:
    """Per query, the ``width`` best hot rows and their cosines, best first (ties: lower row)."""
    n = matrix.shape[0]
    out: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]] = []
    if n == 0 or width <= 0:
        empty = (np.empty(0, np.intp), np.empty(0, np.float32))
        return [empty] * len(queries)
    width = min(width, n)
    for start in range(0, len(queries), _CHUNK):
        sims = queries[start:start + _CHUNK] @ matrix.T
        if width < n:
            top = np.argpartition(-sims, width - 1, axis=1)[:, :width]
        else:
            top = np.broadcast_to(np.arange(n), sims.shape)
        for i in range(sims.shape[0]):
            rows = np.sort(top[i])
            order = np.argsort(-sims[i, rows], kind="stable")
            out.append((rows[order].astype(np.intp), sims[i, rows[order]]))
    return out


def plan_entries(
    items: list[Item],
    hot: HotTier,
    exists: Callable[[str], bool],
    settings: SpaceSettings,
    now: float,
    new_id: Callable[[], str],
) -> list[Entry]:
    """The entries of one Remember record. ``exists(id)`` answers for every tier.

    Raises MemoryNotFound for a link to a memory that does not exist and Internal if
    ``new_id`` returns an id already in use.
    """
    vectors = np.stack([it.embedding for it in items if it.embedding is not None])
    assert len(vectors) == len(items), "every item must be embedded before planning"
    extra = sum(1 for it in items if it.id is not None) + max(len(it.links) for it in items)
    width = settings.max_auto_links + 1 + extra
    hot_top = _hot_candidates(hot.embeddings, vectors, width)
    pending: dict[str, _Pending] = {}  # confidence/tags as this batch leaves them
    batch_ids: list[str] = []          # memories stored or updated by this batch, with their vectors:
    batch_rows: dict[str, int] = {}
    batch_vectors = np.empty_like(vectors)
    updated: set[str] = set()          # hot ids whose hot-row embedding this batch replaced
    entries: list[Entry] = []

    def state(memory_id: str) -> _Pending:
        p = pending.get(memory_id)
        if p is None:
            r = hot.row[memory_id]
            p = pending[memory_id] = _Pending(float(hot.confidence[r]), hot.tags[r])
        return p

    def remember_vector(memory_id: str, vec: Vector) -> None:
        r = batch_rows.setdefault(memory_id, len(batch_ids))
        if r == len(batch_ids):
            batch_ids.append(memory_id)
        batch_vectors[r] = vec

    def candidates(i: int) -> list[tuple[float, str]]:
        """(cosine, id) of the best existing and earlier-in-batch memories, best first."""
        rows, sims = hot_top[i]
        out = [(s, hot.ids[r]) for r, s in zip(rows.tolist(), sims.tolist()) if hot.ids[r] not in updated]
        if batch_ids:
            bsims = batch_vectors[: len(batch_ids)] @ vectors[i]
            best = np.argsort(-bsims, kind="stable")[:width]
            out += [(float(bsims[b]), batch_ids[b]) for b in best.tolist()]
        out.sort(key=lambda c: -c[0])  # stable: hot rows (by row) before batch memories on ties
        return out

    for i, it in enumerate(items):
        for j, link in enumerate(it.links):
            field = it.field(f"links[{j}].target")
            if link.target == it.id:
                raise invalid(field, "a memory cannot link to itself")
            if not (link.target in pending or exists(link.target)):
                raise MemoryNotFound(f"{field}: memory {link.target!r} does not exist",
                                     {"field": field, "id": link.target})
        vec = vectors[i]
        if it.id is not None and (it.id in pending or exists(it.id)):
            entries.append(UpdateEntry(it.id, it.content, vec, it.confidence, now, it.tags, it.metadata, it.links))
            pending[it.id] = _Pending(it.confidence, it.tags)
            remember_vector(it.id, vec)
            updated.add(it.id)
            continue
        ranked = candidates(i)
        if it.id is None and ranked and ranked[0][0] >= settings.dedup_threshold:
            similarity, target = ranked[0]
            old = state(target)
            conf = reinforced_confidence(old.confidence, it.confidence)
            new_tags = tuple(t for t in it.tags if t not in old.tags)
            links = tuple(link for link in it.links if link.target != target)
            entries.append(MergeEntry(target, min(similarity, 1.0), now, conf, new_tags, links))
            old.confidence, old.tags = conf, old.tags + new_tags
            continue
        memory_id = it.id if it.id is not None else new_id()
        if it.id is None and (memory_id in pending or exists(memory_id)):
            raise Internal(f"the id factory returned {memory_id!r}, which is already in use")
        explicit = {link.target for link in it.links}
        auto = [(s, t) for s, t in ranked if s > settings.link_threshold and t not in explicit]
        auto = auto[: settings.max_auto_links]
        links = it.links + tuple(Link(t, min(s, 1.0), AUTO_LINK_KIND) for s, t in auto)
        backlinks = tuple((t, min(s, 1.0)) for s, t in auto)
        entries.append(StoreEntry(memory_id, it.content, vec, it.confidence, now, it.tags, it.metadata,
                                  links, backlinks))
        pending[memory_id] = _Pending(it.confidence, it.tags)
        remember_vector(memory_id, vec)
    return entries


def parse_items(items: Sequence[Mapping[str, Any]], dimension: int, limits: Limits) -> list[Item]:
    """The validated items of one request, in order; InvalidArgument naming the first bad
    field (``items[i].field`` in a batch, ``field`` for a single item)."""
    if isinstance(items, Mapping) or not isinstance(items, Sequence):
        raise invalid("items", "must be a list of items")
    if not items:
        raise invalid("items", "must contain at least one item")
    if len(items) > limits.max_batch:
        raise invalid("items", f"has {len(items)} items, at most {limits.max_batch} per batch")
    batch = len(items) > 1
    return [validate.item(raw, f"items[{i}]." if batch else "", dimension, limits) for i, raw in enumerate(items)]


def apply_entry(hot: HotTier, e: Entry, promote: Callable[[str], bool], exists: Callable[[str], bool]
                ) -> tuple[RememberResult, bool]:
    """Apply one planned entry to ``hot``: its result, and whether the entry itself put a new
    id in the hot tier (a store, or an update of a memory that is gone: stored again).

    ``promote(id)`` moves a warm or cold memory to hot first (False if it exists nowhere);
    ``exists(id)`` answers for every tier. A merge into a memory that is gone is skipped."""
    if isinstance(e, MergeEntry):
        if promote(e.id):
            r = hot.row[e.id]
            hot.access_count[r] += 1
            hot.last_access[r] = e.at
            hot.confidence[r] = e.confidence
            if e.tags:
                hot.set_tags(e.id, hot.tags[r] + tuple(t for t in e.tags if t not in hot.tags[r]))
            for link in e.links:
                hot.set_link(e.id, link)
        return RememberResult(e.id, "merged", e.similarity), False
    if isinstance(e, UpdateEntry) or exists(e.id):
        at = e.at if isinstance(e, UpdateEntry) else e.created_at
        added = not promote(e.id)
        if added:  # an update whose memory is gone: store it again
            hot.insert(e.id, e.embedding, e.confidence, at, at, 0, e.content, e.tags, e.metadata)
        r = hot.row[e.id]
        hot.set_embedding(e.id, e.embedding)
        hot.confidence[r] = e.confidence
        hot.last_access[r] = at
        hot.content[r] = e.content
        hot.metadata[r] = dict(e.metadata)
        hot.set_tags(e.id, e.tags)
        for link in e.links:
            hot.set_link(e.id, link)
        return RememberResult(e.id, "updated"), added
    hot.insert(e.id, e.embedding, e.confidence, e.created_at, e.created_at, 0, e.content, e.tags, e.metadata,
               e.links)
    # promoting a neighbour does not depend on the links set before it: promote, then link
    hot.link_into(e.id, [(n, w) for n, w in e.backlinks if promote(n)], AUTO_LINK_KIND)
    return RememberResult(e.id, "stored", None, tuple(n for n, _ in e.backlinks)), True
