"""Planning and applying a forget: which memories a request names, then removing them.

A request names ``ids`` and/or a filter (memories with ALL ``tags``, created
before ``before``); given together they intersect. Neither ids nor a
non-empty filter is InvalidArgument: an empty filter would match every
memory. A single explicit id that does not exist is MemoryNotFound; in a
list, missing ids are ignored (the applied count tells). Planning mutates
nothing and returns a :class:`~memspace.engine.records.Forget` listing the
ids that exist and match.

Applying removes each listed memory from whichever tier holds it and drops
the hot memories' links to it at once; links to it held by warm or cold
entries (immutable) are skipped lazily wherever links are read. Ids that no
longer exist are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from memspace.engine import validate
from memspace.engine.hot import HotTier
from memspace.engine.model import Limits, Memory
from memspace.engine.records import Forget
from memspace.engine.tiers import TierStore
from memspace.engine.validate import invalid
from memspace.errors import MemoryNotFound


def plan_forget(hot: HotTier, lower: Sequence[TierStore], exists: Callable[[str], bool],
                get: Callable[[str], Memory], limits: Limits, ids: Sequence[str] | None,
                tags: Sequence[str] | None, before: float | None, request_id: str | None) -> Forget:
    """The ids to forget (see the module docstring). ``lower``: the warm and cold tiers there
    are; ``exists`` and ``get`` look a memory up in any tier."""
    want_tags = () if tags is None else validate.tags(tags, "tags", limits)
    cutoff = None if before is None else validate.timestamp(before, "before")
    if ids is None and not want_tags and cutoff is None:
        raise invalid("ids", "forget needs ids or a filter (non-empty tags, before)")

    def matches(m_tags: Sequence[str], created_at: float) -> bool:
        return all(t in m_tags for t in want_tags) and (cutoff is None or created_at < cutoff)

    if ids is not None:
        if isinstance(ids, str) or not isinstance(ids, Sequence):
            raise invalid("ids", "must be a list of memory ids")
        wanted = [validate.memory_id(i, f"ids[{n}]") for n, i in enumerate(ids)]
        if len(wanted) == 1 and not exists(wanted[0]):
            raise MemoryNotFound(f"memory {wanted[0]!r} does not exist", {"id": wanted[0], "field": "ids[0]"})
        chosen = []
        for i in dict.fromkeys(wanted):
            if not exists(i):
                continue
            r = hot.row.get(i)
            if r is not None:
                m_tags, created = hot.tags[r], float(hot.created_at[r])
            else:
                m = get(i)
                m_tags, created = m.tags, m.created_at
            if matches(m_tags, created):
                chosen.append(i)
        return Forget(tuple(chosen), request_id)
    rows = hot.rows_with_tags(want_tags)
    if cutoff is not None:
        rows = rows[hot.created_at[rows] < cutoff]
    chosen = [hot.ids[r] for r in rows.tolist()]
    for tier in lower:
        for i in tier.ids():
            held = tier.get(i)
            if held is not None and matches(held.tags, held.created_at):
                chosen.append(i)
    return Forget(tuple(chosen), request_id)


def apply_forget(hot: HotTier, lower: Callable[[str], TierStore | None], ids: Sequence[str]) -> int:
    """Remove the memories ``ids`` names (``lower(id)``: the warm or cold tier holding one, if
    any); returns how many existed."""
    forgotten = 0
    for memory_id in ids:
        if memory_id in hot.row:
            hot.remove(memory_id)
        else:
            tier = lower(memory_id)
            if tier is None:
                continue
            tier.discard(memory_id)
        hot.drop_links_to(memory_id)
        forgotten += 1
    return forgotten
