"""Space operations as the worker serves them: JSON-shaped arguments in, JSON-shaped results out.

One table, :data:`OPS`, maps each wire op to a function ``(space, args,
request_id) -> result``. Argument names are checked here so an unknown or
misspelt argument is a clear INVALID_ARGUMENT, never a TypeError deep inside.
Writes pass the request id to the space, which makes them idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from memspace.engine.model import Memory
from memspace.errors import InvalidArgument
from memspace.storage.space import Space

Handler = Callable[[Space, Mapping[str, Any], str], Any]


def _check(op: str, args: Mapping[str, Any], allowed: frozenset[str], required: frozenset[str] = frozenset()
           ) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise InvalidArgument(
            f"{op}: unknown argument(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            {"op": op, "unknown": unknown},
        )
    missing = sorted(required - set(args))
    if missing:
        raise InvalidArgument(f"{op}: missing argument(s) {', '.join(missing)}", {"op": op, "missing": missing})


def _memory(m: Memory, embedding: bool) -> dict[str, Any]:
    return m.to_dict(embedding=embedding)


REMEMBER_ARGS = frozenset({"content", "embedding", "id", "confidence", "tags", "metadata", "links"})


def remember(space: Space, args: Mapping[str, Any], request_id: str) -> Any:
    _check("remember", args, REMEMBER_ARGS)
    return space.remember(**args, request_id=request_id).to_dict()


def remember_batch(space: Space, args: Mapping[str, Any], request_id: str) -> Any:
    _check("remember_batch", args, frozenset({"items"}), frozenset({"items"}))
    return [r.to_dict() for r in space.remember_batch(args["items"], request_id=request_id)]


def get(space: Space, args: Mapping[str, Any], request_id: str) -> Any:
    _check("get", args, frozenset({"id", "embedding"}), frozenset({"id"}))
    return _memory(space.get(args["id"]), bool(args.get("embedding", False)))


def forget(space: Space, args: Mapping[str, Any], request_id: str) -> Any:
    _check("forget", args, frozenset({"id", "ids", "tags", "before"}))
    return {"forgotten": space.forget(**args, request_id=request_id)}


def link(space: Space, args: Mapping[str, Any], request_id: str) -> Any:
    _check("link", args, frozenset({"source", "target", "weight", "kind"}), frozenset({"source", "target"}))
    made = space.link(**args, request_id=request_id)
    return {"source": args["source"], **made.to_dict()}


RECALL_ARGS = frozenset({"query", "embedding", "k", "threshold", "mode", "max_depth", "tags", "since", "until",
                         "tiers"})


def recall(space: Space, args: Mapping[str, Any], request_id: str) -> Any:
    _check("recall", args, RECALL_ARGS)
    return [h.to_dict() for h in space.recall(**args)]


def count(space: Space, args: Mapping[str, Any], request_id: str) -> Any:
    _check("count", args, frozenset({"tier"}))
    return space.count(args.get("tier"))


def list_(space: Space, args: Mapping[str, Any], request_id: str) -> Any:
    _check("list", args, frozenset({"limit", "cursor", "tier", "embedding"}))
    embedding = bool(args.get("embedding", False))
    page = space.list(limit=args.get("limit", 100), cursor=args.get("cursor"), tier=args.get("tier"))
    return {"items": [_memory(m, embedding) for m in page.items], "next_cursor": page.next_cursor}


def stats(space: Space, args: Mapping[str, Any], request_id: str) -> Any:
    _check("stats", args, frozenset())
    return space.stats().to_dict()


def export(space: Space, args: Mapping[str, Any], request_id: str) -> Any:
    """One page of memories with embeddings; the caller pages with ``next_cursor``."""
    _check("export", args, frozenset({"limit", "cursor"}))
    page = space.list(limit=args.get("limit", 500), cursor=args.get("cursor"))
    return {"items": [_memory(m, True) for m in page.items], "next_cursor": page.next_cursor}


def import_(space: Space, args: Mapping[str, Any], request_id: str) -> Any:
    """Memories as exported, restored exactly (``Space.restore``): one record, all or none."""
    _check("import", args, frozenset({"items"}), frozenset({"items"}))
    return {"imported": space.restore(args["items"], request_id=request_id)}


OPS: dict[str, Handler] = {
    "remember": remember,
    "remember_batch": remember_batch,
    "get": get,
    "forget": forget,
    "link": link,
    "recall": recall,
    "count": count,
    "list": list_,
    "stats": stats,
    "export": export,
    "import": import_,
}
