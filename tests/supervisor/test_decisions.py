"""The supervisor's decisions against a fake spawner, a fake clock and a recording router view."""

from __future__ import annotations

import random
import signal

import pytest

from memspace import config
from memspace.errors import SpaceNotFound, SpaceUnavailable
from memspace.supervisor.core import Supervisor
from memspace.supervisor.lifecycle import Events, State
from memspace.supervisor.registry import Registry
from memspace.testing import FakeClock, FakeSpawner, RecordingRouter
from memspace.wire import MsgType, Signal
from memspace.worker.main import EXIT_BOOT_ERROR


@pytest.fixture
def world(tmp_path):
    cfg = config.load(env={}, overrides={
        "data_root": str(tmp_path), "restart_intensity.n": 3, "restart_intensity.window_s": 60.0,
        "restart_backoff_initial_s": 0.1, "restart_backoff_max_s": 1.0, "max_active_workers": 2,
        "heartbeat_s": 1.0, "heartbeat_liveness": 3, "drain_timeout_s": 5.0, "idle_hibernate_s": 30.0,
    })
    registry = Registry(tmp_path / "registry.sqlite")
    clock = FakeClock()
    events = Events()
    seen = []
    events.subscribe(seen.append)
    spawner = FakeSpawner()
    sup = Supervisor(cfg, registry, spawner, clock, events, rng=random.Random(7))
    sup.router = RecordingRouter()
    for name in ("alpha", "beta", "gamma"):
        registry.create(name, dimension=8, settings={})
    yield sup, spawner, clock, seen
    registry.close()


def ready(sup, space):
    handle = sup.slots[space].handle
    sup.on_signal(space, Signal(MsgType.READY, {"generation": handle.generation, "pid": handle.pid}))


def states(seen, space):
    return [(t.old.name, t.new.name) for t in seen if t.space == space]


def test_first_request_spawns_then_ready(world):
    sup, spawner, clock, seen = world
    sup.activate("alpha")
    assert sup.slots["alpha"].state is State.STARTING
    spec = spawner.specs[-1]
    assert spec.space_id == "alpha" and spec.settings["dimension"] == 8
    sup.activate("alpha")                      # already starting: no second process
    assert len(spawner.spawned) == 1
    ready(sup, "alpha")
    assert sup.slots["alpha"].state is State.READY
    assert ("ready", "alpha") in sup.router.calls
    assert states(seen, "alpha") == [("REGISTERED", "STARTING"), ("STARTING", "READY")]


def test_unknown_space_is_not_found(world):
    sup, *_ = world
    with pytest.raises(SpaceNotFound, match="create it first"):
        sup.activate("nope")


def test_crash_backoff_grows_with_jitter_then_failed(world):
    sup, spawner, clock, seen = world
    sup.activate("alpha")
    ready(sup, "alpha")
    slot = sup.slots["alpha"]
    delays = []
    for code in (-signal.SIGKILL, -signal.SIGKILL):
        # the second crash comes before READY, so the delay is not reset in between
        handle = slot.handle
        spawner.exit(handle, code)
        sup.reap(handle.sentinel)
        assert slot.state is State.BACKOFF
        assert ("lost", "alpha", True) in sup.router.calls
        delays.append(slot.restart_at - clock.monotonic())
        sup.run_timers()
        assert slot.state is State.BACKOFF          # not before the delay
        clock.advance(delays[-1] + 0.001)
        sup.run_timers()
        assert slot.state is State.STARTING
    # nominal delays 0.1 then 0.2, each with jitter in [0.5, 1.5)
    assert 0.05 <= delays[0] < 0.15 and 0.1 <= delays[1] < 0.3
    handle = slot.handle
    spawner.exit(handle, 70)
    sup.reap(handle.sentinel)                     # third crash within 60 s -> FAILED
    assert slot.state is State.FAILED
    assert ("fail", "alpha", "SPACE_UNAVAILABLE") in sup.router.calls
    with pytest.raises(SpaceUnavailable, match="FAILED"):
        sup.activate("alpha")
    assert slot.restart_reasons == {"signal SIGKILL": 2, "exit 70": 1}
    assert states(seen, "alpha")[-2:] == [("BACKOFF", "STARTING"), ("STARTING", "FAILED")]


