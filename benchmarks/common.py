"""Small helpers shared by the benchmark programs: data, timing, subprocess runs, tables, JSON.

Benchmarks are programs, not tests. This machine may be shared, so anything
that is compared is measured side by side in the same run, in interleaved
repetitions (:func:`interleaved`), and reported as a ratio next to the
absolute numbers.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def clustered_vectors(n: int, dim: int = 384, clusters: int = 200, spread: float = 0.6, seed: int = 0,
                      sample_seed: int | None = None) -> np.ndarray:
    """``n`` unit float32 vectors around ``clusters`` random unit centres (Gaussian noise of
    norm about ``spread``). With the defaults two members of a cluster have a cosine of about
    0.73: above the default auto-link threshold (0.7), below the dedup threshold (0.95).

    ``seed`` fixes the centres, ``sample_seed`` (default: ``seed``) the members drawn around
    them: queries drawn with another ``sample_seed`` have real neighbours among the data."""
    centres_rng = np.random.default_rng(seed)
    centres = centres_rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = centres_rng if sample_seed is None else np.random.default_rng([seed, sample_seed])
    labels = rng.integers(0, clusters, n)
    x = centres[labels] + rng.standard_normal((n, dim)).astype(np.float32) * np.float32(spread / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean of durations in seconds, as milliseconds."""
    return {"p50_ms": percentile(samples, 50) * 1e3, "p99_ms": percentile(samples, 99) * 1e3,
            "mean_ms": float(np.mean(samples)) * 1e3, "n": len(samples)}


def interleaved(contenders: Mapping[str, Callable[[Any], object]], args: Sequence[Any]) -> dict[str, list[float]]:
    """Time every contender on every argument, alternating them (the order rotates per
    argument) so drifting machine load hits all of them alike. Returns seconds per call."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for i, arg in enumerate(args):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            fn = contenders[name]
            t0 = clock()
            fn(arg)
            times[name].append(clock() - t0)
    return times


def run_child(argv: Sequence[str], *, pythonpath: str | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run ``python argv...`` in a fresh interpreter and return the JSON object on its last
    stdout line. ``pythonpath`` puts another source tree first (a baseline to compare with)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def machine() -> dict[str, Any]:
    """Where the numbers come from: they mean little without it."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in load]}


def filesystem(path: Path) -> str:
    """The filesystem type holding ``path`` (fsync costs depend on it), from /proc/mounts."""
    best, kind = "", "unknown"
    try:
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and target.startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def table(title: str, rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table; floats get 3 significant decimals."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = [title, line, "  ".join(h.ljust(w) for h, w in zip(headers, widths)), line]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join(out) + "\n"


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def finish_server(server: Any, tmp: Path, ok: bool, keep: bool, stop_timeout: float) -> None:
    """End a benchmark's ``memspace serve``: stop it if the run went well, else show its log
    tail and kill it; remove its data unless asked to keep it or the run failed."""
    import shutil

    if server.proc is not None:
        if ok:
            server.stop(timeout=stop_timeout)
        else:
            print(f"serve log tail:\n{server.log_tail()}", file=sys.stderr)
            server.kill()
    if keep or not ok:
        print(f"data kept in {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
