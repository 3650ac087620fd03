"""``memspace space export`` and ``memspace space import``: a space's memories as NDJSON.

Format: one memory per line, every field ``get`` returns plus ``embedding`` (a
list of floats) and ``links`` (``[{"target", "weight", "kind"}]``), in id
order. ``import`` reads the same lines; fields it does not take (access
counts, tier, times) are ignored, ids, embeddings, tags, metadata and links are
kept.

Export to a file writes a temporary name beside FILE, fsyncs and renames it,
so an interrupted export never leaves a partial FILE.

Import sends batches (``--batch``, default 500), each applied all or none. A
link may point to a memory later in the file (auto-links go both ways, so most
exports have such forward links), which the server cannot accept before that
memory exists. Import therefore runs in two passes: the first stores every
memory with the links it can already resolve, the second re-sends (as updates,
same content and embedding) only the memories that had forward links, now with
all of them. Memory use stays bounded: the second pass re-reads those lines
from the file (stdin is first copied to a temporary file). If a batch fails,
the batches before it stay applied and the message says how many memories were
imported.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
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
from memspace.errors import MemspaceError, SpaceNotFound


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
    """Import memories (ids, embeddings, links kept) from an NDJSON export."""
    o = opts(ctx, json=json)
    with errors(o):
        space_id = space_arg(space)
        client = o.client()
        with _seekable(file) as src:
            importer = Importer(client, space_id, src, file, batch, create)
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
            emit_json({"space": space_id, "imported": importer.imported, "relinked": importer.relinked,
                       "file": file})
        else:
            say(o, f"imported {importer.imported} memories into {space_id}")


class _seekable:
    """The input as a seekable binary file: FILE itself, or stdin copied to a temporary file."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.f: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        try:
            if self.name == "-":
                self.f = tempfile.TemporaryFile()
                shutil.copyfileobj(sys.stdin.buffer, self.f)
                self.f.seek(0)
            else:
                self.f = open(self.name, "rb")
        except OSError as e:
            raise UsageError(f"cannot read {self.name}: {e.strerror or e}") from None
        return self.f

    def __exit__(self, *exc: object) -> None:
        if self.f is not None:
            self.f.close()


class Importer:
    """The two passes of an import (see the module docstring)."""

    def __init__(self, client: Any, space_id: str, src: IO[bytes], name: str, batch: int, create: bool) -> None:
        self.client = client
        self.remote = client.space(space_id)
        self.src = src
        self.name = name
        self.batch = batch
        self.create = create
        self.seen: set[str] = set()       # ids stored so far (earlier batches and this one)
        self.deferred: list[tuple[int, int]] = []   # (offset, length) of lines whose links point forward
        self.imported = 0
        self.relinked = 0

    def run(self, bar: Any) -> None:
        size = os.fstat(self.src.fileno()).st_size
        task = bar.add_task(f"importing into {self.remote.id}", total=size)
        chunk: list[dict[str, Any]] = []
        for offset, line, item in self._lines():
            links = item.get("links")
            if isinstance(links, list) and links:
                now = [link for link in links if self._resolvable(link)]
                if len(now) < len(links):
                    self.deferred.append((offset, len(line)))
                    item = {**item, "links": now}
            if isinstance(item.get("id"), str):
                self.seen.add(item["id"])
            chunk.append(item)
            if len(chunk) == self.batch:
                self._send(chunk)
                chunk = []
            bar.update(task, completed=offset + len(line))
        if chunk:
            self._send(chunk)
        bar.update(task, completed=size)
        if self.deferred:
            task = bar.add_task("adding forward links", total=sum(n for _, n in self.deferred))
            for start in range(0, len(self.deferred), self.batch):
                spans = self.deferred[start:start + self.batch]
                items = list(self._at(spans))
                self.relinked += self.remote.import_(items, batch=len(items))
                bar.advance(task, sum(n for _, n in spans))

    def _resolvable(self, link: Any) -> bool:
        # anything that is not a well-formed link goes to the server as is, which names the problem
        if not isinstance(link, dict) or not isinstance(link.get("target"), str):
            return True
        return link["target"] in self.seen

    def _send(self, chunk: list[dict[str, Any]]) -> None:
        if self.create and self.imported == 0:
            self._ensure_space(chunk[0])
        self.imported += self.remote.import_(chunk, batch=len(chunk))

    def _ensure_space(self, first: dict[str, Any]) -> None:
        try:
            self.client.get_space(self.remote.id)
        except SpaceNotFound:
            embedding = first.get("embedding")
            dimension = len(embedding) if isinstance(embedding, list) and embedding else None
            self.client.create_space(self.remote.id, dimension=dimension)

    def _lines(self) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
        """(offset, raw line, memory) for every non-blank line."""
        self.src.seek(0)
        offset = 0
        lineno = 0
        while line := self.src.readline():
            lineno += 1
            if line.strip():
                yield offset, line, self._parse(line, lineno)
            offset += len(line)

    def _at(self, spans: list[tuple[int, int]]) -> Iterator[dict[str, Any]]:
        """The memories on the lines at ``spans`` (already parsed once, so known to be valid)."""
        for offset, _ in spans:
            self.src.seek(offset)
            yield self._parse(self.src.readline(), None)

    def _parse(self, line: bytes, lineno: int | None) -> dict[str, Any]:
        where = f"{self.name} line {lineno}" if lineno is not None else f"{self.name}"
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise UsageError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(item, dict):
            raise UsageError(f"{where}: expected a JSON object (one memory), got {type(item).__name__}")
        return item

