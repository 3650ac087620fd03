"""Crashes, hangs, poison requests and restarts with real worker processes and SIGKILL."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from memspace.errors import PoisonRequest, SpaceUnavailable
from memspace.testing.faults import ENV_CRASH_MARKER


def _writer(server, space: str, n: int, acked: list[str], errors: list[BaseException],
            started: threading.Event) -> None:
    """Remember n memories one by one; record each content only after the call returned."""
    rng = np.random.default_rng(abs(hash(space)) % 2**32)
    try:
        with server.client(timeout=60) as client:
            handle = client.space(space)
            for i in range(n):
                content = f"{space} write {i}"
                # random directions: no two writes are near-duplicates, so none merges
                handle.remember(content=content, embedding=rng.standard_normal(32).astype(np.float32), tags=["loop"])
                acked.append(content)
                if i == 20:
                    started.set()
    except BaseException as e:  # noqa: BLE001 - asserted by the test
        errors.append(e)
        started.set()


def test_sigkill_worker_mid_write_loses_and_duplicates_nothing(make_server):
    server = make_server()
    client = server.client()
    client.create_space("victim", dimension=32)
    acked: list[str] = []
    errors: list[BaseException] = []
    started = threading.Event()
    writer = threading.Thread(target=_writer, args=(server, "victim", 300, acked, errors, started))
    writer.start()
    assert started.wait(60)
    first_pid = client.get_space("victim")["pid"]
    os.kill(first_pid, signal.SIGKILL)
    writer.join(120)
    assert not errors, errors                    # every call succeeded, only later
    assert len(acked) == 300
    status = server.wait_state(client, "victim", "READY")
    assert status["pid"] != first_pid and status["restarts"] == 1
    space = client.space("victim")
    assert space.count() == 300                  # nothing lost, nothing applied twice
    page, seen, cursor = None, [], None
    while True:
        page = space.list(limit=100, cursor=cursor)
        seen += [m.content for m in page.items]
        cursor = page.next_cursor
        if not cursor:
            break
    assert sorted(seen) == sorted(acked)


def test_sigkill_whole_tree_then_restart_keeps_every_acknowledged_write(make_server, tmp_path):
    server = make_server("tree")
    client = server.client()
    spaces = [f"tree-{i}" for i in range(3)]
    acked: dict[str, list[str]] = {}
    for name in spaces:
        client.create_space(name, dimension=32)
        handle = client.space(name)
        acked[name] = []
        for i in range(40):
            r = handle.remember(content=f"{name} durable {i}")
            acked[name].append(r.id)
        handle.remember_batch([{"content": f"{name} batch {i}"} for i in range(10)])
    server.kill_tree()                           # serve, fork server, workers: all at once
    assert not server.survivors(timeout=10)
    again = make_server("tree")                  # same data root
    client = again.client()
    for name in spaces:
        handle = client.space(name)
        assert handle.count() == 50
        for memory_id in acked[name]:
            assert handle.get(memory_id).content.startswith(f"{name} durable ")


def test_hung_worker_is_killed_and_replaced(make_server):
    server = make_server()
    client = server.client(timeout=60)
    client.create_space("sleepy", dimension=32)
    space = client.space("sleepy")
    space.remember(content="before the hang")
    pid = client.get_space("sleepy")["pid"]
    os.kill(pid, signal.SIGSTOP)                 # alive but silent: no heartbeats
    try:
        status = server.wait_state(client, "sleepy", ("BACKOFF", "STARTING", "RECOVERING"))
        assert status["pid"] != pid
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    status = server.wait_state(client, "sleepy", "READY")
    assert status["restart_reasons"] == {"hung": 1}
    assert [m.content for m in space.list().items] == ["before the hang"]


def _ready_pid(server, client, space: str, not_pid: int | None) -> int:
    """The pid of the space's worker once READY under a new pid (the old one may still show)."""
    status = server.wait_status(client, space, lambda st: st["state"] == "READY" and st["pid"] != not_pid,
                                "a new READY worker")
    return status["pid"]


def test_crash_loop_fails_the_space_until_restart(make_server):
    server = make_server(MEMSPACE_RESTART_INTENSITY_N="3")
    client = server.client(timeout=60)
    client.create_space("loopy", dimension=32)
    space = client.space("loopy")
    space.remember(content="survives the loop")
    pid = None
    for _ in range(3):
        pid = _ready_pid(server, client, "loopy", pid)
        os.kill(pid, signal.SIGKILL)
    status = server.wait_state(client, "loopy", "FAILED")
    assert status["restarts"] == 3 and "crashes within" in status["last_error"]
    with pytest.raises(SpaceUnavailable, match="repair"):
        space.count()
    restarted = client.restart("loopy")
    assert restarted["state"] == "READY"
    assert [m.content for m in space.list().items] == ["survives the loop"]


def test_poison_request_is_identified_and_others_succeed(make_server):
    server = make_server(**{ENV_CRASH_MARKER: "POISON-PILL"})
    client = server.client(timeout=60)
    client.create_space("toxic", dimension=32)
    space = client.space("toxic")
    space.remember(content="healthy before")
    results: dict[str, object] = {}

    def call(name: str, content: str) -> None:
        try:
            with server.client(timeout=60) as c:
                results[name] = c.space("toxic").remember(content=content)
        except BaseException as e:  # noqa: BLE001
            results[name] = e

    threads = [threading.Thread(target=call, args=("poison", "this carries the POISON-PILL"))]
    threads += [threading.Thread(target=call, args=(f"ok-{i}", f"innocent {i}")) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert isinstance(results["poison"], PoisonRequest), results["poison"]
    assert "crashed twice" in str(results["poison"])
    for i in range(5):
        assert not isinstance(results[f"ok-{i}"], BaseException), results[f"ok-{i}"]
    status = server.wait_state(client, "toxic", "READY")
    assert status["restarts"] == 2
    contents = sorted(m.content for m in space.list().items)
    assert contents == sorted(["healthy before"] + [f"innocent {i}" for i in range(5)])


def test_idempotent_request_id_survives_a_worker_crash(make_server):
    server = make_server()
    client = server.client()
    client.create_space("idem", dimension=32)
    space = client.space("idem")
    first = space.remember(content="exactly once", request_id="req-42")
    os.kill(client.get_space("idem")["pid"], signal.SIGKILL)
    again = space.remember(content="exactly once", request_id="req-42")
    assert again == first
    assert space.count() == 1
