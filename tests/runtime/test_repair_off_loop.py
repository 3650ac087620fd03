"""``repair`` does not block the router: against a real ``memspace serve``, a repair held in progress
(the MEMSPACE_TESTING_REPAIR_GATE seam: a FIFO the test keeps open) leaves every other space served,
refuses what would touch the repaired space with a clear answer, and replies once it is released."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from memspace.errors import SpaceUnavailable
from memspace.testing.faults import ENV_REPAIR_GATE

WAIT_S = 30.0


def open_gate_writer(path: str) -> int:
    """Open the FIFO for writing once the repair waits on it (bounded); proves the repair is in progress."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:        # ENXIO: nobody reads it yet
                raise
        if time.monotonic() > deadline:
            raise AssertionError("the repair never reached its gate")
        time.sleep(0.02)


def test_requests_to_other_spaces_are_answered_while_a_repair_is_held(make_server, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    fifo = str(gate / "mended")
    os.mkfifo(fifo)
    server = make_server(**{ENV_REPAIR_GATE: str(gate)})
    client = server.client(timeout=WAIT_S)
    for name in ("mended", "busy"):
        client.create_space(name, dimension=32)
    client.space("mended").remember(content="kept through the repair")
    client.space("busy").remember(content="first")
    assert client.drain("mended")["state"] == "STOPPED"    # repair wants no worker

    answer: dict[str, object] = {}

    def repair() -> None:
        try:
            with server.client(timeout=WAIT_S * 2) as c:
                answer["result"] = c.repair("mended")
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            answer["error"] = e

    thread = threading.Thread(target=repair, daemon=True)
    thread.start()
    writer = open_gate_writer(fifo)
    try:
        # the repair is in progress; the router goes on serving everyone else
        busy = client.space("busy")
        busy.remember(content="second")
        assert busy.count() == 2
        assert client.get_space("mended")["repairing"] is True
        # ... and what would touch the repaired space gets a clear answer, not a wait
        with pytest.raises(SpaceUnavailable, match="being repaired"):
            client.space("mended").count()
        with pytest.raises(SpaceUnavailable, match="being repaired"):
            client.repair("mended")
        with pytest.raises(SpaceUnavailable, match="being repaired"):
            client.delete_space("mended")
        assert client.get_space("mended")["state"] == "STOPPED" and "result" not in answer
    finally:
        os.close(writer)                                      # release the repair
    thread.join(WAIT_S)
    assert not thread.is_alive() and "error" not in answer, answer
    result = answer["result"]
    assert result["space"]["repairing"] is False and result["space"]["state"] == "STOPPED"   # type: ignore[index]
    assert result["repair"]["changed"] is False, result       # type: ignore[index]
    assert [m.content for m in client.space("mended").list().items] == ["kept through the repair"]
