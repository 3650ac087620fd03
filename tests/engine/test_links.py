"""The hot tier's link arrays (engine.links) against a plain ``source -> {target: (weight, kind)}`` model:
order, replacement, removal, bulk appends, the lazily built reverse index, slot reuse, and
canonical snapshots (also of the snapshot format before link arrays)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memspace.engine import Engine, links, pool
from memspace.engine.links import LinkGraph, ranges
from memspace.engine.model import Link
from memspace.errors import InvalidArgument

from .conftest import Driver, at_cos, basis, make_engine
from .test_replay import same_internals, scenario, state

Model = dict[str, dict[str, tuple[float, str]]]


class Pair:
    """A LinkGraph and the dict model it must match, driven together."""

    def __init__(self) -> None:
        self.graph = LinkGraph()
        self.model: Model = {}

    def hold(self, memory_id: str) -> None:
        if memory_id not in self.model:
            self.graph.hold(memory_id)
            self.model[memory_id] = {}

    def release(self, memory_id: str) -> None:
        if memory_id in self.model:
            self.graph.release(self.graph.slot[memory_id])
            del self.model[memory_id]

    def set(self, source: str, target: str, weight: float, kind: str) -> None:
        if source in self.model:
            self.graph.set(self.graph.slot[source], target, weight, kind)
            self.model[source][target] = (weight, kind)

    def set_all(self, source: str, new: list[tuple[str, float, str]]) -> None:
        if source in self.model:
            self.graph.set_all(self.graph.slot[source], [Link(*x) for x in new])
            for target, w, k in new:
                self.model[source][target] = (w, k)

    def set_into(self, target: str, new: list[tuple[str, float]]) -> None:
        held = [(source, w) for source, w in new if source in self.model]
        self.graph.set_into(target, [(self.graph.slot[source], w) for source, w in held], "into")
        for source, w in held:
            self.model[source][target] = (w, "into")

    def drop_into(self, target: str) -> None:
        self.graph.drop_into(target)
        for held in self.model.values():
            held.pop(target, None)

    def add_new(self, new: list[tuple[str, str, float, str]]) -> None:
        """Bulk: only pairs that are not held yet, each once (add_new's precondition)."""
        fresh, seen = [], set()
        for source, target, w, k in new:
            if source in self.model and target not in self.model[source] and (source, target) not in seen:
                seen.add((source, target))
                fresh.append((source, target, w, k))
        g = self.graph
        g.add_new(np.array([g.slot[s] for s, _, _, _ in fresh], dtype=np.int64),
                  np.array([g.intern(t) for _, t, _, _ in fresh], dtype=np.int64),
                  np.array([w for _, _, w, _ in fresh], dtype=np.float64),
                  np.array([g.kind_code(k) for _, _, _, k in fresh], dtype=np.int32))
        for source, target, w, k in fresh:
            self.model[source][target] = (w, k)

    def verify(self) -> None:
        g = self.graph
        g.check()
        assert g.count == sum(len(v) for v in self.model.values())
        for source, held in self.model.items():
            want = tuple(Link(t, w, k) for t, (w, k) in held.items())
            assert g.links(g.slot[source]) == want, source
            assert g.targets(g.slot[source]) == list(held)
        referenced = set(self.model) | {t for held in self.model.values() for t in held}
        assert set(g.slot) == referenced  # slots of ids nothing refers to any more were recycled


IDS = [f"n{i}" for i in range(8)]
ident = st.sampled_from(IDS)
weight = st.sampled_from([0.25, 0.5, 0.75, 1.0, 0.3])
kind = st.sampled_from(["similar", "related", "cause"])
op = st.one_of(
    st.tuples(st.just("hold"), ident),
    st.tuples(st.just("release"), ident),
    st.tuples(st.just("set"), st.tuples(ident, ident, weight, kind)),
    st.tuples(st.just("drop_into"), ident),
    st.tuples(st.just("set_all"), st.tuples(ident, st.lists(st.tuples(ident, weight, kind), max_size=5))),
    st.tuples(st.just("set_into"), st.tuples(ident, st.lists(st.tuples(ident, weight), max_size=5))),
    st.tuples(st.just("add_new"), st.lists(st.tuples(ident, ident, weight, kind), max_size=12)),
    st.tuples(st.just("reverse"), st.none()),
    st.tuples(st.just("reload"), st.none()),
)


def reload(pair: Pair) -> None:
    """Export the held memories' links and load them into a fresh graph (a snapshot round trip)."""
    g = pair.graph
    held = [i for i in pair.model]
    rows = np.array([g.slot[i] for i in held], dtype=np.int64)
    arrays, meta = g.export(rows)
    arrays = {k: np.array(v) for k, v in orjson.loads(orjson.dumps(arrays, option=orjson.OPT_SERIALIZE_NUMPY)).items()}
    fresh = LinkGraph()
    fresh.load(held, *links.links_from_arrays(arrays, meta, held))
    pair.graph = fresh
    assert fresh.export(np.arange(len(held), dtype=np.int64))[1] == meta


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=60))
def test_random_operations_match_the_dict_model(ops: list[tuple[str, Any]]) -> None:
    pair = Pair()
    for name, arg in ops:
        if name in ("set", "set_all", "set_into"):
            getattr(pair, name)(*arg)
        elif name == "add_new":
            pair.add_new(arg)
        elif name == "reverse":
            pair.graph._inbound()
        elif name == "reload":
            reload(pair)
        else:
            getattr(pair, name)(arg)
        pair.verify()


