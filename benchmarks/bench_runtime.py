"""Runtime benchmark: what the multi-process design costs, measured side by side.

    python benchmarks/bench_runtime.py                # full run (~3-5 min on 2 cores)
    python benchmarks/bench_runtime.py --quick        # smoke run (small sizes, ~30 s)
    python benchmarks/bench_runtime.py --sections latency,spawn --out /tmp/r.json

Sections (see runtime_sections.py):

1. latency     router tax: one synchronous round trip at a time to (a) a bare
               pyzmq echo worker, (b) a bare Python ROUTER/ROUTER relay in front
               of an echo worker, (c) memspace ``count``, (d) memspace recall
               (k=10, similarity, 1,000 memories, d=384); p50/p99 and ratios.
2. throughput  pipelined requests/s over 1, 10, 100 spaces from separate client
               processes, memspace ``count`` and recall next to the bare relay
               with as many echo workers.
3. spawn       create_space + first request on new spaces; first request to a
               hibernated 10,000-memory space.
4. idle, many  USS and idle CPU of 100 live workers and of the router; then 500
               spaces activated with 16 activations in flight: time, answers,
               total memory, idle CPU; then all 500 activated at once (a burst):
               time to the last answer, answers, worker crashes.

Output: tables on stdout; JSON (``--out``, default
benchmarks/results/bench_runtime.json) with a flat ``metrics`` mapping whose
keys do not depend on the sizes, the goals with measured values, and the plan.
A real ``memspace serve`` runs under a temporary directory (kept with
``--keep``), with idle hibernation off and ``max_active_workers`` = 1000.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import runtime_raw as raw
from common import finish_server
from runtime_report import Report
from runtime_sections import QUICK, SECTIONS, Bench, Plan

from memspace.testing.server import ServerProcess

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_runtime.json"


def server_env(plan: Plan) -> dict[str, str]:
    return {
        "MEMSPACE_SPACES_DIMENSION": str(plan.dimension),
        "MEMSPACE_IDLE_HIBERNATE_S": "0",             # no hibernation in the middle of a measurement
        "MEMSPACE_MAX_ACTIVE_WORKERS": str(max(1000, plan.many_spaces + 200)),
        # activating hundreds of spaces at once on 2 cores takes longer than the 30 s defaults
        "MEMSPACE_REQUEST_TIMEOUT_S": "300",
        "MEMSPACE_START_TIMEOUT_S": "300",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output file")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (run in that order)")
    parser.add_argument("--clients", type=int, help="load processes for the throughput section")
    parser.add_argument("--window", type=int, help="outstanding requests for the throughput section")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for memspace serve (e.g. MEMSPACE_HEARTBEAT_S=5); repeatable")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args(argv)
    plan = dataclasses.replace(QUICK if args.quick else Plan())
    if args.clients:
        plan.clients = args.clients
    if args.window:
        plan.window = args.window
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    env = server_env(plan)
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("MEMSPACE_"):
            parser.error(f"--env takes MEMSPACE_KEY=VALUE, got {item!r}")
        env[key] = value
    report = Report(command=[sys.executable, *sys.argv],
                    plan={**dataclasses.asdict(plan), "quick": args.quick, "sections": chosen, "server_env": env})
    # a short path: the router's worker socket is ipc://<data_root>/run/workers.sock (<= 100 bytes)
    tmp = Path(tempfile.mkdtemp(prefix="msbench-", dir="/tmp"))
    started = time.monotonic()
    server = ServerProcess(tmp / "data", env=env, start_timeout=120)
    raw_procs = []
    ctx: zmq.Context = zmq.Context()
    ok = False
    try:
        direct, direct_endpoint = raw.launch("direct", expect="endpoint")
        raw_procs.append(direct)
        relay_backend = f"ipc://{tmp}/relay-workers.sock"
        relay, relay_endpoint = raw.launch("relay", "--backend", relay_backend, expect="endpoint")
        raw_procs.append(relay)
        server.start()
        bench = Bench(plan, report, server, server.client(timeout=300, retries=0), relay_endpoint,
                      relay_backend, direct_endpoint, ctx, np.random.default_rng(12345),
                      relay_pid=relay.pid, direct_pid=direct.pid)
        print(f"memspace serve at {server.endpoints['zmq']} (data {tmp}); sections: {', '.join(chosen)}",
              flush=True)
        try:
            for name in chosen:
                t0 = time.monotonic()
                SECTIONS[name](bench)
                report.metrics[f"elapsed.{name}_s"] = time.monotonic() - t0
        finally:
            raw.stop(bench.raw_procs)
            bench.client.close()
        report.metrics["elapsed.total_s"] = time.monotonic() - started
        if report.goals:
            report.goals_table()
        report.save(args.out)
        print(f"\nwrote {args.out}", flush=True)
        ok = True
    finally:
        raw.stop(raw_procs)
        ctx.destroy(0)
        finish_server(server, tmp, ok, args.keep, stop_timeout=600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
