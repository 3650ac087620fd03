"""The SSE change feed against a real server: per-space isolation, resume with Last-Event-ID,
lifecycle events and heartbeats."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from http_support import SSE, Gateway, create_space, error_of, new_space, vec


@contextmanager
def feed(client: httpx.Client, space: str, **headers: str) -> Iterator[SSE]:
    with client.stream("GET", f"/v1/spaces/{space}/events", headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        stream = SSE(r)
        hello = stream.next()   # the stream's start position is fixed once this arrives
        assert hello.event is None and hello.comments[0].startswith(f"subscribed to {space} after ")
        yield stream


def remember(client: httpx.Client, space: str, mid: str, axis: int) -> None:
    r = client.post(f"/v1/spaces/{space}/memories",
                    json={"id": mid, "content": f"{space} {mid}", "embedding": vec(*([0] * axis + [1]))})
    assert r.status_code == 200, r.text


def ids_of(ev) -> list[str]:
    assert ev.event == "remember", ev
    return [m["id"] for m in ev.data["memories"]]


def test_two_subscribers_receive_only_their_own_space(gateway: Gateway) -> None:
    writer = gateway.client()
    alpha, beta = create_space(writer, new_space("fa")), create_space(writer, new_space("fb"))
    a_client, b_client = gateway.client(timeout=20.0), gateway.client(timeout=20.0)
    with feed(a_client, alpha) as fa, feed(b_client, beta) as fb:
        remember(writer, alpha, "a1", 0)
        remember(writer, beta, "b1", 1)
        remember(writer, alpha, "a2", 2)
        no_event = writer.post(f"/v1/spaces/{beta}/links", json={"source": "b1", "target": "b1x"})
        error_of(no_event, 404, "MEMORY_NOT_FOUND")   # a refused write is no change
        remember(writer, beta, "b2", 3)
        writer.post(f"/v1/spaces/{alpha}/links", json={"source": "a1", "target": "a2", "weight": 0.4})
        writer.delete(f"/v1/spaces/{beta}/memories/b1")

        got_a = [fa.next_data() for _ in range(3)]
        assert [ids_of(e) for e in got_a[:2]] == [["a1"], ["a2"]]
        assert got_a[2].event == "link" and got_a[2].data["source"] == "a1" and got_a[2].data["target"] == "a2"
        assert all(e.id == str(e.data["seq"]) for e in got_a)
        assert [int(e.id) for e in got_a] == sorted(int(e.id) for e in got_a)

        got_b = [fb.next_data() for _ in range(3)]
        assert [ids_of(e) for e in got_b[:2]] == [["b1"], ["b2"]]
        assert got_b[2].event == "forget" and got_b[2].data["ids"] == ["b1"]

        # nothing of the other space slipped in between: the next event is each space's own sentinel
        remember(writer, beta, "b-end", 4)
        remember(writer, alpha, "a-end", 5)
        assert ids_of(fa.next_data()) == ["a-end"]
        assert ids_of(fb.next_data()) == ["b-end"]


def test_resume_with_last_event_id_loses_nothing(gateway: Gateway) -> None:
    writer = gateway.client()
    space = create_space(writer, new_space("resume"))
    reader = gateway.client(timeout=20.0)
    with feed(reader, space) as f:
        for i in range(5):
            remember(writer, space, f"r{i}", i)
        first_two = [f.next_data() for _ in range(2)]
    assert [ids_of(e) for e in first_two] == [["r0"], ["r1"]]
    # disconnected; three more writes while nobody listens
    for i in range(5, 8):
        remember(writer, space, f"r{i}", i)
    with feed(reader, space, **{"Last-Event-ID": first_two[-1].id}) as f:
        rest = [f.next_data() for _ in range(6)]
        assert [ids_of(e)[0] for e in rest] == [f"r{i}" for i in range(2, 8)]
        assert [int(e.id) for e in rest] == sorted(int(e.id) for e in rest)
        remember(writer, space, "r-end", 0)
        assert ids_of(f.next_data()) == ["r-end"]   # exactly six: the next one is the new write
    # ?after= works the same way when no Last-Event-ID is sent
    with reader.stream("GET", f"/v1/spaces/{space}/events", params={"after": rest[-2].id}) as r:
        assert ids_of(SSE(r).next_data()) == ["r7"]


def test_heartbeat_and_lifecycle_events(gateway: Gateway) -> None:
    writer = gateway.client()
    space = create_space(writer, new_space("life"))
    remember(writer, space, "l0", 0)
    reader = gateway.client(timeout=20.0)
    with feed(reader, space) as f:
        assert f.next().comments == ["ping"]   # heartbeat after http.sse_heartbeat_s (0.5 s here) of silence
        assert writer.post(f"/v1/spaces/{space}/hibernate").status_code == 200
        seen = []
        for _ in range(50):
            ev = f.next()
            if ev.event == "lifecycle":
                seen.append((ev.data["old"], ev.data["new"]))
                assert ev.id is None and ev.data["space"] == space
                if ev.data["new"] == "HIBERNATED":
                    break
        assert ("READY", "DRAINING") in seen and seen[-1] == ("DRAINING", "HIBERNATED"), seen
        # the open feed keeps polling: the space starts again and still delivers changes
        remember(writer, space, "l1", 1)
        assert ids_of(f.next_data()) == ["l1"]


def test_bad_resume_point_is_400(http: httpx.Client) -> None:
    space = create_space(http)
    err = error_of(http.get(f"/v1/spaces/{space}/events", headers={"Last-Event-ID": "abc"}), 400, "INVALID_ARGUMENT")
    assert "Last-Event-ID" in err["message"]
    err = error_of(http.get(f"/v1/spaces/{space}/events", params={"after": "-3"}), 400, "INVALID_ARGUMENT")
    assert "after" in err["message"]
