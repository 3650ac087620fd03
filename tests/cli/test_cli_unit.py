"""The CLI's own logic in-process: argument checks that fail before any contact, event following,
the two-pass import, percentiles, formatting."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from memspace import cli_memory, cli_space, cli_status, cli_transfer
from memspace.cli import app
from memspace.cli_common import UsageError, duration, resolve_space, size
from memspace.errors import InvalidArgument, Overloaded, SpaceUnavailable

CLOSED_URL = "tcp://127.0.0.1:1"


@pytest.fixture(autouse=True)
def _no_memspace_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("MEMSPACE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MEMSPACE_URL", CLOSED_URL)


def invoke(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), input=input)


@pytest.mark.parametrize("args, says", [
    (("recall", "x", "--k", "0"), "--k"),
    (("space", "create", "no/slash"), "'/'"),
    (("space", "delete", "alpha"), "--yes"),
    (("remember", "--space", "default"), "nothing to remember"),
    (("remember", "x", "--stdin", "--space", "default"), "not both"),
    (("remember", "x", "--metadata", "[1]", "--space", "default"), "--metadata must be a JSON object"),
    (("remember", "x", "--metadata", "{", "--space", "default"), "not valid JSON"),
    (("remember", "x", "--embedding", '[1, "a"]', "--space", "default"), "flat list of numbers"),
    (("recall", "x", "--mode", "fuzzy", "--space", "default"), "--mode"),
    (("forget", "--space", "default"), "forget what"),
    (("forget", "m-1", "--tag", "a", "--space", "default"), "not both"),
    (("forget", "--before", "yesterday", "--space", "default"), "ISO 8601"),
    (("space", "create", "alpha", "--setting", "novalue"), "KEY=VALUE"),
    (("--url", "udp://127.0.0.1:1", "status"), "tcp://HOST:PORT"),
    (("--url", "http://:7077", "status"), "http://HOST:PORT"),
    (("--url", "tcp://nohostport", "status"), "tcp://HOST:PORT"),
])
def test_usage_errors_fail_before_contact(args: tuple[str, ...], says: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert says in result.stderr


def test_bad_timeout_env_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSPACE_TIMEOUT", "soon")
    result = invoke("status")
    assert result.exit_code == 2 and "$MEMSPACE_TIMEOUT" in result.stderr


def test_resolve_space_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    assert resolve_space(None) == "default"                   # built-in config default
    conf = tmp_path / "m.toml"
    conf.write_text('default_space = "from-conf"\n')
    monkeypatch.setenv("MEMSPACE_CONFIG", str(conf))
    assert resolve_space(None) == "from-conf"
    monkeypatch.setenv("MEMSPACE_SPACE", "from-env")
    assert resolve_space(None) == "from-env"
    assert resolve_space("from-flag") == "from-flag"
    monkeypatch.setenv("MEMSPACE_SPACE", "")
    with pytest.raises(UsageError, match=r"from env: it is empty \(given by \$MEMSPACE_SPACE\)"):
        resolve_space(None)
    monkeypatch.setenv("MEMSPACE_CONFIG", str(tmp_path / "missing.toml"))
    monkeypatch.delenv("MEMSPACE_SPACE")
    with pytest.raises(UsageError, match="does not exist"):
        resolve_space(None)


def test_parse_embedding_sources(tmp_path) -> None:
    assert cli_memory.parse_embedding("[1, 2.5, -3]") == [1.0, 2.5, -3.0]
    f = tmp_path / "v.json"
    f.write_text("[0.5, 0.25]")
    assert cli_memory.parse_embedding(str(f)) == [0.5, 0.25]
    n = tmp_path / "v.npy"
    np.save(n, np.array([1.0, 0.0, 0.5], dtype=np.float32))
    assert cli_memory.parse_embedding(str(n)) == [1.0, 0.0, 0.5]
    for bad in ("[]", "[[1, 2]]", "[true]", str(tmp_path / "nope.json")):
        with pytest.raises(UsageError):
            cli_memory.parse_embedding(bad)


def test_parse_time() -> None:
    assert cli_memory.parse_time("1700000000.5") == 1700000000.5
    assert cli_memory.parse_time("2024-01-02T03:04:05+00:00") == 1704164645.0


def test_settings_flags_parse_json_values() -> None:
    got = cli_space._settings('{"decay": "none"}', ["dedup_threshold=0.9", "embedder=hashing", "max_auto_links=3"])
    assert got == {"decay": "none", "dedup_threshold": 0.9, "embedder": "hashing", "max_auto_links": 3}
    with pytest.raises(UsageError):
        cli_space._settings("[1]", [])


class FakeFeed:
    """Answers ``events`` calls from a script of replies (an exception is raised) and records the
    requests and whether each was passive."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.calls: list[dict[str, Any]] = []
        self.passive: list[bool] = []

    def call(self, space: str, op: str, body: dict[str, Any], *, passive: bool = False) -> dict[str, Any]:
        assert (space, op) == ("alpha", "events")
        self.calls.append(dict(body))
        self.passive.append(passive)
        step = self.replies.pop(0)
        if isinstance(step, Exception):
            raise step
        return step  # type: ignore[no-any-return]


