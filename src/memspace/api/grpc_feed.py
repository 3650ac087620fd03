"""The change feed behind ``Memories.Subscribe``: one space's data events plus its lifecycle events.

Two producers feed one bounded queue, drained by the RPC in arrival order:

* data events: the space op ``events`` as a long poll
  (:class:`memspace.api.feed.EventsPoller`). Body ``{"after", "wait_ms", "limit"}``,
  reply ``{"events": [{"seq", "type", "at", ...}], "last_seq", "gap"}``. The next poll
  starts after the last seq delivered, so a stream resumed with ``after_seq`` loses
  nothing the space still holds; ``gap`` (the space no longer holds some events after
  ``after``) is passed on as a "gap" event first. The polls are passive: an open stream
  does not keep its space awake; while the space hibernates the stream stays open and
  delivery resumes when the space wakes.
* lifecycle events: the gateway's :class:`memspace.api.feed.LifecycleHub` (one SUB socket
  on the supervisor's publisher per gateway process, exact topic match), unless the
  subscriber asked for data only.

Failure semantics: errors a space recovers from (SPACE_UNAVAILABLE while it restarts
or drains, OVERLOADED, DEADLINE_EXCEEDED) are retried with a capped backoff while
the client stays connected; any other error (SPACE_NOT_FOUND after a delete, ...)
ends the stream with that error. Cancelling the consumer stops both producers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from memspace.api import grpc_convert as convert
from memspace.api.feed import RECHECK_S, Call, EventsPoller, LifecycleHub
from memspace.errors import DeadlineExceeded, ResourceExhausted, SpaceUnavailable

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

    def __init__(self, call: Call, hub: LifecycleHub | None, *, router_space: str, topic_space: str,
                 after: int, lifecycle: bool, stopping: asyncio.Event, wait_ms: int = WAIT_MS,
                 recheck_s: float = RECHECK_S) -> None:
        self.call = call                        # RouterClient.call
        self.hub = hub
        self.router_space = router_space        # "" = let the router resolve the default space
        self.topic_space = topic_space          # the real id, for lifecycle topics and event fields
        self.after = after
        self.lifecycle = lifecycle
        self.stopping = stopping
        self.wait_ms = wait_ms
        self.recheck_s = recheck_s
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._final: tuple[str, Any] | None = None

    async def run(self) -> AsyncIterator[Any]:
        """Yield ``memspace.v1.Event`` messages until the client goes or the gateway stops."""
        tasks: list[asyncio.Task[None]] = []
        hub = self.hub if self.lifecycle else None
        try:
            if hub is not None:
                # listen before the first poll so a transition in between is not missed
                hub.listen(self.topic_space, self._on_lifecycle)
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
            if hub is not None:
                hub.unlisten(self.topic_space, self._on_lifecycle)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

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
        with EventsPoller(self.call, self.router_space, self.after, hub=self.hub, topic=self.topic_space,
                          wait_ms=self.wait_ms, limit=LIMIT, margin_s=10.0, recheck_s=self.recheck_s) as poller:
            while True:
                try:
                    batch = await poller.next()
                except _RETRYABLE as e:
                    log.info("change feed of %s: %s; retrying in %.1f s", self.topic_space or "default",
                             e.message, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                    continue
                backoff = 0.1
                if batch.gap:
                    await self._queue.put(("event", convert.gap_event(self.topic_space, batch.after, batch.last_seq)))
                for event in batch.events:
                    await self._queue.put(("event", convert.data_event(self.topic_space, event)))
                self.after = poller.after

    def _on_lifecycle(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):   # a slow consumer loses lifecycle events only
            self._queue.put_nowait(("event", convert.lifecycle_event(event)))
