"""The router: forwards each client request to the worker of its space, and back.

Two ROUTER sockets: the *frontend* for clients (native zmq clients and the
HTTP/gRPC gateways), the *backend* for workers, whose routing id is their space
id (ROUTER_HANDOVER lets a restarted worker take its identity over;
ROUTER_MANDATORY turns a send to a vanished worker into an error instead of a
silent drop). Request bodies are never decoded here.

Per space the router keeps a :class:`Route`:

``queue``     requests waiting for the worker to become ready; they expire with
              SPACE_UNAVAILABLE after ``start_timeout_s`` or DEADLINE_EXCEEDED at
              their own deadline.
``inflight``  requests sent to the worker, by ticket, until the reply comes back
              or their deadline passes (DEADLINE_EXCEEDED; a late reply is dropped).
``suspects``  after a worker crash, the requests that were in flight. They are
              re-sent *one at a time* to the successor before anything else, so
              the request that kills a worker is isolated: a request in flight at
              two consecutive crashes is answered POISON_REQUEST and dropped.
              Re-sending is safe because writes are idempotent by request id.

Bounds: a space holds at most ``queue_limit`` real requests that are not answered yet
(queued, in flight or suspect); more are answered OVERLOADED at once. Passive requests
have a bound of their own (``passive_limit``) and never take room from real ones: open
change feeds, however many, cannot make a write OVERLOADED; a poll over its bound is
answered OVERLOADED (the feed backs off and polls again).

A *passive* request (meta ``passive``: a change feed's long poll) is routed like any
other but is not activity: it does not move ``last_activity``, :meth:`busy` ignores
it (so an idle space with open feeds hibernates on schedule), and it never starts a
worker: for a space without one the supervisor refuses it (SPACE_UNAVAILABLE with
``details.asleep``), and passive requests still queued when a worker drains away are
answered the same way (:meth:`release_passive`).

The supervisor (same process, same loop) decides when a space starts, stops or
fails; it tells the router through :meth:`worker_ready`, :meth:`worker_lost`,
:meth:`hold` and :meth:`fail`. The router asks it to :meth:`Supervisor.activate`
a space on first use and hands it admin requests and worker signals.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import zmq

from memspace import wire
from memspace.errors import MemspaceError, Overloaded, SpaceRequired, SpaceUnavailable
from memspace.metrics import RequestMetrics
from memspace.zmqutil import has_input, send_frames

log = logging.getLogger("memspace.router")


class Supervisor(Protocol):
    def activate(self, space: str, *, wake: bool = True) -> None:
        """Make sure a worker for ``space`` is (being) started; raise MemspaceError if it cannot be.
        With ``wake`` false start nothing: raise SPACE_UNAVAILABLE (``details.asleep``) unless a
        worker is already on its way."""

    def admin(self, client: bytes, req: wire.ClientRequest) -> None:
        """Handle an admin op; reply later or now via :meth:`Router.reply`."""

    def on_signal(self, space: str, signal: wire.Signal) -> None:
        """A worker's READY, HEARTBEAT or BYE."""

    def on_worker_seen(self, space: str) -> None:
        """Any message from a worker (proves it alive)."""


@dataclass(eq=False)
class Pending:
    client: bytes
    req: wire.ClientRequest
    deadline: float
    queued_at: float
    attempts: int = 0        # crashes of the space this request was in flight at
    passive: bool = False    # a background request: not activity, never wakes the space
    ticket: bytes = b""
    done: bool = False       # answered (lazy deletion from the deadline heap)


@dataclass(eq=False)
class Route:
    space: str
    ready: bool = False
    queue: deque[Pending] = field(default_factory=deque)
    inflight: dict[bytes, Pending] = field(default_factory=dict)
    suspects: deque[Pending] = field(default_factory=deque)
    probing: bytes | None = None          # ticket of the suspect being re-sent alone
    last_activity: float = 0.0
    last_sent: float = 0.0                 # last message to the worker (a heartbeat is implied)
    # requests admitted and not answered yet, wherever they wait (the bounds of submit())
    real: int = 0
    passive: int = 0


