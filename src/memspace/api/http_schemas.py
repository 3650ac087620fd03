"""Request and response bodies of the REST API, as pydantic models.

Request models reject unknown fields (``extra="forbid"``) so a misspelt field is
a 400 naming it rather than silently ignored. They check JSON types only; the
engine checks values (dimension, sizes, ``k <= max_k``, ...) and its
INVALID_ARGUMENT errors pass through unchanged, so one rule lives in one place.

Response models document the API in ``/openapi.json``; handlers return the
router's result as it is (no second validation pass), and the models allow
extra fields because result shapes may gain fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["similarity", "spreading"]
Tier = Literal["hot", "warm", "cold"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    def args(self, *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
        """The fields the client gave (None = not given), as op arguments."""
        return {k: v for k, v in self.model_dump(exclude_none=True).items() if k not in drop}


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- requests ------------------------------------------------------------------------------------


class LinkIn(_In):
    target: str = Field(description="Id of the memory the link points to.")
    weight: float | None = Field(None, description="Link weight in 0..1.")
    kind: str | None = Field(None, description='Link type, e.g. "related" (the default).')


class RememberIn(_In):
    """One memory. At least one of ``content`` and ``embedding`` is required."""

    content: str | None = Field(None, description="Text of the memory (embedded by the space if no embedding).")
    embedding: list[float] | None = Field(None, description="Vector of the space's dimension.")
    id: str | None = Field(None, description="Memory id chosen by the client; generated when omitted.")
    confidence: float | None = Field(None, description="Initial confidence in 0..1.")
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    links: list[LinkIn] | None = Field(None, description="Outgoing links to existing memories.")


class CompatRememberIn(RememberIn):
    memory_space_id: str | None = Field(
        None, description="Space to write to when neither X-Memory-Space nor ?space= names one.")


class BatchIn(_In):
    items: list[RememberIn] = Field(description="Memories to store as one write (one fsync, all or none).")


class RecallIn(_In):
    """A cue: ``query`` text and/or an ``embedding``."""

    query: str | None = Field(None, description="Text cue (embedded by the space).")
    embedding: list[float] | None = Field(None, description="Vector cue of the space's dimension.")
    k: int | None = Field(None, description="Number of results (default 10, at most limits.max_k).")
    threshold: float | None = Field(None, description="Minimum cosine similarity of a seed.")
    mode: Mode | None = Field(None, description="similarity, or spreading (default) over links.")
    max_depth: int | None = Field(None, description="Spreading depth (default 3, at most 4).")
    tags: list[str] | None = Field(None, description="Only memories carrying all these tags.")
    since: float | None = Field(None, description="Only memories created at or after (Unix seconds).")
    until: float | None = Field(None, description="Only memories created before (Unix seconds).")
    tiers: list[Tier] | None = Field(None, description="Tiers to search (default hot, then warm if needed).")


class CompatRecallIn(RecallIn):
    memory_space_id: str | None = Field(
        None, description="Space to search when neither X-Memory-Space nor ?space= names one.")


class LinkCreateIn(_In):
    source: str
    target: str
    weight: float | None = Field(None, description="Link weight in 0..1 (default 1.0).")
    kind: str | None = Field(None, description='Link type (default "related").')


class ForgetIn(_In):
    """Forget by ``ids`` and/or a filter (all of ``tags``, created ``before``); together they intersect."""

    ids: list[str] | None = None
    tags: list[str] | None = None
    before: float | None = Field(None, description="Unix seconds.")


class CreateSpaceIn(_In):
    id: str = Field(description="Space id: 3-64 characters of a-z 0-9 _ -, starting with a letter or digit.")
    dimension: int | None = Field(None, description="Embedding dimension (default spaces.dimension).")
    settings: dict[str, Any] | None = Field(
        None, description="Space settings (dedup_threshold, link_threshold, decay, ...); fixed at creation.")


# -- responses -----------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(description="Stable error code, e.g. SPACE_NOT_FOUND.")
    message: str
    details: dict[str, Any]


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class RememberOut(_Out):
    id: str
    outcome: Literal["stored", "merged", "updated"]
    similarity: float | None = None
    links: list[Any] = []


class BatchOut(_Out):
    results: list[RememberOut]


class LinkOut(_Out):
    target: str
    weight: float
    kind: str


class MemoryOut(_Out):
    id: str
    content: str | None
    confidence: float
    created_at: float
    last_access: float
    access_count: int
    tags: list[str]
    metadata: dict[str, Any]
    links: list[LinkOut]
    tier: str
    embedding: list[float] | None = None


class PageOut(_Out):
    items: list[MemoryOut]
    next_cursor: str | None


class HitOut(_Out):
    id: str
    content: str | None
    score: float
    similarity: float
    activation: float
    confidence: float
    path: list[str] = Field(description="From the seed that reached this memory to it; [id] when direct.")


class RecallOut(_Out):
    results: list[HitOut]


class LinkMadeOut(LinkOut):
    source: str


class ForgetOut(_Out):
    forgotten: int


class SpaceStatusOut(_Out):
    id: str
    state: str
    pid: int | None = None
    dimension: int
    memories: int | None = None


class CreateSpaceOut(_Out):
    space: SpaceStatusOut
    created: bool


class SpaceListOut(_Out):
    spaces: list[SpaceStatusOut]


class DeleteReceiptOut(_Out):
    space: str
    deleted: bool
    memories: int | None
    files: int
    bytes: int


class ImportOut(_Out):
    imported: int = Field(description="Memories imported: restored exactly as exported, each replacing "
                                      "a memory with the same id.")


class StatusOut(_Out):
    spaces: list[SpaceStatusOut]


class HealthOut(_Out):
    status: str


class ReadyOut(_Out):
    ready: bool
