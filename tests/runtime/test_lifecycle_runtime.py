"""Hibernation, LRU limits, boot errors and repair, graceful shutdown: real processes."""

from __future__ import annotations

import psutil
import pytest

from memspace.errors import SpaceUnavailable
from memspace.storage.wal import RECORD_HEADER


def test_idle_space_hibernates_and_wakes_with_data_intact(make_server):
    server = make_server(MEMSPACE_IDLE_HIBERNATE_S="0.5")
    client = server.client()
    client.create_space("dozy", dimension=32)
    space = client.space("dozy")
    ids = [space.remember(content=f"remember me {i}").id for i in range(10)]
    pid = client.get_space("dozy")["pid"]
    status = server.wait_state(client, "dozy", "HIBERNATED")
    assert status["pid"] is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert (server.data_root / "spaces" / "dozy" / "snapshots").iterdir()   # drained with a checkpoint
    assert [space.get(i).content for i in ids] == [f"remember me {i}" for i in range(10)]
    assert client.get_space("dozy")["state"] == "READY"


def test_explicit_hibernate_and_drain(make_server):
    server = make_server()
    client = server.client()
    client.create_space("ops", dimension=32)
    space = client.space("ops")
    space.remember(content="kept across drains")
    assert client.hibernate("ops")["state"] == "HIBERNATED"
    assert space.count() == 1
    assert client.drain("ops")["state"] == "STOPPED"
    assert space.count() == 1


def test_max_active_workers_hibernates_the_least_recently_used(make_server):
    server = make_server(MEMSPACE_MAX_ACTIVE_WORKERS="2")
    client = server.client()
    for name in ("lru-a", "lru-b", "lru-c"):
        client.create_space(name, dimension=32)
    client.space("lru-a").remember(content="a")
    client.space("lru-b").remember(content="b")
    client.space("lru-c").remember(content="c")       # a is least recently used
    assert server.wait_state(client, "lru-a", "HIBERNATED")["pid"] is None
    assert client.status()["active_workers"] <= 2
    assert client.space("lru-a").get(client.space("lru-a").list().items[0].id).content == "a"


def _corrupt_middle_record(space_dir):
    segments = sorted((space_dir / "wal").glob("*.wal"))
    data = bytearray(segments[-1].read_bytes())
    # flip a payload byte of the second record: damage followed by valid records
    first_len = int.from_bytes(data[16 + 16:16 + 20], "little")
    second = 16 + RECORD_HEADER.size + first_len
    data[second + RECORD_HEADER.size + 2] ^= 0xFF
    segments[-1].write_bytes(bytes(data))


def test_corrupt_wal_fails_the_space_and_repair_recovers_it(make_server):
    server = make_server("data")
    client = server.client()
    client.create_space("broken", dimension=32)
    space = client.space("broken")
    first = space.remember(content="before the damage")
    space.remember(content="damaged record")
    space.remember(content="after the damage")
    server.kill_tree()             # no drain, no checkpoint: the three records live only in the WAL
    _corrupt_middle_record(server.data_root / "spaces" / "broken")
    server = make_server("data")
    client = server.client()
    space = client.space("broken")
    with pytest.raises(SpaceUnavailable) as err:
        space.count()
    assert "offset" in str(err.value) and "repair" in str(err.value)
    status = client.get_space("broken")
    assert status["state"] == "FAILED" and "WAL corrupt" in status["last_error"]
    with pytest.raises(SpaceUnavailable):   # stays FAILED: no restart loop
        space.count()
    assert client.get_space("broken")["restarts"] == 0
    repaired = client.repair("broken")
    assert repaired["repair"]["changed"] is True and repaired["space"]["state"] == "READY"
    assert [m.content for m in space.list().items] == ["before the damage"]
    assert space.get(first.id).content == "before the damage"
    backups = list((server.data_root / "spaces" / "broken" / "wal").glob("repair-*"))
    assert backups and any(backups[0].iterdir())


def test_graceful_shutdown_leaves_no_process_behind(make_server):
    server = make_server()
    client = server.client()
    for i in range(4):
        client.create_space(f"bye-{i}", dimension=32)
        client.space(f"bye-{i}").remember(content="x")
    tree = server.record_pids()
    assert len(tree) >= 6                          # serve, fork server, 4 workers
    assert server.stop() == 0                      # raises if anything survived
    assert not server.survivors(timeout=1)


def test_change_feed_keeps_its_events_across_hibernation(shared_server):
    """A subscriber that missed a wake-and-sleep still gets those events: the new worker
    refills its feed from the WAL records the checkpoint kept, without a gap."""
    client = shared_server.client()
    client.create_space("feedkeep", dimension=32)
    space = client.space("feedkeep")
    first = [space.remember(content=f"before sleep {i}").id for i in range(3)]
    assert client.hibernate("feedkeep")["state"] == "HIBERNATED"
    later = space.remember(content="after waking").id
    assert client.hibernate("feedkeep")["state"] == "HIBERNATED"
    space.count()   # wake it once more: a third worker
    reply = client.call("feedkeep", "events", {"after": 0, "limit": 100})
    assert reply["gap"] is False
    ids = [m["id"] for e in reply["events"] if e["type"] == "remember" for m in e["memories"]]
    assert ids == [*first, later]
    assert [e["seq"] for e in reply["events"]] == sorted(e["seq"] for e in reply["events"])
