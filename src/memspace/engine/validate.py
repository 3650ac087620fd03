"""Checking client input before anything is planned: one place, one message style.

Every failure is an :class:`~memspace.errors.InvalidArgument` whose message
starts with the field path (``embedding``, or ``items[3].links[0].weight`` in
a batch) and whose ``details["field"]`` is that path. A JSON ``null`` counts
as an absent field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from memspace.engine.model import DEFAULT_LINK_KIND, TIERS, Limits, Link, Vector
from memspace.errors import InvalidArgument
from memspace.ids import validate_memory_id

ITEM_FIELDS = ("content", "embedding", "id", "confidence", "tags", "metadata", "links")
#: An exported memory: ``get``'s fields plus the embedding (``tier`` is accepted and ignored).
RESTORE_FIELDS = ITEM_FIELDS + ("created_at", "last_access", "access_count", "tier")
#: How far from 1 a restored embedding's norm may be for it to be kept as given (warm and cold
#: tiers store float16, which moves the norm by up to about 5e-4); others are normalised.
UNIT_TOLERANCE = 1e-3
LINK_FIELDS = ("target", "weight", "kind")
MAX_TAG_CHARS = 256
MAX_KIND_CHARS = 64


def invalid(field: str, problem: str, **details: Any) -> InvalidArgument:
    return InvalidArgument(f"{field}: {problem}", {"field": field, **details})


@dataclass(slots=True)
class Item:
    """One validated remember item; ``embedding`` is None until the embedder fills it in."""

    prefix: str              # "" for a single item, "items[3]." in a batch
    id: str | None
    content: str | None
    embedding: Vector | None
    confidence: float
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    links: tuple[Link, ...]

    def field(self, name: str) -> str:
        return self.prefix + name


def utf8_size(value: str, field: str) -> int:
    """Bytes of ``value`` in UTF-8; lone surrogates cannot be stored or sent, so they are refused."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise invalid(field, "is not valid Unicode text (it contains a lone surrogate)") from None


