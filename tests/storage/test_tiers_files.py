"""File-level behaviour of the warm and cold tiers: manifests, orphans, corruption, compaction."""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from memspace.engine.model import Memory
from memspace.errors import InvalidArgument, StorageError
from memspace.storage.tiers import ColdTier, WarmTier, plan_compaction
from memspace.testing.tiers import memories, unit_rows

DIM = 24
TIERS = [WarmTier, ColdTier]
Tier = WarmTier | ColdTier


def batch(n: int, prefix: str, seed: int) -> list[Memory]:
    return memories(unit_rows(n, DIM, seed), prefix)


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def header(path: Path) -> dict[str, int]:
    fields = struct.unpack("<8sHHIQQQQII", path.read_bytes()[:56])
    return dict(zip(("dim", "count", "data_offset", "dir_offset", "dir_length"), fields[3:8]))


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(params=TIERS, ids=lambda c: c.name)
def kind(request: pytest.FixtureRequest) -> type[Tier]:
    cls: type[Tier] = request.param
    return cls


def test_orphan_segment_deleted_on_open(kind: type[Tier], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None, merge_below=0)
    first = batch(20, "a", 1)
    tier.add(first)
    snapshot = tier.state()
    tier.add(batch(20, "b", 2))        # crash before the snapshot naming this segment is written
    orphan = tier.state()["segments"][-1]["name"]
    tier.close()
    (d / f"00000009.{kind.name}.tmp").write_bytes(b"half a segment")
    (d / "README").write_text("not a segment")
    assert segment_files(d) == sorted(["README", f"00000001.{kind.name}", orphan, f"00000009.{kind.name}.tmp"])

    with caplog.at_level(logging.WARNING, logger="memspace.storage.tiers"):
        tier = kind.open(d, snapshot, merge_below=0)
    assert segment_files(d) == [f"00000001.{kind.name}", "README"]
    deleted = [r.getMessage() for r in caplog.records if "deleting" in r.getMessage()]
    assert len(deleted) == 2 and any(orphan in m for m in deleted) and any(".tmp" in m for m in deleted)
    assert list(tier.ids()) == [m.id for m in first]
    tier.add(batch(5, "c", 3))          # new names never collide with ones seen on disk
    assert tier.state()["segments"][-1]["name"] == f"00000010.{kind.name}"
    tier.close()


def test_open_without_manifest_deletes_all_segments(kind: type[Tier], tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None)
    tier.add(batch(10, "a", 1))
    tier.close()
    tier = kind.open(d, None)
    assert len(tier) == 0 and segment_files(d) == []


def test_keep_spares_a_fallback_snapshots_segments(kind: type[Tier], tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None, merge_below=0)
    tier.add(batch(10, "a", 1))
    older = tier.state()
    tier.discard("a0")
    tier.discard("a1")
    tier.discard("a2")
    tier.discard("a3")
    tier.discard("a4")
    tier.discard("a5")
    newer = tier.compact()
    tier.close()
    tier = kind.open(d, newer, keep=[older])
    assert segment_files(d) == sorted(s["name"] for s in older["segments"] + newer["segments"])
    assert tier.collect(keep=[older]) == [] and len(segment_files(d)) == 2
    tier.close()
    fallback = kind.open(d, older)     # the fallback still opens, with all ten
    assert len(fallback) == 10
    fallback.close()


def test_manifest_with_tombstones(kind: type[Tier], tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None, merge_below=0)
    first = batch(10, "m", 1)
    tier.add(first)
    tier.discard("m3")
    tier.discard("m7")
    tier.add([Memory("m3", "promoted then demoted again", first[3].embedding, 0.7, 1.0, 9.0, 4)])
    state = tier.state()
    seg1 = f"00000001.{kind.name}"
    assert state["tombstones"] == [[seg1, "m3"], [seg1, "m7"]]
    assert [s["count"] for s in state["segments"]] == [10, 1]
    tier.close()

    tier = kind.open(d, orjson.loads(orjson.dumps(state)), merge_below=0)
    assert len(tier) == 9 and "m7" not in tier
    assert list(tier.ids()) == [f"m{i}" for i in (0, 1, 2, 4, 5, 6, 8, 9, 3)]
    again = tier.get("m3")
    assert again is not None and again.content == "promoted then demoted again" and again.access_count == 4
    assert tier.state() == state
    tier.close()


