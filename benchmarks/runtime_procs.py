"""Per-process measurements for the runtime benchmark: unique memory and CPU time.

CPU time comes from ``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds on CPU,
summed over every thread, zmq's I/O thread included) rather than
``cpu_times()``, whose 10 ms ticks are too coarse for idle processes that
wake for a few microseconds a second. Where schedstat is missing, psutil's
``cpu_times`` is used instead.

Processes that vanish while measured are skipped and counted in ``missing``.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import psutil

MB = 1024 * 1024


def cpu_ns(pid: int) -> int | None:
    """Nanoseconds ``pid`` (all its threads) has run, or None if it is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []
    total, seen = 0, False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
                seen = True
        except (OSError, ValueError, IndexError):
            continue
    if seen:
        return total
    try:
        t = psutil.Process(pid).cpu_times()
        return int((t.user + t.system) * 1e9)
    except psutil.Error:
        return None


@dataclass
class CpuShare:
    seconds: float            # wall time of the window
    cpu_s: float              # CPU seconds used by the processes in the window
    missing: int

    @property
    def pct_of_core(self) -> float:
        return 100.0 * self.cpu_s / self.seconds if self.seconds else 0.0


def cpu_over(groups: dict[str, list[int]], seconds: float) -> dict[str, CpuShare]:
    """CPU used by each group of pids over a window of ``seconds`` (measured, not slept blind:
    the wall time between the two readings is what the share is divided by)."""
    before = {name: {pid: cpu_ns(pid) for pid in pids} for name, pids in groups.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    out = {}
    for name, pids in groups.items():
        used, missing = 0, 0
        for pid in pids:
            start, end = before[name][pid], cpu_ns(pid)
            if start is None or end is None:
                missing += 1
                continue
            used += end - start
        out[name] = CpuShare(wall, used / 1e9, missing)
    return out


@dataclass
class MemoryUse:
    processes: int
    uss_total_mb: float
    rss_total_mb: float
    uss_median_mb: float
    uss_max_mb: float
    rss_median_mb: float
    missing: int


def memory_of(pids: list[int]) -> MemoryUse:
    """USS (pages only this process maps) and RSS of each pid, summed and summarised."""
    uss, rss, missing = [], [], 0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            missing += 1
            continue
        uss.append(info.uss / MB)
        rss.append(info.rss / MB)
    if not uss:
        return MemoryUse(0, 0.0, 0.0, 0.0, 0.0, 0.0, missing)
    return MemoryUse(len(uss), sum(uss), sum(rss), statistics.median(uss), max(uss),
                     statistics.median(rss), missing)
