"""Damaged WAL files under a space: a torn tail is cut (copied aside, logged with its offset) and
every complete record is kept; damage in the middle refuses to open, naming file and offset,
until ``repair_space`` cuts back to the last good record after keeping a copy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from memspace.errors import MemoryNotFound, WalCorruption
from memspace.storage.repair import repair_space, scan_space
from memspace.storage.space import Space

from .conftest import Opener, basis, space_state


def newest_segment(opener: Opener) -> Path:
    return max((opener.path / "wal").glob("*.wal"))


def write_five(opener: Opener, checkpoint_after: int | None = None) -> tuple[list[int], dict[str, Any]]:
    """Five memories m0..m4, one record each; returns the segment size after each record
    (so record i spans ends[i-1]..ends[i]) and the state after the first ``checkpoint_after``."""
    ends: list[int] = []
    early: dict[str, Any] = {}
    with opener() as s:
        for i in range(5):
            s.remember(embedding=basis(i), id=f"m{i}", content=f"c{i}", tags=[f"t{i}"])
            if checkpoint_after == i + 1:
                s.checkpoint()
                early = space_state(s)
            ends.append(newest_segment(opener).stat().st_size)
    return ends, early


def present(s: Space) -> list[str]:
    return [m.id for m in s.list().items]


def test_garbage_after_the_last_record_is_a_torn_tail(opener: Opener, caplog: pytest.LogCaptureFixture) -> None:
    ends, _ = write_five(opener)
    with opener() as s:
        state = space_state(s)
    seg = newest_segment(opener)
    with seg.open("ab") as f:
        f.write(b"MSRC\x01\x01\x00\x00" + b"\xff" * 30)            # a record header cut short
    caplog.set_level(logging.WARNING, logger="memspace.storage.wal")
    with opener() as s:
        assert space_state(s) == state
        s.remember(embedding=basis(6), id="after")
    assert f"offset {ends[-1]}" in caplog.text and seg.name in caplog.text
    assert seg.stat().st_size > ends[-1]                             # appended to after the cut
    aside = seg.with_name(f"{seg.name}.torn-{ends[-1]}")
    assert aside.read_bytes() == b"MSRC\x01\x01\x00\x00" + b"\xff" * 30
    with opener() as s:
        assert present(s) == ["after", "m0", "m1", "m2", "m3", "m4"]


def test_torn_tail_of_the_newest_of_several_segments(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    opener = Opener(tmp_path / "space", overrides={"wal.segment_mb": 0.01})     # ~10 KB segments
    with opener() as s:
        for i in range(8):
            s.remember(embedding=basis(i), id=f"m{i}", content=str(i) * 3000)
        state = space_state(s)
    segments = sorted((opener.path / "wal").glob("*.wal"))
    assert len(segments) >= 3
    older = [p.read_bytes() for p in segments[:-1]]
    size = segments[-1].stat().st_size
    with segments[-1].open("ab") as f:
        f.write(b"\x00" * 100)
    caplog.set_level(logging.WARNING, logger="memspace.storage.wal")
    with opener() as s:
        assert space_state(s) == state
    assert f"{segments[-1].name} at offset {size}" in caplog.text
    assert [p.read_bytes() for p in segments[:-1]] == older and segments[-1].stat().st_size == size


def test_a_cut_last_record_is_dropped_and_the_rest_kept(opener: Opener,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    ends, _ = write_five(opener)
    seg = newest_segment(opener)
    original = seg.read_bytes()
    with seg.open("r+b") as f:
        f.truncate(ends[-1] - 7)                                      # the last record, torn mid-payload
    caplog.set_level(logging.WARNING, logger="memspace.storage.wal")
    with opener() as s:
        assert present(s) == ["m0", "m1", "m2", "m3"]
        m3 = s.get("m3")
        assert (m3.content, m3.tags) == ("c3", ("t3",))
        with pytest.raises(MemoryNotFound):
            s.get("m4")
        assert s.stats().wal_last_seq == 4
    assert f"offset {ends[-2]}" in caplog.text
    assert seg.with_name(f"{seg.name}.torn-{ends[-2]}").read_bytes() == original[ends[-2]:ends[-1] - 7]


def test_mid_file_corruption_refuses_to_open_then_repair_recovers(opener: Opener) -> None:
    ends, _ = write_five(opener)
    seg = newest_segment(opener)
    data = bytearray(seg.read_bytes())
    data[ends[1] + 30] ^= 0xFF                                        # inside record 3's payload
    seg.write_bytes(bytes(data))
    damaged = seg.read_bytes()
    for _ in range(2):                                                # refuses every time, lock released
        with pytest.raises(WalCorruption) as info:
            opener()
        err = info.value
        assert (err.path, err.offset) == (str(seg), ends[1])
        assert str(seg) in err.message and f"offset {ends[1]}" in err.message
        assert err.code == "SPACE_UNAVAILABLE" and err.details["offset"] == ends[1]
    assert seg.read_bytes() == damaged                                # nothing modified by a failed open
    scan = scan_space(opener.path)
    assert scan["problem"]["offset"] == ends[1] and scan["problem"]["torn"] is False

    report = repair_space(opener.path)
    assert report["changed"] is True and report["offset"] == ends[1] and report["records_kept"] == 2
    backup = Path(report["backup_dir"])
    assert backup.is_dir() and (backup / seg.name).read_bytes() == damaged
    assert seg.stat().st_size == ends[1]
    with opener() as s:
        assert present(s) == ["m0", "m1"]
        assert s.get("m1").content == "c1"
        s.remember(embedding=basis(7), id="new")                      # seqs continue after the cut
    with opener() as s:
        assert present(s) == ["m0", "m1", "new"]
    again = repair_space(opener.path)
    assert again["changed"] is False                                  # idempotent


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_failed_opens_release_their_files(tmp_path: Path) -> None:
    opener = Opener(tmp_path / "space", overrides={"tiers.hot_capacity": 1})
    with opener() as s:
        for i in range(4):
            s.remember(embedding=basis(i), id=f"m{i}")
        s.checkpoint()                                              # warm and cold segments to open
        s.remember(embedding=basis(5), id="after")
        assert s.count("warm") + s.count("cold") == 3
    seg = newest_segment(opener)
    data = bytearray(seg.read_bytes())
    data[40] ^= 0xFF                                                # the first record's payload
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruption):
        opener()
    before = len(list(Path("/proc/self/fd").iterdir()))
    for _ in range(5):
        with pytest.raises(WalCorruption):
            opener()
    assert len(list(Path("/proc/self/fd").iterdir())) == before


def test_repair_keeps_the_snapshot_and_the_records_before_the_damage(opener: Opener) -> None:
    ends, early = write_five(opener, checkpoint_after=2)
    seg = newest_segment(opener)
    data = bytearray(seg.read_bytes())
    data[ends[2] + 26] ^= 0x01                                        # record 4 of 5 (after the snapshot)
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as info:
        opener()
    assert info.value.offset == ends[2]
    report = repair_space(opener.path)
    assert report["changed"] is True and report["last_seq_kept"] == 3
    with opener() as s:
        assert present(s) == ["m0", "m1", "m2"]
        assert s.stats().checkpoint_lsn == 2 and s.stats().recovered_records == 1
        now = space_state(s)["memories"]
        assert {k: now[k] for k in ("m0", "m1")} == early["memories"]



def test_a_damaged_newest_snapshot_falls_back_to_the_previous_one(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The previous snapshot stays usable, tier files included, across reopens: its warm
    segment was replaced by compaction at the newest checkpoint but must not be deleted
    while that snapshot is kept as the fallback."""
    opener = Opener(tmp_path / "space", overrides={"tiers.hot_capacity": 2})
    with opener() as s:
        for i in range(4):
            opener.clock.advance(1)
            s.remember(embedding=basis(i), id=f"m{i}", content=f"c{i}")
        s.checkpoint()                                          # A: m0, m1 warm
        assert (s.get("m0").tier, s.get("m1").tier) == ("warm", "warm")
        opener.clock.advance(1)
        s.recall(embedding=basis(0), tiers=["warm"], k=1)       # promotes m0, m1: the warm
        s.recall(embedding=basis(1), tiers=["warm"], k=1)       # segment of A has nothing live
        s.checkpoint()                                          # B: m2, m3 warm, in a new segment
        s.remember(embedding=basis(5), id="late")
        state = space_state(s)
    with opener() as s:                                         # a clean reopen from B
        assert space_state(s) == state
    snaps = sorted((opener.path / "snapshots").glob("*.snap"))
    assert len(snaps) == 2
    data = bytearray(snaps[-1].read_bytes())
    data[-5] ^= 0xFF                                            # inside its meta (CRC-checked)
    snaps[-1].write_bytes(bytes(data))
    caplog.set_level(logging.WARNING)
    with opener() as s:                                         # A + the WAL after it
        assert s.stats().checkpoint_lsn == int(snaps[0].stem)
        assert "unusable" in caplog.text
        assert space_state(s)["memories"].keys() == state["memories"].keys()
        assert s.get("m2").content == "c2" and s.get("late").id == "late"
