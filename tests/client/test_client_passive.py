"""``Client.call(..., passive=True)``: the zmq transport marks the request passive on the wire;
the HTTP transport, which cannot, refuses before sending anything."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

import memspace
from memspace import wire
from memspace.errors import InvalidArgument, SpaceUnavailable

POLL_MS = 10_000


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def serve_one(sock: zmq.Socket, answer: Any, seen: list[wire.ClientRequest]) -> None:
    """Answer one request on ``sock`` (a ROUTER) with ``answer(request)`` and record it."""
    if not sock.poll(POLL_MS):
        return
    peer, *frames = sock.recv_multipart()
    req = wire.split_client_request(frames)
    seen.append(req)
    sock.send_multipart([peer, *answer(req)])


@pytest.mark.parametrize("passive", [True, False])
def test_the_zmq_transport_marks_a_passive_request_on_the_wire(ctx: zmq.Context, tmp_path: Any,
                                                               passive: bool) -> None:
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(f"ipc://{tmp_path}/front")
    seen: list[wire.ClientRequest] = []
    asleep = {"space": "alpha", "state": "HIBERNATED", "asleep": True, "last_seq": 4}
    server = threading.Thread(target=serve_one, args=(sock, lambda req: wire.encode_error(
        req.request_id, "SPACE_UNAVAILABLE", "memory space 'alpha' is HIBERNATED", asleep), seen))
    server.start()
    try:
        with memspace.connect(f"ipc://{tmp_path}/front", timeout=5.0, retries=0, context=ctx) as client, \
                pytest.raises(SpaceUnavailable) as info:
            client.call("alpha", "events", {"after": 4, "wait_ms": 1000}, passive=passive)
    finally:
        server.join(POLL_MS / 1000 + 5)
        sock.close(0)
    [req] = seen
    assert (req.space, req.op, req.passive) == ("alpha", "events", passive)
    assert ("passive" in req.meta) is passive
    assert info.value.details == asleep


def test_the_http_transport_refuses_a_passive_request_before_sending() -> None:
    # port 1 is closed: a request that were sent would end in DeadlineExceeded, not this
    with memspace.connect("http://127.0.0.1:1", timeout=2.0, retries=0) as client:
        with pytest.raises(InvalidArgument, match="need the zmq url") as info:
            client.call("alpha", "count", {}, passive=True)
        assert info.value.details == {"field": "passive", "op": "count"}
        # events keeps its own error, which names the SSE route
        with pytest.raises(InvalidArgument, match="Server-Sent Events"):
            client.call("alpha", "events", {"after": 0}, passive=True)
