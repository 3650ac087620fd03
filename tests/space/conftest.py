"""Helpers for tests of the durable space: small exact vectors, deterministic ids and clocks,
and a full description of a space's state to compare across close + reopen."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memspace import config as config_mod
from memspace.engine.model import Hit
from memspace.storage.space import Space, open_space
from memspace.testing.clock import FakeClock

DIM = 8


def basis(i: int, dim: int = DIM) -> list[float]:
    v = [0.0] * dim
    v[i] = 1.0
    return v


def at_cos(c: float, base: int = 0, other: int = 1, dim: int = DIM) -> list[float]:
    """A unit vector whose cosine to ``basis(base)`` is exactly ``c`` (it leans towards ``other``)."""
    v = [0.0] * dim
    v[base] = c
    v[other] = math.sqrt(max(0.0, 1.0 - c * c))
    return v


def unit32(v: Any) -> np.ndarray:
    """What the space stores for embedding ``v``: float32, unit norm (computed as validate does)."""
    a = np.asarray(v, dtype=np.float64)
    return (a / np.linalg.norm(a)).astype(np.float32)


def id_factory(prefix: str = "g") -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter):05d}"


def make_config(**overrides: Any) -> config_mod.Config:
    """A config independent of the environment; keys use the dotted names (``wal.fsync``)."""
    return config_mod.load(env={}, overrides=overrides)


class Opener:
    """Opens one directory again and again with the same clock, id factory and config."""

    def __init__(self, path: Path, *, dimension: int = DIM, settings: dict[str, Any] | None = None,
                 overrides: dict[str, Any] | None = None) -> None:
        self.path = path
        self.dimension = dimension
        self.settings = settings if settings is not None else {"decay": "none"}
        self.clock = FakeClock()
        self.new_id = id_factory()
        self.config = make_config(**(overrides or {}))

    def __call__(self, **kw: Any) -> Space:
        args: dict[str, Any] = {"dimension": self.dimension, "settings": self.settings, "config": self.config,
                                "clock": self.clock, "id_factory": self.new_id}
        args.update(kw)
        return open_space(self.path, **args)


@pytest.fixture
def opener(tmp_path: Path) -> Opener:
    return Opener(tmp_path / "space")


@pytest.fixture
def space(opener: Opener) -> Iterator[Space]:
    s = opener()
    yield s
    s.close()


def memory_state(m: Any) -> tuple[dict[str, Any], bytes]:
    """A memory as comparable data: every field (links included) and the exact embedding bytes."""
    return m.to_dict(), np.asarray(m.embedding, dtype=np.float32).tobytes()


def space_state(s: Space) -> dict[str, Any]:
    """Every memory (walked with ``list`` paging), per-tier counts and the total count."""
    memories: dict[str, Any] = {}
    cursor = None
    for _ in range(100_000):
        page = s.list(limit=7, cursor=cursor)
        for m in page.items:
            assert m.id not in memories, f"paging returned {m.id} twice"
            memories[m.id] = memory_state(m)
        cursor = page.next_cursor
        if cursor is None:
            break
    tiers = {t: s.count(t) for t in ("hot", "warm", "cold")}
    return {"memories": memories, "count": s.count(), "tiers": tiers}


def hit_key(hits: list[Hit]) -> list[tuple[str, tuple[str, ...], str]]:
    return [(h.id, h.path, h.tier) for h in hits]


def assert_hits_equal(a: list[Hit], b: list[Hit], tol: float = 1e-6) -> None:
    assert hit_key(a) == hit_key(b)
    for x, y in zip(a, b):
        assert x.score == pytest.approx(y.score, abs=tol), x.id
        assert x.similarity == pytest.approx(y.similarity, abs=tol), x.id
        assert x.activation == pytest.approx(y.activation, abs=tol), x.id
        assert x.content == y.content
