"""Plumbing shared by the ``memspace`` commands: options, the connection, output and exit codes.

Exit codes (the contract): 0 ok; 1 an error reported by the server, or no
server answering at the URL; 2 a usage error (a bad flag, an invalid space id,
an unreadable input file). Errors are printed on stderr as
``error: CODE: message``; with ``--json`` stdout carries JSON and nothing else.

Connecting: the first request of a command is preceded by a quick check that
something answers at the URL (a TCP connect for ``tcp://`` and ``http://``, then
one cheap request), bounded by ``min(--timeout, 5 s)``, so a missing server is
reported in seconds instead of after the full request timeout.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import sys
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from memspace import config as config_mod
from memspace.errors import DeadlineExceeded, InvalidArgument, InvalidSpaceId, MemspaceError
from memspace.ids import validate_space_id

if TYPE_CHECKING:
    from memspace.client import Client

DEFAULT_URL = "tcp://127.0.0.1:7079"
DEFAULT_TIMEOUT_S = 30.0
#: Upper bound of the first-contact check; a missing server is reported within about this long.
FIRST_CONTACT_S = 5.0
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in how the command was called (exit 2); the message says what to change."""


class NoServer(Exception):
    """Nothing answered at the URL (exit 1)."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(f"no memspace server answered at {url} ({why}) - start one with `memspace serve` "
                         f"or point --url / $MEMSPACE_URL at a running one")


@dataclass
class Options:
    """Global options, resolved once per invocation and shared through the typer context."""

    url: str = DEFAULT_URL
    space_flag: str | None = None
    json: bool = False
    timeout: float = DEFAULT_TIMEOUT_S
    token: str | None = None
    _client: Client | None = field(default=None, repr=False)
    _contacted: bool = field(default=False, repr=False)

    def override(self, space: str | None = None, json: bool = False) -> Options:
        """These options with a command's own ``--space`` / ``--json`` applied (they win)."""
        if space is not None:
            self.space_flag = space
        self.json = self.json or json
        return self

    def space_id(self) -> str:
        """The space to act on: ``--space`` > ``$MEMSPACE_SPACE`` > config ``default_space``."""
        return resolve_space(self.space_flag)

    def client(self, timeout: float | None = None) -> Client:
        """The connected :class:`memspace.client.Client` (first contact checked once).

        ``timeout`` other than None returns a separate client whose requests may wait that long
        (long polls); the caller closes it.
        """
        from memspace.client import connect

        if not self._contacted:
            first_contact(self.url, min(self.timeout, FIRST_CONTACT_S))
            self._contacted = True
        if timeout is not None:
            return connect(self.url, timeout=timeout, retries=0, token=self.token)
        if self._client is None:
            self._client = connect(self.url, timeout=self.timeout, retries=0, token=self.token)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def opts(ctx: typer.Context, space: str | None = None, json: bool = False) -> Options:
    """The invocation's options with the command-level ``--space`` / ``--json`` applied."""
    found = ctx.find_object(Options)
    if found is None:    # a command invoked without the group callback (tests, embedding)
        found = ctx.ensure_object(Options)
    return found.override(space, json)


def resolve_space(flag: str | None) -> str:
    """Resolve and validate the space id; an invalid one is a usage error naming its source."""
    if flag is not None:
        value, source, where = flag, "flag", "--space"
    elif "MEMSPACE_SPACE" in os.environ:
        value, source, where = os.environ["MEMSPACE_SPACE"], "env", "$MEMSPACE_SPACE"
    else:
        try:
            cfg = config_mod.load()
        except MemspaceError as e:
            raise UsageError(f"{e.code}: {e.message}") from None
        value, source = cfg["default_space"], "config"
        where = f"default_space in {cfg.source('default_space')}"
    return check_space_id(value, source, where)


def check_space_id(value: str, source: str = "argument", where: str = "the SPACE argument") -> str:
    try:
        return validate_space_id(value, source)
    except InvalidSpaceId as e:
        raise UsageError(f"{e.code}: {e.message} (given by {where})") from None


