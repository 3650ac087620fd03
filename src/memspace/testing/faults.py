"""Fault injection for tests of the multi-process runtime, switched on only by environment.

``MEMSPACE_TESTING_CRASH_MARKER=<text>``: a worker exits abruptly (exit code
:data:`EXIT_INJECTED`, nothing committed) when a request body contains
``<text>``. It is how tests produce a *poison request* - one that kills every
worker it reaches - without a real bug.

``MEMSPACE_TESTING_REPAIR_GATE=<directory>``: a ``repair`` of space ``X`` for which
``<directory>/X`` is a FIFO waits, before touching any file, until a test has
opened that FIFO for writing and closed it again. It is how tests hold a repair
in progress (and know it is: their non-blocking open succeeds only once the
repair is waiting) without sleeping.

Unset (always, in production), nothing is checked beyond one environment lookup.
"""

from __future__ import annotations

import os
import stat

ENV_CRASH_MARKER = "MEMSPACE_TESTING_CRASH_MARKER"
ENV_REPAIR_GATE = "MEMSPACE_TESTING_REPAIR_GATE"
EXIT_INJECTED = 99


def crash_marker() -> bytes | None:
    value = os.environ.get(ENV_CRASH_MARKER)
    return value.encode() if value else None


def hold_repair(space: str) -> None:
    """Block while a test holds the repair of ``space`` (see the module docstring)."""
    gate = os.environ.get(ENV_REPAIR_GATE)
    if not gate:
        return
    path = os.path.join(gate, space)
    try:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            return
    except OSError:
        return
    with open(path, "rb") as fifo:   # blocks until the test opens the FIFO for writing
        while fifo.read(4096):       # ... and returns once it has closed it
            pass