def asleep(state: str = "HIBERNATED", last_seq: int | None = None) -> SpaceUnavailable:
    details: dict[str, Any] = {"space": "alpha", "state": state, "asleep": True}
    if last_seq is not None:
        details["last_seq"] = last_seq
    return SpaceUnavailable(f"memory space 'alpha' is {state}; a passive request does not start it", details)


def ev(seq: int, kind: str = "forget") -> dict[str, Any]:
    return {"seq": seq, "type": kind, "ids": [f"m{seq}"]}


def test_follow_resumes_after_each_event_and_stops_at_count(capsys: pytest.CaptureFixture[str]) -> None:
    feed = FakeFeed([
        {"events": [], "last_seq": 7, "gap": False},                 # where the feed ends now
        {"events": [], "last_seq": 9, "gap": False},                 # records that are not changes
        {"events": [ev(10), ev(11)], "last_seq": 11, "gap": False},
        {"events": [ev(12)], "last_seq": 14, "gap": False},
    ])
    assert cli_memory.follow(feed, "alpha", None, 3, as_json=True) == 3
    out = capsys.readouterr().out.splitlines()
    assert [line.split('"seq":')[1].split(",")[0] for line in out] == ["10", "11", "12"]
    assert [c.get("after") for c in feed.calls] == [0, 7, 9, 11]
    assert feed.calls[0]["wait_ms"] == 0
    assert [c["limit"] for c in feed.calls[1:]] == [3, 3, 1]
    # only the call that finds the position may wake the space; every long poll is passive
    assert feed.passive == [False, True, True, True]


def test_follow_from_a_given_seq_fetches_ordinarily_first_then_polls_passively(
        capsys: pytest.CaptureFixture[str]) -> None:
    feed = FakeFeed([{"events": [ev(4), ev(5)], "last_seq": 5, "gap": False},
                     {"events": [ev(6)], "last_seq": 6, "gap": False}])
    assert cli_memory.follow(feed, "alpha", 3, 3, as_json=True) == 3
    assert [(c["after"], c["wait_ms"]) for c in feed.calls] == [(3, 0), (5, cli_memory.EVENTS_WAIT_MS)]
    assert feed.passive == [False, True]


