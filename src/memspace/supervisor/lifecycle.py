"""Worker lifecycle: the states a space's worker moves through, and the only legal moves.

The supervisor holds each space's current :class:`State`. Before it changes
one it calls :func:`transition` (which raises :class:`IllegalTransition` on a
move the table does not allow) and then publishes a :class:`Transition` on an
:class:`Events` bus; logs, metrics and the SSE feed subscribe to that bus,
lifecycle code never calls them directly.

The table is data (:data:`EDGES`, with the reason each move exists), and the
state diagram in ``docs/lifecycle.md`` is generated from it::

    python -m memspace.supervisor.lifecycle > docs/lifecycle.md

Two rules shape the table. Every state in which a worker process exists
(STARTING, RECOVERING, READY, DRAINING) can crash into BACKOFF, or straight
into FAILED when the crash exhausts the restart intensity, and can be
interrupted by DELETING. Every state without a process (REGISTERED,
HIBERNATED, STOPPED, BACKOFF, FAILED) can only be started or deleted, apart
from BACKOFF, which may also give up (FAILED) or be stopped at shutdown.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from memspace.errors import Internal

log = logging.getLogger(__name__)


class State(Enum):
    REGISTERED = "REGISTERED"   # known to the registry, no process has run since the server started
    STARTING = "STARTING"       # process spawned, not yet opened its space
    RECOVERING = "RECOVERING"   # replaying snapshot + WAL
    READY = "READY"             # serving requests
    DRAINING = "DRAINING"       # finishing in-flight requests, accepting no new ones
    HIBERNATED = "HIBERNATED"   # exited after a drain because idle; wakes on the next request
    STOPPED = "STOPPED"         # exited after a drain on request (stop, restart, shutdown)
    BACKOFF = "BACKOFF"         # crashed; waiting for the restart delay
    FAILED = "FAILED"           # boot error or too many crashes; needs `repair` or `restart`
    DELETING = "DELETING"       # tombstoned; draining and removing files, then gone


S = State

#: (old, new) -> why the move exists. The transition table and the docs come from this.
EDGES: Mapping[tuple[State, State], str] = {
    (S.REGISTERED, S.STARTING): "first request or explicit start",
    (S.REGISTERED, S.DELETING): "delete a space that never ran",
    (S.STARTING, S.RECOVERING): "worker opened its space and replays the WAL",
    (S.STARTING, S.READY): "nothing to replay (new or cleanly checkpointed space)",
    (S.STARTING, S.BACKOFF): "process died before it reported",
    (S.STARTING, S.FAILED): "boot error (bad config, corrupt WAL): a restart would fail the same way",
    (S.STARTING, S.STOPPED): "shutdown before ready: nothing in flight to drain",
    (S.STARTING, S.DELETING): "delete requested while starting",
    (S.RECOVERING, S.READY): "replay done",
    (S.RECOVERING, S.BACKOFF): "crashed during replay",
    (S.RECOVERING, S.FAILED): "WAL corruption found, or the crash exhausts the restart intensity",
    (S.RECOVERING, S.STOPPED): "shutdown during replay: nothing was acknowledged yet",
    (S.RECOVERING, S.DELETING): "delete requested while recovering",
    (S.READY, S.DRAINING): "hibernate, stop, restart or shutdown requested",
    (S.READY, S.BACKOFF): "crash or missed heartbeats",
    (S.READY, S.FAILED): "crash that exhausts the restart intensity",
    (S.READY, S.DELETING): "tombstoned: the delete drains the worker itself",
    (S.DRAINING, S.HIBERNATED): "idle drain finished (BYE, or killed after drain_timeout_s)",
    (S.DRAINING, S.STOPPED): "requested drain finished (BYE, or killed after drain_timeout_s)",
    (S.DRAINING, S.BACKOFF): "crashed while draining",
    (S.DRAINING, S.FAILED): "crashed while draining, exhausting the restart intensity",
    (S.DRAINING, S.DELETING): "delete requested while draining",
    (S.HIBERNATED, S.STARTING): "request for a hibernated space",
    (S.HIBERNATED, S.DELETING): "delete a hibernated space",
    (S.STOPPED, S.STARTING): "request after a stop, or the second half of a restart",
    (S.STOPPED, S.DELETING): "delete a stopped space",
    (S.BACKOFF, S.STARTING): "restart delay elapsed",
    (S.BACKOFF, S.FAILED): "operator gave up, or the space cannot be spawned",
    (S.BACKOFF, S.STOPPED): "shutdown while waiting to restart",
    (S.BACKOFF, S.DELETING): "delete a crashed space",
    (S.FAILED, S.STARTING): "operator `restart` or `repair`",
    (S.FAILED, S.DELETING): "delete a failed space",
    # DELETING is terminal: the registry row is removed and the space is gone.
}
del S

#: state -> the states it may move to.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    state: frozenset(new for (old, new) in EDGES if old is state) for state in State
}

#: The state of a space the server has just learned about (created, or loaded at start-up).
INITIAL = State.REGISTERED
TERMINAL = frozenset(state for state, nexts in TRANSITIONS.items() if not nexts)


class IllegalTransition(Internal):
    """A move the table forbids: a bug in the caller, never a client error (INTERNAL)."""


def transition(current: State, new: State, *, space: str | None = None) -> None:
    """Return if ``current -> new`` is legal, else raise :class:`IllegalTransition`."""
    if new not in TRANSITIONS[current]:
        where = f" for space {space!r}" if space else ""
        allowed = ", ".join(s.name for s in State if s in TRANSITIONS[current]) or "nothing"
        raise IllegalTransition(
            f"illegal lifecycle transition{where}: {current.name} -> {new.name} "
            f"(from {current.name} only: {allowed})",
            {"space": space, "old": current.name, "new": new.name},
        )


@dataclass(frozen=True)
class Transition:
    """One state change of one space, as published on the :class:`Events` bus."""

    space: str
    old: State
    new: State
    reason: str
    at: float


Subscriber = Callable[[Transition], None]


class Events:
    """A synchronous publish/subscribe bus for :class:`Transition` events.

    ``emit`` first checks the move with :func:`transition` (so an illegal event
    is never published), then calls every subscriber in subscription order on
    the caller's thread. A subscriber that raises is logged and skipped; it
    never breaks the emitter or the subscribers after it.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Add ``callback``; returns a function that removes it again."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: Transition) -> None:
        transition(event.old, event.new, space=event.space)
        with self._lock:
            subscribers = tuple(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("lifecycle subscriber %r failed on %s %s -> %s",
                              callback, event.space, event.old.name, event.new.name)


def render_mermaid() -> str:
    """The state diagram (Mermaid ``stateDiagram-v2``) drawn from :data:`EDGES`."""
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL.name}"]
    # No edge labels: thirty labelled arrows are unreadable; the reasons go in the table.
    lines.extend(f"    {old.name} --> {new.name}" for (old, new) in EDGES)
    lines.extend(f"    {state.name} --> [*]" for state in State if state in TERMINAL)
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """``docs/lifecycle.md``: the diagram plus the table of moves and their reasons."""
    out = [
        "# Worker lifecycle",
        "",
        "<!-- Generated by `python -m memspace.supervisor.lifecycle > docs/lifecycle.md`;",
        "     edit EDGES in src/memspace/supervisor/lifecycle.py, not this file. -->",
        "",
        "Each memory space's worker is in one of these states; the supervisor moves it",
        "only along the arrows below, and every move is published as a `Transition`",
        "event (space, old, new, reason, time) that logs, metrics and the SSE feed",
        "subscribe to. Any other move raises `IllegalTransition`.",
        "",
        "```mermaid",
        render_mermaid().rstrip("\n"),
        "```",
        "",
        "| from | to | why |",
        "|---|---|---|",
    ]
    out.extend(f"| {old.name} | {new.name} | {reason} |" for (old, new), reason in EDGES.items())
    out.append("")
    out.append(f"`{', '.join(s.name for s in sorted(TERMINAL, key=lambda s: s.name))}` is terminal: "
               "the registry row is removed and the space id may be created again.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
