"""The change feed behind ``Memories.Subscribe``: one space's data events plus its lifecycle events.

Two producers feed one bounded queue, drained by the RPC in arrival order:

* data events: the space op ``events`` as a long poll. Body ``{"after", "wait_ms",
  "limit"}``, reply ``{"events": [{"seq", "type", "at", ...}], "last_seq", "gap"}``.
  The next poll starts after the last seq delivered, so a stream resumed with
  ``after_seq`` loses nothing the space still holds; ``gap`` (the space no longer
  holds some events after ``after``) is passed on as a "gap" event first.
* lifecycle events: a zmq SUB socket on the supervisor's publisher, subscribed to the
  space id. zmq topics match by prefix (``alpha`` also matches ``alpha-2``), so the
  topic frame is compared exactly here.

Failure semantics: errors a space recovers from (SPACE_UNAVAILABLE while it restarts
or drains, OVERLOADED, DEADLINE_EXCEEDED) are retried with a capped backoff while
the client stays connected; any other error (SPACE_NOT_FOUND after a delete, ...)
ends the stream with that error. Cancelling the consumer stops both producers and
closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import zmq
import zmq.asyncio

from memspace.api import grpc_convert as convert
from memspace.api.gateway import RouterClient
from memspace.errors import DeadlineExceeded, Internal, ResourceExhausted, SpaceUnavailable

log = logging.getLogger("memspace.grpc.feed")

#: Long-poll length of one ``events`` call (the op's maximum is 25 s).
WAIT_MS = 25_000
#: Events asked for per call (the op's maximum is 500).
LIMIT = 500
QUEUE_SIZE = 1000
_RETRYABLE = (SpaceUnavailable, ResourceExhausted, DeadlineExceeded)
_BACKOFF_MAX_S = 5.0


class Feed:
    """One subscriber's merged feed. Use as ``async for event in feed.run(): ...``."""

    def __init__(self, rc: RouterClient, zctx: zmq.asyncio.Context, events_endpoint: str, *,
                 router_space: str, topic_space: str, after: int, lifecycle: bool,
                 stopping: asyncio.Event, wait_ms: int = WAIT_MS) -> None:
        self.rc = rc
        self.zctx = zctx
        self.events_endpoint = events_endpoint
        self.router_space = router_space        # "" = let the router resolve the default space
        self.topic_space = topic_space          # the real id, for lifecycle topics and event fields
        self.after = after
        self.lifecycle = lifecycle
        self.stopping = stopping
        self.wait_ms = wait_ms
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._final: tuple[str, Any] | None = None

    async def run(self) -> AsyncIterator[Any]:
        """Yield ``memspace.v1.Event`` messages until the client goes or the gateway stops."""
        sub: zmq.asyncio.Socket | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.lifecycle:
                # subscribe before the first poll so a transition in between is not missed
                sub = self.zctx.socket(zmq.SUB)
                sub.setsockopt(zmq.LINGER, 0)
                sub.setsockopt(zmq.SUBSCRIBE, self.topic_space.encode())
                sub.connect(self.events_endpoint)
                tasks.append(self._spawn(self._read_lifecycle(sub)))
            tasks.append(self._spawn(self._poll_data()))
            tasks.append(self._spawn(self._watch_stop()))
            while True:
                kind, item = self._final or await self._queue.get()
                if kind == "error":
                    raise item
                if kind == "stop":
                    return
                yield item
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if sub is not None:
                sub.close(0)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._force(("error", error))

    def _force(self, item: tuple[str, Any]) -> None:
        """Hand the consumer a final item (error or stop) even when the queue is full.

        A full queue means the consumer is not waiting: it sees ``_final`` before its next
        event. Events still queued are then not sent, which a resume with the last seq
        received makes good; none is skipped in the middle.
        """
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._final = item

    async def _watch_stop(self) -> None:
        await self.stopping.wait()
        # the gateway is shutting down: end the stream now rather than at the grace deadline
        self._force(("stop", None))

    async def _poll_data(self) -> None:
        backoff = 0.1
        while True:
            body = {"after": self.after, "wait_ms": self.wait_ms, "limit": LIMIT}
            try:
                reply = await self.rc.call(self.router_space, "events", body,
                                           timeout=self.wait_ms / 1000.0 + 10.0)
            except _RETRYABLE as e:
                log.info("change feed of %s: %s; retrying in %.1f s", self.topic_space or "default",
                         e.message, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            backoff = 0.1
            if not isinstance(reply, dict) or not isinstance(reply.get("events"), list):
                raise Internal("the events op answered with an unexpected shape", {"reply": str(reply)[:200]})
            events = reply["events"]
            if reply.get("gap"):
                await self._queue.put(("event", convert.gap_event(self.topic_space, self.after,
                                                                  reply.get("last_seq"))))
                if not events and isinstance(reply.get("last_seq"), int):
                    self.after = max(self.after, reply["last_seq"])   # nothing left to wait for before it
            for event in events:
                seq = int(event["seq"])
                if seq <= self.after:      # never send a seq twice, whatever the op returns
                    continue
                self.after = seq
                await self._queue.put(("event", convert.data_event(self.topic_space, event)))

    async def _read_lifecycle(self, sub: zmq.asyncio.Socket) -> None:
        topic = self.topic_space.encode()
        while True:
            frames = await sub.recv_multipart()
            if len(frames) != 2 or frames[0] != topic:
                continue
            try:
                event = orjson.loads(frames[1])
            except orjson.JSONDecodeError:
                log.warning("malformed lifecycle event for %s dropped", self.topic_space)
                continue
            if isinstance(event, dict):
                await self._queue.put(("event", convert.lifecycle_event(event)))