def test_manifest_inconsistent_with_files_is_refused(kind: type[Tier], tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None)
    tier.add(batch(10, "m", 1))
    state = tier.state()
    tier.close()
    name = state["segments"][0]["name"]
    wrong_count = {**state, "segments": [{**state["segments"][0], "count": 11}]}
    with pytest.raises(StorageError, match=name) as err:
        kind.open(d, wrong_count)
    assert err.value.details["file"].endswith(name)
    with pytest.raises(StorageError, match="not in this segment"):
        kind.open(d, {**state, "tombstones": [[name, "zz"]]})
    with pytest.raises(StorageError, match="unknown segment"):
        kind.open(d, {**state, "tombstones": [[f"00000042.{kind.name}", "m1"]]})
    other = "cold" if kind.name == "warm" else "warm"
    with pytest.raises(StorageError, match="manifest is invalid"):
        kind.open(d, {**state, "tier": other})
    with pytest.raises(StorageError, match="manifest is invalid"):
        kind.open(d, {"tier": kind.name})
    assert kind.open(d, state).get("m1") is not None   # the refusals deleted nothing


def _damage(kind: type[Tier], path: Path, where: str) -> None:
    h = header(path)
    if where == "header":
        flip(path, 14)
    elif where == "directory":
        flip(path, h["dir_offset"] + h["dir_length"] // 2)
    elif where == "truncated":
        os.truncate(path, path.stat().st_size - 3)
    elif where == "missing":
        path.unlink()
    elif where == "embeddings":
        flip(path, h["data_offset"] + 100)
    elif where == "tiny":
        path.write_bytes(b"MSWARM01")


@pytest.mark.parametrize("where", ["header", "directory", "truncated", "missing", "tiny"])
def test_corrupt_segment_error_names_the_file(kind: type[Tier], where: str, tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None)
    tier.add(batch(50, "m", 1))
    state = tier.state()
    tier.close()
    path = d / state["segments"][0]["name"]
    _damage(kind, path, where)
    with pytest.raises(StorageError) as err:
        kind.open(d, state)
    assert str(path) in err.value.message and err.value.details["file"] == str(path)


def test_warm_embedding_damage_found_at_open(tmp_path: Path) -> None:
    tier = WarmTier.open(tmp_path, None)
    tier.add(batch(50, "m", 1))
    state = tier.state()
    tier.close()
    path = tmp_path / state["segments"][0]["name"]
    _damage(WarmTier, path, "embeddings")
    with pytest.raises(StorageError, match="embeddings checksum") as err:
        WarmTier.open(tmp_path, state)
    assert err.value.details["file"] == str(path)


def test_warm_record_damage_found_on_get(tmp_path: Path) -> None:
    tier = WarmTier.open(tmp_path, None)
    tier.add(batch(50, "m", 1))
    state = tier.state()
    tier.close()
    path = tmp_path / state["segments"][0]["name"]
    records_start = header(path)["data_offset"] + 50 * DIM * 2
    flip(path, records_start + 5)      # inside the first record, "m0"
    tier = WarmTier.open(tmp_path, state)
    with pytest.raises(StorageError, match="record 0") as err:
        tier.get("m0")
    assert err.value.details["file"] == str(path)
    m1 = tier.get("m1")
    assert m1 is not None and m1.content == "memory 1: ünïcode ✓"
    tier.close()


def test_cold_get_reads_only_its_block(tmp_path: Path) -> None:
    tier = ColdTier.open(tmp_path, None)
    tier.add(batch(100, "m", 1))       # blocks of 32 rows: m0..m31 in the first block
    state = tier.state()
    tier.close()
    path = tmp_path / state["segments"][0]["name"]
    flip(path, 64 + 10)                # inside block 0
    tier = ColdTier.open(tmp_path, state)   # block damage is not read at open
    with pytest.raises(StorageError, match="block 0") as err:
        tier.get("m5")
    assert err.value.details["file"] == str(path)
    for i in (32, 63, 99):
        m = tier.get(f"m{i}")
        assert m is not None and m.id == f"m{i}" and m.tier == "cold"
    with pytest.raises(StorageError):
        tier.search(unit_rows(1, DIM)[0], 5)   # a search must read the damaged block too
    tier.close()


def test_compaction_keeps_exactly_the_live_entries(kind: type[Tier], tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None, merge_below=0)
    a, b, c = batch(50, "a", 1), batch(50, "b", 2), batch(50, "c", 3)
    for part in (a, b, c):
        tier.add(part)
    gone = {f"b{i}" for i in range(0, 50, 2)} | {"b1", "b3"} | {f"c{i}" for i in range(10)}
    for mid in gone:
        tier.discard(mid)
    expected = [m for m in a + b + c if m.id not in gone]
    originals = {m.id: tier.get(m.id) for m in expected}

    state = tier.compact()
    names = [s["name"] for s in state["segments"]]
    assert names == [f"00000001.{kind.name}", f"00000004.{kind.name}", f"00000003.{kind.name}"]
    assert [s["count"] for s in state["segments"]] == [50, 23, 50]   # only b was below 50% live
    assert sorted(state["tombstones"]) == sorted([f"00000003.{kind.name}", f"c{i}"] for i in range(10))
    assert list(tier.ids()) == [m.id for m in expected]
    for m in expected:
        got = tier.get(m.id)
        assert _same(got, originals[m.id])
    assert all(tier.get(mid) is None for mid in gone)

    # The replaced file stays until collect(): the snapshot on disk may still name it.
    assert f"00000002.{kind.name}" in segment_files(d)
    assert tier.collect() == [f"00000002.{kind.name}"]
    assert segment_files(d) == sorted(names)
    tier.close()
    tier = kind.open(d, state, merge_below=0)
    assert list(tier.ids()) == [m.id for m in expected] and tier.state() == state
    tier.close()


def _same(x: Memory | None, y: Memory | None) -> bool:
    assert x is not None and y is not None
    return x.to_dict() == y.to_dict() and np.array_equal(x.embedding, y.embedding)


def test_old_manifest_still_opens_after_compaction_until_collect(kind: type[Tier], tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None, merge_below=0)
    tier.add(batch(40, "a", 1))
    before = tier.state()
    for i in range(30):
        tier.discard(f"a{i}")
    tier.add(batch(5, "b", 2))         # compaction on add rewrites the sparse first segment
    assert [s["count"] for s in tier.state()["segments"]] == [10, 5]
    tier.close()                       # "crash" before a snapshot with the new manifest
    old = kind.open(d, before)
    assert len(old) == 40 and old.get("a0") is not None
    old.close()


def test_fully_discarded_segment_is_dropped(kind: type[Tier], tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None, merge_below=0)
    tier.add(batch(10, "a", 1))
    tier.add(batch(10, "b", 2))
    for i in range(10):
        tier.discard(f"a{i}")
    state = tier.compact()
    assert state["segments"] == [{"name": f"00000002.{kind.name}", "count": 10,
                                  "bytes": (d / f"00000002.{kind.name}").stat().st_size}]
    assert state["tombstones"] == [] and tier.collect() == [f"00000001.{kind.name}"]
    tier.close()


def test_small_segments_are_merged_in_order(kind: type[Tier], tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None, merge_below=100)
    parts = [batch(30, p, i) for i, p in enumerate("abcde")]
    for part in parts:
        tier.add(part)
    state = tier.state()
    assert [s["count"] for s in state["segments"]] == [120, 30]   # merged until >= 100 rows
    assert list(tier.ids()) == [m.id for part in parts for m in part]
    tier.collect()
    assert segment_files(d) == sorted(s["name"] for s in state["segments"])
    tier.close()


def test_plan_compaction() -> None:
    assert plan_compaction([]) == []
    assert plan_compaction([(100, 100), (49, 100), (50, 100)], merge_below=0) == [(1, 2)]
    assert plan_compaction([(0, 10)], merge_below=0) == [(0, 1)]
    assert plan_compaction([(5, 5)], merge_below=10) == []                      # alone and not sparse
    assert plan_compaction([(5, 5), (5, 5), (50, 50), (5, 5)], merge_below=10) == [(0, 2)]
    assert plan_compaction([(8, 8), (8, 8), (8, 8)], merge_below=10, merge_max=16) == [(0, 2)]
    assert plan_compaction([(1, 100), (8, 8)], merge_below=10, merge_max=4) == [(0, 1)]


def test_add_validation_writes_nothing(kind: type[Tier], tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None)
    tier.add(batch(3, "a", 1))
    files = segment_files(d)
    twice = batch(2, "x", 2) + batch(1, "x", 3)
    with pytest.raises(InvalidArgument, match="'x0' appears twice"):
        tier.add(twice)
    with pytest.raises(InvalidArgument, match="dimension 24"):
        tier.add(memories(unit_rows(2, DIM + 1, 4), "y"))
    unserialisable = [Memory("z", "c", unit_rows(1, DIM)[0], 0.5, 1.0, 1.0, 0, metadata={"s": {1, 2}})]
    with pytest.raises(TypeError):
        tier.add(unserialisable)
    assert segment_files(d) == files and len(tier) == 3 and "z" not in tier
    with pytest.raises(InvalidArgument, match="query has dimension 7"):
        tier.search(np.ones(7, dtype=np.float32), 3)
    tier.close()


def _open_fds() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}


