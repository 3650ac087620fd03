"""Run a real ``memspace serve`` in a subprocess for tests and benchmarks.

    with ServerProcess(tmp_path / "data", env={"MEMSPACE_HEARTBEAT_S": "0.2"}) as server:
        client = server.client()
        ...
    # exit: SIGTERM, wait for exit code 0, check that no process of the tree is left

Endpoints come from the lines ``memspace serve`` prints at start (bounded wait,
no sleeps). Every process of the tree (fork server, workers, gateways) is
recorded while it runs, so :meth:`stop` can prove none outlived the server.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil

from memspace.client import Client, connect


class ServerProcess:
    def __init__(self, data_root: str | os.PathLike[str], *, http: bool = False, grpc: bool = False,
                 env: dict[str, str] | None = None, start_timeout: float = 60.0) -> None:
        self.data_root = Path(data_root)
        self.http = http
        self.grpc = grpc
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoints: dict[str, str] = {}
        self.seen: dict[int, float] = {}          # pid -> create_time (pids get reused)
        self.stderr_path = self.data_root.parent / f"{self.data_root.name}.serve.log"

    # -- start / stop ------------------------------------------------------------------------

    def start(self) -> ServerProcess:
        self.data_root.parent.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "memspace", "serve", "--data-root", str(self.data_root),
                "--zmq", "tcp://127.0.0.1:0",
                "--http", "127.0.0.1:0" if self.http else "off",
                "--grpc", "127.0.0.1:0" if self.grpc else "off"]
        env = {**os.environ, **self.env}
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        wanted = {"zmq"} | ({"http"} if self.http else set()) | ({"grpc"} if self.grpc else set())
        deadline = time.monotonic() + self.start_timeout
        sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buffer = b""
        try:
            while not wanted <= set(self.endpoints):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(timeout=left):
                    raise TimeoutError(f"memspace serve did not print its endpoints within "
                                       f"{self.start_timeout:g} s; log: {self.log_tail()}")
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"memspace serve exited with {self.proc.wait()}; log: {self.log_tail()}")
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    key, _, value = line.decode().partition(": ")
                    if key in ("zmq", "http", "grpc"):
                        self.endpoints[key] = value.strip()
        except BaseException:
            self.kill()
            raise
        finally:
            sel.close()
        self.record_pids()
        self.endpoints.update(orjson.loads((self.data_root / "endpoints.json").read_bytes()))
        return self

    def record_pids(self) -> set[int]:
        """Remember every process of the tree now alive (to check later that none is left)."""
        if self.proc is None:
            return set()
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return set()
        for p in procs:
            try:
                self.seen.setdefault(p.pid, p.create_time())
            except psutil.NoSuchProcess:
                pass
        return {p.pid for p in procs}

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for the exit code; raise if any process of the tree is still alive."""
        assert self.proc is not None
        self.record_pids()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._close_pipes()
        left = self.survivors(timeout=10.0)
        if left:
            for pid in left:
                _kill(pid)
            raise AssertionError(f"processes left after memspace serve exited: {sorted(left)}")
        return code

    def kill_tree(self) -> None:
        """SIGKILL every process of the tree at once (a machine-level crash of the service)."""
        for pid in self.record_pids():
            _kill(pid)
        if self.proc is not None:
            self.proc.wait(30)
        self._close_pipes()
        self.survivors(timeout=10.0)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill_tree()
        self._close_pipes()

    def survivors(self, timeout: float) -> set[int]:
        """Recorded processes still running after waiting up to ``timeout`` (zombies count as gone)."""
        deadline = time.monotonic() + timeout
        while True:
            left = {pid for pid, created in self.seen.items() if _alive(pid, created)}
            if not left or time.monotonic() >= deadline:
                return left
            procs = []
            for pid in left:
                try:
                    procs.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=0.2)

    def _close_pipes(self) -> None:
        if self.proc is not None and self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        if getattr(self, "_stderr", None) is not None and not self._stderr.closed:
            self._stderr.close()

    # -- use ---------------------------------------------------------------------------------

    def client(self, timeout: float = 30.0, **kwargs: Any) -> Client:
        return connect(self.endpoints["zmq"], timeout=timeout, **kwargs)

    def wait_state(self, client: Client, space: str, states: str | tuple[str, ...], timeout: float = 60.0
                   ) -> dict[str, Any]:
        """Poll the space's status until its state is one of ``states`` (timeout = safety net)."""
        wanted = (states,) if isinstance(states, str) else states
        return self.wait_status(client, space, lambda st: st["state"] in wanted, f"state in {wanted}", timeout)

    def wait_status(self, client: Client, space: str, predicate: Callable[[dict[str, Any]], bool],
                    what: str = "status", timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = client.get_space(space)
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"space {space}: no {what} within {timeout:g} s (last {status['state']}); "
                                     f"log: {self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: Any, *rest: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            return
        if exc_type is None:
            code = self.stop()
            assert code == 0, f"memspace serve exited with {code}; log: {self.log_tail()}"
        else:
            self.kill()


def _alive(pid: int, created: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

