"""The worker: one OS process serving one memory space.

Life of a worker::

    boot     title, rlimits, parent-death signal, DEALER socket (routing id = space id)
             HEARTBEAT {phase: recovering}; open the space (snapshot + WAL replay); READY
    serve    block on the socket; take every request already waiting (up to MAX_BATCH);
             apply them all inside one group commit (one fsync); then send the replies;
             heartbeat every heartbeat_s; fsync on the interval policy's timer
    drain    on CONTROL drain/stop or SIGTERM: finish the batch, checkpoint, close, BYE, exit 0

Exit codes are part of the supervisor contract (gunicorn's WORKER_BOOT_ERROR):
:data:`EXIT_BOOT_ERROR` means the space cannot be opened (corrupt files, bad
settings) and restarting will not help; anything else non-zero is a crash to
recover from. An exception that is not a :class:`MemspaceError` is a bug: the
worker exits at once *without committing*, so nothing of the batch becomes
durable and the router re-sends it to the successor (a request that kills two
workers in a row is answered POISON_REQUEST).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import orjson
import zmq

from memspace import config as config_mod
from memspace import wire
from memspace.errors import MemspaceError, StorageError
from memspace.storage import fsutil
from memspace.storage.space import Space, open_space
from memspace.testing import faults
from memspace.worker.feed import Feed, Waiter
from memspace.worker.ops import OPS
from memspace.zmqutil import has_input, send_frames

log = logging.getLogger("memspace.worker")

EXIT_OK = 0
EXIT_BOOT_ERROR = 3        # do not restart: the files or settings need an operator
EXIT_STORAGE_FAILURE = 4   # a WAL write/fsync failed: restart and recover from the files
EXIT_ROUTER_LOST = 5       # the router stopped answering: nobody to serve
EXIT_BUG = 70              # an unexpected exception while serving (EX_SOFTWARE)

MAX_BATCH = 256
#: A heartbeat carries full statistics at least every this many beats (and whenever the WAL grew).
FULL_INFO_EVERY = 10


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, passed from the supervisor through the fork server."""

    space_id: str
    directory: str
    endpoint: str                      # the router's backend endpoint
    generation: int
    settings: dict[str, Any]           # SpaceSettings as a dict (from the registry)
    config: dict[str, Any] = field(default_factory=dict)   # resolved Config values


def entry(spec: WorkerSpec) -> None:
    """Process entry point (the spawner's target)."""
    code = EXIT_BUG
    try:
        code = Worker(spec).run()
    except BaseException:  # noqa: BLE001 - last resort: say what happened, exit as a crash
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    """Resident set size now (``/proc/self/statm``: cheap enough for every heartbeat)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _set_parent_death_signal() -> None:
    """Die with the parent (the fork server), so a killed tree leaves no worker behind."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _apply_rlimits(cfg: config_mod.Config) -> None:
    mb = cfg["worker_memory_limit_mb"]
    if mb:
        limit = mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    nofile = cfg["worker_open_files"]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        nofile = min(nofile, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))


