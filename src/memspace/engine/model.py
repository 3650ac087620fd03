"""The memory model: what a space stores and what its operations return.

All values here are plain data (frozen dataclasses, numpy arrays) and
serialise with :meth:`to_dict` / :meth:`from_dict` to JSON-safe dicts; the
embedding travels separately as float32 bytes where size matters (WAL,
snapshots, wire).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from memspace.errors import InvalidArgument

Vector = npt.NDArray[np.float32]

#: Link kinds the engine creates by itself; clients may use any short string.
AUTO_LINK_KIND = "similar"
DEFAULT_LINK_KIND = "related"

TIERS = ("hot", "warm", "cold")
MODES = ("similarity", "spreading")
DECAYS = ("none", "exponential", "power_law", "two_component")


@dataclass(frozen=True)
class SpaceSettings:
    """Per-space behaviour, fixed at creation and kept in ``space.json``."""

    dimension: int = 384
    embedder: str = "hashing"
    dedup_threshold: float = 0.95
    link_threshold: float = 0.7
    max_auto_links: int = 5
    decay: str = "exponential"
    half_life_s: float = 30 * 86400.0
    decay_floor: float = 0.05
    # rank = w_similarity * max(similarity, 0) + w_activation * activation + w_confidence * decayed confidence
    w_similarity: float = 0.6
    w_activation: float = 0.3
    w_confidence: float = 0.1

    def __post_init__(self) -> None:
        if not (isinstance(self.dimension, int) and 1 <= self.dimension <= 65536):
            raise InvalidArgument(f"dimension must be an integer in 1..65536, got {self.dimension!r}",
                                  {"field": "dimension"})
        if self.decay not in DECAYS:
            raise InvalidArgument(f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}",
                                  {"field": "decay"})
        for name in ("dedup_threshold", "link_threshold", "decay_floor"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise InvalidArgument(f"{name} must be a number in 0..1, got {v!r}", {"field": name})
        if not (isinstance(self.max_auto_links, int) and 0 <= self.max_auto_links <= 64):
            raise InvalidArgument(f"max_auto_links must be an integer in 0..64, got {self.max_auto_links!r}",
                                  {"field": "max_auto_links"})
        if not (self.half_life_s > 0 and math.isfinite(self.half_life_s)):
            raise InvalidArgument(f"half_life_s must be positive, got {self.half_life_s!r}",
                                  {"field": "half_life_s"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpaceSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(f"unknown space settings: {', '.join(unknown)}", {"fields": unknown})
        return cls(**dict(data))

    def with_changes(self, **changes: Any) -> SpaceSettings:
        return replace(self, **changes)


@dataclass(frozen=True)
class Limits:
    """Deployment-wide limits the engine enforces with clear errors (from config ``limits.*``)."""

    max_content_bytes: int = 64 * 1024
    max_k: int = 1000
    max_batch: int = 1000
    max_memories: int = 0          # 0 = unlimited
    max_tags: int = 64
    max_metadata_bytes: int = 16 * 1024
    max_links: int = 256


@dataclass(frozen=True)
class Link:
    """A directed, weighted, typed edge from the memory that holds it to ``target``."""

    target: str
    weight: float
    kind: str = DEFAULT_LINK_KIND

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "weight": self.weight, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Link:
        return cls(str(d["target"]), float(d["weight"]), str(d.get("kind", DEFAULT_LINK_KIND)))


@dataclass(frozen=True)
class Memory:
    """One memory as returned by ``get``; ``embedding`` is float32 and unit-normalised."""

    id: str
    content: str | None
    embedding: Vector
    confidence: float
    created_at: float
    last_access: float
    access_count: int
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    tier: str = "hot"

    def to_dict(self, embedding: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "content": self.content,
            "confidence": self.confidence,
            "created_at": self.created_at,
            "last_access": self.last_access,
            "access_count": self.access_count,
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
            "links": [link.to_dict() for link in self.links],
            "tier": self.tier,
        }
        if embedding:
            d["embedding"] = self.embedding.tolist()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], embedding: Vector | None = None) -> Memory:
        emb = embedding if embedding is not None else np.asarray(d["embedding"], dtype=np.float32)
        return cls(
            id=str(d["id"]),
            content=d.get("content"),
            embedding=emb,
            confidence=float(d["confidence"]),
            created_at=float(d["created_at"]),
            last_access=float(d["last_access"]),
            access_count=int(d["access_count"]),
            tags=tuple(d.get("tags", ())),
            metadata=dict(d.get("metadata") or {}),
            links=tuple(Link.from_dict(x) for x in d.get("links", ())),
            tier=str(d.get("tier", "hot")),
        )


@dataclass(frozen=True)
class RememberResult:
    """``outcome`` is "stored" (a new memory) or "merged" (reinforced the existing ``id``)."""

    id: str
    outcome: str
    similarity: float | None = None   # for "merged": cosine to the existing memory
    links: tuple[str, ...] = ()        # ids auto-linked to a stored memory

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "outcome": self.outcome, "similarity": self.similarity, "links": list(self.links)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RememberResult:
        return cls(str(d["id"]), str(d["outcome"]), d.get("similarity"), tuple(d.get("links", ())))


@dataclass(frozen=True)
class Hit:
    """One recall result. ``path`` runs from the seed that reached this memory to it:
    ``(id,)`` when reached directly by similarity, ``(seed, ..., id)`` when reached over links;
    ``depth == len(path) - 1``."""

    id: str
    content: str | None
    score: float
    similarity: float
    activation: float
    confidence: float
    path: tuple[str, ...]
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tier: str = "hot"

    @property
    def depth(self) -> int:
        return len(self.path) - 1

    @property
    def reached(self) -> str:
        return "direct" if len(self.path) == 1 else "link"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "content": self.content, "score": self.score, "similarity": self.similarity,
            "activation": self.activation, "confidence": self.confidence, "path": list(self.path),
            "depth": self.depth, "reached": self.reached, "tags": list(self.tags),
            "metadata": dict(self.metadata), "tier": self.tier,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Hit:
        return cls(
            str(d["id"]), d.get("content"), float(d["score"]), float(d["similarity"]), float(d["activation"]),
            float(d["confidence"]), tuple(d["path"]), tuple(d.get("tags", ())), dict(d.get("metadata") or {}),
            str(d.get("tier", "hot")),
        )


@dataclass(frozen=True)
class Page:
    items: Sequence[Memory]
    next_cursor: str | None
