"""Crash tests: a real writer process (``crash_child.py``) is SIGKILLed at a random point, several
rounds on the same directory; after each kill the space is reopened and must hold every
acknowledged write exactly, and nothing unacknowledged half-applied: the write in flight at the
kill (one remember, a batch, a forget, a link) happened entirely or not at all, and sending it
again with its request id applies it exactly once.

SIGKILL ends the process, not the machine, so the page cache survives; the writer still uses
``wal.fsync = always``, the policy whose promise is "acknowledged means durable".
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memspace import config as config_mod
from memspace.errors import MemoryNotFound
from memspace.storage.space import Space, open_space

from . import crash_child
from .conftest import unit32

CHILD = Path(crash_child.__file__)


@dataclass
class Model:
    """What the space must hold: live memories (id -> step) and explicit links (weights)."""

    alive: dict[str, int] = field(default_factory=dict)
    links: dict[str, dict[str, float]] = field(default_factory=dict)
    next_step: int = 0
    acknowledged: int = 0
    in_flight: list[str] = field(default_factory=list)   # ops of the intents cut by a kill

    def stored(self, ids: list[str], step: int) -> None:
        for i in ids:
            self.alive[i] = step

    def forgotten(self, ids: list[str]) -> None:
        for i in ids:
            self.alive.pop(i, None)
            self.links.pop(i, None)
        for targets in self.links.values():
            for i in ids:
                targets.pop(i, None)

    def linked(self, source: str, target: str, weight: float) -> None:
        if source in self.alive and target in self.alive:
            self.links.setdefault(source, {})[target] = weight


def run_round(directory: Path, mode: str, overrides: dict[str, Any], model: Model, rng: random.Random,
              log_path: Path) -> list[tuple[str, Any]]:
    """Start the writer, let it run to a random point, SIGKILL it; return the complete lines."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    acks_before_kill = rng.randint(3, 120)
    checkpoints_before_kill = rng.randint(1, 8)
    delay = rng.uniform(0.0, 0.004)
    with open(log_path, "ab") as err:
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(directory), str(rng.randrange(1 << 30)), str(model.next_step),
             mode, json.dumps(overrides)], stdout=subprocess.PIPE, stderr=err, env=env)
    assert child.stdout is not None
    raw: list[bytes] = []
    acks = checkpoints = 0
    try:
        while True:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"writer exited early ({child.wait()}): {log_path.read_text()[-3000:]}")
            raw.append(line)
            acks += line.startswith(b"A ")
            checkpoints += line.startswith(b'I {"op": "checkpoint"')
            if (acks >= acks_before_kill) if mode == "writes" else (checkpoints >= checkpoints_before_kill):
                # Writing a line wakes this reader, which often preempts the writer right after
                # it; the random pause lets the writer get into (or through) its next call.
                time.sleep(delay)
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    raw += child.stdout.read().splitlines(keepends=True)    # acknowledged before the kill, unread
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    events = []
    for line in raw:
        if not line.endswith(b"\n"):
            continue
        kind, _, rest = line.decode().rstrip("\n").partition(" ")
        events.append((kind, json.loads(rest) if kind == "I" else int(rest)))
    return events


def check_memory(s: Space, memory_id: str, step: int, exact: bool) -> None:
    m = s.get(memory_id)
    want = crash_child.item(memory_id, step)
    assert (m.content, m.tags, dict(m.metadata)) == (want["content"], tuple(want["tags"]), want["metadata"])
    assert m.confidence == pytest.approx(want["confidence"], abs=1e-6)
    if exact:
        np.testing.assert_array_equal(m.embedding, unit32(want["embedding"]))
    else:   # it may have been in the warm or cold tier (float16) at some point
        np.testing.assert_allclose(m.embedding, unit32(want["embedding"]), atol=2e-3)


