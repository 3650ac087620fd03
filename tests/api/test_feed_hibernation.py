"""An open change feed does not keep its space awake: against a real ``memspace serve`` (HTTP and gRPC
gateways) with a short ``idle_hibernate_s``, a space with an open SSE stream or gRPC Subscribe
hibernates on schedule, the stream stays open (lifecycle events, pings), nothing wakes the space
but a real request, and the write that wakes it is delivered on the open stream."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from http_support import BASE_ENV, DIM, SSE, vec

from memspace.api.pb import pb2, stub
from memspace.testing.server import ServerProcess

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("feedhib") / "data", http=True, grpc=True,
                         env={**BASE_ENV, "MEMSPACE_IDLE_HIBERNATE_S": "1.5"}).start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            code = proc.stop()      # raises if any process of the tree is left
            assert code == 0, proc.log_tail()
        else:
            proc.kill()


def ready_space(server: ServerProcess, space: str) -> tuple[Any, str]:
    """A new space with one memory, its worker up; (zmq client, that memory's id)."""
    client = server.client(timeout=TIMEOUT)
    client.create_space(space, dimension=DIM)
    before = client.space(space).remember(content=f"{space} before", embedding=vec(1))
    assert client.get_space(space)["state"] == "READY"
    return client, before.id


def test_sse_stream_lets_the_space_hibernate_and_gets_the_write_that_wakes_it(server: ServerProcess) -> None:
    space = "sse-sleepy"
    client, _ = ready_space(server, space)
    with httpx.Client(base_url=server.endpoints["http"], timeout=TIMEOUT) as http, \
            http.stream("GET", f"/v1/spaces/{space}/events") as r:
        assert r.status_code == 200
        stream = SSE(r)
        assert stream.next().comments[0].startswith(f"subscribed to {space} after ")
        asleep = server.wait_state(client, space, "HIBERNATED", timeout=TIMEOUT)
        # the stream is open and tells the story: the drain, then the hibernation, no error
        moves = []
        for _ in range(200):
            ev = stream.next()
            assert ev.event in (None, "lifecycle"), ev
            if ev.event == "lifecycle":
                moves.append((ev.data["old"], ev.data["new"]))
                if ev.data["new"] == "HIBERNATED":
                    break
        assert moves[-2:] == [("READY", "DRAINING"), ("DRAINING", "HIBERNATED")], moves
        # a ping: http.sse_heartbeat_s of silence, so no transition came after HIBERNATED, and the
        # feed's polls since did not start a worker
        ev = stream.next()
        assert (ev.event, ev.comments) == (None, ["ping"]), ev
        status = client.get_space(space)
        assert (status["state"], status["generation"], status["pid"]) == ("HIBERNATED", asleep["generation"], None)

        woke = client.space(space).remember(content=f"{space} wakes it", embedding=vec(0, 1))
        ev = stream.next_data()                 # lifecycle events and pings skipped; no gap, no error
        assert ev.event == "remember" and [m["id"] for m in ev.data["memories"]] == [woke.id], ev
        assert ev.id == str(ev.data["seq"])
        assert client.get_space(space)["generation"] == asleep["generation"] + 1   # one wake: the write's


class Collector:
    """Reads a Subscribe stream on a thread; the test waits on a queue with a bounded timeout."""

    def __init__(self, mem: Any, request: Any) -> None:
        self.call = mem.Subscribe(request, timeout=120)
        self.events: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.call:
                self.events.put(event)
        except grpc.RpcError as e:
            self.events.put(e)

    def next(self, timeout: float = TIMEOUT) -> Any:
        item = self.events.get(timeout=timeout)
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(10)
        assert not self.thread.is_alive()


def ids_in(event: Any) -> list[str]:
    return [m["id"] for m in json_format.MessageToDict(event.data).get("memories", [])]


@pytest.mark.parametrize("data_only", [False, True], ids=["with-lifecycle", "data-only"])
def test_grpc_subscribe_lets_the_space_hibernate_and_gets_the_write_that_wakes_it(
        server: ServerProcess, data_only: bool) -> None:
    space = "grpc-sleepy-" + ("data" if data_only else "all")
    client, before = ready_space(server, space)
    with grpc.insecure_channel(server.endpoints["grpc"]) as channel:
        feed = Collector(stub(channel, "Memories"), pb2.SubscribeRequest(memory_space_id=space, data_only=data_only))
        try:
            first = feed.next()                 # after_seq 0: what the space holds comes first
            while first.type == "lifecycle":
                first = feed.next()
            assert (first.type, ids_in(first), first.memory_space_id) == ("remember", [before], space)
            asleep = server.wait_state(client, space, "HIBERNATED", timeout=TIMEOUT)
            if not data_only:
                moves = []
                while not moves or moves[-1] != ("DRAINING", "HIBERNATED"):
                    ev = feed.next()
                    assert ev.type == "lifecycle", ev
                    moves.append((ev.lifecycle.old, ev.lifecycle.new))
                assert ("READY", "DRAINING") in moves
            status = client.get_space(space)
            assert (status["state"], status["generation"]) == ("HIBERNATED", asleep["generation"])

            woke = client.space(space).remember(content=f"{space} wakes it", embedding=vec(0, 1))
            ev = feed.next()
            wake_moves = []
            while ev.type == "lifecycle":
                wake_moves.append((ev.lifecycle.old, ev.lifecycle.new))
                ev = feed.next()
            assert (ev.type, ids_in(ev), ev.memory_space_id) == ("remember", [woke.id], space)
            assert ev.seq > first.seq
            if not data_only:
                # the write woke it, nothing before: the first transition after HIBERNATED is its start
                assert wake_moves[:1] == [("HIBERNATED", "STARTING")], wake_moves
            else:
                assert wake_moves == []
            assert client.get_space(space)["generation"] == asleep["generation"] + 1
        finally:
            feed.close()
