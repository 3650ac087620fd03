"""Where a change feed stands and what its next ``events`` call must be: the I/O-free half
of every feed (the gateways' SSE and gRPC ``Subscribe`` through
:class:`memspace.api.feed.EventsPoller`, and ``memspace events``).

The ``events`` op takes ``{"after", "wait_ms", "limit"}`` and answers
``{"events": [{"seq", "type", ...}], "last_seq", "gap"}``. A feed that must not keep its
space awake drives a :class:`FeedCursor` like this (the caller owns the sockets and the
clock, so the same rules serve an asyncio gateway and a blocking command line)::

    body, passive = cursor.request()          first: an ordinary call, wait_ms 0 (wakes the
                                              space once, delivers what it holds after `after`);
                                              then passive long polls (not activity)
    reply  -> cursor.batch(reply)             the events to deliver, each seq once, in order
    asleep -> cursor.asleep(err)              True: wait for a sign that the space woke (a
                                              lifecycle message, or a bounded re-check) and
                                              poll again passively; False: call again at once,
                                              ordinarily (the space's last worker wrote past
                                              `after` before it slept: one waking fetch)
    other error                               the caller's (retry or end); the position holds

"Asleep" is the router's answer to a passive request for a space without a worker:
SPACE_UNAVAILABLE with ``details.asleep`` (see :func:`is_asleep`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memspace.errors import Internal, SpaceUnavailable


@dataclass(frozen=True)
class Batch:
    """One ``events`` reply, as the feed delivers it."""

    events: list[dict[str, Any]]   # seq ascending, each above ``after`` (never one twice)
    gap: bool                      # the space no longer holds some events after ``after``
    after: int                     # the position this reply continues from
    last_seq: int | None


def is_asleep(err: BaseException) -> bool:
    """The router's answer to a passive request for a space that has no worker."""
    return isinstance(err, SpaceUnavailable) and err.details.get("asleep") is True


class FeedCursor:
    """The position of one change feed (``after``: the last seq delivered or skipped) and the
    choice between an ordinary and a passive ``events`` call.

    ``woken``: the caller has just made an ordinary request to the space itself (to find its
    position, say), so even the first call may be passive. ``limit`` may be changed between
    calls (a feed that stops after N events asks for no more than it still wants).
    """

    def __init__(self, after: int, *, wait_ms: int, limit: int, woken: bool = False) -> None:
        self.after = after
        self.wait_ms = wait_ms
        self.limit = limit
        # ordinary until a call succeeds, and again when a sleeping space has records to fetch
        self.first = not woken

    def request(self) -> tuple[dict[str, int], bool]:
        """The body of the next ``events`` call and whether it is passive."""
        wait_ms = 0 if self.first else self.wait_ms
        return {"after": self.after, "wait_ms": wait_ms, "limit": self.limit}, not self.first

    def asleep(self, err: SpaceUnavailable) -> bool:
        """The call was answered "asleep". True: wait before polling (passively) again. False:
        the space's last worker wrote past ``after`` (``details.last_seq``: it woke and slept
        again between two polls), so the next call is an ordinary one that fetches it."""
        last_seq = err.details.get("last_seq")
        if isinstance(last_seq, int) and not isinstance(last_seq, bool) and last_seq > self.after:
            self.first = True
            return False
        return True

    def batch(self, reply: Any) -> Batch:
        """Take a successful reply: the events not delivered before, and the new position.
        Raises Internal for a reply of the wrong shape (the position is then unchanged)."""
        if not isinstance(reply, dict) or not isinstance(reply.get("events"), list):
            raise Internal("the events op answered with an unexpected shape", {"reply": str(reply)[:200]})
        self.first = False
        start = self.after
        events = []
        for event in reply["events"]:
            seq = int(event["seq"])
            if seq > self.after:       # never deliver a seq twice, whatever the op returns
                self.after = seq
                events.append(event)
        last_seq = reply.get("last_seq")
        if not isinstance(last_seq, int) or isinstance(last_seq, bool):
            last_seq = None
        if not events and last_seq is not None:
            # nothing after `after` up to last_seq (only records that are not changes, or
            # changes lost to a gap, reported now): go on from there, so a checkpoint past them
            # (a hibernation) is not mistaken for a gap later
            self.after = max(self.after, last_seq)
        return Batch(events, bool(reply.get("gap")), start, last_seq)
