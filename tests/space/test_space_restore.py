"""Space.restore: an export put into a new space is that space (memories, links, recall), durably,
one batch at a time, all or none: across a close, a checkpoint, a torn WAL tail and a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memspace.errors import InvalidArgument
from memspace.storage.space import Space

from . import restore_child
from .conftest import DIM, Opener, at_cos, basis

#: Dense cues: no two memories tie on similarity (a tie is broken by row, and a restore lays the
#: rows out in export order rather than in the order the memories were first written).
CUES = [np.random.default_rng(seed).normal(size=DIM).tolist() for seed in range(3)]
KILL_TIMEOUT_S = 60   # a safety net against a hung writer, never a synchronisation delay


def export(s: Space) -> list[dict[str, Any]]:
    """What the worker's export op pages out: every memory in id order, with its embedding."""
    out, cursor = [], None
    for _ in range(10_000):
        page = s.list(limit=4, cursor=cursor)
        out += [m.to_dict(embedding=True) for m in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return out
    raise AssertionError("more pages than memories")


def hits(s: Space, tiers: list[str] | None = None) -> list[Any]:
    return [[h.to_dict() for h in s.recall(embedding=q, k=40, mode=mode, threshold=-1.0, tiers=tiers)]
            for q in CUES for mode in ("similarity", "spreading")]


def fill(s: Space, clock: Any) -> None:
    """Auto-links both ways, a merge, explicit links, recalls (touches), a forget, an update."""
    s.remember_batch([{"content": "Ana met Bo at the lab", "tags": ["people"]}, {"embedding": basis(0)},
                      {"embedding": at_cos(0.8), "metadata": {"k": [1, {"x": None}]}}, {"embedding": at_cos(0.9)}])
    for i in range(10):
        clock.advance(7.5)
        s.remember(embedding=at_cos(0.55 + i / 25, i % DIM, (i + 3) % DIM), confidence=0.2 + i / 15,
                   tags=[f"t{i % 3}"], id=f"c{i}")
    s.remember(embedding=at_cos(0.999), tags=["dup"])         # merged
    s.link("c1", "c7", 0.65, "cause")
    s.link("c9", "c0", 0.3)
    clock.advance(100)
    s.recall(embedding=basis(0), k=3)
    clock.advance(50)
    s.recall(embedding=at_cos(0.7, 2, 5), k=2)
    s.forget("c4")
    s.remember(id="c5", embedding=at_cos(0.4, 1, 6), content="updated")


def test_export_restore_export_is_exact_recall_the_same_and_it_survives_reopening(tmp_path: Path) -> None:
    src_open = Opener(tmp_path / "src", settings={"decay": "exponential", "half_life_s": 600.0})
    dst_open = Opener(tmp_path / "dst", settings={"decay": "exponential", "half_life_s": 600.0})
    dst_open.clock = src_open.clock
    with src_open() as src, dst_open() as dst:
        fill(src, src_open.clock)
        dump = export(src)
        assert len(dump) == 12 and any(lk["target"] > m["id"] for m in dump for lk in m["links"])
        fsyncs = dst.fsync_histogram[-1]
        total = sum(dst.restore(dump[i:i + 4]) for i in range(0, len(dump), 4))
        assert total == len(dump)
        assert dst.fsync_histogram[-1] == fsyncs + 3                        # one fsync per batch
        assert export(dst) == dump
        src_open.clock.advance(3600)                                         # decay uses the restored times
        assert hits(dst) == hits(src)
        dump = export(src)
        assert export(dst) == dump                                           # both reinforced alike
    with dst_open() as dst:                                                  # replayed from the WAL
        assert export(dst) == dump
        dst.checkpoint()
    with dst_open() as dst:                                                  # from the snapshot
        assert export(dst) == dump
        assert dst.stats().recovered_records == 0


def test_warm_memories_round_trip_exactly(tmp_path: Path) -> None:
    overrides = {"tiers.hot_capacity": 4, "tiers.warm_capacity": 20}
    src_open = Opener(tmp_path / "src", overrides=overrides)
    dst_open = Opener(tmp_path / "dst", overrides=overrides)
    with src_open() as src, dst_open() as dst:
        fill(src, src_open.clock)
        src.checkpoint()
        dump = export(src)
        warm = src.count("warm")
        assert {m["tier"] for m in dump} == {"hot", "warm"} and warm == len(dump) - 4
        dst.restore(dump)
        dst.checkpoint()
        assert (dst.count("hot"), dst.count("warm")) == (4, warm)
        dst.restore(dump)
        # restoring again replaces the warm copies: everything is hot now (placement is
        # physical, not part of a memory), the float16-rounded embeddings kept as given
        assert export(dst) == [{**m, "tier": "hot"} for m in dump]
        # the warm tier gives the exact cosine of its float16 rows; hot ones are used as they are
        for a, b in zip(hits(src, ["hot", "warm"]), hits(dst, ["hot", "warm"])):
            assert [h["id"] for h in a] == [h["id"] for h in b]
            assert [h["score"] for h in a] == pytest.approx([h["score"] for h in b], abs=1e-3)


def test_restore_is_idempotent_by_request_id_and_by_content(opener: Opener) -> None:
    items = [{"id": "a", "embedding": basis(0), "links": [{"target": "b", "weight": 0.5}]},
             {"id": "b", "embedding": basis(1), "access_count": 2}]
    with opener() as s:
        assert s.restore(items, request_id="r1") == 2
        seq = s.last_seq
        assert s.restore(items, request_id="r1") == 2 and s.last_seq == seq       # not applied again
        before = export(s)
        assert s.restore(items) == 2 and s.last_seq == seq + 1 and export(s) == before
        with pytest.raises(InvalidArgument, match="items must be a list"):
            s.restore("a")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match=r"items\[1\]\.embedding"):
            s.restore([items[0], {"id": "c", "embedding": [1.0]}])
        assert s.last_seq == seq + 1 and export(s) == before
    with opener() as s:
        assert s.restore(items, request_id="r1") == 2 and s.last_seq == seq + 1   # remembered across a reopen


