"""Determinism: records replayed on fresh engines, snapshots restored, and a hypothesis property test."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memspace.engine import Engine, decode, encode
from memspace.errors import MemspaceError

from .conftest import DIM, Driver, at_cos, basis, make_engine

QUERIES = [basis(0), at_cos(0.7, 1, 2), [1.0, -1.0, 0.5, 0.0, 2.0, 0.0, 1.0, 1.0]]


def state(e: Engine) -> tuple[dict[str, Any], list[Any]]:
    """Everything observable: each memory (incl. embedding bytes) and recall results in both modes."""
    memories = {m.id: (m.to_dict(), m.embedding.tobytes()) for m in _all(e)}
    hits = [e.recall(embedding=q, k=6, mode=mode, threshold=-1.0, now=5000.0)
            for q in QUERIES for mode in ("similarity", "spreading")]
    return memories, hits


def _all(e: Engine) -> list[Any]:
    out, cursor = [], None
    while True:
        page = e.page(limit=7, cursor=cursor)
        out += page.items
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def same_internals(a: Engine, b: Engine) -> None:
    (arrays_a, meta_a), (arrays_b, meta_b) = a.snapshot_state(), b.snapshot_state()
    assert meta_a == meta_b
    assert arrays_a.keys() == arrays_b.keys()
    for k in arrays_a:
        assert arrays_a[k].dtype == arrays_b[k].dtype and np.array_equal(arrays_a[k], arrays_b[k]), k


def scenario(drv: Driver) -> None:
    drv.remember({"content": "Ana met Bo at the lab", "tags": ["people"]}, {"embedding": basis(0), "tags": ["a"]},
                 {"embedding": at_cos(0.8), "metadata": {"k": [1, {"x": None}]}}, {"embedding": at_cos(0.99)},
                 request_id="r1")
    drv.one(id="client", embedding=at_cos(0.75, 0, 3), content="c", links=[{"target": "m0", "weight": 0.4}])
    drv.link("m0", "m1", 0.9, "cause")
    drv.touch("m1", "client")
    drv.one(id="client", embedding=at_cos(0.6, 0, 4), tags=["b"])
    drv.remember(*({"embedding": at_cos(0.5 + i / 20, i % DIM, (i + 1) % DIM), "tags": ["bulk"]} for i in range(9)))
    drv.forget("m1")
    drv.forget(tags=["bulk"], before=drv.now - 0.5)
    drv.one(embedding=at_cos(0.72, 0, 5), content="after")


def test_replaying_records_on_fresh_engines_gives_identical_state() -> None:
    a = Driver(make_engine())
    scenario(a)
    b, c = make_engine(), make_engine()
    for rec in a.records:
        kind, payload = encode(rec)
        assert a.engine is not None
        results = [x.apply(decode(kind, payload)) for x in (b, c)]
        assert results[0] == results[1]
    same_internals(a.engine, b)
    same_internals(b, c)
    assert state(a.engine) == state(b)


def test_snapshot_restore_round_trip() -> None:
    a = Driver(make_engine())
    scenario(a)
    arrays, meta = a.engine.snapshot_state()
    meta = orjson.loads(orjson.dumps(meta))              # what a snapshot file would give back
    arrays = {k: np.array(v) for k, v in arrays.items()}
    b = Engine.restore(arrays, meta, a.engine.settings, limits=a.engine.limits)
    same_internals(a.engine, b)
    assert state(a.engine) == state(b)
    assert b.stats() == a.engine.stats()
    # the restored engine keeps working identically, including its derived indexes
    follow = Driver(b)
    follow.now, follow.new_id = a.now, a.new_id
    a.forget("m0")
    follow.run(a.records[-1])
    rec = a.engine.plan_remember([{"embedding": at_cos(0.9, 0, 6), "tags": ["a"]}], a.tick(), a.new_id)
    assert a.run(rec) == follow.run(rec)
    same_internals(a.engine, b)
    assert state(a.engine) == state(b)
    assert [m.id for m in _all(b) if any(lk.target == "m0" for lk in m.links)] == []


def test_restore_rejects_a_foreign_snapshot() -> None:
    arrays, meta = make_engine().snapshot_state()
    from memspace.errors import InvalidArgument
    try:
        Engine.restore(arrays, meta, make_engine(dimension=DIM + 1).settings)
    except InvalidArgument as exc:
        assert "dimension" in exc.message
    else:
        raise AssertionError("a snapshot of another dimension was accepted")


# -- property: random operation sequences -----------------------------------------------------------

POOL = [f"c{i}" for i in range(4)]
vectors = st.lists(st.sampled_from([-1.0, 0.0, 0.0, 1.0, 2.0]), min_size=DIM, max_size=DIM)
BASES = [basis(0), at_cos(0.6, 1, 2), [1.0, -1.0, 0.5, 0.0, 2.0, 0.0, 1.0, 1.0]]


def _nudge(base: int, axis: int, amount: float) -> list[float]:
    v = list(BASES[base])
    v[axis] += amount
    return v


# a few directions, nudged: exact duplicates, near duplicates (merge), neighbours (auto-links), strangers
vectors = st.builds(_nudge, st.integers(0, 2), st.integers(0, DIM - 1), st.sampled_from([0.0, 0.2, 0.5, 1.0, 3.0]))
optional = {
    "id": st.sampled_from(POOL),
    "tags": st.lists(st.sampled_from(["x", "y"]), max_size=2),
    "confidence": st.sampled_from([0.2, 0.5, 1.0]),
    "links": st.one_of(st.just([]), st.lists(st.fixed_dictionaries({"target": st.sampled_from(["c0", "m0", "m1"]),
                                                                     "weight": st.sampled_from([0.3, 0.9])}),
                                             max_size=1)),
}
texts = st.sampled_from(["ana lab", "ana at the lab", "bo plays chess", "rain in berlin"])
items = st.one_of(st.fixed_dictionaries({"embedding": vectors}, optional={"content": texts, **optional}),
                  st.fixed_dictionaries({"content": texts}, optional=optional))
ops = st.lists(st.one_of(
    st.tuples(st.just("remember"), st.lists(items, min_size=1, max_size=3)),
    st.tuples(st.just("forget"), st.lists(st.sampled_from(POOL + ["m0", "m1", "m2", "m3"]), min_size=1, max_size=2)),
    st.tuples(st.just("forget_tag"), st.sampled_from(["x", "y"])),
    st.tuples(st.just("link"), st.tuples(st.sampled_from(["c0", "m0", "m1"]), st.sampled_from(["c1", "m1", "m2"]),
                                         st.sampled_from([0.2, 1.0]))),
    st.tuples(st.just("link"), st.tuples(st.sampled_from(["c0", "m0", "m1"]), st.sampled_from(["c1", "m1", "m2"]),
                                         st.sampled_from([0.2, 1.0]))),
    st.tuples(st.just("touch"), st.lists(st.sampled_from(POOL + ["m0", "m1", "m2"]), max_size=3)),
), min_size=3, max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_replayed_records_reproduce_the_engine(sequence: list[tuple[str, Any]]) -> None:
    a = Driver(make_engine(dedup_threshold=0.9, link_threshold=0.5))
    b = make_engine(dedup_threshold=0.9, link_threshold=0.5)
    e = a.engine
    for op, arg in sequence:
        now = a.tick()
        try:
            if op == "remember":
                rec: Any = e.plan_remember(arg, now, a.new_id)
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
        kind, payload = encode(rec)
        assert a.run(rec) == b.apply(decode(kind, payload))
    assert state(e) == state(b)
    same_internals(e, b)
