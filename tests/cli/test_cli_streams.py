"""Long-running and streaming commands against a real server: export/import, events, status --watch,
bench."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess

import pytest

from .conftest import Run, Server, popen_cli

READ_TIMEOUT_S = 60     # a safety net against a hung stream, never a synchronisation delay


def read_line(proc: subprocess.Popen[str]) -> str:
    """The next stdout line of ``proc``; fails the test if none comes within READ_TIMEOUT_S."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(READ_TIMEOUT_S):
            proc.kill()
            pytest.fail(f"no output from {proc.args}: {proc.communicate()[1]}")
    return proc.stdout.readline()


def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=READ_TIMEOUT_S)
    return proc.returncode, out, err


def memories(path) -> dict[str, dict]:
    return {m["id"]: m for m in (json.loads(line) for line in path.read_text().splitlines())}


def test_export_import_round_trip(cli: Run, tmp_path) -> None:
    vectors = {"a": [1, 0, 0, 0], "b": [0.9, 0.1, 0, 0], "c": [0, 0, 1, 0], "d": [0, 0, 0.8, 0.6]}
    seed = tmp_path / "seed.ndjson"
    # "a" links to "d", which comes later in the file: import must resolve forward references
    seed.write_text("".join(
        json.dumps({"id": mid, "content": f"memory {mid}", "embedding": vec, "tags": [f"t-{mid}"],
                    "metadata": {"n": mid}, "confidence": 0.9,
                    "links": [{"target": "d", "weight": 0.4, "kind": "later"}] if mid == "a" else []}) + "\n"
        for mid, vec in vectors.items()))
    made = cli("space", "import", "tx-src", str(seed), "--create", "--json").json()
    assert made == {"space": "tx-src", "imported": 4, "file": str(seed)}

    out = tmp_path / "src.ndjson"
    summary = cli("space", "export", "tx-src", str(out), "--json").json()
    assert summary == {"space": "tx-src", "exported": 4, "file": str(out)}
    exported = memories(out)
    assert sorted(exported) == ["a", "b", "c", "d"]
    # a restore: links as given (to a later line too), no dedup ("b" is close to "a"), no auto-links
    assert exported["a"]["links"] == [{"target": "d", "weight": 0.4, "kind": "later"}]
    assert [exported[m]["links"] for m in "bcd"] == [[], [], []]
    assert exported["b"]["tags"] == ["t-b"] and exported["b"]["metadata"] == {"n": "b"}
    assert len(exported["a"]["embedding"]) == 4

    imported = cli("space", "import", "tx-dst", str(out), "--create", "--batch", "2", "--json").json()
    assert imported["imported"] == 4
    again = tmp_path / "dst.ndjson"
    assert cli("space", "export", "tx-dst", str(again)).code == 0
    assert again.read_bytes() == out.read_bytes()

    # through pipes: export to stdout, import from stdin
    piped = cli("space", "export", "tx-src", "-")
    assert piped.code == 0 and "exported 4 memories" in piped.err
    assert [json.loads(line)["id"] for line in piped.out.splitlines()] == ["a", "b", "c", "d"]
    from_stdin = cli("space", "import", "tx-pipe", "-", "--create", "--json", input=piped.out).json()
    assert from_stdin["imported"] == 4
    assert cli("get", "a", "--space", "tx-pipe", "--json").json()["metadata"] == {"n": "a"}


def test_import_rejects_bad_input(cli: Run, tmp_path) -> None:
    assert cli("space", "create", "tx-bad", "-d", "4").code == 0
    missing = cli("space", "import", "tx-bad", str(tmp_path / "none.ndjson"))
    assert missing.code == 2 and "cannot read" in missing.err
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"id": "ok", "content": "fine", "embedding": [1, 0, 0, 0]}\n\nnot json\n')
    r = cli("space", "import", "tx-bad", str(bad))
    assert r.code == 2 and "line 3" in r.err and "not valid JSON" in r.err
    wrong_dim = tmp_path / "dim.ndjson"
    wrong_dim.write_text('{"id": "x", "embedding": [1, 0]}\n')
    r = cli("space", "import", "tx-bad", str(wrong_dim))
    assert r.code == 1 and r.err.startswith("error: INVALID_ARGUMENT:")


def test_events_history_live_and_ctrl_c(cli: Run, server: Server) -> None:
    s = ("--space", "tx-ev")
    assert cli("space", "create", "tx-ev", "-d", "4").code == 0
    assert cli("remember", "first", "--id", "e1", "--embedding", "[1, 0, 0, 0]", *s).code == 0
    assert cli("remember", "second", "--id", "e2", "--embedding", "[0, 1, 0, 0]", *s).code == 0
    assert cli("link", "e1", "e2", *s).code == 0
    history = cli("events", "--after", "0", "--count", "3", *s, "--json")
    assert history.code == 0, history.err
    events = history.lines()
    assert [e["type"] for e in events] == ["remember", "remember", "link"]
    assert [m["id"] for m in events[0]["memories"]] == ["e1"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    human = cli("events", "--after", "0", "--count", "1", *s)
    assert human.code == 0 and "remember" in human.out and "e1" in human.out

    # live: a follower started after the last known event gets the next one, then stops (--count)
    follower = popen_cli(server.url, "events", "--after", str(seqs[-1]), "--count", "1", *s, "--json")
    try:
        assert cli("forget", "e1", *s).code == 0
        out, err = follower.communicate(timeout=READ_TIMEOUT_S)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    [event] = [json.loads(line) for line in out.splitlines()]
    assert event["type"] == "forget" and event["ids"] == ["e1"] and event["seq"] > seqs[-1]

    # Ctrl-C ends a follow with exit 0
    tail = popen_cli(server.url, "events", "--after", "0", *s, "--json")
    try:
        assert json.loads(read_line(tail))["seq"] == seqs[0]
        code, _, err = interrupt(tail)
    finally:
        tail.kill()
    assert code == 0, err


def test_status_watch_json_until_ctrl_c(server: Server) -> None:
    watch = popen_cli(server.url, "status", "--watch", "--json", "--interval", "0.1")
    try:
        first = json.loads(read_line(watch))
        second = json.loads(read_line(watch))
        code, _, err = interrupt(watch)
    finally:
        watch.kill()
    assert code == 0, err
    assert "default" in {sp["id"] for sp in first["spaces"]}
    assert second["uptime_s"] > first["uptime_s"]


def test_bench_json(cli: Run) -> None:
    report = cli("bench", "--remembers", "30", "--recalls", "10", "--json").json()
    assert report["temporary"] is True and report["space"].startswith("bench-")
    for op, n in (("remember", 30), ("recall", 10)):
        r = report[op]
        assert r["count"] == n and r["errors"] == 0
        assert r["ops_per_s"] > 0 and r["seconds"] > 0
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    # the temporary space is gone
    assert report["space"] not in {sp["id"] for sp in cli("space", "list", "--json").json()}

    assert cli("space", "create", "tx-bench", "-d", "8").code == 0
    kept = cli("bench", "-n", "5", "-r", "2", "--space", "tx-bench", "--json").json()
    assert kept["space"] == "tx-bench" and kept["temporary"] is False
    stored = cli("space", "export", "tx-bench", "-")
    assert len(stored.out.splitlines()) == 5
    table = cli("bench", "-n", "3", "-r", "1")
    assert table.code == 0 and "remember" in table.out and "P99 MS" in table.out
