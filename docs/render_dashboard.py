"""Draw docs/dashboard.png: the panels of docs/grafana-dashboard.json, computed from a real server under load.

    pip install -e '.[docs]'            # matplotlib
    python docs/render_dashboard.py     # about a minute; writes docs/dashboard.png

It starts ``memspace serve`` (HTTP on a free port) in a temporary directory,
drives varied traffic at five spaces for ``--seconds`` (default 60), and
scrapes ``/metrics`` once a second. The story, as fractions of the run:

* requests ramp up over the first sixth; remember, batches, recall, get;
* ``scratch`` goes quiet from 0.2 to 0.8, is hibernated after
  ``idle_hibernate_s`` and wakes up when traffic returns;
* ``planner`` has a burst (x5) from 0.33 to 0.58;
* at 0.5 the ``tutor`` worker is SIGKILLed: the supervisor restarts it and
  the router re-sends what it had in flight;
* from 0.63 to 0.73 a client of ``research-agent`` asks for ids that do not
  exist (MEMORY_NOT_FOUND), raising its error ratio;
* a few requests name no space (default-space fallback) or an unknown one.

Each panel is computed the way its PromQL is: rates from counter deltas over a
5 s window, quantiles from histogram buckets (Prometheus' interpolation),
``sum by`` over labels. Panel titles and positions are read from the dashboard
JSON, so the picture cannot drift from the dashboard: a panel without a
computation here is an error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from memspace.errors import MemspaceError
from memspace.testing.server import ServerProcess

HERE = Path(__file__).resolve().parent
WINDOW_S = 5.0                      # the dashboard's $__rate_interval, here
WEIGHTS = {"support-bot": 5.0, "research-agent": 3.0, "planner": 2.0, "tutor": 2.0, "scratch": 1.5}
WORDS = [
    "meeting", "lab", "paper", "deadline", "coffee", "budget", "agent", "memory", "graph",
    "recall", "python", "deploy", "review", "customer", "ticket", "refund", "invoice", "lesson",
    "exercise", "plan", "milestone", "risk", "idea", "draft", "note",
]
ENV = {
    "MEMSPACE_SPACES_DIMENSION": "64",
    "MEMSPACE_HEARTBEAT_S": "0.5",
    "MEMSPACE_IDLE_HIBERNATE_S": "8",
    "MEMSPACE_RESTART_BACKOFF_INITIAL_S": "0.3",
    "MEMSPACE_CHECKPOINT_EVERY_MB": "0.3",
    "MEMSPACE_WAL_SEGMENT_MB": "0.3",
    "MEMSPACE_TIERS_HOT_CAPACITY": "400",
    "MEMSPACE_TIERS_WARM_CAPACITY": "500",
}

Labels = tuple[tuple[str, str], ...]


# -- scraping and PromQL-like arithmetic -------------------------------------------------------------


class Scrapes:
    """Every scrape as {(sample name, sorted labels): value}, with its time (s since start)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.samples: list[dict[tuple[str, Labels], float]] = []

    def add(self, t: float, text: str) -> None:
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        self.times.append(t)
        self.samples.append(out)

    def series(self, name: str) -> dict[Labels, np.ndarray]:
        keys = {labels for scrape in self.samples for (n, labels) in scrape if n == name}
        return {k: np.array([scrape.get((name, k), math.nan) for scrape in self.samples]) for k in keys}

    def rate(self, name: str) -> dict[Labels, np.ndarray]:
        """``rate(name[5s])``: per-second increase over the last WINDOW_S (a reset counts from zero)."""
        return self._window(name, per_second=True)

    def increase(self, name: str) -> dict[Labels, np.ndarray]:
        """``increase(name[5s])``, without Prometheus' extrapolation to the window's edges."""
        return self._window(name, per_second=False)

    def _window(self, name: str, per_second: bool) -> dict[Labels, np.ndarray]:
        t = np.array(self.times)
        out = {}
        for labels, v in self.series(name).items():
            # memspace counters start at 0: a series that appears mid-run (a first restart, a new
            # outcome) rose from 0, which Prometheus would only see with a scrape in between
            first = int(np.argmax(~np.isnan(v)))
            if first > 0:
                v = v.copy()
                v[first - 1] = 0.0
            r = np.full(len(v), math.nan)
            for i in range(len(v)):
                idx = [j for j in range(i + 1) if t[j] >= t[i] - WINDOW_S - 1e-9 and not math.isnan(v[j])]
                if len(idx) < 2:
                    continue
                inc = sum(v[b] - v[a] if v[b] >= v[a] else v[b] for a, b in pairwise(idx))
                r[i] = inc / (t[idx[-1]] - t[idx[0]]) if per_second else inc
            out[labels] = r
        return out