def test_follow_waits_through_a_sleeping_space_and_prints_the_waking_write_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    waits: list[float] = []
    feed = FakeFeed([
        {"events": [], "last_seq": 7, "gap": False},          # the position
        {"events": [], "last_seq": 7, "gap": False},          # the draining worker answers the parked poll
        asleep("DRAINING"), asleep(last_seq=7), asleep(last_seq=7),
        {"events": [ev(8, "remember")], "last_seq": 8, "gap": False},   # a write woke it
        {"events": [ev(8, "remember"), ev(9)], "last_seq": 9, "gap": False},  # a repeat is not re-printed
    ])
    assert cli_memory.follow(feed, "alpha", None, 2, as_json=True, sleep=waits.append) == 2
    captured = capsys.readouterr()
    assert [line.split('"seq":')[1].split(",")[0] for line in captured.out.splitlines()] == ["8", "9"]
    assert [c["after"] for c in feed.calls] == [0, 7, 7, 7, 7, 7, 8]
    assert feed.passive == [False, True, True, True, True, True, True]      # nothing woke the space
    assert len(waits) == 3 and all(2.0 <= w <= 4.0 for w in waits)          # bounded, jittered re-checks
    notes = captured.err.splitlines()
    assert notes == ["note: space alpha is draining; waiting for it to wake (this command does not wake it)",
                     "note: space alpha is hibernated; waiting for it to wake (this command does not wake it)"]


def test_follow_fetches_ordinarily_what_the_space_wrote_while_the_tail_was_not_looking(
        capsys: pytest.CaptureFixture[str]) -> None:
    # the space woke (someone else's write) and slept again between two re-checks: the router's
    # "asleep" says its last worker wrote up to 12, past the tail's position 10
    feed = FakeFeed([{"events": [], "last_seq": 10, "gap": False}, asleep(last_seq=12),
                     {"events": [ev(11), ev(12)], "last_seq": 12, "gap": False}])
    waits: list[float] = []
    assert cli_memory.follow(feed, "alpha", None, 2, as_json=False, sleep=waits.append) == 2
    assert waits == []                                   # no re-check wait: it fetches at once
    assert [(c["after"], c["wait_ms"]) for c in feed.calls] == [(0, 0), (10, cli_memory.EVENTS_WAIT_MS), (10, 0)]
    assert feed.passive == [False, True, False]          # one ordinary call, which may wake the space
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["11", "12"]


def test_follow_backs_off_when_too_many_feeds_are_open_and_stops_on_other_errors(
        capsys: pytest.CaptureFixture[str]) -> None:
    busy = Overloaded("space alpha: more than 2 change-feed polls open", {"retry_after_s": 5, "passive": True})
    waits: list[float] = []
    feed = FakeFeed([{"events": [], "last_seq": 1, "gap": False}, busy, busy,
                     {"events": [ev(2)], "last_seq": 2, "gap": False}])
    assert cli_memory.follow(feed, "alpha", None, 1, as_json=True, sleep=waits.append) == 1
    assert waits == [5.0, 5.0] and feed.passive == [False, True, True, True]
    assert capsys.readouterr().err.count("change-feed polls open") == 1

    # an ordinary call that is refused, or an error that is not "asleep", ends the command
    with pytest.raises(Overloaded):
        cli_memory.follow(FakeFeed([busy]), "alpha", None, 1, as_json=True, sleep=waits.append)
    restarting = SpaceUnavailable("space alpha did not become ready", {"retry_after_s": 1})
    with pytest.raises(SpaceUnavailable, match="did not become ready"):
        cli_memory.follow(FakeFeed([{"events": [], "last_seq": 1, "gap": False}, restarting]), "alpha", None, 1,
                          as_json=True, sleep=waits.append)


def test_follow_reports_a_gap_and_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    feed = FakeFeed([{"events": [ev(50)], "last_seq": 50, "gap": True}])
    assert cli_memory.follow(feed, "alpha", 3, 1, as_json=False) == 1
    captured = capsys.readouterr()
    assert "events after 3 up to 50 are no longer kept" in captured.err
    assert captured.out.split() == ["50", "--:--:--", "forget", "m50"]


