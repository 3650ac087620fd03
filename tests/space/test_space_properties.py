"""Property: whatever sequence of writes, recalls and checkpoints a space goes through, the state
recovered from its files after close + reopen is the state it had, and recall ranks the same.

Vectors are drawn from a few directions at chosen cosines so that merges (cos 0.99 >= 0.95),
auto-links (0.8 > 0.7) and unrelated memories all happen; tiny tier capacities make
checkpoints demote to warm and cold, so promotions by links and touches are replayed too.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memspace.engine.model import Hit
from memspace.errors import MemspaceError
from memspace.storage.space import Space

from .conftest import DIM, Opener, assert_hits_equal, space_state

IDS = ["a", "b", "c", "d", "e", "f"]
TAGS = ["x", "y", "z"]
COSINES = [1.0, 0.99, 0.8, 0.5]


def vector(base: int, other: int, cos: float) -> list[float]:
    v = [0.0] * DIM
    v[base] += cos
    v[(base + other) % DIM] += math.sqrt(1.0 - cos * cos)
    return v


vectors = st.builds(vector, st.integers(0, 4), st.integers(1, 3), st.sampled_from(COSINES))
tag_lists = st.lists(st.sampled_from(TAGS), max_size=2, unique=True)
items = st.fixed_dictionaries(
    {"embedding": vectors, "id": st.sampled_from([*IDS, None, None])},    # None: no id given
    optional={"tags": tag_lists, "content": st.sampled_from(["p", "q", "r s"]),
              "confidence": st.sampled_from([0.2, 0.5, 1.0]),
              "links": st.lists(st.fixed_dictionaries({"target": st.sampled_from(IDS)},
                                                      optional={"weight": st.sampled_from([0.3, 0.9])}),
                                max_size=1)})
existing = st.sampled_from(IDS + ["g00000", "g00001", "g00002", "ghost"])

remembers = st.tuples(st.just("remember"), items, st.booleans())
batches = st.tuples(st.just("batch"), st.lists(items, min_size=1, max_size=4), st.booleans())
links = st.tuples(st.just("link"), existing, existing, st.sampled_from([0.2, 0.9, 1.0]))
checkpoints = st.tuples(st.just("checkpoint"))
ops = st.one_of(
    remembers, remembers, remembers, batches, batches, links, checkpoints,
    st.tuples(st.just("forget"), existing),
    st.tuples(st.just("forget_ids"), st.lists(existing, min_size=1, max_size=3)),
    st.tuples(st.just("forget_filter"), st.lists(st.sampled_from(TAGS), min_size=1, max_size=2, unique=True),
              st.sampled_from([None, 5.0])),
    st.tuples(st.just("recall"), vectors, st.sampled_from(["similarity", "spreading"]),
              st.sampled_from([None, ("hot", "warm", "cold")])),
    st.tuples(st.just("advance"), st.sampled_from([1.0, 30.0, 600.0])),
    st.tuples(st.just("retry")),
    st.tuples(st.just("reopen")),
)

CUES: list[dict[str, Any]] = [
    {"embedding": vector(0, 1, 1.0), "k": 5},
    {"embedding": vector(1, 1, 0.8), "k": 4, "mode": "similarity"},
    {"embedding": vector(2, 2, 0.5), "k": 6, "threshold": 0.3, "tiers": ["hot", "warm", "cold"]},
    {"embedding": vector(3, 1, 0.99), "k": 3, "tags": ["x"]},
]


def recalls(s: Space, now: float) -> list[list[Hit]]:
    return [s.engine.recall(now=now, **cue) for cue in CUES]


class Run:
    """Applies ops to a space; remembers the last write with a request id to retry it."""

    def __init__(self, opener: Opener) -> None:
        self.opener = opener
        self.space = opener()
        self.n = 0
        self.last: tuple[str, Any, Any] | None = None   # (request id, call, first result)

    def write(self, call: Any, rid: str | None) -> None:
        """``call(space, request_id)``; kept to be retried on whichever space is open then."""
        s = self.space
        before = (s.count(), s.stats().wal_last_seq)
        try:
            result = call(s, rid)
        except MemspaceError:
            assert (s.count(), s.stats().wal_last_seq) == before, "a rejected write changed the space"
            return
        if rid is not None:
            self.last = (rid, call, result)

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        self.n += 1
        rid = f"r{self.n}"
        if kind == "remember":
            item = op[1]
            self.write(lambda s, r: s.remember(**item, request_id=r), rid if op[2] else None)
        elif kind == "batch":
            self.write(lambda s, r: s.remember_batch(op[1], request_id=r), rid if op[2] else None)
        elif kind == "forget":
            self.write(lambda s, r: s.forget(op[1], request_id=r), rid)
        elif kind == "forget_ids":
            self.write(lambda s, r: s.forget(ids=op[1]), None)
        elif kind == "forget_filter":
            before = None if op[2] is None else self.opener.clock.time() - op[2]
            self.write(lambda s, r: s.forget(tags=op[1], before=before), None)
        elif kind == "link":
            self.write(lambda s, r: s.link(op[1], op[2], op[3], request_id=r), rid)
        elif kind == "recall":
            self.space.recall(embedding=op[1], mode=op[2], tiers=op[3], k=3)
        elif kind == "checkpoint":
            self.space.checkpoint()
        elif kind == "advance":
            self.opener.clock.advance(op[1])
        elif kind == "retry" and self.last is not None:
            request_id, call, first = self.last
            s = self.space
            before = (s.count(), s.stats().wal_last_seq)
            assert call(s, request_id) == first
            assert (s.count(), s.stats().wal_last_seq) == before
        elif kind == "reopen":
            self.reopen_and_compare()

    def reopen_and_compare(self) -> None:
        s, now = self.space, self.opener.clock.time()
        state, hits = space_state(s), recalls(s, now)
        s.close()
        self.space = again = self.opener()
        assert space_state(again) == state
        for a, b in zip(hits, recalls(again, now)):
            assert_hits_equal(a, b)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=10, max_size=50))
def test_recovered_state_equals_the_state_before_close(sequence: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        opener = Opener(Path(tmp) / "space", settings={"decay": "exponential", "half_life_s": 3600.0},
                        overrides={"tiers.hot_capacity": 3, "tiers.warm_capacity": 2})
        run = Run(opener)
        try:
            for op in sequence:
                run.apply(op)
            run.reopen_and_compare()
        finally:
            run.space.close()
