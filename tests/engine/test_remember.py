"""remember: validation errors, dedup/merge, intra-batch dedup, auto-links, updates, quota, no mutation on plan."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from memspace.engine import Limits, Link
from memspace.engine.records import MergeEntry, StoreEntry, UpdateEntry
from memspace.errors import Internal, InvalidArgument, MemoryNotFound, QuotaExceeded

from .conftest import DIM, Driver, at_cos, basis, id_factory, make_engine


def plan_error(drv: Driver, items: list[dict[str, Any]]) -> Any:
    with pytest.raises(Exception) as err:
        drv.engine.plan_remember(items, 1.0, drv.new_id)
    return err.value


@pytest.mark.parametrize("item,field,words", [
    ({}, "content", "one of content or embedding is required"),
    ({"embedding": [1.0] * (DIM - 1)}, "embedding", f"has {DIM - 1} dimensions, the space has {DIM}"),
    ({"embedding": [math.nan] + [1.0] * (DIM - 1)}, "embedding", "NaN or infinity"),
    ({"embedding": [math.inf] + [1.0] * (DIM - 1)}, "embedding", "NaN or infinity"),
    ({"embedding": [0.0] * DIM}, "embedding", "zero vector"),
    ({"embedding": ["a"] * DIM}, "embedding", "numbers"),
    ({"embedding": [[1.0] * DIM]}, "embedding", "flat list"),
    ({"content": "   "}, "content", "nothing to embed"),
    ({"content": 42}, "content", "must be a string"),
    ({"content": "x" * 65}, "content", "is 65 bytes, at most 64"),
    ({"content": "ok\ud800"}, "content", "lone surrogate"),
    ({"content": "x", "confidence": 1.5}, "confidence", "[0, 1]"),
    ({"content": "x", "confidence": True}, "confidence", "must be a number"),
    ({"content": "x", "tags": "people"}, "tags", "list of strings"),
    ({"content": "x", "tags": ["a", ""]}, "tags[1]", "1..256 characters"),
    ({"content": "x", "tags": ["t"] * 3}, "tags", "has 3 tags, at most 2"),
    ({"content": "x", "metadata": [1]}, "metadata", "must be an object"),
    ({"content": "x", "metadata": {1: "a"}}, "metadata", "JSON-serialisable"),
    ({"content": "x", "metadata": {"k": "v" * 40}}, "metadata", "at most 32"),
    ({"content": "x", "id": "bad id!"}, "id", "is not a valid memory id"),
    ({"content": "x", "links": [{"weight": 1}]}, "links[0].target", "is required"),
    ({"content": "x", "links": [{"target": "a", "weight": 0}]}, "links[0].weight", "(0, 1]"),
    ({"content": "x", "links": [{"target": "a", "weight": 0.5, "kind": ""}]}, "links[0].kind", "1..64"),
    ({"content": "x", "links": [{"target": "a", "colour": "red"}]}, "links[0]", "unknown field(s) 'colour'"),
    ({"content": "x", "colour": "red"}, "item", "unknown field(s) 'colour'"),
])
def test_invalid_items_name_the_field(item: dict[str, Any], field: str, words: str) -> None:
    drv = Driver(make_engine(limits=Limits(max_content_bytes=64, max_tags=2, max_metadata_bytes=32)))
    err = plan_error(drv, [item])
    assert isinstance(err, InvalidArgument) and err.code == "INVALID_ARGUMENT"
    assert err.details["field"] == field and err.message.startswith(field + ":")
    assert words in err.message
    batch_err = plan_error(drv, [{"content": "fine"}, item])
    assert batch_err.details["field"] == ("items[1]" if field == "item" else f"items[1].{field}")
    assert batch_err.message.startswith(batch_err.details["field"])


def test_batch_level_errors(drv: Driver) -> None:
    assert "at least one item" in plan_error(drv, []).message
    drv.engine.limits = Limits(max_batch=2)
    err = plan_error(drv, [{"content": "a"}] * 3)
    assert err.details["field"] == "items" and "at most 2 per batch" in err.message
    with pytest.raises(InvalidArgument, match="items: must be a list"):
        drv.engine.plan_remember({"content": "a"}, 1.0, drv.new_id)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="now: must be a finite number"):
        drv.engine.plan_remember([{"content": "a"}], math.nan, drv.new_id)


def test_link_to_a_missing_memory(drv: Driver) -> None:
    err = plan_error(drv, [{"content": "a"}, {"content": "b", "links": [{"target": "ghost", "weight": 0.5}]}])
    assert isinstance(err, MemoryNotFound) and err.code == "MEMORY_NOT_FOUND"
    assert err.details == {"field": "items[1].links[0].target", "id": "ghost"}
    err = plan_error(drv, [{"id": "me", "content": "a", "links": [{"target": "me"}]}])
    assert isinstance(err, InvalidArgument) and "cannot link to itself" in err.message


def test_store_normalises_and_records_everything(drv: Driver) -> None:
    rec = drv.engine.plan_remember([{"embedding": [3.0, 4.0] + [0.0] * (DIM - 2), "content": "c", "tags": ["a", "b", "a"],
                                     "metadata": {"k": [1, 2]}, "confidence": 0.4}], 50.0, id_factory("x"), "req")
    assert rec.request_id == "req" and len(rec.entries) == 1
    e = rec.entries[0]
    assert isinstance(e, StoreEntry) and e.id == "x0" and e.created_at == 50.0 and e.tags == ("a", "b")
    assert e.embedding.dtype == np.float32 and e.embedding[:2].tolist() == pytest.approx([0.6, 0.8])
    assert drv.engine.count() == 0  # planning mutates nothing
    [res] = drv.engine.apply(rec)  # type: ignore[misc]
    m = drv.engine.get("x0")
    assert (res.id, res.outcome) == ("x0", "stored")
    assert (m.content, m.confidence, m.created_at, m.last_access, m.access_count) == ("c", 0.4, 50.0, 50.0, 0)
    assert m.metadata == {"k": [1, 2]} and m.tags == ("a", "b")


def test_text_only_items_are_embedded_in_one_batch_call(drv: Driver) -> None:
    calls: list[list[str]] = []
    real = drv.engine.embedder

    class Spy:
        name, dimension = "spy", DIM

        def embed(self, texts: list[str]) -> Any:
            calls.append(list(texts))
            return real.embed(texts)

    drv.engine._embedder = Spy()  # type: ignore[assignment]
    drv.remember({"content": "alpha beta"}, {"embedding": basis(3)}, {"content": "gamma delta"})
    assert calls == [["alpha beta", "gamma delta"]]
    np.testing.assert_allclose(drv.engine.get("m0").embedding, real.embed(["alpha beta"])[0], rtol=1e-6)


def test_dedup_merges_into_the_existing_memory(drv: Driver) -> None:
    first = drv.one(embedding=basis(0), content="a", confidence=0.6, tags=["x"])
    t0 = drv.engine.get(first.id).last_access
    second = drv.one(embedding=at_cos(0.97), content="a again", confidence=0.5, tags=["y", "x"])
    assert (second.outcome, second.id) == ("merged", first.id)
    assert second.similarity == pytest.approx(0.97, abs=1e-6)
    m = drv.engine.get(first.id)
    assert m.access_count == 1 and m.last_access > t0
    assert m.confidence == pytest.approx(0.6 + 0.1 * 0.4) and m.tags == ("x", "y")
    assert m.content == "a" and drv.engine.count() == 1


def test_just_below_the_dedup_threshold_is_stored(drv: Driver) -> None:
    drv.one(embedding=basis(0))
    assert drv.one(embedding=at_cos(0.94)).outcome == "stored"
    assert drv.engine.count() == 2


def test_intra_batch_dedup(drv: Driver) -> None:
    out = drv.remember({"embedding": basis(2), "confidence": 0.5}, {"embedding": basis(5)},
                       {"embedding": at_cos(0.99, 2, 3), "confidence": 0.5}, {"embedding": basis(2), "confidence": 0.5})
    assert [(r.id, r.outcome) for r in out] == [("m0", "stored"), ("m1", "stored"), ("m0", "merged"), ("m0", "merged")]
    m = drv.engine.get("m0")
    assert m.access_count == 2 and m.confidence == pytest.approx(0.55 + 0.1 * 0.45)  # 0.5 -> 0.55 -> 0.595
    assert drv.engine.count() == 2


def test_auto_links_both_ways_with_cosine_weights() -> None:
    drv = Driver(make_engine(max_auto_links=2))
    drv.one(embedding=basis(0))                       # m0
    drv.one(embedding=at_cos(0.8, 0, 2))              # m1: cos(m0)=0.8
    drv.one(embedding=basis(4))                       # m2: unrelated
    new = drv.one(embedding=at_cos(0.9, 0, 3))        # m3: cos(m0)=0.9, cos(m1)=0.72
    assert new.outcome == "stored" and new.links == ("m0", "m1")
    links = {lk.target: lk for lk in drv.engine.get(new.id).links}
    assert set(links) == {"m0", "m1"} and all(lk.kind == "similar" for lk in links.values())
    assert links["m0"].weight == pytest.approx(0.9, abs=1e-6) and links["m1"].weight == pytest.approx(0.72, abs=1e-6)
    back = {lk.target: lk.weight for lk in drv.engine.get("m0").links}
    assert back == {"m1": pytest.approx(0.8, abs=1e-6), "m3": pytest.approx(0.9, abs=1e-6)}
    assert drv.engine.get("m2").links == ()
    # at most max_auto_links, nearest first
    assert drv.one(embedding=at_cos(0.85, 0, 5)).links == ("m0", "m3")  # 0.85, 0.765; m1 0.68


def test_auto_links_skip_explicit_targets_and_respect_the_threshold(drv: Driver) -> None:
    drv.one(embedding=basis(0))
    drv.one(embedding=at_cos(0.6, 0, 2))
    r = drv.one(embedding=at_cos(0.9, 0, 3), links=[{"target": "m0", "weight": 0.3, "kind": "cause"}])
    assert r.links == ()  # m0 is linked explicitly; m1 (cos 0.54) is below link_threshold 0.7
    assert drv.engine.get(r.id).links == (Link("m0", 0.3, "cause"),)
    assert drv.engine.get("m0").links == ()


def test_client_id_update_keeps_links_and_replaces_the_rest(drv: Driver) -> None:
    drv.one(id="n1", embedding=basis(1))
    assert drv.one(id="k", embedding=basis(0), content="old", tags=["t"], metadata={"a": 1}).outcome == "stored"
    drv.link("k", "n1", 0.4)
    drv.one(id="n2", embedding=basis(2))
    res = drv.one(id="k", embedding=basis(3), content="new", confidence=0.3, metadata={"b": 2},
                  links=[{"target": "n2", "weight": 0.7}])
    assert (res.id, res.outcome) == ("k", "updated")
    m = drv.engine.get("k")
    assert (m.content, m.confidence, m.tags, m.metadata) == ("new", 0.3, (), {"b": 2})
    assert m.embedding.tolist() == basis(3) and m.created_at < m.last_access
    assert [(lk.target, lk.weight) for lk in m.links] == [("n1", 0.4), ("n2", 0.7)]
    assert drv.engine.count() == 3


def test_client_ids_are_never_merged_away(drv: Driver) -> None:
    drv.one(id="a", embedding=basis(0))
    r = drv.one(id="b", embedding=basis(0))
    assert (r.id, r.outcome) == ("b", "stored") and drv.engine.count() == 2


def test_same_client_id_twice_in_a_batch(drv: Driver) -> None:
    out = drv.remember({"id": "z", "embedding": basis(0), "content": "1"}, {"id": "z", "embedding": basis(1), "content": "2"})
    assert [(r.id, r.outcome) for r in out] == [("z", "stored"), ("z", "updated")]
    assert drv.engine.get("z").content == "2"


def test_batch_dedup_sees_updates_made_earlier_in_the_batch(drv: Driver) -> None:
    drv.one(id="u", embedding=basis(0))
    rec = drv.engine.plan_remember([{"id": "u", "embedding": basis(6)}, {"embedding": basis(0)},
                                    {"embedding": basis(6)}], 5.0, drv.new_id)
    assert [type(e) for e in rec.entries] == [UpdateEntry, StoreEntry, MergeEntry]
    assert rec.entries[2].id == "u"


def test_link_to_a_memory_stored_earlier_in_the_batch(drv: Driver) -> None:
    out = drv.remember({"id": "p", "embedding": basis(0)}, {"embedding": basis(1), "links": [{"target": "p", "weight": 0.5}]})
    assert drv.engine.get(out[1].id).links == (Link("p", 0.5, "related"),)


def test_quota() -> None:
    drv = Driver(make_engine(limits=Limits(max_memories=2)))
    drv.remember({"embedding": basis(0)}, {"embedding": basis(1)})
    assert drv.one(embedding=basis(0)).outcome == "merged"  # merges do not count against the quota
    with pytest.raises(QuotaExceeded) as err:
        drv.one(embedding=basis(2))
    assert err.value.code == "QUOTA_EXCEEDED" and err.value.details["limit"] == 2 and "quota of 2" in err.value.message


def test_an_id_factory_returning_a_used_id_is_an_internal_error(drv: Driver) -> None:
    drv.one(embedding=basis(0))
    with pytest.raises(Internal, match="'m0'"):
        drv.engine.plan_remember([{"embedding": basis(3)}], 1.0, lambda: "m0")


def test_planning_twice_gives_the_same_record(drv: Driver) -> None:
    drv.remember({"embedding": basis(0)}, {"embedding": at_cos(0.8)})
    items = [{"embedding": at_cos(0.9, 0, 3), "content": "x"}, {"embedding": basis(0)}]
    one = drv.engine.plan_remember(items, 7.0, id_factory("q"))
    two = drv.engine.plan_remember(items, 7.0, id_factory("q"))
    assert one == two and drv.engine.count() == 2