def test_format_event_kinds() -> None:
    line = cli_memory.format_event({"seq": 3, "type": "remember", "at": 0, "memories": [
        {"id": "a", "outcome": "stored", "content": "hello", "tags": ["x", "y"]},
        {"id": "b", "outcome": "merged", "similarity": 0.97}]})
    assert line.split(None, 3)[3] == "a stored 'hello' [x,y]; b merged"
    assert "a -> b weight 0.5 related" in cli_memory.format_event(
        {"seq": 4, "type": "link", "source": "a", "target": "b", "weight": 0.5, "kind": "related"})
    assert cli_memory.format_event({"seq": 5, "type": "other", "x": 1}).endswith("other     x=1")


class FakeRemote:
    """A space that records each import request and refuses a memory without an embedding."""

    id = "alpha"

    def __init__(self) -> None:
        self.requests: list[list[str]] = []

    def import_(self, items: list[dict[str, Any]], batch: int) -> int:
        assert batch == len(items)
        for i, m in enumerate(items):
            if "embedding" not in m:
                raise InvalidArgument(f"items[{i}].embedding: is required", {"field": f"items[{i}].embedding"})
        self.requests.append([m["id"] for m in items])
        return len(items)


class FakeClient:
    def __init__(self) -> None:
        self.remote = FakeRemote()

    def space(self, space_id: str) -> FakeRemote:
        return self.remote


class NullBar:
    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def update(self, *a: Any, **k: Any) -> None:
        pass

    def advance(self, *a: Any, **k: Any) -> None:
        pass


def test_import_sends_each_line_once_in_batches_and_names_the_line_of_an_error(tmp_path) -> None:
    lines = [
        '{"id": "a", "embedding": [1], "links": [{"target": "c"}, {"target": "b"}]}',
        '{"id": "b", "embedding": [1], "links": [{"target": "a"}]}',
        "",
        '{"id": "c", "embedding": [1], "links": [{"target": "a"}, {"target": "b"}]}',
        '{"id": "d", "embedding": [1]}',
        '{"id": "e", "embedding": [1]}',
    ]
    path = tmp_path / "in.ndjson"
    path.write_text("\n".join(lines) + "\n")
    client = FakeClient()
    with open(path, "rb") as src:
        importer = cli_transfer.Importer(client, "alpha", src, "in.ndjson", 2, create=False)
        importer.run(NullBar())
    assert importer.imported == 5
    assert client.remote.requests == [["a", "b"], ["c", "d"], ["e"]]     # forward links go as they are
    path.write_text("\n".join(lines[:4] + ['{"id": "x"}']) + "\n")
    with open(path, "rb") as src:
        importer = cli_transfer.Importer(FakeClient(), "alpha", src, "in.ndjson", 2, create=False)
        with pytest.raises(InvalidArgument, match=r"^in\.ndjson line 5: items\[1\]\.embedding") as err:
            importer.run(NullBar())
    assert importer.imported == 2 and err.value.details["line"] == 5


def test_percentile_bound_reads_worker_histograms() -> None:
    buckets = len(cli_status.BUCKETS)
    hist = [0.0] * (buckets + 2)
    hist[1] = 98      # <= 1 ms
    hist[5] = 2       # <= 25 ms
    assert cli_status.percentile_bound(hist, 0.5) == 0.001
    assert cli_status.percentile_bound(hist, 0.99) == 0.025
    hist[buckets] = 1000   # overflow bucket dominates
    assert cli_status.percentile_bound(hist, 0.99) == float("inf")
    assert cli_status.percentile_bound([0.0] * (buckets + 2), 0.5) is None


def test_row_style_and_formatting() -> None:
    assert cli_status.row_style({"state": "FAILED", "restarts": 0}) == "bold red"
    assert cli_status.row_style({"state": "BACKOFF", "restarts": 2}) == "yellow"
    assert cli_status.row_style({"state": "READY", "restarts": 1}) == "yellow"
    assert cli_status.row_style({"state": "READY", "restarts": 0}) == ""
    assert size(2048) == "2.0 KiB" and size(None) == "-" and size(12) == "12 B"
    assert duration(3725) == "1h02m" and duration(5.25) == "5.2s" and duration(None) == "-"