def test_a_torn_batch_is_gone_entirely_and_the_ones_before_it_stay(opener: Opener) -> None:
    with opener() as s:
        for k in range(3):
            s.restore(restore_child.batch(k))
        whole = export(s)
        s.restore(restore_child.batch(3))
    wal = max((opener.path / "wal").glob("*.wal"))
    with open(wal, "r+b") as f:                       # the last record (batch 3) cut short
        f.truncate(os.path.getsize(wal) - 40)
    with opener() as s:
        assert export(s) == whole
        assert not any(m["id"].startswith("b3-") for m in whole)


def ids_of(s: Space) -> set[str]:
    return {m["id"] for m in export(s)}


def test_sigkill_mid_restore_keeps_every_acknowledged_batch_and_no_partial_one(tmp_path: Path) -> None:
    directory = tmp_path / "space"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, restore_child.__file__, str(directory)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    assert child.stdout is not None
    acked = -1
    try:
        while acked < 12:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"writer exited early ({child.wait(KILL_TIMEOUT_S)}): {child.stderr.read()!r}")
            if line.startswith(b"A "):
                acked = int(line.split()[1])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(KILL_TIMEOUT_S)
    for line in child.stdout.read().splitlines():     # acknowledged before the kill, unread
        if line.startswith(b"A "):
            acked = int(line.split()[1])
    child.stdout.close()
    child.stderr.close()
    with Opener(directory, settings={})() as s:
        present = ids_of(s)
        last = max(k for k in range(acked + 3) if f"b{k}-1" in present)
        assert last in (acked, acked + 1)              # the batch in flight: all or nothing
        for k in range(last + 1):
            batch = restore_child.batch(k)
            assert {m["id"] for m in batch[1:]} <= present, k
            for item in batch[1:]:
                m = s.get(item["id"])
                assert (m.content, m.created_at, m.last_access, m.access_count) == \
                       (item["content"], item["created_at"], item["last_access"], item["access_count"])
                assert [lk.to_dict() for lk in m.links] == item["links"]
        assert not any(i.startswith(f"b{last + 1}-") for i in present)
        shared = s.get("shared")
        assert (shared.metadata["batch"], shared.access_count) == (last, last)   # the last batch's copy
        # the writer's retry of the batch in flight, with its request id: applied exactly once
        assert s.restore(restore_child.batch(last + 1), request_id=f"b{last + 1}") == restore_child.BATCH
        assert s.get("shared").metadata["batch"] == last + 1
        assert len(ids_of(s)) == 1 + (last + 2) * (restore_child.BATCH - 1)
