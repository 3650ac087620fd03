"""``memspace events`` does not keep its space awake: against a real ``memspace serve`` with a short
``idle_hibernate_s``, a space tailed by the CLI hibernates on schedule, the tail's polls do not wake
it, the write that wakes it is printed once and in order, and Ctrl-C ends the tail while it waits.
The same over an http url (the SSE feed), which prints exactly what the zmq tail prints."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

import pytest

from memspace.testing.server import ServerProcess

from .conftest import clean_env, popen_cli

TIMEOUT_S = 60.0      # a safety net against a hung command or server, never a synchronisation delay
# idle_hibernate_s above the tail's re-check of a sleeping space (at most 4 s): the tail must poll the
# woken space before it sleeps again (if it did not, the changes would be behind the checkpoint the
# hibernation writes, and the tail would report a gap)
ENV = {"MEMSPACE_IDLE_HIBERNATE_S": "6", "MEMSPACE_SPACES_DIMENSION": "4", "MEMSPACE_DRAIN_TIMEOUT_S": "10",
       "MEMSPACE_HEARTBEAT_S": "0.2", "MEMSPACE_HEARTBEAT_LIVENESS": "10"}


@pytest.fixture(scope="module")
def sleepy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("cli-sleepy") / "data", http=True, env=ENV).start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            code = proc.stop()             # raises if any process of the tree is left
            assert code == 0, proc.log_tail()
        else:
            proc.kill()


class Tail:
    """A running ``memspace events``; its stdout and stderr lines arrive on queues (reader threads),
    so every read is bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.out: queue.Queue[str | None] = queue.Queue()
        self.err: queue.Queue[str | None] = queue.Queue()
        self.err_seen: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._threads = [threading.Thread(target=self._pump, args=(stream, q), daemon=True)
                         for stream, q in ((proc.stdout, self.out), (proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: IO[str], q: queue.Queue[str | None]) -> None:
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    def event(self) -> dict[str, Any]:
        line = self._get(self.out, "an event")
        return json.loads(line)  # type: ignore[no-any-return]

    def note(self, containing: str) -> str:
        """The next stderr line containing ``containing`` (other lines are kept in err_seen)."""
        while True:
            line = self._get(self.err, f"a note containing {containing!r}")
            self.err_seen.append(line)
            if containing in line:
                return line

    def _get(self, q: queue.Queue[str | None], what: str) -> str:
        try:
            line = q.get(timeout=TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"no {what} within {TIMEOUT_S:g} s; stderr so far: {self.err_seen}")
        if line is None:
            pytest.fail(f"memspace events ended (exit {self.proc.wait(TIMEOUT_S)}) before {what}; "
                        f"stderr: {self.err_seen}")
        return line

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(TIMEOUT_S)
        for t in self._threads:
            t.join(TIMEOUT_S)
        while (line := self.err.get_nowait()) is not None:
            self.err_seen.append(line)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT_S)


def ids(event: dict[str, Any]) -> list[str]:
    return [m["id"] for m in event["memories"]]


@pytest.mark.parametrize("transport", ["zmq", pytest.param("http", marks=pytest.mark.slow)])
def test_events_lets_the_space_hibernate_and_prints_the_waking_write_once(sleepy: ServerProcess,
                                                                          transport: str) -> None:
    # over http the tail reads the SSE feed: its "is hibernated" note comes from the lifecycle event
    space = f"tail-sleepy-{transport}"
    client = sleepy.client(timeout=TIMEOUT_S)
    client.create_space(space, dimension=4)
    mem = client.space(space)
    before = mem.remember(content="before", embedding=[1, 0, 0, 0])
    tail = Tail(popen_cli(sleepy.endpoints[transport], "events", "--after", "0", "--space", space, "--json"))
    try:
        first = tail.event()                       # the tail's first (ordinary) call is done
        assert (first["type"], ids(first)) == ("remember", [before.id])

        asleep = sleepy.wait_state(client, space, "HIBERNATED", timeout=TIMEOUT_S)
        # the tail saw the space asleep (its poll was answered by the router) and woke nothing
        assert "this command does not wake it" in tail.note("is hibernated")
        status = client.get_space(space)
        assert (status["state"], status["generation"], status["pid"]) == ("HIBERNATED", asleep["generation"], None)

        woke = mem.remember(content="wakes it", embedding=[0, 1, 0, 0])
        event = tail.event()
        assert (event["type"], ids(event)) == ("remember", [woke.id]) and event["seq"] > first["seq"]
        assert client.get_space(space)["generation"] > asleep["generation"]
        # printed once: the next line is the next write, not the waking write again
        after = mem.remember(content="after", embedding=[0, 0, 1, 0])
        event2 = tail.event()
        assert ids(event2) == [after.id] and event2["seq"] > event["seq"]

        # asleep again: Ctrl-C ends the tail while it waits for the space, with exit 0
        sleepy.wait_state(client, space, "HIBERNATED", timeout=TIMEOUT_S)
        tail.note("is hibernated")
        assert tail.interrupt() == 0, tail.err_seen
        assert not any("Traceback" in line or line.startswith("error") for line in tail.err_seen), tail.err_seen
        assert tail.out.empty() or tail.out.get_nowait() is None     # nothing printed twice or late
    finally:
        tail.kill()
        client.close()


def test_events_over_http_prints_what_zmq_prints(sleepy: ServerProcess) -> None:
    space = "tail-both"
    client = sleepy.client(timeout=TIMEOUT_S)
    client.create_space(space, dimension=4)
    mem = client.space(space)
    try:
        written = [mem.remember(content=f"m{i}", embedding=[1, i, 0, 0], tags=["t"]).id for i in range(3)]
        mem.link(written[0], written[1], weight=0.5)
        mem.forget(written[2])
        outputs = {}
        for transport in ("zmq", "http"):
            for mode in ([], ["--json"]):
                r = subprocess.run([sys.executable, "-m", "memspace", "events", "--space", space, "--after", "0",
                                    "--count", "5", *mode], check=False, capture_output=True, text=True,
                                   timeout=TIMEOUT_S, env=clean_env(MEMSPACE_URL=sleepy.endpoints[transport]))
                assert r.returncode == 0, r.stderr
                outputs[transport, bool(mode)] = r.stdout
        assert outputs["http", False] == outputs["zmq", False]
        assert outputs["http", True] == outputs["zmq", True]
        events = [json.loads(line) for line in outputs["http", True].splitlines()]
        assert [e["type"] for e in events] == ["remember"] * 3 + ["link", "forget"]
        assert [ids(e) for e in events[:3]] == [[w] for w in written]
        assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    finally:
        client.close()


def test_events_over_http_tails_new_writes_in_order_once(sleepy: ServerProcess) -> None:
    space = "tail-http"
    client = sleepy.client(timeout=TIMEOUT_S)
    client.create_space(space, dimension=4)
    mem = client.space(space)
    first = mem.remember(content="first", embedding=[1, 0, 0, 0])
    tail = Tail(popen_cli(sleepy.endpoints["http"], "events", "--after", "0", "--space", space, "--json"))
    try:
        assert ids(tail.event()) == [first.id]       # the stream is open
        written = [mem.remember(content=f"w{i}", embedding=[0, 1, i, 0]).id for i in range(5)]
        seen = [tail.event() for _ in written]
        assert [ids(e) for e in seen] == [[w] for w in written]
        assert [e["seq"] for e in seen] == sorted({e["seq"] for e in seen})
        assert tail.interrupt() == 0, tail.err_seen
        assert not any("Traceback" in line or line.startswith("error") for line in tail.err_seen), tail.err_seen
        assert tail.out.empty() or tail.out.get_nowait() is None     # nothing printed twice
    finally:
        tail.kill()
        client.close()


def test_events_over_http_names_a_missing_space(sleepy: ServerProcess) -> None:
    r = subprocess.run([sys.executable, "-m", "memspace", "events", "--space", "no-such-space"], check=False,
                       capture_output=True, text=True, timeout=TIMEOUT_S,
                       env=clean_env(MEMSPACE_URL=sleepy.endpoints["http"]))
    assert r.returncode == 1, r.stderr
    assert "no-such-space" in r.stderr and r.stdout == "", r.stderr
