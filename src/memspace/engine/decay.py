"""Confidence decay, computed lazily at recall time and vectorised over candidates.

A memory stores the confidence it was given (raised by reinforcement); what
recall ranks with is that confidence decayed by the time since its last
access. Kinds (``SpaceSettings.decay``), with ``age = now - last_access``
(negative ages count as 0) and ``h`` the half-life:

    none            identity: the stored confidence
    exponential     0.5 ** (age / h)
    power_law       1 / (1 + age / h)            (also 0.5 at age = h, but a long tail)
    two_component   0.5 * 0.5 ** (age / (h/4)) + 0.5 * 0.5 ** (age / (4h))
                    (a fast component for "just happened" and a slow one for what stays)

Reinforcement slows every kind: the effective half-life is
``h * (1 + ln(1 + access_count))``. The result is never below
``settings.decay_floor`` and never above the stored confidence (so a memory stored
with confidence below the floor keeps it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from memspace.engine.model import DECAYS, SpaceSettings

Floats = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


def effective_half_life(half_life_s: float, access_count: ArrayLike) -> Floats:
    """Half-life stretched by reinforcement: ``h * (1 + ln(1 + access_count))``."""
    count = np.maximum(np.asarray(access_count, dtype=np.float64), 0.0)
    return half_life_s * (1.0 + np.log1p(count))


def retention(kind: str, age: ArrayLike, half_life: ArrayLike) -> Floats:
    """Fraction of confidence kept after ``age`` seconds: 1 at age 0, decreasing in age."""
    a = np.maximum(np.asarray(age, dtype=np.float64), 0.0)
    h = np.asarray(half_life, dtype=np.float64)
    if kind == "none":
        return np.ones_like(a * h)
    if kind == "exponential":
        return np.asarray(np.exp2(-a / h), dtype=np.float64)
    if kind == "power_law":
        return np.asarray(1.0 / (1.0 + a / h), dtype=np.float64)
    if kind == "two_component":
        return np.asarray(0.5 * np.exp2(-a / (h * 0.25)) + 0.5 * np.exp2(-a / (h * 4.0)), dtype=np.float64)
    raise ValueError(f"unknown decay {kind!r}; expected one of {', '.join(DECAYS)}")


def decayed(
    settings: SpaceSettings,
    confidence: ArrayLike,
    last_access: ArrayLike,
    access_count: ArrayLike,
    now: float,
) -> Floats:
    """Decayed confidence per memory, clamped to ``[min(floor, stored), stored]``."""
    conf = np.asarray(confidence, dtype=np.float64)
    if settings.decay == "none":
        return conf.copy()
    kept = retention(
        settings.decay,
        now - np.asarray(last_access, dtype=np.float64),
        effective_half_life(settings.half_life_s, access_count),
    )
    return np.minimum(conf, np.maximum(conf * kept, settings.decay_floor))
