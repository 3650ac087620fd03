"""The spawner seam: start a worker process for a space, learn when it exits, signal it.

:class:`ForkServerSpawner` uses the standard library's fork server
(``multiprocessing`` "forkserver" start method): a small process started once,
before the supervisor opens any zmq socket or thread, that imports numpy, zmq,
orjson and the engine (``preload``) and then forks a child per request. A new
worker therefore starts with everything imported, in milliseconds, and never
inherits the supervisor's sockets. The fork server reaps its children
(SIGCHLD + ``waitpid``) and reports each exit code over a pipe whose read end is
the process ``sentinel``: the supervisor puts sentinels in its poll set and
learns of an exit without polling.

:class:`memspace.testing.FakeSpawner` implements the same interface for
decision tests of the supervisor.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

#: Imported once in the fork server, so every worker starts with them loaded.
PRELOAD = [
    "numpy",
    "zmq",
    "orjson",
    "memspace.engine.store",
    "memspace.engine.embedder",
    "memspace.storage.space",
    "memspace.worker.main",
    "memspace.storage.walcheck",
    "memspace.storage.repair",
    "memspace.logs",
    "setproctitle",
    # a `memspace` console script is re-imported in each child as its main module; with the CLI
    # already imported here that costs nothing
    "memspace.cli",
    "memspace.supervisor.forkserver_preload",
]


@dataclass
class WorkerHandle:
    """A started worker. ``sentinel`` becomes readable when the process has exited."""

    space: str
    pid: int
    sentinel: int
    generation: int
    process: Any = field(default=None, repr=False)

    def exitcode(self) -> int | None:
        """The exit code once the process has exited (negative = killed by that signal), else None."""
        if self.process is None:
            return None
        code: int | None = self.process.exitcode
        return code

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass


class Spawner(Protocol):
    def start(self) -> None:
        """Prepare (start the fork server). Called before the supervisor opens sockets."""

    def spawn(self, space: str, generation: int, target: Callable[..., Any], args: tuple[Any, ...]) -> WorkerHandle:
        """Start ``target(*args)`` in a new process for ``space``."""

    def close(self, handle: WorkerHandle) -> None:
        """Release what the handle holds once its exit has been seen."""

    def stop(self) -> None:
        """Stop the fork server (after every worker has exited)."""


class ForkServerSpawner:
    def __init__(self, preload: list[str] | None = None) -> None:
        self._ctx = multiprocessing.get_context("forkserver")
        self._preload = list(PRELOAD if preload is None else preload)

    def start(self) -> None:
        self._ctx.set_forkserver_preload(self._preload)
        multiprocessing.forkserver.ensure_running()

    def spawn(self, space: str, generation: int, target: Callable[..., Any], args: tuple[Any, ...]) -> WorkerHandle:
        proc = self._ctx.Process(target=target, args=args, name=f"memspace-worker-{space}", daemon=False)
        proc.start()
        assert proc.pid is not None
        return WorkerHandle(space=space, pid=proc.pid, sentinel=proc.sentinel, generation=generation, process=proc)

    def close(self, handle: WorkerHandle) -> None:
        proc = handle.process
        if proc is not None and proc.exitcode is not None:
            proc.close()
            handle.process = None

    def stop(self) -> None:
        # The fork server exits by itself when this process's end of its "alive" pipe closes
        # (at exit); nothing to do while the process lives on (e.g. in tests).
        return None

