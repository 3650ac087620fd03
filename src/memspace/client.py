"""The Python client: the embedded space API, served by a remote ``memspace serve``.

::

    client = memspace.connect("tcp://127.0.0.1:7079")
    alpha = client.space("alpha")              # same methods as memspace.open_space(...)
    alpha.remember(content="met Ana at the lab")

Layers: :class:`Client` and :class:`RemoteSpace` turn method calls into
``(space, op, body)`` and wire results back into the engine's dataclasses; a
:class:`Transport` moves one request and returns its decoded result.
:class:`ZmqTransport` speaks the native wire protocol (:mod:`memspace.wire`)
over a zmq DEALER socket to the router's frontend;
:class:`~memspace.client_http.HttpTransport` (``http://`` / ``https://`` urls)
maps each op to the REST API of the HTTP gateway and back, with the same
results and errors (see :mod:`memspace.client_http` for the few ops REST lacks
and its delivery rules: there ``timeout`` bounds the whole call).

Arguments: only arguments the caller set are sent. ``None`` and a value equal
to the embedded :class:`~memspace.storage.space.Space` method's default are
left out, so the server applies its own defaults.

Delivery (zmq): every call carries a request id (a fresh uuid4 hex unless the
caller passes ``request_id``), which is also the idempotency key of writes.
A call waits ``timeout`` seconds for the reply carrying its request id; if
none comes it re-sends the *same* frames (same request id: a write that did
arrive is not applied twice) up to ``retries`` times, then raises
:class:`~memspace.errors.DeadlineExceeded`. A call may therefore take up to
``timeout * (retries + 1)`` seconds. Replies to other request ids (late replies
to calls that timed out) are dropped.

Errors: an error reply is raised as its :mod:`memspace.errors` class
(``SpaceNotFound``, ``Overloaded``, ...) and is not retried (over HTTP a 503
is, within the call's deadline); bad arguments that can be seen locally (an
invalid space id, an oversize message) raise before anything is sent.

Threads: a :class:`Client` may be shared by threads. A zmq client's socket is
guarded by a lock, so calls from several threads run one after another; use
one client per thread for parallel requests (an HTTP client's connection pool
serves threads in parallel). A client must not be used across ``fork()``.
"""

from __future__ import annotations

import builtins
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, Self

import numpy as np
import zmq

from memspace import wire
from memspace.client_http import HTTP_SCHEMES, HttpTransport
from memspace.engine.model import Hit, Link, Memory, Page, RememberResult
from memspace.errors import DeadlineExceeded, InvalidArgument
from memspace.ids import validate_space_id

log = logging.getLogger("memspace.client")

ZMQ_SCHEMES = ("tcp://", "ipc://")

#: Defaults of the embedded Space methods; a value equal to one is not sent.
_RECALL_DEFAULTS: dict[str, Any] = {"k": 10, "threshold": 0.0, "mode": "spreading", "max_depth": 3}
_LINK_DEFAULTS: dict[str, Any] = {"weight": 1.0, "kind": "related"}
_LIST_DEFAULTS: dict[str, Any] = {"limit": 100}


class Transport(Protocol):
    """Moves one request to a server and returns its decoded result.

    ``call`` returns the JSON-decoded result of ``op`` on ``space`` (``""``: the
    default space, or no space for deployment-wide ops), raises the reply's
    MemspaceError for an error reply, and DeadlineExceeded when no reply came in
    time. ``request_id`` is the idempotency key: a transport may deliver a request
    more than once, but only under that id. ``passive`` marks a background request
    (see :meth:`Client.call`); a transport that cannot carry the mark raises
    InvalidArgument rather than send an ordinary request. :class:`Client` passes it
    only when true.
    """

    url: str

    def call(self, space: str, op: str, body: Mapping[str, Any], request_id: str,
             timeout: float, *, passive: bool = False) -> Any: ...

    def close(self) -> None: ...


