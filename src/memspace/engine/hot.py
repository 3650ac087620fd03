"""The hot tier: every memory in RAM as a struct of arrays, for vectorised exact search.

Rows ``0..n-1`` of a contiguous float32 matrix hold the unit embeddings (the
matrix doubles its capacity when full; readers use the ``[:n]`` view); numpy
arrays beside it hold confidence, created_at, last_access, access_count and the
row's link slot; Python lists hold id, content, tags and metadata. Deleting
swaps the last row into the hole, so rows are not stable across deletes; ids
are. Array fields of a row are written through the ``[:n]`` views
(``hot.confidence[row] = c``).

Links live in a :class:`~memspace.engine.links.LinkGraph` (``graph``): arrays
indexed by a per-id slot that, unlike the row, stays put. One link per ordered
pair; a new link to the same target replaces the old one in place. Link
objects are built only when asked for (:meth:`HotTier.links_of`).

``tag -> set of rows`` is kept in step for tag filters; the graph keeps its own
reverse index so forgetting a memory removes the links pointing at it from hot
memories in time proportional to their number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from memspace.engine.links import LinkGraph
from memspace.engine.model import Link, Memory, Vector

Floats = npt.NDArray[np.float64]
Rows = npt.NDArray[np.intp]


#: ``(shape, dtype) -> a zeroed array``, like ``numpy.zeros``.
Allocate = Callable[[tuple[int, int], type[np.float32]], npt.NDArray[np.float32]]


class HotTier:
    """Mutable in-RAM storage; the engine is its only writer. No validation happens here."""

    def __init__(self, dimension: int, capacity: int = 256) -> None:
        self.dimension = dimension
        cap = max(capacity, 1)
        self._emb = np.zeros((cap, dimension), dtype=np.float32)
        self._conf = np.zeros(cap, dtype=np.float64)
        self._created = np.zeros(cap, dtype=np.float64)
        self._last = np.zeros(cap, dtype=np.float64)
        self._count = np.zeros(cap, dtype=np.int64)
        self._slot = np.zeros(cap, dtype=np.int64)   # row -> its slot in ``graph``
        self.ids: list[str] = []
        self.content: list[str | None] = []
        self.tags: list[tuple[str, ...]] = []
        self.metadata: list[dict[str, Any]] = []
        self.row: dict[str, int] = {}
        self.tag_rows: dict[str, set[int]] = {}
        self.graph = LinkGraph()
        # Ids added, removed or re-embedded since the owner last drained this; None = not tracked.
        # Tracked only while an approximate index over the rows exists (``ann.py``): it catches up
        # from here, so nothing accumulates when there is no index.
        self.changed: dict[str, None] | None = None

    # -- views (valid until the next insert or delete) ------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self.row

    @property
    def embeddings(self) -> npt.NDArray[np.float32]:
        return self._emb[: len(self.ids)]

    @property
    def confidence(self) -> Floats:
        return self._conf[: len(self.ids)]

    @property
    def created_at(self) -> Floats:
        return self._created[: len(self.ids)]

    @property
    def last_access(self) -> Floats:
        return self._last[: len(self.ids)]

    @property
    def access_count(self) -> npt.NDArray[np.int64]:
        return self._count[: len(self.ids)]

    @property
    def slots(self) -> npt.NDArray[np.int64]:
        """Each row's slot in ``graph``."""
        return self._slot[: len(self.ids)]

    @property
    def link_count(self) -> int:
        return self.graph.count

    def links_of(self, memory_id: str) -> tuple[Link, ...]:
        """The links a hot memory holds, in order."""
        return self.graph.links(int(self._slot[self.row[memory_id]]))

    def link_targets(self, memory_id: str) -> list[str]:
        """The ids a hot memory links to, in order."""
        return self.graph.targets(int(self._slot[self.row[memory_id]]))

    def neighbours(self, row: int, elsewhere: Callable[[str], bool]) -> list[tuple[str, float]]:
        """``(target, weight)`` of row ``row``'s links to hot memories and to ids ``elsewhere``
        accepts, in order (for spreading activation)."""
        return self.graph.neighbours(int(self._slot[row]), elsewhere)

    def memory(self, memory_id: str) -> Memory:
        """A detached copy of one memory (the embedding is copied out of the matrix)."""
        r = self.row[memory_id]
        return Memory(
            id=memory_id, content=self.content[r], embedding=self._emb[r].copy(),
            confidence=float(self._conf[r]), created_at=float(self._created[r]),
            last_access=float(self._last[r]), access_count=int(self._count[r]),
            tags=self.tags[r], metadata=dict(self.metadata[r]), links=self.graph.links(int(self._slot[r])),
            tier="hot",
        )

    def rows_with_tags(self, tags: Iterable[str]) -> Rows:
        """Rows of the memories carrying every tag in ``tags`` (ascending)."""
        sets = [self.tag_rows.get(t, set()) for t in tags]
        if not sets:
            return np.arange(len(self.ids), dtype=np.intp)
        sets.sort(key=len)
        common = sets[0].intersection(*sets[1:])
        return np.sort(np.fromiter(common, dtype=np.intp, count=len(common)))

    # -- mutation ---------------------------------------------------------------------------------

    def insert(
        self, memory_id: str, embedding: Vector, confidence: float, created_at: float, last_access: float,
        access_count: int, content: str | None, tags: tuple[str, ...], metadata: Mapping[str, Any],
        links: Iterable[Link] = (),
    ) -> int:
        """Append a memory (its id must not be hot yet); returns its row."""
        r = len(self.ids)
        if r == self._emb.shape[0]:
            self._grow(2 * r)
        self._emb[r] = embedding
        self._conf[r] = confidence
        self._created[r] = created_at
        self._last[r] = last_access
        self._count[r] = access_count
        self._slot[r] = slot = self.graph.hold(memory_id)
        self.ids.append(memory_id)
        self.content.append(content)
        self.tags.append(tags)
        self.metadata.append(dict(metadata))
        self.row[memory_id] = r
        for t in tags:
            self.tag_rows.setdefault(t, set()).add(r)
        self.graph.set_all(slot, links)
        if self.changed is not None:
            self.changed[memory_id] = None
        return r

    def extend(
        self, ids: Sequence[str], embeddings: npt.ArrayLike, confidence: npt.ArrayLike, created_at: npt.ArrayLike,
        last_access: npt.ArrayLike, access_count: npt.ArrayLike, content: Sequence[str | None],
        tags: Sequence[tuple[str, ...]], metadata: Sequence[dict[str, Any]], slots: npt.ArrayLike | None = None,
    ) -> npt.NDArray[np.int64]:
        """Append new memories as the next rows, in order, with no links: the state ``insert``
        leaves, row by row. ``metadata[i]`` is taken over, not copied. The array columns may be
        scalars (the same value for every row). ``slots``: the ids' slots in ``graph`` when the
        caller interned them already. Returns the new rows' slots in ``graph`` (links are then
        added there in bulk: ``graph.add_new``).

        For bulk loads (snapshot restore, WAL replay): one array write per column instead of
        one per row. The ids must be distinct and not hot; nothing is checked.
        """
        n0 = len(self.ids)
        n1 = n0 + len(ids)
        if n1 > self._emb.shape[0]:
            # Quadrupling: a bulk load (WAL replay) does not know its final size, and every
            # copy writes pages it then leaves (page faults are a good part of the load time);
            # room past the last row costs address space, not memory, until written.
            self._grow(max(4 * self._emb.shape[0], n1))
        self._emb[n0:n1] = embeddings
        self._conf[n0:n1] = confidence
        self._created[n0:n1] = created_at
        self._last[n0:n1] = last_access
        self._count[n0:n1] = access_count
        if slots is None:
            hold = self.graph.hold
            self._slot[n0:n1] = [hold(memory_id) for memory_id in ids]
        else:   # interned already (``LinkGraph.intern_new``)
            self._slot[n0:n1] = slots
            self.graph.hold_slots(self._slot[n0:n1])
        self.ids.extend(ids)
        self.content.extend(content)
        self.tags.extend(tags)
        self.metadata.extend(metadata)
        self.row.update(zip(ids, range(n0, n1)))
        tag_rows = self.tag_rows
        for r, row_tags in enumerate(tags, n0):
            for t in row_tags:
                rows = tag_rows.get(t)
                if rows is None:
                    tag_rows[t] = {r}
                else:
                    rows.add(r)
        if self.changed is not None:
            self.changed.update(dict.fromkeys(ids))
        return self._slot[n0:n1]

    def insert_memory(self, m: Memory) -> int:
        return self.insert(m.id, m.embedding, m.confidence, m.created_at, m.last_access, m.access_count,
                           m.content, m.tags, m.metadata, m.links)

    def remove(self, memory_id: str) -> None:
        """Delete a hot memory (swap-remove). Links *into* it are left to the caller."""
        r = self.row.pop(memory_id)
        if self.changed is not None:
            self.changed[memory_id] = None
        for t in self.tags[r]:
            rows = self.tag_rows[t]
            rows.discard(r)
            if not rows:
                del self.tag_rows[t]
        self.graph.release(int(self._slot[r]))
        last = len(self.ids) - 1
        if r != last:
            moved = self.ids[last]
            self._emb[r] = self._emb[last]
            for arr in (self._conf, self._created, self._last, self._count, self._slot):
                arr[r] = arr[last]
            self.ids[r] = moved
            self.content[r] = self.content[last]
            self.tags[r] = self.tags[last]
            self.metadata[r] = self.metadata[last]
            self.row[moved] = r
            for t in self.tags[r]:
                rows = self.tag_rows[t]
                rows.discard(last)
                rows.add(r)
        for column in self._columns():
            column.pop()

    def set_link(self, source: str, link: Link) -> None:
        """Add or replace ``source -> link.target`` (source must be hot)."""
        self.graph.set(int(self._slot[self.row[source]]), link.target, link.weight, link.kind)

    def link_into(self, target: str, sources: Sequence[tuple[str, float]], kind: str) -> None:
        """``set_link(source, Link(target, weight, kind))`` for each ``(source, weight)`` in turn
        (the sources must be hot)."""
        slot, row = self._slot, self.row
        self.graph.set_into(target, [(int(slot[row[source]]), weight) for source, weight in sources], kind)

    def drop_links_to(self, target: str) -> None:
        """Remove every hot memory's link to ``target`` (it was forgotten)."""
        self.graph.drop_into(target)

    def set_embedding(self, memory_id: str, embedding: Vector) -> None:
        self._emb[self.row[memory_id]] = embedding
        if self.changed is not None:
            self.changed[memory_id] = None

    def set_tags(self, memory_id: str, tags: tuple[str, ...]) -> None:
        r = self.row[memory_id]
        for t in self.tags[r]:
            rows = self.tag_rows[t]
            rows.discard(r)
            if not rows:
                del self.tag_rows[t]
        self.tags[r] = tags
        for t in tags:
            self.tag_rows.setdefault(t, set()).add(r)

    def _columns(self) -> tuple[list[Any], ...]:
        return (self.ids, self.content, self.tags, self.metadata)

    def reserve(self, rows: int, allocate: Allocate | None = None) -> None:
        """Make room for ``rows`` more memories at once (a bulk load that knows about how many
        are coming). ``allocate(shape, dtype)`` makes the new embedding matrix (zeros): the
        storage layer passes one whose pages are in place already, which is far cheaper than
        taking a page fault per page as rows are written."""
        need = len(self.ids) + rows
        if need > self._emb.shape[0]:
            self._grow(need, allocate)

    def _grow(self, capacity: int, allocate: Allocate | None = None) -> None:
        n = len(self.ids)
        emb = (allocate or np.zeros)((capacity, self.dimension), np.float32)
        emb[:n] = self._emb[:n]
        self._emb = emb
        for name in ("_conf", "_created", "_last", "_count", "_slot"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)
