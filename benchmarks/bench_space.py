"""Engine and storage benchmark, through ``memspace.open_space`` on clustered d=384 vectors.

    python benchmarks/bench_space.py                 # full sizes (10k and 100k memories): minutes
    python benchmarks/bench_space.py --quick         # small sizes, well under a minute
    python benchmarks/bench_space.py --compare-src OLD/src   # also reopen with another source tree

Measures, printing a table per section and writing one JSON file
(``benchmarks/results/bench_space.json``, or ``--out``):

* remember throughput with ``wal.fsync = always``: single remembers (one fsync
  each) and ``remember_batch`` of 100 and of 1000, in interleaved rounds;
* recall latency (similarity, k=10) at the small and large size, interleaved
  per query with the raw numpy top-k on the same matrix (``M @ q``,
  ``argpartition``, sort of the top k), and spreading mode against similarity;
* WAL replay: a space whose whole state is its WAL (one STORE record per
  memory, as single remembers log them) opened in a fresh process: records/s,
  also as a worker opens it (its change feed decodes the last 10,000 records)
  and for a space without auto-links; plus the phases (WAL open, WAL read,
  decode + apply one record at a time, bulk replay) in fresh processes too;
* reopen from a snapshot (checkpoint, close, open in a fresh process);
* RSS per 100k memories (psutil, in a fresh process: after open minus before);
* the approximate index (hnswlib, ``tiers.ann_threshold``) against the exact
  scan at the large size: p50 and recall@10, exact cosine top-10 as the truth.

``--compare-src`` runs the fresh-process reopen measurements with that source
tree first on ``PYTHONPATH`` as well, alternating with the current one, so
before/after numbers come from the same run. Timings vary with machine load:
compare ratios from one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    RESULTS,
    clustered_vectors,
    filesystem,
    interleaved,
    machine,
    run_child,
    summary_ms,
    table,
    write_json,
)

import memspace
from memspace import config as config_mod

DIM = 384
K = 10
FULL = {"small": 10_000, "large": 100_000, "queries_small": 300, "queries_large": 200, "rounds": 10, "reps": 3,
        "ann_threshold": 50_000}
QUICK = {"small": 1_000, "large": 3_000, "queries_small": 60, "queries_large": 60, "rounds": 2, "reps": 1,
         "ann_threshold": 1_000}
METRICS = (
    "remember_single_per_s", "remember_batch100_per_s", "remember_batch1000_per_s",
    "recall_small_p50_ms", "recall_small_p99_ms", "numpy_small_p50_ms", "numpy_small_p99_ms",
    "recall_small_vs_numpy_p50", "spreading_small_p50_ms", "spreading_small_p99_ms", "spreading_small_overhead",
    "recall_large_p50_ms", "recall_large_p99_ms", "numpy_large_p50_ms", "numpy_large_p99_ms",
    "recall_large_vs_numpy_p50", "spreading_large_p50_ms", "spreading_large_p99_ms", "spreading_large_overhead",
    "replay_records", "replay_open_s", "replay_records_per_s", "replay_wal_open_s", "replay_wal_read_s",
    "replay_decode_s", "replay_apply_s", "replay_bulk_s", "replay_general_records_per_s",
    "replay_bulk_records_per_s", "replay_feed_open_s", "replay_feed_records_per_s", "replay_nolinks_open_s",
    "replay_nolinks_records_per_s", "snapshot_memories", "snapshot_reopen_s", "checkpoint_s", "rss_mb_per_100k",
    "rss_wal_mb_per_100k", "ann_build_s", "ann_p50_ms", "exact_p50_ms", "ann_speedup", "ann_recall_at_10",
    "exact_recall_at_10",
)


def bench_config(**overrides: Any) -> config_mod.Config:
    """Built-in defaults (no file, no environment), so runs are comparable."""
    return config_mod.load(env={}, overrides=overrides)


def content(i: int) -> str:
    return f"note {i}: met someone at the lab about project {i % 97}, follow up next week"


# -- building spaces -----------------------------------------------------------------------------

def build_batched(path: Path, vectors: np.ndarray, fsync: str = "never") -> tuple[Any, list[str]]:
    """An open space holding ``vectors``, written with remember_batch of 1000; and the ids in order."""
    space = memspace.open_space(path, dimension=DIM, fsync=fsync, config=bench_config())
    ids: list[str] = []
    for start in range(0, len(vectors), 1000):
        items = [{"embedding": v, "content": content(start + i), "tags": [f"t{(start + i) % 8}"]}
                 for i, v in enumerate(vectors[start:start + 1000])]
        results = space.remember_batch(items)
        if any(r.outcome != "stored" for r in results):
            raise RuntimeError("the generated vectors produced duplicates; the benchmark assumes none")
        ids += [r.id for r in results]
    return space, ids


def build_wal_only(path: Path, vectors: np.ndarray, settings: dict[str, Any] | None = None
                   ) -> tuple[list[str], int]:
    """A space whose whole state is in its WAL, one record per memory: what single remembers
    through a server log (each with its request id, a uuid4 hex as the client sends). The
    engine plans them a thousand at a time (the same decisions: dedup, auto-links both ways),
    which is far faster than a search per remember; each entry is then logged as its own
    record. ``settings``: the space's (auto-links off, say). Returns the ids in order and the
    number of links."""
    from memspace.engine import Engine, records
    from memspace.ids import new_memory_id
    from memspace.storage.wal import Wal

    space = memspace.open_space(path, dimension=DIM, fsync="never", config=bench_config(), settings=settings)
    settings = space.settings
    space.close()
    engine = Engine(settings)
    ids: list[str] = []
    with Wal.open(path / "wal", fsync="never") as wal:
        for start in range(0, len(vectors), 1000):
            items = [{"embedding": v, "content": content(start + i), "tags": [f"t{(start + i) % 8}"]}
                     for i, v in enumerate(vectors[start:start + 1000])]
            rec = engine.plan_remember(items, 1.7e9 + start, new_memory_id)
            stores = [e for e in rec.entries if isinstance(e, records.StoreEntry)]
            if len(stores) != len(rec.entries):
                raise RuntimeError("the generated vectors produced duplicates; the benchmark assumes none")
            for entry in stores:
                wal.append(*records.encode(records.Remember((entry,), uuid.uuid4().hex)))
                ids.append(entry.id)
            engine.apply(rec)
            wal.commit()
    return ids, engine.stats().links


# -- sections --------------------------------------------------------------------------------------

def remember_throughput(root: Path, rounds: int, seed: int) -> dict[str, Any]:
    """fsync=always: 100 single remembers, one batch of 100 and one of 1000 per round, each in
    its own space, the order rotating per round."""
    vectors = clustered_vectors(rounds * 1200, seed=seed, sample_seed=2)
    spaces = {name: memspace.open_space(root / f"remember-{name}", dimension=DIM, fsync="always",
                                        config=bench_config())
              for name in ("single", "batch100", "batch1000")}
    per_call: list[float] = []
    totals = {name: 0.0 for name in spaces}
    counts = {name: 0 for name in spaces}
    try:
        for r in range(rounds):
            block = vectors[r * 1200:(r + 1) * 1200]
            order = list(spaces)[r % 3:] + list(spaces)[:r % 3]
            for name in order:
                space = spaces[name]
                t0 = time.perf_counter()
                if name == "single":
                    for v in block[:100]:
                        t1 = time.perf_counter()
                        space.remember(embedding=v, content="single")
                        per_call.append(time.perf_counter() - t1)
                    n = 100
                else:
                    n = 100 if name == "batch100" else 1000
                    rows = block[100:200] if n == 100 else block[200:1200]
                    space.remember_batch([{"embedding": v, "content": "batched"} for v in rows])
                totals[name] += time.perf_counter() - t0
                counts[name] += n
    finally:
        for space in spaces.values():
            space.close()
    out = {name: {"memories": counts[name], "seconds": totals[name], "per_s": counts[name] / totals[name]}
           for name in spaces}
    out["single"]["call"] = summary_ms(per_call)
    return out


def recall_latency(space: Any, matrix: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """Engine recall (similarity and spreading) and the raw numpy top-k, interleaved per query."""
    def raw(q: np.ndarray) -> np.ndarray:
        sims = matrix @ q
        top = np.argpartition(-sims, K)[:K]
        return top[np.argsort(-sims[top])]

    contenders = {
        "similarity": lambda q: space.recall(embedding=q, k=K, mode="similarity"),
        "spreading": lambda q: space.recall(embedding=q, k=K, mode="spreading"),
        "numpy": raw,
    }
    interleaved(contenders, queries[:5])  # warm-up: first-call costs out of the samples
    times = interleaved(contenders, queries)
    out = {name: summary_ms(ts) for name, ts in times.items()}
    out["vs_numpy_p50"] = out["similarity"]["p50_ms"] / out["numpy"]["p50_ms"]
    out["spreading_overhead"] = out["spreading"]["p50_ms"] / out["similarity"]["p50_ms"]
    hits = space.recall(embedding=queries[0], k=K, mode="spreading")
    out["spreading_linked_hits"] = sum(1 for h in hits if len(h.path) > 1)
    return out


def reopen_runs(kind: str, path: Path, reps: int, baseline: str | None,
                baseline_path: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Open ``path`` in fresh processes, ``reps`` times, alternating current and baseline trees
    (the baseline opens ``baseline_path`` if given: a snapshot it wrote in its own format)."""
    runs: dict[str, list[dict[str, Any]]] = {"current": [], "baseline": []}
    for _ in range(reps):
        runs["current"].append(run_child([__file__, "--child", kind, str(path)]))
        if baseline:
            runs["baseline"].append(run_child([__file__, "--child", kind, str(baseline_path or path)],
                                              pythonpath=baseline))
    return runs


