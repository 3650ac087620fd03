"""``repair`` runs off the arbiter's loop: the admin op with the real router and supervisor on inproc
sockets (fake spawner, fake clock), a repair function the test holds, and the job runner itself."""

from __future__ import annotations

import itertools
import random
import select
import threading
from typing import Any

import pytest
import zmq

import memspace.storage.repair
from memspace import config, wire
from memspace.errors import Internal, SpaceUnavailable
from memspace.router.broker import Router
from memspace.supervisor.admin import Admin
from memspace.supervisor.core import Supervisor
from memspace.supervisor.jobs import Jobs
from memspace.supervisor.lifecycle import Events, State
from memspace.supervisor.registry import Registry
from memspace.testing import FakeClock, FakeSpawner
from memspace.wire import MsgType, Signal

_ids = itertools.count()
WAIT_S = 10.0


class Front:
    """What the arbiter is to the router: the supervisor plus the admin ops."""

    def __init__(self, sup: Supervisor, admin: Admin) -> None:
        self.sup, self.admin_ops = sup, admin

    def activate(self, space: str, *, wake: bool = True) -> None:
        self.sup.activate(space, wake=wake)

    def admin(self, client: bytes, req: Any) -> None:
        self.admin_ops.handle(client, req)

    def on_signal(self, space: str, sig: Any) -> None:
        self.sup.on_signal(space, sig)

    def on_worker_seen(self, space: str) -> None:
        self.sup.on_worker_seen(space)


class HeldRepair:
    """Stands in for repair_space: reports that it started, then waits for the test."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_with = fail_with
        self.directories: list[str] = []

    def __call__(self, directory: Any) -> dict[str, Any]:
        self.directories.append(str(directory))
        self.entered.set()
        assert self.release.wait(WAIT_S), "the test never released the repair"
        if self.fail_with is not None:
            raise self.fail_with
        return {"changed": True, "message": "cut 1 damaged record"}


@pytest.fixture
def world(tmp_path, monkeypatch):
    cfg = config.load(env={}, overrides={"data_root": str(tmp_path), "max_active_workers": 4})
    registry = Registry(tmp_path / "registry.sqlite")
    for name in ("alpha", "beta"):
        registry.create(name, dimension=8, settings={})
        (tmp_path / "spaces" / name / "wal").mkdir(parents=True)
    spawner = FakeSpawner()
    sup = Supervisor(cfg, registry, spawner, FakeClock(), Events(), rng=random.Random(1))
    jobs = Jobs()
    admin = Admin(sup, jobs)
    ctx = zmq.Context()
    n = next(_ids)
    router = Router(ctx, f"inproc://f-{n}", f"inproc://b-{n}", supervisor=Front(sup, admin),  # type: ignore[arg-type]
                    clock=sup.clock.monotonic, default_space="default", require_explicit_space=False,
                    queue_limit=10, request_timeout_s=60.0, start_timeout_s=60.0, max_bytes=1 << 20)
    sup.router = router
    client = ctx.socket(zmq.DEALER)
    client.connect(f"inproc://f-{n}")
    held = HeldRepair()
    monkeypatch.setattr(memspace.storage.repair, "repair_space", held)
    rids = itertools.count()

    def send(space: str, op: str, body: dict[str, Any] | None = None) -> None:
        client.send_multipart(wire.encode_request(f"r{next(rids)}", space, op, body or {}))
        assert router.frontend.poll(5000)
        router.handle_frontend()

    def answer() -> wire.Reply:
        assert client.poll(5000), "no answer"
        return wire.split_reply(client.recv_multipart())

    def collect() -> None:
        """What the arbiter's loop does when the jobs pipe is readable (bounded wait for it)."""
        readable, _, _ = select.select([jobs.fileno()], [], [], WAIT_S)
        assert readable, "the repair job did not finish"
        jobs.collect()

    yield sup, spawner, jobs, held, send, answer, collect
    held.release.set()
    client.close(0)
    router.close()
    ctx.term()
    jobs.close()
    registry.close()


