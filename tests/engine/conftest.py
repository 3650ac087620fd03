"""Shared helpers for engine tests: a small dimension, exact vectors, a deterministic id factory."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from memspace.engine import Engine, Limits, SpaceSettings
from memspace.engine.records import Record

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


def id_factory(prefix: str = "m") -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter)}"


def make_engine(**settings: Any) -> Engine:
    limits = settings.pop("limits", Limits())
    engine_kwargs = settings.pop("engine_kwargs", {})
    settings.setdefault("dimension", DIM)
    settings.setdefault("decay", "none")
    return Engine(SpaceSettings(**settings), limits=limits, **engine_kwargs)


class Driver:
    """Plans and applies like the durable layer does, keeping every record for replays."""

    def __init__(self, engine: Engine, prefix: str = "m") -> None:
        self.engine = engine
        self.new_id = id_factory(prefix)
        self.records: list[Record] = []
        self.now = 1000.0

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now

    def run(self, rec: Record) -> Any:
        self.records.append(rec)
        return self.engine.apply(rec)

    def remember(self, *items: dict[str, Any], request_id: str | None = None) -> Any:
        return self.run(self.engine.plan_remember(list(items), self.tick(), self.new_id, request_id))

    def one(self, **item: Any) -> Any:
        return self.remember(item)[0]

    def forget(self, *ids: str, **kw: Any) -> Any:
        return self.run(self.engine.plan_forget(list(ids) if ids else None, **kw))

    def link(self, source: str, target: str, weight: float = 1.0, kind: str = "related") -> Any:
        return self.run(self.engine.plan_link(source, target, weight, kind, now=self.tick()))

    def touch(self, *ids: str) -> Any:
        return self.run(self.engine.plan_touch(list(ids), self.tick()))


@pytest.fixture
def engine() -> Engine:
    return make_engine()


@pytest.fixture
def drv(engine: Engine) -> Driver:
    return Driver(engine)


def memories_equal(a: Any, b: Any) -> bool:
    return (a.to_dict() == b.to_dict()) and np.array_equal(a.embedding, b.embedding)
