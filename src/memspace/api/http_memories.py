"""Memory routes: path-scoped ``/v1/spaces/{space}/...`` and the compatibility routes.

Each handler turns the HTTP request into one router call (the worker's op of
the same name, see :mod:`memspace.worker.ops`) and returns its result as JSON.
Errors are raised as MemspaceError and rendered by :mod:`memspace.api.http_errors`.
Writes carry the Idempotency-Key (else a fresh uuid4) as their request id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from memspace.api import http_schemas as s
from memspace.api.gateway import resolve_space
from memspace.api.http_common import (
    GatewayState,
    SpaceHeader,
    finish,
    gateway,
    idempotency,
    path_space,
)
from memspace.api.http_errors import JSON
from memspace.api.http_schemas import ErrorEnvelope
from memspace.ids import validate_memory_id

ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorEnvelope, "description": text} for status, text in (
        (400, "INVALID_ARGUMENT, INVALID_SPACE_ID, SPACE_REQUIRED or CONFLICTING_SPACE"),
        (404, "SPACE_NOT_FOUND or MEMORY_NOT_FOUND"),
        (413, "PAYLOAD_TOO_LARGE"),
        (429, "QUOTA_EXCEEDED, RATE_LIMITED or OVERLOADED (with Retry-After)"),
        (503, "SPACE_UNAVAILABLE (with Retry-After)"),
        (504, "DEADLINE_EXCEEDED"),
    )
}

router = APIRouter(responses=ERRORS)

Space = Annotated[str, Depends(path_space)]
Key = Annotated[str, Depends(idempotency)]
Gw = Annotated[GatewayState, Depends(gateway)]
SpaceQuery = Annotated[str | None, Query(
    alias="space", description="Space to use when the X-Memory-Space header names none.")]
Embedding = Annotated[bool, Query(description="Include the embedding vector.")]


# -- path-scoped -----------------------------------------------------------------------------------


@router.post("/v1/spaces/{space}/memories", tags=["memories"], response_model=s.RememberOut,
             summary="Remember one memory")
async def remember(body: s.RememberIn, space: Space, key: Key, gw: Gw) -> Response:
    """Store a memory, or reinforce a near-duplicate (``outcome: merged`` with the existing id)."""
    return JSON(await gw.call(space, "remember", body.args(), request_id=key))


@router.post("/v1/spaces/{space}/memories:batch", tags=["memories"], response_model=s.BatchOut,
             summary="Remember many memories in one write")
async def remember_batch(body: s.BatchIn, space: Space, key: Key, gw: Gw) -> Response:
    items = [item.args() for item in body.items]
    return JSON({"results": await gw.call(space, "remember_batch", {"items": items}, request_id=key)})


@router.get("/v1/spaces/{space}/memories", tags=["memories"], response_model=s.PageOut,
            summary="List memories, a page at a time")
async def list_memories(space: Space, gw: Gw,
                        limit: Annotated[int, Query(description="Page size (1..1000).")] = 100,
                        cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
                        tier: Annotated[s.Tier | None, Query(description="Only this tier.")] = None,
                        embedding: Embedding = False) -> Response:
    args: dict[str, object] = {"limit": limit, "embedding": embedding}
    if cursor is not None:
        args["cursor"] = cursor
    if tier is not None:
        args["tier"] = tier
    return JSON(await gw.call(space, "list", args))


@router.get("/v1/spaces/{space}/memories/{memory_id}", tags=["memories"], response_model=s.MemoryOut,
            summary="Get one memory")
async def get_memory(space: Space, memory_id: str, gw: Gw, embedding: Embedding = False) -> Response:
    validate_memory_id(memory_id, "path")
    return JSON(await gw.call(space, "get", {"id": memory_id, "embedding": embedding}))


@router.delete("/v1/spaces/{space}/memories/{memory_id}", tags=["memories"], response_model=s.ForgetOut,
               summary="Forget one memory")
async def forget_memory(space: Space, memory_id: str, key: Key, gw: Gw) -> Response:
    validate_memory_id(memory_id, "path")
    return JSON(await gw.call(space, "forget", {"id": memory_id}, request_id=key))


@router.post("/v1/spaces/{space}/forget", tags=["memories"], response_model=s.ForgetOut,
             summary="Forget memories by ids and/or filter")
async def forget_many(body: s.ForgetIn, space: Space, key: Key, gw: Gw) -> Response:
    return JSON(await gw.call(space, "forget", body.args(), request_id=key))


@router.post("/v1/spaces/{space}/links", tags=["memories"], response_model=s.LinkMadeOut,
             summary="Link two memories")
async def link(body: s.LinkCreateIn, space: Space, key: Key, gw: Gw) -> Response:
    """Add (or re-weight) the directed link ``source -> target``."""
    return JSON(await gw.call(space, "link", body.args(), request_id=key))


@router.post("/v1/spaces/{space}/recall", tags=["memories"], response_model=s.RecallOut,
             summary="Recall memories for a cue")
async def recall(body: s.RecallIn, space: Space, gw: Gw) -> Response:
    """Ranked results; ``mode: spreading`` (default) follows links from the similarity seeds."""
    return JSON({"results": await gw.call(space, "recall", body.args())})


@router.get("/v1/spaces/{space}/stats", tags=["spaces"], summary="Statistics of the space's worker")
async def stats(space: Space, gw: Gw) -> Response:
    return JSON(await gw.call(space, "stats", {}))


# -- compatibility routes: header > query > body > default ---------------------------------------


@router.post("/v1/memories", tags=["compatibility"], response_model=s.RememberOut,
             summary="Remember one memory (space from header, query, body or default)")
async def remember_compat(request: Request, body: s.CompatRememberIn, key: Key, gw: Gw,
                          x_memory_space: SpaceHeader = None, space: SpaceQuery = None) -> Response:
    resolved = resolve_space(header=x_memory_space, query=space, body=body.memory_space_id)
    result = await gw.call(resolved.space, "remember", body.args(drop=("memory_space_id",)), request_id=key)
    return finish(request, gw, resolved, JSON(result))


@router.post("/v1/recall", tags=["compatibility"], response_model=s.RecallOut,
             summary="Recall (space from header, query, body or default)")
async def recall_compat(request: Request, body: s.CompatRecallIn, gw: Gw,
                        x_memory_space: SpaceHeader = None, space: SpaceQuery = None) -> Response:
    resolved = resolve_space(header=x_memory_space, query=space, body=body.memory_space_id)
    results = await gw.call(resolved.space, "recall", body.args(drop=("memory_space_id",)))
    return finish(request, gw, resolved, JSON({"results": results}))


@router.get("/v1/memories/{memory_id}", tags=["compatibility"], response_model=s.MemoryOut,
            summary="Get one memory (space from header, query or default)")
async def get_compat(request: Request, memory_id: str, gw: Gw, x_memory_space: SpaceHeader = None,
                     space: SpaceQuery = None, embedding: Embedding = False) -> Response:
    resolved = resolve_space(header=x_memory_space, query=space)
    validate_memory_id(memory_id, "path")
    result = await gw.call(resolved.space, "get", {"id": memory_id, "embedding": embedding})
    return finish(request, gw, resolved, JSON(result))
