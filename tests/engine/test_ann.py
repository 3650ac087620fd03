"""The optional hnswlib seed index: close to exact, kept in step with writes, bypassed for filters."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import Driver, make_engine

pytest.importorskip("hnswlib")
DIM = 32


def loaded(ann_threshold: int) -> Driver:
    rng = np.random.default_rng(3)
    drv = Driver(make_engine(dimension=DIM, dedup_threshold=1.0, link_threshold=1.0,
                             engine_kwargs={"ann_threshold": ann_threshold}))
    drv.remember(*({"embedding": v, "tags": ["even" if i % 2 == 0 else "odd"]}
                   for i, v in enumerate(rng.normal(size=(400, DIM)))))
    return drv


def test_ann_seeds_agree_with_exact_search() -> None:
    exact, approx = loaded(0), loaded(100)
    rng = np.random.default_rng(4)
    overlap = 0
    for q in rng.normal(size=(20, DIM)):
        want = exact.engine.recall(embedding=q, k=10, mode="similarity", now=1.0)
        got = approx.engine.recall(embedding=q, k=10, mode="similarity", now=1.0)
        sims = {h.id: h.similarity for h in want}
        overlap += len(sims.keys() & {h.id for h in got})
        for h in got:       # candidates are re-scored exactly
            if h.id in sims:
                assert h.similarity == pytest.approx(sims[h.id], abs=1e-6)
    assert approx.engine._ann is not None and exact.engine._ann is None
    assert overlap >= 190   # recall@10 >= 0.95


def test_index_follows_forgets_updates_and_filters() -> None:
    drv = loaded(100)
    e = drv.engine
    q = e.get("m7").embedding
    assert e.recall(embedding=q, k=1, mode="similarity", now=1.0)[0].id == "m7"
    drv.forget("m7")
    assert "m7" not in [h.id for h in e.recall(embedding=q, k=10, mode="similarity", now=1.0)]
    new = np.zeros(DIM)
    new[0] = 1.0
    drv.one(id="m8", embedding=new)           # an update re-embeds m8
    hit = e.recall(embedding=new, k=1, mode="similarity", now=1.0)[0]
    assert (hit.id, hit.similarity) == ("m8", pytest.approx(1.0))
    hits = e.recall(embedding=q, k=5, mode="similarity", tags=["odd"], now=1.0)   # filters: exact scan
    assert all(int(h.id[1:]) % 2 == 1 for h in hits) and len(hits) == 5
    assert e._ann is not None and len(e._ann) == 399


def test_below_the_threshold_the_scan_stays_exact() -> None:
    drv = loaded(1000)
    drv.engine.recall(embedding=np.ones(DIM), k=3, now=1.0)
    assert drv.engine._ann is None


def test_catch_up_is_bounded_and_recall_scans_exactly_while_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    from memspace.engine import store

    monkeypatch.setattr(store, "ANN_SYNC_BUDGET", 100)
    drv = loaded(100)
    e = drv.engine
    assert e.catch_up_index(50) == 350
    assert e._ann is not None and len(e._ann) == 50
    hits = e.recall(embedding=np.ones(DIM), k=3, mode="similarity", now=1.0)   # folds 100 more, scans exactly
    assert len(e._ann) == 150 and e.catch_up_index(0) == 250
    assert [h.id for h in hits] == [h.id for h in loaded(0).engine.recall(embedding=np.ones(DIM), k=3,
                                                                          mode="similarity", now=1.0)]
    assert e.catch_up_index() == 0 and len(e._ann) == 400
    assert loaded(0).engine.catch_up_index() == 0   # index off: nothing to do


def test_no_change_tracking_without_an_index_and_the_index_is_dropped_when_small() -> None:
    drv = loaded(390)
    e = drv.engine
    assert e._hot.changed is None                     # nothing accumulates before an index exists
    assert e.catch_up_index() == 0 and e._ann is not None and len(e._ann) == 400
    drv.forget(*[f"m{i}" for i in range(20)])
    assert e._hot.changed is not None and len(e._hot.changed) == 20
    assert e.recall(embedding=np.ones(DIM), k=2, now=1.0)   # below 390 now: exact, index dropped
    assert e._ann is None and e._hot.changed is None
