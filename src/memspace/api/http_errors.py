"""Every HTTP error in one envelope: ``{"error": {"code", "message", "details"}}``.

* :class:`memspace.errors.MemspaceError` -> the contract's status for its code;
  429 and 503 carry ``Retry-After`` (``details.retry_after_s``, default 1 s).
* Request validation (pydantic) -> 400 INVALID_ARGUMENT naming the field, never
  FastAPI's default 422 (422 is POISON_REQUEST in this API).
* Unknown route -> 404 NOT_FOUND, wrong method -> 405 METHOD_NOT_ALLOWED.
* Anything unexpected -> 500 INTERNAL (logged with its traceback).

:class:`BodyLimit` enforces ``limits.max_request_bytes``: a declared
Content-Length above it is refused before the body is read, and the bytes of a
chunked body are counted as they arrive. Streams whose handler bounds each line
itself (NDJSON import) are exempt.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memspace.errors import MemspaceError, PayloadTooLarge, http_status

log = logging.getLogger("memspace.http")

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class JSON(Response):
    """orjson-rendered JSON (fast for embeddings; numpy arrays allowed)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_JSON_OPTIONS)


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": _plain(details or {})}}


def error_response(err: MemspaceError) -> JSON:
    return _error(http_status(err.code), err.code, err.message, err.details)


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSON:
    headers = {}
    if status in (429, 503):
        headers["Retry-After"] = str(retry_after(details or {}))
    return JSON(envelope(code, message, details), status_code=status, headers=headers)


def retry_after(details: dict[str, Any]) -> int:
    """Whole seconds for Retry-After: ``details["retry_after_s"]`` rounded up, at least 1."""
    raw = details.get("retry_after_s", 1)
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        return 1
    return max(1, math.ceil(seconds)) if math.isfinite(seconds) else 1


def _plain(value: Any) -> Any:
    """JSON-safe copy of error details (validation contexts may hold exceptions)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _describe(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    items = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        where = loc[0] if loc else "request"
        # a JSON syntax error's "location" is a character offset, not a field
        field = None if e.get("type") == "json_invalid" else (".".join(loc[1:]) or None)
        items.append({"location": where, "field": field, "message": str(e.get("msg", "")),
                      "type": str(e.get("type", ""))})
    if not items:
        return "invalid request", items
    first = items[0]
    if first["type"] == "json_invalid":
        text = f"the request body is not valid JSON: {errors[0].get('ctx', {}).get('error', first['message'])}"
    elif first["location"] == "body" and not first["field"] and first["type"] == "model_attributes_type":
        text = "the request body must be a JSON object sent with Content-Type: application/json"
    elif first["field"]:
        text = f"invalid {first['location']} field {first['field']!r}: {first['message']}"
    else:
        text = f"invalid {first['location']}: {first['message']}"
    if len(items) > 1:
        text += f" (and {len(items) - 1} more problem{'s' if len(items) > 2 else ''}; see details.errors)"
    return text, items


def install(app: FastAPI) -> None:
    """Register the envelope handlers on ``app``."""

    async def on_memspace(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MemspaceError)
        return error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        message, items = _describe(list(exc.errors()))
        fields = [i["field"] for i in items if i["field"]]
        details: dict[str, Any] = {"errors": items}
        if fields:
            details["field"] = fields[0]
        return _error(400, "INVALID_ARGUMENT", message, details)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        if status == 404:
            return _error(404, "NOT_FOUND", f"no route {request.method} {request.url.path}; see /docs",
                          {"method": request.method, "path": request.url.path})
        if status == 405:
            return _error(405, "METHOD_NOT_ALLOWED",
                          f"{request.method} is not allowed on {request.url.path}; see /docs",
                          {"method": request.method, "path": request.url.path})
        code = "INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL"
        return _error(status, code, str(exc.detail), {})

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return _error(500, "INTERNAL", f"internal error: {type(exc).__name__}", {})

    app.add_exception_handler(MemspaceError, on_memspace)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


#: A refused body up to this much larger than the limit is read (and dropped) before the 413.
DRAIN_MAX_BYTES = 16 * 1024 * 1024


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 PAYLOAD_TOO_LARGE for bodies above ``limit`` bytes.

    The declared Content-Length is checked first; the bytes actually received are
    counted too (chunked bodies, lying headers). When the count passes the limit
    mid-read, whatever the application tries to answer is dropped and the 413 is
    sent instead (nothing has been sent yet: handlers reply after reading).
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: Callable[[Scope], bool]) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            drained = declared - self.limit <= DRAIN_MAX_BYTES and await _drain(receive, declared)
            await self._refuse(scope, send, f"{declared} bytes", declared, drained)
            return
        received = 0
        over = False
        started = False
        complete = False   # the last body message has been read

        async def counting_receive() -> Message:
            nonlocal received, over, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.limit:
                    over = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            pass
        except Exception:
            if not over:
                raise
        if over and not started:
            drained = complete or await _drain(receive, DRAIN_MAX_BYTES)
            await self._refuse(scope, send, f"more than {self.limit} bytes", received, drained)

    async def _refuse(self, scope: Scope, send: Send, size_text: str, size: int, drained: bool) -> None:
        err = PayloadTooLarge(
            f"request body is too large ({size_text}); the limit is limits.max_request_bytes = {self.limit}",
            {"limit": self.limit, "size": size})
        response = error_response(err)
        if not drained:
            response.headers["Connection"] = "close"   # the unread rest of the body makes it unusable
        await response(scope, _no_receive, send)


async def _drain(receive: Receive, budget: int) -> bool:
    """Read and drop the rest of a refused body, up to ``budget`` bytes; True if it all came.

    Closing a connection with unread request bytes makes the kernel reset it, and a
    client still sending then loses the 413 it should read; draining avoids that for
    bodies that are merely too large rather than huge.
    """
    while budget >= 0:
        message = await receive()
        if message["type"] != "http.request":
            return False
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return budget >= 0
    return False


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