def baseline_wal(wal_dir: Path, base_dir: Path, baseline: str) -> Path:
    """The same records as ``wal_dir`` logged by the ``baseline`` tree, in its own record format
    (an older tree may not read this one's)."""
    import pickle

    from memspace.engine import records
    from memspace.storage.wal import Wal

    shutil.copytree(wal_dir, base_dir, ignore=shutil.ignore_patterns("wal", "LOCK"))
    with Wal.open(wal_dir / "wal", fsync="never") as wal:
        logged = [records.decode(r.type, r.payload) for r in wal.records()]
    (base_dir / "records.pickle").write_bytes(pickle.dumps(logged, protocol=pickle.HIGHEST_PROTOCOL))
    run_child([__file__, "--child", "write-wal", str(base_dir)], pythonpath=baseline)
    return base_dir


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(np.median([r[key] for r in runs]))


def ann_vs_exact(exact: Any, ann: Any, matrix: np.ndarray, ids: list[str], queries: np.ndarray) -> dict[str, Any]:
    from memspace.engine.ann import available

    if not available():
        raise RuntimeError("hnswlib is not installed (pip install -e '.[ann]')")
    t0 = time.perf_counter()
    pending = ann.engine.catch_up_index()   # build it all now, rather than ANN_SYNC_BUDGET per recall
    build_s = time.perf_counter() - t0
    if pending:
        raise RuntimeError(f"the approximate index is still {pending} changes behind")
    found: dict[str, list[set[str]]] = {"exact": [], "ann": []}

    def run(name: str, space: Any) -> Any:
        return lambda q: found[name].append({h.id for h in space.recall(embedding=q, k=K, mode="similarity")})

    interleaved({"exact": run("exact", exact), "ann": run("ann", ann)}, queries[:5])
    found = {"exact": [], "ann": []}
    times = interleaved({"exact": run("exact", exact), "ann": run("ann", ann)}, queries)
    truth = []
    for q in queries:
        sims = matrix @ q
        top = np.argpartition(-sims, K)[:K]
        truth.append({ids[i] for i in top.tolist()})
    out: dict[str, Any] = {name: summary_ms(ts) for name, ts in times.items()}
    out["build_s"] = build_s
    out["speedup_p50"] = out["exact"]["p50_ms"] / out["ann"]["p50_ms"]
    for name in ("exact", "ann"):
        out[name]["recall_at_10"] = float(np.mean([len(f & t) / K for f, t in zip(found[name], truth)]))
    return out


