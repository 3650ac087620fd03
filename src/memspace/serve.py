"""``memspace serve``: the whole process tree on one machine.

    memspace: serve            router + supervisor (memspace.supervisor.arbiter)
    ├── fork server            pre-loaded; parent of every worker
    │   └── memspace: worker <space>   one per active memory space
    ├── memspace: http         REST, SSE, OpenAPI, /metrics  (a zmq client of the router)
    └── memspace: grpc         Spaces and Memories services   (a zmq client of the router)

Gateways run in their own processes (started fresh with the "spawn" method, so
they inherit no sockets) and are restarted if they die. Endpoints are printed
one per line (``http: http://127.0.0.1:PORT``) and written to
``<data_root>/endpoints.json``. SIGTERM or Ctrl-C stops the gateways, drains
every worker and exits 0.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.connection
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memspace import config as config_mod
from memspace.logs import configure, log_file

log = logging.getLogger("memspace.serve")

#: name -> (module, function, setting holding its bind address)
GATEWAYS: dict[str, tuple[str, str, str]] = {
    "http": ("memspace.api.http", "serve_gateway", "http.bind"),
    "grpc": ("memspace.api.grpc_server", "serve_gateway", "grpc.bind"),
}
#: A bind address that turns a gateway off (e.g. ``--grpc off``).
OFF = ("off", "none", "")
GATEWAY_START_TIMEOUT_S = 60.0


def gateway_main(name: str, cfg_values: dict[str, Any], router_endpoint: str, events_endpoint: str, bind: str,
                 conn: multiprocessing.connection.Connection) -> None:
    """Entry of a gateway process: run ``GATEWAYS[name]`` and report its URL through ``conn``."""
    module, func, _ = GATEWAYS[name]
    cfg = config_mod.load(None, env={}, overrides=cfg_values)
    configure(cfg["log.format"], cfg["log.level"], role=name, file=log_file(cfg))
    try:
        import setproctitle

        setproctitle.setproctitle(f"memspace: {name}")
    except ImportError:  # pragma: no cover
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches `memspace serve`, which stops us
    _stop_with_parent()

    def report(url: str) -> None:
        conn.send(url)
        conn.close()

    serve_fn: Callable[..., None] = getattr(importlib.import_module(module), func)
    serve_fn(cfg, router_endpoint, events_endpoint, bind, report)


def _stop_with_parent() -> None:
    """Get SIGTERM (a graceful stop) if ``memspace serve`` dies, even by SIGKILL: a gateway left
    behind would keep its port and block the next start."""
    import ctypes
    import os

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() == 1:   # the parent died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass(eq=False)
class Gateway:
    name: str
    bind: str
    process: Any = None
    url: str | None = None
    starts: int = 0


class Gateways:
    """Start, watch and stop the gateway processes. A gateway that dies is started again on the
    same address (its chosen port is kept, so endpoints.json stays true), at most 5 times."""

    MAX_STARTS = 6

    def __init__(self, cfg: config_mod.Config, router_endpoint: str, events_endpoint: str) -> None:
        self.cfg = cfg
        self.router_endpoint = router_endpoint
        self.events_endpoint = events_endpoint
        self.ctx = multiprocessing.get_context("spawn")
        self.items = [Gateway(name, cfg[setting]) for name, (_, _, setting) in GATEWAYS.items()
                      if str(cfg[setting]).lower() not in OFF]

    def start_all(self) -> dict[str, str]:
        started = [(gw, self._spawn(gw)) for gw in self.items]
        for gw, conn in started:
            self._await_url(gw, conn)
        return {gw.name: gw.url for gw in self.items if gw.url}

    def _spawn(self, gw: Gateway) -> multiprocessing.connection.Connection:
        parent, child = self.ctx.Pipe(duplex=False)
        gw.process = self.ctx.Process(
            target=gateway_main, name=f"memspace-{gw.name}",
            args=(gw.name, self.cfg.as_dict(), self.router_endpoint, self.events_endpoint, gw.bind, child))
        gw.process.start()
        gw.starts += 1
        child.close()
        return parent

    def _await_url(self, gw: Gateway, conn: multiprocessing.connection.Connection) -> None:
        if not conn.poll(GATEWAY_START_TIMEOUT_S):
            raise RuntimeError(f"the {gw.name} gateway did not start within {GATEWAY_START_TIMEOUT_S:g} s")
        try:
            gw.url = conn.recv()
        except EOFError:
            raise RuntimeError(f"the {gw.name} gateway exited during start-up (code {gw.process.exitcode})") \
                from None
        finally:
            conn.close()
        # restarts bind the same port, so the URL printed at start stays valid
        gw.bind = gw.url.split("://", 1)[-1].rstrip("/")

    def sentinels(self) -> dict[int, Gateway]:
        return {gw.process.sentinel: gw for gw in self.items if gw.process is not None}

    def exited(self, gw: Gateway, stopping: bool) -> None:
        code = gw.process.exitcode
        gw.process = None
        if stopping:
            return
        if gw.starts >= self.MAX_STARTS:
            log.error("the %s gateway exited (code %s) %d times; not restarting it", gw.name, code, gw.starts)
            return
        log.error("the %s gateway exited (code %s); starting it again", gw.name, code)
        try:
            self._await_url(gw, self._spawn(gw))
        except RuntimeError as e:
            log.error("%s", e)

    def stop_all(self, timeout: float = 10.0) -> None:
        for gw in self.items:
            if gw.process is not None and gw.process.is_alive():
                gw.process.terminate()
        for gw in self.items:
            if gw.process is not None:
                gw.process.join(timeout)
                if gw.process.is_alive():
                    gw.process.kill()
                    gw.process.join(5)
                gw.process = None


def run(cfg: config_mod.Config) -> int:
    from memspace.supervisor.arbiter import Arbiter, write_endpoints

    configure(cfg["log.format"], cfg["log.level"], role="serve", file=log_file(cfg))
    try:
        import setproctitle

        setproctitle.setproctitle("memspace: serve")
    except ImportError:  # pragma: no cover
        pass
    arbiter = Arbiter(cfg)
    endpoints = arbiter.start()
    gateways = Gateways(cfg, arbiter.router.local_endpoint, arbiter.events_endpoint)
    try:
        endpoints.update(gateways.start_all())
    except RuntimeError as e:
        log.error("%s", e)
        gateways.stop_all()
        arbiter.close()
        return 1
    arbiter.gateways = gateways
    write_endpoints(arbiter.data_root, endpoints)
    _announce(endpoints)
    return arbiter.run()


def _announce(endpoints: dict[str, Any]) -> None:
    for key in ("http", "grpc", "zmq"):
        if key in endpoints:
            print(f"{key}: {endpoints[key]}", flush=True)
    sys.stdout.flush()
