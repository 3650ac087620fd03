"""Gateway benchmark: what the HTTP and gRPC gateways add over the native zmq path, side by side.

    python benchmarks/bench_gateways.py                 # full run (~1.5 min on 2 cores; longer if a path is slow)
    python benchmarks/bench_gateways.py --quick         # smoke run (small sizes, ~20 s)
    python benchmarks/bench_gateways.py --profile       # also profile both gateways with py-spy
    python benchmarks/bench_gateways.py --out /tmp/gw.json --clients 2 --threads 4
    python benchmarks/bench_gateways.py --server-src /tmp/patched/src   # serve from another source tree

One request shape throughout: recall, k=10, ``mode: similarity``, a query
embedding, on spaces of 1,000 clustered memories (d=384), through

* ``native``  :func:`memspace.client.connect` on the zmq frontend (client -> router -> worker);
* ``http``    ``POST /v1/spaces/{space}/recall`` with one keep-alive ``httpx.Client``
              (client -> HTTP gateway -> router -> worker); bodies are encoded and
              decoded with orjson on the client, so the client's JSON library is not measured;
* ``grpc``    ``Memories.Recall`` on a synchronous channel stub (client -> gRPC gateway -> router -> worker);
* ``http_lean`` (latency only) the same HTTP request from ``http.client`` (one send per request,
              much less client CPU than httpx): separates the gateway's share from the client's.

Every call checks that it got k hits. Sections:

0. idle        CPU of each process (gateways, router, a worker) with no request sent.
1. latency     one request at a time from this process, rounds of a batch per transport
               with the order rotating per round; p50/p99, the gateway's added p50
               (``http - native``, ``grpc - native``; also the median of per-round
               differences) and the CPU each process spends per request (gateway,
               router, worker, client; per-thread /proc schedstat, see :func:`cpu_used_ns`).
2. throughput  closed-loop load, ``--clients`` processes x ``--threads`` threads, each
               thread one request in flight on its own connection: requests/s for one
               space and for ten, trials interleaved per round; CPU per request per role.
3. profile     (``--profile``, or automatically when a goal is missed in a full run)
               ``py-spy record --gil -f raw`` on each gateway process while this process
               sends requests one at a time: share of samples per request stage
               (inclusive), self time by library and by leaf function.

CPU per request is the CPU a process used during the measurement divided by the
requests: it includes whatever that process did meanwhile (heartbeats, timers), so
it is only comparable between transports of the same run (section 0 shows how small
that background is).

Goals (from the issue): HTTP adds <= 1 ms at p50 over the native path; gRPC adds less
(checked as <= 1 ms, and less than HTTP adds).

Output: tables on stdout; JSON (``--out``, default benchmarks/results/bench_gateways.json)
with a flat ``metrics`` mapping (keys do not depend on the sizes), goals, tables, and the
profiles. A real ``memspace serve`` (HTTP and gRPC on) runs in a temporary directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import multiprocessing
import multiprocessing.connection
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import clustered_vectors, finish_server, machine
from runtime_report import Report, summary_us

from memspace.api import pb
from memspace.client import Client, connect
from memspace.testing.server import ServerProcess

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_gateways.json"
TRANSPORTS = ("native", "http", "grpc")
LATENCY_TRANSPORTS = (*TRANSPORTS, "http_lean")
GATEWAYS = ("http", "grpc")
GATEWAY_OF = {"http": "http", "grpc": "grpc", "http_lean": "http"}
K = 10
REPLY_TIMEOUT_S = 60.0
SPACE_FMT = "gw{:02d}"


@dataclasses.dataclass
class Plan:
    memories: int = 1000
    dimension: int = 384
    spaces: int = 10                  # the "many" throughput case; the "one" case uses the first
    queries: int = 256
    warmup: int = 100
    latency_rounds: int = 30
    latency_batch: int = 100
    clients: int = 2                  # load processes
    threads: int = 4                  # per load process: clients * threads requests in flight
    trial_s: float = 2.0
    trial_rounds: int = 3
    profile_s: float = 10.0
    idle_s: float = 3.0


QUICK = Plan(memories=200, queries=32, warmup=10, latency_rounds=3, latency_batch=20, trial_s=0.3,
             trial_rounds=1, profile_s=2.0, idle_s=0.5)


# -- the three ways to recall ----------------------------------------------------------------


class Callers:
    """One connection per transport (for one thread); each method recalls and returns the hit count."""

    def __init__(self, endpoints: dict[str, str], spaces: list[str]) -> None:
        self.client: Client = connect(endpoints["zmq"], timeout=REPLY_TIMEOUT_S, retries=0)
        self.handles = {s: self.client.space(s) for s in spaces}
        self.http_client = httpx.Client(base_url=endpoints["http"], timeout=REPLY_TIMEOUT_S)
        address = httpx.URL(endpoints["http"])
        self.lean = http.client.HTTPConnection(address.host, address.port, timeout=REPLY_TIMEOUT_S)
        self.urls = {s: f"/v1/spaces/{s}/recall" for s in spaces}
        # a connection of its own (gRPC shares subchannels between equal channels by default)
        self.channel = grpc.insecure_channel(endpoints["grpc"], options=[("grpc.use_local_subchannel_pool", 1)])
        self.stub = pb.stub(self.channel, "Memories")

    def native(self, space: str, q: np.ndarray) -> int:
        return len(self.handles[space].recall(embedding=q, k=K, mode="similarity"))

    def http(self, space: str, q: np.ndarray) -> int:
        body = orjson.dumps({"embedding": q, "k": K, "mode": "similarity"}, option=orjson.OPT_SERIALIZE_NUMPY)
        r = self.http_client.post(self.urls[space], content=body, headers={"content-type": "application/json"})
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
        return len(orjson.loads(r.content)["results"])

    def http_lean(self, space: str, q: np.ndarray) -> int:
        body = orjson.dumps({"embedding": q, "k": K, "mode": "similarity"}, option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            self.lean.request("POST", self.urls[space], body=body, headers={"content-type": "application/json"})
            r = self.lean.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # the server closed the idle keep-alive connection (as httpx does, reconnect once)
            self.lean.close()
            self.lean.request("POST", self.urls[space], body=body, headers={"content-type": "application/json"})
            r = self.lean.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:300]!r}")
        return len(orjson.loads(data)["results"])

    def grpc(self, space: str, q: np.ndarray) -> int:
        request = pb.pb2.RecallRequest(memory_space_id=space, embedding=q.tolist(), k=K, mode="similarity")
        return len(self.stub.Recall(request, timeout=REPLY_TIMEOUT_S).hits)

    def get(self, transport: str) -> Callable[[str, np.ndarray], int]:
        fn: Callable[[str, np.ndarray], int] = getattr(self, transport)
        return fn

    def close(self) -> None:
        self.client.close()
        self.http_client.close()
        self.lean.close()
        self.channel.close()


def queries(plan: Plan, n: int) -> np.ndarray:
    """Query vectors near the data of space 0 (same cluster centres, other draws)."""
    return clustered_vectors(n, plan.dimension, seed=0, sample_seed=1)


# -- load processes ----------------------------------------------------------------------------


def _load_main(conn: multiprocessing.connection.Connection, endpoints: dict[str, str], spaces: list[str],
               threads: int, qs: np.ndarray) -> None:
    """A load process: ``threads`` threads, each with its own connections; one trial per command."""
    callers = [Callers(endpoints, spaces) for _ in range(threads)]
    try:
        for c in callers:                       # connect everything before the first trial
            for transport in TRANSPORTS:
                for space in spaces:
                    c.get(transport)(space, qs[0])
        conn.send(("ready", None))
        while True:
            cmd = conn.recv()
            if cmd[0] == "stop":
                return
            _, transport, chosen, duration, offset = cmd
            try:
                conn.send(("ok", _trial(callers, transport, chosen, duration, offset, qs)))
            except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
                conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        for c in callers:
            c.close()


def _trial(callers: list[Callers], transport: str, spaces: list[str], duration: float, offset: int,
           qs: np.ndarray) -> tuple[int, int, float]:
    """Every thread sends one request at a time for ``duration`` s; (replies, errors, CPU s of this process)."""
    done = [0] * len(callers)
    errors = [0] * len(callers)
    barrier = threading.Barrier(len(callers))

    def run(i: int) -> None:
        fn = callers[i].get(transport)
        n, k = len(spaces), offset + i
        barrier.wait()
        end = time.perf_counter() + duration
        while True:
            try:
                ok = fn(spaces[k % n], qs[k % len(qs)]) == K
            except Exception:  # noqa: BLE001 - counted; a trial with errors is reported as such
                ok = False
            if time.perf_counter() >= end:
                break
            done[i] += ok
            errors[i] += not ok
            k += 1

    cpu0 = time.process_time()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(callers))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(duration + REPLY_TIMEOUT_S + 10)
    return sum(done), sum(errors), time.process_time() - cpu0


class LoadPool:
    """``processes`` spawned load processes (no inherited sockets); trials run on all at once."""

    def __init__(self, processes: int, threads: int, endpoints: dict[str, str], spaces: list[str],
                 qs: np.ndarray) -> None:
        mp = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        self.threads = threads
        for _ in range(processes):
            parent, child = mp.Pipe()
            proc = mp.Process(target=_load_main, args=(child, endpoints, spaces, threads, qs), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            self._answer(conn, 120.0)

    def _answer(self, conn: multiprocessing.connection.Connection, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise TimeoutError(f"a load process did not answer within {timeout:g} s")
        status, value = conn.recv()
        if status == "error":
            raise RuntimeError(f"load process failed: {value}")
        return value

    def run(self, transport: str, spaces: list[str], duration: float) -> tuple[int, int, float]:
        """One trial on every process; (replies, errors, client CPU seconds) summed."""
        for i, conn in enumerate(self.conns):
            conn.send(("run", transport, spaces, duration, i * self.threads))
        results = [self._answer(conn, duration + REPLY_TIMEOUT_S + 30) for conn in self.conns]
        return sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results)

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


# -- the server and its processes --------------------------------------------------------------


@dataclasses.dataclass
class Bench:
    plan: Plan
    report: Report
    server: ServerProcess
    admin: Client
    spaces: list[str]
    qs: np.ndarray
    gateway_pids: dict[str, int] = dataclasses.field(default_factory=dict)
    worker_pids: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def router_pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def roles(self, transport: str, spaces: list[str]) -> dict[str, list[int]]:
        """The processes a request of ``transport`` to ``spaces`` runs through (the client is added by callers)."""
        roles = {"router": [self.router_pid], "workers": [self.worker_pids[s] for s in spaces]}
        if transport in GATEWAY_OF:
            roles["gateway"] = [self.gateway_pids[GATEWAY_OF[transport]]]
        return roles


def fill(b: Bench) -> None:
    """Create the spaces, each with ``plan.memories`` clustered memories (centres differ per space)."""
    p = b.plan
    for i, space in enumerate(b.spaces):
        b.admin.create_space(space, dimension=p.dimension)
        handle = b.admin.space(space)
        vectors = clustered_vectors(p.memories, p.dimension, seed=i)
        for start in range(0, p.memories, 500):
            handle.remember_batch([{"embedding": vectors[j], "content": f"memory {j} of {space}"}
                                   for j in range(start, min(p.memories, start + 500))])
        if handle.count() != p.memories:
            raise RuntimeError(f"space {space}: {handle.count()} memories after loading {p.memories}")
    b.worker_pids = {s["id"]: s["pid"] for s in b.admin.status()["spaces"] if s.get("pid")}
    missing = [s for s in b.spaces if s not in b.worker_pids]
    if missing:
        raise RuntimeError(f"no worker pid for {missing}")


def find_gateways(server: ServerProcess) -> dict[str, int]:
    """Gateway pids by process title (``memspace: http``, ``memspace: grpc``)."""
    assert server.proc is not None
    found = {}
    for child in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            title = " ".join(child.cmdline())
        except psutil.Error:
            continue
        for name in GATEWAYS:
            if title.startswith(f"memspace: {name}"):
                found[name] = child.pid
    missing = [g for g in GATEWAYS if g not in found]
    if missing:
        raise RuntimeError(f"gateway process(es) {missing} not found under pid {server.proc.pid}")
    return found


Reading = tuple[dict[str, int], float]


def cpu_reading(pid: int) -> Reading:
    """Nanoseconds on CPU per live thread (/proc schedstat), and the process's user+system
    seconds (clock ticks, but exited threads included). A vanished process reads as nothing."""
    threads: dict[str, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        t = psutil.Process(pid).cpu_times()
    except (OSError, psutil.Error):
        return threads, 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                threads[tid] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue        # the thread exited meanwhile
    return threads, t.user + t.system


def cpu_used_ns(before: Reading, after: Reading) -> int:
    """CPU used between two readings: the precise per-thread sum, unless a thread exited in
    between (its time would be lost; anyio's and grpc's pools end idle threads) or threads
    came and went unseen, in which case the coarse process total says more."""
    (tb, sb), (ta, sa) = before, after
    precise = sum(ns - tb.get(tid, 0) for tid, ns in ta.items())
    coarse = int((sa - sb) * 1e9)
    if not tb.keys() <= ta.keys() or coarse - precise > 30_000_000:
        return coarse
    return precise


def cpu_of(groups: dict[str, list[int]]) -> dict[str, list[Reading]]:
    return {role: [cpu_reading(pid) for pid in pids] for role, pids in groups.items()}


def cpu_since(before: dict[str, list[Reading]], groups: dict[str, list[int]]) -> dict[str, int]:
    """Nanoseconds each role (its processes together) used since ``before = cpu_of(groups)``."""
    after = cpu_of(groups)
    return {role: sum(cpu_used_ns(b, a) for b, a in zip(before[role], after[role])) for role in groups}


# -- 0. idle -----------------------------------------------------------------------------------


def idle(b: Bench) -> None:
    """CPU of each process while no request is sent: the background included in the CPU per
    request of the later sections (heartbeats, timers, pollers)."""
    groups = {"http_gateway": [b.gateway_pids["http"]], "grpc_gateway": [b.gateway_pids["grpc"]],
              "router": [b.router_pid], "worker": [b.worker_pids[b.spaces[0]]]}
    before, t0 = cpu_of(groups), time.monotonic()
    time.sleep(b.plan.idle_s)
    used, wall = cpu_since(before, groups), time.monotonic() - t0
    b.report.put("idle", {f"{role}_cpu_pct": 100.0 * ns / 1e9 / wall for role, ns in used.items()})
    b.report.table(f"0. idle CPU over {wall:.1f} s (% of one core)", ["process", "%"],
                   [[role, b.report.metrics[f"idle.{role}_cpu_pct"]] for role in groups])


# -- 1. latency --------------------------------------------------------------------------------


def latency(b: Bench) -> None:
    p = b.plan
    space = b.spaces[0]
    callers = Callers(b.server.endpoints, [space])
    names = LATENCY_TRANSPORTS
    calls = {t: callers.get(t) for t in names}
    for t, fn in calls.items():
        for i in range(p.warmup):
            if fn(space, b.qs[i % len(b.qs)]) != K:
                raise RuntimeError(f"{t}: recall did not return {K} hits")
    me = os.getpid()
    samples: dict[str, list[int]] = {t: [] for t in names}
    per_round: dict[str, list[float]] = {t: [] for t in names}
    cpu: dict[str, Counter[str]] = {t: Counter() for t in names}
    clock = time.perf_counter_ns
    q = 0
    for r in range(p.latency_rounds):
        for t in names[r % len(names):] + names[:r % len(names)]:
            fn = calls[t]
            groups = {**b.roles(t, [space]), "client": [me]}
            before = cpu_of(groups)
            got = []
            for _ in range(p.latency_batch):
                vec = b.qs[q % len(b.qs)]
                q += 1
                t0 = clock()
                hits = fn(space, vec)
                got.append(clock() - t0)
                if hits != K:
                    raise RuntimeError(f"{t}: recall returned {hits} hits, not {K}")
            cpu[t].update(cpu_since(before, groups))
            samples[t].extend(got)
            per_round[t].append(statistics.median(got))
    callers.close()

    rows = []
    m = b.report.metrics
    for t in names:
        s = summary_us(samples[t])
        n = len(samples[t])
        values = {"p50_ms": s["p50_us"] / 1e3, "p99_ms": s["p99_us"] / 1e3, "mean_ms": s["mean_us"] / 1e3}
        values.update({f"cpu_{role}_us_per_req": used / n / 1e3 for role, used in cpu[t].items()})
        b.report.put(f"latency.{t}", values)
        rows.append([t, values["p50_ms"], values["p99_ms"], values["mean_ms"],
                     values.get("cpu_gateway_us_per_req", ""), values["cpu_router_us_per_req"],
                     values["cpu_workers_us_per_req"], values["cpu_client_us_per_req"], n])
    for g in GATEWAY_OF:
        diff = {
            "p50_ms": m[f"latency.{g}.p50_ms"] - m["latency.native.p50_ms"],
            "p99_ms": m[f"latency.{g}.p99_ms"] - m["latency.native.p99_ms"],
            # median over rounds of the per-round difference: robust to a noisy round
            "paired_p50_ms": statistics.median(a - c for a, c in zip(per_round[g], per_round["native"])) / 1e6,
        }
        b.report.put(f"latency.{g}_minus_native", diff)
        rows.append([f"{g} - native", diff["p50_ms"], diff["p99_ms"], diff["paired_p50_ms"], "", "", "", "", ""])
    m["latency.grpc_vs_http_added"] = m["latency.grpc_minus_native.p50_ms"] / m["latency.http_minus_native.p50_ms"]
    b.report.table(f"1. recall k={K}, one request at a time (ms; CPU us per request, all threads; "
                   f"difference rows: p50, p99, paired p50)",
                   ["transport", "p50", "p99", "mean", "gateway CPU", "router CPU", "worker CPU",
                    "client CPU", "n"], rows)
    b.report.goal("HTTP adds <= 1 ms at p50 over native", "latency.http_minus_native.p50_ms", "<=", 1.0)
    b.report.goal("gRPC adds <= 1 ms at p50 over native", "latency.grpc_minus_native.p50_ms", "<=", 1.0)
    b.report.goal("gRPC adds less than HTTP (added p50 ratio)", "latency.grpc_vs_http_added", "<", 1.0)


# -- 2. throughput -----------------------------------------------------------------------------


def throughput(b: Bench) -> None:
    p = b.plan
    cases = {"one": b.spaces[:1], "many": b.spaces}
    rps: dict[tuple[str, str], list[float]] = {}
    per_req: dict[tuple[str, str], Counter[str]] = {}
    replies: Counter[tuple[str, str]] = Counter()
    errors = 0
    pool = LoadPool(p.clients, p.threads, b.server.endpoints, b.spaces, b.qs)
    try:
        for case, spaces in cases.items():              # warm-up: one short trial each
            for t in TRANSPORTS:
                pool.run(t, spaces, min(0.3, p.trial_s))
        for r in range(p.trial_rounds):
            for case, spaces in cases.items():
                for t in TRANSPORTS[r % 3:] + TRANSPORTS[:r % 3]:
                    groups = b.roles(t, spaces)
                    before = cpu_of(groups)
                    done, errs, client_s = pool.run(t, spaces, p.trial_s)
                    used = cpu_since(before, groups)
                    # the load processes' own count: schedstat sums only live threads, and a
                    # trial's threads have exited by now
                    used["client"] = int(client_s * 1e9)
                    rps.setdefault((case, t), []).append(done / p.trial_s)
                    per_req.setdefault((case, t), Counter()).update(used)
                    replies[(case, t)] += done
                    errors += errs
    finally:
        pool.close()

    m = b.report.metrics
    rows = []
    for case, spaces in cases.items():
        for t in TRANSPORTS:
            n = max(1, replies[(case, t)])
            values = {"rps": statistics.median(rps[(case, t)])}
            values.update({f"cpu_{role}_us_per_req": used / n / 1e3 for role, used in per_req[(case, t)].items()})
            b.report.put(f"throughput.{case}.{t}", values)
        native = m[f"throughput.{case}.native.rps"]
        for g in GATEWAYS:
            m[f"throughput.{case}.{g}_vs_native"] = m[f"throughput.{case}.{g}.rps"] / native
        for t in TRANSPORTS:
            pre = f"throughput.{case}.{t}"
            rows.append([len(spaces), t, m[f"{pre}.rps"], m.get(f"throughput.{case}.{t}_vs_native", 1.0),
                         m.get(f"{pre}.cpu_gateway_us_per_req", ""), m[f"{pre}.cpu_router_us_per_req"],
                         m[f"{pre}.cpu_workers_us_per_req"], m[f"{pre}.cpu_client_us_per_req"]])
    m["throughput.errors"] = float(errors)
    b.report.table(f"2. recall requests/s, {p.clients} processes x {p.threads} threads, one request in flight "
                   f"each (median of {p.trial_rounds} x {p.trial_s:g} s; CPU us per request)",
                   ["spaces", "transport", "req/s", "vs native", "gateway CPU", "router CPU", "workers CPU",
                    "client CPU"], rows)


# -- 3. profile --------------------------------------------------------------------------------

#: Libraries by a path fragment of the leaf frame's file; the first match wins.
AREAS = (("pydantic", "pydantic"), ("fastapi telemetry", "fastapi/telemetry"), ("opentelemetry", "opentelemetry"),
         ("fastapi", "fastapi"), ("starlette", "starlette"), ("anyio", "anyio"),
         ("uvicorn", "uvicorn"), ("h11", "h11"), ("zmq", "zmq"), ("grpc", "grpc"), ("protobuf", "google/protobuf"),
         ("memspace", "memspace/"), ("asyncio", "asyncio/"), ("threading", "threading.py"), ("queue", "queue.py"),
         ("json", "json/"), ("uuid", "uuid.py"), ("typing", "typing"), ("enum", "enum.py"))
#: Stages of a request: a sample counts for a stage when any frame of its stack contains the fragment.
STAGES = (("ASGI app (FastAPI/Starlette, all of it)", "FastAPI.__call__"),
          ("route handler body (recall)", "recall (memspace/api/http_memories"),
          ("FastAPI dependencies + body parsing/validation", "solve_dependencies"),
          ("sync dependencies run in a worker thread", "run_in_threadpool"),
          ("worker threads (anyio)", "WorkerThread.run"),
          ("request body: read + JSON decode (Request.json)", "Request.json"),
          ("JSON decode of the request body (stdlib json)", "json/decoder.py"),
          ("pydantic validation", "pydantic/"),
          ("response rendering (orjson)", "JSON.render"),
          ("HTTP parsing/writing (h11)", "h11/"),
          ("FastAPI native telemetry checks", "NativeTelemetry.enabled"),
          ("gRPC servicer (Recall)", "MemoriesService.Recall"),
          ("protobuf <-> dict conversion", "grpc_convert"),
          ("router round trip (RouterClient.call)", "RouterClient.call"),
          ("zmq send (wakes zmq's I/O thread)", "Socket.send ("),
          ("zmq reply reader", "RouterClient._read"),
          ("wire encode/decode", "memspace/wire/"),
          ("asyncio event loop itself", "_run_once (asyncio/base_events.py"))
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def summarise_profile(raw: str, top: int = 15) -> dict[str, Any]:
    """Self time by leaf function and by library, and time per request stage (inclusive),
    as % of all samples, from py-spy's raw (collapsed: ``frame;frame;... count``) output."""
    leaf: Counter[str] = Counter()
    area: Counter[str] = Counter()
    stage: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf[_short(frames[-1])] += n
        m = _FRAME.match(frames[-1])
        path = m.group("file") if m else frames[-1]
        area[next((name for name, frag in AREAS if frag in path), "other")] += n
        for label, frag in STAGES:
            if frag in stack:
                stage[label] += n
    if not total:
        return {"samples": 0}

    def share(c: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, round(100.0 * v / total, 1)) for name, v in c.most_common(k)]

    return {"samples": total, "self_by_library_pct": share(area, len(AREAS) + 1),
            "self_by_function_pct": share(leaf, top), "stages_pct": share(stage, len(STAGES))}


