"""NDJSON export and import: one JSON memory (with embedding and links) per line.

Export pages through the worker's ``export`` op and streams each page as it
arrives, so memory use is one page whatever the size of the space. An error
after the first page aborts the response (the transfer ends incomplete, which
HTTP clients report), because the status line has already been sent.

Import reads the body as a stream, line by line (each line at most
``limits.max_request_bytes``; the body as a whole is not limited), and sends
the ``import`` op in batches of at most :data:`IMPORT_BATCH` memories, each one
write (all or none). A bad line stops the import with 400 naming its line
number; the batches before it stay imported and the message says how many.
With an Idempotency-Key, batch *n* carries the request id ``<key>:<n>``, so
re-sending the same file with the same key does not import anything twice.

The worker restores each memory exactly as exported (``Space.restore``): id,
embedding, times, access count, tags, metadata and links, also links to
memories on later lines; no dedup, no auto-links, and a memory with the same id
is replaced. So export -> import into an empty space -> export gives the same
lines, and importing the same file again changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from memspace.api import http_schemas as s
from memspace.api.http_common import (
    GatewayState,
    IdempotencyHeader,
    gateway,
    idempotency_key,
    path_space,
)
from memspace.api.http_errors import JSON
from memspace.api.http_memories import ERRORS
from memspace.errors import InvalidArgument, MemspaceError, PayloadTooLarge, from_code

log = logging.getLogger("memspace.http")

EXPORT_PAGE = 500
IMPORT_BATCH = 500
NDJSON = "application/x-ndjson"

router = APIRouter(responses=ERRORS)
Space = Annotated[str, Depends(path_space)]
Gw = Annotated[GatewayState, Depends(gateway)]

_ITEM_INDEX = re.compile(r"items\[(\d+)\]")


@router.get("/v1/spaces/{space}/export", tags=["spaces"], summary="Export every memory as NDJSON",
            response_class=StreamingResponse,
            responses={200: {"content": {NDJSON: {"schema": {"type": "string"}}},
                             "description": "One memory per line, with embedding and links."}})
async def export(space: Space, gw: Gw) -> Response:
    # The first page is fetched before answering, so an unknown space is a proper 404.
    first = await gw.call(space, "export", {"limit": EXPORT_PAGE})

    async def pages() -> AsyncIterator[bytes]:
        page = first
        while True:
            items = page.get("items") or []
            if items:
                yield b"".join(orjson.dumps(m, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for m in items)
            cursor = page.get("next_cursor")
            if not cursor:
                return
            try:
                page = await gw.call(space, "export", {"limit": EXPORT_PAGE, "cursor": cursor})
            except MemspaceError as e:
                log.warning("export of space %s aborted: %s: %s", space, e.code, e.message)
                raise

    return StreamingResponse(pages(), media_type=NDJSON)


@router.post("/v1/spaces/{space}/import", tags=["spaces"], response_model=s.ImportOut,
             summary="Import memories from NDJSON (as written by export)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 NDJSON: {"schema": {"type": "string", "description": "One JSON memory per line."}}}}})
async def import_(request: Request, space: Space, gw: Gw, key: IdempotencyHeader = None) -> Response:
    if key is not None:
        idempotency_key(key)   # validates it
    importer = _Importer(gw, space, key)
    buffered = b""
    async for chunk in request.stream():
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        for raw in lines:
            await importer.line(raw)
        if len(buffered) > importer.line_limit:
            raise importer.too_long(importer.line_no + 1, len(buffered))
    if buffered:
        await importer.line(buffered)
    await importer.flush()
    return JSON({"imported": importer.imported})


class _Importer:
    def __init__(self, gw: GatewayState, space: str, key: str | None) -> None:
        self.gw = gw
        self.space = space
        self.key = key
        self.line_no = 0
        self.imported = 0
        self.batches = 0
        self.items: list[dict[str, Any]] = []
        self.lines: list[int] = []
        self.bytes = 0
        # one line must fit in one router message with its envelope
        self.line_limit = max(1024, gw.max_bytes - 1024)

    def so_far(self, first_line: int | None = None) -> str:
        before = self.lines[0] if first_line is None and self.lines else (first_line or self.line_no + 1)
        return (f"{self.imported} memories from the lines before line {before} were imported and stay "
                "imported; nothing from that line on was")

    def too_long(self, line: int, size: int) -> PayloadTooLarge:
        first = self.lines[0] if self.lines else line
        return PayloadTooLarge(
            f"line {line} is {'more than ' if line > self.line_no else ''}{size} bytes; a line may have at most "
            f"{self.line_limit} (limits.max_request_bytes less 1 KiB); {self.so_far(first)}",
            {"line": line, "limit": self.line_limit, "imported": self.imported})

    async def line(self, raw: bytes) -> None:
        self.line_no += 1
        raw = raw.strip()
        if not raw:
            return
        if len(raw) > self.line_limit:
            raise self.too_long(self.line_no, len(raw))
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise self._bad(f"not valid JSON ({e})") from None
        if not isinstance(item, dict):
            raise self._bad(f"expected a JSON object (one memory), got {type(item).__name__}")
        # keep each batch well inside the router's message limit, whatever the dimension
        if self.items and self.bytes + len(raw) > self.gw.max_bytes // 2:
            await self.flush()
        self.items.append(item)
        self.lines.append(self.line_no)
        self.bytes += len(raw)
        if len(self.items) >= IMPORT_BATCH:
            await self.flush()

    def _bad(self, problem: str) -> InvalidArgument:
        # the pending batch was not sent: it is part of "nothing from that line on"
        first = self.lines[0] if self.lines else self.line_no
        return InvalidArgument(f"line {self.line_no}: {problem}; {self.so_far(first)}",
                               {"line": self.line_no, "imported": self.imported})

    async def flush(self) -> None:
        if not self.items:
            return
        self.batches += 1
        try:
            result = await self.gw.call(self.space, "import", {"items": self.items},
                                        request_id=self._request_id())
        except MemspaceError as e:
            line = self._line_of(e)
            where = f"line {line}: " if line is not None else f"lines {self.lines[0]}-{self.lines[-1]}: "
            raise from_code(e.code, where + e.message + "; " + self.so_far(),
                            {**e.details, "line": line, "imported": self.imported}) from None
        self.imported += int(result.get("imported", len(self.items)))
        self.items, self.lines, self.bytes = [], [], 0

    def _request_id(self) -> str | None:
        return None if self.key is None else f"{self._stem()}:{self.batches}"

    def _stem(self) -> str:
        assert self.key is not None
        return self.key if len(self.key) <= 180 else hashlib.sha256(self.key.encode()).hexdigest()

    def _line_of(self, err: MemspaceError) -> int | None:
        if len(self.lines) == 1:
            return self.lines[0]   # a one-item batch: its line, whatever the error names
        field = str(err.details.get("field", "")) or err.message
        match = _ITEM_INDEX.search(field)
        if match is not None and int(match.group(1)) < len(self.lines):
            return self.lines[int(match.group(1))]
        index = err.details.get("index")
        if isinstance(index, int) and 0 <= index < len(self.lines):
            return self.lines[index]
        return None
