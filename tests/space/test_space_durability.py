"""Durability on real files: close + reopen gives back exactly what was there, with and without
checkpoints, under every fsync policy; the WAL stays bounded; request ids stay idempotent across
reopen and checkpoints; tiers demote at checkpoints and stay findable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memspace.engine.model import Hit, Link
from memspace.errors import InvalidArgument, MemoryNotFound
from memspace.storage.space import Space

from .conftest import DIM, Opener, assert_hits_equal, at_cos, basis, space_state, unit32

CUES: list[dict[str, Any]] = [
    {"embedding": basis(0)},
    {"embedding": at_cos(0.6, 1, 2), "mode": "similarity", "k": 4},
    {"embedding": basis(3), "threshold": 0.3, "max_depth": 3},
    {"embedding": basis(2), "tags": ["t1"]},
    {"query": "memory number 4"},
]


def pure_recalls(s: Space, clock_now: float) -> list[list[Hit]]:
    """Recall results without reinforcing anything (the engine's pure recall)."""
    return [s.engine.recall(now=clock_now, **cue) for cue in CUES]


def populate(s: Space, opener: Opener, start: int = 0, n: int = 12) -> None:
    """Stores, merges, updates, links, forgets and recalls: every record type, auto-links too."""
    for i in range(start, start + n):
        opener.clock.advance(3)
        vec = at_cos(0.75, i % DIM, (i + 1) % DIM) if i % 3 else basis(i % DIM)
        s.remember(embedding=vec, id=f"m{i}", content=f"memory number {i}", confidence=0.5 + (i % 5) / 10,
                   tags=["t1"] if i % 2 else ["t1", "t2"], metadata={"i": i})
    s.remember_batch([{"embedding": basis(start % DIM), "content": "dup"},        # merges
                      {"content": "a text-only memory"},
                      {"embedding": basis((start + 2) % DIM), "id": f"m{start + 1}", "content": "updated"}])
    s.link(f"m{start}", f"m{start + 5}", 0.9, "cause")
    s.link(f"m{start + 5}", f"m{start + 7}", 0.8)
    s.forget(f"m{start + 3}")
    opener.clock.advance(1)
    s.recall(embedding=basis(start % DIM), k=3)


def check_reopen_equal(opener: Opener, s: Space) -> Space:
    """Close ``s``, reopen, assert every memory, link, count and recall result is the same."""
    before, recalls = space_state(s), pure_recalls(s, opener.clock.time())
    s.close()
    again = opener()
    assert space_state(again) == before
    for a, b in zip(recalls, pure_recalls(again, opener.clock.time())):
        assert_hits_equal(a, b)
    return again


def test_close_and_reopen_gives_back_everything(opener: Opener) -> None:
    s = opener()
    populate(s, opener)
    assert s.count() == 12
    assert s.get("m0").links and Link("m5", 0.9, "cause") in s.get("m0").links
    s = check_reopen_equal(opener, s)
    assert s.stats().recovered_records == s.stats().wal_last_seq
    s.close()


def test_reopen_after_checkpoint_and_after_more_writes(opener: Opener) -> None:
    s = opener()
    populate(s, opener)
    info = s.checkpoint()
    assert info.lsn == s.stats().wal_last_seq
    s = check_reopen_equal(opener, s)
    assert s.stats().recovered_records == 0
    populate(s, opener, start=20)
    s = check_reopen_equal(opener, s)
    assert s.stats().recovered_records > 0 and s.count() == 24
    s.checkpoint()
    populate(s, opener, start=40, n=9)
    s = check_reopen_equal(opener, s)
    s.close()


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_every_fsync_policy_recovers_after_a_clean_close(opener: Opener, policy: str) -> None:
    opener.config = opener.config.replace({"wal.fsync": policy})
    s = opener()
    assert s.stats().fsync == policy
    populate(s, opener)
    s = check_reopen_equal(opener, s)
    s.close()


def test_fsync_argument_overrides_the_config(opener: Opener) -> None:
    with opener(fsync="never") as s:
        s.remember(embedding=basis(0), id="a")
        assert s.stats().fsync == "never"
        assert s.stats().wal_durable_seq == 0         # handed to the OS, not fsynced yet
        s.sync()
        assert s.stats().wal_durable_seq == 1
    with opener() as s:
        assert s.get("a").id == "a"


def test_wal_stays_bounded_by_checkpoints(opener: Opener) -> None:
    segment, every = 0.01, 0.03                        # MiB: ~10 KB segments, checkpoint every ~31 KB
    opener.config = opener.config.replace({"wal.segment_mb": segment, "checkpoint_every_mb": every})
    s = opener()
    rng = np.random.default_rng(7)
    wal_dir, snap_dir = opener.path / "wal", opener.path / "snapshots"
    largest = 0
    checkpoints = set()
    for i in range(400):
        s.remember(embedding=rng.normal(size=DIM).tolist(), id=f"m{i}", content="x" * 300)
        if i % 10 == 0:
            s.forget(f"m{i - 5}") if i >= 5 else None
        st = s.stats()
        checkpoints.add(st.checkpoint_lsn)
        on_disk = sum(p.stat().st_size for p in wal_dir.glob("*.wal"))
        assert on_disk == st.wal_bytes
        largest = max(largest, on_disk)
        assert len(list(snap_dir.glob("*.snap"))) <= 2
    assert len(checkpoints) >= 5                       # checkpoints ran by themselves
    assert largest <= 2 * every * 2**20 + 2 * segment * 2**20
    assert not (wal_dir / f"{1:020d}.wal").exists()    # the first segments were dropped
    s = check_reopen_equal(opener, s)
    assert s.count() == 400 - 39
    s.close()


# -- request ids -------------------------------------------------------------------------------------

def test_request_id_returns_the_first_result(space: Space) -> None:
    first = space.remember(embedding=basis(0), content="one", request_id="r1")
    again = space.remember(embedding=basis(5), content="two", request_id="r1")
    assert again == first and space.count() == 1 and space.get(first.id).content == "one"
    seq = space.stats().wal_last_seq
    assert space.link(first.id, space.remember(embedding=basis(1), id="b").id, 0.5, request_id="l1") == \
        Link("b", 0.5, "related")
    assert space.link(first.id, "b", 0.9, request_id="l1") == Link("b", 0.5, "related")
    assert space.get(first.id).links == (Link("b", 0.5, "related"),)
    assert space.forget("b", request_id="f1") == 1
    space.remember(embedding=basis(1), id="b")
    assert space.forget("b", request_id="f1") == 1       # not applied again: b stays
    assert space.get("b").id == "b"
    assert space.stats().wal_last_seq == seq + 4         # remember b, link, forget, remember b


def test_a_request_id_reused_for_another_kind_of_write_is_refused(opener: Opener) -> None:
    with opener() as s:
        s.remember(embedding=basis(0), id="a", request_id="r1")
        s.remember(embedding=basis(1), id="b")
        s.forget("b", request_id="r2")
    with opener() as s:                                   # the cache was rebuilt from the WAL
        seq = s.stats().wal_last_seq
        for call in (lambda: s.forget("a", request_id="r1"), lambda: s.link("a", "a", request_id="r1"),
                     lambda: s.remember(embedding=basis(2), request_id="r2"),
                     lambda: s.remember_batch([{"embedding": basis(2)}], request_id="r2")):
            with pytest.raises(InvalidArgument) as info:
                call()
            assert info.value.details["field"] == "request_id" and "'r" in info.value.message
        assert s.stats().wal_last_seq == seq and [m.id for m in s.list().items] == ["a"]
        assert s.remember_batch([{"embedding": basis(3)}], request_id="r1")[0].id == "a"   # same kind


def _idempotency_script(s: Space) -> dict[str, Any]:
    return {
        "remember": s.remember(embedding=basis(0), id="a", request_id="r-remember"),
        "batch": s.remember_batch([{"embedding": basis(1)}, {"embedding": basis(2)}], request_id="r-batch"),
        "link": s.link("a", "g00000", 0.7, request_id="r-link"),
        "forget": s.forget(ids=["g00001"], request_id="r-forget"),
    }


def _retry(s: Space) -> dict[str, Any]:
    return {
        "remember": s.remember(embedding=basis(4), id="zz", request_id="r-remember"),
        "batch": s.remember_batch([{"embedding": basis(5)}], request_id="r-batch"),
        "link": s.link("a", "g00000", 0.1, request_id="r-link"),
        "forget": s.forget(ids=["a"], request_id="r-forget"),
    }


@pytest.mark.parametrize("checkpoint", [False, True])
def test_request_ids_survive_reopen_and_checkpoints(opener: Opener, checkpoint: bool) -> None:
    with opener() as s:
        first = _idempotency_script(s)
        s.forget("g00000")
        s.remember(embedding=basis(6), id="g00001")       # the forgotten one is back under its id
        if checkpoint:
            s.checkpoint()
        state = space_state(s)
    with opener() as s:
        if checkpoint:
            assert s.stats().recovered_records == 0      # the results came from the snapshot
        assert _retry(s) == first
        assert space_state(s) == state                   # nothing was applied again
    with opener() as s:
        assert space_state(s) == state


# -- tiers --------------------------------------------------------------------------------------------

@pytest.fixture
def tiered(tmp_path: Path) -> Opener:
    return Opener(tmp_path / "tiered", dimension=16, overrides={"tiers.hot_capacity": 4, "tiers.warm_capacity": 3})


def fill(s: Space, opener: Opener, n: int = 12) -> dict[str, list[float]]:
    rng = np.random.default_rng(3)
    vecs = {}
    for i in range(n):
        opener.clock.advance(10)                     # m0 is the least recently accessed
        vecs[f"m{i:02d}"] = v = rng.normal(size=16).tolist()
        s.remember(embedding=v, id=f"m{i:02d}", content=f"c{i}", tags=["all"])
    return vecs


def tiers_of(s: Space, n: int = 12) -> dict[str, str]:
    return {f"m{i:02d}": s.get(f"m{i:02d}").tier for i in range(n)}


def test_checkpoint_demotes_to_warm_and_cold(tiered: Opener) -> None:
    with tiered() as s:
        fill(s, tiered)
        info = s.checkpoint()
        assert (info.demoted_to_warm, info.demoted_to_cold) == (8, 5)
        assert {t: s.count(t) for t in ("hot", "warm", "cold")} == {"hot": 4, "warm": 3, "cold": 5}
        expected = {f"m{i:02d}": "cold" if i < 5 else "warm" if i < 8 else "hot" for i in range(12)}
        assert tiers_of(s) == expected
        assert any((tiered.path / "warm").iterdir()) and any((tiered.path / "cold").iterdir())
        state = space_state(s)
    with tiered() as s:
        assert tiers_of(s) == expected and space_state(s) == state


def test_lower_tiers_are_found_by_get_and_recall(tiered: Opener) -> None:
    with tiered() as s:
        vecs = fill(s, tiered)
        s.checkpoint()
        cold = s.get("m01")
        assert (cold.tier, cold.content, cold.tags) == ("cold", "c1", ("all",))
        # warm and cold keep float16 embeddings: close to, not equal to, the original
        np.testing.assert_allclose(cold.embedding, unit32(vecs["m01"]), atol=1e-3)
        hits = s.recall(embedding=vecs["m01"], k=1, tiers=["hot", "warm", "cold"], mode="similarity")
        assert [(h.id, h.tier) for h in hits] == [("m01", "cold")]
        assert hits[0].similarity == pytest.approx(1.0, abs=1e-3)
        assert s.get("m01").tier == "hot"             # the recall touched it: promoted
        hits = s.recall(embedding=vecs["m06"], k=1, tiers=["warm"])
        assert [(h.id, h.tier) for h in hits] == [("m06", "warm")]
        assert s.recall(embedding=vecs["m02"], k=1, tiers=["hot"])[0].id != "m02"
        state = space_state(s)
    with tiered() as s:
        assert space_state(s) == state
        assert tiers_of(s)["m01"] == "hot" and tiers_of(s)["m06"] == "hot" and tiers_of(s)["m02"] == "cold"


def test_default_recall_searches_warm_when_hot_is_short(tiered: Opener) -> None:
    with tiered() as s:
        vecs = fill(s, tiered)
        s.checkpoint()
        hits = s.recall(embedding=vecs["m06"], k=6, mode="similarity")
        assert hits[0].id == "m06" and hits[0].tier == "warm"
        assert {h.tier for h in hits} <= {"hot", "warm"}


def test_link_and_touch_promote_a_warm_memory(tiered: Opener) -> None:
    with tiered() as s:
        vecs = fill(s, tiered)
        s.checkpoint()
        assert (s.get("m05").tier, s.get("m06").tier, s.get("m07").tier) == ("warm", "warm", "warm")
        s.link("m05", "m10", 0.6)                      # a link from a warm memory changes it
        assert s.get("m05").tier == "hot" and Link("m10", 0.6, "related") in s.get("m05").links
        s.link("m11", "m06", 0.6)                      # the target is not changed
        assert s.get("m06").tier == "warm"
        s.recall(embedding=vecs["m07"], k=1, tiers=["warm"])
        assert s.get("m07").tier == "hot" and s.get("m07").access_count == 1
        state = space_state(s)
    with tiered() as s:                                # promotions are replayed from the WAL
        assert space_state(s) == state
        s.checkpoint()
        state = space_state(s)
    with tiered() as s:
        assert space_state(s) == state
        assert s.get("m05").tier in ("hot", "warm") and s.count() == 12


def test_forgetting_lower_tier_memories(tiered: Opener) -> None:
    with tiered() as s:
        fill(s, tiered)
        s.checkpoint()
        assert s.forget(ids=["m00", "m06"]) == 2
        assert s.forget(tags=["all"], before=tiered.clock.time() - 85) == 2    # m01, m02 (cold)
        for gone in ("m00", "m01", "m02", "m06"):
            with pytest.raises(MemoryNotFound):
                s.get(gone)
        s.checkpoint()
        state = space_state(s)
    with tiered() as s:
        assert space_state(s) == state and s.count() == 8


def test_reopen_from_a_snapshot_keeps_the_approximate_index_setting(tmp_path: Path) -> None:
    opener = Opener(tmp_path / "ann", overrides={"tiers.ann_threshold": 50})
    with opener() as s:
        s.remember(embedding=basis(0), id="a")
        s.checkpoint()
        assert s.engine.ann_threshold == 50
    with opener() as s:                                   # restored from the snapshot
        assert s.stats().checkpoint_lsn == 1 and s.engine.ann_threshold == 50