# -- children (fresh processes) ----------------------------------------------------------------------

def child(kind: str, path: Path) -> dict[str, Any]:
    if kind == "checkpoint":
        space = memspace.open_space(path, fsync="never", config=bench_config())
        info = space.checkpoint()
        space.close()
        return {"checkpoint_s": info.seconds, "bytes": info.bytes}
    if kind == "open":
        t0 = time.perf_counter()
        space = memspace.open_space(path, fsync="never")
        seconds = time.perf_counter() - t0
        stats = space.stats()
        out = {"open_s": seconds, "records": stats.recovered_records, "memories": space.count()}
        space.close()
        return out
    if kind == "open-feed":   # as a worker opens its space: the change feed keeps the last events
        from memspace.worker.feed import Feed

        feed = Feed()
        t0 = time.perf_counter()
        space = memspace.open_space(path, fsync="never", on_record=feed.record, record_tail=feed.keep)
        seconds = time.perf_counter() - t0
        out = {"open_s": seconds, "records": space.stats().recovered_records, "events": len(feed.events)}
        space.close()
        return out
    if kind == "write-wal":   # run with a baseline tree first on the path: its own record format
        import pickle

        from memspace.engine import records
        from memspace.storage.wal import Wal

        logged = pickle.loads((path / "records.pickle").read_bytes())
        with Wal.open(path / "wal", fsync="never") as wal:
            for rec in logged:
                wal.append(*records.encode(rec))
            wal.commit()
        return {"records": len(logged)}
    if kind == "rss":
        import importlib

        import psutil

        importlib.import_module("memspace.storage.space")  # imports are not data: load them first
        with tempfile.TemporaryDirectory() as warm:  # nor is what any open sets up once (embedder, ...)
            memspace.open_space(Path(warm) / "empty", dimension=DIM, fsync="never").close()
        proc = psutil.Process()
        gc.collect()
        before = proc.memory_info().rss
        space = memspace.open_space(path, fsync="never")
        gc.collect()
        after = proc.memory_info().rss
        n = space.count()
        space.close()
        return {"before_mb": before / 2**20, "after_mb": after / 2**20, "memories": n,
                "mb_per_100k": (after - before) / 2**20 * 100_000 / n}
    if kind in ("general", "bulk"):
        return replay_phases(path, kind)
    raise SystemExit(f"unknown child {kind!r}")


