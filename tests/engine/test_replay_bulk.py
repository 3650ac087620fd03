"""Engine.replay (bulk) against record-by-record ``apply(decode(...))``: the same state, results,
hooks and errors, down to the hot tier's private indexes and link-dict order."""

from __future__ import annotations

import gc
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from memspace.engine import Engine, MemoryTier, decode, encode, replay
from memspace.engine.model import Link, Memory
from memspace.engine.records import RecordFormatError, RecordType, Remember, StoreEntry
from memspace.errors import MemspaceError

from .conftest import DIM, Driver, basis, make_engine
from .test_replay import ops, same_internals, scenario, state


class Logged(NamedTuple):
    seq: int
    type: int
    payload: bytes


def logged(recs: list[Any]) -> list[Logged]:
    return [Logged(i, *encode(r)) for i, r in enumerate(recs, 1)]


def one_by_one(e: Engine, log: list[Logged]) -> tuple[list[tuple[str, Any]], list[tuple[int, Any]]]:
    """What recovery did before bulk replay: decode, apply, hooks, per record."""
    results, seen = [], []
    for rec in log:
        decoded = decode(rec.type, rec.payload)
        result = e.apply(decoded)
        seen.append((rec.seq, decoded))
        if decoded.request_id is not None:
            results.append((decoded.request_id, result))
    return results, seen


def bulk(e: Engine, log: list[Logged]) -> tuple[list[tuple[str, Any]], list[tuple[int, Any]]]:
    results: list[tuple[str, Any]] = []
    seen: list[tuple[int, Any]] = []
    assert e.replay(log, on_result=lambda rid, r: results.append((rid, replay.results_of(r))),
                    on_record=lambda seq, r: seen.append((seq, r))) == len(log)
    return results, seen


def hot_internals(e: Engine) -> dict[str, Any]:
    """Everything the hot tier holds, including the indexes and each memory's link order."""
    hot = e._hot
    n = len(hot)
    graph = hot.graph
    graph.check()
    return {
        "ids": list(hot.ids), "row": dict(hot.row), "content": list(hot.content), "tags": list(hot.tags),
        "metadata": list(hot.metadata), "links": [hot.links_of(i) for i in hot.ids],
        "slots": [graph.slot[i] == s for i, s in zip(hot.ids, hot.slots.tolist())],
        "tag_rows": {t: sorted(rows) for t, rows in hot.tag_rows.items()},
        "link_ids": sorted(graph.slot),     # hot ids and the targets of their links, nothing else
        "link_count": hot.link_count, "changed": None if hot.changed is None else list(hot.changed),
        "arrays": [a.tobytes() for a in (hot.embeddings, hot.confidence, hot.created_at, hot.last_access,
                                         hot.access_count)],
        "capacity_ok": hot._emb.shape[0] >= n,
        "warm": sorted(e.warm.ids()) if e.warm is not None else None,
        "cold": sorted(e.cold.ids()) if e.cold is not None else None,
    }


def assert_same(a: Engine, b: Engine) -> None:
    assert hot_internals(a) == hot_internals(b)
    same_internals(a, b)
    assert state(a) == state(b)


def both(log: list[Logged], make: Any = make_engine) -> tuple[Engine, int]:
    """Replay ``log`` both ways and compare; returns the bulk engine and how many records it
    left to ``apply`` (the general path)."""
    a, b = make(), make()
    general = 0
    apply = b.apply

    def counting(rec: Any) -> Any:
        nonlocal general
        general += 1
        return apply(rec)

    b.apply = counting  # type: ignore[method-assign]
    assert one_by_one(a, log) == bulk(b, log)
    assert_same(a, b)
    return b, general


def test_scenario_replays_identically_with_results_and_hooks() -> None:
    drv = Driver(make_engine())
    scenario(drv)
    log = logged(drv.records)
    b, general = both(log)
    assert_same(drv.engine, b)
    assert 0 < general < len(log)
    results, seen = bulk(make_engine(), log)
    assert [rid for rid, _ in results] == ["r1"]
    assert [seq for seq, _ in seen] == list(range(1, len(log) + 1))
    assert [r for _, r in seen] == drv.records


def near(rng: np.random.Generator, n: int) -> list[list[float]]:
    """Unit vectors around one direction: cosines mostly between 0.5 and 0.95."""
    v = np.asarray(basis(0)) + rng.normal(0.0, 0.35, (n, DIM))
    return [list(x) for x in v / np.linalg.norm(v, axis=1, keepdims=True)]


