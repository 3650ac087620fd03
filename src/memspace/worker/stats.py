"""Per-operation counters and latency histograms kept by a worker for its own space."""

from __future__ import annotations

import bisect
from typing import Any

#: Latency bucket upper bounds in seconds (Prometheus-style, cumulative on export).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class OpStats:
    def __init__(self) -> None:
        self._outcomes: dict[str, dict[str, int]] = {}
        self._latency: dict[str, list[float]] = {}   # per op: bucket counts..., +Inf count, sum

    def record(self, op: str, outcome: str, seconds: float) -> None:
        by_outcome = self._outcomes.setdefault(op, {})
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
        hist = self._latency.get(op)
        if hist is None:
            hist = self._latency[op] = [0.0] * (len(BUCKETS) + 2)
        hist[bisect.bisect_left(BUCKETS, seconds)] += 1
        hist[-1] += seconds

    def snapshot(self) -> dict[str, Any]:
        return {
            op: {"outcomes": dict(outcomes), "latency": list(self._latency.get(op, ()))}
            for op, outcomes in self._outcomes.items()
        }
