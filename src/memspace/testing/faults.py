"""Fault injection for tests of the multi-process runtime, switched on only by environment.

``MEMSPACE_TESTING_CRASH_MARKER=<text>``: a worker exits abruptly (exit code
:data:`EXIT_INJECTED`, nothing committed) when a request body contains
``<text>``. It is how tests produce a *poison request* - one that kills every
worker it reaches - without a real bug. Unset (always, in production), the
worker checks nothing.
"""

from __future__ import annotations

import os

ENV_CRASH_MARKER = "MEMSPACE_TESTING_CRASH_MARKER"
EXIT_INJECTED = 99


def crash_marker() -> bytes | None:
    value = os.environ.get(ENV_CRASH_MARKER)
    return value.encode() if value else None
