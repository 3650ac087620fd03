"""Writes through the durable space: remember, remember_batch, forget, link, and their errors.

Every error is checked for its contract code and for naming the offending field,
and every rejected write is checked to have changed nothing (count, WAL seq).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from memspace.engine.model import Link
from memspace.errors import InvalidArgument, MemoryNotFound, MemspaceError
from memspace.storage.space import Space

from .conftest import DIM, Opener, at_cos, basis, unit32


def expect_error(exc_type: type[MemspaceError], code: str, field: str | None, call: Any) -> MemspaceError:
    with pytest.raises(exc_type) as info:
        call()
    err = info.value
    assert err.code == code
    if field is not None:
        assert err.details.get("field") == field, err.details
        assert field in err.message, err.message
    return err


def unchanged(space: Space, call: Any, exc_type: type[MemspaceError], code: str, field: str | None) -> None:
    """The call fails with ``code`` naming ``field`` and neither memories nor the WAL change."""
    before = (space.count(), space.stats().wal_last_seq)
    expect_error(exc_type, code, field, call)
    assert (space.count(), space.stats().wal_last_seq) == before


# -- remember ---------------------------------------------------------------------------------------

def test_remember_stores_every_field(space: Space, opener: Opener) -> None:
    r = space.remember(embedding=[3.0, 4.0] + [0.0] * (DIM - 2), content="met Ana at the lab", id="m-1",
                       confidence=0.8, tags=["people", "lab"], metadata={"source": "chat", "n": 2})
    assert (r.id, r.outcome, r.similarity, r.links) == ("m-1", "stored", None, ())
    m = space.get("m-1")
    assert m.content == "met Ana at the lab"
    np.testing.assert_array_equal(m.embedding, unit32([3.0, 4.0] + [0.0] * (DIM - 2)))
    assert m.embedding[0] == pytest.approx(0.6) and m.embedding[1] == pytest.approx(0.8)
    assert (m.confidence, m.tags, dict(m.metadata)) == (0.8, ("people", "lab"), {"source": "chat", "n": 2})
    assert (m.created_at, m.last_access, m.access_count, m.links, m.tier) == (
        opener.clock.time(), opener.clock.time(), 0, (), "hot")
    assert space.count() == 1


def test_remember_generates_ids_from_the_factory(space: Space) -> None:
    a = space.remember(embedding=basis(0))
    b = space.remember(embedding=basis(1))
    assert (a.id, b.id) == ("g00000", "g00001")
    assert {space.get(a.id).id, space.get(b.id).id} == {"g00000", "g00001"}


def test_near_duplicate_merges_and_reinforces(space: Space, opener: Opener) -> None:
    first = space.remember(embedding=basis(0), content="original", confidence=0.5, tags=["a"])
    opener.clock.advance(60)
    r = space.remember(embedding=at_cos(0.99), content="again", confidence=0.5, tags=["b", "a"])
    assert r.outcome == "merged" and r.id == first.id
    assert r.similarity == pytest.approx(0.99, abs=1e-6)
    m = space.get(first.id)
    assert m.access_count == 1
    assert m.last_access == opener.clock.time() and m.created_at == opener.clock.time() - 60
    assert m.confidence == pytest.approx(0.55)        # max(0.5, 0.5) nudged a tenth of the way to 1
    assert m.tags == ("a", "b")
    assert m.content == "original"                    # a merge reinforces; it does not overwrite
    assert space.count() == 1


def test_below_dedup_threshold_is_stored_and_auto_linked_both_ways(space: Space) -> None:
    a = space.remember(embedding=basis(0), id="a")
    b = space.remember(embedding=at_cos(0.8), id="b")
    assert (b.outcome, b.links) == ("stored", ("a",))
    ab = space.get("b").links
    ba = space.get("a").links
    assert [(lk.target, lk.kind) for lk in ab] == [("a", "similar")]
    assert [(lk.target, lk.kind) for lk in ba] == [("b", "similar")]
    assert ab[0].weight == pytest.approx(0.8, abs=1e-6) and ba[0].weight == pytest.approx(0.8, abs=1e-6)
    c = space.remember(embedding=at_cos(0.5, other=2), id="c")   # below link_threshold 0.7
    assert (c.outcome, c.links, space.get("c").links) == ("stored", (), ())
    assert a.outcome == "stored" and space.count() == 3


def test_same_explicit_id_updates(space: Space, opener: Opener) -> None:
    space.remember(embedding=basis(0), id="x", content="old", tags=["t1"], metadata={"v": 1})
    space.remember(embedding=basis(3), id="y")
    space.link("x", "y", 0.4)
    opener.clock.advance(5)
    r = space.remember(embedding=basis(1), id="x", content="new", tags=["t2"], confidence=0.3)
    assert (r.id, r.outcome) == ("x", "updated")
    m = space.get("x")
    np.testing.assert_array_equal(m.embedding, unit32(basis(1)))
    assert (m.content, m.tags, dict(m.metadata), m.confidence) == ("new", ("t2",), {}, 0.3)
    assert m.last_access == opener.clock.time()
    assert Link("y", 0.4, "related") in m.links       # an update keeps existing links
    assert space.count() == 2


def test_explicit_links_on_remember(space: Space) -> None:
    space.remember(embedding=basis(0), id="a")
    space.remember(embedding=basis(1), id="b", links=[{"target": "a", "weight": 0.3, "kind": "cause"}])
    assert space.get("b").links == (Link("a", 0.3, "cause"),)
    assert space.get("a").links == ()


def test_text_only_memories_get_a_computed_embedding(space: Space) -> None:
    a = space.remember(content="met Ana at the lab on Monday")
    b = space.remember(content="quarterly tax forms are due in April")
    ea, eb = space.get(a.id).embedding, space.get(b.id).embedding
    assert ea.shape == (DIM,) and float(np.linalg.norm(ea)) == pytest.approx(1.0, abs=1e-5)
    assert not np.array_equal(ea, eb)
    again = space.remember(content="met Ana at the lab on Monday")
    assert (again.outcome, again.id) == ("merged", a.id)


@pytest.mark.parametrize("kwargs, field", [
    ({}, "content"),
    ({"content": "   "}, "content"),
    ({"embedding": [1.0, 0.0]}, "embedding"),
    ({"embedding": [0.0] * DIM}, "embedding"),
    ({"embedding": [float("nan")] + [1.0] * (DIM - 1)}, "embedding"),
    ({"embedding": basis(0), "confidence": 1.5}, "confidence"),
    ({"embedding": basis(0), "tags": "people"}, "tags"),
    ({"embedding": basis(0), "tags": ["ok", ""]}, "tags[1]"),
    ({"embedding": basis(0), "id": "bad id!"}, "id"),
    ({"embedding": basis(0), "metadata": {"x": object()}}, "metadata"),
    ({"embedding": basis(0), "links": [{"target": "x", "weight": 2.0}]}, "links[0].weight"),
    ({"embedding": basis(0), "request_id": ""}, "request_id"),
])
def test_remember_rejects_bad_input_naming_the_field(space: Space, kwargs: dict[str, Any], field: str) -> None:
    space.remember(embedding=basis(7), id="keep")
    unchanged(space, lambda: space.remember(**kwargs), InvalidArgument, "INVALID_ARGUMENT", field)


def test_remember_link_to_missing_memory_is_not_found(space: Space) -> None:
    err = expect_error(MemoryNotFound, "MEMORY_NOT_FOUND", "links[0].target",
                       lambda: space.remember(embedding=basis(0), links=[{"target": "ghost"}]))
    assert "ghost" in err.message
    assert space.count() == 0


def test_content_above_the_limit_is_rejected(opener: Opener) -> None:
    opener.config = opener.config.replace({"limits.max_content_bytes": 10})
    with opener() as s:
        unchanged(s, lambda: s.remember(embedding=basis(0), content="x" * 11), InvalidArgument,
                  "INVALID_ARGUMENT", "content")


# -- remember_batch ---------------------------------------------------------------------------------

def test_batch_is_one_record(space: Space) -> None:
    seq = space.stats().wal_last_seq
    results = space.remember_batch([
        {"embedding": basis(0), "id": "a", "content": "A"},
        {"embedding": basis(1), "content": "B", "links": [{"target": "a", "weight": 0.5}]},
        {"embedding": at_cos(0.999), "content": "dup of A"},
    ])
    assert [r.outcome for r in results] == ["stored", "stored", "merged"]
    assert results[0].id == "a" and results[2].id == "a"
    assert space.stats().wal_last_seq == seq + 1
    assert space.count() == 2
    assert space.get(results[1].id).links == (Link("a", 0.5, "related"),)
    assert space.get("a").access_count == 1


@pytest.mark.parametrize("bad, field", [
    ({"embedding": [1.0, 2.0]}, "items[2].embedding"),
    ({"content": 5}, "items[2].content"),
    ({"embedding": basis(3), "colour": "red"}, "items[2]"),
    ("not an object", "items[2]"),
])
def test_an_invalid_item_rejects_the_whole_batch(space: Space, bad: Any, field: str) -> None:
    items = [{"embedding": basis(0), "id": "one"}, {"embedding": basis(1), "id": "two"}, bad]
    unchanged(space, lambda: space.remember_batch(items), InvalidArgument, "INVALID_ARGUMENT", field)
    for memory_id in ("one", "two"):
        with pytest.raises(MemoryNotFound):
            space.get(memory_id)


def test_batch_link_to_missing_memory_stores_nothing(space: Space) -> None:
    items = [{"embedding": basis(0), "id": "one"},
             {"embedding": basis(1), "id": "two", "links": [{"target": "one"}, {"target": "ghost"}]}]
    unchanged(space, lambda: space.remember_batch(items), MemoryNotFound, "MEMORY_NOT_FOUND",
              "items[1].links[1].target")
    assert space.count() == 0


@pytest.mark.parametrize("items, field", [([], "items"), ("abc", "items"), ({"embedding": [1.0]}, "items")])
def test_batch_must_be_a_non_empty_list(space: Space, items: Any, field: str) -> None:
    unchanged(space, lambda: space.remember_batch(items), InvalidArgument, "INVALID_ARGUMENT", field)


def test_batch_above_max_batch_is_rejected(opener: Opener) -> None:
    opener.config = opener.config.replace({"limits.max_batch": 3})
    with opener() as s:
        items = [{"embedding": basis(i)} for i in range(4)]
        unchanged(s, lambda: s.remember_batch(items), InvalidArgument, "INVALID_ARGUMENT", "items")
        assert len(s.remember_batch(items[:3])) == 3


# -- forget -----------------------------------------------------------------------------------------

@pytest.fixture
def tagged(space: Space, opener: Opener) -> Space:
    for i, tags in enumerate([["x"], ["x", "y"], ["y"], []]):
        space.remember(embedding=basis(i), id=f"m{i}", tags=tags)
        opener.clock.advance(10)
    return space


def ids(space: Space) -> list[str]:
    return [m.id for m in space.list(limit=1000).items]


def test_forget_by_id(tagged: Space) -> None:
    assert tagged.forget("m1") == 1
    with pytest.raises(MemoryNotFound):
        tagged.get("m1")
    assert ids(tagged) == ["m0", "m2", "m3"]


def test_forget_by_ids_counts_what_existed(tagged: Space) -> None:
    assert tagged.forget(ids=["m0", "ghost", "m2", "m0"]) == 2
    assert ids(tagged) == ["m1", "m3"]


def test_forget_by_tags_needs_all_of_them(tagged: Space) -> None:
    assert tagged.forget(tags=["x", "y"]) == 1
    assert ids(tagged) == ["m0", "m2", "m3"]
    assert tagged.forget(tags=["x"]) == 1
    assert ids(tagged) == ["m2", "m3"]


def test_forget_before(tagged: Space, opener: Opener) -> None:
    start = opener.clock.time() - 40          # m0 was created at start, m1 at start+10, ...
    assert tagged.forget(before=start + 15) == 2
    assert ids(tagged) == ["m2", "m3"]


def test_forget_tags_and_before_intersect(tagged: Space, opener: Opener) -> None:
    start = opener.clock.time() - 40
    assert tagged.forget(tags=["y"], before=start + 15) == 1
    assert ids(tagged) == ["m0", "m2", "m3"]


def test_forget_removes_links_to_the_memory(space: Space) -> None:
    space.remember(embedding=basis(0), id="a")
    space.remember(embedding=basis(1), id="b")
    space.link("a", "b", 0.5)
    space.forget("b")
    assert space.get("a").links == ()


def test_forget_missing_id_is_not_found(tagged: Space) -> None:
    before = (tagged.count(), tagged.stats().wal_last_seq)
    with pytest.raises(MemoryNotFound) as info:
        tagged.forget("ghost")
    assert info.value.code == "MEMORY_NOT_FOUND" and "ghost" in info.value.message
    assert (tagged.count(), tagged.stats().wal_last_seq) == before


@pytest.mark.parametrize("kwargs, field", [
    ({}, "id"),
    ({"id": "m0", "ids": ["m1"]}, "ids"),
    ({"tags": []}, "ids"),
    ({"ids": "m0"}, "ids"),
    ({"tags": "x"}, "tags"),
    ({"before": "yesterday"}, "before"),
])
def test_forget_rejects_bad_arguments(tagged: Space, kwargs: dict[str, Any], field: str) -> None:
    unchanged(tagged, lambda: tagged.forget(**kwargs), InvalidArgument, "INVALID_ARGUMENT", field)


# -- link -------------------------------------------------------------------------------------------

def test_link_adds_and_reweights(space: Space) -> None:
    space.remember(embedding=basis(0), id="a")
    space.remember(embedding=basis(1), id="b")
    assert space.link("a", "b", 0.9, "cause") == Link("b", 0.9, "cause")
    assert space.get("a").links == (Link("b", 0.9, "cause"),)
    assert space.get("b").links == ()                  # directed
    assert space.link("a", "b", 0.2) == Link("b", 0.2, "related")
    assert space.get("a").links == (Link("b", 0.2, "related"),)


@pytest.mark.parametrize("args, exc, code, field", [
    (("ghost", "b"), MemoryNotFound, "MEMORY_NOT_FOUND", "source"),
    (("a", "ghost"), MemoryNotFound, "MEMORY_NOT_FOUND", "target"),
    (("a", "a"), InvalidArgument, "INVALID_ARGUMENT", "target"),
    (("a", "b", 0.0), InvalidArgument, "INVALID_ARGUMENT", "weight"),
    (("a", "b", 1.5), InvalidArgument, "INVALID_ARGUMENT", "weight"),
    (("a", "b", 0.5, ""), InvalidArgument, "INVALID_ARGUMENT", "kind"),
    (("a b", "b"), InvalidArgument, "INVALID_ARGUMENT", "source"),
])
def test_link_errors(space: Space, args: tuple[Any, ...], exc: type[MemspaceError], code: str,
                     field: str) -> None:
    space.remember(embedding=basis(0), id="a")
    space.remember(embedding=basis(1), id="b")
    unchanged(space, lambda: space.link(*args), exc, code, field)
    assert space.get("a").links == ()