def _mapped(directory: Path) -> list[str]:
    return [line for line in Path("/proc/self/maps").read_text().splitlines() if str(directory) in line]


def test_close_releases_files_and_maps(kind: type[Tier], tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None, merge_below=0)
    for i in range(3):
        tier.add(batch(10, f"s{i}", i))
    assert len({f for f in _open_fds() if f.startswith(str(d))}) == 3
    if kind is WarmTier:
        assert len(_mapped(d)) >= 3
    tier.close()
    tier.close()                        # idempotent
    assert {f for f in _open_fds() if f.startswith(str(d))} == set()
    assert _mapped(d) == []


def test_state_is_json_and_names_the_tier(kind: type[Tier], tmp_path: Path) -> None:
    tier = kind.open(tmp_path, None)
    tier.add(batch(5, "a", 1))
    state: dict[str, Any] = tier.state()
    assert orjson.loads(orjson.dumps(state)) == state
    assert state["tier"] == kind.name and state["dimension"] == DIM and state["format"] == 1
    tier.close()


def test_failed_open_deletes_nothing_so_a_fallback_can_open(kind: type[Tier], tmp_path: Path) -> None:
    d = tmp_path / kind.name
    tier = kind.open(d, None, merge_below=0)
    tier.add(batch(20, "a", 1))
    older = tier.state()
    for i in range(15):
        tier.discard(f"a{i}")
    newer = tier.compact()             # rewrites segment 1 as segment 2
    tier.add(batch(5, "b", 2))
    newest = tier.state()
    tier.close()
    flip(d / newest["segments"][-1]["name"], 20)
    with pytest.raises(StorageError):
        kind.open(d, newest)
    assert len(segment_files(d)) == 3  # nothing deleted by the failed open
    fallback = kind.open(d, older)
    assert len(fallback) == 20 and segment_files(d) == [f"00000001.{kind.name}"]
    fallback.close()
    assert newer["segments"][0]["name"] == f"00000002.{kind.name}"


