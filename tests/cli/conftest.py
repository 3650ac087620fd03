"""A real ``memspace serve`` per test module, and a helper running ``python -m memspace`` against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

START_POLLS = 600          # x 0.05 s: a generous bound for a loaded machine
STOP_TIMEOUT_S = 60
CLI_TIMEOUT_S = 120        # a hung command fails its test instead of hanging the run


@dataclass
class Server:
    url: str
    data_root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: nothing memspace-related inherited, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSPACE_")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    log = root / "serve.log"
    env = clean_env(MEMSPACE_SPACES_DIMENSION="32", MEMSPACE_DRAIN_TIMEOUT_S="10")
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memspace", "serve", "--data-root", str(data), "--http", "off",
             "--grpc", "off", "--zmq", "tcp://127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=err, env=env)
    endpoints = data / "endpoints.json"
    try:
        for _ in range(START_POLLS):
            if endpoints.exists():      # written atomically, after every endpoint is bound
                break
            assert proc.poll() is None, f"memspace serve exited with {proc.returncode}:\n{log.read_text()}"
            time.sleep(0.05)
        else:
            raise AssertionError(f"memspace serve wrote no endpoints.json:\n{log.read_text()}")
        srv = Server(json.loads(endpoints.read_text())["zmq"], data, proc, log)
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, f"memspace serve exited with {code}:\n{log.read_text()[-4000:]}"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


Run = Callable[..., Result]


def run_cli(*args: str, url: str | None, input: str | bytes | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Result:
    extra = {"MEMSPACE_URL": url} if url else {}
    full_env = clean_env(**extra, **(env or {}))
    binary = isinstance(input, bytes)
    proc = subprocess.run([sys.executable, "-m", "memspace", *args], check=False, input=input,
                          capture_output=True, env=full_env, timeout=CLI_TIMEOUT_S, text=not binary, cwd=cwd)
    out = proc.stdout.decode() if binary else proc.stdout
    err = proc.stderr.decode() if binary else proc.stderr
    return Result(proc.returncode, out, err)


@pytest.fixture
def cli(server: Server) -> Run:
    """``cli("space", "list", "--json")`` runs the command against the module's server."""
    def run(*args: str, **kw: Any) -> Result:
        return run_cli(*args, url=server.url, **kw)
    return run


def popen_cli(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "memspace", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env(MEMSPACE_URL=url))