class ZmqTransport:
    """The native transport: one DEALER socket (LINGER 0) connected to the router frontend.

    The socket is created on the shared ``zmq.Context.instance()`` unless a
    context is given; :meth:`close` closes the socket and never terminates a
    context it did not create.
    """

    def __init__(self, url: str, *, retries: int = 2, max_bytes: int = wire.MAX_MESSAGE_BYTES,
                 context: zmq.Context[Any] | None = None, token: str | None = None) -> None:
        if not url.startswith(ZMQ_SCHEMES):
            raise InvalidArgument(f"zmq url must start with tcp:// or ipc://, got {url!r}",
                                  {"field": "url"})
        if type(retries) is not int or retries < 0:
            raise InvalidArgument(f"retries must be an integer >= 0, got {retries!r}",
                                  {"field": "retries"})
        if type(max_bytes) is not int or max_bytes < 1:
            raise InvalidArgument(f"max_bytes must be a positive integer, got {max_bytes!r}",
                                  {"field": "max_bytes"})
        self.url = url
        self.retries = retries
        self.max_bytes = max_bytes
        self.token = token
        self._lock = threading.Lock()
        ctx = context if context is not None else zmq.Context.instance()
        self._socket: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        try:
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(url)
        except zmq.ZMQError as e:
            self._socket.close(linger=0)
            raise InvalidArgument(f"cannot connect to {url!r}: {e}", {"field": "url"}) from None

    @property
    def closed(self) -> bool:
        return bool(self._socket.closed)

    def call(self, space: str, op: str, body: Mapping[str, Any], request_id: str,
             timeout: float, *, passive: bool = False) -> Any:
        frames = wire.encode_request(request_id, space, op, body,
                                     timeout_ms=_timeout_ms(timeout), token=self.token,
                                     passive=passive, max_bytes=self.max_bytes)
        with self._lock:
            if self._socket.closed:
                raise InvalidArgument(f"the client for {self.url} is closed", {"url": self.url})
            for attempt in range(self.retries + 1):
                if attempt:
                    log.info("no reply to %s %s from %s within %.3g s; re-sending (attempt %d of %d)",
                             op, request_id, self.url, timeout, attempt + 1, self.retries + 1)
                reply = self._attempt(frames, request_id, time.monotonic() + timeout)
                if reply is not None:
                    return reply.result()
        raise DeadlineExceeded(
            f"no reply from {self.url} to {op} within {timeout:g} s "
            f"({self.retries + 1} attempt(s)); is `memspace serve` running at {self.url}?",
            {"url": self.url, "op": op, "request_id": request_id,
             "attempts": self.retries + 1, "timeout_s": timeout})

    def _attempt(self, frames: list[bytes], request_id: str, deadline: float) -> wire.Reply | None:
        """Send ``frames`` and wait for the reply to ``request_id``; None at the deadline."""
        if not self._send(frames, deadline):
            return None
        rid = request_id.encode()
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._socket.poll(_poll_ms(remaining), zmq.POLLIN):
                continue
            try:
                received = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            try:
                reply = wire.split_reply(received, max_bytes=self.max_bytes)
            except wire.WireError as e:
                # A malformed reply is ours only if it names our request id; anything
                # else is noise from a confused peer and must not fail this call.
                named = e.request_id or (received[2] if len(received) > 2 else b"")
                if named == rid:
                    raise
                log.warning("dropped a malformed reply from %s: %s", self.url, e.message)
                continue
            if reply.request_id == request_id:
                return reply
            log.debug("dropped a late reply to %s from %s", reply.request_id, self.url)
        return None

    def _send(self, frames: list[bytes], deadline: float) -> bool:
        # A DEALER send blocks when its queue is full (high-water mark); never wait past
        # the deadline for room.
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._socket.poll(_poll_ms(remaining), zmq.POLLOUT):
                continue
            try:
                self._socket.send_multipart(frames, zmq.NOBLOCK)
                return True
            except zmq.Again:
                continue
        return False

    def close(self) -> None:
        """Close the socket, discarding unsent requests. Idempotent."""
        with self._lock:
            if not self._socket.closed:
                self._socket.close(linger=0)

    def __repr__(self) -> str:
        return f"<ZmqTransport {self.url}{' closed' if self.closed else ''}>"


def _timeout_ms(timeout: float) -> int:
    return max(1, min(wire.MAX_TIMEOUT_MS, math.ceil(timeout * 1000)))


def _poll_ms(remaining_s: float) -> int:
    return max(1, math.ceil(remaining_s * 1000))


