"""Engine.plan_restore / apply(Restore): exported memories put back exactly, the RESTORE record,
its replay, and the validation of what an import may hold."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from memspace.engine import Engine, Limits, MemoryTier, decode, encode
from memspace.engine.changes import change_event
from memspace.engine.records import RecordFormatError, RecordType, Restore
from memspace.errors import InvalidArgument, QuotaExceeded

from .conftest import DIM, Driver, at_cos, basis, make_engine
from .test_replay_bulk import both, logged

#: Dense cues: no two memories tie on similarity (ties are broken by row, and a restore lays the
#: rows out in export order, not in the order the memories were first written).
CUES = [np.random.default_rng(seed).normal(size=DIM).tolist() for seed in range(4)]


def exported(e: Engine) -> list[dict[str, Any]]:
    """What ``space export`` writes: every memory in id order, with its embedding."""
    out, cursor = [], None
    for _ in range(1000):
        page = e.page(limit=3, cursor=cursor)
        out += [m.to_dict(embedding=True) for m in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return out
    raise AssertionError("more pages than memories")


def state(e: Engine) -> tuple[list[dict[str, Any]], list[Any]]:
    """Every memory (embedding included) and recall in both modes (all memories ranked)."""
    hits = [e.recall(embedding=q, k=50, mode=mode, threshold=-1.0, now=5000.0)
            for q in CUES for mode in ("similarity", "spreading")]
    return exported(e), hits


def restore(e: Engine, items: list[dict[str, Any]], now: float = 9000.0, rid: str | None = None) -> Any:
    return e.apply(e.plan_restore(items, now, rid))


def source(decay: str = "none") -> Engine:
    """A space with auto-links both ways, a merge, explicit links, touches, a forget and an update."""
    drv = Driver(make_engine(decay=decay))
    drv.remember({"content": "Ana met Bo at the lab", "tags": ["people"]}, {"embedding": basis(0), "tags": ["a"]},
                 {"embedding": at_cos(0.8), "metadata": {"k": [1, {"x": None}]}}, {"embedding": at_cos(0.99)})
    drv.one(id="client", embedding=at_cos(0.75, 0, 3), content="c", links=[{"target": "m0", "weight": 0.4}])
    drv.link("m0", "m2", 0.9, "cause")
    drv.one(embedding=at_cos(0.999), tags=["dup"])                     # merged into m1
    drv.touch("m2", "client")
    drv.touch("m2")
    drv.remember(*({"embedding": at_cos(0.5 + i / 20, i % DIM, (i + 1) % DIM), "confidence": 0.3 + i / 20}
                   for i in range(7)))
    drv.forget("m5")
    drv.one(id="client", embedding=at_cos(0.6, 0, 4), tags=["b"], confidence=0.7)
    drv.link("m8", "client", 0.35, "see-also")
    return drv.engine


@pytest.mark.parametrize("decay", ["none", "exponential"])
def test_export_restore_export_is_exact_and_recall_ranks_the_same(decay: str) -> None:
    a = source(decay)
    dump = exported(a)
    assert any(link["target"] > m["id"] for m in dump for link in m["links"])   # forward links
    b = make_engine(decay=decay)
    assert restore(b, dump) == len(dump)
    assert exported(b) == dump
    assert state(b) == state(a)


def test_restore_in_batches_keeps_forward_links_across_them() -> None:
    a = source()
    dump = exported(a)
    b = make_engine()
    for start in range(0, len(dump), 2):
        restore(b, dump[start:start + 2])
    assert exported(b) == dump
    assert state(b) == state(a)


def test_a_link_to_a_missing_id_is_kept_and_counts_once_it_arrives() -> None:
    e = make_engine()
    restore(e, [{"id": "a", "embedding": basis(0), "links": [{"target": "z", "weight": 0.9, "kind": "next"}]}])
    assert [link.to_dict() for link in e.get("a").links] == [{"target": "z", "weight": 0.9, "kind": "next"}]
    hits = e.recall(embedding=basis(0), k=5, threshold=0.5, now=9500.0)
    assert [h.id for h in hits] == ["a"]
    restore(e, [{"id": "z", "embedding": basis(1), "content": "later"}])
    hits = e.recall(embedding=basis(0), k=5, threshold=0.5, now=9500.0)
    assert [(h.id, h.path) for h in hits] == [("a", ("a",)), ("z", ("a", "z"))]
    assert hits[1].activation == pytest.approx(0.9 * np.exp(-0.7))


def test_no_dedup_no_auto_links_and_defaults() -> None:
    e = make_engine()
    restore(e, [{"id": "x", "embedding": basis(0)}, {"id": "y", "embedding": basis(0), "content": "same"}], now=4321.5)
    assert e.count() == 2
    for memory_id in ("x", "y"):
        m = e.get(memory_id)
        assert (m.links, m.confidence, m.created_at, m.last_access, m.access_count, m.tags, dict(m.metadata)) == \
               ((), 1.0, 4321.5, 4321.5, 0, (), {})
    restore(e, [{"id": "w", "embedding": basis(1), "created_at": 10.0}])
    assert (e.get("w").created_at, e.get("w").last_access) == (10.0, 10.0)


def test_replacing_a_memory_keeps_links_into_it_and_is_idempotent() -> None:
    e = make_engine()
    first = [{"id": "b", "embedding": basis(1), "links": [{"target": "x", "weight": 0.5, "kind": "k"}]},
             {"id": "x", "embedding": basis(0), "content": "old", "tags": ["t1"], "access_count": 4,
              "links": [{"target": "b", "weight": 0.2, "kind": "back"}]}]
    restore(e, first)
    again = exported(e)
    restore(e, first)
    assert exported(e) == again                                      # the same restore changes nothing
    restore(e, [{"id": "x", "embedding": basis(2), "content": "new", "metadata": {"v": 2},
                 "links": [{"target": "q", "weight": 0.7, "kind": "other"}]}])
    x = e.get("x")
    assert (x.content, x.tags, dict(x.metadata), x.access_count) == ("new", (), {"v": 2}, 0)
    assert np.array_equal(x.embedding, np.asarray(basis(2), np.float32))
    assert [link.target for link in x.links] == ["q"]                 # its own links: as given, the old gone
    assert [link.to_dict() for link in e.get("b").links] == [{"target": "x", "weight": 0.5, "kind": "k"}]
    assert e.tier_of("x") == "hot" and e.count() == 2
    assert e.recall(embedding=basis(2), k=1, now=9500.0)[0].id == "x"
    assert e.plan_forget(tags=["t1"]).ids == ()                       # the old tags are gone from the index


def test_a_later_item_of_the_same_batch_replaces_an_earlier_one() -> None:
    e = make_engine()
    assert restore(e, [{"id": "x", "embedding": basis(0), "content": "one"},
                       {"id": "x", "embedding": basis(1), "content": "two"}]) == 2
    assert e.count() == 1 and e.get("x").content == "two"


def test_restoring_a_warm_memory_replaces_it_in_the_hot_tier() -> None:
    warm = MemoryTier("warm")
    e = make_engine(engine_kwargs={"warm": warm})
    restore(e, [{"id": "old", "embedding": basis(0), "last_access": 1.0},
                {"id": "new", "embedding": basis(1), "last_access": 2.0, "links": [{"target": "old"}]}])
    e.demote(e.plan_demotion(hot_capacity=1, warm_capacity=10))
    assert e.tier_of("old") == "warm"
    restore(e, [{"id": "old", "embedding": basis(3), "content": "back"}])
    assert e.tier_of("old") == "hot" and "old" not in warm and e.count() == 2
    assert e.get("old").content == "back"
    assert [link.target for link in e.get("new").links] == ["old"]


def test_embeddings_near_unit_are_kept_exactly_others_normalised() -> None:
    e = make_engine()
    rng = np.random.default_rng(7)
    v = rng.normal(size=DIM)
    quantised = (v / np.linalg.norm(v)).astype(np.float16).astype(np.float32)   # what a warm tier exports
    assert quantised.tolist() != (quantised / np.linalg.norm(quantised)).astype(np.float32).tolist()
    restore(e, [{"id": "q", "embedding": quantised.tolist()}, {"id": "long", "embedding": [3.0] + [0.0] * (DIM - 1)}])
    assert e.get("q").embedding.tobytes() == quantised.tobytes()
    assert e.get("long").embedding.tolist() == basis(0)


def test_counts_beyond_the_request_limits_are_accepted() -> None:
    e = make_engine(limits=Limits(max_tags=2, max_links=2))
    links = [{"target": f"t{i}", "weight": 0.5} for i in range(5)]
    restore(e, [{"id": "m", "embedding": basis(0), "tags": ["a", "b", "c"], "links": links}])
    assert len(e.get("m").links) == 5 and e.get("m").tags == ("a", "b", "c")


def test_content_without_an_embedding_is_embedded() -> None:
    e = make_engine(embedder="hashing")
    restore(e, [{"id": "t", "content": "the lab meeting"}])
    assert e.recall(query="the lab meeting", k=1, now=9500.0)[0].id == "t"


BAD: list[tuple[Any, str, str]] = [
    ({"embedding": basis(0)}, "items[1].id", "is required"),
    ({"id": "bad id", "embedding": basis(0)}, "items[1].id", "not a valid memory id"),
    ({"id": "m", "embedding": basis(0)[:3]}, "items[1].embedding", "has 3 dimensions"),
    ({"id": "m", "embedding": [0.0] * DIM}, "items[1].embedding", "zero vector"),
    ({"id": "m", "embedding": [float("nan")] + [0.0] * (DIM - 1)}, "items[1].embedding", "NaN"),
    ({"id": "m"}, "items[1].embedding", "no content to embed"),
    ({"id": "m", "embedding": basis(0), "confidence": 1.5}, "items[1].confidence", "[0, 1]"),
    ({"id": "m", "embedding": basis(0), "created_at": "yesterday"}, "items[1].created_at", "must be a number"),
    ({"id": "m", "embedding": basis(0), "last_access": float("inf")}, "items[1].last_access", "finite"),
    ({"id": "m", "embedding": basis(0), "access_count": -1}, "items[1].access_count", "integer"),
    ({"id": "m", "embedding": basis(0), "access_count": 2.5}, "items[1].access_count", "integer"),
    ({"id": "m", "embedding": basis(0), "access_count": True}, "items[1].access_count", "integer"),
    ({"id": "m", "embedding": basis(0), "tags": "people"}, "items[1].tags", "list of strings"),
    ({"id": "m", "embedding": basis(0), "metadata": [1]}, "items[1].metadata", "must be an object"),
    ({"id": "m", "embedding": basis(0), "links": [{"target": "m"}]}, "items[1].links[0].target", "itself"),
    ({"id": "m", "embedding": basis(0), "links": [{"target": "a", "weight": 0}]}, "items[1].links[0].weight",
     "(0, 1]"),
    ({"id": "m", "embedding": basis(0), "links": [{"target": "a", "to": 1}]}, "items[1].links[0]", "'to'"),
    ({"id": "m", "embedding": basis(0), "score": 1}, "items[1]", "unknown field(s) 'score'"),
    ("m", "items[1]", "must be an object"),
]


@pytest.mark.parametrize(("item", "field", "problem"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_invalid_items_name_the_field_and_change_nothing(item: Any, field: str, problem: str) -> None:
    e = make_engine()
    restore(e, [{"id": "keep", "embedding": basis(5)}])
    before = exported(e)
    with pytest.raises(InvalidArgument) as err:
        e.plan_restore([{"id": "ok", "embedding": basis(1)}, item], 9000.0)
    assert err.value.message.startswith(field + ": ") and problem in err.value.message
    assert err.value.details["field"] == field
    assert exported(e) == before


def test_a_single_item_is_named_by_its_index_too() -> None:
    with pytest.raises(InvalidArgument, match=r"^items\[0\]\.id: is required"):
        make_engine().plan_restore([{"embedding": basis(0)}], 1.0)


@pytest.mark.parametrize(("items", "problem"), [([], "at least one"), ({"id": "m"}, "must be a list"),
                                               ("abc", "must be a list"), (7, "must be a list")])
def test_the_batch_itself_is_checked(items: Any, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        make_engine().plan_restore(items, 1.0)


def test_batch_size_and_quota() -> None:
    e = make_engine(limits=Limits(max_batch=2, max_memories=3))
    with pytest.raises(InvalidArgument, match="at most 2 per batch"):
        e.plan_restore([{"id": f"m{i}", "embedding": basis(i)} for i in range(3)], 1.0)
    restore(e, [{"id": "a", "embedding": basis(0)}, {"id": "b", "embedding": basis(1)}])
    with pytest.raises(QuotaExceeded, match="quota of 3"):
        e.plan_restore([{"id": "c", "embedding": basis(2)}, {"id": "d", "embedding": basis(3)}], 1.0)
    # replacing existing memories adds none: within the quota
    assert restore(e, [{"id": "a", "embedding": basis(4)}, {"id": "c", "embedding": basis(2)}]) == 2
    assert e.count() == 3


def test_record_round_trip_and_bad_payloads() -> None:
    e = make_engine()
    rec = e.plan_restore([{"id": "a", "content": None, "embedding": at_cos(0.3), "confidence": 0.25,
                           "created_at": 1.5, "last_access": 2.75, "access_count": 3, "tags": ["x", "y"],
                           "metadata": {"n": [1, None, {"f": 0.1}]},
                           "links": [{"target": "b", "weight": 0.125, "kind": "next"}], "tier": "warm"},
                          {"id": "b", "embedding": basis(2)}], 77.0, "rid-1")
    assert isinstance(rec, Restore) and rec.at == 77.0 and rec.request_id == "rid-1"
    type_, payload = encode(rec)
    assert type_ == RecordType.RESTORE == 6
    assert decode(type_, payload) == rec
    assert decode(type_, memoryview(payload)) == rec
    with pytest.raises(RecordFormatError, match="RESTORE"):
        decode(type_, payload[:-4])                              # a row cut short
    with pytest.raises(RecordFormatError, match="RESTORE"):
        decode(type_, payload[:10])


def test_replaying_restore_records_gives_the_state_apply_gave() -> None:
    drv = Driver(make_engine(), prefix="n")
    drv.remember({"embedding": basis(0)}, {"embedding": at_cos(0.8)})
    dump = exported(source())
    for start in range(0, len(dump), 3):
        rec = drv.engine.plan_restore(dump[start:start + 3], drv.tick(), f"r{start}")
        drv.run(rec)
    drv.forget("m2")
    drv.run(drv.engine.plan_restore([{"id": "m2", "embedding": basis(6), "links": [{"target": "zz"}]}], drv.tick()))
    drv.remember({"id": "zz", "embedding": basis(7)}, {"embedding": at_cos(0.95, 7, 6)})   # STOREs after a restore
    drv.touch("m2", "zz")
    log = logged(drv.records)
    replayed, general = both(log)
    assert state(replayed) == state(drv.engine)
    assert general >= len(dump) // 3


def test_a_restore_is_a_remember_event_with_restored_memories() -> None:
    e = make_engine()
    rec = e.plan_restore([{"id": "a", "embedding": basis(0), "content": "hi", "tags": ["t"], "created_at": 1.0}],
                         500.0)
    assert change_event(12, rec) == {"seq": 12, "type": "remember", "at": 500.0,
                                     "memories": [{"id": "a", "outcome": "restored", "tags": ["t"], "content": "hi"}]}