class Router:
    def __init__(self, ctx: zmq.Context, frontend: str, backend: str, *, supervisor: Supervisor,
                 clock: Callable[[], float], default_space: str, require_explicit_space: bool,
                 queue_limit: int, request_timeout_s: float, start_timeout_s: float,
                 max_bytes: int, on_fallback: Callable[[bytes], None] | None = None,
                 local_frontend: str | None = None, authorizer: Any = None,
                 passive_limit: int | None = None) -> None:
        self.supervisor = supervisor
        self.clock = clock
        self.default_space = default_space
        self.require_explicit_space = require_explicit_space
        self.queue_limit = queue_limit
        self.passive_limit = queue_limit if passive_limit is None else passive_limit
        self.request_timeout_s = request_timeout_s
        self.start_timeout_s = start_timeout_s
        self.max_bytes = max_bytes
        self.on_fallback = on_fallback
        self.authorizer = authorizer               # memspace.auth.Authorizer when auth.mode = token
        self.routes: dict[str, Route] = {}
        self.metrics = RequestMetrics()
        #: errors answered before a request reached a known space (unknown space, bad frames...)
        self.rejected: dict[str, int] = {}
        self.accepting = True
        self._tickets = 0
        # Deadlines without a heap: requests with the same timeout expire in arrival order, so one
        # FIFO per distinct timeout suffices (O(1) per request); answered ones are dropped from the
        # front as they come up.
        self._by_timeout: dict[float, deque[Pending]] = {}
        self._unsent: deque[Pending] = deque()   # queued while their space starts (start_timeout_s)
        self.frontend = ctx.socket(zmq.ROUTER)
        self.frontend.setsockopt(zmq.LINGER, 0)
        self.frontend.setsockopt(zmq.SNDHWM, 0)
        self.frontend.setsockopt(zmq.RCVHWM, 0)
        self.frontend.setsockopt(zmq.MAXMSGSIZE, max_bytes + 65536)
        self.frontend.bind(_any_port(frontend))
        self.frontend_endpoint = self.frontend.getsockopt_string(zmq.LAST_ENDPOINT)
        # gateways on this machine connect over ipc:// (cheaper than loopback TCP)
        self.local_endpoint = self.frontend_endpoint
        if local_frontend is not None:
            self.frontend.bind(_any_port(local_frontend))
            self.local_endpoint = self.frontend.getsockopt_string(zmq.LAST_ENDPOINT)
        self.backend = ctx.socket(zmq.ROUTER)
        self.backend.setsockopt(zmq.LINGER, 0)
        self.backend.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.backend.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.backend.setsockopt(zmq.SNDHWM, 0)
        self.backend.setsockopt(zmq.RCVHWM, 0)
        self.backend.bind(_any_port(backend))
        self.backend_endpoint = self.backend.getsockopt_string(zmq.LAST_ENDPOINT)

    # -- clients -----------------------------------------------------------------------------

    def handle_frontend(self, limit: int = 1000) -> None:
        """Take up to ``limit`` waiting client messages."""
        sock = self.frontend
        for _ in range(limit):
            if not has_input(sock):
                return
            msg = sock.recv_multipart()
            client, frames = msg[0], msg[1:]
            try:
                req = wire.split_client_request(frames, max_bytes=self.max_bytes)
            except wire.WireError as e:
                self.rejected[e.code] = self.rejected.get(e.code, 0) + 1
                self.reply(client, wire.encode_error(e.request_id or b"?", e.code, e.message, e.details))
                continue
            if req.is_admin:
                try:
                    if self.authorizer is not None:
                        self.authorizer.check(req.meta.get("token"), req.space, req.op)
                    self.supervisor.admin(client, req)
                except MemspaceError as e:
                    self.reply(client, wire.encode_error(req.request_id, e.code, e.message, e.details))
                continue
            self.submit(client, req)

    def submit(self, client: bytes, req: wire.ClientRequest) -> None:
        try:
            if not self.accepting:
                raise SpaceUnavailable("the server is shutting down", {"retry_after_s": 1})
            space = req.space
            if not space:
                if self.require_explicit_space:
                    raise SpaceRequired(
                        "no memory space named: pass a space id (client.space('id'), --space, "
                        "X-Memory-Space or /v1/spaces/{space}/...); this server has require_explicit_space = true")
                space = self.default_space
                req = req._replace(space=space)
                if self.on_fallback is not None:
                    self.on_fallback(client)
            if self.authorizer is not None:
                self.authorizer.check(req.meta.get("token"), space, req.op)
                # the worker has no use for the token: do not pass it on
                meta = {k: v for k, v in req.meta.items() if k != "token"}
                req = req._replace(meta=meta, raw_meta=orjson.dumps(meta) if meta else b"")
            passive = req.passive
            route = self.routes.get(space)
            if route is None or not route.ready:
                # raises SpaceNotFound / SpaceUnavailable (asleep: a passive request for a sleeping space)
                self.supervisor.activate(space, wake=not passive)
                route = self.route(space)
        except MemspaceError as e:
            if not e.details.get("asleep"):   # "asleep" is an answer, not a rejection
                self.rejected[e.code] = self.rejected.get(e.code, 0) + 1
            self.reply(client, wire.encode_error(req.request_id, e.code, e.message, e.details))
            return
        now = self.clock()
        timeout = req.timeout_ms / 1000.0 if req.timeout_ms else self.request_timeout_s
        pending = Pending(client, req, now + timeout, now, passive=passive)
        fifo = self._by_timeout.get(timeout)
        if fifo is None:
            fifo = self._by_timeout[timeout] = deque()
        fifo.append(pending)
        # counted from here until answered (_settle); separate counts, so passive polls parked in
        # the worker never take room from real requests
        if passive:
            route.passive += 1
            over = route.passive > self.passive_limit
        else:
            route.last_activity = now
            route.real += 1
            over = route.real > self.queue_limit
        if over:
            self._overloaded(pending)
        elif route.ready and not route.suspects:
            self._send(route, pending)
        else:
            route.queue.append(pending)
            self._unsent.append(pending)

    def _overloaded(self, pending: Pending) -> None:
        space = pending.req.space
        if pending.passive:
            # a feed's poll: the feed waits retry_after_s and polls again; no real request is refused
            err = Overloaded(f"space {space}: more than {self.passive_limit} change-feed polls open "
                             "(router_passive_per_space); retry later",
                             {"retry_after_s": 5, "space": space, "passive": True})
        else:
            err = Overloaded(f"space {space}: more than {self.queue_limit} requests waiting or in flight "
                             "(router_queue_per_space)", {"retry_after_s": 1, "space": space})
        self._answer_error(pending, err)

    def _settle(self, pending: Pending) -> bool:
        """Mark ``pending`` answered, freeing its room in its space's bound; False if it was already."""
        if pending.done:
            return False
        pending.done = True
        route = self.routes.get(pending.req.space)
        if route is not None:
            if pending.passive:
                route.passive -= 1
            else:
                route.real -= 1
        return True

    def _send(self, route: Route, pending: Pending) -> bool:
        self._tickets += 1
        ticket = wire.make_ticket(self._tickets)
        try:
            send_frames(self.backend, [route.space.encode(), *wire.to_worker(ticket, pending.req)])
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:
                raise
            # The worker's connection is gone (it is exiting); keep the request for its successor.
            route.ready = False
            route.queue.appendleft(pending)
            return False
        pending.ticket = ticket
        route.inflight[ticket] = pending
        route.last_sent = self.clock()
        return True

    def reply(self, client: bytes, frames: list[bytes]) -> None:
        try:
            send_frames(self.frontend, [client, *frames])
        except zmq.ZMQError as e:   # client gone: nothing to tell it
            log.debug("reply to vanished client dropped: %s", e)

    def _answer_error(self, pending: Pending, err: MemspaceError) -> None:
        self._settle(pending)
        self.reply(pending.client, wire.encode_error(pending.req.request_id, err.code, err.message, err.details))
        self.metrics.observe(pending.req.space, pending.req.op, err.code, self.clock() - pending.queued_at)

    # -- workers -----------------------------------------------------------------------------

    def handle_backend(self, limit: int = 1000) -> None:
        sock = self.backend
        for _ in range(limit):
            if not has_input(sock):
                return
            msg = sock.recv_multipart()
            space = msg[0].decode("ascii", "replace")
            frames = msg[1:]
            try:
                kind = wire.message_type(frames)
                if kind is wire.MsgType.REPLY:
                    self._on_reply(space, wire.split_worker_reply(frames, max_bytes=self.max_bytes * 4))
                else:
                    self.supervisor.on_signal(space, wire.decode_signal(frames))
            except wire.WireError as e:
                log.warning("malformed message from worker %s: %s", space, e.message)
                continue
            self.supervisor.on_worker_seen(space)

    def _on_reply(self, space: str, reply: wire.WorkerReply) -> None:
        route = self.routes.get(space)
        if route is None:
            return
        pending = route.inflight.pop(reply.ticket, None)
        if pending is None:
            return   # answered already (deadline) or from a previous generation
        now = self.clock()
        if not pending.passive:
            route.last_activity = now
        if self._settle(pending):
            self.reply(pending.client, wire.to_client(reply))
            self.metrics.observe(space, pending.req.op, reply.status.decode("ascii", "replace"),
                                 now - pending.queued_at)
        if route.probing == reply.ticket:
            route.probing = None
            self._flush(route)

    def worker_ready(self, space: str) -> None:
        """The space's worker reported READY: send what waited (suspects first, one at a time)."""
        route = self.route(space)
        route.ready = True
        self._flush(route)

    def _flush(self, route: Route) -> None:
        while route.ready and route.probing is None and route.suspects:
            pending = route.suspects.popleft()
            if pending.done:
                continue
            if self._send(route, pending):
                route.probing = pending.ticket
            return
        while route.ready and route.probing is None and route.queue:
            pending = route.queue.popleft()
            if not pending.done and not self._send(route, pending):
                return

    def worker_lost(self, space: str, crashed: bool) -> None:
        """The worker exited. After a crash, what it had in flight becomes suspect; a request that
        was in flight at two consecutive crashes is answered POISON_REQUEST."""
        route = self.routes.get(space)
        if route is None:
            return
        route.ready = False
        route.probing = None
        lost = sorted(route.inflight.values(), key=lambda p: p.ticket)
        route.inflight.clear()
        if not crashed:
            route.queue.extendleft(reversed([p for p in lost if not p.done]))
            return
        still = [p for p in route.suspects if not p.done]
        route.suspects.clear()
        for pending in lost:
            if pending.done:
                continue
            pending.attempts += 1
            if pending.attempts >= 2:
                log.error("space %s: request %s (%s) was in flight at two consecutive crashes: poison",
                          space, pending.req.request_id, pending.req.op)
                self._answer_error(pending, _poison(pending))
            else:
                route.suspects.append(pending)
        route.suspects.extend(still)

    def hold(self, space: str) -> None:
        """Stop forwarding to the space (it drains); new requests queue until it is ready again."""
        route = self.routes.get(space)
        if route is not None:
            route.ready = False

    def release_passive(self, space: str, err: MemspaceError) -> None:
        """Answer the passive requests still queued for ``space`` with ``err``: its worker drained
        away and nothing else asks for it, so they must not wait for (or cause) a new one."""
        route = self.routes.get(space)
        if route is None:
            return
        keep: deque[Pending] = deque()
        for pending in route.queue:
            if pending.done:
                continue
            if pending.passive:
                # an answer about the space, not a failed request: kept out of the error metrics
                self._settle(pending)
                self.reply(pending.client, wire.encode_error(pending.req.request_id, err.code, err.message,
                                                             err.details))
            else:
                keep.append(pending)
        route.queue = keep

    def fail(self, space: str, err: MemspaceError, *, forget: bool = False) -> None:
        """Answer everything waiting for ``space`` with ``err`` (the space FAILED or is deleted)."""
        route = self.routes.get(space)
        if route is None:
            return
        route.ready = False
        for pending in [*route.suspects, *route.queue, *route.inflight.values()]:
            if not pending.done:
                self._answer_error(pending, err)
        route.suspects.clear()
        route.queue.clear()
        route.inflight.clear()
        route.probing = None
        if forget:
            del self.routes[space]

    def send_control(self, space: str, command: str) -> bool:
        try:
            self.backend.send_multipart([space.encode(), *wire.encode_control(command)])
            return True
        except zmq.ZMQError:
            return False

    def heartbeat(self, spaces: list[str], quiet_for: float = 0.0) -> None:
        """Tell workers the router is alive; a worker that got a request within ``quiet_for``
        seconds already knows."""
        frames = wire.encode_heartbeat()
        now = self.clock()
        for space in spaces:
            route = self.routes.get(space)
            if route is not None and quiet_for and now - route.last_sent < quiet_for:
                continue
            try:
                self.backend.send_multipart([space.encode(), *frames])
            except zmq.ZMQError:
                continue
            if route is not None:
                route.last_sent = now

    # -- time --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do (None: nothing is waiting)."""
        soonest: float | None = None
        for fifo in self._by_timeout.values():
            while fifo and fifo[0].done:
                fifo.popleft()
            if fifo and (soonest is None or fifo[0].deadline < soonest):
                soonest = fifo[0].deadline
        unsent = self._unsent
        while unsent and (unsent[0].done or unsent[0].ticket):
            unsent.popleft()
        if unsent:
            at = unsent[0].queued_at + self.start_timeout_s
            soonest = at if soonest is None else min(soonest, at)
        return soonest

    def expire(self) -> None:
        """Answer requests whose time is up: past their own deadline (DEADLINE_EXCEEDED; a late
        reply is dropped), or never sent because their space did not become ready within
        start_timeout_s (SPACE_UNAVAILABLE). Answered requests left in a queue are skipped later."""
        now = self.clock()
        for fifo in self._by_timeout.values():
            while fifo and (fifo[0].done or fifo[0].deadline <= now):
                pending = fifo.popleft()
                if pending.done:
                    continue
                route = self.routes.get(pending.req.space)
                if route is not None and route.inflight.pop(pending.ticket, None) is not None \
                        and route.probing == pending.ticket:
                    route.probing = None
                    self._flush(route)
                self._answer_error(pending, _deadline(pending))
        unsent = self._unsent
        limit = now - self.start_timeout_s
        while unsent and (unsent[0].done or unsent[0].ticket or unsent[0].queued_at <= limit):
            pending = unsent.popleft()
            if pending.done or pending.ticket:
                continue
            route = self.routes.get(pending.req.space)
            if route is not None and route.ready:
                continue   # waiting behind crash suspects: only its own deadline applies now
            self._answer_error(pending, SpaceUnavailable(
                f"space {pending.req.space} did not become ready within {self.start_timeout_s:g} s",
                {"retry_after_s": 1, "space": pending.req.space}))

    # -- bookkeeping -------------------------------------------------------------------------

    def route(self, space: str) -> Route:
        route = self.routes.get(space)
        if route is None:
            route = self.routes[space] = Route(space, last_activity=self.clock())
        return route

    def depth(self, space: str) -> dict[str, int]:
        route = self.routes.get(space)
        if route is None:
            return {"queued": 0, "inflight": 0, "suspects": 0}
        return {"queued": len(route.queue), "inflight": len(route.inflight), "suspects": len(route.suspects)}

    def busy(self, space: str) -> bool:
        """Whether real work waits for or runs in the space's worker (passive requests do not count)."""
        route = self.routes.get(space)
        if route is None:
            return False
        for waiting in (route.suspects, route.queue, route.inflight.values()):
            if any(not p.passive and not p.done for p in waiting):
                return True
        return False

    def close(self) -> None:
        self.frontend.close(0)
        self.backend.close(0)


def _any_port(endpoint: str) -> str:
    """zmq spells "any port" as ``*``; accept the conventional ``:0`` too."""
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        return endpoint[:-2] + ":*"
    return endpoint


def _poison(pending: Pending) -> MemspaceError:
    from memspace.errors import PoisonRequest

    return PoisonRequest(
        f"request {pending.req.request_id} ({pending.req.op}) was in flight when the worker of space "
        f"{pending.req.space} crashed twice in a row; it is not retried",
        {"space": pending.req.space, "op": pending.req.op, "request_id": pending.req.request_id},
    )


def _deadline(pending: Pending) -> MemspaceError:
    from memspace.errors import DeadlineExceeded

    return DeadlineExceeded(
        f"{pending.req.op} on space {pending.req.space} got no answer within its deadline",
        {"space": pending.req.space, "op": pending.req.op},
    )