def _configure_logging(cfg: config_mod.Config, space_id: str) -> None:
    from memspace.logs import configure, log_file

    configure(cfg["log.format"], cfg["log.level"], space=space_id, file=log_file(cfg))


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.cfg = config_mod.load(None, env={}, overrides=spec.config)
        self.space: Space | None = None
        self.started = time.monotonic()
        self.feed = Feed()
        self._stopping = False
        self._crash_marker = faults.crash_marker()

    # -- boot --------------------------------------------------------------------------------

    def run(self) -> int:
        spec, cfg = self.spec, self.cfg
        with contextlib.suppress(Exception):
            import setproctitle

            setproctitle.setproctitle(f"memspace: worker {spec.space_id}")
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C goes to `memspace serve`, which drains us
        _set_parent_death_signal()
        _configure_logging(cfg, spec.space_id)
        _apply_rlimits(cfg)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._on_sigterm)

        ctx = zmq.Context(1)
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, spec.space_id.encode())
        sock.setsockopt(zmq.LINGER, 2000)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.connect(spec.endpoint)
        try:
            sock.send_multipart(wire.encode_heartbeat(self._info("recovering")))
            try:
                self.space = open_space(spec.directory, settings=spec.settings, config=cfg, space_id=spec.space_id,
                                        on_record=self.feed.record, record_tail=self.feed.keep)
                # events before these are no longer available to subscribers
                self.feed.covered_after = max(self.feed.covered_after, self.space.hooked_after)
                self.feed.last_seq = max(self.feed.last_seq, self.space.last_seq)
            except (StorageError, MemspaceError) as e:
                log.error("cannot open space %s: %s", spec.space_id, e.message)
                sock.send_multipart(wire.encode_bye({**self._info("boot_error"), "error": e.to_dict()}))
                return EXIT_BOOT_ERROR
            sock.send_multipart(wire.encode_ready(self._info("ready")))
            log.info("space %s ready (generation %d, %d memories, recovered %d records)",
                     spec.space_id, spec.generation, self.space.count(), self.space.stats().recovered_records)
            return self._serve(sock, wake_r)
        finally:
            if self.space is not None and not self.space.closed:
                with contextlib.suppress(Exception):
                    self.space.close()
            sock.close(linger=2000)
            ctx.term()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._stopping = True   # handlers only record; the loop acts

    def _info(self, phase: str) -> dict[str, Any]:
        info: dict[str, Any] = {"pid": os.getpid(), "generation": self.spec.generation, "phase": phase,
                                "uptime_s": time.monotonic() - self.started}
        if self.space is not None and not self.space.closed:
            st = self.space.stats()
            info.update(memories=st.memories, memories_by_tier=st.memories_by_tier, wal_bytes=st.wal_bytes,
                        wal_lag_bytes=st.wal_bytes_since_checkpoint, wal_last_seq=st.wal_last_seq,
                        checkpoint_at=st.checkpoint_at, checkpoint_lsn=st.checkpoint_lsn)
            info["fsync"] = self.space.fsync_histogram
        info["rss_bytes"] = _rss_bytes()
        return info

    # -- serve -------------------------------------------------------------------------------

    def _serve(self, sock: zmq.Socket, wake_fd: int) -> int:
        assert self.space is not None
        space = self.space
        heartbeat = self.cfg["heartbeat_s"]
        router_timeout = heartbeat * self.cfg["heartbeat_liveness"]
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(wake_fd, zmq.POLLIN)
        now = time.monotonic()
        next_heartbeat = now + heartbeat
        router_seen = now
        drain_reason: str | None = None
        beats, reported_seq = 0, space.last_seq
        while True:
            wait = next_heartbeat - now
            due = space.sync_due()
            if due is not None:
                wait = min(wait, due)
            waiter_due = self.feed.next_deadline()
            if waiter_due is not None:
                wait = min(wait, waiter_due - now)
            events = dict(poller.poll(max(0.0, wait) * 1000.0))
            now = time.monotonic()
            if wake_fd in events:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_fd, 512)
            if self._stopping:
                drain_reason = "sigterm"
            if sock in events:
                drain_reason = self._handle_batch(sock) or drain_reason
                # after the batch, not before: a long batch (checkpoint) is not router silence
                now = router_seen = time.monotonic()
            self._answer_waiters(sock, now)
            if drain_reason is not None:
                return self._drain(sock, drain_reason)
            due = space.sync_due()
            if due is not None and due <= 0:
                space.sync()
            if now >= next_heartbeat:
                # full statistics when something changed or every few beats; otherwise a bare beat
                beats += 1
                if space.last_seq != reported_seq or beats % FULL_INFO_EVERY == 0:
                    reported_seq = space.last_seq
                    sock.send_multipart(wire.encode_heartbeat(self._info("ready")))
                else:
                    sock.send_multipart(wire.encode_heartbeat({"generation": self.spec.generation}))
                next_heartbeat = now + heartbeat
            if sock not in events and now - router_seen > router_timeout:
                log.error("router silent for %.1f s; exiting", now - router_seen)
                space.close()
                return EXIT_ROUTER_LOST

    def _handle_batch(self, sock: zmq.Socket) -> str | None:
        """Take every waiting message, apply under one group commit, then reply. Returns a
        drain reason if a CONTROL asked for one."""
        assert self.space is not None
        space = self.space
        batch: list[list[bytes]] = []
        while len(batch) < MAX_BATCH and has_input(sock):
            batch.append(sock.recv_multipart())
        replies: list[list[bytes]] = []
        drain: str | None = None
        try:
            with space.group_commit():
                for frames in batch:
                    try:
                        kind = wire.message_type(frames)
                    except wire.WireError as e:
                        log.warning("dropping malformed message: %s", e.message)
                        continue
                    if kind is wire.MsgType.REQUEST:
                        reply = self._handle_request(frames)
                        if reply is not None:
                            replies.append(reply)
                    elif kind is wire.MsgType.CONTROL:
                        drain = self._handle_control(frames) or drain
                    # a router HEARTBEAT only proves the router is alive
        except StorageError as e:
            log.critical("WAL commit failed: %s; exiting without acknowledging", e.message)
            os._exit(EXIT_STORAGE_FAILURE)
        except OSError as e:
            log.critical("WAL commit failed: %s; exiting without acknowledging", e)
            os._exit(EXIT_STORAGE_FAILURE)
        for reply in replies:
            send_frames(sock, reply)
        return drain

    def _handle_request(self, frames: list[bytes]) -> list[bytes] | None:
        assert self.space is not None
        try:
            req = wire.split_worker_request(frames, max_bytes=self.cfg["limits.max_request_bytes"])
        except wire.WireError as e:
            ticket = frames[2] if len(frames) > 2 and len(frames[2]) == wire.TICKET_BYTES else None
            if ticket is None:
                log.warning("dropping malformed request: %s", e.message)
                return None
            return wire.encode_error(e.request_id or b"?", e.code, e.message, e.details, ticket=ticket)
        if self._crash_marker is not None and self._crash_marker in req.body:
            os._exit(faults.EXIT_INJECTED)   # test fault injection (off unless its env var is set)
        try:
            args = wire.decode_body(req.body, max_bytes=self.cfg["limits.max_request_bytes"])
            if req.op == "events":
                return self._events(req, args)
            result = OPS[req.op](self.space, args, req.request_id)
            return wire.encode_reply(req.request_id, result, ticket=req.ticket,
                                     max_bytes=self.cfg["limits.max_request_bytes"] * 4)
        except MemspaceError as e:
            return wire.encode_error(req.request_id, e.code, e.message, e.details, ticket=req.ticket)
        except Exception:
            # A bug, not a user error: do not commit anything of this batch; the router re-sends
            # it to the next worker and names the request POISON if it kills that one too.
            log.critical("unexpected error in %s (request %s); exiting without commit:\n%s",
                         req.op, req.request_id, traceback.format_exc())
            logging.shutdown()
            os._exit(EXIT_BUG)

    def _events(self, req: wire.WorkerRequest, args: dict[str, Any]) -> list[bytes] | None:
        """Change events after ``after``; with ``wait_ms`` a long poll answered once events arrive
        (after the commit that makes them durable) or the wait ends."""
        after, wait_ms, limit = Feed.parse(args)
        if wait_ms == 0 or self.feed.has_news(after):
            return wire.encode_reply(req.request_id, self.feed.answer(after, limit), ticket=req.ticket)
        self.feed.park(Waiter(req.ticket, req.request_id, after, limit, time.monotonic() + wait_ms / 1000.0))
        return None

    def _answer_waiters(self, sock: zmq.Socket, now: float, closing: bool = False) -> None:
        for waiter, result in self.feed.ready(now, closing):
            sock.send_multipart(wire.encode_reply(waiter.request_id, result, ticket=waiter.ticket))

    def _handle_control(self, frames: list[bytes]) -> str | None:
        assert self.space is not None
        try:
            control = wire.decode_control(frames)
        except wire.WireError as e:
            log.warning("bad control message: %s", e.message)
            return None
        if control.command == "checkpoint":
            self.space.checkpoint()
            return None
        return control.command   # drain | stop

    def _drain(self, sock: zmq.Socket, reason: str) -> int:
        """Everything received is answered; make it durable, checkpoint, say BYE, exit 0."""
        assert self.space is not None
        space = self.space
        self._answer_waiters(sock, time.monotonic(), closing=True)
        try:
            if reason != "stop" and space.stats().wal_bytes_since_checkpoint > 0:
                space.checkpoint()
            info = self._info("drained")
            space.close()
            # what `delete` reports as removed if the space is deleted while hibernated
            fsutil.atomic_write(os.path.join(self.spec.directory, "last_stats.json"),
                                orjson.dumps({"memories": info.get("memories"), "at": time.time()}))
        except (StorageError, OSError) as e:
            log.critical("drain of %s failed: %s", self.spec.space_id, e)
            return EXIT_STORAGE_FAILURE
        info["reason"] = reason
        sock.send_multipart(wire.encode_bye(info))
        log.info("space %s drained (%s)", self.spec.space_id, reason)
        return EXIT_OK
