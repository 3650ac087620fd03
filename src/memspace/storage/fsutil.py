"""Small durability helpers: fsync a directory, write a file atomically, copy a file durably.

Rules these helpers encode (POSIX; Linux ext4/xfs semantics):

* Data is durable only after ``fsync``/``fdatasync`` of the file, and a new,
  renamed or deleted directory entry only after ``fsync`` of its directory.
* ``atomic_write`` = write ``<name>.tmp`` + fsync + rename over the target +
  fsync the directory: after a crash the target holds either the old or the
  new content, never a mix. A leftover ``.tmp`` file is garbage from an
  interrupted write; callers ignore or delete it.
* An ``OSError`` from any of these propagates unchanged. After a failed fsync
  the page cache may already have dropped the dirty pages (the PostgreSQL
  "fsyncgate" lesson), so callers must not retry the fsync and assume success.

``os.fsync``/``os.fdatasync`` are looked up at call time so tests can count
calls by monkeypatching the ``os`` module.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeAlias

StrPath: TypeAlias = "str | os.PathLike[str]"
Buffer: TypeAlias = bytes | bytearray | memoryview

#: Suffix of the temporary file ``atomic_write`` renames into place.
TMP_SUFFIX = ".tmp"

_COPY_CHUNK = 8 << 20


def fdatasync(fd: int) -> None:
    """Flush a file's data (and the metadata needed to read it back, e.g. its size)."""
    sync = getattr(os, "fdatasync", None)  # absent on macOS
    if sync is None:
        os.fsync(fd)
    else:
        sync(fd)


def fsync_dir(path: StrPath) -> None:
    """Make the entries of directory ``path`` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: Buffer) -> None:
    """``os.write`` until every byte of ``data`` is written (a short write is not an error)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def makedirs_durable(path: StrPath) -> Path:
    """Create ``path`` (and parents) if missing and fsync every directory whose entries changed."""
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    if missing:
        path.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):
            fsync_dir(created.parent)
    return path


def atomic_write(path: StrPath, data: Buffer | Iterable[Buffer]) -> None:
    """Replace ``path`` with ``data`` (one buffer or an iterable of buffers), crash-atomically.

    Writes ``<path>.tmp``, fsyncs it, renames it over ``path`` and fsyncs the
    directory. On error the temporary file is removed (best effort) and the
    error propagates; ``path`` then still holds its previous content.
    """
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    chunks: Iterable[Buffer] = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            for chunk in chunks:
                write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def _file_chunks(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            yield chunk


def copy_durable(src: StrPath, dst: StrPath) -> int:
    """Copy file ``src`` to ``dst`` (atomically, fsynced, directory fsynced); return its size."""
    atomic_write(dst, _file_chunks(Path(src)))
    return Path(dst).stat().st_size


def truncate_durable(path: StrPath, size: int) -> None:
    """Cut file ``path`` to ``size`` bytes and fsync it."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def map_readonly(path: StrPath) -> mmap.mmap | bytes:
    """The file's bytes without copying them: a read-only memory map (``b""`` for an empty file).

    The map lives as long as something refers to it (a slice of it, a memoryview). The
    caller must not let the file be truncated meanwhile: reading a mapped page past the
    end of the file kills the process with SIGBUS. Holding the space's lock makes this
    process the only writer, and it only truncates a segment it has no map of.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not size:
            return b""
        return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)


def populated_zeros(shape: tuple[int, ...], dtype: Any) -> Any:
    """``numpy.zeros(shape, dtype)`` with its pages in place at once (``MAP_POPULATE``): for
    an array about to be written in full, one bulk allocation instead of a page fault per
    page. Where the flag does not exist this is an ordinary anonymous map."""
    import numpy as np

    size = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    return np.frombuffer(mmap.mmap(-1, size, flags=flags), dtype, int(np.prod(shape))).reshape(shape)