_CRASHING_CHILD = """
import os, signal, sys
import orjson
from memspace.storage.tiers import ColdTier, WarmTier
from memspace.testing.tiers import memories, unit_rows

kind, directory, snapshot, when = sys.argv[1:]
tier = {"warm": WarmTier, "cold": ColdTier}[kind].open(directory, None, merge_below=0)
tier.add(memories(unit_rows(50, 24, 1), "a"))
with open(snapshot, "wb") as f:     # what the space's snapshot would hold
    f.write(orjson.dumps(tier.state()))
    f.flush()
    os.fsync(f.fileno())
if when == "mid-write":             # die as the next segment's tmp file is about to be fsynced
    os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
tier.add(memories(unit_rows(50, 24, 2), "b"))
os.kill(os.getpid(), signal.SIGKILL)   # after add returned, before any snapshot names it
"""


@pytest.mark.parametrize("when", ["mid-write", "after-add"])
def test_sigkill_before_the_snapshot_leaves_the_snapshot_state(kind: type[Tier], when: str, tmp_path: Path) -> None:
    d, snap = tmp_path / kind.name, tmp_path / "snapshot.json"
    child = subprocess.run([sys.executable, "-c", _CRASHING_CHILD, kind.name, str(d), str(snap), when],
                           check=False, capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    leftover = f"00000002.{kind.name}" + (".tmp" if when == "mid-write" else "")
    assert segment_files(d) == sorted([f"00000001.{kind.name}", leftover])
    tier = kind.open(d, orjson.loads(snap.read_bytes()))
    assert list(tier.ids()) == [f"a{i}" for i in range(50)]
    assert segment_files(d) == [f"00000001.{kind.name}"]
    got = tier.get("a7")
    assert got is not None and np.allclose(got.embedding, unit_rows(50, DIM, 1)[7], atol=1e-3)
    tier.close()


def test_failed_compaction_leaves_a_consistent_tier(tmp_path: Path) -> None:
    tier = ColdTier.open(tmp_path, None, merge_below=0)
    tier.add(batch(64, "a", 1))        # two blocks of 32
    tier.add(batch(64, "c", 3))        # full: keeps a and b in separate compaction groups
    tier.add(batch(64, "b", 2))
    path = tmp_path / tier.state()["segments"][0]["name"]
    flip(path, 64 + 10)                # damage block 0 of the first segment
    for i in range(40):
        tier.discard(f"a{i}")
        tier.discard(f"b{i}")
    with pytest.raises(StorageError) as err:
        tier.compact()                 # b's segment is rewritten, then a's fails
    assert err.value.details["file"] == str(path)
    expected = [f"{p}{i}" for p, lo in (("a", 40), ("c", 0), ("b", 40)) for i in range(lo, 64)]
    assert list(tier.ids()) == expected and len(tier) == 24 + 64 + 24
    b50 = tier.get("b50")
    assert b50 is not None and b50.content == "memory 50: ünïcode ✓" and b50.tier == "cold"
    assert [s["count"] for s in tier.state()["segments"]] == [64, 64, 24]
    tier.close()
