"""The clock seam: wall time for timestamps, monotonic time for deadlines and intervals.

Everything outside the engine that needs time takes a :class:`Clock`; tests pass
:class:`memspace.testing.FakeClock` and move time by hand.
"""

from __future__ import annotations

import time as _time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (timestamps stored with memories)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, intervals)."""


class SystemClock:
    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)


SYSTEM_CLOCK: Clock = SystemClock()
