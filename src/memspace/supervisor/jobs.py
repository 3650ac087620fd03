"""Blocking work run off the arbiter's loop, with its completion handled back on the loop.

Some admin operations block on the disk for as long as a space's files take
(``repair`` copies and rewrites a WAL). Run inline they would stall routing,
heartbeats and timers for every other space. :class:`Jobs` runs each such
function on its own thread and hands the outcome back through a pipe the loop
polls (:meth:`Jobs.fileno`); :meth:`Jobs.collect` then calls each job's
``on_done`` *on the loop's thread*, so completions may touch the supervisor,
the registry and the router like any other loop code. A job function itself must
touch none of them: it gets only what it needs (a directory) and returns a result.

Failure semantics: an exception raised by a job is passed to ``on_done`` as its
``error`` (never lost, never raised on the job's thread); an exception raised by
``on_done`` propagates out of :meth:`collect` as any loop bug would. The arbiter
does not exit while a job runs (:meth:`idle`), so a shutdown never closes the
registry under a completion still to come.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("memspace.supervisor.jobs")

Done = Callable[[Any, BaseException | None], None]


class Jobs:
    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._lock = threading.Lock()
        self._closed = False
        self._finished: deque[tuple[str, Done, Any, BaseException | None]] = deque()
        #: jobs submitted and not yet collected (a finished job stays here until :meth:`collect`)
        self.running: dict[str, threading.Thread] = {}

    def fileno(self) -> int:
        """Readable when a job has finished (register it in the loop's poll set)."""
        return self._r

    def submit(self, name: str, fn: Callable[[], Any], on_done: Done) -> None:
        """Run ``fn()`` on a new thread; ``on_done(result, error)`` runs later in :meth:`collect`.
        ``name`` identifies the job in logs and :attr:`running`; it must be unique while it runs."""
        if name in self.running:
            raise ValueError(f"job {name!r} is already running")
        thread = threading.Thread(target=self._run, args=(name, fn, on_done), name=f"memspace-job {name}",
                                  daemon=True)
        self.running[name] = thread
        thread.start()

    def _run(self, name: str, fn: Callable[[], Any], on_done: Done) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - handed to on_done on the loop
            error = e
        # appended and signalled under the lock: the loop cannot collect it and close the pipe
        # between the two (the write would then hit a closed, possibly reused, descriptor)
        with self._lock:
            self._finished.append((name, on_done, result, error))
            if not self._closed:
                with contextlib.suppress(BlockingIOError):   # a full pipe already wakes the loop
                    os.write(self._w, b"\0")

    def collect(self) -> int:
        """Run the completions of finished jobs (on the caller's thread). Returns how many ran."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass
        ran = 0
        while True:
            with self._lock:
                if not self._finished:
                    return ran
                name, on_done, result, error = self._finished.popleft()
            self.running.pop(name, None)
            ran += 1
            on_done(result, error)

    def idle(self) -> bool:
        """No job running and no completion left to collect."""
        return not self.running

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._r, self._w):
                with contextlib.suppress(OSError):
                    os.close(fd)
