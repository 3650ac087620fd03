"""A second server with ``require_explicit_space = true`` and a router queue of one request
per space: SPACE_REQUIRED on every route that could fall back, and 429 OVERLOADED."""

from __future__ import annotations

from collections.abc import Iterator

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


def test_overloaded_is_429_with_retry_after(strict: Gateway) -> None:
    """An open change feed keeps one long poll in flight at the router; with
    router_queue_per_space = 1 any other request to that space is refused OVERLOADED."""
    http = strict.client()
    space = create_space(http)
    assert http.get(f"/v1/spaces/{space}/memories").status_code == 200   # the worker is up
    reader = strict.client(timeout=20.0)
    with reader.stream("GET", f"/v1/spaces/{space}/events") as r:
        assert SSE(r).next().comments[0].startswith("subscribed")
        # the feed's long poll follows its first (immediate) call within moments; bounded attempts
        statuses = []
        for _ in range(500):
            resp = http.get(f"/v1/spaces/{space}/memories")
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                break
        err = error_of(resp, 429, "OVERLOADED")
        assert resp.headers["retry-after"] == "1" and space in err["message"]
        assert set(statuses) <= {200, 429}
    # other spaces are not affected
    assert http.get("/v1/spaces/default/memories").status_code == 200
