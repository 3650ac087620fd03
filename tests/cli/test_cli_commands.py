"""The ``memspace`` command as a user runs it: subprocesses against a real server, JSON parsed,
exit codes checked (0 ok, 1 server error or no server, 2 usage error)."""

from __future__ import annotations

import socket

import numpy as np

from .conftest import Run, Server, run_cli


def test_status_json_schema(cli: Run, server: Server) -> None:
    data = cli("status", "--json").json()
    assert data["data_root"] == str(server.data_root)
    assert isinstance(data["pid"], int) and data["pid"] == server.proc.pid
    assert isinstance(data["uptime_s"], float) and data["uptime_s"] >= 0
    assert data["max_active_workers"] == 256
    assert isinstance(data["active_workers"], int)
    by_id = {s["id"]: s for s in data["spaces"]}
    assert "default" in by_id
    for s in data["spaces"]:
        assert {"id", "state", "pid", "memories", "restarts", "dimension", "queued", "inflight"} <= set(s)
    assert sum(data["spaces_by_state"].values()) == len(data["spaces"])

    one = cli("status", "--space", "default", "--json").json()
    assert one["id"] == "default" and one["dimension"] == 32

    table = cli("status")
    assert table.code == 0 and "default" in table.out and "STATE" in table.out


def test_space_create_list_show(cli: Run) -> None:
    made = cli("space", "create", "cmd-alpha", "--dimension", "8", "--setting", "decay=none", "--json").json()
    assert made["created"] is True
    assert made["space"]["dimension"] == 8 and made["space"]["settings"] == {"decay": "none"}
    again = cli("space", "create", "cmd-alpha", "-d", "8", "--setting", "decay=none", "--json").json()
    assert again["created"] is False
    clash = cli("space", "create", "cmd-alpha", "-d", "16")
    assert clash.code == 1 and "error: SPACE_EXISTS:" in clash.err

    listed = cli("space", "list", "--json").json()
    assert {"cmd-alpha", "default"} <= {s["id"] for s in listed}
    shown = cli("space", "show", "cmd-alpha", "--json").json()
    assert shown["id"] == "cmd-alpha" and shown["dimension"] == 8
    human = cli("space", "create", "cmd-alpha", "-d", "8", "--setting", "decay=none")
    assert human.code == 0 and human.out.startswith("exists")


def test_memory_commands(cli: Run, tmp_path) -> None:
    assert cli("space", "create", "cmd-mem", "-d", "4").code == 0
    s = ("--space", "cmd-mem")
    first = cli("remember", "the lab is on the third floor", "--id", "m-1", "--tag", "place", "--tag", "work",
                "--metadata", '{"source": "chat"}', "--confidence", "0.8", *s, "--json").json()
    assert first == {"id": "m-1", "outcome": "stored", "similarity": None, "links": []}
    second = cli("remember", "--stdin", "--id", "m-2", "--embedding", "[0, 1, 0, 0]", *s, "--json",
                 input="Ana works in the lab\n").json()
    assert second["id"] == "m-2" and second["outcome"] == "stored"
    vec = tmp_path / "v.npy"
    np.save(vec, np.array([0.0, 0.0, 1.0, 0.0], dtype=np.float32))
    third = cli("remember", "--embedding", str(vec), "--id", "m-3", *s, "--json").json()
    assert third["outcome"] == "stored"

    got = cli("get", "m-1", *s, "--json").json()
    assert got["content"] == "the lab is on the third floor"
    assert got["tags"] == ["place", "work"] and got["metadata"] == {"source": "chat"}
    assert got["confidence"] == 0.8 and "embedding" not in got
    got2 = cli("get", "m-2", "--embedding", *s, "--json").json()
    assert got2["content"] == "Ana works in the lab"     # the trailing newline of stdin is not content
    assert got2["embedding"] == [0.0, 1.0, 0.0, 0.0]

    linked = cli("link", "m-1", "m-3", "--weight", "0.5", "--kind", "about", *s, "--json").json()
    assert linked == {"source": "m-1", "target": "m-3", "weight": 0.5, "kind": "about"}
    assert {"target": "m-3", "weight": 0.5, "kind": "about"} in cli("get", "m-1", *s, "--json").json()["links"]

    hits = cli("recall", "--embedding", "[0, 1, 0, 0]", "--k", "1", "--mode", "similarity", *s, "--json").json()
    assert [h["id"] for h in hits] == ["m-2"] and hits[0]["path"] == ["m-2"]
    assert hits[0]["similarity"] > 0.99
    tagged = cli("recall", "the lab is on the third floor", "--tag", "place", *s, "--json").json()
    assert [h["id"] for h in tagged] == ["m-1"]
    table = cli("recall", "the lab is on the third floor", *s)
    assert table.code == 0 and "m-1" in table.out

    gone = cli("forget", "m-2", *s, "--json").json()
    assert gone == {"forgotten": 1}
    missing = cli("get", "m-2", *s)
    assert missing.code == 1 and missing.err.startswith("error: MEMORY_NOT_FOUND:")
    by_tag = cli("forget", "--tag", "work", *s, "--json").json()
    assert by_tag == {"forgotten": 1}