def replay_phases(path: Path, mode: str) -> dict[str, Any]:
    """The parts of a WAL-only reopen, timed one after the other: ``general`` decodes and
    applies record by record (the path before bulk replay), ``bulk`` calls Engine.replay."""
    from memspace.engine import Engine, SpaceSettings, records
    from memspace.storage.wal import Wal

    settings = SpaceSettings.from_dict(json.loads((path / "space.json").read_bytes())["settings"])
    clock = time.perf_counter
    t0 = clock()
    wal = Wal.open(path / "wal", fsync="never")
    t1 = clock()
    logged = list(wal.records())
    t2 = clock()
    wal.close()
    out = {"wal_open_s": t1 - t0, "wal_read_s": t2 - t1, "records": len(logged)}
    engine = Engine(settings)
    if mode == "general":  # the recovery loop before bulk replay, with a clock around each step
        decode_s = apply_s = 0.0
        for r in logged:
            t3 = clock()
            rec = records.decode(r.type, r.payload)
            t4 = clock()
            engine.apply(rec)
            t5 = clock()
            decode_s += t4 - t3
            apply_s += t5 - t4
        out.update(decode_s=decode_s, apply_s=apply_s)
    else:
        t3 = clock()
        engine.replay(logged)
        out["bulk_s"] = clock() - t3
    out["memories"] = engine.count()
    return out


