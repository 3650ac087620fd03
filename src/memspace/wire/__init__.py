"""The memspace wire protocol: every frame that crosses a zmq socket, in one module.

Every message starts with the protocol frame ``b"MSP1"`` and a one-byte
message-type frame (:class:`MsgType`). Frame layouts, as each side's socket
sends them (a ROUTER prepends/strips the peer's routing id; that envelope is
not part of these lists)::

    client (DEALER) -> router frontend (ROUTER)
        0 PROTOCOL  1 REQUEST  2 request_id  3 space_id  4 op  5 meta  6 body
    router -> client
        0 PROTOCOL  1 REPLY    2 request_id  3 status    4 body

    router backend (ROUTER) -> worker (DEALER, routing id = space id)
        0 PROTOCOL  1 REQUEST  2 ticket      3 request_id  4 op  5 meta  6 body
    worker -> router
        0 PROTOCOL  1 REPLY    2 ticket      3 request_id  4 status  5 body
        0 PROTOCOL  1 READY      2 info        after start-up and recovery
        0 PROTOCOL  1 HEARTBEAT  2 info        every heartbeat_s
        0 PROTOCOL  1 BYE        2 info        clean exit after a drain
    router -> worker
        0 PROTOCOL  1 HEARTBEAT
        0 PROTOCOL  1 CONTROL    2 command   3 meta      command: drain | checkpoint | stop

* ``request_id``: UTF-8, 1..255 bytes, chosen by the client; also the write's
  idempotency key. ``ticket``: 8 bytes chosen by the router per delivery.
* ``space_id``: ASCII space id (:mod:`memspace.ids`). Empty for deployment-wide
  admin ops (``list_spaces``, ``status``); empty on a space op means "the
  default space", which the router resolves (or refuses with SPACE_REQUIRED).
* ``meta``: orjson object, at most 4 KiB, empty bytes = ``{}``. Known keys:
  ``timeout_ms`` (positive int); ``passive`` (``true``: a background request, such
  as a change feed's long poll, that neither counts as activity for idle
  hibernation nor starts a space that has no worker: the router then answers
  SPACE_UNAVAILABLE with ``details.asleep = true`` itself). Others are passed through.
* ``body``: orjson object of the op's keyword arguments (empty = ``{}``) on
  requests; on replies the orjson result when ``status`` is ``b"OK"``, else
  ``status`` is an error code from :data:`memspace.errors.CODES` and ``body`` is
  ``{"code", "message", "details"}``.
* ``info`` and CONTROL ``meta``: orjson objects (READY info carries ``pid``,
  ``generation``, ``memories``, ...).

The router forwards request bodies without decoding them: the ``split_*``
functions check frame count, protocol, type, sizes, ids and op names, parse
only the tiny ``meta`` frame and leave bodies as bytes.

Failure semantics: every decoder raises only :class:`WireError` on hostile
input (never IndexError, UnicodeDecodeError, orjson errors...). A WireError is
also the matching contract error — ``WireInvalidArgument`` is an
``InvalidArgument``, ``WirePayloadTooLarge`` a ``PayloadTooLarge``,
``WireInvalidSpaceId`` an ``InvalidSpaceId`` — so callers may catch either and
send ``e.code, e.message, e.details`` back. Encoders raise the same errors for
oversize messages or values that cannot be encoded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any, NamedTuple

import orjson

from memspace.errors import (
    CODES,
    InvalidArgument,
    InvalidSpaceId,
    MemspaceError,
    PayloadTooLarge,
    from_code,
)
from memspace.ids import is_valid_space_id, validate_space_id

PROTOCOL = b"MSP1"

#: Largest message (sum of all frames) accepted or produced; ``limits.max_request_bytes``.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_META_BYTES = 4096
MAX_REQUEST_ID_BYTES = 255
TICKET_BYTES = 8
#: A ``timeout_ms`` above one day is a client bug, not a deadline.
MAX_TIMEOUT_MS = 86_400_000


class MsgType(IntEnum):
    REQUEST = 1
    REPLY = 2
    READY = 3
    HEARTBEAT = 4
    BYE = 5
    CONTROL = 6


#: Operations a worker serves for its own space.
SPACE_OPS = frozenset({
    "remember", "remember_batch", "get", "forget", "link", "recall", "count", "list",
    "stats", "export", "import", "events",
})
#: Operations the supervisor answers inside the router process.
ADMIN_OPS = frozenset({
    "create_space", "list_spaces", "get_space", "delete_space", "drain", "hibernate",
    "restart", "repair", "status", "metrics",
})
#: Admin ops that may leave the space frame empty. The others act on one named space
#: and never fall back to the default space (``delete_space`` of "nothing" must not
#: delete ``default``).
DEPLOYMENT_OPS = frozenset({"list_spaces", "status", "metrics"})
OPS = SPACE_OPS | ADMIN_OPS
CONTROL_COMMANDS = frozenset({"drain", "checkpoint", "stop"})
OK = b"OK"

_TYPE_FRAME = {t: bytes([t]) for t in MsgType}
_TYPE_OF = {bytes([t]): t for t in MsgType}
_OP_OF = {op.encode(): op for op in OPS}
_CODE_SET = frozenset(CODES)
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


# -- errors ------------------------------------------------------------------------------------


class WireError(MemspaceError):
    """A message that cannot be decoded or encoded.

    ``code``/``message``/``details`` come from the contract error it also is.
    ``request_id`` holds the raw request-id frame when it was read before the
    failure (else ``b""``), so the router can still address its error reply.
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None, *,
                 request_id: bytes = b"") -> None:
        super().__init__(message, details)
        self.request_id = request_id


