"""The zmq client against a small fake router: a real ROUTER socket on ipc:// in a thread.

The fake decodes each request with the real wire module, records it, and answers
with whatever the test's handler returns (several replies, or none to drop it).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import zmq

from memspace import errors, wire
from memspace.client import Client, RemoteSpace, ZmqTransport, connect
from memspace.engine.model import Hit, Link, Memory, Page, RememberResult
from memspace.storage.space import Space

POLL_MS = 20
MAX_POLLS = 1500          # the fake stops after 30 s even if a test forgets it
JOIN_S = 10.0


@dataclass
class Received:
    request_id: str
    space: str
    op: str
    meta: dict[str, Any]
    body: dict[str, Any]


Handler = Callable[[Received], list[list[bytes]]]


class FakeRouter:
    """Answers client requests with ``handler(request)``: a list of reply messages to send."""

    def __init__(self, ctx: zmq.Context, url: str) -> None:
        self.url = url
        self.received: list[Received] = []
        self._arrived = threading.Condition()
        self.handler: Handler = lambda req: [wire.encode_reply(req.request_id, {})]
        self._sock = ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for _ in range(MAX_POLLS):
                if self._stop.is_set():
                    return
                if not self._sock.poll(POLL_MS):
                    continue
                peer, *frames = self._sock.recv_multipart()
                req = wire.split_client_request(frames)
                got = Received(req.request_id, req.space, req.op, req.meta,
                               wire.decode_body(req.body))
                with self._arrived:
                    self.received.append(got)
                    self._arrived.notify_all()
                for reply in self.handler(got):
                    self._sock.send_multipart([peer, *reply])
        finally:
            self._sock.close(linger=0)

    def wait_received(self, n: int) -> list[Received]:
        """The requests received once there are at least ``n`` (bounded wait)."""
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.received) >= n, JOIN_S)
            return list(self.received)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(JOIN_S)
        assert not self._thread.is_alive(), "fake router did not stop"


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def router(ctx: zmq.Context, tmp_path) -> Iterator[FakeRouter]:
    fake = FakeRouter(ctx, f"ipc://{tmp_path}/front")
    yield fake
    fake.stop()


@pytest.fixture
def client(router: FakeRouter, ctx: zmq.Context) -> Iterator[Client]:
    c = connect(router.url, timeout=5.0, retries=0, context=ctx)
    yield c
    c.close()


def answer(result: Any) -> Handler:
    return lambda req: [wire.encode_reply(req.request_id, result)]


def fail(code: str, message: str, details: dict[str, Any] | None = None) -> Handler:
    return lambda req: [wire.encode_error(req.request_id, code, message, details)]


MEMORY = {"id": "m1", "content": "met Ana", "confidence": 0.8, "created_at": 10.0,
          "last_access": 12.0, "access_count": 2, "tags": ["people"], "metadata": {"a": 1},
          "links": [{"target": "m2", "weight": 0.9, "kind": "related"}], "tier": "hot"}
HIT = {"id": "m2", "content": "lab", "score": 0.7, "similarity": 0.5, "activation": 0.4,
       "confidence": 1.0, "path": ["m1", "m2"], "depth": 1, "reached": "link", "tags": [],
       "metadata": {}, "tier": "warm"}


# -- what the server receives ---------------------------------------------------------------


def test_remember_sends_only_given_arguments_with_deadline_and_space(router, client):
    router.handler = answer({"id": "m1", "outcome": "stored", "similarity": None, "links": []})
    client.space("alpha").remember(content="met Ana", tags=["people"])
    (req,) = router.received
    assert (req.space, req.op, req.body) == ("alpha", "remember",
                                              {"content": "met Ana", "tags": ["people"]})
    assert req.meta == {"timeout_ms": 5000}
    assert len(req.request_id) == 32 and int(req.request_id, 16) >= 0   # uuid4 hex


def test_numpy_embedding_is_sent_as_a_list_even_when_not_contiguous(router, client):
    router.handler = answer({"id": "m1", "outcome": "stored"})
    matrix = np.arange(12, dtype=np.float64).reshape(3, 4)
    client.space("alpha").remember(embedding=matrix[:, 1], confidence=np.float32(0.5),
                                   request_id="write-1")
    (req,) = router.received
    assert req.body == {"embedding": [1.0, 5.0, 9.0], "confidence": 0.5}
    assert req.request_id == "write-1"


def test_recall_leaves_defaults_out_and_sends_changed_ones(router, client):
    router.handler = answer([])
    alpha = client.space("alpha")
    alpha.recall(query="who?")
    alpha.recall(query="who?", k=5, mode="similarity", threshold=0.2, tags=["x"], max_depth=3)
    assert [r.body for r in router.received] == [
        {"query": "who?"},
        {"query": "who?", "k": 5, "mode": "similarity", "threshold": 0.2, "tags": ["x"]},
    ]


def test_link_forget_count_list_bodies(router, client):
    replies = iter([{"source": "a", "target": "b", "weight": 1.0, "kind": "related"},
                    {"source": "a", "target": "b", "weight": 0.5, "kind": "cause"},
                    {"forgotten": 3}, 7, {"items": [], "next_cursor": None},
                    {"items": [], "next_cursor": None}])
    router.handler = lambda req: [wire.encode_reply(req.request_id, next(replies))]
    alpha = client.space("alpha")
    assert alpha.link("a", "b") == Link("b", 1.0, "related")
    assert alpha.link("a", "b", weight=0.5, kind="cause") == Link("b", 0.5, "cause")
    assert alpha.forget(tags=["old"], before=100.0) == 3
    assert alpha.count() == 7
    alpha.list()
    alpha.list(limit=5, cursor="c1", tier="warm")
    assert [(r.op, r.body) for r in router.received] == [
        ("link", {"source": "a", "target": "b"}),
        ("link", {"source": "a", "target": "b", "weight": 0.5, "kind": "cause"}),
        ("forget", {"tags": ["old"], "before": 100.0}),
        ("count", {}),
        ("list", {}),
        ("list", {"limit": 5, "cursor": "c1", "tier": "warm"}),
    ]


def test_admin_ops_name_the_space_in_the_space_frame(router, client):
    router.handler = answer({"id": "alpha", "state": "REGISTERED"})
    client.create_space("alpha", dimension=8)
    client.create_space("beta-1", settings={"decay": "none"})
    client.delete_space("alpha")
    client.drain("alpha")
    client.hibernate("alpha")
    client.restart("alpha")
    client.repair("alpha")
    client.get_space("alpha")
    assert [(r.space, r.op, r.body) for r in router.received] == [
        ("alpha", "create_space", {"dimension": 8}),
        ("beta-1", "create_space", {"settings": {"decay": "none"}}),
        ("alpha", "delete_space", {}), ("alpha", "drain", {}), ("alpha", "hibernate", {}),
        ("alpha", "restart", {}), ("alpha", "repair", {}), ("alpha", "get_space", {}),
    ]


def test_deployment_ops_and_default_space_send_an_empty_space_frame(router, client):
    replies = iter([[{"id": "default"}], {"spaces": [{"id": "alpha"}]}, {"spaces": []}, 4])
    router.handler = lambda req: [wire.encode_reply(req.request_id, next(replies))]
    assert client.list_spaces() == [{"id": "default"}]
    assert client.list_spaces() == [{"id": "alpha"}]      # also accepts {"spaces": [...]}
    assert client.status() == {"spaces": []}
    assert client.default_space().count() == 4
    assert [(r.space, r.op) for r in router.received] == [
        ("", "list_spaces"), ("", "list_spaces"), ("", "status"), ("", "count")]


def test_invalid_space_id_is_rejected_before_anything_is_sent(router, client):
    for bad in ("Alpha", "a/b", "..", "ab", "", "x" * 65):
        with pytest.raises(errors.InvalidSpaceId) as info:
            client.space(bad)
        assert info.value.details["source"] == "argument"
    with pytest.raises(errors.InvalidSpaceId):
        client.delete_space("../etc")
    router.handler = answer(0)
    client.space("alpha").count()
    assert [(r.space, r.op) for r in router.received] == [("alpha", "count")]


# -- results as dataclasses -----------------------------------------------------------------


def test_results_become_the_engine_dataclasses(router, client):
    replies = iter([
        {"id": "m1", "outcome": "merged", "similarity": 0.97, "links": []},
        [{"id": "m1", "outcome": "stored", "similarity": None, "links": ["m0"]},
         {"id": "m2", "outcome": "stored", "similarity": None, "links": []}],
        [HIT],
        MEMORY,
        {**MEMORY, "embedding": [0.6, 0.8]},
        {"items": [MEMORY], "next_cursor": "m1"},
        {"memories": 1, "wal_bytes": 10},
    ])
    router.handler = lambda req: [wire.encode_reply(req.request_id, next(replies))]
    alpha = client.space("alpha")

    assert alpha.remember(content="x") == RememberResult("m1", "merged", 0.97, ())
    assert alpha.remember_batch(iter([{"content": "a"}, {"content": "b"}])) == [
        RememberResult("m1", "stored", None, ("m0",)), RememberResult("m2", "stored", None, ())]
    (hit,) = alpha.recall(query="lab")
    assert hit == Hit("m2", "lab", 0.7, 0.5, 0.4, 1.0, ("m1", "m2"), (), {}, "warm")
    assert hit.depth == 1 and hit.reached == "link"

    memory = alpha.get("m1")
    assert isinstance(memory, Memory)
    assert (memory.id, memory.tags, memory.links) == ("m1", ("people",), (Link("m2", 0.9),))
    assert memory.embedding.dtype == np.float32 and memory.embedding.shape == (0,)
    with_vector = alpha.get("m1", embedding=True)
    assert with_vector.embedding.dtype == np.float32
    assert with_vector.embedding.tolist() == pytest.approx([0.6, 0.8])

    page = alpha.list(limit=1)
    assert isinstance(page, Page) and page.next_cursor == "m1"
    assert [m.id for m in page.items] == ["m1"]
    assert alpha.stats() == {"memories": 1, "wal_bytes": 10}
    bodies = [(r.op, r.body) for r in router.received]
    assert bodies[1] == ("remember_batch", {"items": [{"content": "a"}, {"content": "b"}]})
    assert bodies[3:5] == [("get", {"id": "m1"}), ("get", {"id": "m1", "embedding": True})]


def test_export_pages_through_cursors_and_import_sends_batches(router, client):
    pages = {None: {"items": [{"id": "a"}, {"id": "b"}], "next_cursor": "b"},
             "b": {"items": [{"id": "c"}], "next_cursor": None}}

    def handle(req: Received) -> list[list[bytes]]:
        if req.op == "export":
            return [wire.encode_reply(req.request_id, pages[req.body.get("cursor")])]
        return [wire.encode_reply(req.request_id, {"imported": len(req.body["items"])})]

    router.handler = handle
    alpha = client.space("alpha")
    assert list(alpha.export(batch=2)) == [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    items = [{"id": f"m{i}", "embedding": np.full(2, i, dtype=np.float32)} for i in range(5)]
    assert alpha.import_(iter(items), batch=2) == 5

    exports = [r.body for r in router.received if r.op == "export"]
    assert exports == [{"limit": 2}, {"limit": 2, "cursor": "b"}]
    imports = [r for r in router.received if r.op == "import"]
    assert [[item["id"] for item in r.body["items"]] for r in imports] == [
        ["m0", "m1"], ["m2", "m3"], ["m4"]]
    assert imports[2].body["items"][0]["embedding"] == [4.0, 4.0]
    assert len({r.request_id for r in imports}) == 3       # one idempotency key per batch


def test_export_refuses_a_cursor_that_does_not_advance(router, client):
    router.handler = answer({"items": [{"id": "a"}], "next_cursor": "a"})
    with pytest.raises(errors.InvalidArgument, match="same cursor"):
        list(client.space("alpha").export(batch=1))
    assert len(router.received) == 2


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code, cls", [
    ("SPACE_NOT_FOUND", errors.SpaceNotFound),
    ("MEMORY_NOT_FOUND", errors.MemoryNotFound),
    ("OVERLOADED", errors.Overloaded),
    ("SPACE_REQUIRED", errors.SpaceRequired),
])
def test_error_replies_raise_the_matching_class(router, client, code, cls):
    router.handler = fail(code, f"{code.lower()} happened", {"space": "alpha"})
    with pytest.raises(cls) as info:
        client.space("alpha").get("m1")
    assert (info.value.code, info.value.message) == (code, f"{code.lower()} happened")
    assert info.value.details == {"space": "alpha"}


def test_a_server_deadline_error_is_not_retried(router, ctx):
    router.handler = fail("DEADLINE_EXCEEDED", "worker took too long")
    with (connect(router.url, timeout=5.0, retries=2, context=ctx) as c,
          pytest.raises(errors.DeadlineExceeded, match="worker took too long")):
        c.space("alpha").count()
    assert len(router.received) == 1


def test_stale_and_malformed_replies_are_dropped(router, client):
    def handle(req: Received) -> list[list[bytes]]:
        return [wire.encode_reply("an-old-request", {"stale": True}),
                [wire.PROTOCOL, b"\x02", b"garbage"],
                wire.encode_reply(req.request_id, 42)]

    router.handler = handle
    assert client.space("alpha").count() == 42
    router.handler = answer(43)
    assert client.space("alpha").count() == 43


def test_retry_resends_the_same_request_id_after_a_drop(router, ctx):
    def drop_first(req: Received) -> list[list[bytes]]:
        if len(router.received) == 1:
            return []
        return [wire.encode_reply(req.request_id, {"id": "m1", "outcome": "stored"})]

    router.handler = drop_first
    with connect(router.url, timeout=0.2, retries=2, context=ctx) as c:
        result = c.space("alpha").remember(content="once")
    assert result == RememberResult("m1", "stored")
    # Two deliveries at least (a slow machine may time out once more); all the same request.
    received = router.wait_received(2)
    assert {r.request_id for r in received} == {received[0].request_id}
    assert [r.body for r in received] == [{"content": "once"}] * len(received)
    assert received[0].meta == {"timeout_ms": 200}


def test_timeout_raises_deadline_exceeded_after_all_attempts(router, ctx):
    router.handler = lambda req: []
    with (connect(router.url, timeout=0.2, retries=1, context=ctx) as c,
          pytest.raises(errors.DeadlineExceeded) as info):
        c.space("alpha").count()
    assert f"is `memspace serve` running at {router.url}?" in info.value.message
    assert info.value.details["attempts"] == 2
    assert [r.request_id for r in router.wait_received(2)] == [info.value.details["request_id"]] * 2


def test_no_server_at_all_is_a_helpful_deadline(tmp_path, ctx):
    url = f"ipc://{tmp_path}/nobody-home"
    with (connect(url, timeout=0.2, retries=0, context=ctx) as c,
          pytest.raises(errors.DeadlineExceeded, match="memspace serve")):
        c.status()


def test_oversize_request_fails_before_sending(router, ctx):
    with connect(router.url, timeout=5.0, retries=0, max_bytes=1000, context=ctx) as c:
        with pytest.raises(errors.PayloadTooLarge):
            c.space("alpha").remember(content="x" * 2000)
        router.handler = answer(1)
        assert c.space("alpha").count() == 1
    assert [r.op for r in router.received] == ["count"]


# -- connecting, closing, threads -----------------------------------------------------------


@pytest.mark.parametrize("url, match", [
    ("udp://127.0.0.1:1", "unsupported url"),
    ("127.0.0.1:7079", "unsupported url"),
])
def test_unsupported_urls_are_invalid_arguments(url, match):
    with pytest.raises(errors.InvalidArgument, match=match):
        connect(url)


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"timeout": -1.0}, {"retries": -1},
                                    {"max_bytes": 0}])
def test_bad_connect_options_are_rejected(tmp_path, ctx, kwargs):
    with pytest.raises(errors.InvalidArgument):
        connect(f"ipc://{tmp_path}/x", context=ctx, **kwargs)


def test_close_closes_the_socket_and_leaks_nothing(tmp_path):
    own = zmq.Context()
    c = connect(f"ipc://{tmp_path}/front", context=own)
    transport = c._transport
    assert isinstance(transport, ZmqTransport) and not transport.closed
    c.close()
    c.close()                                   # idempotent
    assert transport.closed
    with pytest.raises(errors.InvalidArgument, match="closed"):
        c.space("alpha").count()
    # term() blocks while any socket of the context is open: finishing proves none leaked.
    terminated = threading.Thread(target=own.term, daemon=True)
    terminated.start()
    terminated.join(JOIN_S)
    assert not terminated.is_alive()


def test_threads_share_one_client_and_each_gets_its_own_reply(router, client):
    router.handler = lambda req: [wire.encode_reply(req.request_id, req.body["query"])]
    results: dict[int, list[Any]] = {}

    def work(n: int) -> None:
        results[n] = [client.call("alpha", "recall", {"query": f"{n}-{i}"}) for i in range(20)]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_S)
    assert results == {n: [f"{n}-{i}" for i in range(20)] for n in range(4)}


def test_remote_space_has_the_embedded_space_signatures():
    for name in ("remember", "remember_batch", "get", "forget", "link", "recall", "count",
                 "list", "stats", "close"):
        embedded = inspect.signature(getattr(Space, name)).parameters
        remote = inspect.signature(getattr(RemoteSpace, name)).parameters
        for pname, param in embedded.items():
            assert pname in remote, f"{name}: missing {pname}"
            assert (remote[pname].kind, remote[pname].default) == (param.kind, param.default), \
                f"{name}({pname})"