def test_stores_with_backlinks_within_and_across_records() -> None:
    """A batch whose later items auto-link to earlier ones, then singles linking to both."""
    rng = np.random.default_rng(7)
    drv = Driver(make_engine(link_threshold=0.5, dedup_threshold=0.99))
    drv.remember(*({"embedding": v, "tags": ["t", f"t{i % 2}"]} for i, v in enumerate(near(rng, 6))),
                 request_id="batch")
    for i, v in enumerate(near(rng, 10)):
        drv.one(embedding=v, content=f"c{i}", metadata={"i": i})
    e = drv.engine
    assert e.count() == 16 and e.stats().links > 40  # auto-links both ways, within and across records
    b, general = both(logged(drv.records))
    assert general == 0  # all in bulk
    assert_same(e, b)


def test_runs_are_flushed_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "RUN_LIMIT", 3)
    rng = np.random.default_rng(8)
    drv = Driver(make_engine(link_threshold=0.5, dedup_threshold=0.99))
    for v in near(rng, 10):
        drv.one(embedding=v)
    drv.forget("m2")
    drv.remember(*({"embedding": v, "tags": ["late"]} for v in near(rng, 4)))
    for v in near(rng, 4):
        drv.one(embedding=v, tags=["later"])
    assert drv.engine.stats().links > 40
    assert both(logged(drv.records))[1] == 1  # only the forget


def _store(seq: int, *entries: StoreEntry, rid: str | None = None) -> Logged:
    kind, payload = encode(Remember(entries, rid))
    assert kind == RecordType.STORE
    return Logged(seq, kind, payload)


def _entry(memory_id: str, **over: Any) -> StoreEntry:
    fields: dict[str, Any] = dict(content="c", embedding=np.ones(DIM, np.float32), confidence=0.5, created_at=5.0,
                                  tags=("a",), metadata={"k": 1}, links=(), backlinks=())
    fields.update(over)
    return StoreEntry(memory_id, **fields)


def test_backlink_into_a_warm_memory_promotes_it_like_apply() -> None:
    def make() -> Engine:
        warm = MemoryTier("warm")
        warm.add([Memory("w1", "warm one", np.asarray(basis(3), np.float32), 0.5, 10.0, 10.0, 2,
                         links=(Link("gone", 0.4),))])
        return make_engine(engine_kwargs={"warm": warm})

    log = [_store(1, _entry("n1", embedding=np.asarray(basis(0), np.float32), content=None, tags=(), metadata={},
                            backlinks=(("w1", 0.8), ("nowhere", 0.7))))]
    b, general = both(log, make)
    assert general == 1
    assert b.tier_of("w1") == "hot" and [lk.target for lk in b.get("w1").links] == ["n1"]


def test_a_store_of_an_id_in_a_lower_tier_is_left_to_apply() -> None:
    def make() -> Engine:
        warm = MemoryTier("warm")
        warm.add([Memory("w1", "warm one", np.asarray(basis(3), np.float32), 0.5, 10.0, 10.0, 2)])
        return make_engine(engine_kwargs={"warm": warm})

    log = [_store(1, _entry("w1")), _store(2, _entry("n2"))]
    b, general = both(log, make)
    assert general == 1
    assert b.tier_of("w1") == "hot" and b.count() == 2 and b.get("w1").access_count == 2


def test_a_store_under_an_existing_id_is_left_to_apply() -> None:
    drv = Driver(make_engine())
    drv.one(id="x", embedding=basis(0), content="first")
    drv.forget("x")
    drv.one(id="x", embedding=basis(1), content="again")          # store again after forget
    log = logged(drv.records)
    # and a replayed store of an id that is already there (a record that no longer fits)
    log.append(Logged(len(log) + 1, *encode(drv.records[-1])))
    assert both(log)[1] == 2  # the forget and the store of an existing id


