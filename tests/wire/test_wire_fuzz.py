"""Hostile input: arbitrary frame lists decode to a valid message or raise WireError, nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from memspace import wire
from memspace.errors import MemspaceError
from memspace.wire import PROTOCOL, WireError

# Frames biased towards almost-valid messages, so the fuzzer gets past the protocol check.
_frame = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([PROTOCOL, b"", b"OK", b"alpha", b"remember", b"drain", b"{}", b'{"timeout_ms":5}',
                     b"SPACE_NOT_FOUND", wire.make_ticket(1), b"\xff", b"null", b"[]"]),
    st.sampled_from([bytes([t]) for t in range(8)]),
    st.builds(orjson.dumps, st.dictionaries(st.text(max_size=5), st.integers(-2**63, 2**64 - 1) | st.text(max_size=5),
                                            max_size=3)),
)
_TICKET = wire.make_ticket(1)
# One valid message of every kind; the fuzzer mutates these so it gets past the header checks.
VALID: list[list[bytes]] = [
    wire.encode_request("r-1", "alpha", "remember", {"content": "x"}, timeout_ms=5),
    wire.encode_request("r-2", "", "list_spaces", None),
    wire.to_worker(_TICKET, wire.split_client_request(wire.encode_request("r-3", "alpha", "get", {}))),
    wire.encode_reply("r-4", {"id": "m"}, ticket=_TICKET),
    wire.encode_reply("r-5", [1, 2]),
    wire.encode_error("r-6", "SPACE_NOT_FOUND", "gone", {"space": "alpha"}),
    wire.encode_ready({"pid": 1}), wire.encode_heartbeat(), wire.encode_heartbeat({"pid": 1}),
    wire.encode_bye({}), wire.encode_control("drain", {"timeout_s": 1}),
]


@st.composite
def _mutated(draw: st.DrawFn) -> list[bytes]:
    frames = list(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "replace", "insert", "delete"]))
        if action == "delete" and frames:
            del frames[draw(st.integers(0, len(frames) - 1))]
        elif action == "insert":
            frames.insert(draw(st.integers(0, len(frames))), draw(_frame))
        elif frames:
            frames[draw(st.integers(0, len(frames) - 1))] = draw(_frame)
    return frames


_any_frames = st.one_of(_mutated(), st.lists(_frame, max_size=9))

DECODERS: list[Callable[..., Any]] = [
    wire.split_client_request, wire.split_worker_request, wire.split_worker_reply, wire.split_reply,
    wire.decode_signal, wire.decode_control, wire.message_type,
]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(_any_frames)
@example([PROTOCOL, b"\x01", b"r", b"alpha", b"get", b"", b""])
@example([PROTOCOL, b"\x04"])
def test_decoders_raise_only_wire_errors(frames):
    for decode in DECODERS:
        try:
            decode(frames, max_bytes=64) if decode is not wire.message_type else decode(frames)
        except WireError:
            pass


@FUZZ
@given(_any_frames)
def test_valid_client_requests_survive_the_relay(frames):
    try:
        req = wire.split_client_request(frames)
    except WireError:
        return
    # whatever the router accepts is a request the worker (space ops) or supervisor can read
    assert req.op in wire.OPS
    if req.op in wire.SPACE_OPS:
        wreq = wire.split_worker_request(wire.to_worker(wire.make_ticket(9), req))
        assert (wreq.request_id, wreq.op, wreq.body) == (req.request_id, req.op, req.body)
    try:
        body = wire.decode_body(req.body)
    except WireError:
        return
    assert isinstance(body, dict)


@FUZZ
@given(_any_frames)
def test_decode_reply_raises_only_memspace_errors(frames):
    # an error reply raises its own contract error by design; anything else must be a WireError
    try:
        wire.decode_reply(frames)
    except MemspaceError:
        pass


@FUZZ
@given(st.binary(max_size=200))
def test_decode_body_raises_only_wire_errors(raw):
    try:
        assert isinstance(wire.decode_body(raw), dict)
    except WireError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@FUZZ
@given(st.text(min_size=1, max_size=30), st.sampled_from(sorted(wire.SPACE_OPS)),
       st.dictionaries(st.text(max_size=8), _json, max_size=4), st.none() | st.integers(1, 10**6),
       _json)
def test_round_trips_of_arbitrary_values(rid, op, body, timeout_ms, result):
    req = wire.split_client_request(wire.encode_request(rid, "space-1", op, body, timeout_ms=timeout_ms))
    assert (req.request_id, req.op, req.timeout_ms) == (rid, op, timeout_ms)
    assert wire.decode_body(req.body) == body
    frames = wire.encode_reply(rid, result, ticket=wire.make_ticket(5))
    assert wire.decode_reply(wire.to_client(wire.split_worker_reply(frames))) == result
