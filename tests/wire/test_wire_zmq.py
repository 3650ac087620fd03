"""One request/reply pair over real zmq sockets: client DEALER -> ROUTER -> worker DEALER and back."""

from __future__ import annotations

import zmq

from memspace import wire

TIMEOUT_MS = 5000


def _recv(sock: zmq.Socket) -> list[bytes]:
    assert sock.poll(TIMEOUT_MS), "no message within the poll timeout"
    return sock.recv_multipart()


def test_request_and_reply_through_a_router_over_ipc(tmp_path):
    ctx = zmq.Context()
    sockets: list[zmq.Socket] = []
    try:
        frontend = ctx.socket(zmq.ROUTER)
        backend = ctx.socket(zmq.ROUTER)
        backend.setsockopt(zmq.ROUTER_MANDATORY, 1)
        backend.setsockopt(zmq.ROUTER_HANDOVER, 1)
        client = ctx.socket(zmq.DEALER)
        worker = ctx.socket(zmq.DEALER)
        worker.setsockopt(zmq.IDENTITY, b"alpha")
        sockets += [frontend, backend, client, worker]
        for sock in sockets:
            sock.setsockopt(zmq.LINGER, 0)
        frontend.bind(f"ipc://{tmp_path}/front")
        backend.bind(f"ipc://{tmp_path}/back")
        client.connect(f"ipc://{tmp_path}/front")
        worker.connect(f"ipc://{tmp_path}/back")

        # the worker announces itself; the router learns its routing id
        worker.send_multipart(wire.encode_ready({"pid": 1, "generation": 1, "memories": 0}))
        worker_id, *ready = _recv(backend)
        assert worker_id == b"alpha"
        assert wire.decode_signal(ready) == wire.Signal(wire.MsgType.READY,
                                                        {"pid": 1, "generation": 1, "memories": 0})

        client.send_multipart(wire.encode_request("req-1", "alpha", "count", {}, timeout_ms=1000))
        client_id, *frames = _recv(frontend)
        req = wire.split_client_request(frames)
        backend.send_multipart([req.routing_id, *wire.to_worker(wire.make_ticket(1), req)])

        wreq = wire.split_worker_request(_recv(worker))
        assert (wreq.request_id, wreq.op, wreq.timeout_ms) == ("req-1", "count", 1000)
        worker.send_multipart(wire.encode_reply(wreq.request_id, {"count": 3}, ticket=wreq.ticket))

        worker_id, *reply_frames = _recv(backend)
        rep = wire.split_worker_reply(reply_frames)
        assert worker_id == b"alpha" and rep.ticket == wire.make_ticket(1)
        frontend.send_multipart([client_id, *wire.to_client(rep)])

        reply = wire.split_reply(_recv(client))
        assert reply.request_id == "req-1" and reply.result() == {"count": 3}
    finally:
        for sock in sockets:
            sock.close()
        ctx.term()
