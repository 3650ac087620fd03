"""Metric values after known traffic, the __other__ guard, monotonic counters across a worker kill."""

from __future__ import annotations

import os
import re
import signal

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memspace.testing.server import ServerProcess

ENV = {"MEMSPACE_SPACES_DIMENSION": "16", "MEMSPACE_MAX_METRIC_SPACES": "2", "MEMSPACE_HEARTBEAT_S": "0.2",
       "MEMSPACE_HEARTBEAT_LIVENESS": "10",
       "MEMSPACE_RESTART_BACKOFF_INITIAL_S": "0.05"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("metrics") / "data", http=True, env=ENV) as s:
        yield s


def scrape(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(server.endpoints["http"] + "/metrics", timeout=30).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_request_counts_per_space_are_exact(server):
    client = server.client()
    rng = np.random.default_rng(3)
    for name, writes, recalls in (("busy-a", 7, 3), ("busy-b", 4, 2)):
        client.create_space(name, dimension=16)
        space = client.space(name)
        for _ in range(writes):
            space.remember(embedding=rng.standard_normal(16).astype(np.float32))
        for _ in range(recalls):
            space.recall(embedding=rng.standard_normal(16).astype(np.float32))
        with pytest.raises(Exception):
            space.get("missing")
    samples = scrape(server)
    assert value(samples, "memspace_requests_total", memory_space="busy-a", op="remember", outcome="OK") == 7
    assert value(samples, "memspace_requests_total", memory_space="busy-a", op="recall", outcome="OK") == 3
    assert value(samples, "memspace_requests_total", memory_space="busy-a", op="get",
                 outcome="MEMORY_NOT_FOUND") == 1
    assert value(samples, "memspace_requests_total", memory_space="busy-b", op="remember", outcome="OK") == 4
    assert value(samples, "memspace_request_duration_seconds_count", memory_space="busy-b", op="recall") == 2
    assert value(samples, "memspace_worker_state", memory_space="busy-a", state="READY") == 1
    assert value(samples, "memspace_active_workers") >= 2


def test_spaces_beyond_the_limit_are_summed_under_other(server):
    client = server.client()
    for name in ("quiet-1", "quiet-2", "quiet-3"):
        client.create_space(name, dimension=16)
        client.space(name).count()
    samples = scrape(server)
    labels = {dict(k[1]).get("memory_space") for k in samples if k[0] == "memspace_requests_total"}
    assert labels <= {"busy-a", "busy-b", "__other__"}
    assert "__other__" in labels
    # the three quiet spaces' counts (and the default space's, if any) add up under __other__
    assert value(samples, "memspace_requests_total", memory_space="__other__", op="count", outcome="OK") == 3
    assert value(samples, "memspace_metric_spaces_labelled") == 2
    assert value(samples, "memspace_spaces", state="READY") >= 5


def test_counters_do_not_go_backwards_when_a_worker_is_killed(server):
    client = server.client()
    space = client.space("busy-a")
    before = value(scrape(server), "memspace_requests_total", memory_space="busy-a", op="remember", outcome="OK")
    pid = client.get_space("busy-a")["pid"]
    os.kill(pid, signal.SIGKILL)
    space.remember(content="after the kill")          # waits for the replacement worker
    samples = scrape(server)
    assert value(samples, "memspace_requests_total", memory_space="busy-a", op="remember", outcome="OK") == before + 1
    assert value(samples, "memspace_worker_restarts_total", memory_space="busy-a", reason="signal SIGKILL") == 1
    assert value(samples, "memspace_worker_crashes_total") >= 1


def test_default_space_fallbacks_are_counted(server):
    before = value(scrape(server), "memspace_default_space_fallback_total")
    server.client().default_space().count()
    assert value(scrape(server), "memspace_default_space_fallback_total") == before + 1


def test_worker_log_lines_carry_space_id_and_pid(server):
    client = server.client()
    pid = client.get_space("busy-b")["pid"]
    lines = server.stderr_path.read_text().splitlines()
    mine = [line for line in lines if re.search(rf"worker\[{pid}\] space=busy-b ", line)]
    assert mine, "no worker log line names its space and pid"
    transitions = [line for line in lines if "space busy-b: STARTING" in line or "space busy-b: REGISTERED" in line]
    assert transitions, "the supervisor logs lifecycle transitions"
