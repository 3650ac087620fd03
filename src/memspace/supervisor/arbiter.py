"""The arbiter: the main loop of ``memspace serve``'s core process (router + supervisor).

Its loop reads as verbs (gunicorn's arbiter)::

    wait()              zmq poll on: client socket, worker socket, worker sentinels, signal pipe,
                        finished-jobs pipe
    dispatch_signals()  SIGTERM/SIGINT -> graceful shutdown; SIGCHLD needs nothing (sentinels)
    route()             client requests -> workers, worker replies -> clients
    reap()              exited workers -> restart, hibernate, fail, finish a delete
    collect()           finished background jobs (a repair) -> their answers
    tick()              timers: restarts, drain timeouts, deadlines, heartbeats, idle hibernation

Nothing in the loop blocks on a space's files: work that does (``repair``) runs as a
job on its own thread (:mod:`memspace.supervisor.jobs`) and is answered from
``collect()``; shutdown waits for running jobs before it closes the registry.

Signal handlers only record the signal (``signal.set_wakeup_fd`` wakes the poll);
the loop acts. Startup order matters: the fork server starts *before* any zmq
context exists, so workers never inherit sockets or threads from this process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import zmq

from memspace import config as config_mod
from memspace.auth import Authorizer
from memspace.clock import SYSTEM_CLOCK, Clock
from memspace.ids import is_valid_space_id
from memspace.router.broker import Router
from memspace.storage import fsutil
from memspace.supervisor.admin import Admin
from memspace.supervisor.core import Supervisor
from memspace.supervisor.jobs import Jobs
from memspace.supervisor.lifecycle import Events, State, Transition
from memspace.supervisor.registry import Registry
from memspace.supervisor.spawner import ForkServerSpawner, Spawner

log = logging.getLogger("memspace.arbiter")

#: Workers started per loop step at most: a burst of first requests for many spaces must not
#: stall routing (and heartbeats) for the spaces already running.
SPAWNS_PER_STEP = 4
#: ipc:// paths are limited to ~107 bytes by the kernel's sockaddr_un.
_MAX_IPC_PATH = 100


class Arbiter:
    def __init__(self, cfg: config_mod.Config, *, spawner: Spawner | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.cfg = cfg
        self.clock = clock
        self.data_root = Path(cfg["data_root"]).resolve()
        self.spawner = spawner or ForkServerSpawner()
        self.events = Events()
        self.events.subscribe(_log_transition)
        self._signals: list[int] = []
        self._stopping = False
        self.ctx: zmq.Context | None = None
        self.endpoints: dict[str, str] = {}
        self.exit_code = 0
        self.gateways: Any = None                 # serve.Gateways, when gateways run

    # -- start -------------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Start the fork server, open the registry and sockets, reconcile. Returns endpoints."""
        (self.data_root / "spaces").mkdir(parents=True, exist_ok=True)
        (self.data_root / "run").mkdir(exist_ok=True)
        self.spawner.start()                      # before any zmq context or thread exists
        self.registry = Registry(self.data_root / "registry.sqlite")
        self.ctx = zmq.Context()
        self.sup = Supervisor(self.cfg.replace({"data_root": str(self.data_root)}), self.registry, self.spawner,
                              self.clock, self.events)
        self.jobs = Jobs()
        self.admin_ops = Admin(self.sup, self.jobs)
        self.router = Router(
            self.ctx, self.cfg["zmq.bind"], self._backend_endpoint(),
            supervisor=self,  # type: ignore[arg-type]
            clock=self.clock.monotonic,
            default_space=self.cfg["default_space"],
            require_explicit_space=self.cfg["require_explicit_space"],
            queue_limit=self.cfg["router_queue_per_space"],
            passive_limit=self.cfg["router_passive_per_space"],
            request_timeout_s=self.cfg["request_timeout_s"],
            start_timeout_s=self.cfg["start_timeout_s"],
            max_bytes=self.cfg["limits.max_request_bytes"],
            on_fallback=self._on_fallback,
            local_frontend=self._ipc_endpoint("clients.sock"),
            authorizer=Authorizer.from_config(self.cfg),
        )
        # lifecycle transitions for the gateways' change feeds: [space, orjson event]
        self.publisher = self.ctx.socket(zmq.PUB)
        self.publisher.setsockopt(zmq.LINGER, 0)
        self.publisher.bind(self._ipc_endpoint("events.sock") or "tcp://127.0.0.1:*")
        self.events_endpoint = self.publisher.getsockopt_string(zmq.LAST_ENDPOINT)
        self.events.subscribe(self._publish_transition)
        self.sup.router = self.router
        self.sup.backend_endpoint = self.router.backend_endpoint
        self.reconcile()
        self._install_signals()
        self.endpoints = {"zmq": self.router.frontend_endpoint, "events": self.events_endpoint,
                          "pid": str(os.getpid())}
        return self.endpoints

    def _backend_endpoint(self) -> str:
        return self._ipc_endpoint("workers.sock") or "tcp://127.0.0.1:*"

    def _ipc_endpoint(self, name: str) -> str | None:
        """``ipc://<data_root>/run/<name>``, or None when the path is too long for a unix socket."""
        path = self.data_root / "run" / name
        if len(str(path)) > _MAX_IPC_PATH:
            return None
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return f"ipc://{path}"

    def _publish_transition(self, t: Transition) -> None:
        event = {"type": "lifecycle", "space": t.space, "old": t.old.name, "new": t.new.name,
                 "reason": t.reason, "at": t.at}
        with contextlib.suppress(zmq.ZMQError):
            self.publisher.send_multipart([t.space.encode(), orjson.dumps(event)], zmq.NOBLOCK)

    def reconcile(self) -> None:
        """Desired (registry) vs actual (directories, previous run's states): plan, then apply."""
        records = {r.id: r for r in self.registry.list(include_tombstoned=True)}
        dirs = {p.name for p in (self.data_root / "spaces").iterdir() if p.is_dir()}
        unfinished_deletes = [r for r in records.values() if r.tombstoned]
        orphans = sorted(dirs - set(records))
        failed = [r for r in records.values() if not r.tombstoned and r.state == State.FAILED.name]
        for record in unfinished_deletes:
            log.info("finishing the deletion of %s interrupted by the last shutdown", record.id)
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self.data_root / "spaces" / record.id)
            self.registry.remove(record.id)
        for name in orphans:
            # A directory no registry row claims: never delete data we cannot account for.
            aside = self.data_root / "orphans" / f"{name}-{int(time.time())}"
            aside.parent.mkdir(exist_ok=True)
            os.replace(self.data_root / "spaces" / name, aside)
            log.warning("space directory %s has no registry entry; moved to %s", name, aside)
        for record in self.registry.list():
            if record.state not in (State.FAILED.name, State.REGISTERED.name):
                self.registry.set_state(record.id, State.REGISTERED)
        default = self.cfg["default_space"]
        if is_valid_space_id(default) and self.registry.get(default) is None:
            self.registry.create(default, dimension=self.cfg["spaces.dimension"], settings={})
        for record in self.registry.list():
            self.sup.slot(record)
        for record in failed:
            self.sup.slots[record.id].last_error = "FAILED before the last shutdown"

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._record_signal)
        self._exits = select.epoll()
        self._watched: dict[int, int] = {}
        self._poller = zmq.Poller()
        for item in (self.router.frontend, self.router.backend, self._wake_r, self._exits.fileno(),
                     self.jobs.fileno()):
            self._poller.register(item, zmq.POLLIN)

    def _record_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)     # handlers only record; the loop dispatches

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT and every worker has drained. Returns the exit code."""
        try:
            while not (self._stopping and self.sup.finished() and self.jobs.idle()):
                self.step()
        finally:
            if self.gateways is not None:
                self.gateways.stop_all()
            self.close()
        return self.exit_code

    def step(self, max_wait: float = 1.0) -> None:
        events = self.wait(max_wait)
        if self._wake_r in events:
            self.dispatch_signals()
        if self.router.backend in events:
            self.router.handle_backend()
        if self.router.frontend in events:
            self.router.handle_frontend()
        if self._exits.fileno() in events:
            self.reap()
        if self.jobs.fileno() in events:
            self.jobs.collect()
        self.sup.spawn_budget = SPAWNS_PER_STEP
        self.sup.start_deferred()
        self.tick()

    def wait(self, max_wait: float) -> dict[Any, int]:
        """Poll a fixed set: two sockets, the signal pipe, the finished-jobs pipe, and one epoll
        descriptor that becomes readable when any worker or gateway exits (so the cost does not
        grow with workers)."""
        self._sync_exit_watch()
        now = self.clock.monotonic()
        wake = now + max_wait
        for when in (self.sup.next_timer(), self.router.next_deadline(), self._next_tick):
            if when is not None and when < wake:
                wake = when
        return dict(self._poller.poll(max(0.0, wake - now) * 1000.0))

    def _sync_exit_watch(self) -> None:
        gateways = self.gateways.sentinels() if self.gateways is not None else {}
        version = (self.sup.sentinel_version, tuple(gateways))
        if version == self._watched_version:
            return
        # fd -> pid of its process: a closed sentinel's number is reused by the next spawn, and
        # closing it already removed it from the epoll set, so compare processes, not numbers
        wanted = {fd: slot.handle.pid for fd, slot in self.sup.by_sentinel.items() if slot.handle is not None}
        wanted.update({fd: gw.process.pid for fd, gw in gateways.items()})
        for fd, owner in self._watched.items():
            if wanted.get(fd) != owner:
                with contextlib.suppress(OSError, ValueError):
                    self._exits.unregister(fd)
        for fd, owner in wanted.items():
            if self._watched.get(fd) != owner:
                try:
                    self._exits.register(fd, select.EPOLLIN)
                except FileExistsError:
                    self._exits.modify(fd, select.EPOLLIN)
        self._watched = wanted
        self._watched_version = version

    _next_tick = 0.0
    _watched_version: Any = None

    def dispatch_signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name.lower()
            getattr(self, f"handle_{name}", self.handle_sigterm)()

    def handle_sigterm(self) -> None:
        if not self._stopping:
            log.info("shutting down: draining %d workers", self.sup.active())
            self._stopping = True
            self.router.accepting = False
            if self.gateways is not None:
                for gateway in self.gateways.items:   # stop taking HTTP/gRPC requests first
                    if gateway.process is not None:
                        gateway.process.terminate()
            self.sup.shutdown()

    handle_sigint = handle_sigterm

    def handle_sighup(self) -> None:
        log.info("SIGHUP: nothing to reload; configuration changes need a restart")

    def reap(self) -> None:
        """Handle every exited worker or gateway (their sentinels are readable)."""
        ready = {fd for fd, _ in self._exits.poll(0)}
        for sentinel in [s for s in self.sup.by_sentinel if s in ready]:
            self.sup.reap(sentinel)
        if self.gateways is not None:
            for sentinel, gateway in self.gateways.sentinels().items():
                if sentinel in ready:
                    self.gateways.exited(gateway, self._stopping)

    def tick(self) -> None:
        self.sup.run_timers()
        self.router.expire()
        now = self.clock.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + min(1.0, self.cfg["heartbeat_s"])
            self.router.heartbeat(self.sup.live_spaces(), quiet_for=self.cfg["heartbeat_s"])
            self.sup.check_heartbeats()
            if not self._stopping:
                self.sup.hibernate_idle()

    # -- the router's supervisor interface ---------------------------------------------------

    def activate(self, space: str, *, wake: bool = True) -> None:
        self.sup.activate(space, wake=wake)

    def admin(self, client: bytes, req: Any) -> None:
        self.admin_ops.handle(client, req)

    def on_signal(self, space: str, sig: Any) -> None:
        self.sup.on_signal(space, sig)

    def on_worker_seen(self, space: str) -> None:
        self.sup.on_worker_seen(space)

    def _on_fallback(self, client: bytes) -> None:
        self.sup.counters["fallbacks"] += 1

    # -- end ---------------------------------------------------------------------------------

    def close(self) -> None:
        if self.ctx is None:
            return
        self.sup.kill_all()   # only workers that outlived their drain and SIGTERM are left here
        self.router.close()
        self.publisher.close(0)
        self.ctx.term()
        self.ctx = None
        self.registry.close()
        self.jobs.close()
        signal.set_wakeup_fd(-1)
        self._exits.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def write_endpoints(data_root: Path, endpoints: dict[str, str]) -> None:
    fsutil.atomic_write(data_root / "endpoints.json", orjson.dumps(endpoints, option=orjson.OPT_INDENT_2))


def _log_transition(t: Transition) -> None:
    log.info("space %s: %s -> %s (%s)", t.space, t.old.name, t.new.name, t.reason,
             extra={"space": t.space})