# -- main -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_space.json", help="JSON result file")
    ap.add_argument("--dir", type=Path, default=None, help="where to create the temporary spaces")
    ap.add_argument("--compare-src", default=None, metavar="SRC",
                    help="another source tree (the directory holding memspace/) to reopen with as well")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return 0
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="memspace-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        report = run(root, sizes, args)
    report["elapsed_s"] = time.perf_counter() - started
    path = write_json(args.out, report)
    print(f"wrote {path} ({report['elapsed_s']:.0f} s)")
    return 0


def run(root: Path, sizes: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    m: dict[str, float] = {}
    details: dict[str, Any] = {}
    report: dict[str, Any] = {
        "benchmark": "bench_space", "quick": args.quick, "sizes": sizes, "dimension": DIM, "k": K,
        "data": "clustered: 200 Gaussian clusters, unit-normalised, cosine within a cluster ~0.73",
        "machine": {**machine(), "filesystem": filesystem(root)}, "metrics": m, "details": details,
    }
    small, large = sizes["small"], sizes["large"]
    vectors = clustered_vectors(large, seed=args.seed)
    # queries around the same centres as the data (other members of the clusters)
    queries = clustered_vectors(max(sizes["queries_small"], sizes["queries_large"]), seed=args.seed, sample_seed=1)

    # 1. remember throughput, fsync=always
    thr = details["remember"] = remember_throughput(root, sizes["rounds"], args.seed)
    m["remember_single_per_s"] = thr["single"]["per_s"]
    m["remember_batch100_per_s"] = thr["batch100"]["per_s"]
    m["remember_batch1000_per_s"] = thr["batch1000"]["per_s"]
    print(table("remember throughput (wal.fsync=always)", [
        (name, d["memories"], d["seconds"], d["per_s"]) for name, d in thr.items()
    ], ("mode", "memories", "seconds", "memories/s")))
    print(f"  single remember: p50 {thr['single']['call']['p50_ms']:.2f} ms, "
          f"p99 {thr['single']['call']['p99_ms']:.2f} ms per call (one fsync each)\n")

    # 2. recall at the small size
    space, _ = build_batched(root / "small", vectors[:small])
    try:
        rs = details["recall_small"] = recall_latency(space, np.ascontiguousarray(vectors[:small]),
                                                      queries[:sizes["queries_small"]])
        details["small_links"] = space.engine.stats().links
    finally:
        space.close()

    # 3. WAL replay: the large space, all in the WAL
    wal_dir = root / "wal-only"
    t0 = time.perf_counter()
    ids, links = build_wal_only(wal_dir, vectors)
    details["build_wal_only_s"] = time.perf_counter() - t0
    details["large_links"] = links
    base_dir = baseline_wal(wal_dir, root / "wal-only-baseline", args.compare_src) if args.compare_src else None
    replay = details["replay"] = reopen_runs("open", wal_dir, sizes["reps"], args.compare_src, base_dir)
    feed_runs = details["replay_feed"] = reopen_runs("open-feed", wal_dir, sizes["reps"], None)["current"]
    nolinks_dir = root / "wal-only-nolinks"
    build_wal_only(nolinks_dir, vectors, settings={"link_threshold": 1.0, "max_auto_links": 0})
    nolinks = details["replay_nolinks"] = reopen_runs("open", nolinks_dir, sizes["reps"], None)["current"]
    shutil.rmtree(nolinks_dir)
    phases: dict[str, list[dict[str, Any]]] = {"general": [], "bulk": []}
    for _ in range(sizes["reps"]):
        for mode in ("general", "bulk"):
            phases[mode].append(run_child([__file__, "--child", mode, str(wal_dir)]))
    details["replay_phases"] = phases
    n_records = replay["current"][0]["records"]
    m["replay_records"] = n_records
    m["replay_open_s"] = median(replay["current"], "open_s")
    m["replay_records_per_s"] = n_records / m["replay_open_s"]
    m["replay_wal_open_s"] = median(phases["general"] + phases["bulk"], "wal_open_s")
    m["replay_wal_read_s"] = median(phases["general"] + phases["bulk"], "wal_read_s")
    m["replay_decode_s"] = median(phases["general"], "decode_s")
    m["replay_apply_s"] = median(phases["general"], "apply_s")
    m["replay_bulk_s"] = median(phases["bulk"], "bulk_s")
    m["replay_general_records_per_s"] = n_records / (m["replay_decode_s"] + m["replay_apply_s"])
    m["replay_bulk_records_per_s"] = n_records / m["replay_bulk_s"]
    m["replay_feed_open_s"] = median(feed_runs, "open_s")
    m["replay_feed_records_per_s"] = n_records / m["replay_feed_open_s"]
    m["replay_nolinks_open_s"] = median(nolinks, "open_s")
    m["replay_nolinks_records_per_s"] = n_records / m["replay_nolinks_open_s"]
    rows = [("current", n_records, m["replay_open_s"], m["replay_records_per_s"]),
            ("current, with the worker's feed hook", n_records, m["replay_feed_open_s"],
             m["replay_feed_records_per_s"]),
            ("current, no auto-links (0 links per memory)", n_records, m["replay_nolinks_open_s"],
             m["replay_nolinks_records_per_s"])]
    if replay["baseline"]:
        base_s = median(replay["baseline"], "open_s")
        rows.append(("baseline (its own record format)", n_records, base_s, n_records / base_s))
        report["baseline"] = {"src": args.compare_src, "replay_open_s": base_s,
                              "replay_speedup": base_s / m["replay_open_s"]}
    print(table(f"WAL replay: reopen of a WAL-only space ({links / large:.1f} links per memory), fresh process",
                rows, ("code", "records", "open s", "records/s")))
    print(table("replay phases (fresh processes, medians)", [
        ("WAL open (read + CRC + checks)", m["replay_wal_open_s"], n_records / m["replay_wal_open_s"]),
        ("WAL records() (read + CRC)", m["replay_wal_read_s"], n_records / m["replay_wal_read_s"]),
        ("decode, record by record", m["replay_decode_s"], n_records / m["replay_decode_s"]),
        ("apply, record by record", m["replay_apply_s"], n_records / m["replay_apply_s"]),
        ("bulk replay (decode + apply)", m["replay_bulk_s"], m["replay_bulk_records_per_s"]),
    ], ("phase", "seconds", "records/s")))

    # 4. snapshot reopen and RSS
    snap_dir = root / "snapshotted"
    shutil.copytree(wal_dir, snap_dir)
    space = memspace.open_space(snap_dir, fsync="never", config=bench_config())
    info = space.checkpoint()
    space.close()
    m["checkpoint_s"] = info.seconds
    base_snap = None
    if args.compare_src:  # the baseline reopens a snapshot it wrote itself: the formats may differ
        base_snap = root / "snapshotted-baseline"
        shutil.copytree(base_dir or wal_dir, base_snap, ignore=shutil.ignore_patterns("records.pickle"))
        details["baseline_checkpoint"] = run_child([__file__, "--child", "checkpoint", str(base_snap)],
                                                   pythonpath=args.compare_src)
    snap = details["snapshot"] = reopen_runs("open", snap_dir, sizes["reps"], args.compare_src, base_snap)
    m["snapshot_memories"] = snap["current"][0]["memories"]
    m["snapshot_reopen_s"] = median(snap["current"], "open_s")
    rows = [("current", m["snapshot_memories"], m["snapshot_reopen_s"])]
    if snap["baseline"]:
        base_s = median(snap["baseline"], "open_s")
        rows.append(("baseline", m["snapshot_memories"], base_s))
        report["baseline"].update(snapshot_reopen_s=base_s, snapshot_speedup=base_s / m["snapshot_reopen_s"],
                                  checkpoint_s=details["baseline_checkpoint"]["checkpoint_s"])
    print(table(f"reopen from a snapshot (checkpoint took {info.seconds:.2f} s, {info.bytes / 2**20:.0f} MiB)",
                rows, ("code", "memories", "open s")))
    rss = details["rss"] = {"snapshot": run_child([__file__, "--child", "rss", str(snap_dir)]),
                            "wal_only": run_child([__file__, "--child", "rss", str(wal_dir)])}
    m["rss_mb_per_100k"] = rss["snapshot"]["mb_per_100k"]
    m["rss_wal_mb_per_100k"] = rss["wal_only"]["mb_per_100k"]
    print(table("RSS after open minus before (fresh process)", [
        (kind, r["memories"], r["after_mb"] - r["before_mb"], r["mb_per_100k"]) for kind, r in rss.items()
    ], ("opened from", "memories", "MiB", "MiB per 100k")))

    # 5. recall at the large size, and ANN against exact
    ann_dir = root / "ann"
    shutil.copytree(snap_dir, ann_dir)
    exact = memspace.open_space(snap_dir, fsync="never", config=bench_config())
    ann = memspace.open_space(ann_dir, fsync="never",
                              config=bench_config(**{"tiers.ann_threshold": sizes["ann_threshold"]}))
    try:
        q_large = queries[:sizes["queries_large"]]
        rl = details["recall_large"] = recall_latency(exact, vectors, q_large)
        av = details["ann"] = ann_vs_exact(exact, ann, vectors, ids, q_large)
    finally:
        exact.close()
        ann.close()
    for size, r in (("small", rs), ("large", rl)):
        m[f"recall_{size}_p50_ms"] = r["similarity"]["p50_ms"]
        m[f"recall_{size}_p99_ms"] = r["similarity"]["p99_ms"]
        m[f"numpy_{size}_p50_ms"] = r["numpy"]["p50_ms"]
        m[f"numpy_{size}_p99_ms"] = r["numpy"]["p99_ms"]
        m[f"recall_{size}_vs_numpy_p50"] = r["vs_numpy_p50"]
        m[f"spreading_{size}_p50_ms"] = r["spreading"]["p50_ms"]
        m[f"spreading_{size}_p99_ms"] = r["spreading"]["p99_ms"]
        m[f"spreading_{size}_overhead"] = r["spreading_overhead"]
    print(table(f"recall, k={K}, interleaved per query (ms)", [
        (n, r["similarity"]["p50_ms"], r["similarity"]["p99_ms"], r["numpy"]["p50_ms"], r["numpy"]["p99_ms"],
         r["vs_numpy_p50"], r["spreading"]["p50_ms"], r["spreading"]["p99_ms"], r["spreading_overhead"])
        for n, r in ((small, rs), (large, rl))
    ], ("memories", "sim p50", "sim p99", "numpy p50", "numpy p99", "sim/numpy", "spread p50", "spread p99",
        "spread/sim")))
    m["ann_build_s"] = av["build_s"]
    m["ann_p50_ms"] = av["ann"]["p50_ms"]
    m["exact_p50_ms"] = av["exact"]["p50_ms"]
    m["ann_speedup"] = av["speedup_p50"]
    m["ann_recall_at_10"] = av["ann"]["recall_at_10"]
    m["exact_recall_at_10"] = av["exact"]["recall_at_10"]
    print(table(f"approximate index (threshold {sizes['ann_threshold']}, built in {av['build_s']:.1f} s) "
                f"vs exact at {large} memories", [
        (name, av[name]["p50_ms"], av[name]["p99_ms"], av[name]["recall_at_10"]) for name in ("exact", "ann")
    ], ("search", "p50 ms", "p99 ms", "recall@10")))
    missing = [k for k in METRICS if k not in m]
    if missing:
        raise RuntimeError(f"metrics not measured: {missing}")
    return report


if __name__ == "__main__":
    sys.exit(main())
