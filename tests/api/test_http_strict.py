"""A second server with ``require_explicit_space = true`` and a router queue of one request
per space: SPACE_REQUIRED on every route that could fall back, and 429 OVERLOADED (which an
open change feed does not cause)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from http_support import SSE, Gateway, create_space, error_of, start_gateway, vec


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path_factory.mktemp("strict") / "data",
                             MEMSPACE_REQUIRE_EXPLICIT_SPACE="true", MEMSPACE_ROUTER_QUEUE_PER_SPACE="1")


def test_no_space_named_is_space_required(strict: Gateway) -> None:
    http = strict.client()
    for r in (http.post("/v1/memories", json={"content": "x", "embedding": vec(1)}),
              http.post("/v1/recall", json={"query": "x"}),
              http.get("/v1/memories/some-id")):
        err = error_of(r, 400, "SPACE_REQUIRED")
        assert "X-Memory-Space" in err["message"] and "/v1/spaces/{space}/" in err["message"]
        assert "require_explicit_space" in err["message"]
        assert "warning" not in r.headers
    # naming a space in any way works, the default space included
    assert http.post("/v1/memories", json={"content": "x", "embedding": vec(1), "memory_space_id": "default"}
                     ).status_code == 200
    space = create_space(http)
    r = http.post("/v1/memories", json={"id": "q", "content": "y", "embedding": vec(0, 1)}, params={"space": space})
    assert r.status_code == 200 and "warning" not in r.headers
    assert http.get("/v1/memories/q", headers={"X-Memory-Space": space}).json()["content"] == "y"


def test_overloaded_is_429_with_retry_after_and_open_feeds_take_no_room(strict: Gateway) -> None:
    """With router_queue_per_space = 1, one real request waiting at a space makes any other
    request to it OVERLOADED; an open change feed's long poll (a passive request, bounded by
    router_passive_per_space) takes none of that room."""
    http = strict.client()
    space = create_space(http)
    assert http.get(f"/v1/spaces/{space}/memories").status_code == 200   # the worker is up
    admin = strict.server.client(timeout=20.0)
    reader = strict.client(timeout=20.0)
    with reader.stream("GET", f"/v1/spaces/{space}/events") as r:
        assert SSE(r).next().comments[0].startswith("subscribed")
        strict.server.wait_status(admin, space, lambda st: st["inflight"] == 1, "the feed's poll parked",
                                  timeout=20.0)
        for _ in range(5):                  # the parked poll leaves real requests their room
            assert http.get(f"/v1/spaces/{space}/memories").status_code == 200

        # a real long poll (an ordinary events call) takes the one place
        last = admin.call(space, "events", {"after": 0, "wait_ms": 0, "limit": 1})["last_seq"]
        parked: queue.Queue[Any] = queue.Queue()
        poller = threading.Thread(target=lambda: parked.put(
            admin.call(space, "events", {"after": last, "wait_ms": 15_000})), daemon=True)
        poller.start()
        watcher = strict.server.client(timeout=20.0)
        strict.server.wait_status(watcher, space, lambda st: st["inflight"] == 2, "the real poll parked",
                                  timeout=20.0)
        resp = http.get(f"/v1/spaces/{space}/memories")
        err = error_of(resp, 429, "OVERLOADED")
        assert resp.headers["retry-after"] == "1" and space in err["message"]
        # the draining worker answers both parked polls at once
        watcher.hibernate(space)
        assert parked.get(timeout=20.0)["events"] == []
        poller.join(20.0)
        assert not poller.is_alive()
        watcher.close()
    admin.close()
    # other spaces are not affected
    assert http.get("/v1/spaces/default/memories").status_code == 200
