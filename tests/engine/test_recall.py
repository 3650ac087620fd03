"""recall: similarity vs spreading, paths, ranking, filters, decay, validation, and a numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memspace.engine import Limits
from memspace.errors import InvalidArgument

from .conftest import DIM, Driver, at_cos, basis, make_engine

E1, E2 = math.exp(-0.7), math.exp(-1.4)


@pytest.fixture
def chain(drv: Driver) -> Driver:
    drv.remember({"id": "a", "embedding": basis(0), "content": "A", "tags": ["t"]},
                 {"id": "b", "embedding": basis(1), "content": "B", "tags": ["t"], "metadata": {"n": 2}},
                 {"id": "c", "embedding": basis(2), "content": "C"})
    drv.link("a", "b", 0.8)
    drv.link("b", "c", 0.9)
    return drv


def test_spreading_reaches_linked_memories_with_paths(chain: Driver) -> None:
    hits = chain.engine.recall(embedding=basis(0), threshold=0.5, now=2000.0)
    assert [h.id for h in hits] == ["a", "b", "c"]
    a, b, c = hits
    assert (a.path, a.activation, a.similarity, a.score) == (("a",), 1.0, 1.0, pytest.approx(1.0))
    assert a.reached == "direct" and b.reached == "link" and c.depth == 2
    assert b.path == ("a", "b") and b.activation == pytest.approx(0.8 * E1) and b.similarity == 0.0
    assert c.path == ("a", "b", "c") and c.activation == pytest.approx(0.8 * E1 * 0.9 * E2)
    assert b.score == pytest.approx(0.3 * 0.8 * E1 + 0.1) and c.score == pytest.approx(0.3 * 0.8 * E1 * 0.9 * E2 + 0.1)
    assert (b.content, b.tags, b.metadata, b.tier) == ("B", ("t",), {"n": 2}, "hot")


def test_similarity_mode_does_not_spread(chain: Driver) -> None:
    hits = chain.engine.recall(embedding=at_cos(0.8, 0, 5), threshold=0.5, mode="similarity", now=2000.0)
    assert [(h.id, h.path) for h in hits] == [("a", ("a",))]
    assert hits[0].activation == pytest.approx(0.8) and hits[0].score == pytest.approx(0.6 * 0.8 + 0.3 * 0.8 + 0.1)
    assert [h.id for h in chain.engine.recall(embedding=basis(0), threshold=0.5, max_depth=0, now=1.0)] == ["a"]
    assert [h.id for h in chain.engine.recall(embedding=basis(0), threshold=0.5, max_depth=1, now=1.0)] == ["a", "b"]


def test_filters_apply_to_seeds_and_reached_memories(chain: Driver) -> None:
    e = chain.engine
    assert [h.id for h in e.recall(embedding=basis(0), threshold=0.5, tags=["t"], now=1.0)] == ["a", "b"]
    assert [h.id for h in e.recall(embedding=basis(2), tags=["t"], mode="similarity", now=1.0)] == ["a", "b"]
    assert e.recall(embedding=basis(0), tags=["t", "missing"], now=1.0) == []
    chain.tick(50)
    chain.one(id="late", embedding=at_cos(0.9), content="L")
    created = e.get("late").created_at
    assert [h.id for h in e.recall(embedding=basis(0), since=created, now=1.0)] == ["late"]
    assert "late" not in [h.id for h in e.recall(embedding=basis(0), until=created - 1, now=1.0)]


def test_k_and_threshold(drv: Driver) -> None:
    for i, c in enumerate([0.9, 0.8, 0.6, 0.3, -0.5]):
        drv.one(id=f"v{i}", embedding=at_cos(c, 0, 1 + i))
    e = drv.engine
    assert [h.id for h in e.recall(embedding=basis(0), k=2, mode="similarity", now=1.0)] == ["v0", "v1"]
    assert [h.id for h in e.recall(embedding=basis(0), threshold=0.5, mode="similarity", now=1.0)] == ["v0", "v1", "v2"]
    assert len(e.recall(embedding=basis(0), threshold=-1.0, mode="similarity", now=1.0)) == 5


def test_decayed_confidence_breaks_ties() -> None:
    drv = Driver(make_engine(decay="exponential", half_life_s=100.0, decay_floor=0.0, link_threshold=1.0))
    drv.remember({"id": "old", "embedding": basis(0), "content": "x"}, {"id": "new", "embedding": basis(0)})
    drv.tick(200)
    drv.touch("new")
    hits = drv.engine.recall(embedding=basis(0), mode="similarity", now=drv.now)
    assert [h.id for h in hits] == ["new", "old"]
    new, old = hits
    assert new.confidence == pytest.approx(1.0)
    age = drv.now - drv.engine.get("old").last_access
    assert age == 201.0
    assert old.confidence == pytest.approx(0.5 ** (age / 100))   # never touched: plain half-life
    assert new.score - old.score == pytest.approx(0.1 * (1.0 - 0.5 ** (age / 100)))


def test_recall_mutates_nothing(chain: Driver) -> None:
    before = [chain.engine.get(i).to_dict() for i in "abc"]
    chain.engine.recall(embedding=basis(0), now=9999.0)
    assert [chain.engine.get(i).to_dict() for i in "abc"] == before


def test_text_query_and_combined_cue(drv: Driver) -> None:
    e = make_engine(dimension=256)
    d = Driver(e)
    d.remember({"content": "Ana works on protein folding at the lab"}, {"content": "the train to Berlin leaves at nine"},
               {"content": "buy milk and eggs on the way home"})
    assert e.recall(query="who works on protein folding?", k=1, now=1.0)[0].id == "m0"
    vec = e.get("m1").embedding
    assert e.recall(query="who works on protein folding?", embedding=vec, k=1, now=1.0)[0].id in {"m0", "m1"}
    assert e.recall(embedding=vec, k=1, now=1.0)[0].id == "m1"


@pytest.mark.parametrize("kwargs,field", [
    ({}, "query"),
    ({"query": "  "}, "query"),
    ({"embedding": [1.0] * (DIM + 1)}, "embedding"),
    ({"embedding": basis(0), "k": 0}, "k"),
    ({"embedding": basis(0), "k": 11}, "k"),
    ({"embedding": basis(0), "max_depth": 5}, "max_depth"),
    ({"embedding": basis(0), "mode": "vibes"}, "mode"),
    ({"embedding": basis(0), "threshold": 2.0}, "threshold"),
    ({"embedding": basis(0), "tiers": ["hot", "tepid"]}, "tiers"),
    ({"embedding": basis(0), "tiers": []}, "tiers"),
    ({"embedding": basis(0), "tags": "t"}, "tags"),
    ({"embedding": basis(0), "since": math.nan}, "since"),
])
def test_recall_validation(kwargs: dict, field: str) -> None:  # type: ignore[type-arg]
    e = make_engine(limits=Limits(max_k=10))
    with pytest.raises(InvalidArgument) as err:
        e.recall(now=1.0, **kwargs)
    assert err.value.details["field"] == field and err.value.message.startswith(field + ":")


def test_similarity_mode_matches_a_numpy_reference() -> None:
    rng = np.random.default_rng(7)
    e = make_engine(dimension=32, dedup_threshold=1.0, link_threshold=1.0)
    drv = Driver(e)
    vecs = rng.normal(size=(300, 32)).astype(np.float32)
    tags = [["even"] if i % 2 == 0 else ["odd"] for i in range(300)]
    drv.remember(*({"embedding": v, "tags": t} for v, t in zip(vecs, tags)))
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    for _ in range(5):
        q = rng.normal(size=32).astype(np.float32)
        qu = q / np.linalg.norm(q)
        sims = unit @ qu
        hits = e.recall(embedding=q, k=7, mode="similarity", now=1.0)
        assert [h.id for h in hits] == [f"m{i}" for i in np.argsort(-sims)[:7]]
        np.testing.assert_allclose([h.similarity for h in hits], np.sort(sims)[::-1][:7], rtol=1e-5)
        hits = e.recall(embedding=q, k=7, mode="similarity", tags=["odd"], threshold=0.1, now=1.0)
        masked = np.where((np.arange(300) % 2 == 1) & (sims >= 0.1), sims, -np.inf)
        want = [f"m{i}" for i in np.argsort(-masked)[:7] if masked[i] > -np.inf]
        assert [h.id for h in hits] == want
