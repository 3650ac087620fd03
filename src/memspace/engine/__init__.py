"""The I/O-free engine: memory model, remember/dedup/auto-link, recall, decay, tier policy, records.

Nothing here touches files, sockets, clocks or threads (a test walks the
imports): time comes in as ``now`` and ids from a caller-supplied factory. The
durable layer wraps :class:`Engine` with a WAL (``plan -> append -> apply ->
commit``); the worker wraps that with sockets.
"""

from __future__ import annotations

from memspace.engine.decay import decayed
from memspace.engine.embedder import Embedder, HashingEmbedder, get_embedder
from memspace.engine.model import (
    Hit,
    Limits,
    Link,
    Memory,
    Page,
    RememberResult,
    SpaceSettings,
)
from memspace.engine.policy import Demotion
from memspace.engine.records import RecordType, decode, encode
from memspace.engine.spreading import Activation, spread
from memspace.engine.store import Engine, EngineStats
from memspace.engine.tiers import MemoryTier, TierStore

__all__ = [
    "Activation",
    "Demotion",
    "Embedder",
    "Engine",
    "EngineStats",
    "HashingEmbedder",
    "Hit",
    "Limits",
    "Link",
    "Memory",
    "MemoryTier",
    "Page",
    "RecordType",
    "RememberResult",
    "SpaceSettings",
    "TierStore",
    "decayed",
    "decode",
    "encode",
    "get_embedder",
    "spread",
]