class WireInvalidArgument(WireError, InvalidArgument):
    """Malformed message: frame count, protocol, type, ids, op, meta or body. INVALID_ARGUMENT."""


class WirePayloadTooLarge(WireError, PayloadTooLarge):
    """A message or frame above its size limit. PAYLOAD_TOO_LARGE."""


class WireInvalidSpaceId(WireError, InvalidSpaceId):
    """A space-id frame that is not a valid space id; names source "field". INVALID_SPACE_ID."""


# -- message records ---------------------------------------------------------------------------


class ClientRequest(NamedTuple):
    """A client request as the router sees it; ``body`` is left undecoded."""

    request_id: str
    space: str          # "" = none named
    op: str
    meta: dict[str, Any]
    body: bytes
    raw_meta: bytes     # forwarded to the worker untouched

    @property
    def is_admin(self) -> bool:
        return self.op in ADMIN_OPS

    @property
    def timeout_ms(self) -> int | None:
        value = self.meta.get("timeout_ms")
        return value if isinstance(value, int) else None

    @property
    def passive(self) -> bool:
        """A background request: not activity, and it does not start a sleeping space."""
        return self.meta.get("passive") is True

    @property
    def routing_id(self) -> bytes:
        """The worker's zmq identity for this request's space (resolve an empty space first)."""
        return self.space.encode("ascii")


class WorkerRequest(NamedTuple):
    """A request as a worker receives it; decode ``body`` with :func:`decode_body`."""

    ticket: bytes
    request_id: str
    op: str
    meta: dict[str, Any]
    body: bytes

    @property
    def timeout_ms(self) -> int | None:
        value = self.meta.get("timeout_ms")
        return value if isinstance(value, int) else None


class WorkerReply(NamedTuple):
    """A worker's reply as the router sees it: raw frames, nothing decoded."""

    ticket: bytes
    request_id: bytes
    status: bytes
    body: bytes


class Reply(NamedTuple):
    """A reply as a client sees it. :meth:`result` decodes it or raises its error."""

    request_id: str
    status: str
    body: bytes

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def result(self) -> Any:
        """The decoded result; raises the reply's MemspaceError (via ``from_code``) on error."""
        if self.status == "OK":
            return _loads(self.body, "reply body", allow_empty=True)
        message, details = self.status, {}
        try:
            err = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            err = None
        if isinstance(err, dict):
            if isinstance(err.get("message"), str):
                message = err["message"]
            if isinstance(err.get("details"), dict):
                details = err["details"]
        raise from_code(self.status, message, details)


class Signal(NamedTuple):
    """READY, HEARTBEAT or BYE with its info object (``{}`` for the router's bare HEARTBEAT)."""

    type: MsgType
    info: dict[str, Any]


class Control(NamedTuple):
    command: str
    meta: dict[str, Any]


# -- client <-> router -------------------------------------------------------------------------


