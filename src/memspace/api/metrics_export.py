"""The Prometheus text format for the metrics document the router process assembles.

Names and labels are documented in docs/metrics.md; per-space series carry
``memory_space`` (``__other__`` sums the spaces beyond ``max_metric_spaces``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from memspace.metrics import BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _buckets(hist: list[float]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs and the sum, from our compact histogram."""
    out, running = [], 0.0
    for bound, n in zip(BUCKETS, hist):
        running += n
        out.append((repr(float(bound)), running))
    running += hist[len(BUCKETS)]
    out.append(("+Inf", running))
    return out, hist[-2]


def families(doc: dict[str, Any]) -> Iterator[Metric]:
    spaces: dict[str, dict[str, Any]] = doc.get("spaces", {})
    requests = CounterMetricFamily("memspace_requests", "Requests by space, operation and outcome (OK or an "
                                   "error code).", labels=["memory_space", "op", "outcome"])
    latency = HistogramMetricFamily("memspace_request_duration_seconds", "Request latency through the router.",
                                    labels=["memory_space", "op"])
    memories = GaugeMetricFamily("memspace_memories", "Memories per tier.", labels=["memory_space", "tier"])
    wal_bytes = GaugeMetricFamily("memspace_wal_bytes", "Bytes in WAL segments.", labels=["memory_space"])
    wal_lag = GaugeMetricFamily("memspace_wal_lag_bytes", "WAL bytes written since the last checkpoint "
                                "(what a restart would replay).", labels=["memory_space"])
    fsync = HistogramMetricFamily("memspace_wal_fsync_duration_seconds", "Group-commit write + fsync latency.",
                                  labels=["memory_space"])
    age = GaugeMetricFamily("memspace_checkpoint_age_seconds", "Seconds since the last checkpoint.",
                            labels=["memory_space"])
    state = GaugeMetricFamily("memspace_worker_state", "Spaces of this label in each lifecycle state "
                              "(1 for a single space).", labels=["memory_space", "state"])
    restarts = CounterMetricFamily("memspace_worker_restarts", "Worker restarts by reason.",
                                   labels=["memory_space", "reason"])
    rss = GaugeMetricFamily("memspace_worker_rss_bytes", "Resident memory of live workers.", labels=["memory_space"])
    queue = GaugeMetricFamily("memspace_queue_depth", "Requests queued or in flight at the router.",
                              labels=["memory_space"])
    for name, s in sorted(spaces.items()):
        for op, outcome, n in s["requests"]:
            requests.add_metric([name, op, outcome], n)
        for op, hist in sorted(s["latency"].items()):
            buckets, total = _buckets(hist)
            latency.add_metric([name, op], buckets, total)
        for tier, n in sorted(s["memories_by_tier"].items()):
            memories.add_metric([name, tier], n)
        wal_bytes.add_metric([name], s["wal_bytes"])
        wal_lag.add_metric([name], s["wal_lag_bytes"])
        buckets, total = _buckets(s["fsync"])
        fsync.add_metric([name], buckets, total)
        if s.get("checkpoint_age_s") is not None:
            age.add_metric([name], s["checkpoint_age_s"])
        for st, n in sorted(s["states"].items()):
            state.add_metric([name, st], n)
        for reason, n in sorted(s["restarts"].items()):
            restarts.add_metric([name, reason], n)
        rss.add_metric([name], s["rss_bytes"])
        queue.add_metric([name], s["queue_depth"])
    yield from (requests, latency, memories, wal_bytes, wal_lag, fsync, age, state, restarts, rss, queue)

    g = doc.get("global", {})
    by_state = GaugeMetricFamily("memspace_spaces", "Registered spaces by lifecycle state.", labels=["state"])
    for st, n in sorted(g.get("spaces_by_state", {}).items()):
        by_state.add_metric([st], n)
    yield by_state
    yield GaugeMetricFamily("memspace_active_workers", "Worker processes alive.", value=g.get("active_workers", 0))
    yield CounterMetricFamily("memspace_spawns", "Workers started.", value=g.get("spawns", 0))
    yield CounterMetricFamily("memspace_hibernations", "Workers hibernated.", value=g.get("hibernations", 0))
    yield CounterMetricFamily("memspace_worker_crashes", "Worker crashes (all spaces).", value=g.get("crashes", 0))
    yield CounterMetricFamily("memspace_default_space_fallback", "Requests that named no space and used the "
                              "default space.", value=g.get("default_space_fallbacks", 0))
    yield GaugeMetricFamily("memspace_router_queue_depth", "Requests waiting at the router for a worker.",
                            value=g.get("router_queue_depth", 0))
    yield GaugeMetricFamily("memspace_router_inflight", "Requests sent to workers, not yet answered.",
                            value=g.get("router_inflight", 0))
    rejected = CounterMetricFamily("memspace_router_rejected", "Requests answered with an error before reaching a "
                                   "space (unknown space, bad frame...).", labels=["code"])
    for code, n in sorted(g.get("router_rejected", {}).items()):
        rejected.add_metric([code], n)
    yield rejected
    labelled = sum(1 for name in spaces if name != "__other__")
    yield GaugeMetricFamily("memspace_metric_spaces_labelled", "Spaces with their own memory_space label.",
                            value=labelled)


class _Once:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def collect(self) -> Iterator[Metric]:
        return families(self.doc)


def render(doc: dict[str, Any]) -> bytes:
    """The Prometheus exposition text for one metrics document."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Once(doc))
    return generate_latest(registry)
