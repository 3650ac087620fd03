"""``memspace status``: the deployment's spaces as a table (or JSON), once or refreshed (``--watch``).

Without ``--space`` it shows every space (the server's ``status`` op); with
``--space`` one space in detail, including per-operation latency percentiles.
Only an explicit ``--space`` narrows it: ``$MEMSPACE_SPACE`` does not, so
``memspace status`` always means "the whole deployment".

``--watch`` refreshes every ``--interval`` seconds until Ctrl-C (exit 0); with
``--json`` each refresh is one JSON line. On a terminal, spaces in FAILED or
BACKOFF and spaces that restarted are highlighted.
"""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from memspace.cli_common import (
    JsonOpt,
    SpaceOpt,
    check_space_id,
    duration,
    emit_json,
    errors,
    kv_table,
    opts,
    show,
    size,
    stdout,
    when,
)
from memspace.metrics import BUCKETS

#: Row styles: a space that needs an operator, and one that is recovering from crashes.
ALARM_STATES = {"FAILED": "bold red", "BACKOFF": "yellow"}


def register(app: typer.Typer) -> None:
    app.command()(status)


def status(
    ctx: typer.Context,
    space: str | None = SpaceOpt,
    json: bool = JsonOpt,
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", "-n", min=0.1, metavar="SECONDS",
                                   help="Seconds between refreshes with --watch."),
) -> None:
    """Per-space state, pid, uptime, restarts, memories, WAL and queue depth."""
    o = opts(ctx, space, json)
    with errors(o):
        space_id = check_space_id(o.space_flag, "flag", "--space") if o.space_flag is not None else None
        client = o.client()

        def fetch() -> dict[str, Any]:
            result: dict[str, Any] = client.get_space(space_id) if space_id else client.status()
            return result

        if not watch:
            data = fetch()
            if o.json:
                emit_json(data)
            else:
                stdout().print(render(data, o.url, single=space_id is not None))
            return
        try:
            if o.json:
                while True:
                    emit_json(fetch(), compact=True)
                    time.sleep(interval)   # a display refresh period, not synchronisation
            else:
                with Live(render(fetch(), o.url, single=space_id is not None), console=stdout(),
                          auto_refresh=False) as live:
                    while True:
                        time.sleep(interval)
                        live.update(render(fetch(), o.url, single=space_id is not None), refresh=True)
        except KeyboardInterrupt:
            return


def render(data: dict[str, Any], url: str, *, single: bool) -> RenderableType:
    return render_space(data) if single else render_deployment(data, url)


def render_deployment(data: dict[str, Any], url: str) -> RenderableType:
    head = Text.assemble(
        ("memspace ", "bold"), f"at {url}  pid {show(data.get('pid'))}  up {duration(data.get('uptime_s'))}  ",
        f"workers {show(data.get('active_workers'))}/{show(data.get('max_active_workers'))}  ",
        f"data {show(data.get('data_root'))}")
    table = Table(box=None, header_style="bold", pad_edge=False)
    spaces = data.get("spaces", [])
    table.add_column("SPACE", no_wrap=True, min_width=max([len(s["id"]) for s in spaces] + [5]))
    table.add_column("STATE", no_wrap=True, min_width=10)
    for name in ("PID", "UPTIME", "MEMORIES", "RESTARTS", "WAL", "RSS", "QUEUE"):
        table.add_column(name, justify="right", no_wrap=True)
    with_errors = any(s.get("last_error") for s in spaces)   # the column only when it says something
    if with_errors:
        table.add_column("LAST ERROR", overflow="fold", min_width=20)
    for s in spaces:
        cells = [s["id"], s["state"], show(s.get("pid")), duration(s.get("uptime_s")), show(s.get("memories")),
                 show(s.get("restarts")), size(s.get("wal_bytes")), size(s.get("rss_bytes")),
                 f"{s.get('queued', 0)}/{s.get('inflight', 0)}"]
        if with_errors:
            cells.append(_error_text(s.get("last_error")))
        table.add_row(*cells, style=row_style(s))
    by_state = data.get("spaces_by_state") or {}
    foot = Text("  ".join(f"{state} {n}" for state, n in sorted(by_state.items())) or "no spaces", style="dim")
    return Group(head, table, foot)


def row_style(space: dict[str, Any]) -> str:
    """How a space's row stands out: red when FAILED, yellow in BACKOFF or after restarts."""
    style = ALARM_STATES.get(space.get("state", ""), "")
    if not style and (space.get("restarts") or 0) > 0:
        style = "yellow"
    return style


def _error_text(err: Any) -> str:
    if not err:
        return ""
    text = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    return text if len(text) <= 60 else text[:59] + "…"


def render_space(s: dict[str, Any]) -> RenderableType:
    tiers = s.get("memories_by_tier") or {}
    rows = {
        "space": s["id"],
        "state": Text(s["state"], style=row_style(s)),
        "pid": s.get("pid"),
        "uptime": duration(s.get("uptime_s")),
        "created": when(s.get("created_at")),
        "dimension": s.get("dimension"),
        "memories": s.get("memories"),
        "by tier": "  ".join(f"{t} {n}" for t, n in tiers.items()) or None,
        "restarts": s.get("restarts"),
        "restart reasons": s.get("restart_reasons") or None,
        "last error": s.get("last_error"),
        "WAL": size(s.get("wal_bytes")),
        "WAL since checkpoint": size(s.get("wal_lag_bytes")),
        "last checkpoint": when(s.get("checkpoint_at")),
        "RSS": size(s.get("rss_bytes")),
        "queued / in flight": f"{s.get('queued', 0)} / {s.get('inflight', 0)}",
        "settings": s.get("settings") or None,
    }
    table = kv_table(rows)
    ops = s.get("ops") or {}
    if not ops:
        return table
    lat = Table(box=None, header_style="bold", pad_edge=False, title="operations", title_justify="left")
    for name in ("OP", "COUNT", "ERRORS", "P50 ≤", "P99 ≤"):
        lat.add_column(name, justify="left" if name == "OP" else "right")
    for op, stats in sorted(ops.items()):
        outcomes = stats.get("outcomes", {})
        total = sum(outcomes.values())
        errors_n = total - outcomes.get("ok", 0)
        hist = stats.get("latency", [])
        lat.add_row(op, str(total), str(errors_n), _ms(percentile_bound(hist, 0.50)),
                    _ms(percentile_bound(hist, 0.99)))
    return Group(table, Text(""), lat)


def percentile_bound(hist: list[float], q: float) -> float | None:
    """Upper bound (seconds) of the latency bucket holding quantile ``q`` of a worker histogram
    (bucket counts..., +Inf count, sum); inf if it falls in the overflow bucket, None if empty."""
    counts = hist[: len(BUCKETS) + 1]
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for bound, n in zip((*BUCKETS, float("inf")), counts):
        seen += n
        if seen >= rank:
            return bound
    return float("inf")


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return f">{BUCKETS[-1] * 1000:g} ms"
    return f"{seconds * 1000:g} ms"
