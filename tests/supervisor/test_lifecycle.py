"""The lifecycle transition table, the event bus and the generated state diagram."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from memspace.errors import MemspaceError
from memspace.supervisor import lifecycle
from memspace.supervisor.lifecycle import (
    EDGES,
    TRANSITIONS,
    Events,
    IllegalTransition,
    State,
    Transition,
    transition,
)

S = State
DOC = Path(__file__).resolve().parents[2] / "docs" / "lifecycle.md"

# The table written out by hand, independently of EDGES, so a change to either is noticed.
EXPECTED = {
    S.REGISTERED: {S.STARTING, S.DELETING},
    S.STARTING: {S.RECOVERING, S.READY, S.BACKOFF, S.FAILED, S.STOPPED, S.DELETING},
    S.RECOVERING: {S.READY, S.BACKOFF, S.FAILED, S.STOPPED, S.DELETING},
    S.READY: {S.DRAINING, S.BACKOFF, S.FAILED, S.DELETING},
    S.DRAINING: {S.HIBERNATED, S.STOPPED, S.BACKOFF, S.FAILED, S.DELETING},
    S.HIBERNATED: {S.STARTING, S.DELETING},
    S.STOPPED: {S.STARTING, S.DELETING},
    S.BACKOFF: {S.STARTING, S.FAILED, S.STOPPED, S.DELETING},
    S.FAILED: {S.STARTING, S.DELETING},
    S.DELETING: set(),
}
LEGAL = [(old, new) for old, news in EXPECTED.items() for new in sorted(news, key=lambda s: s.name)]
ILLEGAL = [(old, new) for old, new in itertools.product(State, State) if new not in EXPECTED[old]]


def test_table_matches_the_design():
    assert {state: set(nexts) for state, nexts in TRANSITIONS.items()} == EXPECTED
    assert len(LEGAL) == len(EDGES) == 32 and len(LEGAL) + len(ILLEGAL) == len(State) ** 2
    assert lifecycle.INITIAL is S.REGISTERED and lifecycle.TERMINAL == {S.DELETING}
    assert all(reason.strip() for reason in EDGES.values())


@pytest.mark.parametrize("old, new", LEGAL, ids=lambda s: s.name)
def test_every_legal_move_passes(old, new):
    transition(old, new, space="alpha")  # no exception


@pytest.mark.parametrize("old, new", ILLEGAL, ids=lambda s: s.name)
def test_every_other_move_raises(old, new):
    with pytest.raises(IllegalTransition) as exc:
        transition(old, new, space="alpha")
    assert exc.value.code == "INTERNAL" and isinstance(exc.value, MemspaceError)
    assert f"{old.name} -> {new.name}" in exc.value.message and "'alpha'" in exc.value.message
    assert exc.value.details == {"space": "alpha", "old": old.name, "new": new.name}


def test_every_state_is_reachable_and_every_live_state_can_be_deleted():
    seen, todo = {S.REGISTERED}, [S.REGISTERED]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(State)
    assert all(S.DELETING in TRANSITIONS[s] for s in State if s is not S.DELETING)
    # a state with a worker process can crash into BACKOFF or FAILED
    for live in (S.STARTING, S.RECOVERING, S.READY, S.DRAINING):
        assert {S.BACKOFF, S.FAILED} <= TRANSITIONS[live]


def _event(old: State = S.READY, new: State = S.DRAINING) -> Transition:
    return Transition(space="alpha", old=old, new=new, reason="idle", at=12.5)


def test_events_reach_every_subscriber_in_order():
    bus, got = Events(), []
    bus.subscribe(lambda e: got.append(("a", e)))
    bus.subscribe(lambda e: got.append(("b", e)))
    event = _event()
    bus.emit(event)
    assert got == [("a", event), ("b", event)]


def test_a_failing_subscriber_is_logged_and_does_not_break_the_emitter(caplog):
    bus, got = Events(), []

    def broken(event: Transition) -> None:
        raise RuntimeError("metrics down")

    bus.subscribe(broken)
    bus.subscribe(got.append)
    with caplog.at_level(logging.ERROR, logger="memspace.supervisor.lifecycle"):
        bus.emit(_event())
    assert got == [_event()]
    assert "metrics down" in caplog.text and "alpha READY -> DRAINING" in caplog.text


def test_unsubscribe_and_illegal_events_are_never_published():
    bus, got = Events(), []
    unsubscribe = bus.subscribe(got.append)
    with pytest.raises(IllegalTransition):
        bus.emit(_event(S.HIBERNATED, S.READY))
    assert got == []
    unsubscribe()
    unsubscribe()  # idempotent
    bus.emit(_event())
    assert got == []


def test_transition_events_are_frozen():
    with pytest.raises(AttributeError):
        _event().reason = "changed"  # type: ignore[misc]


def test_mermaid_has_every_edge_and_the_ends():
    text = lifecycle.render_mermaid()
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2" and "    [*] --> REGISTERED" in lines
    assert "    DELETING --> [*]" in lines
    for old, new in LEGAL:
        assert f"    {old.name} --> {new.name}" in lines
    assert len(lines) == 1 + 1 + len(LEGAL) + 1


def test_committed_doc_equals_the_generated_one():
    assert DOC.read_text() == lifecycle.render_markdown(), (
        "docs/lifecycle.md is stale: run `python -m memspace.supervisor.lifecycle > docs/lifecycle.md`")


def test_module_main_prints_the_doc():
    out = subprocess.run([sys.executable, "-m", "memspace.supervisor.lifecycle"], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    assert out == lifecycle.render_markdown()
    assert "| READY | DRAINING | hibernate, stop, restart or shutdown requested |" in out
