"""`memspace diagnose` writes a bundle with status, masked config, logs and disk use."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import orjson

from memspace.testing.server import ServerProcess


def run_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "memspace", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=120)


def test_bundle_from_a_running_server(tmp_path):
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("")
    with ServerProcess(tmp_path / "data", env={"MEMSPACE_SPACES_DIMENSION": "8"}) as server:
        client = server.client()
        client.create_space("diag", dimension=8)
        client.space("diag").remember(content="something to find on disk")
        out = tmp_path / "bundle.tar.gz"
        done = run_cli("--url", server.endpoints["zmq"], "--json", "diagnose", str(out),
                       env={"MEMSPACE_AUTH_TOKENS_FILE": str(tokens)})
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["server"] == "ok" and summary["bytes"] > 0
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        assert {"status.json", "metrics.json", "config.json", "spaces.json", "environment.json",
                "logs/memspace.log"} <= names
        status = orjson.loads(tar.extractfile("status.json").read())
        assert any(s["id"] == "diag" for s in status["spaces"])
        config = orjson.loads(tar.extractfile("config.json").read())
        assert config["auth.tokens_file"] == {"value": "***", "source": "$MEMSPACE_AUTH_TOKENS_FILE"}
        assert config["wal.fsync"]["value"] == "always"
        spaces = orjson.loads(tar.extractfile("spaces.json").read())
        assert spaces["spaces"]["diag"]["parts"]["wal"]["bytes"] > 0
        log = tar.extractfile("logs/memspace.log").read().decode()
        assert "space diag: REGISTERED -> STARTING" in log


def test_bundle_without_a_server_still_describes_the_disk(tmp_path):
    (tmp_path / "data" / "spaces" / "lonely" / "wal").mkdir(parents=True)
    (tmp_path / "data" / "spaces" / "lonely" / "wal" / "x.wal").write_bytes(b"1234")
    out = tmp_path / "b.tar.gz"
    done = run_cli("--url", "tcp://127.0.0.1:9", "--json", "diagnose", str(out), "--data-root",
                   str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    assert "no memspace server answered" in orjson.loads(done.stdout)["server"]
    with tarfile.open(out) as tar:
        spaces = orjson.loads(tar.extractfile("spaces.json").read())
        assert spaces["spaces"]["lonely"]["parts"]["wal"] == {"files": 1, "bytes": 4}
        assert "logs/README.txt" in tar.getnames()
