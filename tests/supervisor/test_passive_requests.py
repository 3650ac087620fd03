"""Passive requests (a change feed's long polls): the real router and supervisor on inproc sockets,
with a fake spawner, a fake clock and a test-driven "worker" socket.

A passive request is routed like any other, but it is not activity (an idle space with one
parked hibernates on schedule) and it never starts a worker (the router answers "asleep").
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import zmq

from memspace import config, wire
from memspace.errors import Overloaded, SpaceUnavailable
from memspace.router.broker import Router
from memspace.supervisor.core import Supervisor
from memspace.supervisor.lifecycle import Events, State
from memspace.supervisor.registry import Registry
from memspace.testing import FakeClock, FakeSpawner

_ids = itertools.count()
POLL_MS = 5000
QUEUE_LIMIT = 10       # router_queue_per_space: real requests
PASSIVE_LIMIT = 12     # router_passive_per_space: change-feed polls


class World:
    def __init__(self, tmp_path: Any) -> None:
        cfg = config.load(env={}, overrides={
            "data_root": str(tmp_path), "idle_hibernate_s": 30.0, "max_active_workers": 4,
            "heartbeat_s": 1.0, "drain_timeout_s": 5.0})
        self.registry = Registry(tmp_path / "registry.sqlite")
        self.registry.create("alpha", dimension=8, settings={})
        self.clock = FakeClock()
        self.spawner = FakeSpawner()
        self.sup = Supervisor(cfg, self.registry, self.spawner, self.clock, Events(), rng=random.Random(1))
        self.ctx = zmq.Context()
        n = next(_ids)
        self.router = Router(self.ctx, f"inproc://front-{n}", f"inproc://back-{n}", supervisor=self.sup,  # type: ignore[arg-type]
                             clock=self.clock.monotonic, default_space="default", require_explicit_space=False,
                             queue_limit=QUEUE_LIMIT, passive_limit=PASSIVE_LIMIT, request_timeout_s=60.0,
                             start_timeout_s=60.0, max_bytes=1 << 20)
        self.sup.router = self.router
        self.client = self.ctx.socket(zmq.DEALER)
        self.client.connect(f"inproc://front-{n}")
        self.backend = f"inproc://back-{n}"
        self.worker: zmq.Socket | None = None
        self._rid = itertools.count()

    def close(self) -> None:
        for sock in (self.client, self.worker):
            if sock is not None:
                sock.close(0)
        self.router.close()
        self.ctx.term()
        self.registry.close()

    # -- the client side ---------------------------------------------------------------------

    def send(self, op: str, body: dict[str, Any] | None = None, *, passive: bool = False) -> str:
        rid = f"r{next(self._rid)}"
        self.client.send_multipart(wire.encode_request(rid, "alpha", op, body or {}, passive=passive))
        assert self.router.frontend.poll(POLL_MS), "the router got nothing"
        self.router.handle_frontend()
        return rid

    def answer(self) -> wire.Reply:
        assert self.client.poll(POLL_MS), "no answer reached the client"
        return wire.split_reply(self.client.recv_multipart())

    # -- the worker side ---------------------------------------------------------------------

    def worker_ready(self) -> None:
        handle = self.sup.slots["alpha"].handle
        self.worker = self.ctx.socket(zmq.DEALER)
        self.worker.setsockopt(zmq.IDENTITY, b"alpha")
        self.worker.connect(self.backend)
        self.worker_says(wire.encode_ready({"generation": handle.generation, "pid": handle.pid}))

    def worker_says(self, frames: list[bytes]) -> None:
        assert self.worker is not None
        self.worker.send_multipart(frames)
        assert self.router.backend.poll(POLL_MS)
        self.router.handle_backend()

    def worker_gets(self) -> list[bytes]:
        assert self.worker is not None and self.worker.poll(POLL_MS), "the worker got nothing"
        return self.worker.recv_multipart()

    def worker_replies(self, frames: list[bytes], result: Any) -> None:
        req = wire.split_worker_request(frames)
        self.worker_says(wire.encode_reply(req.request_id, result, ticket=req.ticket))

    def drained(self, last_seq: int) -> None:
        """The worker says BYE (its final seq) and exits; the supervisor reaps it."""
        handle = self.sup.slots["alpha"].handle
        self.worker_says(wire.encode_bye({"generation": handle.generation, "wal_last_seq": last_seq}))
        self.spawner.exit(handle, 0)
        self.sup.reap(handle.sentinel)


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def test_an_idle_space_with_a_parked_passive_poll_hibernates_and_the_poll_never_wakes_it(world):
    world.send("count")                                  # a real request wakes the space
    slot = world.sup.slots["alpha"]
    assert slot.state is State.STARTING and len(world.spawner.spawned) == 1
    world.worker_ready()
    world.worker_replies(world.worker_gets(), 0)
    assert world.answer().result() == 0
    last = world.router.routes["alpha"].last_activity

    world.clock.advance(20)
    world.send("events", {"after": 0, "wait_ms": 25_000}, passive=True)
    parked = world.worker_gets()                         # routed to the worker like any request
    assert wire.split_worker_request(parked).op == "events"
    assert world.router.depth("alpha")["inflight"] == 1
    assert not world.router.busy("alpha")                # ... but it is not work
    assert world.router.routes["alpha"].last_activity == last

    world.clock.advance(11)                              # 31 s after the last real request
    world.sup.hibernate_idle()
    assert slot.state is State.DRAINING
    assert wire.decode_control(world.worker_gets()).command == "drain"
    # the draining worker answers the parked poll at once
    world.worker_replies(parked, {"events": [], "last_seq": 4, "gap": False})
    assert world.answer().result()["last_seq"] == 4

    world.send("events", {"after": 4, "wait_ms": 25_000}, passive=True)
    with pytest.raises(SpaceUnavailable) as info:
        world.answer().result()
    assert info.value.details == {"space": "alpha", "state": "DRAINING", "asleep": True}
    assert slot.restart_after_exit is False

    world.drained(last_seq=4)
    assert slot.state is State.HIBERNATED
    world.send("events", {"after": 4, "wait_ms": 25_000}, passive=True)
    with pytest.raises(SpaceUnavailable) as info:
        world.answer().result()
    assert info.value.details == {"space": "alpha", "state": "HIBERNATED", "asleep": True, "last_seq": 4}
    assert len(world.spawner.spawned) == 1 and world.router.rejected == {}   # an answer, not a rejection

    world.send("count")                                  # the next real request wakes it
    assert slot.state is State.STARTING and len(world.spawner.spawned) == 2


def test_a_passive_poll_waits_for_a_worker_already_on_its_way(world):
    world.send("count")
    assert world.sup.slots["alpha"].state is State.STARTING
    world.send("events", {"after": 0, "wait_ms": 25_000}, passive=True)   # queued, not refused
    assert world.router.depth("alpha")["queued"] == 2
    world.worker_ready()
    ops = [wire.split_worker_request(world.worker_gets()).op for _ in range(2)]
    assert ops == ["count", "events"]                     # in arrival order, after the real request


def test_passive_requests_left_when_the_worker_drains_away_are_answered_asleep(world):
    world.send("count")
    world.send("events", {"after": 0, "wait_ms": 25_000}, passive=True)
    world.router.release_passive("alpha", SpaceUnavailable("asleep", {"asleep": True}))
    with pytest.raises(SpaceUnavailable, match="asleep"):
        world.answer().result()
    assert world.router.depth("alpha")["queued"] == 1 and world.router.busy("alpha")


def test_a_passive_poll_the_worker_took_down_with_it_is_answered_asleep(world):
    world.send("count")
    world.worker_ready()
    world.worker_replies(world.worker_gets(), 0)
    world.answer()
    world.send("events", {"after": 0, "wait_ms": 25_000}, passive=True)
    world.worker_gets()                                   # parked in the worker
    slot = world.sup.slots["alpha"]
    world.sup.drain(slot, State.STOPPED, "test")
    world.worker_gets()                                   # the drain control
    # the worker exits without answering it (as one killed after drain_timeout_s would):
    # worker_lost puts the poll back in the queue, where it must not restart the space
    world.drained(last_seq=0)
    assert slot.state is State.STOPPED and len(world.spawner.spawned) == 1
    with pytest.raises(SpaceUnavailable) as info:
        world.answer().result()
    assert info.value.details["asleep"] is True and info.value.details["state"] == "STOPPED"
    assert world.router.depth("alpha") == {"queued": 0, "inflight": 0, "suspects": 0}


def test_the_passive_flag_is_checked_on_the_wire():
    frames = wire.encode_request("r", "alpha", "events", {}, passive=True)
    assert wire.split_client_request(frames).passive is True
    assert wire.split_client_request(wire.encode_request("r", "alpha", "events", {})).passive is False
    frames[5] = b'{"passive": "yes"}'
    with pytest.raises(wire.WireError, match="passive"):
        wire.split_client_request(frames)


# -- bounds: passive polls have their own --------------------------------------------------------


def awake(world: World) -> None:
    world.send("count")
    world.worker_ready()
    world.worker_replies(world.worker_gets(), 0)
    assert world.answer().result() == 0


def test_passive_polls_as_many_as_the_real_bound_leave_real_requests_room(world):
    awake(world)
    parked = []
    for n in range(QUEUE_LIMIT):                # as many open feeds as the real-request bound
        world.send("events", {"after": n, "wait_ms": 25_000}, passive=True)
        parked.append(world.worker_gets())
    assert world.router.depth("alpha")["inflight"] == QUEUE_LIMIT
    route = world.router.routes["alpha"]
    assert (route.real, route.passive) == (0, QUEUE_LIMIT)

    # a real request is still accepted and reaches the worker (it used to be OVERLOADED here)
    rid = world.send("remember", {"content": "x"})
    frames = world.worker_gets()
    req = wire.split_worker_request(frames)
    assert (req.op, req.request_id) == ("remember", rid)
    world.worker_replies(frames, {"id": "m1", "outcome": "stored"})
    reply = world.answer()
    assert reply.request_id == rid and reply.result() == {"id": "m1", "outcome": "stored"}

    # the real bound is untouched by the polls: QUEUE_LIMIT real requests fit, one more does not
    real = [world.send("count") for _ in range(QUEUE_LIMIT)]
    over = world.send("count")
    err = world.answer()
    assert err.request_id == over
    with pytest.raises(Overloaded, match="router_queue_per_space") as info:
        err.result()
    assert info.value.details == {"retry_after_s": 1, "space": "alpha"}
    assert world.router.depth("alpha")["inflight"] == 2 * QUEUE_LIMIT
    assert (route.real, route.passive) == (QUEUE_LIMIT, QUEUE_LIMIT)
    for _ in real:
        world.worker_replies(world.worker_gets(), 1)
        assert world.answer().result() == 1
    for frames in parked:                       # the feeds' polls end (new events, say)
        world.worker_replies(frames, {"events": [], "last_seq": 9, "gap": False})
        world.answer()
    assert (route.real, route.passive) == (0, 0)


def test_a_poll_over_the_passive_bound_is_overloaded_and_real_requests_still_pass(world):
    awake(world)
    parked = []
    for n in range(PASSIVE_LIMIT):
        world.send("events", {"after": n, "wait_ms": 25_000}, passive=True)
        parked.append(world.worker_gets())
    over = world.send("events", {"after": 0, "wait_ms": 25_000}, passive=True)
    err = world.answer()
    assert err.request_id == over
    with pytest.raises(Overloaded, match="router_passive_per_space") as info:
        err.result()
    assert info.value.details == {"retry_after_s": 5, "space": "alpha", "passive": True}
    assert world.router.depth("alpha")["inflight"] == PASSIVE_LIMIT     # the refused poll never reached it

    rid = world.send("count")                   # real work is not pushed out
    world.worker_replies(world.worker_gets(), 3)
    assert world.answer().request_id == rid

    # an answered poll frees its room: the next poll is accepted
    world.worker_replies(parked.pop(), {"events": [], "last_seq": 9, "gap": False})
    world.answer()
    world.send("events", {"after": 9, "wait_ms": 25_000}, passive=True)
    assert wire.split_worker_request(world.worker_gets()).op == "events"
    assert world.router.routes["alpha"].passive == PASSIVE_LIMIT


def test_polls_queued_while_the_space_starts_do_not_fill_the_real_queue(world):
    world.send("count")                         # wakes it; STARTING
    for n in range(PASSIVE_LIMIT):
        world.send("events", {"after": n, "wait_ms": 25_000}, passive=True)
    assert world.router.depth("alpha")["queued"] == 1 + PASSIVE_LIMIT
    for _ in range(QUEUE_LIMIT - 1):            # the real queue still has all its room
        world.send("count")
    assert world.router.depth("alpha")["queued"] == QUEUE_LIMIT + PASSIVE_LIMIT
    world.send("count")
    with pytest.raises(Overloaded, match="router_queue_per_space"):
        world.answer().result()
    # the worker drains away before it is ready: the polls are answered asleep and free their room,
    # the real requests wait for the next worker
    world.router.release_passive("alpha", SpaceUnavailable("asleep", {"asleep": True}))
    for _ in range(PASSIVE_LIMIT):
        with pytest.raises(SpaceUnavailable, match="asleep"):
            world.answer().result()
    route = world.router.routes["alpha"]
    assert (route.real, route.passive) == (QUEUE_LIMIT, 0)
    world.router.fail("alpha", SpaceUnavailable("failed", {}))
    assert (route.real, route.passive) == (0, 0)
