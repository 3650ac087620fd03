"""One space's memories from the command line: ``remember``, ``recall``, ``get``, ``forget``, ``link``
and ``events`` (tail the change feed).

The space is ``--space`` > ``$MEMSPACE_SPACE`` > config ``default_space``.
Arguments the server validates (memory ids, dimensions, weights) are left to
it, so the command line and every other client report the same errors.
"""

from __future__ import annotations

import datetime
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import typer
from rich.table import Table

from memspace.cli_common import (
    FIRST_CONTACT_S,
    JsonOpt,
    Options,
    SpaceOpt,
    UsageError,
    clip,
    emit_json,
    errors,
    first_contact,
    kv_table,
    opts,
    say,
    stdout,
    when,
)
from memspace.client_http import HTTP_SCHEMES, HttpTransport
from memspace.errors import ResourceExhausted, SpaceUnavailable
from memspace.feed_cursor import FeedCursor, is_asleep

#: Longest a single events request waits on the server for new events.
EVENTS_WAIT_MS = 10_000
EVENTS_LIMIT = 1000
#: Longest wait between two checks of a sleeping space (each wait is 50-100 % of it, jittered).
EVENTS_RECHECK_S = 4.0
#: Longest wait before polling again after an OVERLOADED answer (too many feeds open on the space).
EVENTS_BACKOFF_MAX_S = 30.0


def register(app: typer.Typer) -> None:
    for fn in (remember, recall, get, forget, link, events):
        app.command()(fn)


def _remote(o: Options) -> Any:
    return o.client().space(o.space_id())


def remember(
    ctx: typer.Context,
    content: str | None = typer.Argument(None, metavar="CONTENT", help="The memory's text."),
    stdin: bool = typer.Option(False, "--stdin", help="Read the content from stdin."),
    tag: Annotated[list[str] | None,
                   typer.Option("--tag", "-t", metavar="TAG", help="A tag (repeatable).")] = None,
    id: str | None = typer.Option(None, "--id", help="The memory id (default: a new ULID)."),
    confidence: float | None = typer.Option(None, "--confidence", min=0.0, max=1.0, help="0..1 (default 1)."),
    metadata: str | None = typer.Option(None, "--metadata", metavar="JSON", help="A JSON object."),
    embedding: str | None = typer.Option(None, "--embedding", metavar="JSON|FILE",
                                         help="The embedding: a JSON list, or a file holding one (or .npy)."),
    space: str | None = SpaceOpt,
    json: bool = JsonOpt,
) -> None:
    """Store a memory; a near-duplicate reinforces the existing memory instead ("merged")."""
    o = opts(ctx, space, json)
    with errors(o):
        if stdin and content is not None:
            raise UsageError("give the content as an argument or with --stdin, not both")
        if stdin:
            content = sys.stdin.read().rstrip("\r\n")
        vector = parse_embedding(embedding) if embedding is not None else None
        if content is None and vector is None:
            raise UsageError("nothing to remember: give CONTENT, --stdin or --embedding")
        meta = _json_object(metadata, "--metadata")
        result = _remote(o).remember(content, vector, id=id, confidence=confidence, tags=tag or None,
                                     metadata=meta)
        if o.json:
            emit_json(result.to_dict())
        elif result.outcome == "merged":
            say(o, f"merged into {result.id} (similarity {result.similarity:.3f})")
        else:
            linked = f" (linked to {len(result.links)})" if result.links else ""
            say(o, f"stored {result.id}{linked}")


def parse_embedding(value: str) -> list[float]:
    """An embedding from a JSON list, or from a file holding a JSON list or a .npy array."""
    if value.lstrip().startswith("["):
        raw: Any = _json(value, "--embedding")
    else:
        path = Path(value)
        try:
            raw = np.load(path).tolist() if path.suffix == ".npy" else _json(path.read_bytes(), str(path))
        except (OSError, ValueError) as e:
            raise UsageError(f"--embedding: cannot read {value}: {getattr(e, 'strerror', None) or e}") from None
    if (not isinstance(raw, list) or not raw
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw)):
        raise UsageError("--embedding must be a non-empty flat list of numbers")
    return [float(x) for x in raw]


