"""Round trips and rejections for every wire message."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from memspace import errors, wire
from memspace.wire import (
    PROTOCOL,
    MsgType,
    WireError,
    WireInvalidArgument,
    WireInvalidSpaceId,
    WirePayloadTooLarge,
)

TICKET = wire.make_ticket(7)


def test_message_type_bytes_and_sets():
    assert [int(t) for t in MsgType] == [1, 2, 3, 4, 5, 6]
    assert wire.OPS == wire.SPACE_OPS | wire.ADMIN_OPS and not wire.SPACE_OPS & wire.ADMIN_OPS
    assert "remember_batch" in wire.SPACE_OPS and "repair" in wire.ADMIN_OPS
    assert wire.DEPLOYMENT_OPS < wire.ADMIN_OPS
    assert wire.make_ticket(1) == b"\x00" * 7 + b"\x01" and wire.make_ticket(2**64 + 3) == wire.make_ticket(3)


def test_client_request_round_trip_keeps_body_bytes():
    vec = np.arange(4, dtype=np.float32) / 4
    frames = wire.encode_request("r-1", "alpha", "remember", {"content": "hi", "embedding": vec},
                                 timeout_ms=1500)
    assert frames[:5] == [PROTOCOL, b"\x01", b"r-1", b"alpha", b"remember"]
    assert len(frames) == 7
    req = wire.split_client_request(frames)
    assert (req.request_id, req.space, req.op, req.timeout_ms) == ("r-1", "alpha", "remember", 1500)
    assert req.meta == {"timeout_ms": 1500} and not req.is_admin and req.routing_id == b"alpha"
    assert isinstance(req.body, bytes)
    assert wire.decode_body(req.body) == {"content": "hi", "embedding": [0.0, 0.25, 0.5, 0.75]}


def test_empty_meta_and_body_mean_empty_objects():
    frames = wire.encode_request("r", "alpha", "count", None)
    assert frames[5] == b"" and frames[6] == b""
    req = wire.split_client_request(frames)
    assert req.meta == {} and req.timeout_ms is None and wire.decode_body(req.body) == {}


def test_body_may_be_preencoded_bytes():
    frames = wire.encode_request("r", "alpha", "get", b'{"id":"m-1"}')
    assert wire.decode_body(wire.split_client_request(frames).body) == {"id": "m-1"}


def test_admin_ops_and_space_rules():
    req = wire.split_client_request(wire.encode_request("r", "", "list_spaces", {}))
    assert req.is_admin and req.space == ""
    req = wire.split_client_request(wire.encode_request("r", "beta", "create_space", {"dimension": 8}))
    assert req.is_admin and req.space == "beta"
    # a space op without a space is left to the router's default-space policy
    assert wire.split_client_request(wire.encode_request("r", "", "recall", {})).space == ""
    with pytest.raises(WireInvalidArgument, match="delete_space needs a memory space id"):
        wire.encode_request("r", "", "delete_space", {})
    frames = [PROTOCOL, b"\x01", b"r9", b"", b"delete_space", b"", b""]
    with pytest.raises(WireInvalidArgument) as exc:
        wire.split_client_request(frames)
    assert exc.value.request_id == b"r9" and exc.value.code == "INVALID_ARGUMENT"


def test_to_worker_and_worker_request_round_trip():
    req = wire.split_client_request(wire.encode_request("r-2", "alpha", "recall", {"k": 3},
                                                        timeout_ms=20))
    frames = wire.to_worker(TICKET, req)
    assert frames == [PROTOCOL, b"\x01", TICKET, b"r-2", b"recall", req.raw_meta, req.body]
    wreq = wire.split_worker_request(frames)
    assert wreq == wire.WorkerRequest(TICKET, "r-2", "recall", {"timeout_ms": 20}, b'{"k":3}')
    assert wreq.timeout_ms == 20


def test_worker_rejects_admin_ops_and_bad_tickets():
    req = wire.split_client_request(wire.encode_request("r", "alpha", "drain", {}))
    with pytest.raises(WireInvalidArgument, match="unknown op b'drain'"):
        wire.split_worker_request(wire.to_worker(TICKET, req))
    with pytest.raises(WireInvalidArgument, match="ticket must be 8 bytes"):
        wire.to_worker(b"short", req)
    bad = [PROTOCOL, b"\x01", b"123", b"r", b"get", b"", b""]
    with pytest.raises(WireInvalidArgument, match="ticket"):
        wire.split_worker_request(bad)


def test_reply_round_trip_through_router():
    frames = wire.encode_reply("r-3", {"id": "m-1", "outcome": "stored", "score": np.float32(0.5)},
                               ticket=TICKET)
    assert frames[:5] == [PROTOCOL, b"\x02", TICKET, b"r-3", b"OK"]
    rep = wire.split_worker_reply(frames)
    assert rep == wire.WorkerReply(TICKET, b"r-3", b"OK", frames[5])
    client_frames = wire.to_client(rep)
    assert client_frames == [PROTOCOL, b"\x02", b"r-3", b"OK", frames[5]]
    reply = wire.split_reply(client_frames)
    assert reply.ok and reply.request_id == "r-3"
    assert wire.decode_reply(client_frames) == {"id": "m-1", "outcome": "stored", "score": 0.5}


def test_none_result_round_trips():
    assert wire.decode_reply(wire.encode_reply("r", None)) is None


def test_error_reply_rebuilds_the_contract_error():
    frames = wire.encode_error(b"r-4", "SPACE_NOT_FOUND", "space 'zeta' is not registered",
                               {"space": "zeta"}, ticket=TICKET)
    rep = wire.split_worker_reply(frames)
    assert rep.status == b"SPACE_NOT_FOUND"
    with pytest.raises(errors.SpaceNotFound) as exc:
        wire.decode_reply(wire.to_client(rep))
    assert exc.value.code == "SPACE_NOT_FOUND"
    assert exc.value.message == "space 'zeta' is not registered"
    assert exc.value.details == {"space": "zeta"}


def test_encode_exception_keeps_codes_and_hides_internals():
    with pytest.raises(errors.Overloaded, match="queue full"):
        wire.decode_reply(wire.encode_exception("r", errors.Overloaded("queue full", {"retry_after_s": 1})))
    with pytest.raises(errors.Internal) as exc:
        wire.decode_reply(wire.encode_exception("r", KeyError("secret path /x")))
    assert exc.value.message == "internal error (KeyError)"
    # storage errors travel as SPACE_UNAVAILABLE with their details
    corrupt = errors.WalCorruption("/d/wal/1.wal", 96, "bad crc")
    with pytest.raises(errors.SpaceUnavailable) as exc2:
        wire.decode_reply(wire.encode_exception("r", corrupt))
    assert exc2.value.details["offset"] == 96


def test_error_details_that_json_cannot_hold_are_stringified():
    frames = wire.encode_error("r", "INTERNAL", "x", {"obj": object.__name__, "set": {1}})
    with pytest.raises(errors.Internal) as exc:
        wire.decode_reply(frames)
    assert exc.value.details == {"obj": "object", "set": "{1}"}


def test_unknown_error_code_is_refused_on_encode_but_tolerated_on_decode():
    with pytest.raises(WireInvalidArgument, match="unknown error code"):
        wire.encode_error("r", "NOPE", "x")
    frames = [PROTOCOL, b"\x02", b"r", b"FUTURE_CODE", b'{"message":"later"}']
    with pytest.raises(errors.Internal, match="later"):
        wire.decode_reply(frames)
    # a garbled error body still raises the status's error
    with pytest.raises(errors.RateLimited):
        wire.decode_reply([PROTOCOL, b"\x02", b"r", b"RATE_LIMITED", b"\xff"])


def test_signals_round_trip():
    info = {"pid": 42, "generation": 3, "memories": 10}
    for encode, kind in ((wire.encode_ready, MsgType.READY), (wire.encode_heartbeat, MsgType.HEARTBEAT),
                         (wire.encode_bye, MsgType.BYE)):
        frames = encode(info)
        assert wire.message_type(frames) is kind
        assert wire.decode_signal(frames) == wire.Signal(kind, info)
    bare = wire.encode_heartbeat()
    assert bare == [PROTOCOL, b"\x04"] and wire.decode_signal(bare) == wire.Signal(MsgType.HEARTBEAT, {})


def test_control_round_trip():
    frames = wire.encode_control("drain", {"timeout_s": 30})
    assert frames[:3] == [PROTOCOL, b"\x06", b"drain"]
    assert wire.decode_control(frames) == wire.Control("drain", {"timeout_s": 30})
    assert wire.decode_control(wire.encode_control("stop")) == wire.Control("stop", {})
    with pytest.raises(WireInvalidArgument, match="unknown control command"):
        wire.encode_control("explode")
    with pytest.raises(WireInvalidArgument, match="unknown control command"):
        wire.decode_control([PROTOCOL, b"\x06", b"explode", b""])


def _client(**replace: bytes) -> list[bytes]:
    frames = dict(zip(("proto", "type", "rid", "space", "op", "meta", "body"),
                      wire.encode_request("rid", "alpha", "get", {"id": "m"})))
    frames.update(replace)
    return list(frames.values())


@pytest.mark.parametrize("frames, code, match", [
    ([], "INVALID_ARGUMENT", "at least 2 frames"),
    (_client(proto=b"MSP2"), "INVALID_ARGUMENT", "unsupported protocol b'MSP2'"),
    (_client(type=b"\x09"), "INVALID_ARGUMENT", "unknown message type"),
    (_client(type=b"\x02"), "INVALID_ARGUMENT", "expected a REQUEST message, got REPLY"),
    (_client()[:6], "INVALID_ARGUMENT", "has 7 frames, got 6"),
    (_client() + [b"x"], "INVALID_ARGUMENT", "has 7 frames, got 8"),
    (_client(rid=b""), "INVALID_ARGUMENT", "request_id must be 1..255 bytes"),
    (_client(rid=b"x" * 256), "INVALID_ARGUMENT", "request_id must be 1..255 bytes"),
    (_client(rid=b"\xff\xfe"), "INVALID_ARGUMENT", "not UTF-8"),
    (_client(space=b"Alpha"), "INVALID_SPACE_ID", "'Alpha' from field"),
    (_client(space=b"a/b/c"), "INVALID_SPACE_ID", "from field: it contains '/'"),
    (_client(space=b"\xc3\xa9t\xc3\xa9"), "INVALID_SPACE_ID", "not ASCII"),
    (_client(space=b"ab"), "INVALID_SPACE_ID", "shorter than 3"),
    (_client(op=b"drop_table"), "INVALID_ARGUMENT", "unknown op b'drop_table'"),
    (_client(meta=b"{"), "INVALID_ARGUMENT", "meta is not valid JSON"),
    (_client(meta=b"[1]"), "INVALID_ARGUMENT", "meta must be a JSON object"),
    (_client(meta=b'{"timeout_ms": -5}'), "INVALID_ARGUMENT", "timeout_ms must be an integer"),
    (_client(meta=b'{"timeout_ms": true}'), "INVALID_ARGUMENT", "timeout_ms must be an integer"),
    (_client(meta=b" " * 5000), "PAYLOAD_TOO_LARGE", "meta is 5000 bytes"),
])
def test_malformed_client_requests_are_rejected(frames, code, match):
    with pytest.raises(WireError, match=match) as exc:
        wire.split_client_request(frames)
    assert exc.value.code == code
    assert isinstance(exc.value, errors.InvalidArgument)  # every wire rejection is a 400


def test_space_id_error_names_its_source_and_is_the_contract_error():
    with pytest.raises(errors.InvalidSpaceId) as exc:
        wire.split_client_request(_client(space=b"UPPER"))
    assert isinstance(exc.value, WireInvalidSpaceId)
    assert exc.value.details["source"] == "field" and exc.value.request_id == b"rid"
    with pytest.raises(errors.InvalidSpaceId, match="from argument"):
        wire.encode_request("r", "Bad Space", "get", {})


def test_non_bytes_frames_are_rejected():
    with pytest.raises(WireInvalidArgument, match="frames must be bytes"):
        wire.split_client_request(_client(body="text"))  # type: ignore[arg-type]
    with pytest.raises(WireInvalidArgument):
        wire.message_type("MSP1")  # type: ignore[arg-type]


def test_oversize_requests_and_replies():
    big = {"content": "x" * 2000}
    with pytest.raises(WirePayloadTooLarge) as exc:
        wire.encode_request("r", "alpha", "remember", big, max_bytes=1000)
    assert exc.value.code == "PAYLOAD_TOO_LARGE" and isinstance(exc.value, errors.PayloadTooLarge)
    frames = wire.encode_request("r", "alpha", "remember", big)
    with pytest.raises(WirePayloadTooLarge, match="the limit is 1000") as exc2:
        wire.split_client_request(frames, max_bytes=1000)
    assert exc2.value.details["limit"] == 1000 and exc2.value.details["size"] == sum(map(len, frames))
    assert wire.split_client_request(frames, max_bytes=sum(map(len, frames))).op == "remember"
    with pytest.raises(WirePayloadTooLarge):
        wire.encode_reply("r", ["y" * 100] * 20, ticket=TICKET, max_bytes=1000)
    with pytest.raises(WirePayloadTooLarge):
        wire.decode_body(b"{}" + b" " * 100, max_bytes=50)


def test_default_limit_is_eight_mib():
    assert wire.MAX_MESSAGE_BYTES == 8 * 1024 * 1024
    body = b'{"content":"' + b"x" * wire.MAX_MESSAGE_BYTES + b'"}'
    with pytest.raises(WirePayloadTooLarge):
        wire.split_client_request(_client(body=body))


def test_bad_request_values_on_encode():
    with pytest.raises(WireInvalidArgument, match="request_id"):
        wire.encode_request("", "alpha", "get", {})
    with pytest.raises(WireInvalidArgument, match="unknown op"):
        wire.encode_request("r", "alpha", "nope", {})
    with pytest.raises(WireInvalidArgument, match="timeout_ms"):
        wire.encode_request("r", "alpha", "get", {}, timeout_ms=0)
    with pytest.raises(WireInvalidArgument, match="cannot be encoded as JSON"):
        wire.encode_request("r", "alpha", "remember", {"tags": {1, 2}})
    with pytest.raises(WireInvalidArgument, match="must be a mapping"):
        wire.encode_request("r", "alpha", "remember", ["x"])  # type: ignore[arg-type]


def test_body_must_be_an_object():
    for raw, match in ((b"[1,2]", "JSON object"), (b"nul", "not valid JSON"), (b'"s"', "JSON object")):
        with pytest.raises(WireInvalidArgument, match=match):
            wire.decode_body(raw)


def test_reply_and_signal_rejections():
    with pytest.raises(WireInvalidArgument, match="invalid reply status"):
        wire.split_worker_reply([PROTOCOL, b"\x02", TICKET, b"r", b"ok?", b""])
    with pytest.raises(WireInvalidArgument, match="ticket must be 8 bytes"):
        wire.split_worker_reply([PROTOCOL, b"\x02", b"t", b"r", b"OK", b""])
    with pytest.raises(WireInvalidArgument, match="reply body is not valid JSON"):
        wire.decode_reply([PROTOCOL, b"\x02", b"r", b"OK", b"{"])
    with pytest.raises(WireInvalidArgument, match="expected READY, HEARTBEAT or BYE"):
        wire.decode_signal(wire.encode_control("stop"))
    with pytest.raises(WireInvalidArgument, match="info must be a JSON object"):
        wire.decode_signal([PROTOCOL, b"\x03", b"[]"])
    with pytest.raises(WireInvalidArgument, match="has 3 frames"):
        wire.decode_signal([PROTOCOL, b"\x03"])


def test_meta_unknown_keys_pass_through_untouched():
    meta = orjson.dumps({"timeout_ms": 5, "trace": "abc"})
    req = wire.split_client_request(_client(meta=meta))
    assert req.meta == {"timeout_ms": 5, "trace": "abc"}
    assert wire.to_worker(TICKET, req)[5] is meta
