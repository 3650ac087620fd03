"""Reads through the durable space: get, recall (modes, filters, paths, reinforcement), count,
list paging and stats."""

from __future__ import annotations

import math
from typing import Any

import pytest

from memspace.errors import InvalidArgument, MemoryNotFound
from memspace.storage.space import Space

from .conftest import DIM, Opener, at_cos, basis


def test_get_missing_memory(space: Space) -> None:
    with pytest.raises(MemoryNotFound) as info:
        space.get("ghost")
    assert info.value.code == "MEMORY_NOT_FOUND"
    assert "ghost" in info.value.message and info.value.details["id"] == "ghost"


# -- recall -----------------------------------------------------------------------------------------

def test_similarity_mode_ranks_by_cosine(space: Space) -> None:
    for i, c in enumerate([0.2, 0.9, 0.6]):
        space.remember(embedding=at_cos(c, other=1 + i), id=f"m{i}", content=f"c{i}")
    hits = space.recall(embedding=basis(0), mode="similarity", k=2)
    assert [(h.id, h.path, h.reached) for h in hits] == [("m1", ("m1",), "direct"), ("m2", ("m2",), "direct")]
    assert [h.similarity for h in hits] == pytest.approx([0.9, 0.6], abs=1e-6)
    assert [h.activation for h in hits] == pytest.approx([0.9, 0.6], abs=1e-6)
    # rank = 0.6 * similarity + 0.3 * activation + 0.1 * confidence (no decay in these tests)
    assert hits[0].score == pytest.approx(0.6 * 0.9 + 0.3 * 0.9 + 0.1, abs=1e-6)
    assert hits[0].content == "c1" and hits[0].confidence == 1.0


def test_spreading_follows_links_with_paths(space: Space) -> None:
    """The golden chain: 0->1->2->3->4, weights 0.9, seed activation 1 gives 1, .447, .099, 0, 0."""
    for i in range(5):
        space.remember(embedding=basis(i), id=f"n{i}")
    for i in range(4):
        space.link(f"n{i}", f"n{i + 1}", 0.9)
    hits = space.recall(embedding=basis(0), threshold=0.5, k=10)
    got = {h.id: h for h in hits}
    assert set(got) == {"n0", "n1", "n2"}
    assert got["n0"].activation == pytest.approx(1.0)
    assert got["n1"].activation == pytest.approx(0.9 * math.exp(-0.7), abs=1e-3)
    assert got["n1"].activation == pytest.approx(0.447, abs=1e-3)
    assert got["n2"].activation == pytest.approx(0.099, abs=1e-3)
    assert got["n2"].path == ("n0", "n1", "n2") and got["n2"].depth == 2 and got["n2"].reached == "link"
    assert [h.id for h in hits] == ["n0", "n1", "n2"]
    plain = space.recall(embedding=basis(0), threshold=0.5, mode="similarity")
    assert [h.id for h in plain] == ["n0"]
    shallow = space.recall(embedding=basis(0), threshold=0.5, max_depth=1)
    assert [h.id for h in shallow] == ["n0", "n1"]


def test_recall_filters(space: Space, opener: Opener) -> None:
    t0 = opener.clock.time()
    for i, tags in enumerate([["a"], ["a", "b"], ["b"]]):
        space.remember(embedding=at_cos(0.9 - 0.1 * i, other=1 + i), id=f"m{i}", tags=tags)
        opener.clock.advance(10)
    assert [h.id for h in space.recall(embedding=basis(0), tags=["a"])] == ["m0", "m1"]
    assert [h.id for h in space.recall(embedding=basis(0), tags=["a", "b"])] == ["m1"]
    assert [h.id for h in space.recall(embedding=basis(0), since=t0 + 10)] == ["m1", "m2"]
    assert [h.id for h in space.recall(embedding=basis(0), until=t0 + 10)] == ["m0", "m1"]
    assert [h.id for h in space.recall(embedding=basis(0), since=t0 + 5, until=t0 + 15)] == ["m1"]
    assert [h.tags for h in space.recall(embedding=basis(0), tags=["b"])] == [("a", "b"), ("b",)]


def test_recall_by_text(space: Space) -> None:
    space.remember(content="met Ana at the lab")
    target = space.remember(content="the quarterly budget review meeting").id
    space.remember(content="feed the cat")
    hits = space.recall(query="quarterly budget review", k=1)
    assert [h.id for h in hits] == [target]


def test_recall_reinforces_and_the_touch_survives_reopen(opener: Opener) -> None:
    with opener() as s:
        s.remember(embedding=basis(0), id="a")
        s.remember(embedding=basis(1), id="b")
        opener.clock.advance(100)
        hits = s.recall(embedding=basis(0), threshold=0.5)
        assert [h.id for h in hits] == ["a"]
        now = opener.clock.time()
        assert (s.get("a").access_count, s.get("a").last_access) == (1, now)
        assert (s.get("b").access_count, s.get("b").last_access) == (0, now - 100)
    with opener() as s:
        assert (s.get("a").access_count, s.get("a").last_access) == (1, now)
        assert s.get("b").access_count == 0


