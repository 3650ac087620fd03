"""Decay kinds: identity, monotone in time, floor, ceiling, and reinforcement slowing it down."""

from __future__ import annotations

import numpy as np
import pytest

from memspace.engine import decay
from memspace.engine.model import SpaceSettings

DAY = 86400.0
KINDS = ("exponential", "power_law", "two_component")


def settings(kind: str, **kw: float) -> SpaceSettings:
    return SpaceSettings(dimension=4, decay=kind, half_life_s=kw.pop("half_life_s", DAY), **kw)  # type: ignore[arg-type]


def test_none_is_the_identity() -> None:
    conf = np.array([0.9, 0.01, 1.0])
    out = decay.decayed(settings("none"), conf, np.zeros(3), np.zeros(3), now=1e9)
    assert out.tolist() == [0.9, 0.01, 1.0]


@pytest.mark.parametrize("kind", KINDS)
def test_monotone_decreasing_in_time_and_floored(kind: str) -> None:
    ages = np.array([0.0, 0.5, 1, 2, 5, 20, 1000]) * DAY
    out = decay.decayed(settings(kind, decay_floor=0.05), np.full(ages.size, 0.8), -ages, np.zeros(ages.size), now=0.0)
    assert out[0] == pytest.approx(0.8)
    assert np.all(np.diff(out) <= 0) and np.any(np.diff(out) < 0)
    assert out.min() == pytest.approx(0.05) and out.max() <= 0.8


@pytest.mark.parametrize("kind", KINDS)
def test_half_life(kind: str) -> None:
    s = settings(kind, decay_floor=0.0)
    kept = float(decay.decayed(s, [1.0], [0.0], [0], now=DAY)[0])
    expected = {"exponential": 0.5, "power_law": 0.5, "two_component": 0.5 * 2**-4 + 0.5 * 2**-0.25}[kind]
    assert kept == pytest.approx(expected)


@pytest.mark.parametrize("kind", KINDS)
def test_reinforcement_slows_decay(kind: str) -> None:
    s = settings(kind, decay_floor=0.0)
    out = decay.decayed(s, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0, 1, 10], now=3 * DAY)
    assert out[0] < out[1] < out[2]
    assert decay.effective_half_life(DAY, [0, 1]).tolist() == pytest.approx([DAY, DAY * (1 + np.log(2))])


@pytest.mark.parametrize("kind", KINDS + ("none",))
def test_never_above_stored_confidence_even_below_the_floor(kind: str) -> None:
    out = decay.decayed(settings(kind, decay_floor=0.3), [0.1, 0.6], [0.0, 0.0], [0, 0], now=50 * DAY)
    assert out[0] == pytest.approx(0.1)
    assert 0.3 - 1e-12 <= out[1] <= 0.6


def test_future_last_access_counts_as_age_zero() -> None:
    out = decay.decayed(settings("exponential"), [0.7], [5 * DAY], [0], now=0.0)
    assert out[0] == pytest.approx(0.7)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown decay 'linear'"):
        decay.retention("linear", [1.0], [1.0])
