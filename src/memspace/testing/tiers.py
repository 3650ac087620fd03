"""Conformance checks every :class:`~memspace.engine.tiers.TierStore` must pass.

Subclass :class:`TierConformance` in a test module (name the subclass
``Test...`` so pytest collects it) and define::

    def make(self, tmp_path) -> TierStore                  # a new, empty tier
    def reopen(self, tier, tmp_path) -> TierStore | None   # from tier.state(); None if not durable

Every ``test_*`` method takes pytest's ``tmp_path``; nothing here imports
pytest, so the module ships with the package. The data helpers
(:func:`unit_rows`, :func:`clustered`, :func:`memories`, :func:`exact_top_k`,
:func:`recall_at_k`) are public for tier-specific tests and benchmarks.

Precision: lower tiers may store float16, so embeddings come back within
``EMBEDDING_ATOL`` per component and similarities within ``SCORE_ATOL``;
everything else must round-trip exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

from memspace.engine.model import Link, Memory
from memspace.engine.tiers import TierStore

EMBEDDING_ATOL = 1e-3   # float16 keeps ~11 bits: |error| <= 2^-12 for components of a unit vector
SCORE_ATOL = 5e-3
Matrix = npt.NDArray[np.float32]


def unit_rows(n: int, dim: int, seed: int = 0) -> Matrix:
    """``n`` random unit vectors (float32)."""
    m = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    out: Matrix = (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)
    return out


def clustered(n: int, dim: int, clusters: int, spread: float = 0.3, seed: int = 0,
              centres_seed: int = 1) -> Matrix:
    """``n`` unit vectors around ``clusters`` random centres (noise of norm ~``spread``).

    Draw queries with the same ``centres_seed`` and another ``seed`` to land in the same clusters."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(clusters, dim, centres_seed)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    m = centres[rng.integers(0, clusters, n)] + noise
    out: Matrix = (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)
    return out


def memories(embeddings: Matrix, prefix: str = "m", start: int = 0) -> list[Memory]:
    """One memory per row with every field set to a distinctive value; links chain ``i -> i+1``."""
    out = []
    for i, e in enumerate(embeddings):
        n = start + i
        out.append(Memory(
            id=f"{prefix}{n}", content=None if n % 7 == 3 else f"memory {n}: ünïcode ✓",
            embedding=e, confidence=round(0.1 + (n % 9) / 10, 3), created_at=1.7e9 + n,
            last_access=1.7e9 + 2 * n, access_count=n % 5, tags=tuple(f"t{j}" for j in range(n % 3)),
            metadata={"n": n, "nested": {"even": n % 2 == 0}} if n % 4 else {},
            links=(Link(f"{prefix}{n + 1}", 0.5 + (n % 5) / 10, "similar"),)
            + ((Link("x", 0.25),) if n % 3 == 0 else ()),
        ))
    return out


def exact_top_k(matrix: Matrix, ids: Sequence[str], query: Matrix, k: int) -> list[str]:
    """The reference: exact float32 cosine top-``k`` ids (rows of ``matrix`` are unit vectors)."""
    sims = matrix @ query
    return [ids[i] for i in np.argsort(-sims, kind="stable")[:k].tolist()]


def recall_at_k(found: Sequence[str], expected: Sequence[str]) -> float:
    return len(set(found) & set(expected)) / max(1, len(expected))


def planted(n: int, dim: int, seed: int = 0) -> tuple[Matrix, Matrix, list[int]]:
    """Well-separated data: rows ``order[j]`` have cosine ``0.95 - 0.03 j`` to the query (j < 15),
    the rest are random (cosine ~ N(0, 1/dim)). Returns (rows, query, order)."""
    rng = np.random.default_rng(seed)
    rows = unit_rows(n, dim, seed)
    query = unit_rows(1, dim, seed + 7)[0]
    order = rng.permutation(n)[:15].tolist()
    for j, r in enumerate(order):
        noise = rows[r] - (rows[r] @ query) * query
        noise /= np.linalg.norm(noise)
        cos = 0.95 - 0.03 * j
        rows[r] = cos * query + np.sqrt(1 - cos * cos) * noise
    return rows.astype(np.float32), query.astype(np.float32), order


def assert_same_memory(got: Memory | None, want: Memory, tier: str) -> None:
    assert got is not None, f"{want.id} missing"
    assert got.tier == tier
    assert got.embedding.dtype == np.float32 and got.embedding.shape == want.embedding.shape
    assert np.allclose(got.embedding, want.embedding, atol=EMBEDDING_ATOL, rtol=0), want.id
    for name in ("id", "content", "confidence", "created_at", "last_access", "access_count", "tags", "links"):
        assert getattr(got, name) == getattr(want, name), (want.id, name, getattr(got, name))
    assert dict(got.metadata) == dict(want.metadata)


