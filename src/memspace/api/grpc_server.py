"""The gRPC gateway: services ``memspace.v1.Spaces`` and ``memspace.v1.Memories``, health, reflection.

    gRPC client ──► grpc.aio server (this process) ──RouterClient (zmq)──► router ──► worker[space]
                                    └── LifecycleHub (SUB) ◄── supervisor's lifecycle publisher

Each RPC resolves its space, turns the request into a router op body
(:mod:`memspace.api.grpc_convert`), awaits the router and converts the result back.
``memspace serve`` runs :func:`serve_gateway` in its own process.

Space selection (Memories): request field ``memory_space_id`` > metadata
``x-memory-space`` > default space. Nothing named sends space "" to the router, which
resolves the default (counting the fallback) or answers SPACE_REQUIRED when
``require_explicit_space`` is on; such a call also gets a ``warning`` header and a log
line once per client. Spaces RPCs act on the one space named and never fall back.

Errors: every :class:`MemspaceError` ends the call with the contract's gRPC status
code (``errors.grpc_status``), its message as the status message and trailing metadata
``memspace-error-code``, ``memspace-error-details-bin`` (JSON) and, when retrying
may help, ``retry-after`` (seconds). Anything else is logged and answered INTERNAL.

Write requests carry ``request_id``: it becomes the router request id and therefore
the idempotency key (empty: a fresh one per call, so that call is not deduplicated).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
import orjson
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from memspace import wire
from memspace.api import grpc_convert as convert
from memspace.api.feed import LifecycleHub
from memspace.api.gateway import TOKEN, OncePerClient, Resolved, RouterClient, bearer, resolve_space
from memspace.api.grpc_feed import Feed
from memspace.api.pb import SERVICES, generic_handler, pb2
from memspace.errors import (
    ConflictingSpace,
    Internal,
    InvalidArgument,
    MemspaceError,
    PayloadTooLarge,
    SpaceRequired,
    grpc_status,
)

log = logging.getLogger("memspace.grpc")

SPACE_METADATA = "x-memory-space"
#: How long in-flight calls get to finish after SIGTERM.
SHUTDOWN_GRACE_S = 3.0
#: Clients remembered for the once-per-client default-space warning.
_FALLBACK_CLIENTS = 10_000
_RETRYABLE_STATUS = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)

R = TypeVar("R")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def trailing_metadata(err: MemspaceError) -> tuple[tuple[str, str | bytes], ...]:
    """The metadata that carries a memspace error's code, details and retry hint."""
    md: list[tuple[str, str | bytes]] = [
        ("memspace-error-code", err.code),
        ("memspace-error-details-bin", orjson.dumps(err.details, default=str)),
    ]
    if status_code(err) in _RETRYABLE_STATUS:
        retry = err.details.get("retry_after_s", 1)
        seconds = math.ceil(retry) if isinstance(retry, (int, float)) and retry > 0 else 1
        md.append(("retry-after", str(seconds)))
    return tuple(md)


def status_code(err: MemspaceError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, grpc_status(err.code), grpc.StatusCode.INTERNAL)


def rpc(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Map MemspaceError (and unexpected errors) of a unary handler to a gRPC status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Context) -> R:
        try:
            self.check_size(request)
            return await method(self, request, context)
        except MemspaceError as e:
            await context.abort(status_code(e), e.message, trailing_metadata(e))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            err = Internal(f"unexpected error in {method.__name__}; see the gateway log")
            await context.abort(grpc.StatusCode.INTERNAL, err.message, trailing_metadata(err))
        raise AssertionError("unreachable: abort raises")   # pragma: no cover

    return wrapper



