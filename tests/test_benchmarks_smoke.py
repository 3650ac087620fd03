"""The engine/storage benchmark runs end to end in --quick mode and reports every metric.

No timing is asserted: only that each metric was measured (a positive number)
and that the checks that are not timings hold (exact search finds the exact
top-10, the table was printed).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

def _declared_metrics() -> tuple[str, ...]:
    """The metrics bench_space.py declares (and must therefore report)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_space
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return tuple(bench_space.METRICS)


METRICS = _declared_metrics()


@pytest.mark.timeout(240)
def test_bench_space_quick_reports_every_metric(tmp_path: Path) -> None:
    pytest.importorskip("hnswlib")
    pytest.importorskip("psutil")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_space.py"), "--quick", "--out", str(out),
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=230, cwd=ROOT, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    bad = {k: metrics.get(k) for k in METRICS
           if not (isinstance(metrics.get(k), (int, float)) and math.isfinite(metrics[k]) and metrics[k] > 0)}
    assert bad == {}, f"metrics missing or not positive: {bad}"
    assert report["quick"] is True
    # not timings: the sizes the quick run promises, and exact search being exact
    assert metrics["replay_records"] == metrics["snapshot_memories"] == report["sizes"]["large"]
    assert metrics["exact_recall_at_10"] == 1.0
    assert 0.0 < metrics["ann_recall_at_10"] <= 1.0
    assert report["details"]["large_links"] > 0      # clustered data: auto-links exist for spreading
    for title in ("remember throughput", "WAL replay", "replay phases", "reopen from a snapshot", "RSS",
                  "recall, k=10", "approximate index"):
        assert title in proc.stdout
    assert not list(tmp_path.glob("memspace-bench-*")), "the temporary spaces were left behind"
