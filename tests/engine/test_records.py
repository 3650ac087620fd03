"""Record encoding: exact round trips (hypothesis), the payload layout, and clear decode errors."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from memspace.engine import records
from memspace.engine.model import Link
from memspace.engine.records import (
    Forget,
    MergeEntry,
    RecordFormatError,
    RecordType,
    Remember,
    StoreEntry,
    Touch,
    UpdateEntry,
    decode,
    encode,
)

DIM = 6
ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_:", min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
unit = st.floats(0.0, 1.0)
text = st.text(max_size=40)
json_value = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | finite | text,
                          lambda kids: st.lists(kids, max_size=3) | st.dictionaries(text, kids, max_size=3),
                          max_leaves=8)
metadata = st.dictionaries(text, json_value, max_size=4)
tags = st.lists(st.text(min_size=1, max_size=10), max_size=4).map(tuple)
links = st.lists(st.builds(Link, ids, unit, st.sampled_from(["related", "similar", "caused-by"])), max_size=3).map(tuple)
vectors = arrays(np.float32, DIM, elements=st.floats(-1, 1, width=32))
request_ids = st.none() | st.text(min_size=1, max_size=20)

store = st.builds(StoreEntry, ids, st.none() | text, vectors, unit, finite, tags, metadata, links,
                  st.lists(st.tuples(ids, unit), max_size=3).map(tuple))
merge = st.builds(MergeEntry, ids, unit, finite, unit, tags, links)
update = st.builds(UpdateEntry, ids, st.none() | text, vectors, unit, finite, tags, metadata, links)
any_record = st.one_of(
    st.builds(Remember, st.lists(st.one_of(store, merge, update), min_size=1, max_size=5).map(tuple), request_ids),
    st.builds(Forget, st.lists(ids, max_size=5).map(tuple), request_ids),
    st.builds(records.Link, ids, ids, unit, st.text(min_size=1, max_size=8), finite, request_ids),
    st.builds(Touch, st.lists(ids, max_size=5).map(tuple), finite),
)


@settings(max_examples=300, deadline=None)
@given(any_record)
def test_round_trip(rec: records.Record) -> None:
    kind, payload = encode(rec)
    assert kind == rec.type and isinstance(payload, bytes)
    assert decode(kind, payload) == rec
    assert decode(int(kind), memoryview(payload)) == rec


def test_payload_layout_keeps_embeddings_out_of_json() -> None:
    v1 = np.arange(DIM, dtype=np.float32) / 10
    v2 = -v1
    rec = Remember((StoreEntry("a", "x", v1, 1.0, 5.0), MergeEntry("b", 0.97, 6.0, 0.9),
                    UpdateEntry("c", None, v2, 0.5, 7.0)), "req-1")
    _, payload = encode(rec)
    (meta_len,) = struct.unpack_from("<I", payload)
    meta = orjson.loads(payload[4:4 + meta_len])
    assert meta["rid"] == "req-1" and meta["dim"] == DIM
    assert [e["op"] for e in meta["entries"]] == ["store", "merge", "update"]
    assert "embedding" not in meta["entries"][0]
    block = np.frombuffer(payload[4 + meta_len:], dtype="<f4").reshape(2, DIM)
    assert np.array_equal(block[0], v1) and np.array_equal(block[1], v2)


def test_decoded_embeddings_do_not_pin_the_callers_buffer() -> None:
    rec = Remember((StoreEntry("a", None, np.ones(DIM, np.float32), 1.0, 0.0),))
    buf = bytearray(encode(rec)[1])
    out = decode(RecordType.REMEMBER, memoryview(buf))
    buf[-4:] = b"\0\0\0\0"
    assert isinstance(out, Remember) and out.entries[0].embedding[-1] == 1.0  # type: ignore[union-attr]


def test_entries_compare_embeddings_by_value() -> None:
    a = StoreEntry("a", None, np.ones(DIM, np.float32), 1.0, 0.0)
    assert a == StoreEntry("a", None, np.ones(DIM, np.float32), 1.0, 0.0)
    assert a != StoreEntry("a", None, np.zeros(DIM, np.float32), 1.0, 0.0)
    assert a != StoreEntry("a", None, np.ones(DIM + 1, np.float32), 1.0, 0.0)


@pytest.mark.parametrize("kind,payload,problem", [
    (9, b"\0\0\0\0", "unknown record type 9"),
    (RecordType.FORGET, b"\x01", "cannot decode FORGET"),
    (RecordType.FORGET, struct.pack("<I", 50) + b"{}", "runs past the payload"),
    (RecordType.FORGET, struct.pack("<I", 2) + b"{}", "cannot decode FORGET"),
    (RecordType.TOUCH, struct.pack("<I", 3) + b"{x}", "cannot decode TOUCH"),
    (RecordType.LINK, struct.pack("<I", 2) + b"{}xx", "unexpected bytes"),
])
def test_decode_errors(kind: int, payload: bytes, problem: str) -> None:
    with pytest.raises(RecordFormatError, match=problem) as err:
        decode(kind, payload)
    assert err.value.code == "INTERNAL"


def test_decode_rejects_a_wrong_embedding_block_and_unknown_ops() -> None:
    _, payload = encode(Remember((StoreEntry("a", None, np.ones(DIM, np.float32), 1.0, 0.0),)))
    with pytest.raises(RecordFormatError, match="embedding bytes"):
        decode(RecordType.REMEMBER, payload[:-4])
    meta = orjson.dumps({"rid": None, "dim": 0, "entries": [{"op": "explode"}]})
    with pytest.raises(RecordFormatError, match="unknown entry op 'explode'"):
        decode(RecordType.REMEMBER, struct.pack("<I", len(meta)) + meta)