def test_pools_grow_move_and_compact(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tiny pool every list moves and the pool compacts many times; nothing is lost."""
    monkeypatch.setattr(pool, "_MIN_POOL", 1)
    pair = Pair()
    rng = np.random.default_rng(3)
    for i in range(40):
        pair.hold(f"m{i}")
    pair.graph._inbound()
    for step in range(600):
        a, b = rng.integers(0, 40, 2)
        if step % 97 == 0:
            pair.drop_into(f"m{a}")
        elif step % 5 == 0:
            pair.add_new([(f"m{a}", f"m{(a + j) % 40}", 0.5, "k") for j in range(1, int(b) % 7 + 1)])
        else:
            pair.set(f"m{a}", f"m{b}", float(step % 10) / 10 + 0.05, "k")
    pair.verify()
    out = pair.graph._out
    assert out.end - out.reserved < len(out.cols[0])  # holes were reclaimed along the way


def test_order_replacement_and_removal_like_a_dict() -> None:
    pair = Pair()
    for i in "abcd":
        pair.hold(i)
    for target, w in (("b", 0.1), ("c", 0.2), ("d", 0.3), ("x", 0.4)):
        pair.set("a", target, w, "k")
    pair.set("a", "c", 0.9, "other")      # replaced in place: keeps its position
    pair.drop_into("b")                   # removed: the gap closes
    pair.verify()
    assert [(lk.target, lk.weight, lk.kind) for lk in pair.graph.links(pair.graph.slot["a"])] == [
        ("c", 0.9, "other"), ("d", 0.3, "k"), ("x", 0.4, "k")]
    # x is not hot: it keeps a slot while linked to, and loses it with the last link
    assert "x" in pair.graph.slot
    pair.release("a")
    pair.verify()
    assert "x" not in pair.graph.slot and pair.graph.count == 0


def test_neighbours_keep_hot_targets_and_those_found_elsewhere() -> None:
    pair = Pair()
    pair.hold("a")
    pair.hold("b")
    for target in ("b", "w", "gone"):
        pair.set("a", target, 0.5, "k")
    g = pair.graph
    assert g.neighbours(g.slot["a"], lambda i: i == "w") == [("b", 0.5), ("w", 0.5)]
    assert g.neighbours(g.slot["b"], lambda i: True) == []


def test_ranges() -> None:
    got = ranges(np.array([5, 0, 9], dtype=np.int64), np.array([2, 0, 3], dtype=np.int64))
    assert got.tolist() == [5, 6, 9, 10, 11]
    assert ranges(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []


# -- snapshots ----------------------------------------------------------------------------------

def v1_meta(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The same snapshot in the format before link arrays (links per row in the meta)."""
    names = list(meta["ids"]) + list(meta["link_names"])
    targets = arrays["link_targets"].tolist()
    weights = arrays["link_weights"].tolist()
    kinds = arrays["link_kinds"].tolist()
    rows, at = [], 0
    for count in arrays["link_counts"].tolist():
        rows.append([[names[targets[j]], weights[j], meta["link_kinds"][kinds[j]]] for j in range(at, at + count)])
        at += count
    old = {k: v for k, v in meta.items() if not k.startswith("link_")}
    return {**old, "version": 1, "links": rows}


def test_snapshots_store_links_as_arrays_and_read_the_old_format() -> None:
    a = Driver(make_engine(link_threshold=0.5))
    scenario(a)
    a.link("client", "m0", 0.6, "after")
    arrays, meta = a.engine.snapshot_state()
    assert "links" not in meta and meta["version"] == 2
    assert arrays["link_targets"].dtype == np.int32 and arrays["link_weights"].dtype == np.float64
    assert int(arrays["link_counts"].sum()) == a.engine.stats().links > 0
    old = v1_meta(orjson.loads(orjson.dumps(meta)), arrays)
    old_arrays = {k: v for k, v in arrays.items() if not k.startswith("link_")}
    for restored in (Engine.restore(arrays, meta, a.engine.settings),
                     Engine.restore(old_arrays, old, a.engine.settings)):
        same_internals(a.engine, restored)
        assert state(a.engine) == state(restored)
        assert restored.stats() == a.engine.stats()


def test_a_warm_target_keeps_its_name_through_a_snapshot() -> None:
    from memspace.engine import MemoryTier

    warm = MemoryTier("warm")
    e = make_engine(engine_kwargs={"warm": warm})
    drv = Driver(e)
    drv.one(id="w", embedding=basis(3))
    drv.one(id="h", embedding=basis(4), links=[{"target": "w", "weight": 0.4, "kind": "about"}])
    e.demote(e.plan_demotion(hot_capacity=1, warm_capacity=10))   # w (least recently used) goes warm
    assert e.tier_of("w") == "warm"
    arrays, meta = e.snapshot_state()
    assert meta["link_names"] == ["w"] and meta["link_kinds"] == ["about"]
    b = Engine.restore(arrays, meta, e.settings, warm=warm)
    assert b.get("h").links == (Link("w", 0.4, "about"),)
    hits = b.recall(embedding=basis(4), k=3, now=5000.0)
    assert [(h.id, h.path) for h in hits] == [("h", ("h",)), ("w", ("h", "w"))]


@pytest.mark.parametrize("change", [
    {"link_counts": np.array([0, 2], dtype=np.int32)},            # counts that do not add up
    {"link_targets": np.array([7], dtype=np.int32)},              # a target with no name
    {"link_kinds": np.array([3], dtype=np.int32)},                # a kind with no name
    {"link_weights": np.array([], dtype=np.float64)},             # a column cut short
])
def test_restore_rejects_link_arrays_that_do_not_fit(change: dict[str, np.ndarray]) -> None:
    drv = Driver(make_engine())
    drv.one(id="a", embedding=basis(0))
    drv.one(id="b", embedding=basis(1), links=[{"target": "a", "weight": 0.5}])
    arrays, meta = drv.engine.snapshot_state()
    assert arrays["link_counts"].tolist() == [0, 1]
    with pytest.raises(InvalidArgument) as err:
        Engine.restore({**arrays, **change}, meta, drv.engine.settings)
    assert err.value.details == {"field": "snapshot"}


def test_the_reverse_index_is_built_on_first_use_and_kept_in_step() -> None:
    a = Driver(make_engine(link_threshold=0.5))
    for i in range(6):
        a.one(embedding=at_cos(0.8, 0, 1 + i))   # cosines 0.64 between any two: linked both ways
    arrays, meta = a.engine.snapshot_state()
    b = Engine.restore(arrays, meta, a.engine.settings)
    graph = b._hot.graph
    assert graph._in is None                     # a restore does not build it
    follow = Driver(b)
    follow.now, follow.new_id = a.now, a.new_id
    assert a.engine.stats().links == 30
    for plan in (lambda: a.engine.plan_forget(["m2"]), lambda: a.engine.plan_link("m0", "m5", 0.9, now=a.tick())):
        rec = plan()
        a.run(rec)
        follow.run(rec)
    assert graph._in is not None
    graph.check()
    same_internals(a.engine, b)
    assert all(lk.target != "m2" for m in ("m0", "m1", "m3") for lk in b.get(m).links)
