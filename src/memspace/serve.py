"""``memspace serve``: the whole process tree on one machine.

The core process runs the router and the supervisor (:mod:`memspace.supervisor.arbiter`);
the gateways (HTTP, gRPC) run in their own processes and talk to the router as
zmq clients. Endpoints are printed one per line (``zmq: tcp://...``) and written
to ``<data_root>/endpoints.json``. SIGTERM or Ctrl-C drains every worker and
exits 0.
"""

from __future__ import annotations

import sys
from typing import Any

from memspace import config as config_mod
from memspace.logs import configure


def run(cfg: config_mod.Config) -> int:
    from memspace.supervisor.arbiter import Arbiter, write_endpoints

    configure(cfg["log.format"], cfg["log.level"], role="serve")
    try:
        import setproctitle

        setproctitle.setproctitle("memspace: serve")
    except ImportError:  # pragma: no cover
        pass
    arbiter = Arbiter(cfg)
    endpoints = arbiter.start()
    write_endpoints(arbiter.data_root, endpoints)
    _announce(endpoints)
    return arbiter.run()


def _announce(endpoints: dict[str, Any]) -> None:
    for key in ("http", "grpc", "zmq"):
        if key in endpoints:
            print(f"{key}: {endpoints[key]}", flush=True)
    sys.stdout.flush()
