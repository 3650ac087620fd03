"""The HTTP transport of the Python client: ``memspace.connect("http://HOST:PORT")``.

:class:`HttpTransport` implements :class:`memspace.client.Transport` over the
REST API of the HTTP gateway, so :class:`~memspace.client.Client` and
:class:`~memspace.client.RemoteSpace` work unchanged: each ``(space, op, body)``
becomes one REST request and its JSON reply is turned back into the shape the
native (zmq) transport returns.

Op -> route (``S`` = ``/v1/spaces/{space}``)::

    remember        POST S/memories             default space: POST /v1/memories
    remember_batch  POST S/memories:batch       (reply "results" unwrapped)
    get             GET  S/memories/{id}        default space: GET /v1/memories/{id}
    forget          POST S/forget               (``id`` sent as ``ids: [id]``)
    link            POST S/links
    recall          POST S/recall               default space: POST /v1/recall
    count           GET  S/stats                (``memories`` or ``memories_by_tier[tier]``)
    list            GET  S/memories?limit&cursor&tier&embedding
    export          GET  S/memories?...&embedding=true   (the export op is a list page with embeddings)
    stats           GET  S/stats
    import          POST S/import               (NDJSON, one memory a line; applied by the gateway
                                                 in batches of at most 500 memories, each all or none)
    create_space    POST /v1/spaces             list_spaces  GET /v1/spaces
    get_space       GET  S                      delete_space DELETE S
    drain | hibernate | restart | repair        POST S/{op}
    status          GET  /v1/status             (a named space: GET S)

``events`` (a long poll; REST has the SSE feed instead, followed by
:meth:`HttpTransport.stream_events`) and ``metrics`` (REST
serves Prometheus text) have no JSON route, nor do the space ops other than
remember, recall and get on the default space (REST names the space in the
path): these raise InvalidArgument before anything is sent, naming the op and
the way out (name the space, or use the ``zmq:`` url). So does a passive request
(``Client.call(..., passive=True)``): REST cannot mark one, and sent as an ordinary
request it would wake its space. Arguments an op does not
take are refused locally with the worker's message, since query-string routes
would otherwise drop them silently.

Delivery: every POST and DELETE (every write) carries the call's request id as
``Idempotency-Key``. ``timeout`` is the deadline of the whole call, retries
and waits included. A connection error (refused, reset, closed without a
reply) or a 503 is retried up to ``retries`` times with the *same* key, so a
write that did arrive is not applied twice; a 503 waits its ``Retry-After``
first, unless that would pass the deadline (then its error is raised at once).
Reaching the deadline, or running out of retries on connection errors, raises
DeadlineExceeded naming the url (details carry ``attempts`` and ``timeout_s``,
as the zmq transport's do). Other errors are not retried.

Errors: the envelope ``{"error": {"code", "message", "details"}}`` is raised as
the :mod:`memspace.errors` class of its code; a reply that is not an envelope
(a proxy's HTML page, a different service) raises the class of its HTTP status
with a message naming the url and quoting the start of the body.

Threads: one ``httpx.Client`` (a keep-alive connection pool) per transport;
calls from several threads run in parallel on separate connections.
"""

from __future__ import annotations

import email.utils
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

import memspace
from memspace import wire
from memspace.client_sse import FeedItem, Frame, parse_frames, subscribed_after
from memspace.engine.model import TIERS
from memspace.errors import (
    CODES,
    DeadlineExceeded,
    Forbidden,
    Internal,
    InvalidArgument,
    MemoryNotFound,
    MemspaceError,
    NotFound,
    PayloadTooLarge,
    ResourceExhausted,
    SpaceExists,
    SpaceUnavailable,
    Unauthenticated,
    from_code,
)
from memspace.ids import validate_memory_id, validate_space_id

log = logging.getLogger("memspace.client")

HTTP_SCHEMES = ("http://", "https://")
#: Wait before re-sending after a connection error (doubling per attempt, capped).
BACKOFF_S = 0.05
BACKOFF_MAX_S = 1.0
#: Longest wait before opening a dropped change feed again (the backoff doubles up to it).
STREAM_BACKOFF_MAX_S = 5.0
#: Replies to opening a change feed that are worth trying again (the space restarting, overloaded).
_STREAM_RETRY_STATUS = frozenset({429, 502, 503, 504})
#: Characters of a non-envelope error body quoted in the error message.
QUOTE_CHARS = 200

