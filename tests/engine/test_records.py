"""Record encoding: exact round trips (hypothesis), the payload layout, and clear decode errors."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from memspace.engine import records, storelayout
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
    all_stores = isinstance(rec, Remember) and all(isinstance(e, StoreEntry) for e in rec.entries)
    assert kind == (RecordType.STORE if all_stores else rec.type) and isinstance(payload, bytes)
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
    kind, payload = encode(rec)
    buf = bytearray(payload)
    out = decode(kind, memoryview(buf))
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
    _, payload = encode(Remember((StoreEntry("a", None, np.ones(DIM, np.float32), 1.0, 0.0),
                                  MergeEntry("b", 0.97, 6.0, 0.9))))
    with pytest.raises(RecordFormatError, match="embedding bytes"):
        decode(RecordType.REMEMBER, payload[:-4])
    meta = orjson.dumps({"rid": None, "dim": 0, "entries": [{"op": "explode"}]})
    with pytest.raises(RecordFormatError, match="unknown entry op 'explode'"):
        decode(RecordType.REMEMBER, struct.pack("<I", len(meta)) + meta)


# -- the STORE layout --------------------------------------------------------------------------------

def _store(*entries: StoreEntry, rid: str | None = "r") -> bytes:
    kind, payload = encode(Remember(entries, rid))
    assert kind == RecordType.STORE
    return payload


def _entry(memory_id: str = "a", **over: object) -> StoreEntry:
    fields: dict[str, object] = dict(content="hello", embedding=np.arange(DIM, dtype=np.float32), confidence=0.5,
                                     created_at=7.25, tags=("t", "u"), metadata={"k": [1, 2]},
                                     links=(Link("x", 0.75, "similar"), Link("y", 0.5, "caused-by")),
                                     backlinks=(("x", 0.75),))
    fields.update(over)
    return StoreEntry(memory_id, **fields)  # type: ignore[arg-type]


def test_store_layout_keeps_numbers_and_ids_out_of_json() -> None:
    payload = _store(_entry("a"), _entry("b", links=(), backlinks=(("a", 0.9),)))
    n, dim, nl, nb, ids_len, meta_len = struct.unpack_from("<6I", payload)
    assert (n, dim, nl, nb) == (2, DIM, 2, 2)
    counts = struct.unpack_from("<4I", payload, 24)
    assert counts == (2, 0, 1, 1)     # links per entry, then backlinks per entry
    numbers = struct.unpack_from("<8d", payload, 40)
    assert numbers == (0.5, 0.5, 7.25, 7.25, 0.75, 0.5, 0.75, 0.9)
    codes = struct.unpack_from("<2I", payload, 104)
    text_at = 112
    assert payload[text_at:text_at + ids_len] == b"a b x y x a"
    meta = orjson.loads(payload[text_at + ids_len:text_at + ids_len + meta_len])
    assert meta == ["r", ["hello", "hello"], [["t", "u"], ["t", "u"]], [{"k": [1, 2]}, {"k": [1, 2]}],
                    ["similar", "caused-by"]]
    assert [meta[4][c] for c in codes] == ["similar", "caused-by"]
    rows = np.frombuffer(payload[text_at + ids_len + meta_len:], "<f4").reshape(2, DIM)
    assert np.array_equal(rows[1], np.arange(DIM, dtype=np.float32))


@pytest.mark.parametrize("memory_id", ["has space", "caf\u00e9"])
def test_ids_the_store_layout_cannot_carry_fall_back_to_remember(memory_id: str) -> None:
    rec = Remember((_entry(memory_id),), "r")
    kind, payload = encode(rec)
    assert kind == RecordType.REMEMBER and decode(kind, payload) == rec
    linked = Remember((_entry("a", links=(Link(memory_id, 0.5),)),), "r")
    kind, payload = encode(linked)
    assert kind == RecordType.REMEMBER and decode(kind, payload) == linked


def test_records_in_the_remember_layout_still_decode() -> None:
    """What was logged before the STORE layout existed: a REMEMBER of stores."""
    vec = np.arange(DIM, dtype=np.float32)
    meta = orjson.dumps({"rid": "old", "dim": DIM, "entries": [{
        "op": "store", "id": "a", "content": "c", "confidence": 0.5, "created_at": 3.0, "tags": ["t"],
        "metadata": {}, "links": [["b", 0.7, "similar"]], "backlinks": [["b", 0.7]]}]})
    rec = decode(RecordType.REMEMBER, struct.pack("<I", len(meta)) + meta + vec.tobytes())
    assert rec == Remember((StoreEntry("a", "c", vec, 0.5, 3.0, ("t",), {}, (Link("b", 0.7, "similar"),),
                                       (("b", 0.7),)),), "old")


META_FIELDS = ("rid", "content", "tags", "metadata", "kinds")


def _patched_meta(payload: bytes, body: bytes | None = None, **changes: object) -> bytes:
    n, dim, nl, nb, ids_len, meta_len = struct.unpack_from("<6I", payload)
    meta_at = 24 + 8 * n + 8 * (2 * n + nl + nb) + 4 * nl + ids_len
    meta = orjson.loads(payload[meta_at:meta_at + meta_len])
    for name, value in changes.items():
        meta[META_FIELDS.index(name)] = value
    body = orjson.dumps(meta) if body is None else body
    head = struct.pack("<6I", n, dim, nl, nb, ids_len, len(body))
    return head + payload[24:meta_at] + body + payload[meta_at + meta_len:]


def _store_errors() -> list[tuple[bytes, str]]:
    good = _store(_entry())
    n, dim, nl, nb, ids_len, meta_len = struct.unpack_from("<6I", good)
    return [
        (good[:-4], "bytes where the header implies"),
        (good[:10], "cannot decode STORE"),
        (struct.pack("<6I", 0, dim, 0, 0, 0, 0), "0 entries"),
        (struct.pack("<6I", 1, 0, nl, nb, ids_len, meta_len) + good[24:-4 * DIM], "dimension 0"),
        (good[:24] + struct.pack("<I", 1) + good[28:], "link counts do not add up"),
        (good.replace(b"a x y x", b"a x y  "), "ids where"),
        (good.replace(b"a x y x", b"a x y \xff"), "cannot decode STORE"),
        (_patched_meta(good, content=[7]), "content of type int"),
        (_patched_meta(good, content=["a", "b"]), "malformed meta"),
        (_patched_meta(good, tags=["ab"]), "tags of type str"),
        (_patched_meta(good, tags=[[1]]), "a tag of type int"),
        (_patched_meta(good, metadata=[[]]), "metadata of type list"),
        (_patched_meta(good, kinds=["similar"]), "link kind 1 of 1"),
        (_patched_meta(good, kinds=["similar", 3]), "a link kind of type int"),
        (_patched_meta(good, rid=5), "malformed meta"),
        (_patched_meta(good, b'{"rid": null}'), "malformed meta"),
        (_patched_meta(good, b'[null, [], [], []]'), "malformed meta"),
        (_patched_meta(good, b'[null, ["a"], [[]], [{}], []'), "cannot decode STORE"),
    ]


@pytest.mark.parametrize("payload,problem", _store_errors())
def test_store_decode_errors(payload: bytes, problem: str) -> None:
    with pytest.raises(RecordFormatError, match=problem):
        decode(RecordType.STORE, payload)


store_only = st.builds(Remember, st.lists(store, min_size=1, max_size=4).map(tuple), request_ids)


@settings(max_examples=150, deadline=None)
@given(st.lists(store_only, min_size=1, max_size=6))
def test_decode_stores_reads_what_store_columns_reads(recs: list[Remember]) -> None:
    payloads = [encode(r)[1] for r in recs]
    batch = storelayout.decode_stores([memoryview(p) for p in payloads], DIM)
    assert batch is not None and len(batch) == len(recs)
    cols = [storelayout.store_columns(p) for p in payloads]
    assert batch.request_ids == [c.request_id for c in cols]
    assert batch.entries.tolist() == [len(c.ids) for c in cols]
    assert batch.ids == [i for c in cols for i in c.ids]
    assert batch.link_counts.tolist() == [x for c in cols for x in c.link_counts]
    assert batch.back_counts.tolist() == [x for c in cols for x in c.back_counts]
    assert batch.confidence.tolist() == [x for c in cols for x in c.confidence]
    assert batch.created_at.tolist() == [x for c in cols for x in c.created_at]
    assert batch.content == [x for c in cols for x in c.content]
    assert batch.tags == [x for c in cols for x in c.tags]
    assert batch.metadata == [x for c in cols for x in c.metadata]
    assert batch.rows == b"".join(bytes(c.embeddings) for c in cols)
    assert batch.targets == [x for c in cols for x in c.targets]
    assert batch.weights.tolist() == [x for c in cols for x in c.weights]
    assert [batch.kind_names[i] for i in batch.kinds] == [c.kinds[i] for c in cols for i in c.codes]
    assert batch.neighbours == [x for c in cols for x in c.neighbours]
    assert batch.back_weights.tolist() == [x for c in cols for x in c.back_weights]
    # and any run of its records, as its own batch
    if len(recs) == 1:
        return
    part = batch.part(1, len(recs))
    rest = storelayout.decode_stores(payloads[1:], DIM)
    assert rest is not None
    for name in ("request_ids", "ids", "content", "tags", "metadata", "rows", "targets", "neighbours"):
        assert getattr(part, name) == getattr(rest, name)
    for name in ("entries", "link_counts", "back_counts", "confidence", "weights", "back_weights"):
        assert getattr(part, name).tolist() == getattr(rest, name).tolist()


@pytest.mark.parametrize("bad", range(len(_store_errors())))
def test_decode_stores_refuses_a_run_with_a_payload_store_columns_refuses(bad: int) -> None:
    good = _store(_entry())
    payload, _ = _store_errors()[bad]
    assert storelayout.decode_stores([good, good], DIM) is not None
    assert storelayout.decode_stores([good, payload, good], DIM) is None


def test_decode_stores_checks_each_records_words_not_only_the_total() -> None:
    good = _store(_entry())
    fewer = good.replace(b"a x y x", b"a x yxx")     # 3 words where the header says 4
    more = good.replace(b"a x y x", b"a x   x")      # 5
    for p in (fewer, more):
        with pytest.raises(RecordFormatError):
            decode(RecordType.STORE, p)
    assert storelayout.decode_stores([fewer, more], DIM) is None


def test_decode_stores_refuses_another_dimension() -> None:
    assert storelayout.decode_stores([_store(_entry())], DIM + 1) is None