def test_while_a_repair_runs_the_space_cannot_start_and_others_are_served(world):
    sup, spawner, jobs, held, send, answer, collect = world
    slot = sup.slot(sup.registry.get("alpha"))
    slot.state = State.FAILED                           # as a corrupt WAL leaves it
    send("alpha", "repair")
    assert held.entered.wait(WAIT_S)                    # the repair is running on its thread ...
    assert slot.repairing and not jobs.idle()

    send("beta", "count")                               # ... and the loop goes on: beta starts
    assert sup.slots["beta"].state is State.STARTING
    send("alpha", "get_space")
    assert answer().result()["repairing"] is True
    for op in ("count", "repair", "restart", "delete_space"):
        send("alpha", op)
        with pytest.raises(SpaceUnavailable, match="being repaired") as info:
            answer().result()
        assert info.value.details["repairing"] is True, op
    sup.start(slot, "test")                             # no path may spawn it meanwhile
    assert [h.space for h in spawner.spawned] == ["beta"]
    assert slot.state is State.FAILED and sup.registry.get("alpha") is not None

    held.release.set()
    collect()
    # a FAILED space starts once repaired; the answer waits for READY
    assert not slot.repairing and slot.state is State.STARTING and jobs.idle()
    handle = slot.handle
    sup.on_signal("alpha", Signal(MsgType.READY, {"generation": handle.generation}))
    result = answer().result()
    assert result["repair"] == {"changed": True, "message": "cut 1 damaged record"}
    assert result["space"]["state"] == "READY" and result["space"]["repairing"] is False
    assert held.directories == [str(sup.space_dir("alpha"))]


def test_a_repair_that_raises_is_answered_with_its_error_and_the_space_is_free_again(world):
    sup, _, _, held, send, answer, collect = world
    held.fail_with = OSError(28, "No space left on device")
    send("alpha", "repair")
    assert held.entered.wait(WAIT_S)
    held.release.set()
    collect()
    with pytest.raises(Internal, match="No space left") as info:
        answer().result()
    assert info.value.details == {"space": "alpha"}
    slot = sup.slots["alpha"]
    assert not slot.repairing and slot.state is State.REGISTERED
    send("alpha", "count")                              # requests start it again
    assert slot.state is State.STARTING


def test_a_crashed_space_whose_restart_fell_due_during_the_repair_starts_after_it(world):
    sup, spawner, _, held, send, answer, collect = world
    slot = sup.slot(sup.registry.get("alpha"))
    slot.state = State.BACKOFF
    send("alpha", "repair")
    assert held.entered.wait(WAIT_S)
    sup.start(slot, "restart after crash")              # its restart timer: refused meanwhile
    assert slot.state is State.BACKOFF and spawner.spawned == []
    held.release.set()
    collect()
    assert slot.state is State.STARTING and [h.space for h in spawner.spawned] == ["alpha"]


def test_jobs_hand_results_and_errors_back_on_the_collecting_thread():
    jobs = Jobs()
    got: list[tuple[Any, Any, str]] = []

    def on_done(result: Any, error: BaseException | None) -> None:
        got.append((result, type(error).__name__ if error else None, threading.current_thread().name))

    def boom() -> None:
        raise ValueError("boom")

    try:
        jobs.submit("ok", lambda: 42, on_done)
        jobs.submit("bad", boom, on_done)
        with pytest.raises(ValueError, match="already running"):
            jobs.submit("ok", lambda: 0, on_done)
        while len(got) < 2:
            readable, _, _ = select.select([jobs.fileno()], [], [], WAIT_S)
            assert readable, "no job finished"
            jobs.collect()
        assert sorted(got, key=str) == sorted([(42, None, "MainThread"), (None, "ValueError", "MainThread")], key=str)
        assert jobs.idle() and jobs.collect() == 0
    finally:
        jobs.close()