def by(series: dict[Labels, np.ndarray], *keys: str, where: Callable[[dict[str, str]], bool] | None = None
       ) -> dict[str, np.ndarray]:
    """``sum by (keys)``: NaN where no series of the group has a value."""
    groups: dict[str, list[np.ndarray]] = defaultdict(list)
    for labels, v in series.items():
        d = dict(labels)
        if where is None or where(d):
            groups[" ".join(d.get(k, "") for k in keys)].append(v)
    out = {}
    for name, vs in groups.items():
        stack = np.vstack(vs)
        total = np.nansum(stack, axis=0)
        total[np.all(np.isnan(stack), axis=0)] = math.nan
        out[name] = total
    return out


def histogram_quantile(q: float, bucket_rates: dict[Labels, np.ndarray], key: str) -> dict[str, np.ndarray]:
    """Prometheus' histogram_quantile over ``sum by (key, le) (rate(..._bucket))``."""
    per: dict[str, dict[float, np.ndarray]] = defaultdict(dict)
    for name, v in by(bucket_rates, key, "le").items():
        space, bound = name.rsplit(" ", 1)
        per[space][float(bound)] = v
    out = {}
    for space, buckets in per.items():
        les = sorted(buckets)
        n = len(next(iter(buckets.values())))
        res = np.full(n, math.nan)
        for i in range(n):
            counts = [buckets[le][i] for le in les]
            if any(math.isnan(c) for c in counts) or counts[-1] <= 0:
                continue
            rank = q * counts[-1]
            lower, below = 0.0, 0.0
            for le, c in zip(les, counts):
                if c >= rank:
                    res[i] = lower if math.isinf(le) else lower + (le - lower) * (rank - below) / max(c - below, 1e-12)
                    break
                lower, below = le, c
        out[space] = res
    return out


