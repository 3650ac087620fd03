"""The supervisor's decisions: when a space's worker starts, stops, restarts or fails.

It holds one :class:`Slot` per registered space (state, process handle, crash
history, latest worker info) and moves it through the lifecycle table
(:mod:`memspace.supervisor.lifecycle`), publishing every transition. It never
touches sockets itself: it tells the :class:`~memspace.router.broker.Router`
what changed, and it starts processes through the :class:`Spawner` seam, so
its decisions are tested with :class:`memspace.testing.FakeSpawner` and a
fake clock.

Failure semantics:

* A crash (any non-zero exit but the boot-error code, or death by signal) moves
  the space to BACKOFF and schedules a restart after an exponentially growing,
  jittered delay; ``restart_intensity.n`` crashes within ``window_s`` move it to
  FAILED instead. A boot error (exit :data:`EXIT_BOOT_ERROR`: corrupt files,
  bad settings) goes straight to FAILED: restarting cannot help.
* A worker that stops heartbeating for ``heartbeat_s * heartbeat_liveness`` is
  sent SIGTERM, and SIGKILL after as long again; its exit then counts as a crash.
* A drain that outlives ``drain_timeout_s`` is ended the same way, but counts as
  the drain's outcome (HIBERNATED/STOPPED), not as a crash.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memspace import config as config_mod
from memspace.clock import Clock
from memspace.errors import MemspaceError, SpaceNotFound, SpaceUnavailable
from memspace.metrics import Carry
from memspace.supervisor.lifecycle import Events, State, Transition
from memspace.supervisor.registry import Registry, SpaceRecord
from memspace.supervisor.spawner import Spawner, WorkerHandle
from memspace.worker.main import EXIT_BOOT_ERROR, WorkerSpec, entry

log = logging.getLogger("memspace.supervisor")

LIVE = frozenset({State.STARTING, State.RECOVERING, State.READY, State.DRAINING})


@dataclass(eq=False)
class Slot:
    space: str
    state: State
    record: SpaceRecord
    handle: WorkerHandle | None = None
    generation: int = 0
    crashes: deque[float] = field(default_factory=deque)
    backoff_s: float = 0.0
    restart_at: float | None = None
    started_at: float | None = None
    ready_at: float | None = None
    last_seen: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    restart_reasons: dict[str, int] = field(default_factory=dict)
    drain_target: State | None = None
    drain_deadline: float | None = None
    term_at: float | None = None          # when SIGTERM was sent (hung or drain timeout)
    kill_reason: str | None = None
    clean_exit: bool = False              # BYE received
    last_error: str | None = None
    restart_after_exit: bool = False
    repairing: bool = False               # `repair` is rewriting its files: nothing may spawn it
    on_exit: list[Callable[[Slot], None]] = field(default_factory=list)
    on_ready: list[Callable[[Slot], None]] = field(default_factory=list)


def asleep(slot: Slot) -> SpaceUnavailable:
    """The answer to a passive request for a space without a worker on its way. ``last_seq`` (the
    newest WAL seq its last worker reported, when known) lets a change feed that missed the
    space's last waking period see that it has something to fetch."""
    details: dict[str, Any] = {"space": slot.space, "state": slot.state.name, "asleep": True}
    if isinstance(slot.info.get("wal_last_seq"), int):
        details["last_seq"] = slot.info["wal_last_seq"]
    return SpaceUnavailable(f"memory space {slot.space!r} is {slot.state.name}; a passive request does not start it",
                            details)