def connect(url: str, *, timeout: float = 30.0, retries: int = 2,
            max_bytes: int = wire.MAX_MESSAGE_BYTES,
            context: zmq.Context[Any] | None = None, token: str | None = None) -> Client:
    """A client for the server at ``url``: ``tcp://host:port`` or ``ipc://path`` (native zmq),
    or ``http://host:port`` / ``https://...`` (the REST API of the HTTP gateway).

    zmq: ``timeout`` is the seconds one attempt waits for its reply (also sent to
    the router as the request's deadline); ``retries`` how many times a request is
    re-sent after a timeout. HTTP: ``timeout`` is the deadline of the whole call;
    ``retries`` how many times a request is re-sent after a connection error or a
    503 (same Idempotency-Key). ``max_bytes`` is the largest request (zmq: also
    reply) accepted; ``token`` the bearer token a server with ``auth.mode = token``
    requires; ``context`` the zmq context (zmq urls only). Connecting does not
    contact the server: a missing server shows up as DeadlineExceeded on the first
    call.
    """
    if not isinstance(url, str):
        raise InvalidArgument(f"url must be a string, got {type(url).__name__}", {"field": "url"})
    if url.startswith(HTTP_SCHEMES):
        if context is not None:
            raise InvalidArgument("context is a zmq option; an http:// url takes none",
                                  {"field": "context", "url": url})
        _check_timeout(timeout)
        return Client(HttpTransport(url, retries=retries, max_bytes=max_bytes, token=token),
                      timeout=timeout)
    if not url.startswith(ZMQ_SCHEMES):
        raise InvalidArgument(f"unsupported url {url!r}: use tcp://HOST:PORT, ipc://PATH or "
                              "http://HOST:PORT", {"field": "url", "url": url})
    _check_timeout(timeout)
    return Client(ZmqTransport(url, retries=retries, max_bytes=max_bytes, context=context, token=token),
                  timeout=timeout)


def _check_timeout(timeout: float) -> None:
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not 0 < timeout * 1000 <= wire.MAX_TIMEOUT_MS):
        raise InvalidArgument(
            f"timeout must be a number of seconds in (0, {wire.MAX_TIMEOUT_MS // 1000}], "
            f"got {timeout!r}", {"field": "timeout"})


class Client:
    """A connection to one memspace deployment: admin operations and space handles.

    Also a context manager (closes on exit). Safe to share between threads (see
    the module docstring).
    """

    def __init__(self, transport: Transport, *, timeout: float = 30.0) -> None:
        _check_timeout(timeout)
        self._transport = transport
        self.timeout = timeout

    @property
    def url(self) -> str:
        return self._transport.url

    def call(self, space: str, op: str, body: Mapping[str, Any] | None = None, *,
             request_id: str | None = None, passive: bool = False) -> Any:
        """Run one wire op and return its decoded JSON result (the layer every method uses).

        ``passive=True`` sends a background request, such as a change feed's long poll of
        ``events``: it does not count as activity (the space still hibernates when idle),
        and for a space that has no worker the server does not start one but answers
        SpaceUnavailable with ``details["asleep"] is True`` (and, when known,
        ``details["last_seq"]``, the newest seq its last worker wrote). Only the zmq
        transport carries it; over ``http://`` it raises InvalidArgument, nothing sent.
        """
        rid = uuid.uuid4().hex if request_id is None else request_id
        if passive:
            return self._transport.call(space, op, body or {}, rid, self.timeout, passive=True)
        return self._transport.call(space, op, body or {}, rid, self.timeout)

    # -- spaces ----------------------------------------------------------------------------

    def space(self, space_id: str) -> RemoteSpace:
        """A handle on ``space_id``; raises InvalidSpaceId (source "argument") for a bad id.
        Nothing is sent: a space that does not exist fails on first use (SpaceNotFound)."""
        return RemoteSpace(self, validate_space_id(space_id, "argument"))

    def default_space(self) -> RemoteSpace:
        """A handle on whatever space the server uses for clients that name none."""
        return RemoteSpace(self, "")

    def create_space(self, space_id: str, dimension: int | None = None,
                     settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Create ``space_id``; the same call again is a no-op, other settings SpaceExists."""
        body = _given({"dimension": dimension, "settings": settings})
        return self._admin(space_id, "create_space", body)

    def list_spaces(self) -> builtins.list[dict[str, Any]]:
        result = self.call("", "list_spaces")
        if isinstance(result, dict):
            result = result.get("spaces", [])
        return list(result)

    def get_space(self, space_id: str) -> dict[str, Any]:
        return self._admin(space_id, "get_space")

    def delete_space(self, space_id: str) -> dict[str, Any]:
        """Delete the space and all its data; returns the receipt of what was removed."""
        return self._admin(space_id, "delete_space")

    def drain(self, space_id: str) -> dict[str, Any]:
        return self._admin(space_id, "drain")

    def hibernate(self, space_id: str) -> dict[str, Any]:
        return self._admin(space_id, "hibernate")

    def restart(self, space_id: str) -> dict[str, Any]:
        return self._admin(space_id, "restart")

    def repair(self, space_id: str) -> dict[str, Any]:
        return self._admin(space_id, "repair")

    def status(self) -> dict[str, Any]:
        """Deployment status: ``{"spaces": [{"id", "state", "pid", "memories", ...}], ...}``."""
        result: dict[str, Any] = self.call("", "status")
        return result

    def _admin(self, space_id: str, op: str, body: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
        result: dict[str, Any] = self.call(validate_space_id(space_id, "argument"), op, body)
        return result

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; idempotent. Calls after this raise InvalidArgument."""
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.url}>"


