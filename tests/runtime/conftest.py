from __future__ import annotations

import time
from typing import Callable

import pytest

from memspace.testing.server import ServerProcess

#: Fast lifecycle timings so crash and hang tests finish quickly; tests never assert on time.
FAST = {
    "MEMSPACE_HEARTBEAT_S": "0.2",
    "MEMSPACE_HEARTBEAT_LIVENESS": "10",   # 2 s: a busy CI machine must not look hung
    "MEMSPACE_RESTART_BACKOFF_INITIAL_S": "0.05",
    "MEMSPACE_RESTART_BACKOFF_MAX_S": "0.5",
    "MEMSPACE_SPACES_DIMENSION": "32",
    "MEMSPACE_DRAIN_TIMEOUT_S": "10",
}


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("shared") / "data", env=FAST) as server:
        yield server


@pytest.fixture
def make_server(tmp_path):
    """Start servers with extra env; each is stopped (and checked) at the end of the test."""
    started: list[ServerProcess] = []

    def make(name: str = "data", **env: str) -> ServerProcess:
        server = ServerProcess(tmp_path / name, env={**FAST, **env}).start()
        started.append(server)
        return server

    yield make
    for server in started:
        if server.proc is not None and server.proc.poll() is None:
            code = server.stop()
            assert code == 0, server.log_tail()


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    """Poll ``predicate`` until truthy; a safety-net timeout, not a synchronisation sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def space_status(client, space: str) -> dict:
    return client.get_space(space)
