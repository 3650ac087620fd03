"""State and request helpers shared by the HTTP routes: the router client, space selection,
idempotency keys and the default-space fallback warning."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated, Any

from fastapi import Header, Path, Request
from starlette.responses import Response

from memspace.api.gateway import OncePerClient, Resolved, RouterClient
from memspace.config import Config
from memspace.errors import ConflictingSpace, InvalidArgument
from memspace.ids import validate_space_id

log = logging.getLogger("memspace.http")

#: Clients (remote address + User-Agent) already warned about the default-space fallback.
WARNED_CLIENTS_MAX = 4096
MAX_IDEMPOTENCY_KEY = 200


class GatewayState:
    """Everything one HTTP gateway process shares between requests (``app.state.gateway``).

    The router client and the lifecycle subscriber are opened in the application's
    lifespan (they need the running event loop) and closed when it ends.
    """

    def __init__(self, cfg: Config, router_endpoint: str, events_endpoint: str | None) -> None:
        self.cfg = cfg
        self.router_endpoint = router_endpoint
        self.events_endpoint = events_endpoint
        self.default_space: str = cfg["default_space"]
        self.max_bytes: int = cfg["limits.max_request_bytes"]
        self.heartbeat_s: float = cfg["http.sse_heartbeat_s"]
        self.request_timeout_s: float = cfg["request_timeout_s"]
        self.rc: RouterClient | None = None
        self.hub: Any = None                       # feed.LifecycleHub once started
        self.streams: set[asyncio.Queue[Any]] = set()   # open change feeds, told when we stop
        self.stopping = asyncio.Event()
        self._warned = OncePerClient(WARNED_CLIENTS_MAX)

    async def call(self, space: str, op: str, body: Any = None, *, request_id: str | None = None,
                   timeout: float | None = None, passive: bool = False) -> Any:
        """One router call; raises the reply's MemspaceError (turned into the envelope by the app)."""
        if self.rc is None:
            raise RuntimeError("the gateway is not started")
        return await self.rc.call(space, op, body, request_id=request_id, timeout=timeout, passive=passive)

    def stop(self) -> None:
        """Begin shutdown: end every open change feed so the server can finish its connections."""
        self.stopping.set()
        for queue in list(self.streams):
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:
                pass   # the stream checks `stopping` after each item

    def note_fallback(self, request: Request, response: Response) -> None:
        """A request named no space and was served by the default one: say so in a Warning
        header every time, and in the log once per client (bounded memory)."""
        response.headers["Warning"] = (
            f'299 memspace "no memory space named; used the default space {self.default_space!r}. '
            'Name one with /v1/spaces/{space}/..., the X-Memory-Space header, ?space= or memory_space_id"')
        client = (request.client.host if request.client else "?", request.headers.get("user-agent", ""))
        if not self._warned.first_time(client):
            return
        log.warning("client %s (%s) named no memory space; using the default space %r",
                    client[0], client[1] or "no User-Agent", self.default_space)


# Dependencies are ``async def``: FastAPI runs plain ``def`` ones in its thread pool, two thread
# hand-offs per request for what is a dictionary lookup.
async def gateway(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


SpacePath = Annotated[str, Path(
    description="Memory space id: 3-64 characters of a-z 0-9 _ -, starting with a letter or digit.")]


async def path_space(request: Request, space: SpacePath) -> str:
    """The space of a path-scoped route, validated naming the path. A header or ``?space=``
    that names a *different* space is a client bug: 400 CONFLICTING_SPACE, never a silent pick."""
    chosen = validate_space_id(space, "path")
    for source, value in (("header", request.headers.get("x-memory-space")),
                          ("query", request.query_params.get("space"))):
        if value and validate_space_id(value, source) != chosen:
            raise ConflictingSpace(
                f"the request names two different memory spaces (path {chosen!r}, {source} {value!r}); name one",
                {"sources": {"path": chosen, source: value}})
    return chosen


IdempotencyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key",
    description="Makes a write retry-safe: a retried write with the same key returns the first result "
                f"and is not applied twice. 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters.")]


async def idempotency(key: IdempotencyHeader = None) -> str:
    """Dependency form of :func:`idempotency_key`."""
    return idempotency_key(key)


def idempotency_key(key: str | None = None) -> str:
    """The request id of a write: the client's Idempotency-Key, else a fresh uuid4."""
    if key is None:
        return uuid.uuid4().hex
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not all(33 <= ord(c) <= 126 for c in key):
        raise InvalidArgument(
            f"header Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters "
            f"(no spaces), got {len(key)} characters", {"field": "Idempotency-Key", "source": "header"})
    return key


SpaceHeader = Annotated[str | None, Header(
    alias="X-Memory-Space", description="Space to use (compatibility routes); wins over ?space= and the body.")]


def finish(request: Request, gw: GatewayState, resolved: Resolved, response: Response) -> Response:
    if resolved.fallback:
        gw.note_fallback(request, response)
    return response