class RemoteSpace:
    """A space served by a memspace server, with the methods of the embedded Space.

    Results are the engine's dataclasses, as embedded. Differences: ``get`` and
    ``list`` return memories without their embedding (an empty float32 array)
    unless ``embedding=True``; ``stats`` returns a dict. The connection belongs to
    the Client: :meth:`close` here does nothing.
    """

    def __init__(self, client: Client, space_id: str) -> None:
        self._client = client
        #: The space id, or "" for the server's default space.
        self.id = space_id

    def _call(self, op: str, body: Mapping[str, Any] | None = None, *,
              request_id: str | None = None) -> Any:
        return self._client.call(self.id, op, body, request_id=request_id)

    # -- writes ----------------------------------------------------------------------------

    def remember(self, content: str | None = None, embedding: Any = None, *, id: str | None = None,
                 confidence: float | None = None, tags: Sequence[str] | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 links: Sequence[Mapping[str, Any]] | None = None,
                 request_id: str | None = None) -> RememberResult:
        """Store a memory (or reinforce a near-duplicate: ``outcome == "merged"``)."""
        body = _given({"content": content, "embedding": _vector(embedding), "id": id,
                       "confidence": confidence, "tags": tags, "metadata": metadata,
                       "links": links})
        return RememberResult.from_dict(self._call("remember", body, request_id=request_id))

    def remember_batch(self, items: Iterable[Mapping[str, Any]], *, request_id: str | None = None
                       ) -> builtins.list[RememberResult]:
        """Store many memories as one record: all or none, one fsync."""
        result = self._call("remember_batch", {"items": _items(items)}, request_id=request_id)
        return [RememberResult.from_dict(r) for r in result]

    def forget(self, id: str | None = None, *, ids: Sequence[str] | None = None,
               tags: Sequence[str] | None = None, before: float | None = None,
               request_id: str | None = None) -> int:
        """Delete memories by id, ids, or filter (tags and/or created before); returns how many."""
        body = _given({"id": id, "ids": ids, "tags": tags, "before": before})
        return int(self._call("forget", body, request_id=request_id)["forgotten"])

    def link(self, source: str, target: str, weight: float = 1.0, kind: str = "related", *,
             request_id: str | None = None) -> Link:
        """Add (or re-weight) the directed link ``source -> target``."""
        body = {"source": source, "target": target,
                **_given({"weight": weight, "kind": kind}, _LINK_DEFAULTS)}
        return Link.from_dict(self._call("link", body, request_id=request_id))

    def import_(self, items: Iterable[Mapping[str, Any]], batch: int = 500) -> int:
        """Restore exported memories (:meth:`export`'s dicts) exactly, in batches of ``batch``;
        returns how many were imported. Everything exported is kept (ids, embeddings, times,
        access counts, tags, metadata, links with weights and kinds, also to memories of
        later batches); there is no dedup and no auto-linking, and a memory with the same id
        is replaced. Each batch is one request, applied all or none; a failure raises after
        the earlier batches were applied."""
        _check_batch(batch)
        total = 0
        chunk: builtins.list[Mapping[str, Any]] = []
        for item in items:
            chunk.append(item)
            if len(chunk) == batch:
                total += self._import_chunk(chunk)
                chunk = []
        if chunk:
            total += self._import_chunk(chunk)
        return total

    def _import_chunk(self, chunk: Sequence[Mapping[str, Any]]) -> int:
        return int(self._call("import", {"items": _items(chunk)})["imported"])

    # -- reads -----------------------------------------------------------------------------

    def get(self, id: str, *, embedding: bool = False) -> Memory:
        """One memory by id (MemoryNotFound if absent); its embedding only if asked for."""
        body: dict[str, Any] = {"id": id}
        if embedding:
            body["embedding"] = True
        return _memory(self._call("get", body), embedding)

    def recall(self, query: str | None = None, embedding: Any = None, *, k: int = 10,
               threshold: float = 0.0, mode: str = "spreading", max_depth: int = 3,
               tags: Sequence[str] | None = None, since: float | None = None,
               until: float | None = None, tiers: Sequence[str] | None = None
               ) -> builtins.list[Hit]:
        """Ranked memories for a text and/or embedding cue; returned memories are reinforced."""
        body = _given({"query": query, "embedding": _vector(embedding), "k": k,
                       "threshold": threshold, "mode": mode, "max_depth": max_depth,
                       "tags": tags, "since": since, "until": until, "tiers": tiers},
                      _RECALL_DEFAULTS)
        return [Hit.from_dict(h) for h in self._call("recall", body)]

    def count(self, tier: str | None = None) -> int:
        return int(self._call("count", _given({"tier": tier})))

    def list(self, limit: int = 100, cursor: str | None = None, tier: str | None = None, *,
             embedding: bool = False) -> Page:
        """One page of memories in id order; pass ``next_cursor`` back for the next page."""
        body = _given({"limit": limit, "cursor": cursor, "tier": tier}, _LIST_DEFAULTS)
        if embedding:
            body["embedding"] = True
        page = self._call("list", body)
        return Page([_memory(m, embedding) for m in page["items"]], page.get("next_cursor"))

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("stats")
        return result

    def export(self, batch: int = 500) -> Iterator[dict[str, Any]]:
        """Every memory as a dict with its embedding (the shape :meth:`import_` takes),
        fetched ``batch`` at a time. Memories written while paging may or may not appear."""
        _check_batch(batch)
        cursor: str | None = None
        while True:
            body: dict[str, Any] = {"limit": batch}
            if cursor is not None:
                body["cursor"] = cursor
            page = self._call("export", body)
            yield from page["items"]
            following = page.get("next_cursor")
            if following is None:
                return
            if following == cursor:
                raise InvalidArgument(f"export from {self._client.url}: the server returned "
                                      f"the same cursor {cursor!r} twice", {"cursor": cursor})
            cursor = following

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Nothing to release: the connection belongs to the Client."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RemoteSpace {self.id or '(default)'} at {self._client.url}>"


