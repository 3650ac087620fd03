"""Per-space metrics: recorded where they happen, exposed once, with bounded label cardinality.

Where each number comes from (all end up in the router process, which outlives workers):

* requests by operation and outcome, and their latency: the **router** sees every request and
  its reply status, so these counters never go backwards when a worker restarts or hibernates,
  and nothing is lost when a worker exits (:class:`RequestMetrics`, about a microsecond a request);
* memories per tier, WAL bytes, checkpoint age, RSS, fsync latency: each **worker** reports them
  in its heartbeats and its final BYE; fsync counts are cumulative per worker incarnation, and
  the supervisor adds what a previous incarnation reported (:class:`Carry`) so they stay
  monotonic too (a crash loses at most one heartbeat interval of fsync observations);
* lifecycle (state, restarts by reason, spawns, hibernations, fallbacks): the **supervisor**.

:func:`snapshot` turns them into one JSON document with the cardinality guard applied: the
``max_metric_spaces`` busiest spaces keep their own ``memory_space`` label, every other space is
summed under ``__other__``. Label assignment is sticky (re-ranked at most every
``REBALANCE_S``) so series do not flap between scrapes. The HTTP gateway renders the document
in the Prometheus text format (:mod:`memspace.api.metrics_export`).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Latency bucket upper bounds, seconds.
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER = "__other__"
REBALANCE_S = 300.0


def new_histogram() -> list[float]:
    """Bucket counts (len(BUCKETS) + 1 for +Inf), then sum, then count."""
    return [0.0] * (len(BUCKETS) + 3)


def observe(hist: list[float], seconds: float) -> None:
    hist[bisect.bisect_left(BUCKETS, seconds)] += 1
    hist[-2] += seconds
    hist[-1] += 1


def merge_histogram(into: list[float], other: Iterable[float]) -> None:
    for i, v in enumerate(other):
        into[i] += v


def quantile(hist: list[float], q: float) -> float | None:
    """Upper bound of the bucket holding the q-quantile (None without observations)."""
    total = hist[-1]
    if not total:
        return None
    rank, seen = q * total, 0.0
    for i, bound in enumerate(BUCKETS):
        seen += hist[i]
        if seen >= rank:
            return bound
    return float("inf")


@dataclass
class SpaceRequests:
    counts: dict[tuple[str, str], int] = field(default_factory=dict)   # (op, outcome) -> n
    latency: dict[str, list[float]] = field(default_factory=dict)      # op -> histogram
    total: int = 0


class RequestMetrics:
    """Request counters and latency per space, kept by the router."""

    def __init__(self) -> None:
        self.spaces: dict[str, SpaceRequests] = {}

    def observe(self, space: str, op: str, outcome: str, seconds: float) -> None:
        m = self.spaces.get(space)
        if m is None:
            m = self.spaces[space] = SpaceRequests()
        key = (op, outcome)
        m.counts[key] = m.counts.get(key, 0) + 1
        m.total += 1
        hist = m.latency.get(op)
        if hist is None:
            hist = m.latency[op] = new_histogram()
        observe(hist, seconds)

    def latency_quantiles(self, space: str) -> dict[str, float | None]:
        m = self.spaces.get(space)
        merged = new_histogram()
        if m is not None:
            for hist in m.latency.values():
                merge_histogram(merged, hist)
        return {"p50_s": quantile(merged, 0.5), "p99_s": quantile(merged, 0.99)}


class Carry:
    """Cumulative worker-reported counters, kept monotonic across worker incarnations."""

    def __init__(self) -> None:
        self.base: dict[str, list[float]] = {}      # space -> fsync histogram of dead incarnations
        self.current: dict[str, list[float]] = {}   # space -> latest report of the live one

    def report(self, space: str, fsync: list[float] | None) -> None:
        if fsync:
            self.current[space] = list(fsync)

    def incarnation_ended(self, space: str) -> None:
        last = self.current.pop(space, None)
        if last is not None:
            merge_histogram(self.base.setdefault(space, new_histogram()), last)

    def fsync(self, space: str) -> list[float]:
        out = new_histogram()
        for part in (self.base.get(space), self.current.get(space)):
            if part is not None:
                merge_histogram(out, part)
        return out

    def forget(self, space: str) -> None:
        self.base.pop(space, None)
        self.current.pop(space, None)


class LabelGuard:
    """Which spaces keep their own label: the busiest ``limit``, sticky between re-rankings."""

    def __init__(self, limit: int, rebalance_s: float = REBALANCE_S, clock: Any = time.monotonic) -> None:
        self.limit = limit
        self.rebalance_s = rebalance_s
        self.clock = clock
        self.labelled: set[str] = set()
        self._ranked_at = float("-inf")

    def select(self, activity: dict[str, int]) -> set[str]:
        now = self.clock()
        self.labelled &= set(activity)          # deleted spaces free their label
        if now - self._ranked_at >= self.rebalance_s:
            busiest = sorted(activity, key=lambda s: (-activity[s], s))[: self.limit]
            self.labelled = set(busiest)
            self._ranked_at = now
        else:
            for space in sorted(activity, key=lambda s: (-activity[s], s)):
                if len(self.labelled) >= self.limit:
                    break
                self.labelled.add(space)
        return self.labelled
