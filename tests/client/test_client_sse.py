"""Following the SSE change feed over http: the frame parser, and reconnecting with Last-Event-ID
against a small scripted HTTP server that drops the stream, refuses it for a while, and ends it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from memspace import errors
from memspace.client_http import STREAM_BACKOFF_MAX_S, HttpTransport
from memspace.client_sse import FeedItem, Frame, parse_frames, subscribed_after

TIMEOUT_S = 60.0     # bounds a hung command; never a synchronisation delay


def test_parse_frames_follows_the_sse_format() -> None:
    lines = [": subscribed to sss after 5", "retry: 1000", "",
             "id: 6", "event: remember", "data: {\"a\":", "data:1}", "x-unknown: y", "",
             ": ping", "",
             "", "",
             "data", "",
             "id: 7", "data: cut off"]
    frames = list(parse_frames(lines))
    assert frames == [
        Frame(retry_ms=1000, comments=["subscribed to sss after 5"]),
        Frame(event="remember", data=['{"a":', "1}"], id="6"),
        Frame(comments=["ping"]),
        Frame(data=[""]),
    ]
    assert frames[1].text == '{"a":\n1}'
    assert [subscribed_after(f) for f in frames] == [5, None, None, None]


def change(seq: int, memory: str) -> bytes:
    data = {"seq": seq, "type": "remember", "at": 1.0e9, "memories": [{"id": memory, "outcome": "created"}]}
    return b"id: %d\nevent: remember\ndata: %s\n\n" % (seq, orjson.dumps(data))


def envelope(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "details": {}}})


@dataclass
class Step:
    """One scripted answer: ``status`` with ``body``; ``cut`` closes the connection before
    the promised Content-Length is sent (a dropped connection)."""

    status: int
    body: bytes
    cut: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeFeed:
    steps: list[Step]
    seen: list[dict[str, str]] = field(default_factory=list)

    def start(self) -> FakeFeed:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if not self.path.endswith("/events"):     # the CLI's first-contact probe
                    step = Step(404, envelope("SPACE_NOT_FOUND", "no such space"))
                else:
                    owner.seen.append({k.lower(): v for k, v in self.headers.items()} | {"path": self.path})
                    step = owner.steps.pop(0) if owner.steps else Step(404, envelope("NOT_FOUND", "script ended"))
                self.send_response(step.status)
                self.send_header("Content-Type", "text/event-stream" if step.status == 200 else "application/json")
                for k, v in step.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(step.body) + (1000 if step.cut else 0)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(step.body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

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
        self._thread.join(10)


def script() -> list[Step]:
    gap = b"event: gap\ndata: {\"after\":6,\"last_seq\":9}\n\n"
    life = b"event: lifecycle\ndata: {\"space\":\"sss\",\"old\":\"HIBERNATED\",\"new\":\"READY\"}\n\n"
    return [
        # opened at the end of the feed (seq 5); one change, then the connection drops mid-frame
        Step(200, b"retry: 1000\n: subscribed to sss after 5\n\n" + change(6, "m6") + b"id: 7\ndata: {\"se",
             cut=True),
        Step(503, envelope("SPACE_UNAVAILABLE", "space sss is restarting"), headers={"Retry-After": "0"}),
        # the server ends this one cleanly after a gap, a lifecycle event, an error report and two changes
        Step(200, b": subscribed to sss after 6\n\n" + gap + life
             + b"event: error\ndata: " + envelope("DEADLINE_EXCEEDED", "slow") + b"\n\n"
             + change(8, "m8") + b": ping\n\n" + change(9, "m9")),
        Step(200, b": subscribed to sss after 9\n\n" + change(10, "m10")),
    ]


@pytest.fixture
def fake() -> Iterator[FakeFeed]:
    feed = FakeFeed(script()).start()
    yield feed
    feed.stop()


def test_stream_events_reconnects_after_the_last_change(fake: FakeFeed) -> None:
    transport = HttpTransport(fake.url, token="sekret")
    delays: list[float] = []
    items: list[FeedItem] = []
    feed = transport.stream_events("sss", connect_timeout=5.0, sleep=delays.append)
    try:
        for item in feed:
            items.append(item)
            if item.kind == "change" and item.data["seq"] == 10:
                break
    finally:
        feed.close()
        transport.close()
    kinds = [(i.kind, i.data.get("seq")) for i in items]
    assert kinds == [("change", 6), ("reconnecting", None), ("reconnecting", None), ("gap", None),
                     ("lifecycle", None), ("error", None), ("change", 8), ("change", 9),
                     ("reconnecting", None), ("change", 10)]
    assert "RemoteProtocolError" in items[1].data["reason"]
    assert items[2].data["reason"] == "SPACE_UNAVAILABLE: space sss is restarting"
    assert items[3].data == {"after": 6, "last_seq": 9}
    assert items[4].data["new"] == "READY"
    assert items[5].data["code"] == "DEADLINE_EXCEEDED"
    assert items[8].data["reason"] == "the server ended the stream"
    # no Last-Event-ID before any position is known; then the last change delivered, never the cut one
    assert [s.get("last-event-id") for s in fake.seen] == [None, "6", "6", "9"]
    assert {s["path"] for s in fake.seen} == {"/v1/spaces/sss/events"}
    assert {s["authorization"] for s in fake.seen} == {"Bearer sekret"}
    assert {s["accept"] for s in fake.seen} == {"text/event-stream"}
    assert delays == [0.05, 0.0, 0.05] and max(delays) <= STREAM_BACKOFF_MAX_S


def test_stream_events_resumes_from_the_position_subscribed_at(fake: FakeFeed) -> None:
    # the first stream drops before any change: the reconnect asks for what came after its start (5)
    fake.steps[0] = Step(200, b": subscribed to sss after 5\n\n", cut=True)
    transport = HttpTransport(fake.url)
    feed = transport.stream_events("sss", sleep=lambda s: None)
    try:
        first = next(item for item in feed if item.kind == "change")
    finally:
        feed.close()
        transport.close()
    assert first.data["seq"] == 8
    assert [s.get("last-event-id") for s in fake.seen] == [None, "5", "5"]


def test_stream_events_raises_errors_that_are_not_transient(fake: FakeFeed) -> None:
    fake.steps[:] = [Step(404, envelope("SPACE_NOT_FOUND", "space nope does not exist"))]
    transport = HttpTransport(fake.url)
    try:
        with pytest.raises(errors.SpaceNotFound, match="nope does not exist"):
            next(transport.stream_events("nope", 3, sleep=lambda s: None))
    finally:
        transport.close()
    assert fake.seen[0]["last-event-id"] == "3"


def test_cli_events_over_http_survives_a_drop(fake: FakeFeed) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSPACE_")}
    r = subprocess.run([sys.executable, "-m", "memspace", "--url", fake.url, "events", "--space", "sss",
                        "--count", "3", "--json"], capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert [orjson.loads(line)["seq"] for line in r.stdout.splitlines()] == [6, 8, 9]
    err = r.stderr.splitlines()
    assert err[0].startswith("note: change feed interrupted (RemoteProtocolError"), err
    assert "note: change feed interrupted (SPACE_UNAVAILABLE: space sss is restarting); reconnecting" in err
    assert ("warning: events after 6 are no longer kept by the server; those changes are not shown") in err
    assert "note: space sss is ready" in err
    assert "note: the server reports DEADLINE_EXCEEDED: slow" in err
    assert [s.get("last-event-id") for s in fake.seen] == [None, "6", "6"]