_JSON = orjson.OPT_SERIALIZE_NUMPY
#: Class of a non-envelope (or unknown-code) error reply, by HTTP status.
_BY_STATUS: dict[int, type[MemspaceError]] = {
    400: InvalidArgument, 401: Unauthenticated, 403: Forbidden, 404: NotFound, 409: SpaceExists,
    413: PayloadTooLarge, 429: ResourceExhausted, 502: SpaceUnavailable, 503: SpaceUnavailable,
    504: DeadlineExceeded,
}


@dataclass
class Request:
    """One REST request for one op, and how to turn its JSON reply into the op's result."""

    method: str
    path: str
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)
    ndjson: list[Any] | None = None      # a body of JSON lines instead of ``json``
    result: Callable[[Any], Any] = lambda reply: reply

    @property
    def write(self) -> bool:
        return self.method in ("POST", "DELETE")


# -- op -> route -------------------------------------------------------------------------------

#: Arguments each space op takes (as the worker checks them), and the required ones.
_ARGS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "remember": (frozenset({"content", "embedding", "id", "confidence", "tags", "metadata", "links"}),
                 frozenset()),
    "remember_batch": (frozenset({"items"}), frozenset({"items"})),
    "get": (frozenset({"id", "embedding"}), frozenset({"id"})),
    "forget": (frozenset({"id", "ids", "tags", "before"}), frozenset()),
    "link": (frozenset({"source", "target", "weight", "kind"}), frozenset({"source", "target"})),
    "recall": (frozenset({"query", "embedding", "k", "threshold", "mode", "max_depth", "tags", "since",
                          "until", "tiers"}), frozenset()),
    "count": (frozenset({"tier"}), frozenset()),
    "list": (frozenset({"limit", "cursor", "tier", "embedding"}), frozenset()),
    "stats": (frozenset(), frozenset()),
    "export": (frozenset({"limit", "cursor"}), frozenset()),
    "import": (frozenset({"items"}), frozenset({"items"})),
}
#: Space ops the REST API serves without a space in the path (its compatibility routes).
_DEFAULT_SPACE_OPS = frozenset({"remember", "get", "recall"})
_LIFECYCLE_OPS = frozenset({"drain", "hibernate", "restart", "repair"})
#: The export op's page size when none is given (the list route's default is smaller).
EXPORT_PAGE = 500


def route(space: str, op: str, body: Mapping[str, Any]) -> Request:
    """The REST request for ``op`` on ``space`` ("" = the default space / no space).

    Raises InvalidArgument (nothing sent) for an unknown op, an op without a REST
    route, arguments the op does not take, or a bad space id (InvalidSpaceId).
    """
    if not isinstance(body, Mapping):
        raise InvalidArgument(f"request body must be a mapping, got {type(body).__name__}",
                              {"field": "request body"})
    if op not in wire.OPS:
        raise InvalidArgument(f"unknown op {op!r:.40}; expected one of {', '.join(sorted(wire.OPS))}",
                              {"field": "op"})
    if space:
        validate_space_id(space, "argument")
    if op in ("events", "metrics"):
        what = ("the change feed is Server-Sent Events at GET /v1/spaces/{space}/events"
                if op == "events" else "GET /metrics serves Prometheus text, not JSON")
        raise InvalidArgument(f"op {op} has no JSON REST route: {what}; for {op}, connect to the zmq url "
                              "(tcp://HOST:PORT, printed as `zmq:` by `memspace serve`)",
                              {"field": "op", "op": op})
    if op in wire.ADMIN_OPS:
        return _admin_route(space, op, body)
    _check_args(op, body)
    if not space and op not in _DEFAULT_SPACE_OPS:
        raise InvalidArgument(
            f"op {op} on the default space has no REST route: REST serves only remember, recall and get "
            "without a space in the path; name the space (client.space(\"default\"), --space) or connect "
            "to the zmq url", {"field": "space", "op": op})
    base = f"/v1/spaces/{space}"
    if op == "remember":
        return Request("POST", f"{base}/memories" if space else "/v1/memories", json=dict(body))
    if op == "get":
        params = {"embedding": "true"} if body.get("embedding") else {}
        memories = f"{base}/memories" if space else "/v1/memories"
        return Request("GET", f"{memories}/{_memory_path_id(body['id'])}", params=params)
    if op == "recall":
        return Request("POST", f"{base}/recall" if space else "/v1/recall", json=dict(body),
                       result=_field("results"))
    if op == "remember_batch":
        return Request("POST", f"{base}/memories:batch", json=dict(body), result=_field("results"))
    if op == "forget":
        return Request("POST", f"{base}/forget", json=_forget_body(body))
    if op == "link":
        return Request("POST", f"{base}/links", json=dict(body))
    if op == "count":
        tier = body.get("tier")
        if tier is not None and tier not in TIERS:
            raise InvalidArgument(f"tier: must be one of {', '.join(TIERS)}, got {tier!r}", {"field": "tier"})
        return Request("GET", f"{base}/stats", result=lambda stats: _count(stats, tier))
    if op == "list":
        return Request("GET", f"{base}/memories", params=_query(body))
    if op == "export":
        return Request("GET", f"{base}/memories",
                       params=_query({"limit": EXPORT_PAGE, **body, "embedding": True}))
    if op == "stats":
        return Request("GET", f"{base}/stats")
    assert op == "import", op
    return Request("POST", f"{base}/import", ndjson=_import_items(body["items"]))