class TierConformance:
    """The checks; see the module docstring for how to bind them to a tier."""

    dim = 48

    def make(self, tmp_path: Path) -> TierStore:
        raise NotImplementedError

    def reopen(self, tier: TierStore, tmp_path: Path) -> TierStore | None:
        return None

    def test_protocol_and_empty(self, tmp_path: Path) -> None:
        tier = self.make(tmp_path)
        assert isinstance(tier, TierStore)
        assert len(tier) == 0 and list(tier.ids()) == []
        assert "m0" not in tier and 5 not in tier and None not in tier
        assert tier.get("m0") is None and tier.links("m0") == ()
        assert tier.search(unit_rows(1, self.dim)[0], 10) == []
        tier.discard("m0")   # unknown ids are ignored
        tier.add([])
        assert len(tier) == 0
        state = tier.state()
        assert orjson.loads(orjson.dumps(state)) == state
        again = self.reopen(tier, tmp_path)
        if again is not None:
            assert len(again) == 0 and list(again.ids()) == [] and again.get("m0") is None

    def test_round_trip(self, tmp_path: Path) -> None:
        tier = self.make(tmp_path)
        batch = memories(unit_rows(40, self.dim, 1))
        tier.add(batch)
        assert len(tier) == 40
        for m in batch:
            assert m.id in tier
            assert_same_memory(tier.get(m.id), m, tier.name)

    def test_len_contains_ids_order(self, tmp_path: Path) -> None:
        tier = self.make(tmp_path)
        a = memories(unit_rows(30, self.dim, 2), "a")
        b = memories(unit_rows(25, self.dim, 3), "b")
        tier.add(a)
        tier.add(b)
        assert list(tier.ids()) == [m.id for m in a + b]
        assert len(tier) == 55
        assert all(m.id in tier for m in a + b) and "c0" not in tier

    def test_links(self, tmp_path: Path) -> None:
        tier = self.make(tmp_path)
        batch = memories(unit_rows(12, self.dim, 4))
        tier.add(batch)
        for m in batch:
            assert tier.links(m.id) == m.links
        assert tier.links("m0") == (Link("m1", 0.5, "similar"), Link("x", 0.25, "related"))
        assert tier.links("nope") == ()

    def test_search_matches_exact_on_separated_data(self, tmp_path: Path) -> None:
        tier = self.make(tmp_path)
        rows, query, order = planted(600, self.dim, seed=5)
        batch = memories(rows)
        tier.add(batch[:300])
        tier.add(batch[300:])
        ids = [m.id for m in batch]
        hits = tier.search(query, 10)
        assert [h for h, _ in hits] == exact_top_k(rows, ids, query, 10) == [f"m{r}" for r in order[:10]]
        for j, (_, score) in enumerate(hits):
            assert abs(score - (0.95 - 0.03 * j)) < SCORE_ATOL
        assert [h for h, _ in tier.search(query, 3)] == [f"m{r}" for r in order[:3]]
        assert tier.search(query, 0) == []
        everything = tier.search(query, 10_000)
        assert sorted(h for h, _ in everything) == sorted(ids)
        scores = [s for _, s in everything]
        assert scores == sorted(scores, reverse=True)

    def test_search_recall_on_random_data(self, tmp_path: Path) -> None:
        tier = self.make(tmp_path)
        rows = unit_rows(2000, self.dim, 6)
        batch = memories(rows)
        tier.add(batch)
        ids = [m.id for m in batch]
        queries = unit_rows(20, self.dim, 60)
        recall = float(np.mean([recall_at_k([h for h, _ in tier.search(q, 10)], exact_top_k(rows, ids, q, 10))
                                for q in queries]))
        print(f"{tier.name}: recall@10 vs exact float32 on random data = {recall:.3f}")
        assert recall >= 0.9
        q = queries[0]
        for mid, score in tier.search(q, 10):
            assert abs(score - float(rows[int(mid[1:])] @ q)) < SCORE_ATOL

    def test_discard(self, tmp_path: Path) -> None:
        tier = self.make(tmp_path)
        rows, query, order = planted(200, self.dim, seed=8)
        batch = memories(rows)
        tier.add(batch)
        unplanted = next(i for i in range(199, 0, -1) if i not in order)
        gone = {f"m{order[0]}", f"m{order[2]}", f"m{unplanted}"}
        for mid in gone:
            tier.discard(mid)
        tier.discard(f"m{order[0]}")   # twice: still fine
        tier.discard("never-there")
        assert len(tier) == 197
        assert list(tier.ids()) == [m.id for m in batch if m.id not in gone]
        for mid in gone:
            assert mid not in tier and tier.get(mid) is None and tier.links(mid) == ()
        found = [h for h, _ in tier.search(query, 200)]
        assert not gone & set(found) and len(found) == 197
        assert found[:3] == [f"m{order[1]}", f"m{order[3]}", f"m{order[4]}"]

    def test_add_again_replaces(self, tmp_path: Path) -> None:
        tier = self.make(tmp_path)
        rows = unit_rows(6, self.dim, 9)
        tier.add(memories(rows[:3]))
        newer = Memory("m1", "newer", rows[5], 0.9, 5.0, 6.0, 7)
        tier.add([newer])
        assert len(tier) == 3
        assert_same_memory(tier.get("m1"), newer, tier.name)
        assert [h for h, _ in tier.search(rows[5], 1)] == ["m1"]

    def test_reopen_from_state_equals_before(self, tmp_path: Path) -> None:
        tier = self.make(tmp_path)
        rows, query, _ = planted(300, self.dim, seed=10)
        batch = memories(rows)
        tier.add(batch[:120])
        tier.add(batch[120:])
        for i in range(0, 300, 11):
            tier.discard(f"m{i}")
        tier.add([Memory("m11", "back again", rows[11], 0.4, 1.0, 1.0, 0)])
        before = {mid: tier.get(mid) for mid in tier.ids()}
        before_ids, before_hits, state = list(tier.ids()), tier.search(query, 25), tier.state()
        again = self.reopen(tier, tmp_path)
        if again is None:
            return
        assert list(again.ids()) == before_ids and len(again) == len(before_ids)
        assert again.state() == state
        assert again.search(query, 25) == before_hits
        assert again.get("m0") is None and again.get("m11") is not None
        for mid, m in before.items():
            got = again.get(mid)
            assert m is not None and got is not None
            assert np.array_equal(got.embedding, m.embedding)   # exactly what was stored
            assert_same_memory(got, m, again.name)