def all_ids(s: Space) -> set[str]:
    found: set[str] = set()
    cursor = None
    while True:
        page = s.list(limit=1000, cursor=cursor)
        found.update(m.id for m in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return found


def settle(s: Space, model: Model, events: list[tuple[str, Any]], exact: bool) -> None:
    """Fold this round's events into the model, deciding the write in flight from what is there."""
    pending: dict[str, Any] | None = None
    for kind, value in events:
        if kind == "I":
            assert pending is None, f"two intents without an acknowledgement: {pending}, {value}"
            pending = value
            model.next_step = max(model.next_step, value["step"] + 1)
        elif kind == "A":
            assert pending is not None and pending["step"] == value
            apply(model, pending)
            model.acknowledged += 1
            pending = None
    if pending is None:
        return
    model.in_flight.append(pending["op"])
    op = pending["op"]
    if op in ("remember", "batch"):
        present = [i in all_ids(s) for i in pending["ids"]]
        assert all(present) or not any(present), f"{op} {pending['ids']} half-applied: {present}"
    elif op == "forget":
        gone = [not s.engine.exists(i) for i in pending["ids"]]
        assert all(gone) or not any(gone), f"forget {pending['ids']} half-applied: {gone}"
    if op in ("remember", "batch", "forget", "link"):
        # The client never got an answer, so it sends the write again with the same request id:
        # applied before the kill or not, it must now be applied exactly once.
        retry(s, pending)
        apply(model, pending)


def retry(s: Space, intent: dict[str, Any]) -> None:
    op, step, request_id = intent["op"], intent["step"], f"w{intent['step']}"
    if op == "remember":
        r = s.remember(**crash_child.item(intent["ids"][0], step), request_id=request_id)
        assert (r.id, r.outcome) == (intent["ids"][0], "stored")
    elif op == "batch":
        results = s.remember_batch([crash_child.item(i, step) for i in intent["ids"]], request_id=request_id)
        assert [(r.id, r.outcome) for r in results] == [(i, "stored") for i in intent["ids"]]
    elif op == "forget":
        ids = intent["ids"]
        n = s.forget(ids[0], request_id=request_id) if len(ids) == 1 else s.forget(ids=ids, request_id=request_id)
        assert n == len(ids)
    else:
        link = s.link(intent["source"], intent["target"], intent["weight"], request_id=request_id)
        assert (link.target, link.weight, link.kind) == (intent["target"], intent["weight"], "related")


def apply(model: Model, intent: dict[str, Any]) -> None:
    op = intent["op"]
    if op in ("remember", "batch"):
        model.stored(intent["ids"], intent["step"])
    elif op == "forget":
        model.forgotten(intent["ids"])
    elif op == "link":
        model.linked(intent["source"], intent["target"], intent["weight"])


def verify(s: Space, model: Model, exact: bool) -> None:
    assert all_ids(s) == set(model.alive)
    assert s.count() == len(model.alive)
    for memory_id, step in model.alive.items():
        check_memory(s, memory_id, step, exact)
        explicit = {lk.target: lk.weight for lk in s.get(memory_id).links if lk.kind == "related"}
        assert explicit == model.links.get(memory_id, {}), memory_id
    with pytest.raises(MemoryNotFound):
        s.get(f"s{model.next_step + 1}")


def crash_rounds(tmp_path: Path, mode: str, overrides: dict[str, Any], seed: int, rounds: int,
                 exact: bool, until: Callable[[Model], bool] | None = None, max_rounds: int = 0) -> Model:
    """``rounds`` kill-and-verify rounds, then more (up to ``max_rounds``) until ``until(model)``."""
    directory = tmp_path / "space"
    rng = random.Random(seed)
    model = Model()
    cfg = config_mod.load(env={}, overrides=overrides)
    done = 0
    while done < rounds or (until is not None and not until(model) and done < max_rounds):
        events = run_round(directory, mode, overrides, model, rng, tmp_path / "writer.log")
        with open_space(directory, dimension=crash_child.DIM, config=cfg) as s:
            settle(s, model, events, exact)
            verify(s, model, exact)
        done += 1
    with open_space(directory, dimension=crash_child.DIM, config=cfg) as s:   # and once more, cleanly
        verify(s, model, exact)
    return model


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    overrides = {"wal.fsync": "always", "wal.segment_mb": 0.05, "checkpoint_every_mb": 0.15}
    model = crash_rounds(tmp_path, "writes", overrides, seed=1234, rounds=6, exact=True,
                         until=lambda m: len(m.in_flight) >= 3, max_rounds=12)
    assert model.acknowledged >= 6 * 3 and len(model.alive) > 0
    assert model.in_flight                          # some kill did land inside a write


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_during_checkpoints(tmp_path: Path) -> None:
    overrides = {"wal.fsync": "always", "wal.segment_mb": 0.02, "tiers.hot_capacity": 6,
                 "tiers.warm_capacity": 6}
    model = crash_rounds(tmp_path, "checkpoints", overrides, seed=99, rounds=6, exact=False,
                         until=lambda m: m.in_flight.count("checkpoint") >= 2, max_rounds=14)
    assert model.in_flight.count("checkpoint") >= 1
    with open_space(tmp_path / "space", config=config_mod.load(env={}, overrides=overrides)) as s:
        assert s.count("warm") + s.count("cold") > 0          # checkpoints did demote
