"""What every gateway (HTTP, gRPC) shares: an asyncio client of the router, and space selection.

:class:`RouterClient` multiplexes many concurrent requests over one zmq DEALER
socket: each call registers a future under its request id, one reader task
resolves futures as replies arrive (replies to calls that already gave up are
dropped). Errors come back as :class:`memspace.errors.MemspaceError`
subclasses, so each gateway maps them to its own status codes with
``errors.http_status`` / ``errors.grpc_status``.

:func:`resolve_space` implements the contract's precedence for the
compatibility routes: header > query > body > default, with CONFLICTING_SPACE
when two given sources disagree and each id validated with its source named.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from memspace import wire
from memspace.errors import ConflictingSpace, DeadlineExceeded, Internal
from memspace.ids import validate_space_id

log = logging.getLogger("memspace.gateway")

#: The caller's bearer token for the request being handled (set by each gateway from the
#: ``Authorization`` header or metadata); the router checks it when ``auth.mode = token``.
TOKEN: contextvars.ContextVar[str | None] = contextvars.ContextVar("memspace_token", default=None)


def bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (None when absent or another scheme)."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class RouterClient:
    """One DEALER socket to the router shared by every request of this gateway process."""

    def __init__(self, endpoint: str, *, timeout: float = 30.0, max_bytes: int = wire.MAX_MESSAGE_BYTES) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._sock.connect(endpoint)
        self._pending: dict[str, asyncio.Future[list[bytes]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def call(self, space: str, op: str, body: Any = None, *, request_id: str | None = None,
                   timeout: float | None = None, passive: bool = False) -> Any:
        """Send one request and wait for its reply; raises the reply's MemspaceError.

        ``space`` "" lets the router use the default space (and count the fallback).
        ``passive``: a background request (a change feed's poll) that neither keeps the space
        awake nor wakes it (see :mod:`memspace.api.feed`).
        """
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())
        rid = request_id or uuid.uuid4().hex
        limit = self.timeout if timeout is None else timeout
        frames = wire.encode_request(rid, space, op, body, timeout_ms=max(1, int(limit * 1000)),
                                     token=TOKEN.get(), passive=passive, max_bytes=self.max_bytes)
        fut: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        if rid in self._pending:
            # the same idempotency key twice at once: wait for the first call's answer
            first = self._pending[rid]
            return wire.decode_reply(await asyncio.wait_for(asyncio.shield(first), limit + 1.0))
        self._pending[rid] = fut
        try:
            await self._sock.send_multipart(frames)
            # the router answers DEADLINE_EXCEEDED itself at `limit`; the margin covers the trip
            reply = await asyncio.wait_for(fut, limit + 2.0)
        except TimeoutError:
            raise DeadlineExceeded(f"no reply from the router at {self.endpoint} for {op}",
                                   {"op": op, "space": space}) from None
        finally:
            if self._pending.get(rid) is fut:
                del self._pending[rid]
        return wire.decode_reply(reply, max_bytes=self.max_bytes * 4)

    async def _read(self) -> None:
        while True:
            try:
                frames = await self._sock.recv_multipart()
            except (zmq.ContextTerminated, asyncio.CancelledError):
                return
            except zmq.ZMQError as e:   # pragma: no cover - socket closed under us
                log.warning("router client socket error: %s", e)
                return
            try:
                rid = wire.split_reply(frames, max_bytes=self.max_bytes * 4).request_id
            except wire.WireError as e:
                log.warning("malformed reply from router dropped: %s", e.message)
                continue
            fut = self._pending.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(frames)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(Internal("gateway shutting down"))
        self._sock.close(0)
        self._ctx.term()


class OncePerClient:
    """Remembers the most recent ``size`` clients, so a warning is logged once per client with
    bounded memory (a client is whatever key the gateway chooses: address + user agent)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._seen: OrderedDict[Any, None] = OrderedDict()

    def first_time(self, client: Any) -> bool:
        if client in self._seen:
            self._seen.move_to_end(client)
            return False
        self._seen[client] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


@dataclass(frozen=True)
class Resolved:
    """The space a request addresses; ``source`` is where it came from ("default" = none named)."""

    space: str
    source: str

    @property
    def fallback(self) -> bool:
        return self.source == "default"


def resolve_space(*, header: str | None = None, query: str | None = None, body: str | None = None,
                  field: str | None = None, metadata: str | None = None) -> Resolved:
    """Pick the space by precedence; validate each given id naming its source.

    REST compatibility routes: header > query > body. gRPC: field > metadata. Two
    sources that name different spaces -> ConflictingSpace. None given -> the default
    space (``space == ""``: the router resolves it, so the fallback is counted once, there).
    """
    given: list[tuple[str, str]] = []
    for source, value in (("field", field), ("header", header), ("metadata", metadata), ("query", query),
                          ("body", body)):
        if value is not None and value != "":
            given.append((source, validate_space_id(value, source)))
    if not given:
        return Resolved("", "default")
    distinct = {v for _, v in given}
    if len(distinct) > 1:
        named = ", ".join(f"{s} {v!r}" for s, v in given)
        raise ConflictingSpace(f"the request names two different memory spaces ({named}); name one",
                               {"sources": {s: v for s, v in given}})
    return Resolved(given[0][1], given[0][0])
