"""The worker's change feed: recent change events and the long-poll requests waiting for them.

Events are kept for the last :data:`KEEP` changing records; ``covered_after``
is the sequence number after which the log is complete. A subscriber asking for
events after an older seq is told ``gap: true`` (those events can no longer be
delivered) rather than silently skipping them.

Waiters are answered only after the group commit that made their events
durable: the worker calls :meth:`Feed.ready` after each commit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from memspace.engine.changes import change_event
from memspace.errors import InvalidArgument

KEEP = 10_000
MAX_WAIT_MS = 30_000
MAX_LIMIT = 1000


@dataclass(eq=False)
class Waiter:
    ticket: bytes
    request_id: str
    after: int
    limit: int
    deadline: float


class Feed:
    def __init__(self, covered_after: int = 0, keep: int = KEEP) -> None:
        self.events: deque[dict[str, Any]] = deque()
        self.keep = keep
        self.covered_after = covered_after
        self.last_seq = covered_after
        self.waiters: list[Waiter] = []

    def record(self, seq: int, rec: Any) -> None:
        """Called by the space for every record applied (live and during replay)."""
        self.last_seq = max(self.last_seq, seq)
        event = change_event(seq, rec)
        if event is None:
            return
        self.events.append(event)
        while len(self.events) > self.keep:
            self.covered_after = self.events.popleft()["seq"]

    @staticmethod
    def parse(args: dict[str, Any]) -> tuple[int, int, int]:
        unknown = sorted(set(args) - {"after", "wait_ms", "limit"})
        if unknown:
            raise InvalidArgument(f"events: unknown argument(s) {', '.join(unknown)}", {"unknown": unknown})
        after, wait_ms, limit = args.get("after", 0), args.get("wait_ms", 0), args.get("limit", 100)
        for name, value, low, high in (("after", after, 0, 2**63), ("wait_ms", wait_ms, 0, MAX_WAIT_MS),
                                       ("limit", limit, 1, MAX_LIMIT)):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise InvalidArgument(f"events: {name} must be an integer in {low}..{high}, got {value!r}",
                                      {"field": name})
        return after, wait_ms, limit

    def answer(self, after: int, limit: int) -> dict[str, Any]:
        out = [e for e in self.events if e["seq"] > after][:limit]
        return {"events": out, "last_seq": self.last_seq, "gap": after < self.covered_after}

    def has_news(self, after: int) -> bool:
        return bool(self.events) and self.events[-1]["seq"] > after

    def park(self, waiter: Waiter) -> None:
        self.waiters.append(waiter)

    def ready(self, now: float, closing: bool = False) -> list[tuple[Waiter, dict[str, Any]]]:
        """Waiters to answer now: those with news, past their deadline, or all when closing."""
        done, keep = [], []
        for w in self.waiters:
            if closing or now >= w.deadline or self.has_news(w.after):
                done.append((w, self.answer(w.after, w.limit)))
            else:
                keep.append(w)
        self.waiters = keep
        return done

    def next_deadline(self) -> float | None:
        return min((w.deadline for w in self.waiters), default=None)