def set_token(context: Context) -> None:
    """Pass the caller's ``authorization: Bearer <token>`` metadata on to the router."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            TOKEN.set(bearer(str(value)))
            return
    TOKEN.set(None)

class Base:
    """What both services share: the router client, limits and space resolution."""

    def __init__(self, rc: RouterClient, cfg: Any) -> None:
        self.rc = rc
        self.timeout = float(cfg["request_timeout_s"])
        self.max_request_bytes = int(cfg["limits.max_request_bytes"])
        self.default_space = str(cfg["default_space"])
        self._warned = OncePerClient(_FALLBACK_CLIENTS)

    def check_size(self, request: Any) -> None:
        size = request.ByteSize()
        if size > self.max_request_bytes:
            raise PayloadTooLarge(f"request is {size} bytes; the limit is {self.max_request_bytes} "
                                  "(limits.max_request_bytes)", {"bytes": size, "limit": self.max_request_bytes})

    def deadline(self, context: Context, base: float | None = None) -> float:
        """The router timeout: the configured one, shortened to the client's deadline if sooner."""
        limit = self.timeout if base is None else base
        remaining = context.time_remaining()
        return max(0.001, min(limit, remaining)) if remaining is not None else limit

    async def call(self, context: Context, space: str, op: str, body: Any = None, *,
                   request_id: str = "", timeout: float | None = None) -> Any:
        set_token(context)
        try:
            result = await self.rc.call(space, op, body or {}, request_id=request_id or uuid.uuid4().hex,
                                        timeout=self.deadline(context, timeout))
            if not space and op in wire.SPACE_OPS:
                await self.note_fallback(context)   # only now: the router may refuse SPACE_REQUIRED
            return result
        except SpaceRequired as e:
            # the router's remedy names the REST and CLI ways; say how a gRPC caller names a space
            raise SpaceRequired(f"no memory space named: set the request field memory_space_id or the "
                                f"metadata {SPACE_METADATA}; this server has require_explicit_space = true",
                                e.details) from None

    def resolve(self, request: Any, context: Context) -> Resolved:
        values = [str(v) for k, v in context.invocation_metadata() or () if k == SPACE_METADATA]
        if len(set(values)) > 1:
            raise ConflictingSpace(f"metadata {SPACE_METADATA} names several memory spaces "
                                   f"({', '.join(sorted(set(values)))}); name one", {"source": "metadata"})
        return resolve_space(field=request.memory_space_id, metadata=values[0] if values else None)

    def named_space(self, request: Any, context: Context, op: str) -> str:
        """The space an admin RPC acts on; it must be named (no default fallback)."""
        resolved = self.resolve(request, context)
        if resolved.fallback:
            raise InvalidArgument(f"{op} needs a memory space: set memory_space_id (or metadata "
                                  f"{SPACE_METADATA})", {"field": "memory_space_id"})
        return resolved.space

    def space(self, request: Any, context: Context) -> str:
        """The space a Memories RPC addresses ("" = the default, resolved by the router)."""
        return self.resolve(request, context).space

    async def note_fallback(self, context: Context) -> None:
        """Tell the client (``warning`` header) and the log (once per client) that it got the default."""
        metadata = dict(context.invocation_metadata() or ())
        peer = context.peer() or "?"
        client = (peer.rpartition(":")[0] or peer, str(metadata.get("user-agent", "")))
        text = (f"no memory space named (field memory_space_id or metadata {SPACE_METADATA}); "
                f"used the default space {self.default_space!r}")
        await context.send_initial_metadata((("warning", f'299 memspace "{text}"'),))
        if not self._warned.first_time(client):
            return
        log.warning("client %s (%s): %s", client[0], client[1] or "no user agent", text)


class SpacesService(Base):
    """``memspace.v1.Spaces``: the supervisor's admin ops."""

    def __init__(self, rc: RouterClient, cfg: Any) -> None:
        super().__init__(rc, cfg)
        # delete and drain wait for the worker to drain: its timeout comes on top
        self.slow_timeout = float(cfg["drain_timeout_s"]) + self.timeout

    @rpc
    async def Create(self, request: Any, context: Context) -> Any:
        space = self.named_space(request, context, "Create")
        result = await self.call(context, space, "create_space", convert.create_body(space, request))
        return pb2.CreateSpaceResponse(space=convert.space_status(result["space"]), created=result["created"])

    @rpc
    async def List(self, request: Any, context: Context) -> Any:
        result = await self.call(context, "", "list_spaces")
        return pb2.ListSpacesResponse(spaces=[convert.space_status(s) for s in result])

    @rpc
    async def Get(self, request: Any, context: Context) -> Any:
        space = self.named_space(request, context, "Get")
        return convert.space_status(await self.call(context, space, "get_space"))

    @rpc
    async def Delete(self, request: Any, context: Context) -> Any:
        space = self.named_space(request, context, "Delete")
        result = await self.call(context, space, "delete_space", timeout=self.slow_timeout)
        return convert.receipt(result)

    @rpc
    async def Drain(self, request: Any, context: Context) -> Any:
        space = self.named_space(request, context, "Drain")
        return convert.space_status(await self.call(context, space, "drain", timeout=self.slow_timeout))