@pytest.mark.parametrize("odd, general", [
    ({"links": (Link("p0", 0.5, "x"), Link("p0", 0.7, "y"))}, 0),      # the same target twice: the last wins
    ({"backlinks": (("p1", 0.9),), "links": (Link("p1", 0.2, "z"),)}, 0),
    ({"backlinks": (("p1", 0.9), ("p0", 0.2), ("p1", 0.4))}, 0),        # a neighbour twice: the last wins
    ({"links": (Link("ghost", 0.5, "x"),)}, 0),    # a link to an id that does not exist
    ({"links": (Link("q1", 0.5, "x"),)}, 0),       # ... to an earlier entry of the record
    ({"links": (Link("q2", 0.5, "x"),)}, 1),       # ... to itself
    ({"links": (Link("q3", 0.5, "x"),)}, 2),       # ... stored later in the run: both records go to apply
    ({"links": (Link("p0", 1, "x"),)}, 0),         # an integer weight
    ({"backlinks": (("q1", 0.9),)}, 0),            # a backlink into an earlier entry
    ({"backlinks": (("q2", 0.9),)}, 1),            # ... into itself
    ({"backlinks": (("q3", 0.9),)}, 1),            # ... into a memory stored later
    ({"content": None, "tags": (), "metadata": {}}, 0),
])
def test_unusual_but_decodable_values_give_the_same_state(odd: dict[str, Any], general: int) -> None:
    drv = Driver(make_engine())
    drv.one(id="p0", embedding=basis(5))
    drv.one(id="p1", embedding=basis(6))
    log = logged(drv.records)
    log.append(_store(3, _entry("q1"), _entry("q2", **odd), rid="odd"))
    log.append(_store(4, _entry("q3", backlinks=(("q1", 0.6),)), rid="x"))
    assert both(log)[1] == general


def test_a_link_to_a_later_entry_of_the_same_record_is_left_to_apply() -> None:
    drv = Driver(make_engine())
    drv.one(id="p0", embedding=basis(5))
    log = logged(drv.records)
    log.append(_store(2, _entry("q1", links=(Link("q2", 0.5, "x"),)), _entry("q2", backlinks=(("q1", 0.6),))))
    assert both(log)[1] == 1


def test_records_in_the_remember_layout_take_the_general_path() -> None:
    """What was logged before the STORE layout existed replays exactly, one record at a time."""
    drv = Driver(make_engine(link_threshold=0.5, dedup_threshold=0.99))
    for v in near(np.random.default_rng(3), 6):
        drv.one(embedding=v, tags=["t"])
    log = []
    for seq, rec in enumerate(drv.records, 1):
        e = rec.entries[0]
        meta = orjson.dumps({"rid": rec.request_id, "dim": DIM, "entries": [{
            "op": "store", "id": e.id, "content": e.content, "confidence": e.confidence,
            "created_at": e.created_at, "tags": e.tags, "metadata": e.metadata,
            "links": [[lk.target, lk.weight, lk.kind] for lk in e.links], "backlinks": e.backlinks}]})
        log.append(Logged(seq, RecordType.REMEMBER,
                          struct.pack("<I", len(meta)) + meta + np.asarray(e.embedding, "<f4").tobytes()))
    b, general = both(log)
    assert general == 6
    assert_same(drv.engine, b)


def test_a_store_of_an_id_linked_to_earlier_is_left_to_apply() -> None:
    """A link to an id before that id is stored (in an earlier record): the store's backlinks
    could set the same pair again, so apply decides, for the linking record too."""
    drv = Driver(make_engine())
    drv.one(id="p0", embedding=basis(5))
    log = logged(drv.records)
    log.append(_store(2, _entry("a", links=(Link("b", 0.5, "x"),)), _entry("b", backlinks=(("a", 0.8), ("p0", 0.7)))))
    log.append(_store(3, _entry("c", links=(Link("d", 0.5, "x"),))))
    log.append(_store(4, _entry("d", backlinks=(("c", 0.6),))))
    b, general = both(log)
    assert general == 3
    assert b.get("a").links == (Link("b", 0.8, "similar"),) and b.get("c").links == (Link("d", 0.6, "similar"),)


def test_a_bad_payload_raises_like_decode_with_everything_before_it_applied() -> None:
    drv = Driver(make_engine(link_threshold=0.5, dedup_threshold=0.99))
    for v in near(np.random.default_rng(9), 5):
        drv.one(embedding=v)
    good = logged(drv.records)
    _, payload = encode(Remember((_entry("z"),)))
    bad = Logged(6, RecordType.STORE, payload + bytes(4 * DIM))  # one row too many
    with pytest.raises(RecordFormatError) as expected:
        decode(bad.type, bad.payload)
    e = make_engine()
    with pytest.raises(RecordFormatError) as got:
        e.replay([*good, bad, *logged(drv.records)])
    assert got.value.message == expected.value.message
    ref = make_engine()
    one_by_one(ref, good)
    assert_same(ref, e)


