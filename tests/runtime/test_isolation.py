"""One process per space: isolation, lazy activation, create/delete semantics, through real processes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest

from memspace.errors import InvalidSpaceId, MemoryNotFound, SpaceExists, SpaceNotFound

N_SPACES = 10
N_MEMORIES = 20


def test_ten_spaces_written_concurrently_see_only_their_own_data(shared_server):
    admin = shared_server.client()
    names = [f"iso-{i}" for i in range(N_SPACES)]
    for name in names:
        admin.create_space(name, dimension=32)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            with shared_server.client() as client:
                space = client.space(names[i])
                items = [{"id": f"m-{j}", "content": f"space {i} memory {j} " + "word " * (j % 5),
                          "tags": [f"owner-{i}"]} for j in range(N_MEMORIES)]
                space.remember_batch(items[:10])
                for item in items[10:]:
                    space.remember(**item)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(N_SPACES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    pids = set()
    for i, name in enumerate(names):
        space = admin.space(name)
        assert space.count() == N_MEMORIES
        for j in (0, 7, 19):
            m = space.get(f"m-{j}")
            assert m.content.startswith(f"space {i} memory {j} ")
            assert m.tags == (f"owner-{i}",)
        hits = space.recall(query="memory 3 word", k=N_MEMORIES)
        assert hits and all(h.tags == (f"owner-{i}",) for h in hits)
        # a cue written only into another space finds nothing foreign here
        other = (i + 1) % N_SPACES
        assert all(f"space {other} " not in (h.content or "") for h in space.recall(query=f"space {other}", k=50))
        status = admin.get_space(name)
        assert status["state"] == "READY" and status["pid"]
        pids.add(status["pid"])
        directory = shared_server.data_root / "spaces" / name
        assert (directory / "space.json").exists() and (directory / "wal").is_dir()
        cmdline = " ".join(psutil.Process(status["pid"]).cmdline())
        assert f"worker {name}" in cmdline     # readable process title
    assert len(pids) == N_SPACES               # one OS process per space


def test_same_memory_id_in_two_spaces_is_two_memories(shared_server):
    client = shared_server.client()
    for name in ("twin-a", "twin-b"):
        client.create_space(name, dimension=32)
    a, b = client.space("twin-a"), client.space("twin-b")
    a.remember(id="shared", content="alpha's secret")
    b.remember(id="shared", content="beta's secret")
    assert a.get("shared").content == "alpha's secret"
    assert b.get("shared").content == "beta's secret"
    b.forget("shared")
    assert a.get("shared").content == "alpha's secret"
    with pytest.raises(MemoryNotFound):
        b.get("shared")


def test_lazy_activation_creates_no_process_until_first_use(shared_server):
    client = shared_server.client()
    created = client.create_space("lazy-one", dimension=32)
    assert created["created"] is True
    status = client.get_space("lazy-one")
    assert status["state"] == "REGISTERED" and status["pid"] is None
    assert not (shared_server.data_root / "spaces" / "lazy-one").exists()
    assert client.space("lazy-one").count() == 0
    status = client.get_space("lazy-one")
    assert status["state"] == "READY" and psutil.pid_exists(status["pid"])


def test_create_is_idempotent_and_conflicts_are_errors(shared_server):
    client = shared_server.client()
    first = client.create_space("idem-space", dimension=32, settings={"dedup_threshold": 0.9})
    again = client.create_space("idem-space", dimension=32, settings={"dedup_threshold": 0.9})
    assert first["created"] is True and again["created"] is False
    with pytest.raises(SpaceExists, match="dimension"):
        client.create_space("idem-space", dimension=64, settings={"dedup_threshold": 0.9})
    with pytest.raises(InvalidSpaceId):
        client.create_space("Bad/Id")


def test_fifty_concurrent_creates_of_one_id_make_one_space(shared_server):
    def create(_: int) -> bool:
        with shared_server.client() as c:
            return c.create_space("popular", dimension=32)["created"]

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(create, range(50)))
    assert results.count(True) == 1 and results.count(False) == 49
    listed = [s["id"] for s in shared_server.client().list_spaces()]
    assert listed.count("popular") == 1


def test_unknown_space_is_not_found(shared_server):
    with pytest.raises(SpaceNotFound, match="does not exist"):
        shared_server.client().space("never-made").count()


def test_delete_removes_everything_and_recreate_starts_empty(shared_server):
    client = shared_server.client()
    client.create_space("doomed", dimension=32)
    space = client.space("doomed")
    rng = np.random.default_rng(1)
    for i in range(5):
        space.remember(content=f"doomed memory {i}", embedding=rng.standard_normal(32).astype(np.float32))
    pid = client.get_space("doomed")["pid"]
    receipt = client.delete_space("doomed")
    assert receipt["deleted"] is True and receipt["memories"] == 5
    assert receipt["files"] >= 2 and receipt["bytes"] > 0
    assert not (shared_server.data_root / "spaces" / "doomed").exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(SpaceNotFound):
        space.count()
    client.create_space("doomed", dimension=32)
    assert client.space("doomed").count() == 0


def test_default_space_serves_clients_that_name_none(shared_server):
    client = shared_server.client()
    r = client.default_space().remember(content="no space named")
    assert client.space("default").get(r.id).content == "no space named"
    assert client.status()["counters"]["fallbacks"] >= 1