class MemoriesService(Base):
    """``memspace.v1.Memories``: one space's operations, plus its change feed."""

    def __init__(self, rc: RouterClient, cfg: Any, hub: LifecycleHub | None, stopping: asyncio.Event) -> None:
        super().__init__(rc, cfg)
        self.hub = hub
        self.stopping = stopping

    @rpc
    async def Remember(self, request: Any, context: Context) -> Any:
        space = self.space(request, context)
        result = await self.call(context, space, "remember", convert.memory_input(request),
                                 request_id=request.request_id)
        return convert.remember_result(result)

    @rpc
    async def RememberBatch(self, request: Any, context: Context) -> Any:
        space = self.space(request, context)
        items = [convert.memory_input(item) for item in request.items]
        results = await self.call(context, space, "remember_batch", {"items": items},
                                  request_id=request.request_id)
        return pb2.RememberBatchResponse(results=[convert.remember_result(r) for r in results])

    @rpc
    async def Get(self, request: Any, context: Context) -> Any:
        space = self.space(request, context)
        body: dict[str, Any] = {"id": request.id}
        if request.include_embedding:
            body["embedding"] = True
        return convert.memory(await self.call(context, space, "get", body))

    @rpc
    async def Forget(self, request: Any, context: Context) -> Any:
        space = self.space(request, context)
        result = await self.call(context, space, "forget", convert.forget_body(request),
                                 request_id=request.request_id)
        return pb2.ForgetResponse(forgotten=result["forgotten"])

    @rpc
    async def Link(self, request: Any, context: Context) -> Any:
        space = self.space(request, context)
        result = await self.call(context, space, "link", convert.link_body(request), request_id=request.request_id)
        return convert.link_result(result)

    @rpc
    async def Recall(self, request: Any, context: Context) -> Any:
        space = self.space(request, context)
        hits = await self.call(context, space, "recall", convert.recall_body(request))
        return pb2.RecallResponse(hits=[convert.hit(h) for h in hits])

    async def Subscribe(self, request: Any, context: Context) -> AsyncIterator[Any]:
        """Server stream; errors end it with the same status mapping as the unary RPCs."""
        try:
            self.check_size(request)
            space = self.space(request, context)
            if not space:
                await self.note_fallback(context)
            set_token(context)
            feed = Feed(self.rc.call, self.hub, router_space=space,
                        topic_space=space or self.default_space, after=request.after_seq,
                        lifecycle=not request.data_only, stopping=self.stopping)
            async for event in feed.run():
                yield event
        except MemspaceError as e:
            await context.abort(status_code(e), e.message, trailing_metadata(e))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("unexpected error in Subscribe")
            err = Internal("unexpected error in Subscribe; see the gateway log")
            await context.abort(grpc.StatusCode.INTERNAL, err.message, trailing_metadata(err))


# -- the process ------------------------------------------------------------------------------

def serve_gateway(cfg: Any, router_endpoint: str, events_endpoint: str, bind: str,
                  report: Callable[[str], None]) -> None:
    """Serve gRPC on ``bind`` ("HOST:PORT", port 0 picks one) until SIGTERM, then stop gracefully.

    ``report("HOST:PORT")`` is called with the real port once the server listens. In-flight
    unary calls get :data:`SHUTDOWN_GRACE_S` to finish; Subscribe streams end at once.
    """
    asyncio.run(_serve(cfg, router_endpoint, events_endpoint, bind, report))


async def _serve(cfg: Any, router_endpoint: str, events_endpoint: str, bind: str,
                 report: Callable[[str], None]) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    rc = RouterClient(router_endpoint, timeout=float(cfg["request_timeout_s"]),
                      max_bytes=int(cfg["limits.max_request_bytes"]))
    hub = LifecycleHub(events_endpoint)
    hub.start()
    server, health_servicer = build_server(cfg, rc, hub, stopping)
    host = bind.rpartition(":")[0]
    port = server.add_insecure_port(bind)
    if port == 0:
        raise RuntimeError(f"gRPC could not bind {bind}")
    await server.start()
    for name in ("", *SERVICES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC gateway listening on %s:%d", host, port)
    report(f"{host}:{port}")
    watcher = loop.create_task(_watch_parent(stopping))
    try:
        await stopping.wait()
        log.info("gRPC gateway stopping")
        await health_servicer.enter_graceful_shutdown()
        await server.stop(SHUTDOWN_GRACE_S)
    finally:
        watcher.cancel()
        await hub.close()
        await rc.close()


def build_server(cfg: Any, rc: RouterClient, hub: LifecycleHub | None,
                 stopping: asyncio.Event) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A grpc.aio server with both services, health and reflection (not yet bound or started)."""
    limit = int(cfg["limits.max_request_bytes"])
    server = grpc.aio.server(options=[
        # a little over the limit, so an oversize request gets PAYLOAD_TOO_LARGE from check_size,
        # not a bare RESOURCE_EXHAUSTED from the transport
        ("grpc.max_receive_message_length", 2 * limit + (1 << 20)),
        ("grpc.max_send_message_length", 4 * limit + (1 << 20)),
        ("grpc.so_reuseport", 0),
    ])
    spaces = SpacesService(rc, cfg)
    memories = MemoriesService(rc, cfg, hub, stopping)
    server.add_generic_rpc_handlers((generic_handler(SERVICES[0], spaces), generic_handler(SERVICES[1], memories)))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return server, health_servicer


async def _watch_parent(stopping: asyncio.Event) -> None:
    """Stop if ``memspace serve`` died without stopping us (we were re-parented)."""
    parent = os.getppid()
    while not stopping.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            log.warning("parent process %d is gone; stopping", parent)
            stopping.set()
