"""The ``memspace`` command.

    memspace serve                          run the service (router, supervisor, workers, gateways)
    memspace status [--space S] [--watch]   per-space state, pid, memories, restarts ...
    memspace space create|list|show|delete|drain|hibernate|restart|repair|export|import
    memspace remember|recall|get|forget|link      one space's memories
    memspace events                         tail one space's change feed
    memspace bench                          a small load test
    memspace diagnose [FILE]                a bundle for a bug report

Global options (before the command): ``--url`` / ``$MEMSPACE_URL`` (default
``tcp://127.0.0.1:7079``, the ``zmq:`` endpoint of ``memspace serve``),
``--space`` / ``$MEMSPACE_SPACE`` > config ``default_space``, ``--json``,
``--timeout``. ``--space`` and ``--json`` are also accepted after the command.

Exit codes: 0 ok, 1 an error reported by the server (``error: CODE: message``
on stderr) or no server answering at the URL, 2 a usage error.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from memspace import cli_bench, cli_diagnose, cli_memory, cli_space, cli_status
from memspace import config as config_mod
from memspace.cli_common import DEFAULT_TIMEOUT_S, DEFAULT_URL, EXIT_USAGE, Options
from memspace.errors import MemspaceError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="memspace: a memory service for AI agents, one OS process per memory space.")


@app.callback()
def _global(
    ctx: typer.Context,
    url: str | None = typer.Option(None, "--url", metavar="URL",
                                   help=f"Server endpoint ($MEMSPACE_URL; default {DEFAULT_URL})."),
    space: str | None = typer.Option(None, "--space", "-s", metavar="SPACE",
                                     help="Memory space ($MEMSPACE_SPACE, else config default_space)."),
    json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout, nothing else."),
    token: str | None = typer.Option(None, "--token", metavar="TOKEN", envvar="MEMSPACE_TOKEN",
                                     help="Bearer token for a server with auth.mode = token ($MEMSPACE_TOKEN)."),
    timeout: float | None = typer.Option(
        None, "--timeout", metavar="SECONDS", min=0.001, max=86400,
        help=f"Longest wait for one reply ($MEMSPACE_TIMEOUT; default {DEFAULT_TIMEOUT_S:g}); "
             "the first contact waits at most 5 s of it."),
) -> None:
    """memspace: a memory service for AI agents, one OS process per memory space."""
    ctx.obj = Options(url=url or os.environ.get("MEMSPACE_URL") or DEFAULT_URL, space_flag=space,
                      json=json, timeout=timeout if timeout is not None else _env_timeout(), token=token)


def _env_timeout() -> float:
    raw = os.environ.get("MEMSPACE_TIMEOUT")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        typer.echo(f"error: $MEMSPACE_TIMEOUT must be a number of seconds in (0, 86400], got {raw!r}",
                   err=True)
        raise typer.Exit(EXIT_USAGE)
    return value


@app.command()
def serve(
    config: str | None = typer.Option(None, "--config", help="TOML configuration file ($MEMSPACE_CONFIG)."),
    data_root: str | None = typer.Option(None, "--data-root", help="Data directory (default ./memspace-data)."),
    http: str | None = typer.Option(None, "--http", help="HTTP HOST:PORT (default 127.0.0.1:7077; port 0 picks one)."),
    grpc: str | None = typer.Option(None, "--grpc", help="gRPC HOST:PORT (default 127.0.0.1:7078)."),
    zmq_bind: str | None = typer.Option(None, "--zmq", help="Native zmq endpoint (default tcp://127.0.0.1:7079)."),
) -> None:
    """Run the service: router, supervisor and one worker process per active memory space."""
    from memspace.serve import run

    try:
        cfg = config_mod.load(config, overrides={"data_root": data_root, "http.bind": http, "grpc.bind": grpc,
                                                 "zmq.bind": zmq_bind})
    except MemspaceError as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run(cfg))


cli_status.register(app)
app.add_typer(cli_space.app, name="space")
cli_memory.register(app)
cli_bench.register(app)
cli_diagnose.register(app)


def main(argv: list[str] | None = None) -> Any:
    try:
        return app(args=argv, standalone_mode=True)
    except MemspaceError as e:   # pragma: no cover - commands catch their own
        typer.echo(f"error: {e.code}: {e.message}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
