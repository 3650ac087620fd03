"""Helpers for the HTTP gateway tests: real ``memspace serve`` processes, httpx clients, SSE.

:func:`start_gateway` runs ``python -m memspace serve --data-root <tmp> --http 127.0.0.1:0
--grpc off --zmq tcp://127.0.0.1:0``; endpoints come from its
start-up lines and ``<tmp>/endpoints.json`` (bounded wait, no sleeps). Teardown
sends SIGTERM, waits for exit code 0 and checks that no process of the tree
(serve, fork server, workers, gateways) is left.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from memspace.testing.server import ServerProcess

DIM = 8
#: Small limits so the limit tests stay cheap; the engine's content limit stays below the body limit.
BASE_ENV = {
    "MEMSPACE_SPACES_DIMENSION": str(DIM),
    "MEMSPACE_LIMITS_MAX_REQUEST_BYTES": str(256 * 1024),
    "MEMSPACE_LIMITS_MAX_CONTENT_BYTES": str(16 * 1024),
    "MEMSPACE_LIMITS_MAX_K": "50",
    "MEMSPACE_HTTP_SSE_HEARTBEAT_S": "0.5",
    "MEMSPACE_DRAIN_TIMEOUT_S": "10",
    "MEMSPACE_HEARTBEAT_S": "0.2",
    "MEMSPACE_HEARTBEAT_LIVENESS": "10",   # 2 s: a busy machine must not look hung
}

_names = itertools.count()


def new_space(prefix: str = "s") -> str:
    """A space id not used before in this session (test order independent)."""
    return f"{prefix}-{os.getpid() % 1000}-{next(_names)}"


@dataclass
class Gateway:
    server: ServerProcess
    url: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30.0)
        c = httpx.Client(base_url=self.url, **kwargs)
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            c.close()


def start_gateway(root: Any, **env: str) -> Iterator[Gateway]:
    server = ServerProcess(root, http=True, env={**BASE_ENV, **env})
    server.start()
    url = orjson.loads((server.data_root / "endpoints.json").read_bytes())["http"]
    assert url == server.endpoints["http"] and url.startswith("http://127.0.0.1:")
    gw = Gateway(server, url)
    try:
        yield gw
    finally:
        gw.close()
        if server.proc is not None and server.proc.poll() is None:
            code = server.stop()   # raises if any process of the tree is left
            assert code == 0, f"memspace serve exited with {code}: {server.log_tail()}"
        else:
            server.kill()
            pytest.fail(f"memspace serve died during the tests: {server.log_tail()}")


def create_space(client: httpx.Client, space: str | None = None, **body: Any) -> str:
    space = space or new_space()
    r = client.post("/v1/spaces", json={"id": space, "dimension": DIM, **body})
    assert r.status_code == 201, r.text
    return space


def vec(*values: float) -> list[float]:
    """An embedding of the test dimension: ``values`` padded with zeros."""
    out = [float(v) for v in values] + [0.0] * (DIM - len(values))
    return out[:DIM]


def error_of(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert ``r`` is the error envelope with ``status`` and ``code``; return the error."""
    assert r.status_code == status, f"{r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["details"], dict), err
    return err


# -- Server-Sent Events ------------------------------------------------------------------------


@dataclass
class Event:
    event: str | None = None
    id: str | None = None
    data: Any = None
    comments: list[str] = field(default_factory=list)


class SSE:
    """Reads one ``text/event-stream`` response event by event (comments kept on the event they
    precede; a bare comment block is returned as an Event with ``event=None``)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()

    def next(self) -> Event:
        ev = Event()
        seen = False
        for line in self.lines:
            if line == "":
                if seen:
                    return ev
                continue
            seen = True
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                ev.comments.append(value)
            elif name == "event":
                ev.event = value
            elif name == "id":
                ev.id = value
            elif name == "data":
                ev.data = orjson.loads(value)
        raise EOFError("the event stream ended")

    def next_data(self, skip: tuple[str | None, ...] = (None, "lifecycle")) -> Event:
        """The next event that is not a heartbeat/comment or a skipped kind."""
        for _ in range(10_000):
            ev = self.next()
            if ev.event not in skip:
                return ev
        raise AssertionError("no data event in 10000 events")
