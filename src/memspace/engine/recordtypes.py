"""The write records: every decision a write made, so applying them again gives the same state.

The engine *plans* a write into one of these (ids generated, duplicates
resolved, auto-links chosen, timestamps fixed) and then *applies* it;
:mod:`memspace.engine.records` turns them into WAL payloads and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

import numpy as np

from memspace.engine.model import Link as MemoryLink
from memspace.engine.model import Vector
from memspace.errors import Internal


class RecordType(IntEnum):
    REMEMBER = 1
    FORGET = 2
    LINK = 3
    TOUCH = 4
    STORE = 5   # a REMEMBER of new memories only, in the bulk layout
    RESTORE = 6  # memories put in exactly as given (an import of exported memories)



class RecordFormatError(Internal):
    """A record payload that cannot be decoded (format mismatch or a bug, never user input)."""


def _same_vector(a: Vector, b: Vector) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass(frozen=True, slots=True, eq=False)
class StoreEntry:
    """A new memory. ``links`` are its outgoing links (explicit and auto); ``backlinks`` are
    auto-links *into* it, held by the neighbour: ``(neighbour id, weight)``, kind "similar"."""

    op: ClassVar[str] = "store"
    id: str
    content: str | None
    embedding: Vector
    confidence: float
    created_at: float
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    links: tuple[MemoryLink, ...] = ()
    backlinks: tuple[tuple[str, float], ...] = ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoreEntry):
            return NotImplemented
        return (
            (self.id, self.content, self.confidence, self.created_at, self.tags, dict(self.metadata),
             self.links, self.backlinks)
            == (other.id, other.content, other.confidence, other.created_at, other.tags, dict(other.metadata),
                other.links, other.backlinks)
            and _same_vector(self.embedding, other.embedding)
        )


@dataclass(frozen=True, slots=True)
class MergeEntry:
    """A duplicate of existing memory ``id``: reinforce it (access_count + 1, last_access = at),
    set its confidence to ``confidence``, add ``tags`` and ``links`` it does not have yet."""

    op: ClassVar[str] = "merge"
    id: str
    similarity: float
    at: float
    confidence: float
    tags: tuple[str, ...] = ()
    links: tuple[MemoryLink, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class UpdateEntry:
    """A client id that already exists: replace content, embedding, confidence, tags and
    metadata; keep the existing links and add ``links``; last_access = at."""

    op: ClassVar[str] = "update"
    id: str
    content: str | None
    embedding: Vector
    confidence: float
    at: float
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    links: tuple[MemoryLink, ...] = ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UpdateEntry):
            return NotImplemented
        return (
            (self.id, self.content, self.confidence, self.at, self.tags, dict(self.metadata), self.links)
            == (other.id, other.content, other.confidence, other.at, other.tags, dict(other.metadata),
                other.links)
            and _same_vector(self.embedding, other.embedding)
        )


Entry = StoreEntry | MergeEntry | UpdateEntry


@dataclass(frozen=True, slots=True)
class Remember:
    """One remember request (one item or a batch): atomic, idempotent by ``request_id``."""

    type: ClassVar[RecordType] = RecordType.REMEMBER
    entries: tuple[Entry, ...]
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Forget:
    """Ids resolved at plan time (also for forgets by filter); missing ids are skipped on apply."""

    type: ClassVar[RecordType] = RecordType.FORGET
    ids: tuple[str, ...]
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Link:
    """An explicit link ``source -> target`` (replaces an existing link between the two)."""

    type: ClassVar[RecordType] = RecordType.LINK
    source: str
    target: str
    weight: float
    kind: str
    created_at: float
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Touch:
    """Recall reinforcement of the returned memories: last_access = at, access_count + 1."""

    type: ClassVar[RecordType] = RecordType.TOUCH
    ids: tuple[str, ...]
    at: float
    request_id: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class RestoreEntry:
    """A memory exactly as it is to be: every field, its links as given (also to ids not in
    the space), no dedup and no auto-links. An existing memory with the same id is replaced."""

    id: str
    content: str | None
    embedding: Vector
    confidence: float
    created_at: float
    last_access: float
    access_count: int
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    links: tuple[MemoryLink, ...] = ()

    def _key(self) -> tuple[Any, ...]:
        return (self.id, self.content, self.confidence, self.created_at, self.last_access, self.access_count,
                self.tags, dict(self.metadata), self.links)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RestoreEntry):
            return NotImplemented
        return self._key() == other._key() and _same_vector(self.embedding, other.embedding)


@dataclass(frozen=True, slots=True)
class Restore:
    """Memories restored (an import): atomic, idempotent by ``request_id`` and by content (a
    memory restored again is replaced by the same memory). ``at``: when it was planned."""

    type: ClassVar[RecordType] = RecordType.RESTORE
    entries: tuple[RestoreEntry, ...]
    at: float
    request_id: str | None = None


Record = Remember | Forget | Link | Touch | Restore