class Supervisor:
    def __init__(self, cfg: config_mod.Config, registry: Registry, spawner: Spawner, clock: Clock,
                 events: Events | None = None, *, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.data_root = Path(cfg["data_root"])
        self.registry = registry
        self.spawner = spawner
        self.clock = clock
        self.events = events or Events()
        self.rng = rng or random.Random()
        self.router: Any = None                     # set by the arbiter (router.broker.Router)
        self.backend_endpoint = ""
        self.slots: dict[str, Slot] = {}
        self.by_sentinel: dict[int, Slot] = {}
        self.sentinel_version = 0                   # bumped when by_sentinel changes (poll set)
        self.waiting: deque[str] = deque()          # spaces waiting for a free worker slot
        self.deferred: deque[str] = deque()         # spaces to spawn in a later loop step
        self.spawn_budget = float("inf")            # spawns allowed this loop step (the arbiter sets it)
        self.shutting_down = False
        self._timers: list[tuple[float, int, str, str]] = []
        self._timer_seq = 0
        self.worker_config = {k: v for k, v in cfg.as_dict().items()}
        self.counters: dict[str, int] = {"spawns": 0, "hibernations": 0, "crashes": 0, "fallbacks": 0}
        self.carry = Carry()                        # worker-reported counters across incarnations

    # -- lifecycle bookkeeping ---------------------------------------------------------------

    def _set(self, slot: Slot, new: State, reason: str) -> None:
        event = Transition(slot.space, slot.state, new, reason, self.clock.time())
        self.events.emit(event)          # raises IllegalTransition before anything changes
        old, slot.state = slot.state, new
        # Only FAILED outlives a restart of the server (it needs an operator); every other state
        # describes a process that will not exist then. Writing just those keeps sqlite commits off
        # the spawn path. (DELETING is recorded by the registry's tombstone.)
        if new is State.FAILED or old is State.FAILED:
            try:
                self.registry.set_state(slot.space, new if new is State.FAILED else State.REGISTERED)
            except MemspaceError as e:   # row already removed (deletion finished)
                log.debug("registry state of %s not updated: %s", slot.space, e)

    def slot(self, record: SpaceRecord) -> Slot:
        slot = self.slots.get(record.id)
        if slot is None:
            state = State[record.state] if record.state in State.__members__ else State.REGISTERED
            slot = self.slots[record.id] = Slot(record.id, state, record, generation=record.generation)
        return slot

    def space_dir(self, space: str) -> Path:
        return self.data_root / "spaces" / space

    def active(self) -> int:
        return sum(1 for s in self.slots.values() if s.handle is not None)

    # -- activation (called by the router) ---------------------------------------------------

    def activate(self, space: str, *, wake: bool = True) -> None:
        """A request for ``space`` arrived: start its worker unless one is (being) started.

        Raises SpaceNotFound for an unknown space and SpaceUnavailable when it cannot serve
        (FAILED, being deleted or repaired, the server shutting down). ``wake`` false (a passive
        request) starts nothing: a space with no worker on its way raises SpaceUnavailable with
        ``details.asleep`` instead, so an idle subscriber never brings a worker back.
        """
        slot = self.slots.get(space)
        if slot is None:
            record = self.registry.get(space)
            if record is None and self.cfg["auto_create_spaces"] and not self.shutting_down:
                record, _ = self.registry.create(space, dimension=self.cfg["spaces.dimension"], settings={})
            if record is None:
                raise SpaceNotFound(
                    f"memory space {space!r} does not exist; create it first "
                    f"(`memspace space create {space}` or POST /v1/spaces)", {"space": space})
            slot = self.slot(record)
        state = slot.state
        if slot.repairing:
            raise SpaceUnavailable(f"memory space {space!r} is being repaired; retry when the repair has finished",
                                   {"space": space, "state": state.name, "repairing": True, "retry_after_s": 5})
        if state is State.FAILED:
            raise SpaceUnavailable(
                f"memory space {space!r} is FAILED ({slot.last_error or 'too many crashes'}); an operator "
                f"must run `memspace space repair {space}` or `memspace space restart {space}`",
                {"space": space, "state": state.name, "retry_after_s": 30})
        if state is State.DELETING:
            raise SpaceUnavailable(f"memory space {space!r} is being deleted", {"space": space, "state": state.name})
        if self.shutting_down:
            raise SpaceUnavailable("the server is shutting down", {"retry_after_s": 1})
        if not wake:
            if not self._on_its_way(slot):
                raise asleep(slot)
            return
        if state in (State.REGISTERED, State.HIBERNATED, State.STOPPED):
            self.start(slot, "request")
        elif state is State.DRAINING:
            slot.restart_after_exit = True

    def _on_its_way(self, slot: Slot) -> bool:
        """Whether the space has a worker or will get one without being asked again."""
        if slot.state is State.DRAINING:
            return slot.restart_after_exit
        if slot.state in (State.REGISTERED, State.HIBERNATED, State.STOPPED):
            return slot.space in self.waiting or slot.space in self.deferred
        return True   # STARTING, RECOVERING, READY, or BACKOFF (its restart timer runs)

    def start(self, slot: Slot, reason: str) -> None:
        """Spawn the space's worker now, or as soon as a worker slot is free (or, in a burst of
        activations, in a later loop step: ``spawn_budget`` per step). Never while a repair
        rewrites its files (the repair starts it when it finishes, if it should run)."""
        if slot.handle is not None or slot.space in self.waiting or slot.repairing:
            return
        if self.spawn_budget <= 0:
            if slot.space not in self.deferred:
                self.deferred.append(slot.space)
            return
        if self.active() >= self.cfg["max_active_workers"]:
            victim = self._lru_victim(exclude=slot.space)
            if victim is not None:
                self.drain(victim, State.HIBERNATED, "max_active_workers reached")
            self.waiting.append(slot.space)
            return
        self._spawn(slot, reason)

    def start_deferred(self) -> None:
        """Start spaces deferred by an earlier step's burst, within this step's budget."""
        while self.deferred and self.spawn_budget > 0:
            slot = self.slots.get(self.deferred.popleft())
            if slot is not None and slot.handle is None and slot.state in (
                    State.REGISTERED, State.HIBERNATED, State.STOPPED, State.BACKOFF, State.FAILED):
                self.start(slot, "deferred start")

    def _spawn(self, slot: Slot, reason: str) -> None:
        now = self.clock.monotonic()
        self.spawn_budget -= 1
        # the generation tells this incarnation's messages from a predecessor's; it only needs to
        # be unique while this server runs (workers never outlive it)
        slot.generation += 1
        record = slot.record
        spec = WorkerSpec(
            space_id=slot.space,
            directory=str(self.space_dir(slot.space)),
            endpoint=self.backend_endpoint,
            generation=slot.generation,
            settings={**record.settings, "dimension": record.dimension},
            config=self.worker_config,
        )
        slot.clean_exit = False
        slot.kill_reason = None
        slot.term_at = None
        slot.drain_target = None
        slot.drain_deadline = None
        slot.restart_at = None
        slot.restart_after_exit = False
        slot.started_at = slot.last_seen = now
        slot.ready_at = None
        handle = self.spawner.spawn(slot.space, slot.generation, entry, (spec,))
        slot.handle = handle
        self.by_sentinel[handle.sentinel] = slot
        self.sentinel_version += 1
        self.counters["spawns"] += 1
        self._set(slot, State.STARTING, reason)  # REGISTERED/HIBERNATED/STOPPED/BACKOFF/FAILED -> STARTING

    def _lru_victim(self, exclude: str) -> Slot | None:
        best: Slot | None = None
        best_at = float("inf")
        for s in self.slots.values():
            if s.state is not State.READY or s.space == exclude or self.router.busy(s.space):
                continue
            at = self.router.routes[s.space].last_activity if s.space in self.router.routes else 0.0
            if at < best_at:
                best, best_at = s, at
        return best

    # -- worker signals (called by the router) -----------------------------------------------

    def on_worker_seen(self, space: str) -> None:
        slot = self.slots.get(space)
        if slot is not None:
            slot.last_seen = self.clock.monotonic()

    def on_signal(self, space: str, sig: Any) -> None:
        from memspace.wire import MsgType

        slot = self.slots.get(space)
        if slot is None or slot.handle is None:
            return
        info = sig.info
        if info.get("generation") not in (None, slot.generation):
            return   # a previous incarnation's last words
        slot.info.update(info)
        self.carry.report(space, info.get("fsync"))
        if sig.type is MsgType.HEARTBEAT:
            if info.get("phase") == "recovering" and slot.state is State.STARTING:
                self._set(slot, State.RECOVERING, "replaying snapshot and WAL")  # STARTING -> RECOVERING
        elif sig.type is MsgType.READY:
            if slot.state in (State.STARTING, State.RECOVERING):
                slot.ready_at = self.clock.monotonic()
                slot.backoff_s = 0.0
                self._set(slot, State.READY, "worker reported ready")  # STARTING|RECOVERING -> READY
                self.router.worker_ready(space)
                callbacks, slot.on_ready = slot.on_ready, []
                for cb in callbacks:
                    cb(slot)
        elif sig.type is MsgType.BYE:
            slot.clean_exit = True
            if info.get("phase") == "boot_error":
                err = info.get("error") or {}
                slot.last_error = str(err.get("message") or "boot error")

    # -- exits -------------------------------------------------------------------------------

    def reap(self, sentinel: int) -> None:
        """The process behind ``sentinel`` has exited: decide what happens to its space."""
        slot = self.by_sentinel.pop(sentinel, None)
        self.sentinel_version += 1
        if slot is None or slot.handle is None:
            return
        handle = slot.handle
        code = handle.exitcode()
        if code is None:
            # The sentinel fired, so the process is gone; the fork server's status may lag by a
            # moment. Treat an unknown status as a crash (never as a clean exit).
            code = -signal.SIGKILL
        self.spawner.close(handle)
        slot.handle = None
        self.carry.incarnation_ended(slot.space)
        now = self.clock.monotonic()
        drained = slot.drain_target is not None and (code == 0 or slot.term_at is not None)
        if slot.state is State.DELETING:
            self.router.fail(slot.space, SpaceUnavailable(f"memory space {slot.space!r} is being deleted"))
            self._run_exit_callbacks(slot)
        elif code == EXIT_BOOT_ERROR:
            slot.last_error = slot.last_error or "boot error"
            log.error("space %s cannot boot: %s", slot.space, slot.last_error)
            self._fail(slot, f"boot error: {slot.last_error}")
        elif (code == 0 and slot.clean_exit or drained) and slot.kill_reason != "hung":
            target = slot.drain_target or State.STOPPED
            self.router.worker_lost(slot.space, crashed=False)
            if slot.state is State.READY:
                # it drained by itself (SIGTERM from outside, e.g. to the whole process group)
                self._set(slot, State.DRAINING, "worker drained on its own")  # READY -> DRAINING
            if slot.state is not target:
                if target is State.HIBERNATED:
                    self.counters["hibernations"] += 1
                self._set(slot, target, "drained" if code == 0 else "killed after drain timeout")
            self._run_exit_callbacks(slot)
            if (slot.restart_after_exit or self.router.busy(slot.space)) and not self.shutting_down:
                self.start(slot, "requests waiting")
            else:
                # only passive requests (change-feed polls) may be left: they do not wake it
                self.router.release_passive(slot.space, asleep(slot))
        else:
            self._crashed(slot, code, now)
        self._start_waiting()

    def _crashed(self, slot: Slot, code: int, now: float) -> None:
        reason = slot.kill_reason or (f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}")
        self.counters["crashes"] += 1
        slot.restarts += 1
        slot.restart_reasons[reason] = slot.restart_reasons.get(reason, 0) + 1
        slot.last_error = f"worker crashed ({reason})"
        log.warning("space %s worker (pid %s) crashed: %s", slot.space, slot.info.get("pid"), reason)
        self.router.worker_lost(slot.space, crashed=True)
        if self.shutting_down:
            if slot.state is State.READY:
                self._set(slot, State.BACKOFF, reason)  # READY -> BACKOFF: crash
            self._set(slot, State.STOPPED, "crashed during shutdown")  # -> STOPPED: not restarted
            self._run_exit_callbacks(slot)
            return
        window = self.cfg["restart_intensity.window_s"]
        slot.crashes.append(now)
        while slot.crashes and slot.crashes[0] < now - window:
            slot.crashes.popleft()
        if len(slot.crashes) >= self.cfg["restart_intensity.n"]:
            self._fail(slot, f"{len(slot.crashes)} crashes within {window:g} s (last: {reason})")
            return
        initial, cap = self.cfg["restart_backoff_initial_s"], self.cfg["restart_backoff_max_s"]
        slot.backoff_s = min(cap, slot.backoff_s * 2 if slot.backoff_s else initial)
        delay = slot.backoff_s * (0.5 + self.rng.random())   # full jitter around the nominal delay
        slot.restart_at = now + delay
        self._set(slot, State.BACKOFF, reason)  # live state -> BACKOFF: crash
        self._timer(slot.restart_at, "restart", slot.space)
        self._run_exit_callbacks(slot)

    def _fail(self, slot: Slot, why: str) -> None:
        slot.last_error = why
        self._set(slot, State.FAILED, why)
        self.router.fail(slot.space, SpaceUnavailable(
            f"memory space {slot.space!r} is FAILED ({why}); run `memspace space repair {slot.space}` "
            f"or `memspace space restart {slot.space}`", {"space": slot.space, "state": "FAILED"}))
        self._run_exit_callbacks(slot)
        callbacks, slot.on_ready = slot.on_ready, []
        for cb in callbacks:
            cb(slot)

    def _run_exit_callbacks(self, slot: Slot) -> None:
        callbacks, slot.on_exit = slot.on_exit, []
        for cb in callbacks:
            cb(slot)

    def _start_waiting(self) -> None:
        while self.waiting and self.active() < self.cfg["max_active_workers"]:
            slot = self.slots.get(self.waiting.popleft())
            if slot is not None and slot.handle is None and not slot.repairing and slot.state in (
                    State.REGISTERED, State.HIBERNATED, State.STOPPED, State.BACKOFF):
                self._spawn(slot, "worker slot free")

    # -- drains ------------------------------------------------------------------------------

    def drain(self, slot: Slot, target: State, reason: str) -> None:
        """Stop admitting, let the worker finish, checkpoint and exit; end in ``target``."""
        if slot.handle is None or slot.state is State.DRAINING:
            if slot.state is State.DRAINING and target is State.STOPPED:
                slot.drain_target = target
            return
        slot.drain_target = target
        slot.drain_deadline = self.clock.monotonic() + self.cfg["drain_timeout_s"]
        self._timer(slot.drain_deadline, "drain_timeout", slot.space)
        self.router.hold(slot.space)
        if slot.state is State.READY:
            self._set(slot, State.DRAINING, reason)  # READY -> DRAINING
            self.router.send_control(slot.space, "drain")
        else:
            # STARTING/RECOVERING: the worker cannot listen yet; drain as soon as it is READY
            slot.on_ready.append(self._drain_after_ready)

    def _drain_after_ready(self, slot: Slot) -> None:
        if slot.state is State.READY and slot.drain_target is not None:
            target, slot.drain_target = slot.drain_target, None
            self.drain(slot, target, "drain requested while starting")

    # -- timers ------------------------------------------------------------------------------

    def _timer(self, when: float, kind: str, space: str) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, space))

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def run_timers(self) -> None:
        now = self.clock.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, space = heapq.heappop(self._timers)
            slot = self.slots.get(space)
            if slot is None:
                continue
            if kind == "restart" and slot.state is State.BACKOFF and slot.restart_at is not None \
                    and slot.restart_at <= now:
                self.start(slot, "restart after crash")
            elif kind == "drain_timeout" and slot.state is State.DRAINING and slot.handle is not None \
                    and slot.drain_deadline is not None and slot.drain_deadline <= now:
                log.warning("space %s did not drain within %g s; terminating", space, self.cfg["drain_timeout_s"])
                self._terminate(slot, "drain timeout")
            elif kind == "delete_timeout" and slot.state is State.DELETING and slot.handle is not None:
                self._terminate(slot, "delete timeout")
            elif kind == "kill" and slot.handle is not None and slot.term_at is not None:
                log.warning("space %s worker ignored SIGTERM; killing", space)
                slot.handle.signal(signal.SIGKILL)

    def _terminate(self, slot: Slot, reason: str) -> None:
        """SIGTERM now, SIGKILL if still alive after one liveness period."""
        if slot.handle is None or slot.term_at is not None:
            return
        slot.kill_reason = slot.kill_reason or reason
        slot.term_at = self.clock.monotonic()
        slot.handle.signal(signal.SIGTERM)
        grace = max(1.0, self.cfg["heartbeat_s"] * self.cfg["heartbeat_liveness"])
        self._timer(slot.term_at + grace, "kill", slot.space)

    def check_heartbeats(self) -> None:
        """Kill workers that stopped heartbeating (serving states only: replay may be long)."""
        now = self.clock.monotonic()
        limit = self.cfg["heartbeat_s"] * self.cfg["heartbeat_liveness"]
        # A worker executing a long request (a big batch into a big space, a checkpoint) cannot
        # heartbeat; while it has requests in flight it gets their deadline as grace, so only a
        # worker silent beyond that (or idle and silent) counts as hung.
        busy_limit = limit + self.cfg["request_timeout_s"]
        for slot in self.slots.values():
            if slot.handle is None or slot.state not in (State.READY, State.DRAINING) or slot.term_at is not None:
                continue
            silent = now - slot.last_seen
            if silent > limit and (silent > busy_limit or not self.router.busy(slot.space)):
                log.error("space %s worker (pid %d) missed heartbeats for %.1f s: hung",
                          slot.space, slot.handle.pid, now - slot.last_seen)
                self._terminate(slot, "hung")

    def hibernate_idle(self) -> None:
        idle = self.cfg["idle_hibernate_s"]
        if not idle:
            return
        now = self.clock.monotonic()
        for slot in list(self.slots.values()):
            if slot.state is State.READY and not self.router.busy(slot.space):
                route = self.router.routes.get(slot.space)
                last = route.last_activity if route is not None else slot.ready_at or now
                if now - max(last, slot.ready_at or 0.0) >= idle:
                    self.drain(slot, State.HIBERNATED, f"idle for {idle:g} s")

    def live_spaces(self) -> list[str]:
        return [s.space for s in self.slots.values() if s.handle is not None]

    # -- shutdown ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Drain every worker; BACKOFF spaces stop. :meth:`finished` says when all are gone."""
        self.shutting_down = True
        self.waiting.clear()
        self.deferred.clear()
        for slot in list(self.slots.values()):
            if slot.handle is not None:
                if slot.state in (State.READY, State.DRAINING):
                    self.drain(slot, State.STOPPED, "shutdown")
                else:
                    slot.drain_target = State.STOPPED
                    self._terminate(slot, "shutdown")
            elif slot.state is State.BACKOFF:
                self._set(slot, State.STOPPED, "shutdown")  # BACKOFF -> STOPPED

    def finished(self) -> bool:
        return all(s.handle is None for s in self.slots.values())

    def kill_all(self) -> None:
        for slot in self.slots.values():
            if slot.handle is not None:
                slot.handle.signal(signal.SIGKILL)

    def __repr__(self) -> str:
        return f"<Supervisor {len(self.slots)} spaces, {self.active()} workers, pid {os.getpid()}>"
