"""Imported once inside the fork server (see spawner.PRELOAD); sets up that process.

The fork server must outlive a SIGTERM or SIGINT sent to the whole process
group (Ctrl-C in a terminal, ``timeout``, some init systems): if it died, every
worker would die with it (they ask for SIGKILL on parent death) before the
supervisor could drain them. It exits by itself when ``memspace serve`` is gone
(its "alive" pipe closes), so ignoring these signals cannot leave it behind.
Workers install their own handlers at start.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
