"""conf/supervisord.conf keeps `memspace serve` alive: SIGKILL it mid-write, every acknowledged memory survives.

The scenario runs once per module (a real supervisord, a real `memspace serve` tree) and records what
it observed; the tests below assert on that record:

1. supervisord (``-n``) from a copy of conf/supervisord.conf, with a temporary run directory (control
   socket, logs), data root and port 0 everywhere; wait until ``memspace serve`` is RUNNING and has
   written endpoints.json;
2. a writer thread stores memories into 3 spaces through the native client and records each one the
   server acknowledged; while it runs, SIGKILL the `memspace serve` process (not supervisord);
3. wait until supervisord has started a new one (new pid, endpoints.json rewritten by it: with port 0
   the zmq endpoint changes), then read every acknowledged memory back;
4. ``supervisorctl shutdown`` and check that no process of either tree is left (pid + create_time).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
import pytest

from memspace import config as config_mod
from memspace.client import connect
from memspace.errors import MemspaceError

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "supervisord.conf"
SPACES = ("ops-alpha", "ops-beta", "ops-gamma")
DIM = 32

# -- the shipped file, parsed the way supervisord parses it ------------------------------------------


def _server_options(run_dir: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from supervisor.options import ServerOptions

    monkeypatch.setenv("MEMSPACE_RUN_DIR", str(run_dir))
    monkeypatch.setenv("MEMSPACE_DATA_ROOT", str(data_root))
    options = ServerOptions()
    options.realize(args=["-c", str(CONF)])
    return options


def test_program_section_stops_gracefully_and_kills_the_group_last(tmp_path, monkeypatch):
    options = _server_options(tmp_path, tmp_path / "data", monkeypatch)
    (group,) = options.process_group_configs
    (program,) = group.process_configs
    assert program.name == "memspace"
    argv = program.command.split()
    assert argv[:2] == ["memspace", "serve"]
    assert argv[argv.index("--config") + 1] == str(ROOT / "conf" / "memspace.toml")
    assert Path(argv[argv.index("--config") + 1]).is_file()
    assert argv[argv.index("--data-root") + 1] == str(tmp_path / "data")
    from supervisor.datatypes import RestartUnconditionally

    assert program.autorestart is RestartUnconditionally
    assert program.stopsignal == signal.SIGTERM
    assert program.stopasgroup is False and program.killasgroup is True
    # the final SIGKILL must come after a full drain: drain_timeout_s, then the SIGTERM grace
    drain = config_mod.BY_KEY["drain_timeout_s"].default
    grace = config_mod.BY_KEY["heartbeat_s"].default * config_mod.BY_KEY["heartbeat_liveness"].default
    assert program.stopwaitsecs > drain + grace + 10
    # stderr only: supervisord keeps and rotates it (no second, unrotated copy under the data root)
    assert program.environment == {"PYTHONUNBUFFERED": "1", "MEMSPACE_LOG_FILE": "-"}
    assert program.stdout_logfile == str(tmp_path / "memspace.out.log")
    assert program.stderr_logfile == str(tmp_path / "memspace.err.log")
    assert options.server_configs[0]["file"] == str(tmp_path / "supervisor.sock")


def test_a_missing_variable_stops_supervisord_instead_of_defaulting(tmp_path, monkeypatch):
    from supervisor.options import ServerOptions

    monkeypatch.setenv("MEMSPACE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("MEMSPACE_DATA_ROOT", raising=False)
    options = ServerOptions()
    with open(os.devnull, "w") as devnull, pytest.raises(SystemExit) as exc:
        options.stderr = devnull              # its usage message is not this test's output
        options.realize(args=["-c", str(CONF)])
    assert exc.value.code == 2


# -- the crash scenario ----------------------------------------------------------------------------


@dataclass
class Scenario:
    run_dir: Path
    data_root: Path
    conf: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    first_pid: int = 0
    second_pid: int = 0
    first_tree: dict[int, float] = field(default_factory=dict)      # pid -> create_time
    second_tree: dict[int, float] = field(default_factory=dict)
    acked: dict[str, dict[str, str]] = field(default_factory=dict)  # space -> id -> content
    writer_error: BaseException | None = None
    read_back: dict[str, dict[str, str | None]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    first_left: set[int] = field(default_factory=set)
    first_left_names: dict[int, str] = field(default_factory=dict)
    second_left: set[int] = field(default_factory=set)
    shutdown_rc: int | None = None
    supervisord_rc: int | None = None

    def rpc(self) -> Any:
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.run_dir / 'supervisor.sock'}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def info(self) -> dict[str, Any] | None:
        try:
            return self.rpc().supervisor.getProcessInfo("memspace")   # type: ignore[no-any-return]
        except (OSError, xmlrpc.client.Fault):
            return None   # supervisord not listening yet

    def endpoints(self) -> dict[str, str] | None:
        try:
            return orjson.loads((self.data_root / "endpoints.json").read_bytes())  # type: ignore[no-any-return]
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def logs(self) -> str:
        out = []
        for name in ("supervisord.log", "memspace.err.log", "supervisord.stdout"):
            path = self.run_dir / name
            if path.exists():
                out.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(out)


def poll(what: str, check: Callable[[], Any], scenario: Scenario, timeout: float = 60.0) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` s with the logs."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s\n{scenario.logs()}")
        time.sleep(0.05)


def tree(pid: int) -> dict[int, float]:
    root = psutil.Process(pid)
    out = {}
    for p in (root, *root.children(recursive=True)):
        try:
            out[p.pid] = p.create_time()
        except psutil.NoSuchProcess:
            pass
    return out


def alive(pid: int, created: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def survivors(procs: dict[int, float], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = {pid for pid, created in procs.items() if alive(pid, created)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def name(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:80]
    except psutil.Error:
        return "?"


def kill_all(procs: dict[int, float]) -> None:
    for pid, created in procs.items():
        if alive(pid, created):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def running_pid(scenario: Scenario, not_pid: int = 0) -> int:
    """The pid of `memspace serve` once supervisord runs it and it has written endpoints.json."""
    def check() -> int:
        info = scenario.info()
        endpoints = scenario.endpoints()
        if info and info["pid"] and info["pid"] != not_pid and endpoints \
                and endpoints.get("pid") == str(info["pid"]) and endpoints.get("zmq"):
            return int(info["pid"])
        return 0
    return int(poll("running memspace serve with fresh endpoints.json", check, scenario))


def writer(scenario: Scenario, url: str, stop: threading.Event) -> None:
    """Store memories round-robin until told to stop or the server vanishes; record acknowledgements."""
    rng = np.random.default_rng(7)
    client = connect(url, timeout=5.0, retries=0)
    n = 0
    try:
        while not stop.is_set():
            space = SPACES[n % len(SPACES)]
            content = f"{space} memory {n}"
            result = client.space(space).remember(content=content,
                                                  embedding=rng.standard_normal(DIM).astype(np.float32))
            assert result.outcome == "stored", result
            scenario.acked[space][result.id] = content
            n += 1
    except MemspaceError as e:
        if n == 0:
            scenario.writer_error = e      # later, an error is the server dying under us: expected
    except Exception as e:  # noqa: BLE001 - a wrong reply: the test reports it via writer_error
        scenario.writer_error = e
    finally:
        client.close()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    base = tmp_path_factory.mktemp("sv")
    run_dir, data_root = base / "run", base / "data"
    run_dir.mkdir()
    conf = base / "supervisord.conf"
    # a copy that still finds conf/memspace.toml: %(here)s would be the copy's directory
    conf.write_text(CONF.read_text().replace("%(here)s", str(CONF.parent)))
    bindir = os.path.dirname(sys.executable)
    if shutil.which("memspace", path=bindir) is None:
        pytest.fail(f"no `memspace` script beside {sys.executable}: pip install -e . first")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSPACE_")}
    env.update({
        "PATH": bindir + os.pathsep + env.get("PATH", ""),
        "MEMSPACE_RUN_DIR": str(run_dir),
        "MEMSPACE_DATA_ROOT": str(data_root),
        "MEMSPACE_HTTP_BIND": "127.0.0.1:0",
        "MEMSPACE_GRPC_BIND": "127.0.0.1:0",
        "MEMSPACE_ZMQ_BIND": "tcp://127.0.0.1:0",
        "MEMSPACE_SPACES_DIMENSION": str(DIM),
    })
    s = Scenario(run_dir, data_root, conf, env, acked={space: {} for space in SPACES})
    with open(run_dir / "supervisord.stdout", "wb") as stdout:   # the child keeps its own descriptor
        s.proc = subprocess.Popen(["supervisord", "-n", "-c", str(conf)], env=env, stdout=stdout,
                                  stderr=subprocess.STDOUT, cwd=base)
    supervisord = {s.proc.pid: psutil.Process(s.proc.pid).create_time()}
    try:
        s.first_pid = running_pid(s)
        poll("RUNNING state", lambda: (s.info() or {}).get("statename") == "RUNNING", s)
        url = s.endpoints()["zmq"]                                    # type: ignore[index]
        with connect(url, timeout=30.0) as client:
            for space in SPACES:
                client.create_space(space, dimension=DIM)
                client.space(space).count()                           # its worker is up before the kill
        stop = threading.Event()
        thread = threading.Thread(target=writer, args=(s, url, stop), daemon=True)
        thread.start()
        poll("acknowledged writes in every space", lambda: all(len(s.acked[x]) >= 10 for x in SPACES), s)
        s.first_tree = tree(s.first_pid)
        os.kill(s.first_pid, signal.SIGKILL)                          # the supervisord child only
        s.second_pid = running_pid(s, not_pid=s.first_pid)
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the writer did not notice the dead server"

        with connect(s.endpoints()["zmq"], timeout=30.0) as client:   # type: ignore[index]
            for space in SPACES:
                remote = client.space(space)
                s.counts[space] = remote.count()
                got: dict[str, str | None] = {}
                for mid in s.acked[space]:
                    try:
                        got[mid] = remote.get(mid).content
                    except MemspaceError as e:
                        got[mid] = f"<{e.code}>"
                s.read_back[space] = got
        s.first_left = survivors(s.first_tree, timeout=5.0)
        s.first_left_names = {pid: name(pid) for pid in s.first_left}
        s.second_tree = tree(s.second_pid)

        shutdown = subprocess.run(["supervisorctl", "-c", str(conf), "shutdown"], env=env,
                                  capture_output=True, check=False, timeout=120)
        s.shutdown_rc = shutdown.returncode
        s.supervisord_rc = s.proc.wait(120)
        s.second_left = survivors({**s.second_tree, **supervisord}, timeout=10.0)
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
            try:
                s.proc.wait(90)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(10)
        for procs in (s.first_tree, s.second_tree, supervisord):
            kill_all(procs)


def test_every_acknowledged_memory_survives_a_killed_serve(scenario):
    assert scenario.writer_error is None, scenario.writer_error
    assert scenario.second_pid != scenario.first_pid
    for space in SPACES:
        acked = scenario.acked[space]
        assert len(acked) >= 10
        assert scenario.read_back[space] == acked, f"space {space}"
        # one write (the one in flight at the kill) may have been stored without its reply
        assert len(acked) <= scenario.counts[space] <= len(acked) + 1, (space, scenario.counts[space], len(acked))


def test_endpoints_and_logs_land_where_the_conf_says(scenario):
    endpoints = scenario.endpoints()
    assert endpoints is not None and endpoints["pid"] == str(scenario.second_pid)
    out = (scenario.run_dir / "memspace.out.log").read_text()
    # each incarnation printed its endpoints once to the stdout log supervisord keeps
    assert out.count("zmq: tcp://127.0.0.1:") == 2
    assert f"zmq: {endpoints['zmq']}" in out
    err = (scenario.run_dir / "memspace.err.log").read_text()
    for space in SPACES:   # the workers' lines too, each naming its space
        assert f"space={space} memspace.worker" in err, space
    assert f"serve[{scenario.second_pid}]" in err
    assert not (scenario.data_root / "logs").exists()


def test_supervisorctl_shutdown_stops_the_whole_tree(scenario):
    assert scenario.shutdown_rc == 0
    assert scenario.supervisord_rc == 0
    assert len(scenario.second_tree) >= 4      # serve, fork server, gateways, workers
    assert scenario.second_left == set(), f"still running: {sorted(scenario.second_left)}"


def test_a_killed_serve_leaves_no_process_behind(scenario):
    assert len(scenario.first_tree) >= 4
    assert scenario.first_left == set(), f"still running after the kill: {scenario.first_left_names}"
