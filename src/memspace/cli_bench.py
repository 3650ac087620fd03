"""``memspace bench``: a small built-in load test of one server.

N remembers, then M recalls, sent one at a time from this process (so the
numbers are per-request latency through the whole stack: client, router,
worker, WAL fsync), then a table of throughput and p50/p99 latency per op.

It runs against a temporary space (created, then deleted, also on Ctrl-C)
unless ``--space`` names one explicitly; ``$MEMSPACE_SPACE`` is not used, so a
benchmark never writes into a space by accident. The texts are random
sentences from a seeded vocabulary, so runs are repeatable and memories do not
merge as duplicates. Failed requests are counted and the command exits 1 if
there were any (after printing the results).
"""

from __future__ import annotations

import random
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import typer
from rich.table import Table

from memspace.cli_common import (
    JsonOpt,
    check_space_id,
    emit_json,
    errors,
    fail,
    opts,
    progress,
    stdout,
)
from memspace.errors import MemspaceError

VOCABULARY = 2000
WORDS_PER_MEMORY = 12
WORDS_PER_QUERY = 4


def register(app: typer.Typer) -> None:
    app.command()(bench)


@dataclass
class Series:
    """Latencies of one operation in a run; the first error is kept to show the user."""

    op: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    seconds: float = 0.0

    def timed(self, call: Any, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        try:
            call(*args, **kwargs)
        except MemspaceError as e:
            self.errors += 1
            self.first_error = self.first_error or f"{e.code}: {e.message}"
            return
        self.latencies.append(time.perf_counter() - start)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies) * 1000.0
        ok = len(self.latencies)
        return {
            "count": ok,
            "errors": self.errors,
            "seconds": round(self.seconds, 6),
            "ops_per_s": round(ok / self.seconds, 2) if self.seconds > 0 else None,
            "p50_ms": round(float(np.percentile(lat, 50)), 3) if ok else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 3) if ok else None,
            "mean_ms": round(float(lat.mean()), 3) if ok else None,
            "max_ms": round(float(lat.max()), 3) if ok else None,
        }


def bench(
    ctx: typer.Context,
    remembers: int = typer.Option(1000, "--remembers", "-n", min=0, help="Memories to store."),
    recalls: int = typer.Option(200, "--recalls", "-r", min=0, help="Recalls to run after storing."),
    k: int = typer.Option(10, "--k", "-k", min=1, help="k of each recall."),
    mode: str = typer.Option("spreading", "--mode", "-m", metavar="similarity|spreading", help="Recall mode."),
    space: str | None = typer.Option(None, "--space", "-s", metavar="SPACE",
                                     help="Space to load (default: a temporary space, deleted afterwards)."),
    dimension: int | None = typer.Option(None, "--dimension", "-d", min=1, max=65536,
                                         help="Dimension of the temporary space (default: the server's)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the temporary space."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated texts."),
    json: bool = JsonOpt,
) -> None:
    """A small load test: N remembers and M recalls, then throughput and p50/p99 latency."""
    o = opts(ctx, json=json)
    with errors(o):
        if mode not in ("similarity", "spreading"):
            fail(f"--mode must be similarity or spreading, got {mode!r}", 2)
        explicit = space if space is not None else o.space_flag
        client = o.client()
        if explicit is not None:
            space_id = check_space_id(explicit, "flag", "--space")
            client.get_space(space_id)        # SPACE_NOT_FOUND now rather than N times
        else:
            space_id = f"bench-{secrets.token_hex(4)}"
            client.create_space(space_id, dimension=dimension)
        try:
            results = run(client.space(space_id), remembers, recalls, k, mode, seed, o)
        finally:
            if explicit is None and not keep:
                client.delete_space(space_id)
        report = {"url": o.url, "space": space_id, "temporary": explicit is None, "kept": keep,
                  **{s.op: s.summary() for s in results}}
        if o.json:
            emit_json(report)
        else:
            stdout().print(table(report, results))
        failed = [s for s in results if s.errors]
        if failed:
            fail(f"{sum(s.errors for s in failed)} request(s) failed; first: {failed[0].first_error}")


def run(remote: Any, remembers: int, recalls: int, k: int, mode: str, seed: int, o: Any) -> list[Series]:
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(VOCABULARY)]
    stored, recalled = Series("remember"), Series("recall")
    with progress(o) as bar:
        task = bar.add_task(f"remember into {remote.id}", total=remembers)
        start = time.perf_counter()
        for _ in range(remembers):
            stored.timed(remote.remember, " ".join(rng.choices(words, k=WORDS_PER_MEMORY)))
            bar.advance(task)
        stored.seconds = time.perf_counter() - start
        task = bar.add_task(f"recall from {remote.id}", total=recalls)
        start = time.perf_counter()
        for _ in range(recalls):
            recalled.timed(remote.recall, " ".join(rng.choices(words, k=WORDS_PER_QUERY)), k=k, mode=mode)
            bar.advance(task)
        recalled.seconds = time.perf_counter() - start
    return [stored, recalled]


def table(report: dict[str, Any], results: list[Series]) -> Table:
    kind = "temporary space" if report["temporary"] else "space"
    t = Table(title=f"memspace bench: {kind} {report['space']} at {report['url']}", header_style="bold")
    for name in ("OP", "OK", "ERRORS", "SECONDS", "OPS/S", "P50 MS", "P99 MS", "MAX MS"):
        t.add_column(name, justify="left" if name == "OP" else "right")
    for s in results:
        r = report[s.op]
        t.add_row(s.op, str(r["count"]), str(r["errors"]), f"{r['seconds']:.3f}", _num(r["ops_per_s"], 1),
                  _num(r["p50_ms"], 2), _num(r["p99_ms"], 2), _num(r["max_ms"], 2),
                  style="red" if r["errors"] else "")
    return t


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
