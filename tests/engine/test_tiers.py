"""Demotion (least recently accessed first) and promotion on change, with MemoryTier warm/cold tiers."""

from __future__ import annotations

import numpy as np
import pytest

from memspace.engine import Demotion, Link, MemoryTier
from memspace.engine.policy import choose_demotions

from .conftest import Driver, basis, make_engine


@pytest.fixture
def tiered() -> Driver:
    e = make_engine(engine_kwargs={"warm": MemoryTier("warm"), "cold": MemoryTier("cold")})
    drv = Driver(e)
    for i in range(5):
        drv.one(id=f"n{i}", embedding=basis(i), content=f"c{i}", tags=["all"])
    drv.touch("n0")
    drv.touch("n3")   # least recent now: n1, n2, n4, then n0, n3
    return drv


def test_choose_demotions_is_least_recent_first() -> None:
    d = choose_demotions(["a", "b", "c", "d"], np.array([4.0, 1.0, 3.0, 1.0]), 1, ["w1", "w2"], 2, 3, has_cold=True)
    assert d == Demotion(("b", "d", "c"), ("w1", "w2"))
    d = choose_demotions(["a", "b"], np.array([2.0, 1.0]), 0, [], 0, 1, has_cold=True)
    assert d == Demotion(("b", "a"), ("b",))
    assert not choose_demotions(["a"], np.array([1.0]), 5, [], 0, 5, has_cold=True)
    assert choose_demotions(["a", "b"], np.array([2.0, 1.0]), 1, None, 0, 0, has_cold=True) == Demotion()
    assert choose_demotions(["a", "b"], np.array([2.0, 1.0]), 0, [], 0, 0, has_cold=False) == Demotion(("b", "a"))


def test_demote_moves_data_down(tiered: Driver) -> None:
    e = tiered.engine
    d = e.plan_demotion(hot_capacity=2, warm_capacity=2)
    assert d == Demotion(("n1", "n2", "n4"), ("n1",))
    e.demote(d)
    assert (e.count("hot"), e.count("warm"), e.count("cold"), e.count()) == (2, 2, 1, 5)
    assert [e.tier_of(f"n{i}") for i in range(5)] == ["hot", "cold", "warm", "hot", "warm"]
    m = e.get("n1")
    assert (m.tier, m.content, m.tags) == ("cold", "c1", ("all",)) and m.embedding.tolist() == basis(1)
    assert [x.id for x in e.page(limit=10).items] == [f"n{i}" for i in range(5)]
    assert [x.id for x in e.page(tier="warm").items] == ["n2", "n4"]
    assert e.stats().warm == 2 and e.stats().cold == 1


def test_recall_searches_warm_when_hot_is_short_and_cold_only_when_asked(tiered: Driver) -> None:
    e = tiered.engine
    e.demote(e.plan_demotion(2, 2))
    assert [h.id for h in e.recall(embedding=basis(0), k=2, threshold=0.5, now=1.0)] == ["n0"]
    hits = e.recall(embedding=basis(2), k=1, threshold=0.5, now=1.0)
    assert [(h.id, h.tier) for h in hits] == [("n2", "warm")]
    assert e.recall(embedding=basis(1), threshold=0.5, now=1.0) == []
    hits = e.recall(embedding=basis(1), threshold=0.5, tiers=["cold"], now=1.0)
    assert [(h.id, h.tier, h.content) for h in hits] == [("n1", "cold", "c1")]
    assert [h.id for h in e.recall(embedding=basis(4), tiers=["warm"], tags=["all"], threshold=0.5, now=1.0)] == ["n4"]
    assert e.recall(embedding=basis(4), tiers=["hot", "cold"], threshold=0.5, now=1.0) == []


def test_spreading_follows_links_from_hot_into_warm(tiered: Driver) -> None:
    e = tiered.engine
    tiered.link("n0", "n2", 1.0)
    e.demote(e.plan_demotion(2, 2))
    hits = e.recall(embedding=basis(0), threshold=0.5, now=1.0)
    assert [(h.id, h.tier, h.path) for h in hits] == [("n0", "hot", ("n0",)), ("n2", "warm", ("n0", "n2"))]


def test_any_change_promotes(tiered: Driver) -> None:
    e = tiered.engine
    e.demote(e.plan_demotion(0, 1))   # everything leaves hot; all but the most recent (n3) go cold
    assert e.count("hot") == 0 and list(e.warm.ids()) == ["n3"] and e.count("cold") == 4  # type: ignore[union-attr]
    tiered.touch("n1")
    assert e.tier_of("n1") == "hot" and e.get("n1").access_count == 1
    tiered.link("n2", "n3", 0.5)
    assert e.tier_of("n2") == "hot" and e.tier_of("n3") == "warm"   # only the source changes
    assert e.get("n2").links == (Link("n3", 0.5, "related"),)
    assert tiered.one(id="n3", embedding=basis(6), content="new").outcome == "updated"
    assert e.tier_of("n3") == "hot" and e.get("n3").content == "new"
    assert e.count() == 5 and "n1" not in e.cold and "n2" not in e.cold  # type: ignore[operator]


def test_forget_in_lower_tiers(tiered: Driver) -> None:
    e = tiered.engine
    tiered.link("n0", "n1", 0.5)
    tiered.link("n2", "n1", 0.5)
    e.demote(e.plan_demotion(2, 2))    # n1 cold, n2 warm (its link to n1 travels with it)
    assert tiered.forget("n1") == 1
    assert e.count() == 4 and e.tier_of("n1") is None
    assert e.get("n0").links == ()     # hot holder: removed at once
    assert e.get("n2").links == ()     # warm holder: skipped lazily
    assert e.warm.links("n2") == (Link("n1", 0.5, "related"),)  # type: ignore[union-attr]
    tiered.touch("n2")                 # promotion drops the dangling link for good
    assert e.stats().links == 0
    assert sorted(e.plan_forget(tags=["all"]).ids) == ["n0", "n2", "n3", "n4"]


def test_demote_skips_ids_that_moved_since_the_plan(tiered: Driver) -> None:
    e = tiered.engine
    d = e.plan_demotion(3, 10)
    tiered.forget("n1")
    e.demote(d)
    assert e.count("warm") == 1 and e.count() == 4