def test_ready_resets_the_backoff(world):
    sup, spawner, clock, _ = world
    sup.activate("alpha")
    slot = sup.slots["alpha"]
    spawner.exit(slot.handle, 1)
    sup.reap(slot.handle.sentinel)
    clock.advance(1)
    sup.run_timers()
    ready(sup, "alpha")
    assert slot.backoff_s == 0.0


def test_crashes_outside_the_window_do_not_accumulate(world):
    sup, spawner, clock, _ = world
    sup.activate("alpha")
    for _ in range(5):
        ready(sup, "alpha")
        handle = sup.slots["alpha"].handle
        spawner.exit(handle, 1)
        sup.reap(handle.sentinel)
        assert sup.slots["alpha"].state is State.BACKOFF
        clock.advance(61.0)
        sup.run_timers()
        assert sup.slots["alpha"].state is State.STARTING


def test_boot_error_fails_at_once_without_restart(world):
    sup, spawner, clock, _ = world
    sup.activate("beta")
    handle = sup.slots["beta"].handle
    sup.on_signal("beta", Signal(MsgType.BYE, {"generation": handle.generation, "phase": "boot_error",
                                               "error": {"message": "WAL corrupt in x at offset 40"}}))
    spawner.exit(handle, EXIT_BOOT_ERROR)
    sup.reap(handle.sentinel)
    slot = sup.slots["beta"]
    assert slot.state is State.FAILED and "offset 40" in slot.last_error
    clock.advance(100)
    sup.run_timers()
    assert len(spawner.spawned) == 1


def test_hung_worker_gets_sigterm_then_sigkill_and_counts_as_crash(world):
    sup, spawner, clock, _ = world
    sup.activate("alpha")
    ready(sup, "alpha")
    handle = sup.slots["alpha"].handle
    clock.advance(2.9)
    sup.check_heartbeats()
    assert handle.process.signals == []
    clock.advance(0.2)
    sup.check_heartbeats()
    assert handle.process.signals == [signal.SIGTERM]
    clock.advance(3.1)
    sup.run_timers()
    assert handle.process.signals == [signal.SIGTERM, signal.SIGKILL]
    spawner.exit(handle, -signal.SIGKILL)
    sup.reap(handle.sentinel)
    assert sup.slots["alpha"].state is State.BACKOFF
    assert sup.slots["alpha"].restart_reasons == {"hung": 1}


def test_drain_to_hibernation_and_wake_on_demand(world):
    sup, spawner, clock, seen = world
    sup.activate("alpha")
    ready(sup, "alpha")
    clock.advance(31)
    sup.hibernate_idle()
    slot = sup.slots["alpha"]
    assert slot.state is State.DRAINING
    assert ("control", "alpha", "drain") in sup.router.calls
    handle = slot.handle
    sup.on_signal("alpha", Signal(MsgType.BYE, {"generation": handle.generation}))
    spawner.exit(handle, 0)
    sup.reap(handle.sentinel)
    assert slot.state is State.HIBERNATED and sup.counters["hibernations"] == 1
    assert ("lost", "alpha", False) in sup.router.calls
    sup.activate("alpha")
    assert slot.state is State.STARTING and len(spawner.spawned) == 2


def test_drain_timeout_terminates_and_ends_in_target_state(world):
    sup, spawner, clock, _ = world
    sup.activate("alpha")
    ready(sup, "alpha")
    slot = sup.slots["alpha"]
    sup.drain(slot, State.STOPPED, "test")
    handle = slot.handle
    clock.advance(5.1)
    sup.run_timers()
    assert handle.process.signals == [signal.SIGTERM]
    spawner.exit(handle, -signal.SIGTERM)
    sup.reap(handle.sentinel)
    assert slot.state is State.STOPPED and slot.restarts == 0


