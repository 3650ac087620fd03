"""``memspace space ...``: create, inspect and operate memory spaces; export and import their memories.

Every command names its space as the SPACE argument (never a default: these
act on whole spaces). ``delete`` asks for confirmation on a terminal and needs
``--yes`` otherwise. ``export`` and ``import`` live in :mod:`memspace.cli_transfer`.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from memspace import cli_transfer
from memspace.cli_common import (
    JsonOpt,
    SpaceArg,
    UsageError,
    emit_json,
    errors,
    kv_table,
    opts,
    progress,
    say,
    space_arg,
    stdout,
    when,
)
from memspace.cli_common import show as cell
from memspace.cli_status import render_space, row_style

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Create, inspect and operate memory spaces; export and import their memories.")



@app.command()
def create(
    ctx: typer.Context,
    space: str = SpaceArg,
    dimension: int | None = typer.Option(None, "--dimension", "-d", min=1, max=65536,
                                         help="Embedding dimension (default: the server's spaces.dimension)."),
    setting: Annotated[list[str] | None, typer.Option(
        "--setting", metavar="KEY=VALUE",
        help="A space setting, e.g. decay=none (repeatable; VALUE parsed as JSON when it is JSON).")] = None,
    settings_json: str | None = typer.Option(None, "--settings", metavar="JSON",
                                             help="Space settings as one JSON object."),
    json: bool = JsonOpt,
) -> None:
    """Create a space (creating it again with the same settings is a no-op)."""
    o = opts(ctx, json=json)
    with errors(o):
        space_id = space_arg(space)
        settings = _settings(settings_json, setting or [])
        result = o.client().create_space(space_id, dimension=dimension, settings=settings or None)
        if o.json:
            emit_json(result)
            return
        info = result.get("space", {})
        verb = "created" if result.get("created") else "exists (same settings):"
        say(o, f"{verb} space {space_id} (dimension {cell(info.get('dimension'))})")


def _settings(raw: str | None, pairs: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if raw is not None:
        try:
            settings = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise UsageError(f"--settings is not valid JSON: {e}") from None
        if not isinstance(settings, dict):
            raise UsageError("--settings must be a JSON object, e.g. '{\"decay\": \"none\"}'")
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"--setting {pair!r}: expected KEY=VALUE, e.g. decay=none")
        try:
            settings[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            settings[key] = value    # a bare word such as `none` is a string
    return settings


@app.command("list")
def list_(ctx: typer.Context, json: bool = JsonOpt) -> None:
    """Every space with its state, dimension and memory count."""
    o = opts(ctx, json=json)
    with errors(o):
        spaces = o.client().list_spaces()
        if o.json:
            emit_json(spaces)
            return
        table = Table(box=None, header_style="bold", pad_edge=False)
        for name in ("SPACE", "STATE", "DIMENSION", "MEMORIES", "PID", "RESTARTS", "CREATED"):
            table.add_column(name, justify="left" if name in ("SPACE", "STATE", "CREATED") else "right")
        for s in spaces:
            table.add_row(s["id"], s["state"], cell(s.get("dimension")), cell(s.get("memories")),
                          cell(s.get("pid")), cell(s.get("restarts")), when(s.get("created_at")),
                          style=row_style(s))
        stdout().print(table)


@app.command()
def show(ctx: typer.Context, space: str = SpaceArg, json: bool = JsonOpt) -> None:
    """One space's status, settings and operation latencies."""
    o = opts(ctx, json=json)
    with errors(o):
        info = o.client().get_space(space_arg(space))
        if o.json:
            emit_json(info)
        else:
            stdout().print(render_space(info))


@app.command()
def delete(
    ctx: typer.Context,
    space: str = SpaceArg,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json: bool = JsonOpt,
) -> None:
    """Delete a space and all its data; prints the receipt of what was removed."""
    o = opts(ctx, json=json)
    with errors(o):
        space_id = space_arg(space)
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError(f"deleting space {space_id} removes all its memories; pass --yes to confirm")
            typer.confirm(f"Delete space {space_id} and all its memories?", abort=True, err=True)
        receipt = o.client().delete_space(space_id)
        if o.json:
            emit_json(receipt)
            return
        say(o, f"deleted space {space_id}: {cell(receipt.get('memories'))} memories, "
               f"{cell(receipt.get('files'))} files, {cell(receipt.get('bytes'))} bytes")


def _lifecycle(op: str, doc: str) -> None:
    def command(ctx: typer.Context, space: str = SpaceArg, json: bool = JsonOpt) -> None:
        o = opts(ctx, json=json)
        with errors(o):
            space_id = space_arg(space)
            info = getattr(o.client(), op)(space_id)
            if o.json:
                emit_json(info)
            else:
                say(o, f"space {space_id}: {info.get('state')}"
                       + (f" (pid {info['pid']})" if info.get("pid") else ""))

    command.__doc__ = doc
    app.command(op)(command)


_lifecycle("drain", "Finish in-flight work, checkpoint and stop the space's worker (it restarts on use).")
_lifecycle("hibernate", "Like drain, marked HIBERNATED: an idle space woken by its next request.")
_lifecycle("restart", "Drain the worker if running, start a new one and wait until it is READY.")


@app.command()
def repair(ctx: typer.Context, space: str = SpaceArg, json: bool = JsonOpt) -> None:
    """Recover a stopped space's WAL up to its first corruption (copies of changed files are kept).

    A running space is refused: drain it first."""
    o = opts(ctx, json=json)
    with errors(o):
        space_id = space_arg(space)
        with progress(o, unit="none") as bar:
            bar.add_task(f"repairing {space_id}", total=None)
            result = o.client().repair(space_id)
        if o.json:
            emit_json(result)
            return
        report = result.get("repair") or {}
        state = (result.get("space") or {}).get("state")
        stdout().print(kv_table({**report, "state": state}, title=f"repair of {space_id}"))


cli_transfer.register(app)
