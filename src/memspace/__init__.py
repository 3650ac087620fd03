"""memspace: a multi-tenant memory service for AI agents, one OS process per memory space.

Embedded (one process, one space, like sqlite3)::

    space = memspace.open_space("./alpha-data", dimension=384)

Against a server (``memspace serve``)::

    client = memspace.connect("tcp://127.0.0.1:7079")      # or "http://127.0.0.1:7077" (REST)
    alpha = client.space("alpha")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memspace.errors import (
    ConflictingSpace,
    DeadlineExceeded,
    Forbidden,
    Internal,
    InvalidArgument,
    InvalidSpaceId,
    MemoryNotFound,
    MemspaceError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PoisonRequest,
    QuotaExceeded,
    RateLimited,
    ResourceExhausted,
    SnapshotCorruption,
    SpaceExists,
    SpaceNotFound,
    SpaceRequired,
    SpaceUnavailable,
    StorageError,
    Unauthenticated,
    WalCorruption,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from memspace.client import Client
    from memspace.storage.space import Space


def open_space(path: Any, dimension: int | None = None, **kwargs: Any) -> Space:
    """Open (or create) a durable space in directory ``path``; see :class:`memspace.storage.space.Space`."""
    from memspace.storage.space import open_space as _open

    return _open(path, dimension=dimension, **kwargs)


def connect(url: str, **kwargs: Any) -> Client:
    """Connect to a running server: ``tcp://``/``ipc://`` (native zmq) or ``http://`` (REST)."""
    from memspace.client import connect as _connect

    return _connect(url, **kwargs)


__all__ = [
    "ConflictingSpace",
    "DeadlineExceeded",
    "Forbidden",
    "Internal",
    "InvalidArgument",
    "InvalidSpaceId",
    "MemoryNotFound",
    "MemspaceError",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PoisonRequest",
    "QuotaExceeded",
    "RateLimited",
    "ResourceExhausted",
    "SnapshotCorruption",
    "SpaceExists",
    "SpaceNotFound",
    "SpaceRequired",
    "SpaceUnavailable",
    "StorageError",
    "Unauthenticated",
    "WalCorruption",
    "__version__",
    "connect",
    "open_space",
]