def test_space_selection_precedence(cli: Run, tmp_path) -> None:
    for name in ("sel-env", "sel-conf", "sel-flag"):
        assert cli("space", "create", name, "-d", "4").code == 0
    conf = tmp_path / "memspace.toml"
    conf.write_text('default_space = "sel-conf"\n')
    env = {"MEMSPACE_CONFIG": str(conf)}
    assert cli("remember", "from config", "--id", "c", env=env).code == 0
    assert cli("remember", "from env", "--id", "e", env={**env, "MEMSPACE_SPACE": "sel-env"}).code == 0
    assert cli("--space", "sel-flag", "remember", "from flag", "--id", "f",
               env={**env, "MEMSPACE_SPACE": "sel-env"}).code == 0
    assert cli("get", "c", "--space", "sel-conf", "--json").json()["content"] == "from config"
    assert cli("get", "e", "--space", "sel-env", "--json").json()["content"] == "from env"
    assert cli("get", "f", "--space", "sel-flag", "--json").json()["content"] == "from flag"
    assert cli("get", "f", "--space", "sel-env").code == 1


def test_unknown_space_is_exit_1(cli: Run) -> None:
    r = cli("get", "x", "--space", "no-such-space")
    assert r.code == 1
    assert r.err.startswith("error: SPACE_NOT_FOUND:") and "no-such-space" in r.err
    assert r.out == ""
    assert cli("space", "drain", "no-such-space").code == 1


def test_usage_errors_are_exit_2(cli: Run, tmp_path) -> None:
    # (more usage errors are checked in-process in test_cli_unit.py)
    assert cli("recall", "x", "--bogus").code == 2
    flag = cli("get", "x", "--space", "Bad")
    assert flag.code == 2 and "INVALID_SPACE_ID" in flag.err and "from flag" in flag.err and "--space" in flag.err
    env = cli("get", "x", env={"MEMSPACE_SPACE": "../etc"})
    assert env.code == 2 and "from env" in env.err and "$MEMSPACE_SPACE" in env.err
    conf = tmp_path / "bad.toml"
    conf.write_text('default_space = "A"\n')
    from_conf = cli("get", "x", env={"MEMSPACE_CONFIG": str(conf)})
    assert from_conf.code == 2 and "from config" in from_conf.err and str(conf) in from_conf.err


def test_no_server_is_exit_1_with_a_hint(tmp_path) -> None:
    with socket.socket() as s:     # a port that is certainly closed: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        r = run_cli("status", url=url)
    assert r.code == 1
    assert f"no memspace server answered at {url}" in r.err and "memspace serve" in r.err
    ipc = run_cli("remember", "x", "--space", "alpha", url=f"ipc://{tmp_path}/nothing.sock")
    assert ipc.code == 1 and "no memspace server answered" in ipc.err


def test_silent_listener_is_exit_1_after_the_first_contact_timeout() -> None:
    # something accepts TCP connections but never speaks zmq: only the reply deadline can tell
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        r = run_cli("--timeout", "0.5", "space", "list", url=url)
    assert r.code == 1
    assert f"no memspace server answered at {url}" in r.err and "no reply within 0.5 s" in r.err


def test_lifecycle_repair_and_delete(cli: Run) -> None:
    assert cli("space", "create", "cmd-life", "-d", "4").code == 0
    assert cli("remember", "keep me", "--id", "k", "--space", "cmd-life").code == 0     # worker running
    refused = cli("space", "repair", "cmd-life")
    assert refused.code == 1
    assert refused.err.startswith("error: SPACE_UNAVAILABLE:") and "drain it first" in refused.err

    drained = cli("space", "drain", "cmd-life", "--json").json()
    assert drained["state"] == "STOPPED" and drained["pid"] is None
    repaired = cli("space", "repair", "cmd-life", "--json").json()
    assert repaired["repair"]["changed"] is False and repaired["space"]["state"] == "STOPPED"
    restarted = cli("space", "restart", "cmd-life", "--json").json()
    assert restarted["state"] == "READY" and isinstance(restarted["pid"], int)
    assert cli("get", "k", "--space", "cmd-life", "--json").json()["content"] == "keep me"
    hibernated = cli("space", "hibernate", "cmd-life", "--json").json()
    assert hibernated["state"] == "HIBERNATED"

    unconfirmed = cli("space", "delete", "cmd-life")
    assert unconfirmed.code == 2 and "--yes" in unconfirmed.err
    receipt = cli("space", "delete", "cmd-life", "--yes", "--json").json()
    assert receipt["deleted"] is True and receipt["space"] == "cmd-life" and receipt["memories"] == 1
    assert cli("space", "show", "cmd-life").code == 1
