"""Between protobuf messages of ``memspace.v1`` and the JSON-shaped bodies the router speaks.

Requests become op bodies holding only the fields the caller set, so the worker's
defaults apply to everything else (proto3 cannot tell 0 from unset for plain
scalars; fields where the difference matters are ``optional`` in the proto).
Results (``worker.ops`` / ``supervisor.admin`` shapes) become response messages.

``google.protobuf.Struct`` stores every number as a double. A whole number coming
in (metadata, settings) is turned back into an int, because that is what a JSON
client would have sent and settings such as ``max_auto_links`` must be integers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from memspace.api.pb import pb2

#: Integers above this are not exact in a double; leave them as floats.
_EXACT_INT = 2**53


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_INT:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def struct_to_dict(message: Any, field: str) -> dict[str, Any] | None:
    """``message.field`` as a dict, or None when the field is not set."""
    if not message.HasField(field):
        return None
    return _ints(json_format.MessageToDict(getattr(message, field)))  # type: ignore[no-any-return]


def to_struct(data: Mapping[str, Any] | None) -> Struct:
    """A JSON-safe mapping as a Struct; values Struct cannot hold go through JSON first."""
    s = Struct()
    if data:
        try:
            s.update(dict(data))
        except (ValueError, TypeError):
            s.update(orjson.loads(orjson.dumps(data, default=str)))
    return s


def _optional(message: Any, body: dict[str, Any], *fields: str) -> None:
    for name in fields:
        if message.HasField(name):
            body[name] = getattr(message, name)


def _nonempty(message: Any, body: dict[str, Any], *fields: str) -> None:
    for name in fields:
        value = getattr(message, name)
        if value:
            body[name] = value if isinstance(value, (str, int, float, bool)) else list(value)


def _links(specs: Any) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        link: dict[str, Any] = {"target": spec.target, "weight": spec.weight}
        if spec.kind:
            link["kind"] = spec.kind
        out.append(link)
    return out


def memory_input(message: Any) -> dict[str, Any]:
    """A RememberRequest or MemoryInput as the ``remember`` op's arguments."""
    body: dict[str, Any] = {}
    _optional(message, body, "content", "confidence")
    _nonempty(message, body, "embedding", "id", "tags")
    metadata = struct_to_dict(message, "metadata")
    if metadata is not None:
        body["metadata"] = metadata
    if message.links:
        body["links"] = _links(message.links)
    return body


def forget_body(message: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    _nonempty(message, body, "id", "ids", "tags")
    _optional(message, body, "before")
    return body


def link_body(message: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"source": message.source, "target": message.target}
    _optional(message, body, "weight")
    _nonempty(message, body, "kind")
    return body


def recall_body(message: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    _optional(message, body, "query", "k", "threshold", "max_depth", "since", "until")
    _nonempty(message, body, "embedding", "mode", "tags", "tiers")
    return body


def create_body(space: str, message: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": space}
    if message.dimension:
        body["dimension"] = message.dimension
    settings = struct_to_dict(message, "settings")
    if settings is not None:
        body["settings"] = settings
    return body


# -- results -> messages --------------------------------------------------------------------

def remember_result(r: Mapping[str, Any]) -> Any:
    out = pb2.RememberResult(id=r["id"], outcome=r["outcome"], links=r.get("links") or [])
    if r.get("similarity") is not None:
        out.similarity = r["similarity"]
    return out


def _link_specs(links: Any) -> list[Any]:
    return [pb2.LinkSpec(target=x["target"], weight=x["weight"], kind=x.get("kind", "")) for x in links or ()]


def memory(m: Mapping[str, Any]) -> Any:
    out = pb2.Memory(
        id=m["id"], confidence=m["confidence"], created_at=m["created_at"], last_access=m["last_access"],
        access_count=m["access_count"], tags=m.get("tags") or [], links=_link_specs(m.get("links")),
        tier=m.get("tier") or "", metadata=to_struct(m.get("metadata")),
        embedding=m.get("embedding") or [],
    )
    if m.get("content") is not None:
        out.content = m["content"]
    return out


def hit(h: Mapping[str, Any]) -> Any:
    out = pb2.Hit(
        id=h["id"], score=h["score"], similarity=h["similarity"], activation=h["activation"],
        confidence=h["confidence"], path=h.get("path") or [], depth=h.get("depth", len(h.get("path") or ()) - 1),
        reached=h.get("reached", ""), tags=h.get("tags") or [], metadata=to_struct(h.get("metadata")),
        tier=h.get("tier") or "",
    )
    if h.get("content") is not None:
        out.content = h["content"]
    return out


def link_result(r: Mapping[str, Any]) -> Any:
    return pb2.LinkResponse(source=r["source"], target=r["target"], weight=r["weight"], kind=r.get("kind", ""))


_STATUS_OPTIONAL = ("pid", "uptime_s", "memories", "wal_bytes", "wal_lag_bytes", "checkpoint_at", "rss_bytes")
_STATUS_PLAIN = ("generation", "dimension", "created_at", "restarts", "queued", "inflight")


def space_status(s: Mapping[str, Any]) -> Any:
    """An admin status dict as SpaceStatus; every key also travels in ``raw``."""
    out = pb2.SpaceStatus(id=s["id"], state=s.get("state") or "", settings=to_struct(s.get("settings")),
                          raw=to_struct(s))
    for name in _STATUS_PLAIN:
        if s.get(name) is not None:
            setattr(out, name, s[name])
    for name in _STATUS_OPTIONAL:
        if s.get(name) is not None:
            setattr(out, name, s[name])
    error = s.get("last_error")
    if error is not None:
        out.last_error = error if isinstance(error, str) else orjson.dumps(error, default=str).decode()
    for tier, n in (s.get("memories_by_tier") or {}).items():
        out.memories_by_tier[tier] = n
    return out


def receipt(r: Mapping[str, Any]) -> Any:
    out = pb2.DeleteSpaceReceipt(memory_space_id=r.get("space", ""), deleted=bool(r.get("deleted")),
                                 files=r.get("files") or 0, bytes=r.get("bytes") or 0)
    if r.get("memories") is not None:
        out.memories = r["memories"]
    return out


_EVENT_KEYS = frozenset({"seq", "type", "at", "space"})


def data_event(space: str, e: Mapping[str, Any]) -> Any:
    """A change-feed event; everything beyond seq/type/at goes into ``data``."""
    return pb2.Event(seq=int(e["seq"]), type=str(e.get("type", "")), at=float(e.get("at") or 0.0),
                     memory_space_id=str(e.get("space") or space),
                     data=to_struct({k: v for k, v in e.items() if k not in _EVENT_KEYS}))


def lifecycle_event(e: Mapping[str, Any]) -> Any:
    return pb2.Event(type="lifecycle", at=float(e.get("at") or 0.0), memory_space_id=str(e.get("space", "")),
                     lifecycle=pb2.Lifecycle(old=str(e.get("old", "")), new=str(e.get("new", "")),
                                             reason=str(e.get("reason", ""))))


def gap_event(space: str, after: int, last_seq: int | None) -> Any:
    return pb2.Event(type="gap", memory_space_id=space,
                     data=to_struct({"after": after, "last_seq": last_seq}))
