"""Warm-tier search at size: float16 storage must rank like exact float32 search."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memspace.storage.tiers import WarmTier
from memspace.testing.tiers import clustered, exact_top_k, memories, recall_at_k


def test_20k_warm_search_matches_float32_exact_on_clustered_data(tmp_path: Path) -> None:
    dim, n = 384, 20_000
    rows = clustered(n, dim, clusters=100, spread=0.3, seed=11)
    queries = clustered(40, dim, clusters=100, spread=0.3, seed=12)   # same centres, new points
    batch = memories(rows)
    ids = [m.id for m in batch]
    tier = WarmTier.open(tmp_path / "warm", None)
    tier.add(batch[: n // 2])
    tier.add(batch[n // 2:])
    # Exercise dead rows too: the reference drops them as well.
    dead = set(range(0, n, 97))
    for i in dead:
        tier.discard(ids[i])
    keep = np.array([i not in dead for i in range(n)])
    live_rows, live_ids = rows[keep], [ids[i] for i in range(n) if keep[i]]

    recalls, exact_lists = [], 0
    for q in queries:
        found = [h for h, _ in tier.search(q, 10)]
        expected = exact_top_k(live_rows, live_ids, q, 10)
        recalls.append(recall_at_k(found, expected))
        exact_lists += found == expected
    recall = float(np.mean(recalls))
    print(f"\nwarm tier, {n} x {dim} float16, clustered: recall@10 = {recall:.4f}, "
          f"identical top-10 lists {exact_lists}/{len(queries)}")
    assert recall >= 0.95
    assert len(tier) == n - len(dead)
    # Reopened from its manifest, the memory-mapped tier answers identically.
    state = tier.state()
    before = tier.search(queries[0], 10)
    tier.close()
    again = WarmTier.open(tmp_path / "warm", state)
    assert again.search(queries[0], 10) == before
    again.close()
