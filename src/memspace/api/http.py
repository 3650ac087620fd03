"""The HTTP gateway: REST + SSE + OpenAPI over the router, in its own process.

    client ──HTTP──► uvicorn ► FastAPI app ──RouterClient (zmq DEALER)──► router ─► worker[space]
                                   ▲
                 lifecycle events ─┘ (zmq SUB on the supervisor's publisher)

Routes (CONTRACT.md's REST table):

* spaces: ``POST/GET /v1/spaces``, ``GET/DELETE /v1/spaces/{space}``,
  ``POST /v1/spaces/{space}/drain|hibernate|restart|repair`` (this module);
* memories, links, recall and the compatibility routes
  (:mod:`memspace.api.http_memories`); NDJSON export/import
  (:mod:`memspace.api.http_ndjson`); the SSE change feed (:mod:`memspace.api.sse`);
* ``/metrics`` (Prometheus, :mod:`memspace.api.metrics_export`);
* ``/healthz`` (the process runs), ``/readyz`` (the router answers ``status``
  within :data:`READY_TIMEOUT_S`), ``/v1/status``; ``/openapi.json`` and ``/docs``.

The gateway holds no state of its own beyond connections: space selection is
checked here (ids validated naming their source), everything else is the
router's and the worker's. Errors share one envelope (:mod:`memspace.api.http_errors`).

:func:`serve_gateway` is the process entry used by ``memspace serve``: it binds
the listening socket itself (port 0 = any), reports the real URL once uvicorn is
serving, and returns after a graceful shutdown on SIGTERM (open change feeds
are ended first so connections can drain).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.responses import Response
from starlette.types import Scope

import memspace
from memspace.api import http_memories, http_ndjson, metrics_export, sse
from memspace.api import http_schemas as s
from memspace.api.feed import LifecycleHub
from memspace.api.gateway import TOKEN, RouterClient, bearer
from memspace.api.http_common import GatewayState, gateway, idempotency, path_space
from memspace.api.http_errors import JSON, BodyLimit, envelope, error_response, install
from memspace.config import Config
from memspace.errors import Forbidden, MemspaceError, SpaceUnavailable, Unauthenticated
from memspace.ids import validate_space_id

log = logging.getLogger("memspace.http")

READY_TIMEOUT_S = 2.0

router = APIRouter(responses=http_memories.ERRORS)
Space = Annotated[str, Depends(path_space)]
Key = Annotated[str, Depends(idempotency)]
Gw = Annotated[GatewayState, Depends(gateway)]


# -- spaces ------------------------------------------------------------------------------------


@router.post("/v1/spaces", tags=["spaces"], response_model=s.CreateSpaceOut, status_code=201,
             responses={200: {"model": s.CreateSpaceOut, "description": "Exists already with the same settings"},
                        409: {"model": s.ErrorEnvelope, "description": "SPACE_EXISTS with different settings"}},
             summary="Create a memory space")
async def create_space(body: s.CreateSpaceIn, key: Key, gw: Gw) -> Response:
    """201 when created; 200 when it exists with the same dimension and settings; 409 otherwise."""
    space = validate_space_id(body.id, "body")
    result = await gw.call(space, "create_space", body.args(), request_id=key)
    return JSON(result, status_code=201 if result.get("created") else 200)


@router.get("/v1/spaces", tags=["spaces"], response_model=s.SpaceListOut, summary="List memory spaces")
async def list_spaces(gw: Gw) -> Response:
    return JSON({"spaces": await gw.call("", "list_spaces", {})})


@router.get("/v1/spaces/{space}", tags=["spaces"], response_model=s.SpaceStatusOut,
            summary="Status of one memory space")
async def get_space(space: Space, gw: Gw) -> Response:
    return JSON(await gw.call(space, "get_space", {}))


@router.delete("/v1/spaces/{space}", tags=["spaces"], response_model=s.DeleteReceiptOut,
               summary="Delete a memory space and all its data")
async def delete_space(space: Space, key: Key, gw: Gw) -> Response:
    """Tombstone, drain, remove the directory; the receipt says what was removed."""
    return JSON(await gw.call(space, "delete_space", {}, request_id=key, timeout=_admin_timeout(gw)))


def _lifecycle_route(op: str, summary: str) -> None:
    async def handler(space: Space, key: Key, gw: Gw) -> Response:
        return JSON(await gw.call(space, op, {}, request_id=key, timeout=_admin_timeout(gw)))

    handler.__name__ = f"{op}_space"
    router.add_api_route(f"/v1/spaces/{{space}}/{op}", handler, methods=["POST"], tags=["spaces"],
                         response_model=s.SpaceStatusOut if op != "repair" else None, summary=summary)


for _op, _summary in (("drain", "Drain the space's worker (stop it; it restarts on the next request)"),
                      ("hibernate", "Hibernate the space's worker"),
                      ("restart", "Restart the space's worker (also a FAILED space)"),
                      ("repair", "Repair the space's WAL up to its first corruption (worker must be stopped)")):
    _lifecycle_route(_op, _summary)


def _admin_timeout(gw: GatewayState) -> float:
    # draining waits for the worker to finish and checkpoint (up to drain_timeout_s)
    return max(gw.request_timeout_s, float(gw.cfg["drain_timeout_s"]) + 10.0)


# -- health ------------------------------------------------------------------------------------


@router.get("/healthz", tags=["health"], response_model=s.HealthOut, summary="Liveness")
async def healthz() -> Response:
    return JSON({"status": "ok"})


@router.get("/readyz", tags=["health"], response_model=s.ReadyOut, summary="Readiness",
            responses={503: {"model": s.ErrorEnvelope, "description": "the router did not answer"}})
async def readyz(gw: Gw) -> Response:
    """200 when the router answers a status call within 2 s, else 503."""
    try:
        await asyncio.wait_for(gw.call("", "status", {}, timeout=READY_TIMEOUT_S), READY_TIMEOUT_S)
    except (Unauthenticated, Forbidden):
        return JSON({"ready": True})   # the router answered; this probe just has no admin token
    except (TimeoutError, MemspaceError) as e:
        why = e.message if isinstance(e, MemspaceError) else "no answer"
        return error_response(SpaceUnavailable(
            f"not ready: the router at {gw.router_endpoint} did not answer within {READY_TIMEOUT_S:g} s ({why})",
            {"retry_after_s": 1}))
    return JSON({"ready": True})


@router.get("/v1/status", tags=["health"], response_model=s.StatusOut, summary="Status of every space")
async def status(gw: Gw) -> Response:
    return JSON(await gw.call("", "status", {}))


# -- the application ---------------------------------------------------------------------------


@router.get("/metrics", tags=["health"], summary="Prometheus metrics",
            response_class=Response, responses={200: {"content": {"text/plain": {}},
                                                      "description": "Prometheus text format"}})
async def metrics(gw: Gw) -> Response:
    """Per-space and global metrics (docs/metrics.md), rendered from the router process's document."""
    doc = await gw.call("", "metrics", {}, timeout=_admin_timeout(gw))
    return Response(metrics_export.render(doc), media_type=metrics_export.CONTENT_TYPE)