def topk(k: int, series: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The k series with the highest peak (Grafana shows topk per step; with few spaces it is the same)."""
    ranked = sorted(series.items(), key=lambda kv: -np.nan_to_num(kv[1], nan=-1).max())
    return dict(ranked[:k])


# -- the panels (keys are the dashboard's titles) ----------------------------------------------------

Panel = tuple[dict[str, np.ndarray], str, str]     # series by legend, unit, style (line|stack|bars)


def panels(s: Scrapes) -> dict[str, Callable[[], Panel]]:
    space = "memory_space"

    def req() -> dict[Labels, np.ndarray]:
        return s.rate("memspace_requests_total")

    return {
        "Active workers": lambda: ({
            "alive": by(s.series("memspace_active_workers"))[""],
            "spawns/s": by(s.rate("memspace_spawns_total"))[""],
            "hibernations/s": by(s.rate("memspace_hibernations_total"))[""]}, "short", "line"),
        "Spaces by state": lambda: (by(s.series("memspace_spaces"), "state"), "short", "stack"),
        "Default-space fallbacks": lambda: ({
            "fallbacks/s": by(s.rate("memspace_default_space_fallback_total"))[""],
            **{f"rejected {k}": v for k, v in by(s.rate("memspace_router_rejected_total"), "code").items()}},
            "reqps", "line"),
        "Request rate per space (top 10)": lambda: (topk(10, by(req(), space)), "reqps", "line"),
        "Error ratio per space": lambda: (_ratio(by(req(), space, where=lambda d: d["outcome"] != "OK"),
                                                 by(req(), space)), "percentunit", "line"),
        "Latency p50 / p99 per space": lambda: ({
            **{f"{k} p50": v for k, v in histogram_quantile(
                0.5, s.rate("memspace_request_duration_seconds_bucket"), space).items()},
            **{f"{k} p99": v for k, v in histogram_quantile(
                0.99, s.rate("memspace_request_duration_seconds_bucket"), space).items()}}, "s", "line"),
        "Queue depth per space": lambda: ({
            **topk(10, by(s.series("memspace_queue_depth"), space)),
            "router: waiting for a worker": by(s.series("memspace_router_queue_depth"))[""],
            "router: in flight": by(s.series("memspace_router_inflight"))[""]}, "short", "line"),
        "Memories per tier": lambda: (by(s.series("memspace_memories"), "tier"), "short", "stack"),
        "WAL lag (bytes since last checkpoint)": lambda: (topk(10, by(s.series("memspace_wal_lag_bytes"), space)),
                                                          "bytes", "line"),
        "Checkpoint age": lambda: (topk(10, by(s.series("memspace_checkpoint_age_seconds"), space)), "s", "line"),
        "WAL fsync p99": lambda: (histogram_quantile(
            0.99, s.rate("memspace_wal_fsync_duration_seconds_bucket"), space), "s", "line"),
        "RSS per space": lambda: (topk(10, by(s.series("memspace_worker_rss_bytes"), space)), "bytes", "line"),
        "Worker restarts by reason": lambda: (by(s.increase("memspace_worker_restarts_total"), "reason"),
                                              "short", "bars"),
        "Worker state": lambda: (by(s.series("memspace_worker_state"), "state"), "short", "stack"),
    }


def _ratio(num: dict[str, np.ndarray], den: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, d in den.items():
        n = num.get(k, np.zeros_like(d))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[k] = np.where(d > 0, np.nan_to_num(n) / d, math.nan)
    return out


# -- traffic -----------------------------------------------------------------------------------------


class Traffic:
    """Threads sending a mix of operations at a rate and space mix that change over the run."""

    def __init__(self, server: ServerProcess, seconds: float, threads: int = 3) -> None:
        self.server, self.seconds, self.n_threads = server, seconds, threads
        self.start = 0.0
        self.stop = threading.Event()
        self.ids: dict[str, list[str]] = defaultdict(list)
        self.lock = threading.Lock()
        self.sent = 0
        self.errors: dict[str, int] = defaultdict(int)

    def phase(self, t: float) -> tuple[float, dict[str, float]]:
        f = t / self.seconds
        rate = 60.0 + 140.0 * min(1.0, f * 6)                # requests/s, all threads
        w = dict(WEIGHTS)
        if 0.2 <= f < 0.8:
            w["scratch"] = 0.0
        if 0.33 <= f < 0.58:
            w["planner"] *= 5
            rate += 60
        return rate, w

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        client = self.server.client(timeout=30.0)
        n = 0
        while not self.stop.is_set():
            t = time.monotonic() - self.start
            rate, weights = self.phase(t)
            space = rng.choices(list(weights), list(weights.values()))[0]
            try:
                self.one(client, space, rng, t / self.seconds)
            except MemspaceError as e:
                with self.lock:
                    self.errors[e.code] += 1
            n += 1
            # pacing: each thread sends rate / n_threads requests per second
            delay = self.start + t + self.n_threads / rate - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
        client.close()

    def one(self, client: Any, space: str, rng: random.Random, f: float) -> None:
        remote = client.space(space)
        r = rng.random()
        with self.lock:
            self.sent += 1
            known = self.ids[space]
        if space == "research-agent" and 0.63 <= f < 0.73 and r < 0.35:
            remote.get(f"no-such-{rng.randrange(10**6)}")            # a client bug: unknown ids
        elif r < 0.45:
            res = remote.remember(content=self.text(rng), tags=[rng.choice(WORDS)])
            with self.lock:
                known.append(res.id)
        elif r < 0.47:
            batch = remote.remember_batch([{"content": self.text(rng)} for _ in range(20)])
            with self.lock:
                known.extend(x.id for x in batch)
        elif r < 0.80:
            remote.recall(query=self.text(rng), k=10)
        elif r < 0.92:
            if known:
                remote.get(rng.choice(known))
            else:
                remote.count()
        elif r < 0.95:
            remote.get(f"missing-{rng.randrange(10**6)}")
        elif r < 0.98:
            client.default_space().count()                           # names no space
        else:
            client.space("nobody-here").count()                      # not registered

    @staticmethod
    def text(rng: random.Random) -> str:
        return " ".join(rng.choices(WORDS, k=rng.randint(4, 12))) + f" #{rng.randrange(10**9)}"


def drive(seconds: float, scrape_every: float = 1.0) -> tuple[Scrapes, list[tuple[float, str]]]:
    scrapes, events = Scrapes(), []
    with tempfile.TemporaryDirectory(prefix="memspace-dashboard-") as tmp, \
            ServerProcess(Path(tmp) / "data", http=True, env=ENV) as server:
        admin = server.client(timeout=30.0)
        for name in WEIGHTS:
            admin.create_space(name)
        traffic = Traffic(server, seconds)
        http = httpx.Client(base_url=server.endpoints["http"], timeout=30.0)
        traffic.start = start = time.monotonic()
        threads = [threading.Thread(target=traffic.run, args=(i,), daemon=True) for i in range(traffic.n_threads)]
        for th in threads:
            th.start()
        killed = False
        i = 0
        while (now := time.monotonic() - start) < seconds:
            if not killed and now >= seconds * 0.5:
                pid = admin.get_space("tutor")["pid"]
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    events.append((now, "SIGKILL tutor worker"))
                killed = True
            scrapes.add(now, http.get("/metrics").text)
            i += 1
            time.sleep(max(0.0, start + i * scrape_every - time.monotonic()))
        traffic.stop.set()
        for th in threads:
            th.join(60)
        scrapes.add(time.monotonic() - start, http.get("/metrics").text)
        http.close()
        admin.close()
        print(f"{traffic.sent} requests, errors {dict(traffic.errors)}", file=sys.stderr)
    return scrapes, events


# -- drawing -----------------------------------------------------------------------------------------

BG, PANEL, FG, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
#: One colour per space, state and tier on every panel (Grafana's classic palette).
PALETTE = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0", "#508642"]
FIXED = {"READY": "#73bf69", "HIBERNATED": "#5794f2", "REGISTERED": "#8e8e8e", "STARTING": "#fade2a",
         "RECOVERING": "#ff9830", "DRAINING": "#b877d9", "STOPPED": "#5f6368", "BACKOFF": "#ff7383",
         "FAILED": "#f2495c", "DELETING": "#c4162a", "hot": "#ff9830", "warm": "#fade2a", "cold": "#5794f2"}


def color(label: str) -> str | None:
    if label in FIXED:
        return FIXED[label]
    names = ["default", *WEIGHTS, "__other__"]
    head = label.split(" ")[0]
    return PALETTE[names.index(head) % len(PALETTE)] if head in names else None


def fmt(unit: str) -> Callable[[float, Any], str]:
    def f(v: float, _: Any) -> str:
        if unit == "bytes":
            for u in ("B", "KiB", "MiB", "GiB"):
                if abs(v) < 1024 or u == "GiB":
                    return f"{v:.0f} {u}" if u == "B" else f"{v:.1f} {u}"
                v /= 1024
        if unit == "s":
            return f"{v * 1000:.3g} ms" if abs(v) < 1 else f"{v:.3g} s"
        if unit == "percentunit":
            return f"{v * 100:.3g}%"
        if unit == "reqps":
            return f"{v:.3g}/s"
        return f"{v / 1000:.3g}k" if abs(v) >= 1000 else f"{v:.3g}"
    return f


def draw(dashboard: dict[str, Any], scrapes: Scrapes, events: list[tuple[float, str]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec
    from matplotlib.ticker import FuncFormatter

    compute = panels(scrapes)
    missing = [p["title"] for p in dashboard["panels"] if p["title"] not in compute]
    if missing:
        raise SystemExit(f"no computation for dashboard panel(s): {missing}")
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"]) // 8
    fig = plt.figure(figsize=(22, 3.6 * rows), facecolor=BG)
    grid = GridSpec(rows, 24, figure=fig, hspace=0.55, wspace=1.6, left=0.04, right=0.99, top=0.95, bottom=0.03)
    t = np.array(scrapes.times)
    for p in dashboard["panels"]:
        g = p["gridPos"]
        ax = fig.add_subplot(grid[g["y"] // 8, g["x"]:g["x"] + g["w"]], facecolor=PANEL)
        series, unit, style = compute[p["title"]]()
        series = {k or "value": v for k, v in sorted(series.items())}
        if style == "stack" and series:
            ax.stackplot(t, *[np.nan_to_num(v) for v in series.values()], labels=list(series), alpha=0.8,
                         colors=[color(k) or PALETTE[i % len(PALETTE)] for i, k in enumerate(series)])
        elif style == "bars":
            for k, v in series.items():
                ax.bar(t, np.nan_to_num(v), width=0.9, label=k, alpha=0.85)
        else:
            for k, v in series.items():
                ax.plot(t, v, label=k, linewidth=1.0 if k.endswith("p50") else 1.4, color=color(k),
                        linestyle=":" if k.endswith("p50") else "-")
        for when, what in events:
            ax.axvline(when, color="#f2495c", linestyle="--", linewidth=0.8)
        ax.set_title(p["title"], color=FG, fontsize=12, loc="left", fontweight="bold")
        ax.yaxis.set_major_formatter(FuncFormatter(fmt(unit)))
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, t[-1])
        ax.tick_params(colors=FG, labelsize=8)
        ax.set_axisbelow(True)
        ax.grid(color=GRID, linewidth=0.6)
        for spine in ax.spines.values():
            spine.set_color(GRID)
        if series:
            ax.legend(fontsize=7.5, loc="upper left", ncol=2 if len(series) > 4 else 1, facecolor=PANEL,
                      edgecolor=GRID, labelcolor=FG, framealpha=0.8)
    caption = "; ".join(f"{what} at {when:.0f} s" for when, what in events)
    fig.suptitle(f"Grafana dashboard \"{dashboard['title']}\" (docs/grafana-dashboard.json), computed from a real "
                 f"server: {t[-1]:.0f} s of varied traffic on 5 spaces. x: seconds; red dashes: "
                 f"{caption or 'no events'}",
                 color=FG, fontsize=14, x=0.04, ha="left")
    fig.savefig(out, dpi=80, facecolor=BG)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the traffic run (default 60)")
    ap.add_argument("--dashboard", type=Path, default=HERE / "grafana-dashboard.json")
    ap.add_argument("--out", type=Path, default=HERE / "dashboard.png")
    args = ap.parse_args(argv)
    if not 10 <= args.seconds <= 600:
        ap.error("--seconds must be between 10 and 600")
    dashboard = json.loads(args.dashboard.read_text())
    scrapes, events = drive(args.seconds)
    draw(dashboard, scrapes, events, args.out)
    print(f"wrote {args.out} ({len(scrapes.times)} scrapes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
