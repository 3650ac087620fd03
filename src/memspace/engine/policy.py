"""Tier policy: which memories leave the hot tier (and the warm tier) when one is over capacity.

Least recently accessed first. Hot memories are ranked by ``last_access``
(ties: lower row first); they enter the warm tier in that order, so the warm
tier's insertion order (``TierStore.ids()``) is already least-recent-first and
its oldest entries are the ones that go cold. A promotion removes a memory
from its tier, so what stays in warm keeps that order.

The decision is pure (:func:`choose_demotions`); moving data happens in one
place, ``Engine.demote``. Tier placement is physical and never logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Demotion:
    """Hot ids to move to warm, then warm ids to move to cold (each least recent first).

    ``to_cold`` may name memories that are in ``to_warm`` (when the warm tier cannot take
    them all); ``Engine.demote`` moves them on after they reach warm.
    """

    to_warm: tuple[str, ...] = ()
    to_cold: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.to_warm or self.to_cold)


def choose_demotions(
    hot_ids: Sequence[str],
    hot_last_access: npt.NDArray[np.float64],
    hot_capacity: int,
    warm_ids: Iterable[str] | None,
    warm_count: int,
    warm_capacity: int,
    *,
    has_cold: bool,
) -> Demotion:
    """The moves that bring hot to ``hot_capacity`` and warm to ``warm_capacity``.

    ``warm_ids is None`` means there is no warm tier (nothing is demoted); without a cold
    tier the warm tier is allowed to grow past its capacity.
    """
    if hot_capacity < 0 or warm_capacity < 0:
        raise ValueError("tier capacities must be >= 0")
    if warm_ids is None:
        return Demotion()
    excess = len(hot_ids) - hot_capacity
    to_warm: tuple[str, ...] = ()
    if excess > 0:
        order = np.argsort(hot_last_access[: len(hot_ids)], kind="stable")[:excess]
        to_warm = tuple(hot_ids[int(r)] for r in order)
    over = warm_count + len(to_warm) - warm_capacity
    to_cold: tuple[str, ...] = ()
    if has_cold and over > 0:
        # Oldest warm entries first, then the newly demoted ones in their (least recent first) order.
        from_warm = tuple(islice(warm_ids, min(over, warm_count)))
        to_cold = from_warm + to_warm[: over - len(from_warm)]
    return Demotion(to_warm, to_cold)
