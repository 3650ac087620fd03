"""The ``memspace`` command.

Exit codes: 0 ok, 1 an error reported by the server (or storage), 2 a usage error.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import typer

from memspace import config as config_mod
from memspace.errors import MemspaceError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="memspace: a memory service for AI agents, "
                  "one OS process per memory space.")


@app.callback()
def _global(ctx: typer.Context) -> None:
    """memspace: a memory service for AI agents, one OS process per memory space."""


def _fail(err: MemspaceError) -> None:
    typer.echo(f"error: {err.code}: {err.message}", err=True)
    raise typer.Exit(1)


@app.command()
def serve(
    config: Optional[str] = typer.Option(None, "--config", help="TOML configuration file ($MEMSPACE_CONFIG)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Data directory (default ./memspace-data)."),
    http: Optional[str] = typer.Option(None, "--http", help="HTTP HOST:PORT (default 127.0.0.1:7077; port 0 picks one)."),
    grpc: Optional[str] = typer.Option(None, "--grpc", help="gRPC HOST:PORT (default 127.0.0.1:7078)."),
    zmq_bind: Optional[str] = typer.Option(None, "--zmq", help="Native zmq endpoint (default tcp://127.0.0.1:7079)."),
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


def main(argv: list[str] | None = None) -> Any:
    try:
        return app(args=argv, standalone_mode=True)
    except MemspaceError as e:   # pragma: no cover - commands catch their own
        typer.echo(f"error: {e.code}: {e.message}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
