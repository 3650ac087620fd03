"""The registry: atomic, idempotent creates under thread and process concurrency; tombstones."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from memspace.errors import (
    Internal,
    InvalidArgument,
    InvalidSpaceId,
    SpaceExists,
    SpaceNotFound,
    SpaceUnavailable,
)
from memspace.supervisor.lifecycle import State
from memspace.supervisor.registry import Registry, SpaceRecord

SETTINGS = {"decay": "exponential", "dedup_threshold": 0.95, "embedder": "hashing"}


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def reg(tmp_path):
    registry = Registry(tmp_path / "registry.sqlite", clock=FakeClock())
    yield registry
    registry.close()


def test_schema_and_wal_mode(tmp_path, reg):
    db = sqlite3.connect(tmp_path / "registry.sqlite")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in db.execute("PRAGMA table_info(spaces)")]
        assert columns == ["id", "state", "created_at", "dimension", "settings", "key_hashes",
                           "generation", "tombstoned_at", "updated_at"]
    finally:
        db.close()


def test_create_then_idempotent_create(reg):
    record, created = reg.create("alpha", dimension=8, settings=SETTINGS)
    assert created is True
    assert record == SpaceRecord(id="alpha", state="REGISTERED", created_at=1000.0, dimension=8,
                                 settings=SETTINGS, generation=0, tombstoned_at=None,
                                 key_hashes=(), updated_at=1000.0)
    again, created_again = reg.create("alpha", dimension=8, settings=dict(reversed(SETTINGS.items())))
    assert created_again is False and again == record
    assert reg.get("alpha") == record and reg.list() == [record]


def test_conflicting_create_names_what_differs(reg):
    reg.create("alpha", dimension=8, settings=SETTINGS)
    with pytest.raises(SpaceExists) as exc:
        reg.create("alpha", dimension=16, settings={**SETTINGS, "decay": "none"})
    message = exc.value.message
    assert "dimension is 8 (requested 16)" in message
    assert "decay is 'exponential' (requested 'none')" in message
    assert exc.value.details == {"space": "alpha", "differs": ["dimension", "decay"]}
    with pytest.raises(SpaceExists, match="embedder is 'hashing' \\(requested '<unset>'\\)"):
        reg.create("alpha", dimension=8, settings={"decay": "exponential", "dedup_threshold": 0.95})
    assert reg.get("alpha").dimension == 8  # unchanged


def test_create_validates_its_arguments(reg):
    with pytest.raises(InvalidSpaceId, match="'Alpha'"):
        reg.create("Alpha", dimension=8, settings={})
    with pytest.raises(InvalidArgument, match="dimension"):
        reg.create("alpha", dimension=0, settings={})
    with pytest.raises(InvalidArgument, match="JSON-serialisable"):
        reg.create("alpha", dimension=8, settings={"x": object()})
    assert reg.list(include_tombstoned=True) == []


def test_tombstone_blocks_create_until_removed(reg):
    clock = reg._clock
    reg.create("alpha", dimension=8, settings=SETTINGS)
    reg.bump_generation("alpha")
    clock.now = 2000.0
    tomb = reg.tombstone("alpha")
    assert tomb.tombstoned_at == 2000.0 and tomb.state == "DELETING" and tomb.tombstoned
    clock.now = 2500.0
    assert reg.tombstone("alpha").tombstoned_at == 2000.0  # idempotent: keeps the first time
    assert reg.list() == [] and [r.id for r in reg.list(include_tombstoned=True)] == ["alpha"]
    with pytest.raises(SpaceUnavailable, match="being deleted"):
        reg.create("alpha", dimension=8, settings=SETTINGS)
    reg.remove("alpha")
    reg.remove("alpha")  # idempotent for a retried deletion
    assert reg.get("alpha") is None
    clock.now = 3000.0
    fresh, created = reg.create("alpha", dimension=4, settings={})
    assert created and fresh.generation == 0 and fresh.created_at == 3000.0 and fresh.dimension == 4


def test_remove_refuses_a_live_space(reg):
    reg.create("alpha", dimension=8, settings=SETTINGS)
    with pytest.raises(Internal, match="must be tombstoned"):
        reg.remove("alpha")
    assert reg.get("alpha") is not None


def test_state_generation_and_key_hashes(reg):
    reg.create("alpha", dimension=8, settings=SETTINGS)
    reg.set_state("alpha", State.READY)
    reg.set_state("alpha", "HIBERNATED")
    assert [reg.bump_generation("alpha") for _ in range(3)] == [1, 2, 3]
    reg.set_key_hashes("alpha", ["h2", "h1", "h2"])
    record = reg.get("alpha")
    assert (record.state, record.generation, record.key_hashes) == ("HIBERNATED", 3, ("h1", "h2"))
    with pytest.raises(InvalidArgument, match="unknown lifecycle state"):
        reg.set_state("alpha", "ASLEEP")
    for call in (lambda: reg.set_state("nope", State.READY), lambda: reg.bump_generation("nope"),
                 lambda: reg.tombstone("nope"), lambda: reg.set_key_hashes("nope", [])):
        with pytest.raises(SpaceNotFound, match="'nope' is not registered"):
            call()


def test_persists_across_reopen(tmp_path):
    path = tmp_path / "registry.sqlite"
    with Registry(path, clock=FakeClock(5.0)) as first:
        first.create("alpha", dimension=8, settings=SETTINGS)
        first.create("beta", dimension=3, settings={})
        first.set_state("beta", State.FAILED)
        first.bump_generation("alpha")
        first.tombstone("beta")
    with Registry(path) as second:
        alpha, beta = second.list(include_tombstoned=True)
        assert (alpha.id, alpha.generation, alpha.settings, alpha.created_at) == ("alpha", 1, SETTINGS, 5.0)
        assert (beta.id, beta.state, beta.tombstoned_at) == ("beta", "DELETING", 5.0)


def test_closed_registry_refuses_calls(tmp_path):
    registry = Registry(tmp_path / "r.sqlite")
    registry.close()
    registry.close()
    with pytest.raises(Internal, match="closed"):
        registry.list()


def test_fifty_threads_create_one_space(reg):
    barrier = threading.Barrier(50)

    def create(_: int) -> tuple[SpaceRecord, bool]:
        barrier.wait(timeout=30)
        return reg.create("shared", dimension=8, settings=SETTINGS)

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(create, range(50)))
    assert sum(created for _, created in results) == 1
    assert all(record == reg.get("shared") for record, _ in results)
    assert len(reg.list()) == 1


def _create_in_child(path: str, threads: int, open_barrier, barrier, results) -> None:
    # every process opens the fresh file at the same moment: the WAL-mode switch races too
    open_barrier.wait(timeout=30)
    registry = None
    try:
        registry = Registry(path)

        def create(_: int) -> bool:
            barrier.wait(timeout=30)
            return registry.create("shared", dimension=8, settings=SETTINGS)[1]

        with ThreadPoolExecutor(max_workers=threads) as pool:
            results.put(list(pool.map(create, range(threads))))
    except BaseException as e:  # noqa: BLE001 - report, and release the other processes at once
        barrier.abort()
        results.put(repr(e))
    finally:
        if registry is not None:
            registry.close()


def test_fifty_creates_from_four_processes(tmp_path):
    path = str(tmp_path / "registry.sqlite")  # no connection open in the parent before forking
    ctx = multiprocessing.get_context("fork")
    counts = [13, 13, 12, 12]
    open_barrier, barrier, results = ctx.Barrier(len(counts)), ctx.Barrier(sum(counts)), ctx.Queue()
    procs = [ctx.Process(target=_create_in_child, args=(path, n, open_barrier, barrier, results))
             for n in counts]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert all(isinstance(o, list) for o in outcomes), outcomes
    flat = [created for outcome in outcomes for created in outcome]
    assert len(flat) == 50 and flat.count(True) == 1
    with Registry(path) as registry:
        assert [r.id for r in registry.list(include_tombstoned=True)] == ["shared"]


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "registry.sqlite"
    Registry(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(Internal, match="schema version 99"):
        Registry(path)