def number(value: Any, field: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """A finite real in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); bools are not numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(field, f"must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise invalid(field, f"must be a finite number in {span}, got {value!r}")
    return v


def timestamp(value: Any, field: str) -> float:
    return number(value, field, -math.inf, math.inf)


def integer(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise invalid(field, f"must be an integer in {lo}..{hi}, got {value!r}")
    return value


def unit_vector(value: Any, dimension: int, field: str) -> Vector:
    """``value`` as a unit-norm float32 vector of ``dimension`` finite numbers."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise invalid(field, "must be a list of numbers") from None
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        raise invalid(field, "must be a flat list of numbers")
    if arr.shape[0] != dimension:
        raise invalid(field, f"has {arr.shape[0]} dimensions, the space has {dimension}",
                      expected=dimension, got=int(arr.shape[0]))
    vec = arr.astype(np.float64)
    if not np.isfinite(vec).all():
        raise invalid(field, "contains NaN or infinity")
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:
        raise invalid(field, "is the zero vector (it has no direction to compare by)")
    unit: Vector = (vec / norm).astype(np.float32)
    return unit


def tags(value: Any, field: str, limits: Limits, counted: bool = True) -> tuple[str, ...]:
    """Non-empty strings, duplicates removed (first occurrence kept), at most ``limits.max_tags``
    (unless not ``counted``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise invalid(field, f"must be a list of strings, got {type(value).__name__}")
    if counted and len(value) > limits.max_tags:
        raise invalid(field, f"has {len(value)} tags, at most {limits.max_tags} are allowed")
    for i, t in enumerate(value):
        if not isinstance(t, str) or not t or len(t) > MAX_TAG_CHARS:
            raise invalid(f"{field}[{i}]", f"must be a string of 1..{MAX_TAG_CHARS} characters, got {t!r}")
        utf8_size(t, f"{field}[{i}]")
    return tuple(dict.fromkeys(value))



def tier(value: Any, field: str) -> str:
    if value not in TIERS:
        raise invalid(field, f"must be one of {', '.join(TIERS)}, got {value!r}")
    return str(value)

def kind(value: Any, field: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_KIND_CHARS:
        raise invalid(field, f"must be a string of 1..{MAX_KIND_CHARS} characters, got {value!r}")
    utf8_size(value, field)
    return value


def weight(value: Any, field: str) -> float:
    return number(value, field, 0.0, 1.0, lo_open=True)


def memory_id(value: Any, field: str) -> str:
    try:
        return validate_memory_id(value, field)
    except InvalidArgument:
        raise invalid(field, f"{repr(value)[:80]} is not a valid memory id (1-128 characters of "
                             "A-Z a-z 0-9 . _ : @ -, starting with a letter or digit)") from None


def _metadata(value: Any, field: str, limits: Limits) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid(field, f"must be an object, got {type(value).__name__}")
    try:
        size = len(orjson.dumps(dict(value)))
    except TypeError as exc:  # orjson.JSONEncodeError: non-str keys, NaN-free but unserialisable values
        raise invalid(field, f"must be JSON-serialisable with string keys ({exc})") from None
    if size > limits.max_metadata_bytes:
        raise invalid(field, f"is {size} bytes as JSON, at most {limits.max_metadata_bytes} are allowed")
    return dict(value)


def _content(value: Any, field: str, limits: Limits) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(field, f"must be a string, got {type(value).__name__}")
    size = utf8_size(value, field)
    if size > limits.max_content_bytes:
        raise invalid(field, f"is {size} bytes, at most {limits.max_content_bytes} are allowed",
                      limit=limits.max_content_bytes)
    text: str = value
    return text


def _links(value: Any, field: str, limits: Limits, counted: bool = True) -> tuple[Link, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise invalid(field, f"must be a list of {{target, weight, kind?}}, got {type(value).__name__}")
    if counted and len(value) > limits.max_links:
        raise invalid(field, f"has {len(value)} links, at most {limits.max_links} are allowed")
    out: dict[str, Link] = {}
    for j, raw in enumerate(value):
        f = f"{field}[{j}]"
        if not isinstance(raw, Mapping):
            raise invalid(f, "must be an object {target, weight, kind?}")
        unknown = sorted(set(raw) - set(LINK_FIELDS))
        if unknown:
            raise invalid(f, f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(LINK_FIELDS)}")
        if raw.get("target") is None:
            raise invalid(f"{f}.target", "is required")
        target = memory_id(raw["target"], f"{f}.target")
        w = weight(raw.get("weight", 1.0), f"{f}.weight")
        k = DEFAULT_LINK_KIND if raw.get("kind") is None else kind(raw["kind"], f"{f}.kind")
        out[target] = Link(target, w, k)  # one link per target: the last one given wins
    return tuple(out.values())


def item(raw: Any, prefix: str, dimension: int, limits: Limits) -> Item:
    """Validate one remember item (everything except whether ids and link targets exist)."""
    where = prefix.rstrip(".") or "item"
    if not isinstance(raw, Mapping):
        raise invalid(where, f"must be an object, got {type(raw).__name__}")
    unknown = sorted(k for k in raw if k not in ITEM_FIELDS)
    if unknown:
        raise invalid(where, f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(ITEM_FIELDS)}",
                      unknown=[str(u) for u in unknown])
    get = raw.get
    content = _content(get("content"), prefix + "content", limits)
    embedding = None if get("embedding") is None else unit_vector(get("embedding"), dimension, prefix + "embedding")
    if embedding is None:
        if content is None:
            raise invalid(prefix + "content", "one of content or embedding is required")
        if not content.strip():
            raise invalid(prefix + "content", "is empty or whitespace and there is no embedding: nothing to embed")
    return Item(
        prefix=prefix,
        id=None if get("id") is None else memory_id(get("id"), prefix + "id"),
        content=content,
        embedding=embedding,
        confidence=1.0 if get("confidence") is None else number(get("confidence"), prefix + "confidence", 0.0, 1.0),
        tags=() if get("tags") is None else tags(get("tags"), prefix + "tags", limits),
        metadata={} if get("metadata") is None else _metadata(get("metadata"), prefix + "metadata", limits),
        links=() if get("links") is None else _links(get("links"), prefix + "links", limits),
    )


@dataclass(slots=True)
class RestoreItem(Item):
    """One validated exported memory (:func:`restore_item`); ``created_at`` None means "now"."""

    created_at: float | None
    last_access: float | None
    access_count: int


def embedding_as_given(value: Any, dimension: int, field: str) -> Vector:
    """``value`` as float32, unchanged when its norm is within :data:`UNIT_TOLERANCE` of 1 (an
    exported embedding always is), else normalised as :func:`unit_vector` does."""
    unit = unit_vector(value, dimension, field)   # checks the shape, finiteness, the zero vector
    given: Vector = np.asarray(value, dtype=np.float32)
    if abs(float(np.linalg.norm(given.astype(np.float64))) - 1.0) <= UNIT_TOLERANCE:
        return given
    return unit


def restore_item(raw: Any, prefix: str, dimension: int, limits: Limits) -> RestoreItem:
    """Validate one exported memory for a restore (everything except what exists already).

    ``id`` is required; ``embedding`` too unless there is ``content`` to embed. The
    numbers default as for a new memory (confidence 1, created now, last access at
    creation, no accesses). Tags and links are not counted against ``limits``: a
    memory can gather more of them than one request may give (merges add tags,
    auto-links from later memories add links), and an export holds them all. A
    link to the memory itself is refused, as everywhere.
    """
    where = prefix.rstrip(".") or "item"
    if not isinstance(raw, Mapping):
        raise invalid(where, f"must be an object, got {type(raw).__name__}")
    unknown = sorted(k for k in raw if k not in RESTORE_FIELDS)
    if unknown:
        raise invalid(where, f"unknown field(s) {', '.join(map(repr, unknown))}; expected "
                             f"{', '.join(RESTORE_FIELDS)}", unknown=[str(u) for u in unknown])
    get = raw.get
    if get("id") is None:
        raise invalid(prefix + "id", "is required: a restore keeps every memory's id")
    mid = memory_id(get("id"), prefix + "id")
    content = _content(get("content"), prefix + "content", limits)
    embedding = None
    if get("embedding") is not None:
        embedding = embedding_as_given(get("embedding"), dimension, prefix + "embedding")
    elif content is None or not content.strip():
        raise invalid(prefix + "embedding", "is required when there is no content to embed")
    links = () if get("links") is None else _links(get("links"), prefix + "links", limits, counted=False)
    for j, link in enumerate(links):
        if link.target == mid:
            raise invalid(f"{prefix}links[{j}].target", "a memory cannot link to itself")
    return RestoreItem(
        prefix=prefix, id=mid, content=content, embedding=embedding,
        confidence=1.0 if get("confidence") is None else number(get("confidence"), prefix + "confidence", 0.0, 1.0),
        tags=() if get("tags") is None else tags(get("tags"), prefix + "tags", limits, counted=False),
        metadata={} if get("metadata") is None else _metadata(get("metadata"), prefix + "metadata", limits),
        links=links,
        created_at=None if get("created_at") is None else timestamp(get("created_at"), prefix + "created_at"),
        last_access=None if get("last_access") is None else timestamp(get("last_access"), prefix + "last_access"),
        access_count=0 if get("access_count") is None else integer(get("access_count"), prefix + "access_count",
                                                                   0, 2**63 - 1))


def fill_embeddings(items: Sequence[Item], embed: Callable[[list[str]], Iterable[Any]], dimension: int) -> None:
    """Embed the content of the items that have no embedding (``embed`` is called at most
    once, and only if one lacks it). An InvalidArgument from ``embed`` naming an ``index`` is
    raised again naming that item's ``content`` field."""
    todo = [it for it in items if it.embedding is None]
    if not todo:
        return
    try:
        vectors = embed([it.content or "" for it in todo])
    except InvalidArgument as exc:
        index = exc.details.get("index")
        if isinstance(index, int) and 0 <= index < len(todo):
            field = todo[index].field("content")
            raise InvalidArgument(f"{field}: {exc.message}", {"field": field}) from None
        raise
    for it, vec in zip(todo, vectors):
        it.embedding = unit_vector(vec, dimension, it.field("content"))
