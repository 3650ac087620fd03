"""The change feed of one space as Server-Sent Events: ``GET /v1/spaces/{space}/events``.

Two sources feed one bounded queue per stream:

* **data events** from the space's ``events`` op, a long poll
  (``{"after", "wait_ms", "limit"} -> {"events", "last_seq", "gap"}``) called in
  a loop with ``after`` = the last seq sent. Each is sent as ``id: <seq>``,
  ``event: <type>`` (remember, forget, link), ``data: <json>``. The polls are
  passive (:class:`memspace.api.feed.EventsPoller`): an open stream does not keep
  its space awake; while the space hibernates the stream stays open (lifecycle
  events and pings go on) and delivery resumes when it wakes. When the worker
  says ``gap: true`` (it no longer holds some events after our position) an
  ``event: gap`` goes out first, so a client knows to re-sync instead of
  silently missing changes.
* **lifecycle events** (READY, DRAINING, ...) published by the supervisor on a
  zmq PUB socket as ``[space id, orjson event]`` (:class:`memspace.api.feed.LifecycleHub`);
  sent as ``event: lifecycle`` without an id (they are not part of the resumable sequence).

Where a stream starts: after ``Last-Event-ID`` (or ``?after=``) when given,
else at the space's current end (only changes made after subscribing). The
first thing sent is a ``retry:`` hint and a ``: subscribed ...`` comment naming
that position; events written after the client has read it are delivered.

A ``: ping`` comment goes out after ``http.sse_heartbeat_s`` of silence. The
stream ends when the client disconnects (its tasks are cancelled), when the
space is deleted or the request is refused for good (an ``event: error`` with
the error envelope first), or when the gateway shuts down. Transient errors
(the space restarting, overloaded, a deadline) are reported as ``event: error``
and the poll is retried after the error's ``retry_after_s`` (at most 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query
from starlette.responses import Response, StreamingResponse

from memspace.api.feed import EventsPoller
from memspace.api.http_common import GatewayState, gateway, path_space
from memspace.api.http_memories import ERRORS
from memspace.errors import (
    DeadlineExceeded,
    InvalidArgument,
    MemspaceError,
    ResourceExhausted,
    SpaceUnavailable,
)

log = logging.getLogger("memspace.http.sse")

#: Long-poll wait per ``events`` call; below the worker's 30 s cap.
POLL_WAIT_MS = 25_000
POLL_LIMIT = 500
#: Items buffered per stream; a slow client makes the poller wait (lifecycle events are dropped).
QUEUE_SIZE = 1000
MAX_RETRY_S = 5.0

router = APIRouter(responses=ERRORS)

_TRANSIENT = (SpaceUnavailable, DeadlineExceeded, ResourceExhausted)


def _frame(event: str | None, data: Any, event_id: int | None = None) -> bytes:
    out = b""
    if event_id is not None:
        out += b"id: %d\n" % event_id
    if event is not None:
        out += b"event: " + event.encode() + b"\n"
    return out + b"data: " + orjson.dumps(data) + b"\n\n"


def _start_position(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is not None and last_event_id.strip():
        try:
            value = int(last_event_id.strip())
        except ValueError:
            value = -1
        if value < 0:
            raise InvalidArgument(f"header Last-Event-ID must be an event id (a non-negative integer), "
                                  f"got {last_event_id[:40]!r}", {"field": "Last-Event-ID", "source": "header"})
        return value
    if after is not None:
        if after < 0:
            raise InvalidArgument(f"query after must be a non-negative integer, got {after}",
                                  {"field": "after", "source": "query"})
        return after
    return None


@router.get("/v1/spaces/{space}/events", tags=["spaces"], summary="Change feed of the space (SSE)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "remember / forget / link events (with id), gap, lifecycle, "
                                            "error; `: ping` comments keep the connection open."}})
async def events(space: Annotated[str, Depends(path_space)], gw: Annotated[GatewayState, Depends(gateway)],
                 last_event_id: Annotated[str | None, Header(alias="Last-Event-ID",
                                                             description="Resume after this event id.")] = None,
                 after: Annotated[int | None, Query(description="Resume after this seq (if no Last-Event-ID).")]
                 = None) -> Response:
    start = _start_position(last_event_id, after)
    # One immediate call before answering: an unknown space is a 404, not an empty stream,
    # and without a resume point it fixes where the stream starts.
    head = await gw.call(space, "events", {"after": start or 0, "wait_ms": 0, "limit": 1})
    position = int(head["last_seq"]) if start is None else start
    queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)
    return StreamingResponse(_stream(gw, space, position, queue), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(gw: GatewayState, space: str, position: int, queue: asyncio.Queue[Any]) -> AsyncIterator[bytes]:
    def on_lifecycle(event: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):   # a slow client loses lifecycle events only
            queue.put_nowait(("lifecycle", event))

    gw.streams.add(queue)
    if gw.hub is not None:
        gw.hub.listen(space, on_lifecycle)
    poller = asyncio.get_running_loop().create_task(_poll(gw, space, position, queue))
    try:
        yield b"retry: 1000\n: subscribed to %s after %d\n\n" % (space.encode(), position)
        while not gw.stopping.is_set():
            try:
                item = await asyncio.wait_for(queue.get(), gw.heartbeat_s)
            except TimeoutError:
                yield b": ping\n\n"
                continue
            if item is None:
                return
            kind, payload = item
            if kind == "data":
                yield _frame(payload.get("type", "change"), payload, int(payload["seq"]))
            elif kind == "error":
                yield _frame("error", {"error": payload.to_dict()})
            else:
                yield _frame(kind, payload)
    finally:
        # runs on client disconnect too (the response task is cancelled): stop polling at once
        poller.cancel()
        gw.streams.discard(queue)
        if gw.hub is not None:
            gw.hub.unlisten(space, on_lifecycle)


async def _poll(gw: GatewayState, space: str, after: int, queue: asyncio.Queue[Any]) -> None:
    # the route's first call woke the space and checked it exists: every poll may be passive
    with EventsPoller(gw.call, space, after, hub=gw.hub, topic=space, wait_ms=POLL_WAIT_MS, limit=POLL_LIMIT,
                      margin_s=gw.request_timeout_s, woken=True) as poller:
        while True:
            try:
                batch = await poller.next()
            except _TRANSIENT as e:
                await queue.put(("error", e))
                await asyncio.sleep(min(MAX_RETRY_S, max(0.1, float(e.details.get("retry_after_s", 1)))))
                continue
            except MemspaceError as e:
                log.info("change feed of space %s ended: %s: %s", space, e.code, e.message)
                await queue.put(("error", e))
                await queue.put(None)
                return
            if batch.gap:
                await queue.put(("gap", {"after": batch.after, "last_seq": batch.last_seq}))
            for event in batch.events:
                await queue.put(("data", event))
