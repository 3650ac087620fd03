"""Recall: exact cosine seeds, optional spreading activation, ranking. Reads state, never writes it.

Seeds are the top ``k`` memories by cosine that pass the filters and have a
cosine ``>= threshold``. Which tiers are searched: by default the hot tier,
plus the warm tier when hot gives fewer than ``k`` seeds; or exactly the tiers
asked for. In ``spreading`` mode activation then flows over links into any
memory of the *reachable* tiers (default: hot and warm; with explicit tiers,
those), so a recall can surface a warm memory linked from a hot one. Filters
(tags: all of them; since/until: on created_at, inclusive) apply to every hit,
seeds and reached memories alike; the threshold applies to seeds only.

Ranking: ``score = w_similarity * max(similarity, 0) + w_activation * activation
+ w_confidence * decayed_confidence``, best first (ties: higher similarity, then
id). At most ``k`` hits are returned. The hot-tier search is one matrix-vector
product plus ``argpartition``; filters are boolean masks; decay is computed for
the candidates only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from memspace.engine import decay, validate
from memspace.engine.hot import HotTier
from memspace.engine.model import MODES, TIERS, Hit, Limits, Memory, SpaceSettings, Vector
from memspace.engine.spreading import MAX_DEPTH, Activation, spread
from memspace.engine.tiers import TierStore
from memspace.engine.validate import invalid

Bools = npt.NDArray[np.bool_]
#: ``(query, k) -> candidate hot rows`` or None (scan exactly); see :mod:`.ann`.
AnnSearch = Callable[[Vector, int], "npt.NDArray[np.intp] | None"]


@dataclass(frozen=True, slots=True)
class Query:
    """A validated recall request (see ``Engine.recall``)."""

    vector: Vector
    k: int
    threshold: float
    mode: str
    max_depth: int
    tags: tuple[str, ...]
    since: float | None
    until: float | None
    tiers: tuple[str, ...] | None
    now: float

    @property
    def filtered(self) -> bool:
        return bool(self.tags) or self.since is not None or self.until is not None

    def accepts(self, m: Memory) -> bool:
        """The filters, for a memory outside the hot tier."""
        return ((self.since is None or m.created_at >= self.since)
                and (self.until is None or m.created_at <= self.until)
                and all(t in m.tags for t in self.tags))


def make_query(embed_text: Callable[[str], Vector], dimension: int, limits: Limits, *, query: str | None,
               embedding: Any, k: int, threshold: float, mode: str, max_depth: int,
               tags: Sequence[str] | None, since: float | None, until: float | None,
               tiers: Sequence[str] | None, now: float) -> Query:
    """A validated :class:`Query` (arguments as ``Engine.recall`` takes them); InvalidArgument
    naming the first bad field. The cue is ``embedding`` and/or ``embed_text(query)`` (both:
    their normalised sum); ``embed_text`` is called only for a query text."""
    if query is None and embedding is None:
        raise invalid("query", "recall needs a query text or an embedding")
    vector = None if embedding is None else validate.unit_vector(embedding, dimension, "embedding")
    if query is not None:
        if not isinstance(query, str) or not query.strip():
            raise invalid("query", "must be a non-empty string")
        text_vec = embed_text(query)
        vector = text_vec if vector is None else validate.unit_vector(vector + text_vec, dimension, "embedding")
    assert vector is not None
    if mode not in MODES:
        raise invalid("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if tiers is not None:
        if isinstance(tiers, str) or not tiers or any(t not in TIERS for t in tiers):
            raise invalid("tiers", f"must be a non-empty list drawn from {', '.join(TIERS)}, got {tiers!r}")
        tiers = tuple(tiers)
    return Query(
        vector=vector, k=validate.integer(k, "k", 1, limits.max_k),
        threshold=validate.number(threshold, "threshold", -1.0, 1.0), mode=mode,
        max_depth=validate.integer(max_depth, "max_depth", 0, MAX_DEPTH),
        tags=() if tags is None else validate.tags(tags, "tags", limits),
        since=None if since is None else validate.timestamp(since, "since"),
        until=None if until is None else validate.timestamp(until, "until"),
        tiers=tiers, now=validate.timestamp(now, "now"),
    )


@dataclass(slots=True)
class _Candidate:
    id: str
    tier: str
    row: int                 # hot row, or -1
    memory: Memory | None    # for warm/cold
    similarity: float
    activation: float = 0.0
    path: tuple[str, ...] = ()


def hot_mask(hot: HotTier, q: Query) -> Bools | None:
    """Rows passing the filters, or None when there are no filters."""
    if not q.filtered:
        return None
    mask = np.zeros(len(hot), dtype=np.bool_)
    mask[hot.rows_with_tags(q.tags)] = True
    if q.since is not None:
        mask &= hot.created_at >= q.since
    if q.until is not None:
        mask &= hot.created_at <= q.until
    return mask


def hot_seeds(hot: HotTier, q: Query, mask: Bools | None, ann: AnnSearch | None = None) -> list[_Candidate]:
    """Top-k hot rows by exact cosine (ties: lower row). Without filters an approximate index
    may propose the candidate rows; their cosines are still computed exactly."""
    n = len(hot)
    if n == 0:
        return []
    proposed = ann(q.vector, q.k) if ann is not None and mask is None else None
    if proposed is not None:
        top = proposed
        top_sims = hot.embeddings[top] @ q.vector
    else:
        sims = hot.embeddings @ q.vector
        if mask is not None:
            sims = np.where(mask, sims, -np.inf)
        k = min(q.k, n)
        top = np.argpartition(sims, n - k)[n - k:] if k < n else np.arange(n)
        top_sims = sims[top]
    order = np.lexsort((top, -top_sims))
    top, top_sims = top[order], top_sims[order]
    keep = top_sims >= q.threshold
    return [_Candidate(hot.ids[r], "hot", r, None, s) for r, s in zip(top[keep].tolist(), top_sims[keep].tolist())]


def tier_seeds(tier: TierStore, q: Query) -> list[_Candidate]:
    """Top-k of a lower tier; with filters, widen the search until k pass or the tier is exhausted."""
    size = len(tier)
    want = min(size, q.k if not q.filtered else 4 * q.k)
    while want > 0:
        found = tier.search(q.vector, want)
        out: list[_Candidate] = []
        for memory_id, sim in found:
            if sim < q.threshold:
                return out
            m = tier.get(memory_id)
            if m is not None and q.accepts(m):
                out.append(_Candidate(memory_id, tier.name, -1, m, sim))
                if len(out) == q.k:
                    return out
        if want >= size:
            return out
        want = min(size, want * 4)
    return []


def neighbours_over(hot: HotTier | None, lower: list[TierStore]) -> Callable[[str], Iterable[tuple[str, float]]]:
    """Links of a memory in the reachable tiers (``hot`` None: not reachable), to memories in them only.

    Links to forgotten memories held by warm/cold entries (which are immutable) are skipped here.
    """
    rows: dict[str, int] = hot.row if hot is not None else {}

    def elsewhere(memory_id: str) -> bool:
        return any(memory_id in t for t in lower)

    def live(memory_id: str) -> bool:
        return memory_id in rows or elsewhere(memory_id)

    # The walk asks for a node's links once per path that reaches it; nothing changes during a
    # recall, so each node's list is looked up once.
    seen: dict[str, list[tuple[str, float]]] = {}

    def neighbours(node: str) -> list[tuple[str, float]]:
        found = seen.get(node)
        if found is not None:
            return found
        r = rows.get(node)
        if hot is not None and r is not None:
            found = hot.neighbours(r, elsewhere)
        else:
            tier = next((t for t in lower if node in t), None)
            found = [] if tier is None else [(lk.target, lk.weight) for lk in tier.links(node) if live(lk.target)]
        seen[node] = found
        return found

    return neighbours


def run(hot: HotTier, warm: TierStore | None, cold: TierStore | None, settings: SpaceSettings,
        q: Query, ann: AnnSearch | None = None) -> list[Hit]:
    lower = {t.name: t for t in (warm, cold) if t is not None}
    if q.tiers is None:
        searched = ["hot"]
        reachable = [t for t in (warm,) if t is not None]
    else:
        searched = [t for t in TIERS if t in q.tiers]
        reachable = [lower[t] for t in searched if t in lower]
    with_hot = "hot" in searched
    mask = hot_mask(hot, q) if with_hot else None
    seeds = hot_seeds(hot, q, mask, ann) if with_hot else []
    if q.tiers is None and len(seeds) < q.k and warm is not None:
        searched.append("warm")
    for name in searched:
        if name != "hot" and name in lower:
            seeds += tier_seeds(lower[name], q)
    rank = {name: i for i, name in enumerate(TIERS)}
    seeds.sort(key=lambda c: (-c.similarity, rank[c.tier], c.row, c.id))
    seeds = seeds[: q.k]
    if q.mode == "similarity" or q.max_depth == 0:
        for c in seeds:
            c.activation, c.path = min(max(c.similarity, 0.0), 1.0), (c.id,)
        candidates = seeds
    else:
        neighbours = neighbours_over(hot if with_hot else None, reachable)
        reached = spread([(c.id, c.similarity) for c in seeds], neighbours, q.max_depth)
        candidates = _with_reached(hot, reachable, q, mask, seeds, reached)
    return _rank(hot, settings, q, candidates)


def _with_reached(hot: HotTier, reachable: list[TierStore], q: Query, mask: Bools | None,
                  seeds: list[_Candidate], reached: dict[str, Activation]) -> list[_Candidate]:
    """Seeds plus the memories spreading reached, with their activation, path and similarity."""
    by_id = {c.id: c for c in seeds}
    out = list(seeds)
    for c in seeds:
        a = reached.get(c.id)
        c.activation, c.path = (a.activation, a.path) if a is not None else (0.0, (c.id,))
    hot_new: list[_Candidate] = []
    for memory_id, a in reached.items():
        if memory_id in by_id:
            continue
        r = hot.row.get(memory_id)
        if r is not None:
            if mask is None or mask[r]:
                hot_new.append(_Candidate(memory_id, "hot", r, None, 0.0, a.activation, a.path))
            continue
        tier = next((t for t in reachable if memory_id in t), None)
        m = tier.get(memory_id) if tier is not None else None
        if tier is not None and m is not None and q.accepts(m):
            out.append(_Candidate(memory_id, tier.name, -1, m, float(m.embedding @ q.vector), a.activation, a.path))
    if hot_new:
        sims = hot.embeddings[[c.row for c in hot_new]] @ q.vector
        for c, s in zip(hot_new, sims.tolist()):
            c.similarity = s
        out += hot_new
    return out


def _rank(hot: HotTier, settings: SpaceSettings, q: Query, cands: list[_Candidate]) -> list[Hit]:
    if not cands:
        return []
    n = len(cands)
    conf, last, count = np.empty(n), np.empty(n), np.empty(n)
    hot_pos = [i for i, c in enumerate(cands) if c.row >= 0]
    if hot_pos:
        rows = [cands[i].row for i in hot_pos]
        conf[hot_pos], last[hot_pos], count[hot_pos] = hot.confidence[rows], hot.last_access[rows], \
            hot.access_count[rows]
    for i, c in enumerate(cands):
        if c.memory is not None:
            conf[i], last[i], count[i] = c.memory.confidence, c.memory.last_access, c.memory.access_count
    dconf = decay.decayed(settings, conf, last, count, q.now)
    sims = np.array([c.similarity for c in cands])
    acts = np.array([c.activation for c in cands])
    scores = (settings.w_similarity * np.maximum(sims, 0.0) + settings.w_activation * acts
              + settings.w_confidence * dconf)
    score_l, sim_l, act_l, conf_l = scores.tolist(), sims.tolist(), acts.tolist(), dconf.tolist()
    order = sorted(range(n), key=lambda i: (-score_l[i], -sim_l[i], cands[i].id))[: q.k]
    hits = []
    for i in order:
        c = cands[i]
        if c.row >= 0:
            content, tags, metadata = hot.content[c.row], hot.tags[c.row], dict(hot.metadata[c.row])
        else:
            assert c.memory is not None
            content, tags, metadata = c.memory.content, c.memory.tags, dict(c.memory.metadata)
        hits.append(Hit(c.id, content, score_l[i], sim_l[i], act_l[i], conf_l[i], c.path, tags, metadata, c.tier))
    return hits
