"""Every error memspace raises, and the stable codes they carry across the wire.

    MemspaceError                      code: str, message: str, details: dict
    ├── InvalidArgument                INVALID_ARGUMENT
    │   ├── InvalidSpaceId             INVALID_SPACE_ID
    │   ├── SpaceRequired              SPACE_REQUIRED
    │   ├── ConflictingSpace           CONFLICTING_SPACE
    │   └── PayloadTooLarge            PAYLOAD_TOO_LARGE
    ├── Unauthenticated                UNAUTHENTICATED
    ├── Forbidden                      FORBIDDEN
    ├── NotFound
    │   ├── SpaceNotFound              SPACE_NOT_FOUND
    │   └── MemoryNotFound             MEMORY_NOT_FOUND
    ├── SpaceExists                    SPACE_EXISTS
    ├── ResourceExhausted
    │   ├── QuotaExceeded              QUOTA_EXCEEDED
    │   ├── RateLimited                RATE_LIMITED
    │   └── Overloaded                 OVERLOADED
    ├── SpaceUnavailable               SPACE_UNAVAILABLE
    ├── DeadlineExceeded               DEADLINE_EXCEEDED
    ├── PoisonRequest                  POISON_REQUEST
    ├── Internal                       INTERNAL
    └── StorageError                   (local only: never crosses the wire as such)
        ├── WalCorruption              a record before the tail is damaged: file + offset
        └── SnapshotCorruption         no valid snapshot where one is required

An error crosses a process boundary as ``(code, message, details)``
(:meth:`MemspaceError.to_dict`) and is rebuilt on the other side with
:func:`from_code`, so a client catching ``SpaceNotFound`` works the same
embedded, over zmq, HTTP or gRPC. Storage errors surface to remote callers as
``SPACE_UNAVAILABLE`` (the space is FAILED) with the file and offset in
``details``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MemspaceError(Exception):
    """Base of every memspace error. ``code`` is stable; ``message`` is for humans."""

    code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details: dict[str, Any] = dict(details or {})

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidArgument(MemspaceError):
    code = "INVALID_ARGUMENT"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"


class InvalidSpaceId(InvalidArgument):
    code = "INVALID_SPACE_ID"


class SpaceRequired(InvalidArgument):
    code = "SPACE_REQUIRED"


class ConflictingSpace(InvalidArgument):
    code = "CONFLICTING_SPACE"


class PayloadTooLarge(InvalidArgument):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class Unauthenticated(MemspaceError):
    code = "UNAUTHENTICATED"
    http_status = 401
    grpc_status = "UNAUTHENTICATED"


class Forbidden(MemspaceError):
    code = "FORBIDDEN"
    http_status = 403
    grpc_status = "PERMISSION_DENIED"


class NotFound(MemspaceError):
    code = "NOT_FOUND"
    http_status = 404
    grpc_status = "NOT_FOUND"


class SpaceNotFound(NotFound):
    code = "SPACE_NOT_FOUND"


class MemoryNotFound(NotFound):
    code = "MEMORY_NOT_FOUND"


class SpaceExists(MemspaceError):
    code = "SPACE_EXISTS"
    http_status = 409
    grpc_status = "ALREADY_EXISTS"


class ResourceExhausted(MemspaceError):
    """Retry later; ``details["retry_after_s"]`` says when, if known."""

    code = "RESOURCE_EXHAUSTED"
    http_status = 429
    grpc_status = "RESOURCE_EXHAUSTED"


class QuotaExceeded(ResourceExhausted):
    code = "QUOTA_EXCEEDED"


class RateLimited(ResourceExhausted):
    code = "RATE_LIMITED"


class Overloaded(ResourceExhausted):
    code = "OVERLOADED"


class SpaceUnavailable(MemspaceError):
    """The space exists but cannot serve now (starting too long, draining, deleting, FAILED)."""

    code = "SPACE_UNAVAILABLE"
    http_status = 503
    grpc_status = "UNAVAILABLE"


class DeadlineExceeded(MemspaceError):
    code = "DEADLINE_EXCEEDED"
    http_status = 504
    grpc_status = "DEADLINE_EXCEEDED"


class PoisonRequest(MemspaceError):
    """The request was in flight at two consecutive crashes of its space; it is not retried."""

    code = "POISON_REQUEST"
    http_status = 422
    grpc_status = "FAILED_PRECONDITION"


class Internal(MemspaceError):
    code = "INTERNAL"


class StorageError(MemspaceError):
    """Local storage failure. Remote callers see SPACE_UNAVAILABLE with these details."""

    code = "SPACE_UNAVAILABLE"
    http_status = 503
    grpc_status = "UNAVAILABLE"


class WalCorruption(StorageError):
    """A WAL record before the tail is damaged. Never skipped: repair keeps a copy first."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(
            f"WAL corrupt in {path} at offset {offset}: {reason}; "
            "run `memspace space repair` to recover up to this point (a copy is kept)",
            {"file": str(path), "offset": offset, "reason": reason},
        )
        self.path = str(path)
        self.offset = offset
        self.reason = reason


class SnapshotCorruption(StorageError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"snapshot {path} unusable: {reason}", {"file": str(path), "reason": reason})
        self.path = str(path)


_BY_CODE: dict[str, type[MemspaceError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument, InvalidSpaceId, SpaceRequired, ConflictingSpace, PayloadTooLarge,
        Unauthenticated, Forbidden, SpaceNotFound, MemoryNotFound, SpaceExists,
        QuotaExceeded, RateLimited, Overloaded, SpaceUnavailable, DeadlineExceeded,
        PoisonRequest, Internal,
    )
}

#: Every code a remote caller can see, in the contract's order.
CODES: tuple[str, ...] = tuple(_BY_CODE)


def from_code(code: str, message: str = "", details: dict[str, Any] | None = None) -> MemspaceError:
    """Rebuild an error received as ``(code, message, details)``; unknown codes become Internal."""
    cls = _BY_CODE.get(code, Internal)
    err = cls.__new__(cls)
    MemspaceError.__init__(err, message or code, details)
    return err


def http_status(code: str) -> int:
    return _BY_CODE.get(code, Internal).http_status


def grpc_status(code: str) -> str:
    """Name of the ``grpc.StatusCode`` member for ``code``."""
    return _BY_CODE.get(code, Internal).grpc_status