def first_contact(url: str, timeout: float) -> None:
    """Raise NoServer unless a memspace server answers at ``url`` within about ``timeout`` s;
    UsageError for a URL the client cannot use."""
    from memspace.client import connect

    if url.startswith(("http://", "https://")):
        parsed = urllib.parse.urlsplit(url)
        try:
            host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError:
            host = None
        if not host:
            raise UsageError(f"invalid --url {url!r}: expected http://HOST:PORT")
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as e:
            raise NoServer(url, e.strerror or type(e).__name__) from None
    elif url.startswith("tcp://"):
        host, _, port = url[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"invalid --url {url!r}: expected tcp://HOST:PORT or ipc://PATH")
        try:
            # a refused connection is known at once; zmq alone would silently keep retrying
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except OSError as e:
            raise NoServer(url, e.strerror or type(e).__name__) from None
    elif url.startswith("ipc://"):
        if not os.path.exists(url[len("ipc://"):]):
            raise NoServer(url, "no socket file")
    else:
        raise UsageError(f"invalid --url {url!r}: expected tcp://HOST:PORT or ipc://PATH "
                         "(the `zmq:` endpoint printed by `memspace serve`) or http://HOST:PORT")
    try:
        probe = connect(url, timeout=timeout, retries=0)
    except InvalidArgument as e:
        raise UsageError(f"invalid --url: {e.message}") from None
    with probe:
        try:
            # any reply, even an error one, proves a memspace router is there; get_space of a
            # valid id is cheap (no worker is started, nothing is listed)
            probe.call("default", "get_space")
        except DeadlineExceeded as e:
            if _from_client(e):
                raise NoServer(url, f"no reply within {timeout:g} s") from None
        except MemspaceError:
            pass


def _from_client(err: DeadlineExceeded) -> bool:
    """True for the client's own deadline (no reply at all), False for the server's error reply."""
    return "attempts" in err.details and "timeout_s" in err.details


@contextlib.contextmanager
def errors(o: Options) -> Iterator[None]:
    """Turn the exceptions of a command into its message and exit code."""
    try:
        yield
    except UsageError as e:
        fail(str(e), EXIT_USAGE)
    except NoServer as e:
        fail(str(e), EXIT_ERROR)
    except MemspaceError as e:
        fail(f"{e.code}: {e.message}", EXIT_ERROR)
    finally:
        o.close()


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


# -- output ------------------------------------------------------------------------------------


#: Width of tables written to a pipe or file: wide enough that rows do not wrap for grep and awk.
PIPE_WIDTH = 200


def stdout() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def emit_json(value: Any, *, compact: bool = False) -> None:
    """One JSON document on stdout (indented, or one line for streams)."""
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    if not compact:
        option |= orjson.OPT_INDENT_2
    sys.stdout.write(orjson.dumps(value, option=option).decode() + "\n")
    sys.stdout.flush()


def say(o: Options, message: str) -> None:
    """A human confirmation: stdout normally, stderr in --json mode (stdout is for JSON)."""
    if o.json:
        typer.echo(message, err=True)
    else:
        typer.echo(message)


def progress(o: Options, unit: str = "items") -> Progress:
    """A progress display on stderr, shown only on a terminal and never in --json mode.

    ``unit``: "items" (a bar with done/total), "bytes" (a bar with sizes) or "none" (a
    spinner, for work whose size is unknown)."""
    console = stderr()
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if unit != "none":
        columns += [BarColumn(), DownloadColumn(binary_units=True) if unit == "bytes" else MofNCompleteColumn(),
                    TimeRemainingColumn()]
    columns.append(TimeElapsedColumn())
    return Progress(*columns, console=console, transient=False,
                    disable=o.json or not console.is_terminal)


def kv_table(rows: Mapping[str, Any], title: str | None = None) -> Table:
    table = Table(show_header=False, title=title, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows.items():
        table.add_row(key, value if isinstance(value, Text) else show(value))
    return table


def show(value: Any) -> str:
    """A value for a table cell: None as '-', containers as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list, tuple)):
        return orjson.dumps(value).decode() if value else "-"
    return str(value)


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def clip(text: str | None, width: int = 60) -> str:
    if text is None:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- options shared by several commands ---------------------------------------------------------

SpaceOpt = typer.Option(None, "--space", "-s", metavar="SPACE",
                        help="Memory space ($MEMSPACE_SPACE, else config default_space).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON on stdout, nothing else.")
SpaceArg = typer.Argument(..., metavar="SPACE", help="Memory space id.", show_default=False)


def space_arg(value: str) -> str:
    """A SPACE argument, validated (a usage error names the argument)."""
    return check_space_id(value, "argument", "the SPACE argument")