@pytest.mark.parametrize("kwargs, field", [
    ({}, "query"),
    ({"query": "  "}, "query"),
    ({"embedding": [1.0, 0.0]}, "embedding"),
    ({"embedding": basis(0), "mode": "psychic"}, "mode"),
    ({"embedding": basis(0), "k": 0}, "k"),
    ({"embedding": basis(0), "k": 10_000}, "k"),
    ({"embedding": basis(0), "threshold": 2.0}, "threshold"),
    ({"embedding": basis(0), "max_depth": 9}, "max_depth"),
    ({"embedding": basis(0), "tags": "a"}, "tags"),
    ({"embedding": basis(0), "since": "monday"}, "since"),
    ({"embedding": basis(0), "tiers": ["lukewarm"]}, "tiers"),
    ({"embedding": basis(0), "tiers": []}, "tiers"),
])
def test_recall_rejects_bad_arguments(space: Space, kwargs: dict[str, Any], field: str) -> None:
    space.remember(embedding=basis(0), id="a")
    seq = space.stats().wal_last_seq
    with pytest.raises(InvalidArgument) as info:
        space.recall(**kwargs)
    assert info.value.code == "INVALID_ARGUMENT"
    assert info.value.details["field"] == field and field in info.value.message
    assert space.stats().wal_last_seq == seq and space.get("a").access_count == 0


# -- count, list --------------------------------------------------------------------------------------

def test_count_by_tier(space: Space) -> None:
    assert space.count() == 0
    for i in range(3):
        space.remember(embedding=basis(i))
    assert (space.count(), space.count("hot"), space.count("warm"), space.count("cold")) == (3, 3, 0, 0)
    with pytest.raises(InvalidArgument) as info:
        space.count("lukewarm")
    assert info.value.details["field"] == "tier"


def test_list_pages_walk_every_memory_once(space: Space) -> None:
    # explicit ids are never merged, so repeating directions is fine
    made = sorted(space.remember(embedding=basis(i % DIM), id=f"m{i:02d}").id for i in range(23))
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = space.list(limit=5, cursor=cursor)
        assert len(page.items) == (5 if len(seen) < 20 else 3)
        seen += [m.id for m in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == made


def test_paging_while_memories_come_and_go(space: Space) -> None:
    for i in range(12):
        space.remember(embedding=basis(i % DIM), id=f"m{i:02d}")
    page = space.list(limit=4)
    seen = [m.id for m in page.items]
    space.forget("m01")                       # already returned
    space.forget("m09")                       # not yet returned
    space.remember(embedding=basis(2), id="m05a")
    cursor = page.next_cursor
    while cursor is not None:
        page = space.list(limit=4, cursor=cursor)
        seen += [m.id for m in page.items]
        cursor = page.next_cursor
    stayed = [f"m{i:02d}" for i in range(12) if i not in (1, 9)]
    assert [i for i in seen if i in stayed] == stayed
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("kwargs, field", [({"limit": 0}, "limit"), ({"limit": 10**6}, "limit"),
                                           ({"cursor": "!!not-a-cursor"}, "cursor"),
                                           ({"tier": "lukewarm"}, "tier")])
def test_list_rejects_bad_arguments(space: Space, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        space.list(**kwargs)
    assert info.value.details["field"] == field and field in info.value.message


# -- stats ------------------------------------------------------------------------------------------

def test_stats_fields(opener: Opener) -> None:
    with opener() as s:
        st = s.stats()
        assert (st.dimension, st.memories, st.wal_last_seq, st.checkpoint_lsn, st.checkpoint_at) == (
            DIM, 0, 0, 0, None)
        assert st.path == str(opener.path) and st.fsync == "always"
        for i in range(3):
            s.remember(embedding=basis(i))
        st = s.stats()
        assert (st.memories, st.memories_by_tier) == (3, {"hot": 3, "warm": 0, "cold": 0})
        assert (st.wal_last_seq, st.wal_durable_seq) == (3, 3)
        assert st.wal_bytes > 0 and st.wal_bytes_since_checkpoint == st.wal_bytes
        opener.clock.advance(7)
        info = s.checkpoint()
        st = s.stats()
        assert (st.checkpoint_lsn, st.checkpoint_at, st.wal_bytes_since_checkpoint) == (3, opener.clock.time(), 0)
        assert info.lsn == 3 and st.snapshot_bytes == info.bytes > 0
        s.remember(embedding=basis(4))
        s.remember(embedding=basis(5))
        assert s.stats().wal_bytes_since_checkpoint > 0
    with opener() as s:
        st = s.stats()
        assert (st.recovered_records, st.memories, st.checkpoint_lsn, st.wal_last_seq) == (2, 5, 3, 5)
        assert set(st.to_dict()) >= {"path", "dimension", "memories", "memories_by_tier", "wal_bytes",
                                     "wal_last_seq", "wal_durable_seq", "checkpoint_lsn", "snapshot_bytes",
                                     "recovered_records", "recovery_s", "fsync"}
