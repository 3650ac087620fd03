"""An approximate seed index for a large hot tier (hnswlib, extra ``ann``), kept as derived state.

Exact search stays the reference: the index only proposes candidate rows,
their cosines are then computed exactly, and recall falls back to the exact
scan whenever it has filters, the index cannot answer, or hnswlib is not
installed. The index is never logged or snapshotted: while it exists, the hot
tier records which ids it added, removed or re-embedded (``HotTier.changed``)
and the index catches up with those changes before a search, at most
``ANN_SYNC_BUDGET`` per recall (``Engine.catch_up_index``), so writes and WAL
replay never pay for index maintenance. Until it has caught up, recall scans
exactly; when the hot tier shrinks below the threshold the index is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt

from memspace.engine.hot import HotTier
from memspace.engine.model import Vector

M = 16
EF_CONSTRUCTION = 200
MIN_EF = 64
SEED = 100  # fixed: the same insertion order builds the same graph


def available() -> bool:
    try:
        import hnswlib  # noqa: F401
    except ImportError:
        return False
    return True


class AnnIndex:
    """HNSW over unit vectors with inner-product distance; labels are private ints mapped to ids."""

    def __init__(self, dimension: int, capacity: int = 1024) -> None:
        import hnswlib

        self._index: Any = hnswlib.Index(space="ip", dim=dimension)
        self._index.init_index(max_elements=max(capacity, 16), M=M, ef_construction=EF_CONSTRUCTION,
                               random_seed=SEED, allow_replace_deleted=True)
        self._label: dict[str, int] = {}
        self._id: dict[int, str] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._label)

    def sync(self, hot: HotTier, changed: Iterable[str]) -> None:
        """Apply the hot tier's changes: (re)add ids that are hot, delete ids that are not."""
        rows: list[int] = []
        labels: list[int] = []
        for memory_id in changed:
            r = hot.row.get(memory_id)
            label = self._label.get(memory_id)
            if r is None:
                if label is not None:
                    self._index.mark_deleted(label)
                    del self._label[memory_id], self._id[label]
                continue
            if label is None:
                label = self._label[memory_id] = self._next
                self._id[label] = memory_id
                self._next += 1
            rows.append(r)
            labels.append(label)
        if not rows:
            return
        needed = self._index.element_count + len(rows)
        if needed > self._index.get_max_elements():
            self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
        # One thread: the engine runs on its worker's thread, and it keeps the build reproducible.
        self._index.add_items(hot.embeddings[rows], np.asarray(labels, dtype=np.uint64), num_threads=1,
                              replace_deleted=True)

    def search(self, hot: HotTier, query: Vector, k: int) -> npt.NDArray[np.intp] | None:
        """Hot rows of (about) the ``k`` nearest memories, or None if the index cannot answer."""
        k = min(k, len(self._label))
        if k <= 0:
            return None
        self._index.set_ef(max(MIN_EF, 2 * k))
        try:
            labels, _ = self._index.knn_query(query, k=k, num_threads=1)
        except RuntimeError:  # too few reachable live elements (many deletions): use the exact scan
            return None
        return np.fromiter((hot.row[self._id[int(x)]] for x in labels[0]), dtype=np.intp, count=k)


def catch_up(index: AnnIndex | None, hot: HotTier, max_items: int | None) -> tuple[AnnIndex, int]:
    """Fold up to ``max_items`` (None: all) of ``hot``'s pending changes into ``index``; returns
    the index and how many changes are still pending. With no index yet, or a hot tier that
    records no changes, a new index is built: every hot memory is then pending."""
    if index is None or hot.changed is None:
        index = AnnIndex(hot.dimension, capacity=2 * len(hot))
        hot.changed = dict.fromkeys(hot.ids)
    changed = hot.changed
    if max_items is None or max_items >= len(changed):
        batch = list(changed)
        changed.clear()
    else:
        batch = list(islice(changed, max_items))
        for memory_id in batch:
            del changed[memory_id]
    index.sync(hot, batch)
    return index, len(changed)
