"""Planning and applying a restore (an import): memories put in exactly as exported.

:func:`parse_restore_items` validates a request (errors name ``items[i].field``,
also for a single item); once the caller has computed the embeddings that are
absent, :func:`restore_entries` turns the items into
:class:`~memspace.engine.records.RestoreEntry` records, each holding a whole
memory: embedding (as given; computed from the content when absent),
confidence, created_at (default ``now``), last_access (default created_at),
access_count, tags, metadata and its links. Neither mutates anything. No
dedup and no auto-links: links are kept as given and may name ids the space
does not hold (yet).

:func:`apply_restore` puts each memory in, replacing one with the same id in
full whatever its tier (later entries of a batch replace earlier ones), so
restoring the same memories again changes nothing. Links *into* a replaced
memory belong to the memories holding them and are kept. It never raises
for entries a plan produced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from memspace.engine import validate
from memspace.engine.hot import HotTier
from memspace.engine.model import Limits
from memspace.engine.records import RestoreEntry
from memspace.engine.tiers import TierStore
from memspace.engine.validate import invalid


def parse_restore_items(items: Sequence[Mapping[str, Any]], dimension: int, limits: Limits
                        ) -> list[validate.RestoreItem]:
    """The validated items, in order; InvalidArgument naming the first bad field."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise invalid("items", "must be a list of memories")
    if not items:
        raise invalid("items", "must contain at least one memory")
    if len(items) > limits.max_batch:
        raise invalid("items", f"has {len(items)} memories, at most {limits.max_batch} per batch")
    return [validate.restore_item(raw, f"items[{i}].", dimension, limits) for i, raw in enumerate(items)]


def restore_entries(parsed: Sequence[validate.RestoreItem], now: float) -> tuple[RestoreEntry, ...]:
    """One entry per item, in order. Every item has its id (required) and embedding by now."""
    entries = []
    for it in parsed:
        assert it.id is not None and it.embedding is not None   # required / embedded by the caller
        created = now if it.created_at is None else it.created_at
        entries.append(RestoreEntry(
            it.id, it.content, it.embedding, it.confidence, created,
            created if it.last_access is None else it.last_access, it.access_count, it.tags, it.metadata,
            it.links))
    return tuple(entries)


def apply_restore(hot: HotTier, lower: Callable[[str], TierStore | None], entries: Sequence[RestoreEntry]) -> None:
    """Put each memory in as it is given, replacing one with its id (from whichever tier;
    ``lower(id)`` names the warm or cold tier holding it, if any).

    Removing the old memory drops the links it held; the links other memories hold into it
    stay (the link graph keeps its slot while anything links to it), so the memory put in
    under the same id has them again. A link to an id that exists nowhere is held like any
    other (``get`` shows it); recall follows it once a memory with that id arrives."""
    for e in entries:
        if e.id in hot.row:
            hot.remove(e.id)
        else:
            tier = lower(e.id)
            if tier is not None:
                tier.discard(e.id)
        hot.insert(e.id, e.embedding, e.confidence, e.created_at, e.last_access, e.access_count, e.content,
                   e.tags, e.metadata, e.links)
