"""The hot tier: every memory in RAM as a struct of arrays, for vectorised exact search.

Rows ``0..n-1`` of a contiguous float32 matrix hold the unit embeddings (the
matrix doubles its capacity when full; readers use the ``[:n]`` view); numpy
arrays beside it hold confidence, created_at, last_access and access_count;
Python lists hold id, content, tags, metadata and links (a ``target -> Link``
dict per row: one link per ordered pair, a new link to the same target
replaces the old one). Deleting swaps the last row into the hole, so rows are
not stable across deletes; ids are. Array fields of a row are written through the
``[:n]`` views (``hot.confidence[row] = c``).

Two indexes are kept in step: ``tag -> set of rows`` for tag filters, and
``target -> ids of hot memories linking to it`` (``inbound``) so forgetting a
memory removes the links pointing at it from hot memories in time
proportional to their number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from memspace.engine.model import Link, Memory, Vector

Floats = npt.NDArray[np.float64]
Rows = npt.NDArray[np.intp]


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
        self.ids: list[str] = []
        self.content: list[str | None] = []
        self.tags: list[tuple[str, ...]] = []
        self.metadata: list[dict[str, Any]] = []
        self.links: list[dict[str, Link]] = []
        self.row: dict[str, int] = {}
        self.tag_rows: dict[str, set[int]] = {}
        self.inbound: dict[str, set[str]] = {}
        self.link_count = 0
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

    def memory(self, memory_id: str) -> Memory:
        """A detached copy of one memory (the embedding is copied out of the matrix)."""
        r = self.row[memory_id]
        return Memory(
            id=memory_id, content=self.content[r], embedding=self._emb[r].copy(),
            confidence=float(self._conf[r]), created_at=float(self._created[r]),
            last_access=float(self._last[r]), access_count=int(self._count[r]),
            tags=self.tags[r], metadata=dict(self.metadata[r]), links=tuple(self.links[r].values()),
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
        self.ids.append(memory_id)
        self.content.append(content)
        self.tags.append(tags)
        self.metadata.append(dict(metadata))
        self.links.append({})
        self.row[memory_id] = r
        for t in tags:
            self.tag_rows.setdefault(t, set()).add(r)
        for link in links:
            self.set_link(memory_id, link)
        if self.changed is not None:
            self.changed[memory_id] = None
        return r

    def extend(
        self, ids: Sequence[str], embeddings: npt.ArrayLike, confidence: npt.ArrayLike, created_at: npt.ArrayLike,
        last_access: npt.ArrayLike, access_count: npt.ArrayLike, content: Sequence[str | None],
        tags: Sequence[tuple[str, ...]], metadata: Sequence[dict[str, Any]], links: Sequence[dict[str, Link]],
    ) -> None:
        """Append new memories as the next rows, in order: the state ``insert`` leaves, row by
        row, except that row i's links are given as the ``target -> Link`` dict ``links[i]``.
        ``links[i]`` and ``metadata[i]`` are taken over, not copied. The array columns may be
        scalars (the same value for every row).

        For bulk loads (snapshot restore, WAL replay): one array write per column instead of
        one per row. The ids must be distinct and not hot; nothing is checked.
        """
        n0 = len(self.ids)
        n1 = n0 + len(ids)
        if n1 > self._emb.shape[0]:
            self._grow(max(2 * self._emb.shape[0], n1))
        self._emb[n0:n1] = embeddings
        self._conf[n0:n1] = confidence
        self._created[n0:n1] = created_at
        self._last[n0:n1] = last_access
        self._count[n0:n1] = access_count
        self.ids.extend(ids)
        self.content.extend(content)
        self.tags.extend(tags)
        self.metadata.extend(metadata)
        self.links.extend(links)
        self.row.update(zip(ids, range(n0, n1)))
        tag_rows = self.tag_rows
        inbound = self.inbound
        for r, (memory_id, row_tags, row_links) in enumerate(zip(ids, tags, links), n0):
            for t in row_tags:
                rows = tag_rows.get(t)
                if rows is None:
                    tag_rows[t] = {r}
                else:
                    rows.add(r)
            for target in row_links:
                sources = inbound.get(target)
                if sources is None:
                    inbound[target] = {memory_id}
                else:
                    sources.add(memory_id)
            self.link_count += len(row_links)
        if self.changed is not None:
            self.changed.update(dict.fromkeys(ids))

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
        for target in self.links[r]:
            self._forget_inbound(target, memory_id)
        self.link_count -= len(self.links[r])
        last = len(self.ids) - 1
        if r != last:
            moved = self.ids[last]
            self._emb[r] = self._emb[last]
            for arr in (self._conf, self._created, self._last, self._count):
                arr[r] = arr[last]
            self.ids[r] = moved
            self.content[r] = self.content[last]
            self.tags[r] = self.tags[last]
            self.metadata[r] = self.metadata[last]
            self.links[r] = self.links[last]
            self.row[moved] = r
            for t in self.tags[r]:
                rows = self.tag_rows[t]
                rows.discard(last)
                rows.add(r)
        for column in self._columns():
            column.pop()

    def set_link(self, source: str, link: Link) -> None:
        """Add or replace ``source -> link.target`` (source must be hot)."""
        links = self.links[self.row[source]]
        if link.target not in links:
            self.link_count += 1
        links[link.target] = link
        self.inbound.setdefault(link.target, set()).add(source)

    def link_into(self, target: str, sources: Sequence[tuple[dict[str, Link], str, Link]]) -> None:
        """``set_link(source, link)`` for links into one ``target``, each given with the source's
        link dict (``links[row[source]]``), for bulk loads that looked the rows up already."""
        added = 0
        for held, _, link in sources:
            if target not in held:
                added += 1
            held[target] = link
        self.link_count += added
        inbound = self.inbound.get(target)
        if inbound is None:
            self.inbound[target] = {source for _, source, _ in sources}
        else:
            inbound.update([source for _, source, _ in sources])

    def drop_links_to(self, target: str) -> None:
        """Remove every hot memory's link to ``target`` (it was forgotten)."""
        for source in self.inbound.pop(target, ()):
            r = self.row.get(source)
            if r is not None and self.links[r].pop(target, None) is not None:
                self.link_count -= 1

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
        return (self.ids, self.content, self.tags, self.metadata, self.links)

    def _forget_inbound(self, target: str, source: str) -> None:
        sources = self.inbound.get(target)
        if sources is not None:
            sources.discard(source)
            if not sources:
                del self.inbound[target]

    def _grow(self, capacity: int) -> None:
        n = len(self.ids)
        emb = np.zeros((capacity, self.dimension), dtype=np.float32)
        emb[:n] = self._emb[:n]
        self._emb = emb
        for name in ("_conf", "_created", "_last", "_count"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)
