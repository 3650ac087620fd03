"""What both gateways' change feeds (SSE and gRPC ``Subscribe``) share.

* :class:`LifecycleHub`: one SUB socket per gateway process on the supervisor's
  lifecycle publisher, fanning each space's transitions out to listeners.
* :class:`EventsPoller`: the data half of a feed, long polls of the space's
  ``events`` op that never keep the space awake. The position and the choice of
  call are :class:`memspace.feed_cursor.FeedCursor`'s (shared with ``memspace
  events``); this class adds the asyncio calls and the wait for a lifecycle message.

How an open feed lets its space hibernate, and picks up again when it wakes::

    first call      events(after, wait_ms=0)         an ordinary request: it wakes the space
                                                     and delivers what it holds after `after`
                                                     (the SSE route makes it before it answers)
    then, looping   events(after, wait_ms, passive)  a passive long poll: not activity, so the
                                                     space still hibernates when idle
    hibernation     the draining worker answers the parked poll at once; the next passive
                    poll is answered by the router itself, SPACE_UNAVAILABLE with
                    details.asleep (no worker is started for it)
    asleep          wait for a lifecycle message of the space (READY is the one that matters)
                    or RECHECK_S, whichever comes first, then poll (passively) again; but if
                    the router says the space's last worker wrote past `after` (details.last_seq:
                    it woke and slept again before this feed polled), fetch with one ordinary call
    woken           someone's real request starts the worker; the passive poll queues behind
                    it and resumes after the last seq delivered, so the write that woke the
                    space is delivered in order, with its seq; `gap` is the worker's as ever

The re-check bounds the stall if a lifecycle message is lost (a SUB socket joining
late, a full publisher queue): a passive poll of a sleeping space costs the router a
dictionary lookup, so polling a sleeping space every ``RECHECK_S`` is cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, Self

import orjson
import zmq
import zmq.asyncio

from memspace.errors import SpaceUnavailable
from memspace.feed_cursor import Batch, FeedCursor, is_asleep

__all__ = ["RECHECK_S", "Batch", "Call", "EventsPoller", "LifecycleHub", "is_asleep"]

log = logging.getLogger("memspace.gateway.feed")

#: Longest a feed of a sleeping space waits for a lifecycle message before it polls again.
RECHECK_S = 15.0

Listener = Callable[[dict[str, Any]], None]


class LifecycleHub:
    """One SUB socket per gateway process, fanning lifecycle events out to listeners.

    It subscribes to every topic and filters by exact space id here: zmq topics are
    prefixes (a subscription to ``alpha`` would also deliver ``alpha2``), and one
    subscription made at start-up avoids the slow-joiner loss a per-stream
    subscription would suffer right after connecting. Listeners run on the event loop,
    in the hub's reader task; they must not block (put on a queue, set an event).
    """

    def __init__(self, endpoint: str) -> None:
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(endpoint)
        self._listeners: dict[str, set[Listener]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._read())

    def listen(self, space: str, listener: Listener) -> None:
        self._listeners[space].add(listener)

    def unlisten(self, space: str, listener: Listener) -> None:
        listeners = self._listeners.get(space)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[space]

    async def _read(self) -> None:
        while True:
            try:
                frames = await self._sock.recv_multipart()
            except (zmq.ContextTerminated, asyncio.CancelledError):
                return
            except zmq.ZMQError as e:   # pragma: no cover - socket closed under us
                log.warning("lifecycle subscriber stopped: %s", e)
                return
            if len(frames) != 2:
                continue
            listeners = self._listeners.get(frames[0].decode("ascii", "replace"))
            if not listeners:
                continue
            try:
                event = orjson.loads(frames[1])
            except orjson.JSONDecodeError:
                log.warning("malformed lifecycle event dropped")
                continue
            if not isinstance(event, dict):
                continue
            for listener in list(listeners):
                listener(event)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._sock.close(0)
        self._ctx.term()


class Call(Protocol):
    def __call__(self, space: str, op: str, body: Any = None, *, passive: bool = False,
                 timeout: float | None = None) -> Awaitable[Any]: ...


class EventsPoller:
    """Polls one space's ``events`` op for a change feed without keeping the space awake.

    ``await next()`` returns the next :class:`Batch` (possibly empty: a long poll that
    ended without news). It waits through the space's sleep itself (see the module
    docstring); any other error of the call is raised for the feed to handle (retry a
    transient one, end on a permanent one) and the next ``next()`` continues from the
    same position. Use as a context manager: it listens to the hub while open.

    ``woken``: the caller has just made an ordinary request to the space (the SSE route's
    first call), so even the first poll may be passive.
    """

    def __init__(self, call: Call, space: str, after: int, *, hub: LifecycleHub | None, topic: str,
                 wait_ms: int, limit: int, margin_s: float, recheck_s: float = RECHECK_S,
                 woken: bool = False) -> None:
        self.call = call
        self.space = space            # "" = the router's default space
        self.topic = topic            # the real space id, for lifecycle messages
        self.hub = hub
        self.margin_s = margin_s
        self.recheck_s = recheck_s
        self.cursor = FeedCursor(after, wait_ms=wait_ms, limit=limit, woken=woken)
        self._nudge = asyncio.Event()

    @property
    def after(self) -> int:
        """The last seq delivered (or skipped as not a change): the next poll continues after it."""
        return self.cursor.after

    def __enter__(self) -> Self:
        if self.hub is not None:
            self.hub.listen(self.topic, self._on_lifecycle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.hub is not None:
            self.hub.unlisten(self.topic, self._on_lifecycle)

    def _on_lifecycle(self, event: dict[str, Any]) -> None:
        self._nudge.set()

    async def next(self) -> Batch:
        while True:
            # cleared before the call: a transition published after the router's answer
            # still ends the wait below
            self._nudge.clear()
            body, passive = self.cursor.request()
            try:
                reply = await self.call(self.space, "events", body, passive=passive,
                                        timeout=body["wait_ms"] / 1000.0 + self.margin_s)
            except SpaceUnavailable as e:
                if not is_asleep(e):
                    raise
                if self.cursor.asleep(e):
                    await self._sleep()
                continue
            return self.cursor.batch(reply)

    async def _sleep(self) -> None:
        # jittered, so streams that fell asleep together do not re-check together
        timeout = self.recheck_s * random.uniform(0.75, 1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._nudge.wait(), timeout)