def test_max_active_workers_hibernates_least_recently_used(world):
    sup, spawner, clock, _ = world

    class Route:
        def __init__(self, at):
            self.last_activity = at

    sup.activate("alpha")
    ready(sup, "alpha")
    sup.router.routes["alpha"] = Route(1.0)
    sup.activate("beta")
    ready(sup, "beta")
    sup.router.routes["beta"] = Route(2.0)
    sup.activate("gamma")                       # over the limit of 2: alpha (oldest) drains
    assert sup.slots["alpha"].state is State.DRAINING
    assert sup.slots["gamma"].state is State.REGISTERED and "gamma" in sup.waiting
    handle = sup.slots["alpha"].handle
    spawner.exit(handle, 0)
    sup.on_signal("alpha", Signal(MsgType.BYE, {"generation": handle.generation}))
    sup.reap(handle.sentinel)
    assert sup.slots["alpha"].state is State.HIBERNATED
    assert sup.slots["gamma"].state is State.STARTING     # started once a slot was free


def test_busy_space_is_not_the_lru_victim(world):
    sup, spawner, clock, _ = world
    sup.activate("alpha")
    ready(sup, "alpha")
    sup.activate("beta")
    ready(sup, "beta")
    sup.router.busy_spaces = {"alpha", "beta"}
    sup.activate("gamma")
    assert sup.slots["alpha"].state is State.READY and sup.slots["beta"].state is State.READY
    assert "gamma" in sup.waiting


def test_shutdown_drains_everything_and_stops_backoff(world):
    sup, spawner, clock, _ = world
    sup.activate("alpha")
    ready(sup, "alpha")
    sup.activate("beta")
    handle = sup.slots["beta"].handle
    spawner.exit(handle, 1)
    sup.reap(handle.sentinel)
    assert sup.slots["beta"].state is State.BACKOFF
    sup.shutdown()
    assert sup.slots["alpha"].state is State.DRAINING
    assert sup.slots["beta"].state is State.STOPPED
    assert not sup.finished()
    h = sup.slots["alpha"].handle
    spawner.exit(h, 0)
    sup.on_signal("alpha", Signal(MsgType.BYE, {"generation": h.generation}))
    sup.reap(h.sentinel)
    assert sup.finished() and sup.slots["alpha"].state is State.STOPPED
    with pytest.raises(SpaceUnavailable, match="shutting down"):
        sup.activate("gamma")


def test_stale_generation_signals_are_ignored(world):
    sup, spawner, clock, _ = world
    sup.activate("alpha")
    sup.on_signal("alpha", Signal(MsgType.READY, {"generation": 999}))
    assert sup.slots["alpha"].state is State.STARTING


def test_busy_worker_gets_the_request_deadline_before_it_counts_as_hung(world):
    sup, spawner, clock, _ = world
    sup.activate("alpha")
    ready(sup, "alpha")
    handle = sup.slots["alpha"].handle
    sup.router.busy_spaces = {"alpha"}            # a long request is in flight
    clock.advance(10.0)
    sup.check_heartbeats()
    assert handle.process.signals == []
    clock.advance(sup.cfg["request_timeout_s"])
    sup.check_heartbeats()
    assert handle.process.signals == [signal.SIGTERM]


def test_hung_worker_that_exits_cleanly_on_sigterm_still_counts_as_a_crash(world):
    sup, spawner, clock, seen = world
    sup.activate("alpha")
    ready(sup, "alpha")
    handle = sup.slots["alpha"].handle
    clock.advance(3.5)
    sup.check_heartbeats()
    sup.on_signal("alpha", Signal(MsgType.BYE, {"generation": handle.generation}))
    spawner.exit(handle, 0)
    sup.reap(handle.sentinel)
    assert sup.slots["alpha"].state is State.BACKOFF
    assert sup.slots["alpha"].restart_reasons == {"hung": 1}


def test_worker_that_drains_on_its_own_is_stopped_not_an_illegal_move(world):
    sup, spawner, clock, seen = world
    sup.activate("alpha")
    ready(sup, "alpha")
    handle = sup.slots["alpha"].handle
    sup.on_signal("alpha", Signal(MsgType.BYE, {"generation": handle.generation}))
    spawner.exit(handle, 0)
    sup.reap(handle.sentinel)
    assert sup.slots["alpha"].state is State.STOPPED
    assert states(seen, "alpha")[-2:] == [("READY", "DRAINING"), ("DRAINING", "STOPPED")]