class BearerToken:
    """ASGI middleware: the request's ``Authorization: Bearer`` token, for the router to check."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            token = None
            for key, value in scope["headers"]:
                if key == b"authorization":
                    token = bearer(value.decode("latin-1"))
                    break
            TOKEN.set(token)
        await self.app(scope, receive, send)


def create_app(cfg: Config, router_endpoint: str, events_endpoint: str | None = None) -> FastAPI:
    """The ASGI application. Connections to the router and the lifecycle publisher are opened
    when the application starts (its lifespan) and closed when it stops."""
    gw = GatewayState(cfg, router_endpoint, events_endpoint)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw.rc = RouterClient(router_endpoint, timeout=gw.request_timeout_s, max_bytes=gw.max_bytes)
        if events_endpoint:
            gw.hub = LifecycleHub(events_endpoint)
            gw.hub.start()
        try:
            yield
        finally:
            gw.stop()
            if gw.hub is not None:
                await gw.hub.close()
            await gw.rc.close()

    app = FastAPI(title="memspace", version=getattr(memspace, "__version__", "0"), lifespan=lifespan,
                  description="Multi-tenant memory service for AI agents: one OS process per memory space. "
                              'Errors are `{"error": {"code", "message", "details"}}`.')
    app.state.gateway = gw
    install(app)
    for r in (router, http_memories.router, http_ndjson.router, sse.router):
        app.include_router(r)
    app.add_middleware(BodyLimit, limit=gw.max_bytes, exempt=_streams_its_body)
    app.add_middleware(BearerToken)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _streams_its_body(scope: Scope) -> bool:
    """NDJSON import reads its body line by line and limits each line itself."""
    return scope.get("method") == "POST" and str(scope.get("path", "")).endswith("/import")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without its 422 responses: validation errors are 400 in this API."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    app.openapi_schema = schema
    return schema


# -- the process -------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn, told about SIGTERM first so open change feeds end, and returning normally
    afterwards (uvicorn would re-raise the signal to the default handler)."""

    def __init__(self, config: uvicorn.Config, gw: GatewayState, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.gw = gw
        self.on_started = on_started
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self.on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # as uvicorn: a second Ctrl-C forces; a repeated SIGTERM (memspace serve sends one when it
        # starts stopping and another before it waits for us) must not skip the graceful part
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.gw.stop)


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[v6]:PORT`` -> (host, port)."""
    host, sep, port = bind.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"http.bind must be HOST:PORT, got {bind!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets created with it, and without
    # it a response written as headers + body waits for the client's delayed ACK (~40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def serve_gateway(cfg: Config, router_endpoint: str, events_endpoint: str, bind: str,
                  report: Callable[[str], None]) -> None:
    """Serve HTTP on ``bind`` until SIGTERM; ``report(url)`` once requests are being answered."""
    host, port = parse_bind(bind)
    sock = _listen(host, port)
    real_port = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{real_port}"
    app = create_app(cfg, router_endpoint, events_endpoint)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", http="httptools", loop="uvloop",
                            timeout_graceful_shutdown=10, server_header=False)
    server = _Server(config, app.state.gateway, lambda: report(url))
    log.info("HTTP gateway listening on %s (router %s)", url, router_endpoint)
    server.run(sockets=[sock])
    log.info("HTTP gateway stopped")


__all__ = ["create_app", "envelope", "parse_bind", "serve_gateway"]
