"""Spreading activation over memory links: the one rule, as a pure function.

Seeds are ``(id, similarity)`` pairs; a seed's own contribution is its
similarity clamped to 0..1. From each seed the walk follows links depth first.
A node at depth ``d`` (seed = 0) reached from its parent gets

    contribution = parent's contribution x edge weight x exp(-0.7 * d)

Contributions accumulate per node and the total activation is capped at 1.0.
A contribution below 0.01 at depth 0, 0.05 at depths 1-2 and 0.1 at depth >= 3
is dropped and not spread further; the walk stops at ``max_depth`` (default 3,
at most 4); a node already on the current path is not expanded again. What
spreads along a path is that path's own contribution (not the node's capped
total), so the result does not depend on the order of the seeds.

Golden case: chain 0->1->2->3->4 with weights 0.9 and one seed of activation
1.0 gives 1, 0.447, 0.099 and leaves 3 and 4 unreached (0.011 < 0.1).

Each reached node also records the path (seed, ..., node) of its strongest
single contribution (the first found on ties). The function knows nothing about
tiers: ``neighbours(id)`` yields ``(target, weight)`` for whichever memories the
caller lets the walk reach.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MAX_DEPTH = 4
DEFAULT_DEPTH = 3
DEPTH_DECAY = 0.7
_FACTOR = tuple(math.exp(-DEPTH_DECAY * d) for d in range(MAX_DEPTH + 1))
_MIN_CONTRIBUTION = (0.01, 0.05, 0.05, 0.1, 0.1)

Neighbours = Callable[[str], Iterable[tuple[str, float]]]


@dataclass(frozen=True, slots=True)
class Activation:
    """A reached node: its total activation (<= 1) and the path of its strongest contribution."""

    activation: float
    path: tuple[str, ...]

    @property
    def depth(self) -> int:
        return len(self.path) - 1


def min_contribution(depth: int) -> float:
    """The smallest contribution kept (and spread further) at ``depth``."""
    return _MIN_CONTRIBUTION[min(depth, MAX_DEPTH)]


def spread(
    seeds: Iterable[tuple[str, float]],
    neighbours: Neighbours,
    max_depth: int = DEFAULT_DEPTH,
) -> dict[str, Activation]:
    """Activation of every node reached from ``seeds``, in the order nodes were first reached.

    ``max_depth`` must be in 0..4 (0 = the seeds only); a seed listed twice counts once.
    """
    if not 0 <= max_depth <= MAX_DEPTH:
        raise ValueError(f"max_depth must be in 0..{MAX_DEPTH}, got {max_depth}")
    total: dict[str, float] = {}
    best: dict[str, tuple[float, tuple[str, ...]]] = {}
    seen_seeds: set[str] = set()
    for seed, similarity in seeds:
        start = min(max(float(similarity), 0.0), 1.0)
        if seed in seen_seeds or start < _MIN_CONTRIBUTION[0]:
            continue
        seen_seeds.add(seed)
        # Depth-first with an explicit stack; children are pushed in reverse so they are visited
        # in the order ``neighbours`` gives them, which keeps accumulation order deterministic.
        stack: list[tuple[str, float, tuple[str, ...]]] = [(seed, start, (seed,))]
        while stack:
            node, contribution, path = stack.pop()
            total[node] = total.get(node, 0.0) + contribution
            if node not in best or contribution > best[node][0]:
                best[node] = (contribution, path)
            depth = len(path)
            if depth > max_depth:
                continue
            factor, floor = _FACTOR[depth], _MIN_CONTRIBUTION[depth]
            children = []
            for target, weight in neighbours(node):
                if target in path:
                    continue
                child = contribution * weight * factor
                if child >= floor:
                    children.append((target, child, path + (target,)))
            stack.extend(reversed(children))
    return {node: Activation(min(total[node], 1.0), best[node][1]) for node in total}
