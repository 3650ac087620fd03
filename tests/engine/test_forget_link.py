"""forget (by id, tags, time), link validation, touch, get/count/page/stats."""

from __future__ import annotations

import math

import pytest

from memspace.engine import Limits, Link, records
from memspace.errors import InvalidArgument, MemoryNotFound, QuotaExceeded

from .conftest import Driver, at_cos, basis, make_engine


@pytest.fixture
def five(drv: Driver) -> Driver:
    drv.remember({"id": "a", "embedding": basis(0), "tags": ["x", "y"]}, {"id": "b", "embedding": basis(1), "tags": ["x"]},
                 {"id": "c", "embedding": basis(2), "tags": ["y"]})           # created at 1001
    drv.tick(100)
    drv.remember({"id": "d", "embedding": basis(3), "tags": ["x", "y"]}, {"id": "e", "embedding": basis(4)})  # at 1102
    return drv


def test_forget_by_id(five: Driver) -> None:
    five.link("b", "a", 0.5)
    assert five.forget("a") == 1
    with pytest.raises(MemoryNotFound) as err:
        five.engine.get("a")
    assert err.value.code == "MEMORY_NOT_FOUND" and "'a'" in err.value.message
    assert five.engine.count() == 4
    assert five.engine.get("b").links == ()   # the link into a went with it
    assert five.engine.stats().links == 0


def test_forget_single_missing_id_is_not_found(five: Driver) -> None:
    with pytest.raises(MemoryNotFound) as err:
        five.engine.plan_forget(["ghost"])
    assert err.value.details == {"id": "ghost", "field": "ids[0]"} and "ghost" in err.value.message


def test_forget_a_list_skips_missing_ids(five: Driver) -> None:
    rec = five.engine.plan_forget(["a", "ghost", "b", "a"])
    assert rec.ids == ("a", "b")
    assert five.run(rec) == 2 and five.engine.count() == 3


def test_forget_by_tags_means_all_tags(five: Driver) -> None:
    assert sorted(five.engine.plan_forget(tags=["x", "y"]).ids) == ["a", "d"]
    assert five.forget(tags=["x"]) == 3
    assert sorted(m.id for m in five.engine.page().items) == ["c", "e"]


def test_forget_by_time_and_combined(five: Driver) -> None:
    assert sorted(five.engine.plan_forget(before=1050.0).ids) == ["a", "b", "c"]
    assert sorted(five.engine.plan_forget(tags=["y"], before=1050.0).ids) == ["a", "c"]
    assert five.engine.plan_forget(["a", "d"], tags=["y"], before=1050.0).ids == ("a",)


def test_forget_needs_something_and_validates(five: Driver) -> None:
    with pytest.raises(InvalidArgument, match="ids: forget needs ids or a filter"):
        five.engine.plan_forget()
    with pytest.raises(InvalidArgument, match="ids: forget needs ids or a filter"):
        five.engine.plan_forget(tags=[])      # an empty filter would match everything
    with pytest.raises(InvalidArgument, match="before: must be a finite number"):
        five.engine.plan_forget(before=math.inf)
    with pytest.raises(InvalidArgument, match=r"ids\[1\]"):
        five.engine.plan_forget(["a", "no way"])
    with pytest.raises(InvalidArgument, match="ids: must be a list"):
        five.engine.plan_forget("a")


def test_replaying_a_forget_of_gone_memories_counts_only_what_existed(five: Driver) -> None:
    rec = five.engine.plan_forget(["a", "b"])
    assert five.engine.apply(rec) == 2 and five.engine.apply(rec) == 0


def test_link_and_replace(five: Driver) -> None:
    out = five.link("a", "b", 0.25, "cause")
    assert out == Link("b", 0.25, "cause")
    five.link("a", "b", 0.75)
    assert five.engine.get("a").links == (Link("b", 0.75, "related"),)
    assert five.engine.stats().links == 1


@pytest.mark.parametrize("args,exc,field,words", [
    (("a", "ghost"), MemoryNotFound, "target", "does not exist"),
    (("ghost", "a"), MemoryNotFound, "source", "does not exist"),
    (("a", "a"), InvalidArgument, "target", "cannot link to itself"),
    (("a", "b", 0.0), InvalidArgument, "weight", "(0, 1]"),
    (("a", "b", 1.01), InvalidArgument, "weight", "(0, 1]"),
    (("a", "b", math.nan), InvalidArgument, "weight", "(0, 1]"),
    (("a", "b", 0.5, ""), InvalidArgument, "kind", "1..64"),
    (("a", "bad id"), InvalidArgument, "target", "not a valid memory id"),
])
def test_link_validation(five: Driver, args: tuple, exc: type, field: str, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(exc) as err:
        five.engine.plan_link(*args, now=1.0)
    assert err.value.details["field"] == field and err.value.message.startswith(field + ":")
    assert words in err.value.message


def test_link_quota() -> None:
    drv = Driver(make_engine(limits=Limits(max_links=1)))
    drv.remember(*({"id": i, "embedding": basis(n)} for n, i in enumerate("abc")))
    drv.link("a", "b")
    drv.link("a", "b", 0.5)  # replacing is fine
    with pytest.raises(QuotaExceeded, match="already has 1 links"):
        drv.engine.plan_link("a", "c", now=1.0)


def test_touch_reinforces_and_skips_missing(five: Driver) -> None:
    rec = five.engine.plan_touch(["a", "ghost", "a", "c"], 5000.0)
    assert rec == records.Touch(("a", "c"), 5000.0)
    five.run(rec)
    m = five.engine.get("a")
    assert (m.access_count, m.last_access) == (1, 5000.0)


def test_get_returns_a_detached_copy(five: Driver) -> None:
    m = five.engine.get("a")
    m.embedding[:] = 0
    m.metadata["x"] = 1  # type: ignore[index]
    again = five.engine.get("a")
    assert again.embedding.tolist() == basis(0) and again.metadata == {}


def test_count_page_and_stats(five: Driver) -> None:
    e = five.engine
    assert (e.count(), e.count("hot"), e.count("warm"), e.count("cold")) == (5, 5, 0, 0)
    first = e.page(limit=2)
    assert [m.id for m in first.items] == ["a", "b"] and first.next_cursor is not None
    five.forget("a")                      # changes between pages neither skip nor repeat
    five.one(id="bb", embedding=at_cos(0.5, 5, 6))
    second = e.page(limit=2, cursor=first.next_cursor)
    assert [m.id for m in second.items] == ["bb", "c"]
    third = e.page(limit=2, cursor=second.next_cursor)
    assert [m.id for m in third.items] == ["d", "e"] and third.next_cursor is None
    with pytest.raises(InvalidArgument, match="cursor"):
        e.page(cursor="!!notacursor")
    with pytest.raises(InvalidArgument, match="limit"):
        e.page(limit=0)
    with pytest.raises(InvalidArgument, match="tier: must be one of hot, warm, cold"):
        e.count("lukewarm")
    s = e.stats()
    assert (s.hot, s.warm, s.cold, s.memories, s.dimension) == (5, 0, 0, 5, 8)
