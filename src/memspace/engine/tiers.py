"""The lower tiers as the engine sees them: one small mapping-like protocol.

The hot tier is the engine's own float32 matrix. Warm and cold tiers hold
memories the engine demoted; they are *physical* placement only: which tier
a memory is in is never part of the logical state the WAL records, so a
memory promoted after the last snapshot is simply found in its old tier
again after a crash. A tier entry is immutable; any change to a memory
(link, reinforcement) promotes it to hot first, and forgetting one discards
it from its tier.

Implementations: :class:`MemoryTier` here (pure, for tests and I/O-free use),
and the file-backed warm (memory-mapped, float16) and cold (compressed
segments) tiers in :mod:`memspace.storage.tiers`. Both pass the same
conformance suite, :mod:`memspace.testing.tiers`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from memspace.engine.model import Link, Memory, Vector


@runtime_checkable
class TierStore(Protocol):
    """What the engine needs from a lower tier. Entries come back with ``tier == name``."""

    name: str

    def __len__(self) -> int: ...

    def __contains__(self, memory_id: object) -> bool: ...

    def get(self, memory_id: str) -> Memory | None:
        """The full memory (embedding at this tier's precision, as float32), or None."""

    def ids(self) -> Iterator[str]:
        """Live ids, in the order they were added."""

    def links(self, memory_id: str) -> tuple[Link, ...]:
        """Outgoing links of a live entry (cheap: spreading activation calls it per node)."""

    def search(self, query: Vector, k: int) -> list[tuple[str, float]]:
        """Top ``k`` live entries by cosine to the unit vector ``query``, best first."""

    def add(self, memories: Sequence[Memory]) -> None:
        """Take these memories (moved here from another tier). Durable when it returns."""

    def discard(self, memory_id: str) -> None:
        """Drop an entry (promoted or forgotten). Unknown ids are ignored."""

    def state(self) -> dict[str, Any]:
        """JSON-safe description of the live contents, stored in the space's snapshot."""


class MemoryTier:
    """A lower tier held in a dict; reduced precision is simulated with float16 like the warm tier."""

    def __init__(self, name: str, precision: type = np.float16) -> None:
        self.name = name
        self._precision = precision
        self._entries: dict[str, Memory] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self._entries

    def get(self, memory_id: str) -> Memory | None:
        return self._entries.get(memory_id)

    def ids(self) -> Iterator[str]:
        return iter(list(self._entries))

    def links(self, memory_id: str) -> tuple[Link, ...]:
        m = self._entries.get(memory_id)
        return m.links if m is not None else ()

    def search(self, query: Vector, k: int) -> list[tuple[str, float]]:
        if not self._entries or k <= 0:
            return []
        ids = list(self._entries)
        matrix = np.stack([self._entries[i].embedding for i in ids])
        sims = matrix @ query
        k = min(k, len(ids))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(ids[i], float(sims[i])) for i in top]

    def add(self, memories: Sequence[Memory]) -> None:
        for m in memories:
            emb = m.embedding.astype(self._precision).astype(np.float32)
            self._entries[m.id] = replace(m, embedding=emb, tier=self.name)

    def discard(self, memory_id: str) -> None:
        self._entries.pop(memory_id, None)

    def state(self) -> dict[str, Any]:
        return {"ids": list(self._entries)}
