"""Planning an explicit link ``source -> target``: validated, both ends existing, within limits.

A link is directed and held by its source; linking again replaces the link
between the two (so it does not count against the source's ``max_links``).
Planning mutates nothing and raises InvalidArgument (a bad field, or a
memory linking to itself), MemoryNotFound (naming ``source`` or ``target``)
or QuotaExceeded (the source already holds ``limits.max_links`` links).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from memspace.engine import records, validate
from memspace.engine.model import Limits
from memspace.engine.validate import invalid
from memspace.errors import MemoryNotFound, QuotaExceeded


def plan_link(source: str, target: str, weight: float, kind: str, now: float, request_id: str | None, *,
              exists: Callable[[str], bool], targets_of: Callable[[str], Iterable[str]], limits: Limits) -> records.Link:
    """The Link record; ``exists(id)`` answers for every tier, ``targets_of(id)`` names the
    memories an existing memory links to."""
    now = validate.timestamp(now, "now")
    source = validate.memory_id(source, "source")
    target = validate.memory_id(target, "target")
    w = validate.weight(weight, "weight")
    k = validate.kind(kind, "kind")
    if source == target:
        raise invalid("target", "a memory cannot link to itself")
    for name, memory_id in (("source", source), ("target", target)):
        if not exists(memory_id):
            raise MemoryNotFound(f"{name}: memory {memory_id!r} does not exist", {"field": name, "id": memory_id})
    held = set(targets_of(source))
    if target not in held and len(held) >= limits.max_links:
        raise QuotaExceeded(f"source: memory {source!r} already has {len(held)} links, the limit",
                            {"field": "source", "limit": limits.max_links})
    return records.Link(source, target, w, k, now, request_id)
