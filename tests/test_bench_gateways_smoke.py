"""Smoke run of benchmarks/bench_gateways.py --quick: it runs, and reports every metric.

No timing is asserted (speed is the benchmark's business, not the test's): only that each
metric is present and positive, that no request failed, and that the goals carry the
measured values.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_gateways.py"

TRANSPORTS = ("native", "http", "grpc")
GATEWAY_PATHS = ("http", "grpc", "http_lean")
ROLES = ("router", "workers", "client")


def expected_finite() -> list[str]:
    """Measured, but zero or negative is a possible outcome: a tail difference (the native
    path's p99 can exceed a gateway's in a noisy run) and CPU of an idle process."""
    keys = [f"latency.{t}_minus_native.p99_ms" for t in GATEWAY_PATHS]
    return keys + [f"idle.{p}_cpu_pct" for p in ("http_gateway", "grpc_gateway", "router", "worker")]


def expected_positive() -> list[str]:
    keys = []
    for t in (*TRANSPORTS, "http_lean"):
        keys += [f"latency.{t}.{s}" for s in ("p50_ms", "p99_ms", "mean_ms")]
        keys += [f"latency.{t}.cpu_{role}_us_per_req" for role in ROLES]
    for t in GATEWAY_PATHS:
        keys.append(f"latency.{t}.cpu_gateway_us_per_req")
        keys += [f"latency.{t}_minus_native.{s}" for s in ("p50_ms", "paired_p50_ms")]
    keys.append("latency.grpc_vs_http_added")
    for case in ("one", "many"):
        for t in TRANSPORTS:
            keys.append(f"throughput.{case}.{t}.rps")
            keys += [f"throughput.{case}.{t}.cpu_{role}_us_per_req" for role in ROLES]
        for g in ("http", "grpc"):
            keys += [f"throughput.{case}.{g}.cpu_gateway_us_per_req", f"throughput.{case}.{g}_vs_native"]
    keys += [f"elapsed.{s}_s" for s in ("fill", "idle", "latency", "throughput", "total")]
    return keys


@pytest.mark.timeout(300)
def test_quick_run_reports_every_metric(tmp_path: Path) -> None:
    out = tmp_path / "gateways.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--no-profile", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    result = orjson.loads(out.read_bytes())
    metrics = result["metrics"]

    missing = [k for k in expected_positive() if k not in metrics]
    assert missing == []
    not_positive = {k: metrics[k] for k in expected_positive() if not metrics[k] > 0}
    assert not_positive == {}
    assert [k for k in expected_finite() if k not in metrics] == []
    assert {k: metrics[k] for k in expected_finite() if not math.isfinite(metrics[k])} == {}
    assert all(metrics[f"idle.{p}_cpu_pct"] >= 0 for p in ("http_gateway", "grpc_gateway", "router", "worker"))
    # the native path runs through no gateway
    assert "latency.native.cpu_gateway_us_per_req" not in metrics
    assert "throughput.one.native.cpu_gateway_us_per_req" not in metrics
    # every throughput request got its k hits
    assert metrics["throughput.errors"] == 0

    assert result["benchmark"] == "gateways"
    assert result["plan"]["quick"] is True
    assert result["profiles"] == {}
    goals = {g["key"]: g for g in result["goals"]}
    assert set(goals) == {"latency.http_minus_native.p50_ms", "latency.grpc_minus_native.p50_ms",
                          "latency.grpc_vs_http_added"}
    for g in goals.values():
        assert g["value"] == metrics[g["key"]]
    for title in ("1. recall", "2. recall requests/s", "goals"):
        assert title in proc.stdout


def test_profile_summary_counts_stages_libraries_and_leaves() -> None:
    saved = list(sys.path)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_gateways as bg
    finally:
        sys.path[:] = saved
    app = "run (/x/lib/python3.11/asyncio/base_events.py:1);FastAPI.__call__ (/v/site-packages/fastapi/app.py:9)"
    raw = "\n".join([
        f"{app};raw_decode (/x/lib/python3.11/json/decoder.py:353) 3",
        f"{app};validate (/v/site-packages/pydantic/main.py:5) 1",
        "garbage line without a count",
    ])
    summary = bg.summarise_profile(raw)
    assert summary["samples"] == 4
    assert dict(summary["self_by_library_pct"]) == {"json": 75.0, "pydantic": 25.0}
    assert summary["self_by_function_pct"][0] == ("raw_decode (json/decoder.py:353)", 75.0)
    stages = dict(summary["stages_pct"])
    assert stages["ASGI app (FastAPI/Starlette, all of it)"] == 100.0
    assert stages["JSON decode of the request body (stdlib json)"] == 75.0
    assert stages["pydantic validation"] == 25.0
    assert bg.summarise_profile("") == {"samples": 0}
