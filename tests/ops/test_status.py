"""The status document (REST /v1/status, `memspace status --json`, client.status()) has a fixed shape."""

from __future__ import annotations

import io
import logging

import httpx
import jsonschema
import numpy as np
import orjson
import pytest

from memspace.logs import configure
from memspace.testing.server import ServerProcess

NUM = {"type": ["number", "null"]}
INT = {"type": ["integer", "null"]}
SPACE = {
    "type": "object",
    "required": ["id", "state", "pid", "generation", "dimension", "uptime_s", "restarts", "restart_reasons",
                 "last_error", "memories", "memories_by_tier", "wal_bytes", "wal_lag_bytes", "checkpoint_at",
                 "rss_bytes", "queued", "inflight", "p50_s", "p99_s", "ops"],
    "properties": {
        "id": {"type": "string"},
        "state": {"enum": ["REGISTERED", "STARTING", "RECOVERING", "READY", "DRAINING", "HIBERNATED", "STOPPED",
                           "BACKOFF", "FAILED", "DELETING"]},
        "pid": INT, "generation": {"type": "integer"}, "dimension": {"type": "integer"},
        "uptime_s": NUM, "restarts": {"type": "integer"}, "restart_reasons": {"type": "object"},
        "last_error": {"type": ["string", "null"]}, "memories": INT,
        "memories_by_tier": {"type": ["object", "null"]}, "wal_bytes": INT, "wal_lag_bytes": INT,
        "checkpoint_at": NUM, "rss_bytes": INT, "queued": {"type": "integer"}, "inflight": {"type": "integer"},
        "p50_s": NUM, "p99_s": NUM, "ops": {"type": "object"},
    },
}
STATUS = {
    "type": "object",
    "required": ["pid", "uptime_s", "data_root", "active_workers", "max_active_workers", "spaces_by_state",
                 "counters", "spaces"],
    "properties": {"spaces": {"type": "array", "items": SPACE}, "active_workers": {"type": "integer"},
                   "spaces_by_state": {"type": "object", "additionalProperties": {"type": "integer"}}},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"MEMSPACE_SPACES_DIMENSION": "16", "MEMSPACE_HEARTBEAT_S": "0.1",
           "MEMSPACE_HEARTBEAT_LIVENESS": "20"}
    with ServerProcess(tmp_path_factory.mktemp("status") / "data", http=True, env=env) as s:
        yield s


def test_status_document_matches_its_schema(server):
    client = server.client()
    client.create_space("stat-a", dimension=16)
    client.create_space("stat-b", dimension=16)
    space = client.space("stat-a")
    rng = np.random.default_rng(0)
    for _ in range(5):
        space.remember(embedding=rng.standard_normal(16).astype(np.float32))
    space.recall(embedding=rng.standard_normal(16).astype(np.float32))
    doc = httpx.get(server.endpoints["http"] + "/v1/status", timeout=30).json()
    jsonschema.validate(doc, STATUS)
    by_id = {s["id"]: s for s in doc["spaces"]}
    a, b = by_id["stat-a"], by_id["stat-b"]
    assert a["state"] == "READY" and a["pid"] and a["ops"]["remember"]["outcomes"] == {"ok": 5}
    assert a["p50_s"] is not None and a["p99_s"] >= a["p50_s"]
    assert b["state"] == "REGISTERED" and b["pid"] is None and b["memories"] is None
    jsonschema.validate(client.status(), STATUS)
    jsonschema.validate(client.get_space("stat-a"), SPACE)


def test_worker_statistics_arrive_with_heartbeats(server):
    client = server.client()
    space = client.space("stat-a")
    total = space.count()
    status = server.wait_status(client, "stat-a", lambda s: s["memories"] == total and s["rss_bytes"],
                                "memories and RSS reported")
    assert status["memories_by_tier"]["hot"] == total and status["wal_bytes"] > 0


def test_json_log_lines_carry_space_and_pid():
    stream = io.StringIO()
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    configure("json", "info", space="alpha", role="worker", stream=stream)
    try:
        logging.getLogger("memspace.test").warning("disk %s", "full")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)
    line = orjson.loads(stream.getvalue().strip())
    assert line["space"] == "alpha" and line["role"] == "worker" and line["msg"] == "disk full"
    assert line["level"] == "warning" and isinstance(line["pid"], int)