def encode_request(request_id: str, space: str, op: str, body: Mapping[str, Any] | bytes | None, *,
                   timeout_ms: int | None = None, token: str | None = None, passive: bool = False,
                   max_bytes: int = MAX_MESSAGE_BYTES) -> list[bytes]:
    """Frames a client sends. ``token``: the caller's bearer token (``auth.mode = token``).
    ``passive``: mark a background request (see ``meta`` above). ``body``: the op's keyword
    arguments (numpy arrays allowed), or bytes already holding an orjson object. Raises
    WireError for a bad id, op or timeout, a body that cannot be encoded, or a message over
    ``max_bytes``."""
    rid = _encode_request_id(request_id)
    if space:
        try:
            validate_space_id(space, "argument")
        except InvalidSpaceId as e:
            raise WireInvalidSpaceId(e.message, e.details) from None
    _check_op(op, space, OPS, rid)
    if timeout_ms is not None:
        _check_timeout(timeout_ms, rid)
    fields: dict[str, Any] = {}
    if timeout_ms is not None:
        fields["timeout_ms"] = timeout_ms
    if token:
        fields["token"] = token
    if passive:
        fields["passive"] = True
    meta = orjson.dumps(fields) if fields else b""
    frames = [PROTOCOL, _TYPE_FRAME[MsgType.REQUEST], rid, space.encode("ascii"), op.encode(),
              meta, _encode_body(body, "request body")]
    _check_size(frames, max_bytes, "request")
    return frames


def split_client_request(frames: Sequence[bytes], *,
                         max_bytes: int = MAX_MESSAGE_BYTES) -> ClientRequest:
    """Validate a client request cheaply (the body stays bytes). Raises only WireError."""
    _check_header(frames, MsgType.REQUEST, 7, max_bytes, "client request")
    rid = frames[2]
    request_id = _decode_request_id(rid)
    space_b = frames[3]
    space = ""
    if space_b:
        try:
            space = space_b.decode("ascii")
        except UnicodeDecodeError:
            raise WireInvalidSpaceId(
                f"invalid memory space id {space_b[:80]!r} from field: it is not ASCII "
                "(allowed: a-z 0-9 _ -)", {"source": "field"}, request_id=rid) from None
        if not is_valid_space_id(space):
            try:
                validate_space_id(space, "field")
            except InvalidSpaceId as e:
                raise WireInvalidSpaceId(e.message, e.details, request_id=rid) from None
    op = _OP_OF.get(frames[4])
    if op is None:
        raise _bad_op(frames[4], OPS, rid)
    _check_op(op, space, OPS, rid)
    raw_meta = frames[5]
    return ClientRequest(request_id, space, op, _decode_meta(raw_meta, rid), frames[6], raw_meta)


def encode_reply(request_id: str | bytes, result: Any, *, ticket: bytes | None = None,
                 max_bytes: int = MAX_MESSAGE_BYTES) -> list[bytes]:
    """A successful reply: to the client, or with ``ticket`` from a worker to the router.
    Raises WireInvalidArgument if ``result`` cannot be encoded as JSON and
    WirePayloadTooLarge if the message exceeds ``max_bytes`` (a worker answers that as
    PAYLOAD_TOO_LARGE: the caller should page)."""
    return _reply(request_id, OK, _encode_body(result, "result", any_value=True), ticket, max_bytes)


def encode_error(request_id: str | bytes, code: str, message: str,
                 details: Mapping[str, Any] | None = None, *,
                 ticket: bytes | None = None) -> list[bytes]:
    """An error reply; ``code`` must be one of :data:`memspace.errors.CODES` (else
    WireInvalidArgument). Details that JSON cannot hold are sent as their ``str``."""
    if code not in _CODE_SET:
        raise WireInvalidArgument(f"unknown error code {code!r}; use one of memspace.errors.CODES",
                                  {"field": "code"})
    body = orjson.dumps({"code": code, "message": message, "details": dict(details or {})},
                        default=str, option=_NUMPY)
    return _reply(request_id, code.encode("ascii"), body, ticket, None)


def encode_exception(request_id: str | bytes, exc: BaseException, *,
                     ticket: bytes | None = None) -> list[bytes]:
    """An error reply for any exception: a MemspaceError keeps its code, anything else
    becomes INTERNAL naming only the exception type (internals stay in the server log)."""
    if isinstance(exc, MemspaceError) and exc.code in _CODE_SET:
        return encode_error(request_id, exc.code, exc.message, exc.details, ticket=ticket)
    return encode_error(request_id, "INTERNAL", f"internal error ({type(exc).__name__})",
                        ticket=ticket)


