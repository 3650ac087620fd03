"""Reopening a space replays its WAL in bulk: the same memories, hooks and request-id results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import memspace
from memspace.testing import FakeClock


def vectors(n: int, seed: int = 3) -> np.ndarray:
    """Clustered unit vectors (so auto-links form) in 16 dims."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 16))
    v = centers[rng.integers(0, 3, n)] + rng.normal(0.0, 0.45, (n, 16))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def everything(space: Any) -> list[tuple[dict[str, Any], bytes]]:
    out, cursor = [], None
    while True:
        page = space.list(limit=50, cursor=cursor)
        out += [(m.to_dict(), m.embedding.tobytes()) for m in page.items]
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def test_reopen_replays_hooks_results_and_state(tmp_path: Path) -> None:
    live: list[tuple[int, Any]] = []
    v = vectors(60)
    settings = {"link_threshold": 0.6, "dedup_threshold": 0.99}
    with memspace.open_space(tmp_path / "s", dimension=16, settings=settings, fsync="never", clock=FakeClock(),
                             on_record=lambda seq, rec: live.append((seq, rec))) as space:
        first = [space.remember(embedding=x, content=f"m{i}", tags=[f"t{i % 3}"], request_id=f"r{i}")
                 for i, x in enumerate(v[:40])]
        space.remember_batch([{"embedding": x} for x in v[40:50]], request_id="batch")
        space.link(first[0].id, first[1].id, 0.9)
        space.forget(first[2].id)
        space.recall(embedding=v[0], k=3)
        for x in v[50:]:
            space.remember(embedding=x)
        before = everything(space)
        links = space.stats()
        assert sum(len(m["links"]) for m, _ in before) > 100
    replayed: list[tuple[int, Any]] = []
    with memspace.open_space(tmp_path / "s", fsync="never", clock=FakeClock(),
                             on_record=lambda seq, rec: replayed.append((seq, rec))) as space:
        assert space.stats().recovered_records == len(live) == len(replayed)
        assert replayed == live
        assert everything(space) == before
        assert space.stats().memories == links.memories
        again = space.remember(embedding=v[5], content="different", request_id="r5")
        assert again == first[5]
        assert space.count() == links.memories


def test_record_tail_limits_the_hook_during_recovery_only(tmp_path: Path) -> None:
    v = vectors(8)
    with memspace.open_space(tmp_path / "s", dimension=16, fsync="never", clock=FakeClock()) as space:
        for x in v[:6]:
            space.remember(embedding=x)
    seen: list[int] = []
    with memspace.open_space(tmp_path / "s", fsync="never", clock=FakeClock(), record_tail=2,
                             on_record=lambda seq, rec: seen.append(seq)) as space:
        assert seen == [5, 6]
        space.remember(embedding=v[6])
        assert seen == [5, 6, 7]
        assert space.count() == 7
    with memspace.open_space(tmp_path / "s", fsync="never", clock=FakeClock(), record_tail=0,
                             on_record=lambda seq, rec: seen.append(seq)):
        assert seen == [5, 6, 7]


def test_record_tail_reaches_back_before_the_snapshot_as_far_as_the_wal_goes(tmp_path: Path) -> None:
    v = vectors(8)
    with memspace.open_space(tmp_path / "s", dimension=16, fsync="never", clock=FakeClock()) as space:
        for x in v[:5]:
            space.remember(embedding=x)
        space.checkpoint()
        for x in v[5:7]:
            space.remember(embedding=x)
    for tail, expect, after in ((100, [1, 2, 3, 4, 5, 6, 7], 0), (3, [5, 6, 7], 4)):
        seen: list[int] = []
        with memspace.open_space(tmp_path / "s", fsync="never", clock=FakeClock(), record_tail=tail,
                                 on_record=lambda seq, rec: seen.append(seq)) as space:
            assert seen == expect
            assert space.hooked_after == after and space.checkpoint_lsn == 5
            assert space.count() == 7 and space.stats().recovered_records == 2   # nothing applied twice
    seen = []
    with memspace.open_space(tmp_path / "s", fsync="never", clock=FakeClock(),
                             on_record=lambda seq, rec: seen.append(seq)) as space:
        assert seen == [6, 7] and space.hooked_after == 5


def test_replayed_results_survive_a_checkpoint_for_retries(tmp_path: Path) -> None:
    """Results of replayed stores are kept compactly until asked for; a snapshot written
    before any retry holds them in full."""
    v = vectors(6)
    settings = {"link_threshold": 0.6, "dedup_threshold": 0.99}
    with memspace.open_space(tmp_path / "s", dimension=16, settings=settings, fsync="never",
                             clock=FakeClock()) as space:
        first = [space.remember(embedding=x, request_id=f"r{i}") for i, x in enumerate(v)]
    assert any(r.links for r in first)
    with memspace.open_space(tmp_path / "s", fsync="never", clock=FakeClock()) as space:
        space.checkpoint()
    with memspace.open_space(tmp_path / "s", fsync="never", clock=FakeClock()) as space:
        assert [space.remember(embedding=v[0], content="retried", request_id=f"r{i}")
                for i in range(6)] == first
        assert space.count() == 6
