"""A spawner that starts no process: the supervisor's decisions tested against a script.

Implements :class:`memspace.supervisor.spawner.Spawner`. Each spawn returns a
handle with a fake pid and sentinel; the test ends a "process" with
:meth:`FakeSpawner.exit` and then calls ``supervisor.reap(handle.sentinel)``,
as the arbiter would when the real sentinel became readable.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memspace.supervisor.spawner import WorkerHandle


@dataclass
class FakeProcess:
    exitcode: int | None = None
    signals: list[int] = field(default_factory=list)


class FakeHandle(WorkerHandle):
    def signal(self, signum: int) -> None:
        self.process.signals.append(signum)


class FakeSpawner:
    def __init__(self) -> None:
        self.started = False
        self.spawned: list[FakeHandle] = []
        self.specs: list[Any] = []
        self._ids = itertools.count(1000)

    def start(self) -> None:
        self.started = True

    def spawn(self, space: str, generation: int, target: Callable[..., Any], args: tuple[Any, ...]) -> WorkerHandle:
        n = next(self._ids)
        handle = FakeHandle(space=space, pid=n, sentinel=n, generation=generation, process=FakeProcess())
        self.spawned.append(handle)
        self.specs.append(args[0] if args else None)
        return handle

    def exit(self, handle: WorkerHandle, code: int) -> None:
        handle.process.exitcode = code

    def close(self, handle: WorkerHandle) -> None:
        pass

    def stop(self) -> None:
        pass

    def last(self, space: str) -> FakeHandle:
        return [h for h in self.spawned if h.space == space][-1]


class RecordingRouter:
    """What the supervisor tells the router, recorded; the supervisor's only view of routing."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.routes: dict[str, Any] = {}
        self.busy_spaces: set[str] = set()

    def worker_ready(self, space: str) -> None:
        self.calls.append(("ready", space))

    def worker_lost(self, space: str, crashed: bool) -> None:
        self.calls.append(("lost", space, crashed))

    def hold(self, space: str) -> None:
        self.calls.append(("hold", space))

    def release_passive(self, space: str, err: Any) -> None:
        self.calls.append(("release_passive", space, err.details.get("state")))

    def fail(self, space: str, err: Any, *, forget: bool = False) -> None:
        self.calls.append(("fail", space, err.code))

    def send_control(self, space: str, command: str) -> bool:
        self.calls.append(("control", space, command))
        return True

    def busy(self, space: str) -> bool:
        return space in self.busy_spaces

    def depth(self, space: str) -> dict[str, int]:
        return {"queued": 0, "inflight": 0, "suspects": 0}