# -- argument and result conversion ------------------------------------------------------------


def _given(args: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``args`` without None values and without values equal to their method default."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if value is None:
            continue
        if (defaults is not None and key in defaults and not isinstance(value, np.ndarray)
                and type(value) is type(defaults[key]) and value == defaults[key]):
            continue
        out[key] = value
    return out


def _vector(value: Any) -> Any:
    # orjson serialises only C-contiguous arrays of some dtypes; embeddings are float32 anyway.
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value, dtype=np.float32)
    return value


def _items(items: Iterable[Mapping[str, Any]]) -> builtins.list[Any]:
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise InvalidArgument("items must be a list of memory objects", {"field": "items"})
    out: builtins.list[Any] = []
    for item in items:
        if isinstance(item, Mapping) and isinstance(item.get("embedding"), np.ndarray):
            item = {**item, "embedding": _vector(item["embedding"])}
        out.append(item)
    return out


def _check_batch(batch: int) -> None:
    if type(batch) is not int or batch < 1:
        raise InvalidArgument(f"batch must be a positive integer, got {batch!r}",
                              {"field": "batch"})


def _memory(data: Mapping[str, Any], embedding: bool) -> Memory:
    if embedding and "embedding" in data:
        return Memory.from_dict(data)
    return Memory.from_dict(data, embedding=np.empty(0, dtype=np.float32))