def test_an_exception_from_a_hook_leaves_the_records_up_to_it_applied() -> None:
    drv = Driver(make_engine())
    for i in range(4):
        drv.remember({"embedding": basis(i)}, request_id=f"r{i}")
    log = logged(drv.records)

    def boom(rid: str, result: Any) -> None:
        if rid == "r1":
            raise KeyError(rid)

    e = make_engine()
    with pytest.raises(KeyError):
        e.replay(log, on_result=boom)
    ref = make_engine()
    one_by_one(ref, log[:2])
    assert_same(ref, e)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_garbage_collector_is_left_as_it_was(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        drv = Driver(make_engine())
        drv.one(embedding=basis(0))
        make_engine().replay(logged(drv.records))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_objects_frozen_before_stay_frozen() -> None:
    drv = Driver(make_engine())
    drv.one(embedding=basis(0))
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        make_engine().replay(logged(drv.records))
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_replay_takes_any_iterable_once() -> None:
    drv = Driver(make_engine())
    for i in range(3):
        drv.one(embedding=basis(i))

    def gen() -> Iterator[Logged]:
        yield from logged(drv.records)

    e = make_engine()
    assert e.replay(gen()) == 3 and e.count() == 3


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_random_operation_sequences_replay_identically(sequence: list[tuple[str, Any]]) -> None:
    drv = Driver(make_engine(dedup_threshold=0.9, link_threshold=0.5))
    e = drv.engine
    for n, (op, arg) in enumerate(sequence):
        now = drv.tick()
        try:
            if op == "remember":
                rec: Any = e.plan_remember(arg, now, drv.new_id, f"q{n}" if n % 3 == 0 else None)
            elif op == "forget":
                rec = e.plan_forget(arg)
            elif op == "forget_tag":
                rec = e.plan_forget(tags=[arg])
            elif op == "link":
                rec = e.plan_link(*arg, now=now)
            else:
                rec = e.plan_touch(arg, now)
        except MemspaceError:
            continue
        drv.run(rec)
    b, _ = both(logged(drv.records), lambda: make_engine(dedup_threshold=0.9, link_threshold=0.5))
    assert_same(e, b)


def test_after_max_retries_the_rest_of_a_run_goes_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records that do not fit, one after another (links to ids stored later in the run)."""
    monkeypatch.setattr(replay, "MAX_RETRIES", 2)
    drv = Driver(make_engine())
    drv.one(id="p0", embedding=basis(5))
    log = logged(drv.records)
    for i in range(6):
        log.append(_store(len(log) + 1, _entry(f"a{i}", links=(Link(f"b{i}", 0.5, "x"),))))
        log.append(_store(len(log) + 1, _entry(f"b{i}", backlinks=(("p0", 0.7),))))
    log.append(_store(len(log) + 1, _entry("last", backlinks=(("p0", 0.6),))))
    b, general = both(log)
    # p0 goes in bulk; a0 (a link into the run's future) and b0 (something links to it)
    # use up the retries, and the rest of the run goes one by one
    assert general == len(log) - 1
    assert [lk.target for lk in b.get("a5").links] == ["b5"]


def test_on_record_only_after_record_after_and_results_for_all() -> None:
    drv = Driver(make_engine(link_threshold=0.5, dedup_threshold=0.99))
    for i, v in enumerate(near(np.random.default_rng(4), 6)):
        drv.remember({"embedding": v}, request_id=f"r{i}")
    drv.forget(drv.records[0].entries[0].id)
    log = logged(drv.records)
    results: list[tuple[str, Any]] = []
    seen: list[int] = []
    e = make_engine(link_threshold=0.5, dedup_threshold=0.99)
    e.replay(log, on_result=lambda rid, r: results.append((rid, replay.results_of(r))),
             on_record=lambda seq, r: seen.append(seq),
             record_after=4)
    assert seen == [5, 6, 7]
    assert results == one_by_one(make_engine(link_threshold=0.5, dedup_threshold=0.99), log)[0]
    assert [rid for rid, _ in results] == [f"r{i}" for i in range(6)]


def test_expected_rows_are_made_room_for_once_with_the_given_allocator() -> None:
    drv = Driver(make_engine(link_threshold=0.5, dedup_threshold=0.99))
    for v in near(np.random.default_rng(5), 12):
        drv.one(embedding=v)
    made: list[tuple[tuple[int, int], Any]] = []

    def allocate(shape: tuple[int, int], dtype: Any) -> Any:
        made.append((shape, dtype))
        return np.zeros(shape, dtype)

    e = make_engine(link_threshold=0.5, dedup_threshold=0.99)
    e.replay(logged(drv.records), expected=500, allocate=allocate)
    assert made == [((500, DIM), np.float32)]
    assert_same(drv.engine, e)
