"""The hot tier as a snapshot (arrays plus JSON-safe meta) and back. No I/O: the worker writes them.

Version 2 (written; version 1, with the links in the meta, is still read):

* arrays, one row per hot memory in row order: ``embeddings``, ``confidence``,
  ``created_at``, ``last_access``, ``access_count``; then the links as
  arrays (``link_*``: per row its link count, then every link's target,
  weight and kind code; see ``LinkGraph.export``);
* meta: ``version``, ``dimension``, ``ids``, ``content``, ``tags``,
  ``metadata`` (one entry per row) and the link graph's meta.

Warm and cold tiers snapshot themselves (``TierStore.state()``). Loading a
snapshot that does not fit the space's dimension, or whose columns do not fit
together, raises InvalidArgument and builds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from memspace.engine.hot import HotTier
from memspace.engine.links import links_from_arrays, links_from_v1
from memspace.engine.replay import gc_paused
from memspace.errors import InvalidArgument

#: 2: links as arrays (``link_*``); 1 (still read): links in the meta.
SNAPSHOT_VERSION = 2


def snapshot_state(hot: HotTier, dimension: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``hot`` as arrays (copies, safe to write from another thread) and JSON-safe meta."""
    arrays: dict[str, np.ndarray] = {
        "embeddings": hot.embeddings.copy(), "confidence": hot.confidence.copy(),
        "created_at": hot.created_at.copy(), "last_access": hot.last_access.copy(),
        "access_count": hot.access_count.copy(),
    }
    link_arrays, link_meta = hot.graph.export(hot.slots)
    arrays.update(link_arrays)
    meta = {
        "version": SNAPSHOT_VERSION, "dimension": dimension, "ids": list(hot.ids),
        "content": list(hot.content), "tags": [list(t) for t in hot.tags],
        "metadata": [dict(m) for m in hot.metadata], **link_meta,
    }
    return arrays, meta


def check_snapshot(meta: Mapping[str, Any], dimension: int) -> int:
    """The snapshot's version; InvalidArgument if it is not one this module reads or its
    dimension is not ``dimension``."""
    version = meta.get("version")
    if version not in (1, SNAPSHOT_VERSION) or meta.get("dimension") != dimension:
        raise InvalidArgument(f"snapshot version {version} / dimension {meta.get('dimension')} "
                              f"does not match {SNAPSHOT_VERSION} / {dimension}", {"field": "snapshot"})
    return SNAPSHOT_VERSION if version == SNAPSHOT_VERSION else 1


def load_hot(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], dimension: int, version: int) -> HotTier:
    """A hot tier holding the snapshot's memories (rows in the same order); ``version`` from
    :func:`check_snapshot`. InvalidArgument if its columns are shorter than its ids."""
    ids = list(meta["ids"])
    n = len(ids)
    columns = [meta[c] for c in ("content", "tags", "metadata")]
    columns += [arrays[c] for c in ("embeddings", "confidence", "created_at", "last_access", "access_count")]
    if any(len(c) < n for c in columns):
        raise InvalidArgument(f"snapshot has {n} ids but shorter columns", {"field": "snapshot"})
    links = links_from_arrays(arrays, meta, ids) if version == SNAPSHOT_VERSION else links_from_v1(meta, ids)
    hot = HotTier(dimension, capacity=max(n, 256))
    with gc_paused():  # a few objects per memory, none in a cycle (see replay.gc_paused)
        hot.graph.load(ids, *links)
        hot.extend(ids, arrays["embeddings"][:n], arrays["confidence"][:n], arrays["created_at"][:n],
                   arrays["last_access"][:n], arrays["access_count"][:n], meta["content"][:n],
                   [tuple(t) for t in meta["tags"][:n]], [dict(m) for m in meta["metadata"][:n]])
    return hot
