"""Collecting, printing and saving the runtime benchmark's numbers.

A :class:`Report` holds a flat ``metrics`` mapping (``section.name.stat`` ->
number; the keys are stable between runs so results can be compared), the
goals checked against them, and one table per section for stdout.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson


def pct(values_ns: Sequence[int], q: float) -> float:
    """The ``q``-th percentile (0..100, nearest rank) of nanosecond samples, in microseconds."""
    ordered = sorted(values_ns)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[rank] / 1000.0


def summary_us(values_ns: Sequence[int]) -> dict[str, float]:
    return {"p50_us": pct(values_ns, 50), "p99_us": pct(values_ns, 99),
            "mean_us": statistics.fmean(values_ns) / 1000.0 if values_ns else 0.0}


def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    ns = [int(v * 1e9) for v in values_s]
    return {"p50_ms": pct(ns, 50) / 1000.0, "p99_ms": pct(ns, 99) / 1000.0,
            "max_ms": max(values_s) * 1000.0 if values_s else 0.0}


@dataclass
class Goal:
    name: str
    key: str
    op: str          # "<=", "<" or ">="
    limit: float
    value: float = 0.0

    @property
    def met(self) -> bool:
        if self.op == "<=":
            return self.value <= self.limit
        if self.op == "<":
            return self.value < self.limit
        return self.value >= self.limit


@dataclass
class Report:
    command: list[str]
    plan: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def put(self, prefix: str, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.metrics[f"{prefix}.{key}"] = float(value)

    def goal(self, name: str, key: str, op: str, limit: float) -> Goal:
        g = Goal(name, key, op, limit, self.metrics[key])
        self.goals.append(g)
        return g

    def table(self, title: str, headers: list[str], rows: list[list[Any]]) -> None:
        self.tables.append((title, headers, rows))
        print(render(title, headers, rows), flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"note: {text}", flush=True)

    def goals_table(self) -> None:
        rows = [[g.name, f"{g.value:.3g}", f"{g.op} {g.limit:g}", "yes" if g.met else "NO"] for g in self.goals]
        self.table("goals", ["goal", "measured", "target", "met"], rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "runtime",
            "command": self.command,
            "plan": self.plan,
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "platform": platform.platform()},
            "metrics": self.metrics,
            "goals": [{"name": g.name, "key": g.key, "op": g.op, "limit": g.limit, "value": g.value,
                       "met": g.met} for g in self.goals],
            "tables": [{"title": t, "headers": h, "rows": r} for t, h, r in self.tables],
            "notes": self.notes,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2))


def render(title: str, headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = [f"\n== {title}", "  ".join(h.ljust(w) for h, w in zip(headers, widths)), line]
    for row in cells:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