def _admin_route(space: str, op: str, body: Mapping[str, Any]) -> Request:
    if op == "list_spaces":
        return Request("GET", "/v1/spaces", result=_field("spaces"))
    if op == "status" and not space:
        return Request("GET", "/v1/status")
    if not space:
        raise InvalidArgument(f"op {op} needs a memory space id; none was given",
                              {"field": "space", "op": op})
    base = f"/v1/spaces/{space}"
    if op == "create_space":
        return Request("POST", "/v1/spaces", json={"id": space, **body})
    if op in ("get_space", "status"):
        return Request("GET", base)
    if op == "delete_space":
        return Request("DELETE", base)
    assert op in _LIFECYCLE_OPS, op
    return Request("POST", f"{base}/{op}")


def _check_args(op: str, body: Mapping[str, Any]) -> None:
    allowed, required = _ARGS[op]
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidArgument(
            f"{op}: unknown argument(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            {"op": op, "unknown": unknown})
    missing = sorted(required - set(body))
    if missing:
        raise InvalidArgument(f"{op}: missing argument(s) {', '.join(missing)}",
                              {"op": op, "missing": missing})


def _memory_path_id(memory_id: Any) -> str:
    if not isinstance(memory_id, str):
        raise InvalidArgument(f"id must be a string, got {type(memory_id).__name__}", {"field": "id"})
    try:
        validate_memory_id(memory_id, "id")
    except InvalidArgument:
        # No memory can have this id (remember refuses it); the REST path would answer 400,
        # the worker answers "not found", and callers must see the same on every transport.
        raise MemoryNotFound(f"memory {memory_id!r} does not exist", {"id": memory_id}) from None
    return urllib.parse.quote(memory_id, safe="")


def _forget_body(body: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k != "id"}
    if body.get("id") is not None:
        if body.get("ids") is not None:
            raise InvalidArgument("give either id or ids, not both", {"field": "ids"})
        out["ids"] = [body["id"]]
    return out


def _query(args: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in args.items():
        if value is None or (key == "embedding" and not value):
            continue
        out[key] = "true" if value is True else "false" if value is False else str(value)
    return out


def _import_items(items: Any) -> list[Any]:
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise InvalidArgument("import: items must be a list of memory objects", {"field": "items"})
    if not items:
        # an empty NDJSON body imports nothing; the import op refuses an empty batch
        raise InvalidArgument("items: must contain at least one memory", {"field": "items"})
    return list(items)


def _field(name: str) -> Callable[[Any], Any]:
    def unwrap(reply: Any) -> Any:
        if not isinstance(reply, dict) or name not in reply:
            raise Internal(f"malformed reply: expected an object with {name!r}, got {str(reply)[:80]}")
        return reply[name]
    return unwrap


def _count(stats: Any, tier: str | None) -> int:
    try:
        return int(stats["memories"] if tier is None else stats["memories_by_tier"].get(tier, 0))
    except (TypeError, KeyError, ValueError, AttributeError):
        raise Internal(f"malformed stats reply: {str(stats)[:80]}") from None


def _dumps(value: Any, what: str) -> bytes:
    try:
        return orjson.dumps(value, option=_JSON)
    except orjson.JSONEncodeError as e:
        raise InvalidArgument(f"{what} cannot be encoded as JSON: {e}", {"field": what}) from None


# -- the transport -----------------------------------------------------------------------------


class HttpTransport:
    """The REST transport: one ``httpx.Client`` (keep-alive) on ``url``.

    ``url`` is the gateway's base url (``http://HOST:PORT``, optionally with a path
    prefix when behind a proxy); ``token`` is sent as ``Authorization: Bearer``;
    ``max_bytes`` bounds a request body (PayloadTooLarge before sending).
    :meth:`close` closes the connections and wakes a call waiting to retry.
    """

    def __init__(self, url: str, *, retries: int = 2, max_bytes: int = wire.MAX_MESSAGE_BYTES,
                 token: str | None = None) -> None:
        if not isinstance(url, str) or not url.startswith(HTTP_SCHEMES):
            raise InvalidArgument(f"http url must start with http:// or https://, got {url!r}",
                                  {"field": "url"})
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as e:
            raise InvalidArgument(f"invalid url {url!r}: {e}", {"field": "url"}) from None
        if not parsed.host or parsed.query or parsed.fragment:
            raise InvalidArgument(f"invalid url {url!r}: expected http://HOST:PORT[/PREFIX]",
                                  {"field": "url"})
        if type(retries) is not int or retries < 0:
            raise InvalidArgument(f"retries must be an integer >= 0, got {retries!r}", {"field": "retries"})
        if type(max_bytes) is not int or max_bytes < 1:
            raise InvalidArgument(f"max_bytes must be a positive integer, got {max_bytes!r}",
                                  {"field": "max_bytes"})
        self.url = url.rstrip("/")
        self.retries = retries
        self.max_bytes = max_bytes
        self.token = token
        headers = {"User-Agent": f"memspace-python/{memspace.__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers)
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def call(self, space: str, op: str, body: Mapping[str, Any], request_id: str,
             timeout: float, *, passive: bool = False) -> Any:
        req = route(space, op, body)
        if passive:
            # REST has no passive request: sent as an ordinary one, it would wake the space
            raise InvalidArgument(f"passive requests ({op}) need the zmq url (tcp://HOST:PORT, printed as "
                                  "`zmq:` by `memspace serve`); REST cannot mark a request passive",
                                  {"field": "passive", "op": op})
        limit = wire.MAX_REQUEST_ID_BYTES
        if not isinstance(request_id, str) or not 1 <= len(request_id.encode()) <= limit:
            raise InvalidArgument(f"request_id must be a string of 1..{limit} UTF-8 bytes, "
                                  f"got {request_id!r:.80}", {"field": "request_id"})
        content, headers = self._encode(req, request_id)
        deadline = time.monotonic() + timeout
        attempts = 0
        problem = "timed out"
        while attempts <= self.retries:
            if self.closed:
                raise InvalidArgument(f"the client for {self.url} is closed", {"url": self.url})
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempts += 1
            try:
                response = self._http.request(req.method, req.path, params=req.params, content=content,
                                              headers=headers, timeout=remaining)
            except httpx.TimeoutException:
                problem = "timed out"
                break
            except httpx.TransportError as e:
                problem = _describe(e)
                log.info("%s %s to %s failed: %s (attempt %d of %d)", op, request_id, self.url, problem,
                         attempts, self.retries + 1)
                if attempts <= self.retries and not self._wait(_backoff(attempts), deadline):
                    break
                continue
            except RuntimeError:
                if self.closed:   # closed by another thread while this call was being sent
                    raise InvalidArgument(f"the client for {self.url} is closed", {"url": self.url}) from None
                raise
            if response.is_success:
                return req.result(self._decode(response))
            err = self._error(req, response)
            if response.status_code != 503 or attempts > self.retries:
                raise err
            log.info("%s %s: %s from %s; retrying (attempt %d of %d)", op, request_id, err.code, self.url,
                     attempts + 1, self.retries + 1)
            if not self._wait(_retry_after(response, attempts), deadline):
                raise err
        why = (f"within {timeout:g} s ({attempts} attempt(s))" if problem == "timed out"
               else f"({problem}; {attempts} attempt(s) within {timeout:g} s)")
        raise DeadlineExceeded(
            f"no reply from {self.url} to {op} {why}; is `memspace serve` running with its HTTP "
            f"gateway at {self.url}?",
            {"url": self.url, "op": op, "request_id": request_id, "attempts": attempts,
             "timeout_s": timeout, "cause": problem})

    def stream_events(self, space: str, after: int | None = None, *, connect_timeout: float = 10.0,
                      sleep: Callable[[float], object] | None = None) -> Generator[FeedItem, None, None]:
        """Follow the change feed of ``space`` over SSE (``GET /v1/spaces/{space}/events``), forever.

        ``after`` None starts at the feed's current end (only new changes; the position
        is taken from the stream's opening comment), else after that seq. The stream
        has no read timeout (the server sends ``: ping`` comments while idle); opening it
        is bounded by ``connect_timeout``. A dropped connection, a stream the server
        ended, or an answer of 429/502/503/504 to opening it is followed by a
        ``reconnecting`` item and a new request with ``Last-Event-ID`` set to the last
        change yielded, so no change is yielded twice or skipped; the wait before it
        doubles from 0.05 s up to 5 s (a 503's ``Retry-After``, capped at 5 s) and
        starts over once a change arrives. Any other error answer (the space does not
        exist or was deleted, a bad token) raises its :mod:`memspace.errors` class, as
        :meth:`call` does. The response is closed when the iterator is closed.
        """
        validate_space_id(space, "argument")
        if after is not None and (type(after) is not int or after < 0):
            raise InvalidArgument(f"after must be a non-negative integer, got {after!r}", {"field": "after"})
        wait: Callable[[float], object] = sleep if sleep is not None else self._closed.wait
        req = Request("GET", f"/v1/spaces/{space}/events")
        timeout = httpx.Timeout(connect_timeout, read=None)
        position, failures = after, 0
        while not self.closed:
            headers = {"Accept": "text/event-stream"}
            if position is not None:
                headers["Last-Event-ID"] = str(position)
            retry_after: float | None = None
            try:
                with self._http.stream("GET", req.path, headers=headers, timeout=timeout) as response:
                    if not response.is_success:
                        response.read()
                        err = self._error(req, response)
                        if response.status_code not in _STREAM_RETRY_STATUS:
                            raise err
                        reason = f"{err.code}: {err.message}"
                        retry_after = _retry_after(response, failures + 1)
                    else:
                        for frame in parse_frames(response.iter_lines()):
                            if position is None:
                                position = subscribed_after(frame)
                            item = self._feed_item(frame, response)
                            if item is None:
                                continue
                            if item.kind == "change":
                                position, failures = int(item.data["seq"]), 0
                            yield item
                        reason = "the server ended the stream"
            except httpx.TransportError as e:
                reason = _describe(e)
            except RuntimeError:
                if self.closed:
                    break
                raise
            failures += 1
            delay = min(STREAM_BACKOFF_MAX_S, retry_after if retry_after is not None else _backoff(failures))
            log.info("change feed of %s at %s: %s; reconnecting in %.2f s", space, self.url, reason, delay)
            yield FeedItem("reconnecting", {"reason": reason, "delay_s": delay})
            if wait(delay) is True:      # the transport was closed meanwhile
                break

    def _feed_item(self, frame: Frame, response: httpx.Response) -> FeedItem | None:
        """The feed item of one SSE frame; None for a frame without data (comments, retry)."""
        if not frame.data:
            return None
        try:
            data = orjson.loads(frame.text)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise Internal(f"GET {response.request.url} sent an event whose data is not a JSON object: "
                           f"{frame.text[:QUOTE_CHARS]!r}", {"url": str(response.request.url)})
        if frame.id is not None:
            if not isinstance(data.get("seq"), int):
                raise Internal(f"GET {response.request.url} sent change {frame.id} without a seq",
                               {"url": str(response.request.url)})
            return FeedItem("change", data)
        if frame.event == "error" and isinstance(data.get("error"), dict):
            return FeedItem("error", data["error"])
        return FeedItem(frame.event or "message", data)

    def _encode(self, req: Request, request_id: str) -> tuple[bytes | None, dict[str, str]]:
        headers: dict[str, str] = {}
        if req.write:
            headers["Idempotency-Key"] = request_id
        content: bytes | None = None
        if req.json is not None:
            content = _dumps(req.json, "request body")
            headers["Content-Type"] = "application/json"
        elif req.ndjson is not None:
            content = b"".join([_dumps(line, "request body") + b"\n" for line in req.ndjson])
            headers["Content-Type"] = "application/x-ndjson"
        if content is not None and len(content) > self.max_bytes:
            raise PayloadTooLarge(f"request is {len(content)} bytes; the limit is {self.max_bytes}",
                                  {"limit": self.max_bytes, "size": len(content)})
        return content, headers

    def _wait(self, seconds: float, deadline: float) -> bool:
        """Wait ``seconds`` unless that passes ``deadline`` or the transport closes; True to go on."""
        if time.monotonic() + seconds >= deadline:
            return False
        return not self._closed.wait(seconds)

    def _decode(self, response: httpx.Response) -> Any:
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            request = response.request
            raise Internal(f"{request.method} {request.url} answered {response.status_code} with a body "
                           f"that is not JSON: {_quote(response)}",
                           {"url": str(response.request.url), "status": response.status_code}) from None

    def _error(self, req: Request, response: httpx.Response) -> MemspaceError:
        """The MemspaceError of an error reply: its envelope's, else one naming the url."""
        status = response.status_code
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        envelope = data.get("error") if isinstance(data, dict) else None
        if (isinstance(envelope, dict) and isinstance(envelope.get("code"), str)
                and isinstance(envelope.get("message"), str)):
            code, message = envelope["code"], envelope["message"]
            details = envelope.get("details")
            details = dict(details) if isinstance(details, dict) else {}
            if code in CODES:
                return from_code(code, message, details)
            # e.g. NOT_FOUND for a route this server lacks: an older server or another service
            return _BY_STATUS.get(status, Internal)(
                f"{code}: {message} (from {req.method} {response.request.url})",
                {**details, "code": code, "status": status, "url": str(response.request.url)})
        cls = _BY_STATUS.get(status, Internal)
        return cls(f"{req.method} {response.request.url} answered HTTP {status} without a memspace error "
                   f"envelope (is {self.url} the memspace HTTP gateway, or is a proxy in between?): "
                   f"{_quote(response)}",
                   {"status": status, "url": str(response.request.url)})

    def close(self) -> None:
        """Close the connections; a call waiting to retry stops. Idempotent."""
        self._closed.set()
        self._http.close()

    def __repr__(self) -> str:
        return f"<HttpTransport {self.url}{' closed' if self.closed else ''}>"


def _backoff(attempt: int) -> float:
    return float(min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (attempt - 1)))


def _retry_after(response: httpx.Response, attempt: int) -> float:
    """Seconds the reply asks us to wait (delta-seconds or an HTTP date); backoff if it says nothing."""
    raw = response.headers.get("retry-after", "").strip()
    if not raw:
        return _backoff(attempt)
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError):
            return _backoff(attempt)
    return max(0.0, seconds) if math.isfinite(seconds) else _backoff(attempt)


def _describe(e: httpx.TransportError) -> str:
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if text != type(e).__name__ else text


def _quote(response: httpx.Response) -> str:
    text = " ".join(response.text[:QUOTE_CHARS * 2].split())
    if not text:
        return "(empty body)"
    return repr(text[:QUOTE_CHARS] + ("..." if len(text) > QUOTE_CHARS else ""))


__all__ = ["HTTP_SCHEMES", "HttpTransport", "Request", "route"]