def split_reply(frames: Sequence[bytes], *, max_bytes: int = MAX_MESSAGE_BYTES) -> Reply:
    """A reply as a client receives it; the body stays bytes. Raises only WireError."""
    _check_header(frames, MsgType.REPLY, 5, max_bytes, "reply")
    rid = frames[2]
    return Reply(_decode_request_id(rid), _decode_status(frames[3], rid), frames[4])


def decode_reply(frames: Sequence[bytes], *, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """The result of a reply, or raise: WireError for a malformed message, otherwise the
    reply's own MemspaceError rebuilt with :func:`memspace.errors.from_code`."""
    return split_reply(frames, max_bytes=max_bytes).result()


# -- router <-> worker -------------------------------------------------------------------------


def make_ticket(number: int) -> bytes:
    """The 8-byte ticket for a router-side counter value (wraps at 2**64)."""
    return (number & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(TICKET_BYTES, "big")


def to_worker(ticket: bytes, req: ClientRequest) -> list[bytes]:
    """Frames that deliver ``req`` to its worker (the router prepends ``req.routing_id``).
    The body and meta are passed through untouched."""
    if len(ticket) != TICKET_BYTES:
        raise WireInvalidArgument(f"ticket must be {TICKET_BYTES} bytes, got {len(ticket)}")
    return [PROTOCOL, _TYPE_FRAME[MsgType.REQUEST], ticket, req.request_id.encode(),
            req.op.encode(), req.raw_meta, req.body]


def split_worker_request(frames: Sequence[bytes], *,
                         max_bytes: int = MAX_MESSAGE_BYTES) -> WorkerRequest:
    """A request as a worker receives it (space ops only). Raises only WireError."""
    _check_header(frames, MsgType.REQUEST, 7, max_bytes, "worker request")
    ticket = _check_ticket(frames[2])
    rid = frames[3]
    request_id = _decode_request_id(rid)
    op = _OP_OF.get(frames[4])
    if op is None or op not in SPACE_OPS:
        raise _bad_op(frames[4], SPACE_OPS, rid)
    return WorkerRequest(ticket, request_id, op, _decode_meta(frames[5], rid), frames[6])


def split_worker_reply(frames: Sequence[bytes], *,
                       max_bytes: int = MAX_MESSAGE_BYTES) -> WorkerReply:
    """A worker's reply as the router receives it (after the routing id). Checks the frame
    layout, ticket and status; decodes nothing. Raises only WireError."""
    _check_header(frames, MsgType.REPLY, 6, max_bytes, "worker reply")
    rid = frames[3]
    _decode_status(frames[4], rid)
    return WorkerReply(_check_ticket(frames[2]), rid, frames[4], frames[5])


def to_client(reply: WorkerReply) -> list[bytes]:
    """Frames that forward a worker's reply to its client (the router prepends the client id)."""
    return [PROTOCOL, _TYPE_FRAME[MsgType.REPLY], reply.request_id, reply.status, reply.body]


def decode_body(body: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """A request body as the op's keyword arguments (``{}`` when empty). Raises only WireError."""
    if len(body) > max_bytes:
        raise WirePayloadTooLarge(f"request body is {len(body)} bytes; the limit is {max_bytes}",
                                  {"limit": max_bytes, "size": len(body)})
    value = _loads(body, "request body", allow_empty=True)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireInvalidArgument(
            f"request body must be a JSON object of keyword arguments, got {type(value).__name__}",
            {"field": "body"})
    return value


def encode_ready(info: Mapping[str, Any]) -> list[bytes]:
    return [PROTOCOL, _TYPE_FRAME[MsgType.READY], _encode_body(info, "info")]


def encode_heartbeat(info: Mapping[str, Any] | None = None) -> list[bytes]:
    """A worker's heartbeat carries ``info``; the router's has none (two frames)."""
    if info is None:
        return [PROTOCOL, _TYPE_FRAME[MsgType.HEARTBEAT]]
    return [PROTOCOL, _TYPE_FRAME[MsgType.HEARTBEAT], _encode_body(info, "info")]


def encode_bye(info: Mapping[str, Any]) -> list[bytes]:
    return [PROTOCOL, _TYPE_FRAME[MsgType.BYE], _encode_body(info, "info")]


def encode_control(command: str, meta: Mapping[str, Any] | None = None) -> list[bytes]:
    if command not in CONTROL_COMMANDS:
        raise WireInvalidArgument(
            f"unknown control command {command!r}; one of {', '.join(sorted(CONTROL_COMMANDS))}",
            {"field": "command"})
    return [PROTOCOL, _TYPE_FRAME[MsgType.CONTROL], command.encode(),
            _encode_body(meta, "control meta")]


def decode_signal(frames: Sequence[bytes], *, max_bytes: int = MAX_MESSAGE_BYTES) -> Signal:
    """READY / HEARTBEAT / BYE (worker's, with info; or the router's bare HEARTBEAT)."""
    kind = message_type(frames)
    if kind not in (MsgType.READY, MsgType.HEARTBEAT, MsgType.BYE):
        raise WireInvalidArgument(f"expected READY, HEARTBEAT or BYE, got {kind.name}")
    if kind is MsgType.HEARTBEAT and len(frames) == 2:
        return Signal(kind, {})
    _check_header(frames, kind, 3, max_bytes, kind.name)
    return Signal(kind, _decode_object(frames[2], "info"))


def decode_control(frames: Sequence[bytes], *, max_bytes: int = MAX_MESSAGE_BYTES) -> Control:
    _check_header(frames, MsgType.CONTROL, 4, max_bytes, "CONTROL")
    command = frames[2].decode("ascii", "replace")
    if command not in CONTROL_COMMANDS:
        raise WireInvalidArgument(f"unknown control command {frames[2][:40]!r}",
                                  {"field": "command"})
    return Control(command, _decode_object(frames[3], "control meta"))


def message_type(frames: Sequence[bytes]) -> MsgType:
    """The type of a message after checking its protocol frame: dispatch on this first.
    Raises only WireError."""
    if not isinstance(frames, (list, tuple)) or len(frames) < 2:
        raise WireInvalidArgument("a memspace message has at least 2 frames (protocol, type)")
    proto, kind = frames[0], frames[1]
    if proto != PROTOCOL:
        shown = proto[:16] if isinstance(proto, bytes) else type(proto).__name__
        raise WireInvalidArgument(f"unsupported protocol {shown!r}; this side speaks {PROTOCOL!r}",
                                  {"field": "protocol"})
    found = _TYPE_OF.get(kind) if isinstance(kind, bytes) else None
    if found is None:
        shown = kind[:8] if isinstance(kind, bytes) else type(kind).__name__
        raise WireInvalidArgument(f"unknown message type {shown!r}", {"field": "type"})
    return found


# -- helpers -----------------------------------------------------------------------------------


def _check_header(frames: Sequence[bytes], expected: MsgType, count: int, max_bytes: int,
                  what: str) -> None:
    kind = message_type(frames)
    if kind is not expected:
        raise WireInvalidArgument(f"expected a {expected.name} message, got {kind.name}",
                                  {"field": "type"})
    if len(frames) != count:
        raise WireInvalidArgument(f"a {what} has {count} frames, got {len(frames)}",
                                  {"frames": len(frames)})
    size = 0
    for frame in frames:
        if type(frame) is not bytes:
            raise WireInvalidArgument(f"{what} frames must be bytes, got {type(frame).__name__}")
        size += len(frame)
    if size > max_bytes:
        raise WirePayloadTooLarge(f"{what} is {size} bytes; the limit is {max_bytes}",
                                  {"limit": max_bytes, "size": size})


def _check_size(frames: list[bytes], max_bytes: int | None, what: str) -> None:
    size = sum(map(len, frames))
    if max_bytes is not None and size > max_bytes:
        raise WirePayloadTooLarge(f"{what} is {size} bytes; the limit is {max_bytes}",
                                  {"limit": max_bytes, "size": size})


def _reply(request_id: str | bytes, status: bytes, body: bytes, ticket: bytes | None,
           max_bytes: int | None) -> list[bytes]:
    rid = request_id if isinstance(request_id, bytes) else request_id.encode()
    if ticket is None:
        frames = [PROTOCOL, _TYPE_FRAME[MsgType.REPLY], rid, status, body]
    else:
        frames = [PROTOCOL, _TYPE_FRAME[MsgType.REPLY], _check_ticket(ticket), rid, status, body]
    _check_size(frames, max_bytes, "reply")
    return frames


def _encode_request_id(request_id: str) -> bytes:
    rid = request_id.encode() if isinstance(request_id, str) else b""
    if not 1 <= len(rid) <= MAX_REQUEST_ID_BYTES:
        raise WireInvalidArgument(
            f"request_id must be a string of 1..{MAX_REQUEST_ID_BYTES} UTF-8 bytes, "
            f"got {request_id!r:.80}", {"field": "request_id"})
    return rid


def _decode_request_id(rid: bytes) -> str:
    if not 1 <= len(rid) <= MAX_REQUEST_ID_BYTES:
        raise WireInvalidArgument(
            f"request_id must be 1..{MAX_REQUEST_ID_BYTES} bytes, got {len(rid)}",
            {"field": "request_id"})
    try:
        return rid.decode()
    except UnicodeDecodeError:
        raise WireInvalidArgument(f"request_id {rid[:40]!r} is not UTF-8",
                                  {"field": "request_id"}) from None


def _check_ticket(ticket: bytes) -> bytes:
    if len(ticket) != TICKET_BYTES:
        raise WireInvalidArgument(f"ticket must be {TICKET_BYTES} bytes, got {len(ticket)}",
                                  {"field": "ticket"})
    return ticket


def _decode_status(status: bytes, rid: bytes) -> str:
    # Any short upper-case code is accepted: a newer server may send a code this side does not
    # know yet, and from_code() turns it into Internal rather than failing the decode.
    if status != OK and not (0 < len(status) <= 64 and status.isupper() and status.isascii()):
        raise WireInvalidArgument(f"invalid reply status {status[:40]!r}",
                                  {"field": "status"}, request_id=rid)
    return status.decode("ascii")


def _check_op(op: str, space: str, allowed: frozenset[str], rid: bytes) -> None:
    if op not in allowed:
        raise _bad_op(op.encode() if isinstance(op, str) else b"?", allowed, rid)
    if not space and op in ADMIN_OPS and op not in DEPLOYMENT_OPS:
        raise WireInvalidArgument(f"op {op} needs a memory space id; none was given",
                                  {"field": "space", "op": op}, request_id=rid)


def _bad_op(op: bytes, allowed: frozenset[str], rid: bytes) -> WireInvalidArgument:
    return WireInvalidArgument(f"unknown op {op[:40]!r}; expected one of {', '.join(sorted(allowed))}",
                               {"field": "op"}, request_id=rid)


def _check_timeout(timeout_ms: object, rid: bytes) -> None:
    if type(timeout_ms) is not int or not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
        raise WireInvalidArgument(
            f"timeout_ms must be an integer in 1..{MAX_TIMEOUT_MS}, got {timeout_ms!r:.40}",
            {"field": "timeout_ms"}, request_id=rid)


def _decode_meta(raw: bytes, rid: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    if len(raw) > MAX_META_BYTES:
        raise WirePayloadTooLarge(f"meta is {len(raw)} bytes; the limit is {MAX_META_BYTES}",
                                  {"limit": MAX_META_BYTES, "size": len(raw)}, request_id=rid)
    try:
        meta = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise WireInvalidArgument("meta is not valid JSON", {"field": "meta"},
                                  request_id=rid) from None
    if not isinstance(meta, dict):
        raise WireInvalidArgument(f"meta must be a JSON object, got {type(meta).__name__}",
                                  {"field": "meta"}, request_id=rid)
    timeout = meta.get("timeout_ms")
    if timeout is not None:
        _check_timeout(timeout, rid)
    if "passive" in meta and not isinstance(meta["passive"], bool):
        raise WireInvalidArgument(f"meta passive must be true or false, got {meta['passive']!r:.40}",
                                  {"field": "passive"}, request_id=rid)
    return meta


def _decode_object(raw: bytes, what: str) -> dict[str, Any]:
    value = _loads(raw, what, allow_empty=True)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireInvalidArgument(f"{what} must be a JSON object, got {type(value).__name__}",
                                  {"field": what})
    return value


def _loads(raw: bytes, what: str, *, allow_empty: bool) -> Any:
    if not raw and allow_empty:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise WireInvalidArgument(f"{what} is not valid JSON: {e}", {"field": what}) from None


def _encode_body(value: Any, what: str, *, any_value: bool = False) -> bytes:
    if value is None and not any_value:
        return b""
    if isinstance(value, bytes) and not any_value:
        return value
    if not any_value and not isinstance(value, Mapping):
        raise WireInvalidArgument(f"{what} must be a mapping, got {type(value).__name__}",
                                  {"field": what})
    try:
        return orjson.dumps(value if any_value or isinstance(value, dict) else dict(value),
                            option=_NUMPY)
    except orjson.JSONEncodeError as e:
        raise WireInvalidArgument(f"{what} cannot be encoded as JSON: {e}", {"field": what}) from None