def _short(frame: str) -> str:
    """``fn (/long/path/site-packages/pkg/mod.py:12)`` -> ``fn (pkg/mod.py:12)``."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    line = re.search(r"(:\d+)\)$", frame)
    return f"{m.group('fn')} ({path}{line.group(1) if line else ''})"


def profile(b: Bench, out: Path) -> dict[str, Any]:
    """``py-spy record --gil`` on each gateway (samples only while it runs Python code) while this
    process sends recalls through it one at a time. Raw profiles go next to ``out``
    (``<stem>.<gateway>-pyspy.txt``), summaries into the report. A py-spy failure is a note."""
    p = b.plan
    space = b.spaces[0]
    callers = Callers(b.server.endpoints, [space])
    found: dict[str, Any] = {}
    try:
        for g in GATEWAYS:
            fn = callers.get(g)
            raw = out.with_name(f"{out.stem}.{g}-pyspy.txt")
            raw.parent.mkdir(parents=True, exist_ok=True)
            cmd = ["py-spy", "record", "-p", str(b.gateway_pids[g]), "-f", "raw", "-o", str(raw),
                   "-d", str(max(1, round(p.profile_s))), "-r", "1000", "--gil", "--nonblocking"]
            spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            gw = {"gateway": [b.gateway_pids[g]]}
            cpu0, t0, n = cpu_of(gw), time.monotonic(), 0
            while spy.poll() is None and time.monotonic() < t0 + p.profile_s + 60:
                fn(space, b.qs[n % len(b.qs)])
                n += 1
            cpu, wall = cpu_since(cpu0, gw)["gateway"], time.monotonic() - t0
            try:
                _, err = spy.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, err = spy.communicate()
            if spy.returncode != 0 or not raw.exists():
                b.report.note(f"py-spy on the {g} gateway failed ({spy.returncode}): {err.decode()[-300:]}")
                continue
            summary = summarise_profile(raw.read_text())
            summary.update({"requests": n, "seconds": wall, "gateway_cpu_us_per_req": cpu / max(1, n) / 1e3,
                            "raw": str(raw), "command": " ".join(cmd)})
            found[g] = summary
            head = (f"3. {g} gateway profile: {summary['samples']} samples holding the GIL over {wall:.1f} s, "
                    f"{n} sequential requests, {summary['gateway_cpu_us_per_req']:.0f} us CPU per request; "
                    f"% of samples")
            b.report.table(f"{head}: by stage (inclusive)", ["stage", "%"],
                           [list(x) for x in summary.get("stages_pct", [])])
            b.report.table(f"{head}: self time by library", ["library", "%"],
                           [list(x) for x in summary.get("self_by_library_pct", [])])
            b.report.table(f"{head}: self time by function", ["function", "%"],
                           [list(x) for x in summary.get("self_by_function_pct", [])])
    finally:
        callers.close()
    return found


# -- the run -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output file")
    parser.add_argument("--clients", type=int, help="load processes for the throughput section")
    parser.add_argument("--threads", type=int, help="threads per load process (one request in flight each)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                        help="profile the gateways with py-spy (default: in a full run, when a goal is missed)")
    parser.add_argument("--server-src", type=Path,
                        help="run memspace serve from this source tree (the directory holding memspace/), "
                             "e.g. a patched copy; the clients use the installed tree")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args(argv)
    plan = dataclasses.replace(QUICK if args.quick else Plan())
    if args.clients:
        plan.clients = args.clients
    if args.threads:
        plan.threads = args.threads
    env = {"MEMSPACE_SPACES_DIMENSION": str(plan.dimension), "MEMSPACE_IDLE_HIBERNATE_S": "0"}
    if args.server_src:
        if not (args.server_src / "memspace" / "__init__.py").is_file():
            parser.error(f"--server-src {args.server_src}: no memspace/__init__.py there")
        old = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = str(args.server_src.resolve()) + (os.pathsep + old if old else "")
    report = Report(command=[sys.executable, *sys.argv],
                    plan={**dataclasses.asdict(plan), "quick": args.quick, "server_env": env})
    # a short path: the router's worker socket is ipc://<data_root>/run/workers.sock (<= 100 bytes)
    tmp = Path(tempfile.mkdtemp(prefix="msgw-", dir="/tmp"))
    started = time.monotonic()
    server = ServerProcess(tmp / "data", http=True, grpc=True, env=env, start_timeout=120)
    ok = False
    profiles: dict[str, Any] = {}
    try:
        server.start()
        admin = server.client(timeout=300, retries=0)
        spaces = [SPACE_FMT.format(i) for i in range(plan.spaces)]
        b = Bench(plan, report, server, admin, spaces, queries(plan, plan.queries), find_gateways(server))
        print(f"memspace serve: {server.endpoints} (data {tmp})", flush=True)
        for name, section in (("fill", fill), ("idle", idle), ("latency", latency),
                              ("throughput", throughput)):
            t0 = time.monotonic()
            section(b)
            report.metrics[f"elapsed.{name}_s"] = time.monotonic() - t0
        report.goals_table()
        missed = [g.name for g in report.goals if not g.met]
        if args.profile or (args.profile is None and missed and not args.quick):
            if missed:
                report.note(f"goal(s) missed: {'; '.join(missed)}; profiling the gateways")
            profiles = profile(b, args.out)
        admin.close()
        report.metrics["elapsed.total_s"] = time.monotonic() - started
        data = report.to_json()
        data.update({"benchmark": "gateways", "machine": {**machine(), **data["machine"]}, "profiles": profiles})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        print(f"\nwrote {args.out}", flush=True)
        ok = True
    finally:
        finish_server(server, tmp, ok, args.keep, stop_timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