def _json(raw: str | bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise UsageError(f"{what} is not valid JSON: {e}") from None


def _json_object(raw: str | None, what: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = _json(raw, what)
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object, e.g. '{{\"source\": \"chat\"}}'")
    return value


def recall(
    ctx: typer.Context,
    query: str | None = typer.Argument(None, metavar="QUERY", help="Text cue."),
    embedding: str | None = typer.Option(None, "--embedding", metavar="JSON|FILE", help="Embedding cue."),
    k: int = typer.Option(10, "--k", "-k", min=1, help="How many results."),
    mode: str = typer.Option("spreading", "--mode", "-m", metavar="similarity|spreading",
                             help="similarity: seeds only; spreading: also follow links."),
    tag: Annotated[list[str] | None,
                   typer.Option("--tag", "-t", metavar="TAG", help="Only memories with this tag (repeatable).")] = None,
    threshold: float = typer.Option(0.0, "--threshold", help="Lowest cosine similarity for a seed."),
    max_depth: int = typer.Option(3, "--max-depth", min=0, max=4, help="Link hops in spreading mode."),
    space: str | None = SpaceOpt,
    json: bool = JsonOpt,
) -> None:
    """Ranked memories for a text or embedding cue (the returned memories are reinforced)."""
    o = opts(ctx, space, json)
    with errors(o):
        if mode not in ("similarity", "spreading"):
            raise UsageError(f"--mode must be similarity or spreading, got {mode!r}")
        vector = parse_embedding(embedding) if embedding is not None else None
        if query is None and vector is None:
            raise UsageError("nothing to recall: give QUERY or --embedding")
        hits = _remote(o).recall(query, vector, k=k, threshold=threshold, mode=mode, max_depth=max_depth,
                                 tags=tag or None)
        if o.json:
            emit_json([h.to_dict() for h in hits])
            return
        if not hits:
            say(o, "no memories matched")
            return
        table = Table(box=None, header_style="bold", pad_edge=False)
        for name in ("#", "SCORE", "SIM", "ACT"):
            table.add_column(name, justify="right", no_wrap=True)
        # ids are for copying: never cut; the content wraps instead
        table.add_column("ID", no_wrap=True, min_width=max(len(h.id) for h in hits))
        table.add_column("CONTENT", overflow="fold", ratio=1)
        table.add_column("REACHED", no_wrap=True)
        for rank, h in enumerate(hits, 1):
            via = "direct" if h.depth == 0 else f"from {h.path[0]} ({h.depth} hop{'s' if h.depth > 1 else ''})"
            table.add_row(str(rank), f"{h.score:.3f}", f"{h.similarity:.3f}", f"{h.activation:.3f}", h.id,
                          clip(h.content, 80), via)
        stdout().print(table)


def get(
    ctx: typer.Context,
    id: str = typer.Argument(..., metavar="ID", help="Memory id."),
    embedding: bool = typer.Option(False, "--embedding", help="Include the embedding."),
    space: str | None = SpaceOpt,
    json: bool = JsonOpt,
) -> None:
    """One memory by id."""
    o = opts(ctx, space, json)
    with errors(o):
        memory = _remote(o).get(id, embedding=embedding)
        data = memory.to_dict(embedding=embedding)
        if o.json:
            emit_json(data)
            return
        rows: dict[str, Any] = {
            "id": data["id"], "content": data["content"], "confidence": data["confidence"],
            "tags": data["tags"], "metadata": data["metadata"], "created": when(data["created_at"]),
            "last access": when(data["last_access"]), "accesses": data["access_count"], "tier": data["tier"],
        }
        for n, link_ in enumerate(data["links"]):
            rows["links" if n == 0 else ""] = f"-> {link_['target']}  weight {link_['weight']:.3g}  {link_['kind']}"
        if embedding:
            rows["embedding"] = data["embedding"]
        stdout().print(kv_table(rows))


def forget(
    ctx: typer.Context,
    id: str | None = typer.Argument(None, metavar="ID", help="Memory id."),
    tag: Annotated[list[str] | None,
                   typer.Option("--tag", "-t", metavar="TAG",
                                help="Forget memories with this tag (repeatable).")] = None,
    before: str | None = typer.Option(None, "--before", metavar="TIME",
                                      help="Forget memories created before TIME (epoch seconds or ISO 8601)."),
    space: str | None = SpaceOpt,
    json: bool = JsonOpt,
) -> None:
    """Delete a memory by id, or every memory matching --tag / --before."""
    o = opts(ctx, space, json)
    with errors(o):
        cutoff = parse_time(before) if before is not None else None
        if id is None and not tag and cutoff is None:
            raise UsageError("forget what? give an ID, --tag or --before")
        if id is not None and (tag or cutoff is not None):
            raise UsageError("give an ID or filters (--tag, --before), not both")
        n = _remote(o).forget(id, tags=tag or None, before=cutoff)
        if o.json:
            emit_json({"forgotten": n})
        elif id is not None and n == 0:
            say(o, f"no memory {id}; nothing forgotten")
        else:
            say(o, f"forgot {n} memor{'y' if n == 1 else 'ies'}")


def parse_time(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--before {value!r}: expected epoch seconds or an ISO 8601 time "
                         "such as 2025-01-31T12:00") from None
    return t.timestamp()


def link(
    ctx: typer.Context,
    source: str = typer.Argument(..., metavar="SOURCE", help="Memory id the link starts at."),
    target: str = typer.Argument(..., metavar="TARGET", help="Memory id the link points to."),
    weight: float = typer.Option(1.0, "--weight", "-w", help="Link weight (0..1]."),
    kind: str = typer.Option("related", "--kind", help="Link kind, a short word."),
    space: str | None = SpaceOpt,
    json: bool = JsonOpt,
) -> None:
    """Add (or re-weight) the directed link SOURCE -> TARGET."""
    o = opts(ctx, space, json)
    with errors(o):
        made = _remote(o).link(source, target, weight=weight, kind=kind)
        if o.json:
            emit_json({"source": source, **made.to_dict()})
        else:
            say(o, f"linked {source} -> {made.target} (weight {made.weight:.3g}, {made.kind})")


def events(
    ctx: typer.Context,
    after: int | None = typer.Option(None, "--after", min=0, metavar="SEQ",
                                     help="Start after this sequence number; 0 = every event the server "
                                          "still keeps (default: only new events)."),
    count: int | None = typer.Option(None, "--count", "-c", min=1, metavar="N",
                                     help="Stop after N events (default: until Ctrl-C)."),
    space: str | None = SpaceOpt,
    json: bool = JsonOpt,
) -> None:
    """Tail the space's change feed (remember, forget, link ...) until Ctrl-C or --count events.

    With --json each event is one JSON line. An open tail does not keep its space awake:
    while the space hibernates it waits (a note on stderr) and prints the change that wakes it.
    Events no longer kept by the server are reported on stderr as a warning.

    Over an http(s) --url the tail reads the SSE feed: the same lines on stdout; the space's
    state changes as notes on stderr ("note: space S is draining", "... is hibernated; waiting
    for it to wake"), as are errors the server reports and retries; a dropped connection is
    opened again (within 5 s) after the last event printed, so none is printed twice or missed."""
    o = opts(ctx, space, json)
    with errors(o):
        space_id = o.space_id()
        if o.url.startswith(HTTP_SCHEMES):
            first_contact(o.url, min(o.timeout, FIRST_CONTACT_S))
            transport = HttpTransport(o.url, retries=0, token=o.token)
            try:
                follow_sse(transport, space_id, after, count, o.json, connect_timeout=o.timeout)
            except KeyboardInterrupt:
                pass
            finally:
                transport.close()
            return
        client = o.client(timeout=o.timeout + EVENTS_WAIT_MS / 1000)
        try:
            follow(client, space_id, after, count, o.json)
        except KeyboardInterrupt:
            pass
        finally:
            client.close()


def follow(client: Any, space_id: str, after: int | None, count: int | None, as_json: bool, *,
           sleep: Callable[[float], None] = time.sleep) -> int:
    """Long-poll the ``events`` op and print each event; returns how many were printed.

    ``after`` None starts at the end of the feed (only new changes). A reply with
    ``gap`` true means events after ``after`` are no longer kept by the server;
    that is reported on stderr and following continues with what is there.

    The tail does not keep its space awake (as the SSE and gRPC feeds): the first call
    is an ordinary request (it finds the position, or fetches from ``--after``, and
    wakes a sleeping space once); every later poll is passive (:class:`FeedCursor`).
    When the space hibernates, the server answers a passive poll "asleep" and this
    waits and polls again, resuming after the last seq printed, so the write that
    wakes the space is printed once, in order. The gateways wait for the space's READY
    on the supervisor's lifecycle publisher; a command line has no such subscription,
    so it re-checks every 2-4 s instead (a passive poll of a sleeping space starts
    nothing and costs the server a lookup). An OVERLOADED answer to a poll (more feeds
    open on the space than ``router_passive_per_space``) waits its ``retry_after_s``.
    Any other error ends the command."""
    woken = after is None
    if after is None:
        after = int(client.call(space_id, "events", {"after": 0, "wait_ms": 0, "limit": 1})["last_seq"])
    cursor = FeedCursor(after, wait_ms=EVENTS_WAIT_MS, limit=EVENTS_LIMIT, woken=woken)
    printed = 0
    noted = ""       # the last note printed on stderr, so a long sleep says so once
    while count is None or printed < count:
        cursor.limit = EVENTS_LIMIT if count is None else min(EVENTS_LIMIT, count - printed)
        body, passive = cursor.request()
        try:
            reply = client.call(space_id, "events", body, passive=passive)
        except SpaceUnavailable as e:
            if not is_asleep(e):
                raise
            if cursor.asleep(e):
                noted = _note(noted, f"space {space_id} is {str(e.details.get('state', 'asleep')).lower()}; "
                                     "waiting for it to wake (this command does not wake it)")
                sleep(EVENTS_RECHECK_S * random.uniform(0.5, 1.0))
            continue
        except ResourceExhausted as e:
            if not passive:
                raise
            delay = min(EVENTS_BACKOFF_MAX_S, max(0.1, float(e.details.get("retry_after_s") or 1)))
            noted = _note(noted, f"{e.message}; polling again in {delay:g} s")
            sleep(delay)
            continue
        noted = ""
        batch = cursor.batch(reply)
        if batch.gap:
            upto = f" up to {batch.events[0]['seq']}" if batch.events else ""
            typer.echo(f"warning: events after {batch.after}{upto} are no longer kept by the server; "
                       "those changes are not shown", err=True)
        for event in batch.events:
            if as_json:
                emit_json(event, compact=True)
            else:
                typer.echo(format_event(event))
            printed += 1
    return printed


def follow_sse(transport: HttpTransport, space_id: str, after: int | None, count: int | None, as_json: bool,
               *, connect_timeout: float) -> int:
    """Follow the SSE change feed (:meth:`HttpTransport.stream_events`) and print each event as
    :func:`follow` does; returns how many were printed.

    Changes go to stdout (:func:`format_event`, or one JSON line each with ``as_json``); a gap
    is the same warning on stderr as :func:`follow` prints (without "up to", which the
    stream's gap does not carry); lifecycle transitions, errors the server reports on the
    stream and reconnections are notes on stderr, each said once until something else
    happens. An error that ends the feed for good (the space deleted, a bad token) is raised."""
    printed = 0
    noted = ""
    feed = transport.stream_events(space_id, after, connect_timeout=connect_timeout)
    try:
        for item in feed:
            if item.kind == "change":
                noted = ""
                if as_json:
                    emit_json(item.data, compact=True)
                else:
                    typer.echo(format_event(item.data))
                printed += 1
                if count is not None and printed >= count:
                    break
            elif item.kind == "gap":
                typer.echo(f"warning: events after {item.data.get('after')} are no longer kept by the server; "
                           "those changes are not shown", err=True)
            elif item.kind == "lifecycle":
                state = str(item.data.get("new", "unknown")).lower()
                waits = "; waiting for it to wake (this command does not wake it)" if state == "hibernated" else ""
                noted = _note(noted, f"space {space_id} is {state}{waits}")
            elif item.kind == "error":
                noted = _note(noted, f"the server reports {item.data.get('code')}: {item.data.get('message')}")
            elif item.kind == "reconnecting":
                noted = _note(noted, f"change feed interrupted ({item.data['reason']}); reconnecting")
    finally:
        feed.close()
    return printed


def _note(last: str, message: str) -> str:
    if message != last:
        typer.echo(f"note: {message}", err=True)
    return message


def format_event(e: dict[str, Any]) -> str:
    """One line per event: ``seq  time  type  what``."""
    kind = e.get("type", "?")
    at = datetime.datetime.fromtimestamp(e["at"]).strftime("%H:%M:%S") if e.get("at") else "--:--:--"
    if kind == "remember":
        parts = []
        for m in e.get("memories", []):
            text = f"{m['id']} {m.get('outcome', '')}"
            if m.get("content"):
                text += f" {clip(m['content'], 60)!r}"
            if m.get("tags"):
                text += " [" + ",".join(m["tags"]) + "]"
            parts.append(text)
        what = "; ".join(parts)
    elif kind == "forget":
        what = " ".join(e.get("ids", []))
    elif kind == "link":
        what = f"{e.get('source')} -> {e.get('target')} weight {e.get('weight')} {e.get('kind', '')}"
    else:
        what = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("seq", "type", "at"))
    return f"{e.get('seq', '?'):>8}  {at}  {kind:<8}  {what}"
