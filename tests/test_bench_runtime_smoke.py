"""Smoke run of benchmarks/bench_runtime.py --quick: it runs, and reports every metric.

No timing is asserted (speed is the benchmark's business, not the test's); only
that each metric is present and positive, and the counts that must be exact.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_runtime.py"

QUICK_SPACES = (1, 10)          # runtime_sections.QUICK.throughput_spaces
QUICK_MANY = 20                 # runtime_sections.QUICK.many_spaces
QUICK_IDLE = 10                 # runtime_sections.QUICK.idle_workers


def expected_positive() -> list[str]:
    keys = []
    for target in ("direct", "relay", "memspace_count", "memspace_recall"):
        keys += [f"latency.{target}.{s}" for s in ("p50_us", "p99_us", "mean_us", "cpu_worker_us_per_req",
                                                   "cpu_client_us_per_req")]
        if target != "direct":
            keys.append(f"latency.{target}.cpu_hop_us_per_req")
    for ratio in ("relay_vs_direct", "count_vs_relay", "recall_vs_relay"):
        keys += [f"latency.ratio.{ratio}.{s}" for s in ("p50", "p99", "paired_p50")]
    for n in QUICK_SPACES:
        keys += [f"throughput.s{n}.{s}" for s in ("relay_rps", "count_rps", "recall_rps",
                                                 "ratio_count_vs_relay", "ratio_recall_vs_relay",
                                                 "relay_hop_cpu_pct", "count_hop_cpu_pct", "recall_hop_cpu_pct")]
    for what in ("create", "first_request", "total", "wake"):
        keys += [f"spawn.{what}.{s}" for s in ("p50_ms", "p99_ms", "max_ms")]
    keys += [f"memory.empty_worker.{s}" for s in ("uss_median_mb", "uss_max_mb", "rss_median_mb")]
    keys += [f"idle.{s}" for s in ("workers", "uss_median_mb", "uss_max_mb", "rss_median_mb", "uss_total_mb",
                                   "window_s", "cpu_workers_pct_core", "cpu_router_pct_core")]
    keys += [f"many.{s}" for s in ("spaces", "activate_s", "first_round_ok", "answering", "live_workers",
                                   "uss_total_mb", "rss_total_mb", "uss_median_mb", "router_rss_mb",
                                   "cpu_workers_pct_core", "cpu_router_pct_core", "burst_s", "burst_ok")]
    keys += [f"elapsed.{s}_s" for s in ("latency", "spawn", "throughput", "idle", "many", "total")]
    return keys


def test_quick_run_reports_every_metric(tmp_path: Path) -> None:
    out = tmp_path / "runtime.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    result = orjson.loads(out.read_bytes())
    metrics = result["metrics"]

    missing = [k for k in expected_positive() if k not in metrics]
    assert missing == []
    not_positive = {k: metrics[k] for k in expected_positive() if not metrics[k] > 0}
    assert not_positive == {}
    # the fork server may not run at all in an idle window: present, never negative
    assert metrics["idle.cpu_other_pct_core"] >= 0
    # crash counts are findings, not failures of the benchmark
    assert metrics["many.paced_crashes"] >= 0
    assert metrics["many.burst_crashes"] >= 0

    assert metrics["throughput.error_replies"] == 0
    assert metrics["idle.workers"] == QUICK_IDLE
    assert metrics["many.spaces"] == QUICK_MANY
    assert metrics["many.first_round_ok"] == QUICK_MANY
    assert metrics["many.answering"] == QUICK_MANY
    assert metrics["many.live_workers"] == QUICK_MANY
    assert metrics["many.burst_ok"] == QUICK_MANY
    assert metrics["many.burst_errors"] == 0
    assert metrics["many.burst_missing"] == 0

    assert result["plan"]["quick"] is True
    goals = {g["key"]: g for g in result["goals"]}
    assert set(goals) >= {"latency.ratio.count_vs_relay.p50", "spawn.total.p50_ms", "spawn.wake.p50_ms",
                          "idle.uss_median_mb", "idle.cpu_workers_pct_core",
                          *(f"throughput.s{n}.ratio_count_vs_relay" for n in QUICK_SPACES)}
    for g in goals.values():
        assert g["value"] == metrics[g["key"]]
    # the tables went to stdout too
    for title in ("1. round trip", "2. pipelined", "3. spawn", "4a.", "4b.", "goals"):
        assert title in proc.stdout
