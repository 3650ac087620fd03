"""``memspace space export`` and ``memspace space import``: a space's memories as NDJSON.

Format: one memory per line, every field ``get`` returns plus ``embedding`` (a
list of floats) and ``links`` (``[{"target", "weight", "kind"}]``), in id
order. ``import`` restores those lines exactly: ids, embeddings, confidence,
created/last-access times, access counts, tags, metadata and links (also to
memories on later lines) are kept, nothing is deduplicated or auto-linked, and
a memory whose id the space holds already is replaced. Importing an export
into an empty space and exporting it again gives the same lines.

Export to a file writes a temporary name beside FILE, fsyncs and renames it,
so an interrupted export never leaves a partial FILE.

Import reads the input once, line by line, and sends batches (``--batch``,
default 500), each applied all or none. If a batch fails, the batches before it
stay applied and the message says how many memories were imported; importing
the file again is safe (it replaces those memories with themselves).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import typer

from memspace.cli_common import (
    JsonOpt,
    Options,
    SpaceArg,
    UsageError,
    emit_json,
    errors,
    opts,
    progress,
    say,
    space_arg,
)
from memspace.errors import MemspaceError, SpaceNotFound, from_code

_ITEM_INDEX = re.compile(r"items\[(\d+)\]")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("import")(import_)


def export(
    ctx: typer.Context,
    space: str = SpaceArg,
    file: str = typer.Argument("-", metavar="FILE|-", help="Output file; - or none for stdout."),
    batch: int = typer.Option(500, "--batch", min=1, max=10000, help="Memories fetched per request."),
    json: bool = JsonOpt,
) -> None:
    """Write every memory of SPACE as NDJSON (one memory per line, with embedding and links)."""
    o = opts(ctx, json=json)
    with errors(o):
        remote = o.client().space(space_arg(space))
        if file == "-":
            n = _export(o, remote, sys.stdout.buffer, batch)
            typer.echo(f"exported {n} memories from {remote.id}", err=True)
            return
        path = Path(file)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            try:
                with open(tmp, "wb") as out:
                    n = _export(o, remote, out, batch)
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as e:
            raise UsageError(f"cannot write {file}: {e.strerror or e}") from None
        if o.json:
            emit_json({"space": remote.id, "exported": n, "file": str(path)})
        else:
            say(o, f"exported {n} memories from {remote.id} to {path}")


def _export(o: Options, remote: Any, out: IO[bytes], batch: int) -> int:
    n = 0
    with progress(o) as bar:
        task = bar.add_task(f"exporting {remote.id}", total=remote.count())
        for item in remote.export(batch=batch):
            out.write(orjson.dumps(item) + b"\n")
            n += 1
            bar.advance(task)
        bar.update(task, total=n)
    out.flush()
    return n


def import_(
    ctx: typer.Context,
    space: str = SpaceArg,
    file: str = typer.Argument(..., metavar="FILE|-", help="NDJSON file written by `space export`; - for stdin."),
    batch: int = typer.Option(500, "--batch", min=1, max=10000, help="Memories per request (each all or none)."),
    create: bool = typer.Option(False, "--create",
                                help="Create SPACE first if it does not exist (dimension from the first embedding)."),
    json: bool = JsonOpt,
) -> None:
    """Restore memories exactly as exported (ids, times, counts, links kept; same ids replaced)."""
    o = opts(ctx, json=json)
    with errors(o):
        space_id = space_arg(space)
        client = o.client()
        with _input(file) as src:
            importer = Importer(client, space_id, src, "stdin" if file == "-" else file, batch, create)
            try:
                with progress(o, unit="bytes") as bar:
                    importer.run(bar)
            except UsageError as e:
                raise UsageError(f"{e}; {importer.imported} memories were imported before it") from None
            except MemspaceError:
                if importer.imported:
                    typer.echo(f"note: {importer.imported} memories were imported before this error", err=True)
                raise
        if o.json:
            emit_json({"space": space_id, "imported": importer.imported, "file": file})
        else:
            say(o, f"imported {importer.imported} memories into {space_id}")


@contextlib.contextmanager
def _input(name: str) -> Iterator[IO[bytes]]:
    """FILE opened for reading, or stdin (``-``)."""
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        f = open(name, "rb")  # noqa: SIM115 -- closed below; only the open's own error is "cannot read"
    except OSError as e:
        raise UsageError(f"cannot read {name}: {e.strerror or e}") from None
    with f:
        yield f


class Importer:
    """One pass over the input: parse each line, send a batch every ``batch`` memories."""

    def __init__(self, client: Any, space_id: str, src: IO[bytes], name: str, batch: int, create: bool) -> None:
        self.client = client
        self.remote = client.space(space_id)
        self.src = src
        self.name = name
        self.batch = batch
        self.create = create
        self.imported = 0

    def run(self, bar: Any) -> None:
        task = bar.add_task(f"importing into {self.remote.id}", total=self._size())
        chunk: list[dict[str, Any]] = []
        lines: list[int] = []
        done = 0
        for lineno, line, item in self._lines():
            chunk.append(item)
            lines.append(lineno)
            done += len(line)
            if len(chunk) == self.batch:
                self._send(chunk, lines)
                chunk, lines = [], []
                bar.update(task, completed=done)
        if chunk:
            self._send(chunk, lines)
        bar.update(task, completed=done, total=done)

    def _size(self) -> int | None:
        """The input's size for the progress bar, when it is a regular file."""
        try:
            st = os.fstat(self.src.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def _send(self, chunk: list[dict[str, Any]], lines: list[int]) -> None:
        if self.create and self.imported == 0:
            self._ensure_space(chunk[0])
        try:
            self.imported += self.remote.import_(chunk, batch=len(chunk))
        except MemspaceError as e:
            # the server names the memory by its index in the batch: name the line instead
            match = _ITEM_INDEX.match(str(e.details.get("field", "")))
            if match is None or int(match.group(1)) >= len(lines):
                raise
            line = lines[int(match.group(1))]
            raise from_code(e.code, f"{self.name} line {line}: {e.message}", {**e.details, "line": line}) from None

    def _ensure_space(self, first: dict[str, Any]) -> None:
        try:
            self.client.get_space(self.remote.id)
        except SpaceNotFound:
            embedding = first.get("embedding")
            dimension = len(embedding) if isinstance(embedding, list) and embedding else None
            self.client.create_space(self.remote.id, dimension=dimension)

    def _lines(self) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
        """(line number, raw line, memory) for every non-blank line."""
        for lineno, line in enumerate(self.src, 1):
            if line.strip():
                yield lineno, line, self._parse(line, lineno)

    def _parse(self, line: bytes, lineno: int) -> dict[str, Any]:
        where = f"{self.name} line {lineno}"
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise UsageError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(item, dict):
            raise UsageError(f"{where}: expected a JSON object (one memory), got {type(item).__name__}")
        return item
