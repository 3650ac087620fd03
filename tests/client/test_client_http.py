"""``memspace.connect("http://...")``: the same Client over the REST API of a real ``memspace serve``.

One server per module (HTTP gateway on, zmq on): every method is checked to give
over HTTP what it gives over zmq for the same data (written over one transport,
read over the other). Retries and non-envelope replies are provoked by
:class:`Interposer`, a small HTTP server between the client and the gateway that
forwards requests unless told to answer or drop one.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

import memspace
from memspace import errors
from memspace.client import Client, RemoteSpace
from memspace.client_http import HttpTransport
from memspace.engine.model import Link
from memspace.testing.server import ServerProcess

DIM = 8
ENV = {"MEMSPACE_SPACES_DIMENSION": str(DIM), "MEMSPACE_HEARTBEAT_S": "0.2",
       "MEMSPACE_HEARTBEAT_LIVENESS": "10", "MEMSPACE_DRAIN_TIMEOUT_S": "10"}
CLI_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("http-client") / "data", http=True, env=ENV) as s:
        yield s


@pytest.fixture(scope="module")
def h(server: ServerProcess) -> Iterator[Client]:
    with memspace.connect(server.endpoints["http"], timeout=30.0) as c:
        yield c


@pytest.fixture(scope="module")
def z(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


_names = iter(range(10_000))


def new_space(client: Client, prefix: str = "hc") -> str:
    name = f"{prefix}-{next(_names)}"
    assert client.create_space(name, dimension=DIM)["created"] is True
    return name


def unit(*values: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def memory_dict(m: memspace.client.Memory) -> dict[str, Any]:
    d = m.to_dict()
    d["embedding"] = m.embedding.tolist()
    return d


def contract_class(err: errors.MemspaceError) -> type:
    """The class from memspace.errors an error is (the zmq client raises wire subclasses of them)."""
    return next(c for c in type(err).__mro__ if c.__module__ == "memspace.errors")


def caught(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> errors.MemspaceError:
    with pytest.raises(errors.MemspaceError) as info:
        fn(*args, **kwargs)
    return info.value


# -- connecting ----------------------------------------------------------------------------------


def test_connect_http_gives_a_client_over_http_transport(server: ServerProcess) -> None:
    url = server.endpoints["http"]
    with memspace.connect(url + "/", timeout=5.0, retries=1, token="t") as c:
        transport = c._transport
        assert isinstance(transport, HttpTransport)
        assert c.url == url and transport.retries == 1 and transport.token == "t"
        assert repr(transport) == f"<HttpTransport {url}>"
    assert transport.closed and repr(transport).endswith(" closed>")
    with pytest.raises(errors.InvalidArgument, match="context is a zmq option"):
        memspace.connect(url, context=object())
    with pytest.raises(errors.InvalidArgument, match="invalid url"):
        memspace.connect("http://")
    with pytest.raises(errors.InvalidArgument, match="retries"):
        memspace.connect(url, retries=-1)


def test_calls_after_close_are_invalid_arguments(server: ServerProcess) -> None:
    c = memspace.connect(server.endpoints["http"])
    assert c.status()["spaces"]
    c.close()
    c.close()                                  # idempotent
    with pytest.raises(errors.InvalidArgument, match="is closed"):
        c.status()


# -- same results over both transports -----------------------------------------------------------


def test_memory_ops_agree_across_transports(h: Client, z: Client) -> None:
    name = new_space(h)
    hs, zs = h.space(name), z.space(name)
    first = hs.remember(content="met Ana at the lab", embedding=unit(1, 0.1), id="m-1", confidence=0.8,
                        tags=["people", "lab"], metadata={"source": "chat", "n": None})
    assert first == memspace.client.RememberResult("m-1", "stored", None, ())
    batch = zs.remember_batch([{"id": "m-2", "content": "Bo runs the lab", "embedding": unit(0.2, 1)},
                               {"id": "m-3", "content": "lunch at noon", "embedding": unit(0, 0, 1)}])
    assert [r.id for r in batch] == ["m-2", "m-3"]
    merged = hs.remember(content="met Ana at the lab", embedding=unit(1, 0.1))
    assert merged.id == "m-1" and merged.outcome == "merged"
    link = hs.link("m-1", "m-3", weight=0.7, kind="same-day")
    assert link == memspace.client.Link("m-3", 0.7, "same-day")
    assert zs.link("m-3", "m-2") == memspace.client.Link("m-2", 1.0, "related")

    for embedding in (False, True):
        for mid in ("m-1", "m-2", "m-3"):
            over_http, over_zmq = hs.get(mid, embedding=embedding), zs.get(mid, embedding=embedding)
            assert memory_dict(over_http) == memory_dict(over_zmq)
    got = hs.get("m-1")
    assert got.tags == ("people", "lab") and got.metadata == {"source": "chat", "n": None}
    assert got.links == (memspace.client.Link("m-3", 0.7, "same-day"),) and got.embedding.size == 0
    assert hs.get("m-1", embedding=True).embedding.shape == (DIM,)

    assert hs.count() == zs.count() == 3
    assert [hs.count(t) for t in ("hot", "warm", "cold")] == [zs.count(t) for t in ("hot", "warm", "cold")] \
        == [3, 0, 0]
    assert hs.stats() == zs.stats()
    assert hs.stats()["memories"] == 3

    def pages(space: RemoteSpace) -> list[Any]:
        out, cursor = [], None
        for _ in range(10):
            page = space.list(limit=2, cursor=cursor, embedding=True)
            out.append(([memory_dict(m) for m in page.items], page.next_cursor))
            cursor = page.next_cursor
            if cursor is None:
                return out
        raise AssertionError("more pages than memories")

    assert pages(hs) == pages(zs)
    assert [len(items) for items, _ in pages(hs)] == [2, 1]
    assert [m.id for m in hs.list(tier="hot").items] == ["m-1", "m-2", "m-3"]
    assert hs.list(tier="cold").items == []

    exported = list(hs.export(batch=2))
    assert exported == list(zs.export(batch=2))
    assert [m["id"] for m in exported] == ["m-1", "m-2", "m-3"] and len(exported[0]["embedding"]) == DIM

    # recall reinforces what it returns, so each transport recalls in its own copy of the space
    copies = {}
    for client in (h, z):
        copies[client] = client.space(new_space(client))
        copies[client].import_(exported)
    for kwargs in ({"embedding": unit(1, 0.1), "k": 3, "mode": "similarity"},
                   {"query": "Ana at the lab", "k": 2},
                   {"embedding": unit(1, 0.1), "k": 3, "tags": ["lab"]},
                   {"embedding": unit(1, 0.1), "k": 3, "threshold": 0.9}):
        over_http, over_zmq = copies[h].recall(**kwargs), copies[z].recall(**kwargs)
        assert [(x.id, x.content, x.similarity, x.path) for x in over_http] == \
               [(x.id, x.content, x.similarity, x.path) for x in over_zmq]
        assert over_http and all(isinstance(x, memspace.client.Hit) for x in over_http)
    spread = hs.recall(embedding=unit(1, 0.1), k=3, threshold=0.9)
    assert spread[0].id == "m-1" and ("m-1", "m-3") in [x.path for x in spread]

    assert hs.forget("m-3") == 1
    for space in (hs, zs):
        with pytest.raises(errors.MemoryNotFound, match="m-3"):
            space.forget("m-3")
    assert hs.forget(tags=["people"]) == 1
    assert zs.count() == 1
    assert hs.forget(ids=["m-2"]) == 1
    assert hs.count() == zs.count() == 0
    with pytest.raises(errors.InvalidArgument, match="either id or ids"):
        hs.forget("m-1", ids=["m-2"])

    odd = "Note:ana@lab.1-x_y"                     # every character a memory id may have
    zs.remember(content="odd id", embedding=unit(1), id=odd)
    assert hs.get(odd).id == odd and hs.forget(odd) == 1 and zs.count() == 0


def test_import_keeps_ids_embeddings_and_links(h: Client, z: Client) -> None:
    source = new_space(z)
    zs = z.space(source)
    zs.remember(content="one", embedding=unit(1), id="a-1")
    zs.remember(content="two", embedding=unit(0, 1), id="a-2", links=[{"target": "a-1", "weight": 0.5}])
    exported = list(zs.export())
    target = new_space(h)
    assert h.space(target).import_(exported) == 2
    assert list(z.space(target).export()) == exported          # restored exactly, times and counts too
    # a link to a memory of a later batch is kept, over either transport
    forward = [{**exported[1], "id": "b-0", "links": [{"target": "b-9", "weight": 1.0, "kind": "related"}]}]
    for client in (h, z):
        third = new_space(client)
        assert client.space(third).import_(forward) == 1
        assert client.space(third).get("b-0").links == (Link("b-9", 1.0, "related"),)
    # errors name the memory alike (the gateway adds its line)
    for client in (h, z):
        with pytest.raises(errors.InvalidArgument, match=r"items\[1\]\.confidence"):
            client.space(target).import_([exported[0], {**exported[1], "confidence": 2}])


def test_admin_ops_agree_across_transports(server: ServerProcess, h: Client, z: Client) -> None:
    name = f"hc-admin-{next(_names)}"
    made = h.create_space(name, dimension=DIM, settings={"decay": "none"})
    assert made["created"] is True and made["space"]["id"] == name
    assert made["space"]["settings"] == {"decay": "none"}
    again = z.create_space(name, dimension=DIM, settings={"decay": "none"})
    assert again["created"] is False
    assert h.create_space(name, dimension=DIM, settings={"decay": "none"})["created"] is False
    for client in (h, z):
        with pytest.raises(errors.SpaceExists):
            client.create_space(name, dimension=DIM * 2)

    stable = ("id", "state", "dimension", "settings", "created_at", "generation", "restarts")
    assert {k: h.get_space(name)[k] for k in stable} == {k: z.get_space(name)[k] for k in stable}
    assert [s["id"] for s in h.list_spaces()] == [s["id"] for s in z.list_spaces()]
    assert name in {s["id"] for s in h.list_spaces()}
    hst, zst = h.status(), z.status()
    assert set(hst) == set(zst) and hst["pid"] == zst["pid"] == server.proc.pid
    assert [s["id"] for s in hst["spaces"]] == [s["id"] for s in zst["spaces"]]
    assert h.call(name, "status")["id"] == name

    h.space(name).remember(content="wake the worker", embedding=unit(1))
    assert h.drain(name)["state"] == "STOPPED"
    assert z.get_space(name)["state"] == "STOPPED"
    repaired = h.repair(name)
    assert repaired["space"]["id"] == name and "repair" in repaired
    assert h.restart(name)["state"] == "READY"
    assert h.hibernate(name)["state"] in ("HIBERNATED", "STOPPED")
    assert h.space(name).count() == 1          # wakes up again
    receipt = h.delete_space(name)
    assert receipt["space"] == name and receipt["deleted"] is True and receipt["memories"] == 1
    with pytest.raises(errors.SpaceNotFound):
        z.get_space(name)


def test_default_space_remember_get_recall(h: Client, z: Client) -> None:
    d = h.default_space()
    r = d.remember(content="default space memory", embedding=unit(0.3, 0.3, 0.3, 1), id="d-http-1")
    assert r.outcome == "stored"
    assert d.get("d-http-1").content == z.space("default").get("d-http-1").content == "default space memory"
    hits = d.recall(embedding=unit(0.3, 0.3, 0.3, 1), k=1, mode="similarity")
    assert [x.id for x in hits] == ["d-http-1"]
    with pytest.raises(errors.MemoryNotFound):
        d.get("d-http-missing")
    for call in (d.count, d.stats, lambda: d.forget("d-http-1"), lambda: d.list()):
        err = caught(call)
        assert type(err) is errors.InvalidArgument and "on the default space has no REST route" in err.message
    assert z.space("default").forget("d-http-1") == 1


# -- errors ---------------------------------------------------------------------------------------


def test_error_replies_raise_the_same_class_and_code(h: Client, z: Client) -> None:
    name = new_space(z)
    z.space(name).remember(content="x", embedding=unit(1), id="e-1")
    cases: list[Callable[[Client], Any]] = [
        lambda c: c.space("hc-missing").count(),                          # SPACE_NOT_FOUND
        lambda c: c.get_space("hc-missing"),
        lambda c: c.space(name).get("e-404"),                             # MEMORY_NOT_FOUND
        lambda c: c.space(name).get("not/an/id"),
        lambda c: c.space(name).link("e-1", "e-404"),
        lambda c: c.space(name).recall(query="x", k=0),                   # INVALID_ARGUMENT
        lambda c: c.space(name).recall(query="x", mode="sideways"),
        lambda c: c.space(name).remember(embedding=[1.0, 2.0]),
        lambda c: c.space(name).list(limit=0),
        lambda c: c.space(name).count(tier="lukewarm"),
        lambda c: c.call(name, "get", {"id": "e-1", "extra": 1}),
        lambda c: c.call(name, "link", {"source": "e-1"}),
        lambda c: c.space(name).forget(),
        lambda c: c.call("", "drain"),
        lambda c: c.call("Bad Space", "count"),                           # INVALID_SPACE_ID
        lambda c: c.create_space(name, dimension=DIM + 1),                # SPACE_EXISTS
    ]
    codes, messages = [], []
    for case in cases:
        over_http, over_zmq = caught(case, h), caught(case, z)
        assert (contract_class(over_http), over_http.code) == (contract_class(over_zmq), over_zmq.code)
        codes.append(over_http.code)
        if over_http.message != over_zmq.message:
            messages.append((over_http.message, over_zmq.message))
    # The same words too, except where the REST schema checks a type before the engine sees it
    assert len(messages) == 1 and "'mode'" in messages[0][0] and "sideways" in messages[0][1]
    assert codes == ["SPACE_NOT_FOUND"] * 2 + ["MEMORY_NOT_FOUND"] * 3 + ["INVALID_ARGUMENT"] * 9 + \
        ["INVALID_SPACE_ID", "SPACE_EXISTS"]
    err = caught(lambda: h.space("hc-missing").count())
    assert isinstance(err, errors.SpaceNotFound) and err.details.get("space") == "hc-missing"


def test_ops_without_a_rest_route_say_so(h: Client) -> None:
    for space, op in (("", "metrics"), ("default", "events")):
        err = caught(h.call, space, op, {})
        assert type(err) is errors.InvalidArgument
        assert f"op {op} has no JSON REST route" in err.message and "zmq url" in err.message
    with pytest.raises(errors.InvalidArgument, match="unknown op 'teleport'"):
        h.call("default", "teleport")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("http-client-auth")
    tokens = root / "tokens.toml"
    tokens.write_text("".join(
        f'[[token]]\nname = "{name}"\nsha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        f'spaces = {spaces}\nadmin = {admin}\n\n'
        for name, token, spaces, admin in (("tenant", "tenant-token", '["hc-auth"]', "false"),
                                           ("operator", "admin-token", '["*"]', "true"))))
    env = {**ENV, "MEMSPACE_AUTH_MODE": "token", "MEMSPACE_AUTH_TOKENS_FILE": str(tokens)}
    with ServerProcess(root / "data", http=True, env=env) as s:
        yield s


def test_tokens_are_sent_as_bearer_and_auth_errors_map(auth_server: ServerProcess) -> None:
    url = auth_server.endpoints["http"]
    with memspace.connect(url, token="admin-token") as admin:
        admin.create_space("hc-auth", dimension=DIM)
        assert "hc-auth" in {s["id"] for s in admin.list_spaces()}
    with memspace.connect(url) as anonymous, pytest.raises(errors.Unauthenticated, match="requires a token"):
        anonymous.space("hc-auth").count()
    with (memspace.connect(url, token="guess") as guess,
          pytest.raises(errors.Unauthenticated, match="not recognised")):
        guess.status()
    with memspace.connect(url, token="tenant-token") as tenant:
        assert tenant.space("hc-auth").remember(content="mine", embedding=unit(1)).outcome == "stored"
        assert tenant.space("hc-auth").count() == 1
        with pytest.raises(errors.Forbidden, match="admin"):
            tenant.status()
        with pytest.raises(errors.Forbidden, match="hc-auth2"):
            tenant.get_space("hc-auth2")


# -- delivery: idempotency keys, retries, replies that are not ours --------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Interposer:
    """An HTTP server in a thread that forwards each request to ``upstream`` unless the next
    scripted step says otherwise: ``"drop"`` (forward, then close the connection without an
    answer) or ``(status, headers, body)`` (answer that instead of forwarding)."""

    upstream: str
    steps: list[Any] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def start(self) -> Interposer:
        owner = self
        forward = httpx.Client(base_url=self.upstream, timeout=30.0)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.seen.append(Seen(self.command, self.path, headers, body))
                step = owner.steps.pop(0) if owner.steps else "forward"
                if isinstance(step, tuple):
                    status, headers, content = step
                else:
                    passed = {k: v for k, v in self.headers.items()
                              if k.lower() in ("content-type", "idempotency-key", "authorization")}
                    r = forward.request(self.command, self.path, content=body, headers=passed)
                    if step == "drop":       # the server did the work; the client never hears of it
                        self.close_connection = True
                        return
                    status, headers, content = r.status_code, {"Content-Type": r.headers["content-type"]}, \
                        r.content
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_DELETE = handle_one

            def log_message(self, *args: Any) -> None:
                pass

        self._forward = forward
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._forward.close()
        self._thread.join(10)


@pytest.fixture
def interposer(server: ServerProcess) -> Iterator[Interposer]:
    p = Interposer(server.endpoints["http"]).start()
    yield p
    p.stop()


def envelope(code: str, message: str = "try later") -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "details": {}}})


def test_same_request_id_is_applied_once_across_transports(h: Client, z: Client) -> None:
    name = new_space(h)
    first = h.space(name).remember(content="once", embedding=unit(1), request_id="rid-once-1")
    again = h.space(name).remember(content="once", embedding=unit(1), request_id="rid-once-1")
    over_zmq = z.space(name).remember(content="once", embedding=unit(1), request_id="rid-once-1")
    assert first == again == over_zmq and first.outcome == "stored"
    assert h.space(name).count() == 1 and h.space(name).get(first.id).access_count == 0


def test_a_write_whose_reply_was_lost_is_retried_with_the_same_key(interposer: Interposer, z: Client) -> None:
    name = new_space(z)
    interposer.steps = ["drop"]
    with memspace.connect(interposer.url, retries=1) as c:
        r = c.space(name).remember(content="lost reply", embedding=unit(1))
    assert r.outcome == "stored" and z.space(name).get(r.id).content == "lost reply"
    assert z.space(name).count() == 1                        # applied once, answered twice
    posts = [s for s in interposer.seen if s.method == "POST"]
    assert len(posts) == 2 and posts[0].body == posts[1].body
    keys = {s.headers["idempotency-key"] for s in posts}
    assert len(keys) == 1 and len(keys.pop()) == 32

    interposer.steps = ["drop"]
    with memspace.connect(interposer.url, retries=0) as c:
        err = caught(c.space(name).remember, "second", unit(0, 1), request_id="rid-lost")
        assert type(err) is errors.DeadlineExceeded
        assert interposer.url in err.message and err.details["attempts"] == 1
        assert z.space(name).count() == 2                    # it did arrive
        same = c.space(name).remember(content="second", embedding=unit(0, 1), request_id="rid-lost")
    assert same.outcome == "stored" and z.space(name).count() == 2


def test_503_is_retried_after_retry_after_within_the_deadline(interposer: Interposer, z: Client) -> None:
    name = new_space(z)
    json_now = {"Content-Type": "application/json", "Retry-After": "0"}
    unavailable = (503, json_now, envelope("SPACE_UNAVAILABLE"))
    interposer.steps = [unavailable, unavailable]
    with memspace.connect(interposer.url, retries=2) as c:
        r = c.space(name).remember(content="after two 503s", embedding=unit(1))
    assert z.space(name).get(r.id).content == "after two 503s"
    keys = [s.headers["idempotency-key"] for s in interposer.seen]
    assert len(keys) == 3 and len(set(keys)) == 1

    interposer.seen.clear()
    interposer.steps = [(503, {"Content-Type": "application/json", "Retry-After": "3600"},
                         envelope("SPACE_UNAVAILABLE", "draining"))]
    with (memspace.connect(interposer.url, retries=2, timeout=20.0) as c,
          pytest.raises(errors.SpaceUnavailable, match="draining")):
        c.space(name).count()                    # waiting an hour would pass the deadline
    assert len(interposer.seen) == 1

    interposer.seen.clear()
    interposer.steps = [unavailable, unavailable]
    with (memspace.connect(interposer.url, retries=1) as c,
          pytest.raises(errors.SpaceUnavailable, match="try later")):
        c.space(name).count()
    assert len(interposer.seen) == 2 and interposer.steps == []

    interposer.seen.clear()
    interposer.steps = [(429, json_now, envelope("OVERLOADED"))]
    with memspace.connect(interposer.url, retries=2) as c, pytest.raises(errors.Overloaded):
        c.space(name).count()                    # only 503 and lost connections are retried
    assert len(interposer.seen) == 1


@pytest.mark.parametrize("status, body, expected", [
    (502, b"<html><body>Bad Gateway</body></html>", errors.SpaceUnavailable),
    (404, b"Not Found", errors.NotFound),
    (500, b"", errors.Internal),
    (401, b"<html>login</html>", errors.Unauthenticated),
])
def test_replies_without_an_envelope_name_the_url(interposer: Interposer, status: int, body: bytes,
                                                  expected: type[errors.MemspaceError]) -> None:
    interposer.steps = [(status, {"Content-Type": "text/html"}, body)]
    with memspace.connect(interposer.url, retries=0) as c:
        err = caught(lambda: c.space("default").count())
    assert type(err) is expected
    assert interposer.url in err.message and f"HTTP {status}" in err.message
    assert "without a memspace error envelope" in err.message
    assert err.details["status"] == status
    if body:
        assert body.decode()[:20] in err.message


def test_unknown_envelope_codes_keep_code_and_status(interposer: Interposer) -> None:
    json_type = {"Content-Type": "application/json"}
    interposer.steps = [(404, json_type, envelope("NOT_FOUND", "no route GET /v1/x")),
                        (200, json_type, b"{not json")]
    with memspace.connect(interposer.url, retries=0) as c:
        err = caught(lambda: c.get_space("default"))
        assert type(err) is errors.NotFound and err.details["code"] == "NOT_FOUND"
        assert "no route GET /v1/x" in err.message and interposer.url in err.message
        bad = caught(lambda: c.get_space("default"))
        assert type(bad) is errors.Internal and "not JSON" in bad.message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_server_is_deadline_exceeded_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with memspace.connect(url, retries=2, timeout=10.0) as c:
        err = caught(c.status)
    assert type(err) is errors.DeadlineExceeded
    assert url in err.message and "ConnectError" in err.message
    assert err.details["attempts"] == 3 and err.details["url"] == url and err.details["timeout_s"] == 10.0


def test_local_refusals_send_nothing(interposer: Interposer) -> None:
    with memspace.connect(interposer.url, max_bytes=1000) as c:
        with pytest.raises(errors.PayloadTooLarge, match="limit is 1000"):
            c.space("default").remember(content="x" * 2000)
        with pytest.raises(errors.InvalidArgument, match="unknown argument"):
            c.call("default", "list", {"limti": 5})
        with pytest.raises(errors.InvalidArgument, match="cannot be encoded as JSON"):
            c.space("default").remember(content="x", metadata={"when": object()})
        with pytest.raises(errors.InvalidSpaceId):
            c.call("../etc", "count")
    assert interposer.seen == []


def test_threads_share_one_client(h: Client, z: Client) -> None:
    name = new_space(h)
    results: list[str] = []
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                results.append(h.space(name).remember(content=f"t{n}-{i}", embedding=unit(n + 1, i + 1)).id)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            failures.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == [] and len(results) == 20
    assert z.space(name).count() == len(set(results))


# -- the CLI with --url http://... ------------------------------------------------------------------


def cli(url: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSPACE_")}
    env["MEMSPACE_URL"] = url
    return subprocess.run([sys.executable, "-m", "memspace", *args], input=input, capture_output=True,
                          text=True, env=env, timeout=CLI_TIMEOUT_S, check=False)


def test_cli_commands_over_http(server: ServerProcess, z: Client) -> None:
    url = server.endpoints["http"]
    name = new_space(z, "hc-cli")
    made = cli(url, "--space", name, "remember", "the lab is on the third floor", "--id", "c-1",
               "--tag", "place", "--json")
    assert made.returncode == 0, made.stderr
    assert orjson.loads(made.stdout) == {"id": "c-1", "outcome": "stored", "similarity": None, "links": []}
    assert z.space(name).get("c-1").tags == ("place",)

    got = cli(url, "--space", name, "get", "c-1", "--json")
    assert got.returncode == 0, got.stderr
    assert orjson.loads(got.stdout)["content"] == "the lab is on the third floor"

    recalled = cli(url, "--space", name, "recall", "third floor lab", "--json")
    assert recalled.returncode == 0, recalled.stderr
    hits = orjson.loads(recalled.stdout)
    assert [x["id"] for x in hits] == ["c-1"]

    listed = cli(url, "space", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {s["id"] for s in orjson.loads(listed.stdout)} == {s["id"] for s in z.list_spaces()}

    missing = cli(url, "--space", name, "get", "c-404")
    assert missing.returncode == 1 and "error: MEMORY_NOT_FOUND:" in missing.stderr


def test_cli_reports_no_server_at_an_http_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = cli(url, "space", "list")
    assert r.returncode == 1
    assert f"no memspace server answered at {url}" in r.stderr
