"""The measurements of the runtime benchmark, one function per section.

Each section takes the shared :class:`Bench` (a running ``memspace serve``, the
bare baselines, a client) and writes its numbers into ``bench.report``.
Compared targets are measured in the same run, interleaved round by round
with a rotating order, so machine noise hits all of them alike.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import runtime_load as load
import runtime_procs as procs
import runtime_raw as raw
import zmq
from runtime_report import Report, summary_ms, summary_us

from memspace import wire
from memspace.client import Client
from memspace.testing.server import ServerProcess


@dataclass
class Plan:
    latency_rounds: int = 20
    latency_batch: int = 250
    warmup: int = 200
    tax_memories: int = 1000
    throughput_spaces: tuple[int, ...] = (1, 10, 100)
    throughput_memories: int = 100
    trial_s: float = 2.0
    trial_rounds: int = 3
    window: int = 64
    clients: int = 2
    spawn_spaces: int = 30
    big_memories: int = 10_000
    wake_reps: int = 10
    idle_workers: int = 100
    idle_window_s: float = 10.0
    many_spaces: int = 500
    activation_window: int = 16      # activations in flight while activating paced
    burst_deadline_s: float = 180.0
    dimension: int = 384


QUICK = Plan(latency_rounds=3, latency_batch=50, warmup=20, throughput_spaces=(1, 10),
             throughput_memories=20, trial_s=0.4, trial_rounds=1, spawn_spaces=5, big_memories=1000,
             wake_reps=2, idle_workers=10, idle_window_s=2.0, many_spaces=20)


@dataclass
class Bench:
    plan: Plan
    report: Report
    server: ServerProcess
    client: Client
    relay_endpoint: str
    relay_backend: str
    direct_endpoint: str
    ctx: zmq.Context[Any]
    rng: np.random.Generator
    relay_pid: int
    direct_pid: int
    raw_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def zmq(self) -> str:
        return self.server.endpoints["zmq"]

    def vectors(self, n: int) -> np.ndarray:
        v = self.rng.standard_normal((n, self.plan.dimension)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def fill(self, space: str, n: int, batch: int = 500) -> None:
        """Create ``space`` with ``n`` random memories (nearly orthogonal: no merges, no links)."""
        self.client.create_space(space, dimension=self.plan.dimension)
        handle = self.client.space(space)
        vectors = self.vectors(n)
        for start in range(0, n, batch):
            handle.remember_batch([{"embedding": vectors[i], "content": f"memory {i} of {space}"}
                                   for i in range(start, min(n, start + batch))])
        got = handle.count()
        if got != n:
            raise RuntimeError(f"space {space}: {got} memories after loading {n}")

    def count_frames(self, space: str) -> list[bytes]:
        return wire.encode_request("bench", space, "count", {})

    def recall_frames(self, space: str) -> list[bytes]:
        return wire.encode_request("bench", space, "recall",
                                   {"embedding": self.vectors(1)[0], "k": 10, "mode": "similarity"})

    def live(self) -> dict[str, int]:
        """space id -> worker pid, for every space with a worker."""
        return {s["id"]: s["pid"] for s in self.client.status()["spaces"] if s.get("pid")}

    @property
    def router_pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def hibernate_all_but(self, keep: set[str]) -> None:
        for space in self.live():
            if space not in keep:
                self.client.hibernate(space)


# -- 1. router tax ---------------------------------------------------------------------------


def latency(b: Bench) -> None:
    """Synchronous round trips: bare one hop, bare relay, memspace count, memspace recall."""
    p = b.plan
    b.fill("tax", p.tax_memories)
    proc, _ = raw.launch("worker", "--connect", b.relay_backend, "--identity", "tax", expect="connected")
    b.raw_procs.append(proc)
    targets = {
        "direct": (load.dealer(b.ctx, b.direct_endpoint), b.count_frames("tax")),
        "relay": (load.dealer(b.ctx, b.relay_endpoint), b.count_frames("tax")),
        "memspace_count": (load.dealer(b.ctx, b.zmq), b.count_frames("tax")),
        "memspace_recall": (load.dealer(b.ctx, b.zmq), b.recall_frames("tax")),
    }
    for sock, frames in targets.values():
        load.wait_answering(sock, frames)
        load.round_trips(sock, frames, p.warmup)
    tax_worker = b.live()["tax"]
    # whose CPU a request of each target costs: the hop in the middle, the worker, this client
    roles = {"direct": {"worker": b.direct_pid},
             "relay": {"hop": b.relay_pid, "worker": proc.pid},
             "memspace_count": {"hop": b.router_pid, "worker": tax_worker},
             "memspace_recall": {"hop": b.router_pid, "worker": tax_worker}}
    me = os.getpid()
    names = list(targets)
    samples: dict[str, list[int]] = {n: [] for n in names}
    per_round: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, dict[str, int]] = {n: {"hop": 0, "worker": 0, "client": 0} for n in names}
    for r in range(p.latency_rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sock, frames = targets[name]
            pids = {**roles[name], "client": me}
            before = {role: procs.cpu_ns(pid) or 0 for role, pid in pids.items()}
            got = load.round_trips(sock, frames, p.latency_batch)
            for role, pid in pids.items():
                cpu[name][role] += (procs.cpu_ns(pid) or 0) - before[role]
            samples[name].extend(got)
            per_round[name].append(statistics.median(got))
    for sock, _ in targets.values():
        sock.close(0)
    rows = []
    for name in names:
        s = summary_us(samples[name])
        n = len(samples[name])
        s.update({f"cpu_{role}_us_per_req": used / n / 1000.0 for role, used in cpu[name].items()
                  if role in roles[name] or role == "client"})
        b.report.put(f"latency.{name}", s)
        rows.append([name, s["p50_us"], s["p99_us"], s["mean_us"], s.get("cpu_hop_us_per_req", ""),
                     s["cpu_worker_us_per_req"], s["cpu_client_us_per_req"], n])
    m = b.report.metrics
    for key, over in (("relay_vs_direct", "relay"), ("count_vs_relay", "memspace_count"),
                      ("recall_vs_relay", "memspace_recall")):
        base = "direct" if key == "relay_vs_direct" else "relay"
        ratios = {
            "p50": m[f"latency.{over}.p50_us"] / m[f"latency.{base}.p50_us"],
            "p99": m[f"latency.{over}.p99_us"] / m[f"latency.{base}.p99_us"],
            # median over rounds of the per-round ratio: robust to a noisy round
            "paired_p50": statistics.median(a / c for a, c in zip(per_round[over], per_round[base])),
        }
        b.report.put(f"latency.ratio.{key}", ratios)
        rows.append([f"ratio {key}", ratios["p50"], ratios["p99"], ratios["paired_p50"], "", "", "", ""])
    b.report.table("1. round trip, one request at a time (us; CPU us per request incl. zmq I/O threads; "
                   "ratio rows: p50, p99, paired p50)",
                   ["target", "p50", "p99", "mean", "hop CPU", "worker CPU", "client CPU", "n"], rows)
    b.report.goal("router tax: count p50 <= 1.3x bare relay", "latency.ratio.count_vs_relay.p50", "<=", 1.3)
    b.report.goal("router tax: recall p50 <= 1.3x bare relay", "latency.ratio.recall_vs_relay.p50", "<=", 1.3)


# -- 2. pipelined throughput -----------------------------------------------------------------


def throughput(b: Bench) -> None:
    """Aggregate requests/s with a window of outstanding requests spread over N spaces."""
    p = b.plan
    spaces = [f"t{i:03d}" for i in range(max(p.throughput_spaces))]
    for space in spaces:
        b.fill(space, p.throughput_memories)
    for space in spaces:
        proc, _ = raw.launch("worker", "--connect", b.relay_backend, "--identity", space, expect="connected")
        b.raw_procs.append(proc)
    count = [b.count_frames(s) for s in spaces]
    recall = [b.recall_frames(s) for s in spaces]
    relay_sock, ms_sock = load.dealer(b.ctx, b.relay_endpoint), load.dealer(b.ctx, b.zmq)
    for frames in count:
        load.wait_answering(relay_sock, frames)
        load.wait_answering(ms_sock, frames)
    relay_sock.close(0)
    ms_sock.close(0)
    kinds = {"relay": (b.relay_endpoint, count), "count": (b.zmq, count), "recall": (b.zmq, recall)}
    names = list(kinds)
    live = b.live()
    echo = {space: proc.pid for space, proc in zip(spaces, b.raw_procs[-len(spaces):])}
    results: dict[tuple[int, str], list[float]] = {}
    hop_pct: dict[tuple[int, str], list[float]] = {}
    errors = 0
    with load.LoadPool(p.clients) as pool:
        for n in p.throughput_spaces:                 # warm-up: one short trial each
            for endpoint, frames in kinds.values():
                pool.run(endpoint, frames[:n], p.window, min(0.3, p.trial_s))
        for r in range(p.trial_rounds):
            for n in p.throughput_spaces:
                for name in names[r % len(names):] + names[:r % len(names)]:
                    endpoint, frames = kinds[name]
                    hop = b.relay_pid if name == "relay" else b.router_pid
                    hop0, t0 = procs.cpu_ns(hop) or 0, time.monotonic()
                    trial = pool.run(endpoint, frames[:n], p.window, p.trial_s)
                    wall = time.monotonic() - t0
                    results.setdefault((n, name), []).append(trial.rps)
                    # how busy the relay/router was: near 100 % means it is the bottleneck
                    hop_pct.setdefault((n, name), []).append(
                        100.0 * ((procs.cpu_ns(hop) or 0) - hop0) / 1e9 / wall)
                    errors += trial.errors
    del live, echo
    rows = []
    for n in p.throughput_spaces:
        rps = {name: statistics.median(results[(n, name)]) for name in names}
        busy = {name: statistics.median(hop_pct[(n, name)]) for name in names}
        values = {f"{name}_rps": v for name, v in rps.items()}
        values.update({f"{name}_hop_cpu_pct": v for name, v in busy.items()})
        values["ratio_count_vs_relay"] = rps["count"] / rps["relay"]
        values["ratio_recall_vs_relay"] = rps["recall"] / rps["relay"]
        b.report.put(f"throughput.s{n}", values)
        rows.append([n, rps["relay"], rps["count"], rps["recall"], values["ratio_count_vs_relay"],
                     values["ratio_recall_vs_relay"], busy["relay"], busy["count"], busy["recall"]])
    b.report.metrics["throughput.error_replies"] = float(errors)
    b.report.table(f"2. pipelined requests/s (window {p.window} over {p.clients} client processes, "
                   f"median of {p.trial_rounds} x {p.trial_s:g} s; hop CPU = relay or router process, "
                   f"% of one core, zmq I/O thread included)",
                   ["spaces", "bare relay", "count", "recall", "count/relay", "recall/relay",
                    "relay CPU%", "router CPU% (count)", "router CPU% (recall)"], rows)
    for n in p.throughput_spaces:
        b.report.goal(f"throughput {n} spaces: count >= 0.8x bare relay",
                      f"throughput.s{n}.ratio_count_vs_relay", ">=", 0.8)
    raw.stop(b.raw_procs)    # the bare baselines are done; keep them out of the idle numbers
    b.raw_procs.clear()


# -- 3. spawn-to-first-reply -----------------------------------------------------------------


def spawn(b: Bench) -> None:
    """create_space + first request on new empty spaces; first request after hibernation."""
    p = b.plan
    created, first, total = [], [], []
    names = [f"sp{i:03d}" for i in range(p.spawn_spaces)]
    for space in names:
        t0 = time.perf_counter()
        b.client.create_space(space, dimension=p.dimension)
        t1 = time.perf_counter()
        b.client.space(space).count()
        t2 = time.perf_counter()
        created.append(t1 - t0)
        first.append(t2 - t1)
        total.append(t2 - t0)
    live = b.live()
    empty = procs.memory_of([live[s] for s in names if s in live])
    b.report.put("spawn.create", summary_ms(created))
    b.report.put("spawn.first_request", summary_ms(first))
    b.report.put("spawn.total", summary_ms(total))
    b.report.put("memory.empty_worker", {"uss_median_mb": empty.uss_median_mb, "uss_max_mb": empty.uss_max_mb,
                                         "rss_median_mb": empty.rss_median_mb})
    for space in names:
        b.client.hibernate(space)

    big = "big"
    b.fill(big, p.big_memories)
    wake = []
    for _ in range(p.wake_reps):
        b.client.hibernate(big)
        t0 = time.perf_counter()
        b.client.space(big).count()
        wake.append(time.perf_counter() - t0)
    b.report.put("spawn.wake", summary_ms(wake))
    b.client.hibernate(big)
    rows = []
    for label, key, n in (("create_space", "spawn.create", len(created)),
                          ("first request (new space)", "spawn.first_request", len(first)),
                          ("create + first request", "spawn.total", len(total)),
                          (f"first request, hibernated {p.big_memories} memories", "spawn.wake", len(wake))):
        m = b.report.metrics
        rows.append([label, m[f"{key}.p50_ms"], m[f"{key}.p99_ms"], m[f"{key}.max_ms"], n])
    b.report.table("3. spawn to first reply (ms)", ["what", "p50", "p99", "max", "n"], rows)
    b.report.goal("spawn: create + first request p50 <= 20 ms", "spawn.total.p50_ms", "<=", 20)
    b.report.goal(f"wake: hibernated {p.big_memories}-memory space, first request p50 <= 150 ms",
                  "spawn.wake.p50_ms", "<=", 150)


# -- 4. idle cost ----------------------------------------------------------------------------


def _serve_children(b: Bench, workers: set[int]) -> list[int]:
    """Processes of the serve tree that are neither the serve process nor a worker (fork server)."""
    assert b.server.proc is not None
    try:
        tree = psutil.Process(b.server.proc.pid).children(recursive=True)
    except psutil.Error:
        return []
    return [c.pid for c in tree if c.pid not in workers]


def idle(b: Bench) -> None:
    """USS per idle worker, and CPU of N idle workers and of the router over a window."""
    p = b.plan
    keep = [f"t{i:03d}" for i in range(p.idle_workers)]
    known = {s["id"] for s in b.client.list_spaces()}
    for space in keep:            # the throughput section's spaces, when it ran; live either way
        if space not in known:
            b.fill(space, p.throughput_memories)
        b.client.space(space).count()
    b.hibernate_all_but(set(keep))
    live = b.live()
    pids = [live[s] for s in keep]
    mem = procs.memory_of(pids)
    assert b.server.proc is not None
    router = b.server.proc.pid
    cpu = procs.cpu_over({"workers": pids, "router": [router],
                          "other": _serve_children(b, set(pids))}, p.idle_window_s)
    b.report.put("idle", {
        "workers": len(pids), "uss_median_mb": mem.uss_median_mb, "uss_max_mb": mem.uss_max_mb,
        "rss_median_mb": mem.rss_median_mb, "uss_total_mb": mem.uss_total_mb,
        "window_s": cpu["workers"].seconds,
        "cpu_workers_pct_core": cpu["workers"].pct_of_core,
        "cpu_router_pct_core": cpu["router"].pct_of_core,
        "cpu_other_pct_core": cpu["other"].pct_of_core,
    })
    m = b.report.metrics
    b.report.table(f"4a. {len(pids)} idle workers ({p.throughput_memories} memories each), "
                   f"{cpu['workers'].seconds:.1f} s window",
                   ["what", "value"],
                   [["USS per worker, median (MB)", m["idle.uss_median_mb"]],
                    ["USS per worker, max (MB)", m["idle.uss_max_mb"]],
                    ["USS per empty worker, median (MB; spawn section)", m.get("memory.empty_worker.uss_median_mb", "-")],
                    ["RSS per worker, median (MB)", m["idle.rss_median_mb"]],
                    ["CPU of all workers (% of one core)", m["idle.cpu_workers_pct_core"]],
                    ["CPU of the router process (% of one core)", m["idle.cpu_router_pct_core"]],
                    ["CPU of fork server etc. (% of one core)", m["idle.cpu_other_pct_core"]]])
    b.report.goal("idle worker USS median <= 12 MB", "idle.uss_median_mb", "<=", 12)
    b.report.goal(f"{len(pids)} idle workers CPU < 5% of a core", "idle.cpu_workers_pct_core", "<", 5)


def _activate(sock: zmq.Socket[bytes], frames: list[list[bytes]], window: int, deadline_s: float
              ) -> tuple[float, int, int, int]:
    """Send ``frames`` keeping at most ``window`` outstanding; wait for every reply or the
    deadline. Returns (seconds, OK replies, error replies, replies missing at the deadline)."""
    t0 = time.perf_counter()
    deadline = t0 + deadline_s
    sent = ok = errors = 0
    while sent < min(window, len(frames)):
        sock.send_multipart(frames[sent])
        sent += 1
    while ok + errors < sent:
        left_ms = int((deadline - time.perf_counter()) * 1000)
        if left_ms <= 0 or not sock.poll(left_ms, zmq.POLLIN):
            break
        reply = sock.recv_multipart()
        if reply[3] == load.OK:
            ok += 1
        else:
            errors += 1
        if sent < len(frames):
            sock.send_multipart(frames[sent])
            sent += 1
    return time.perf_counter() - t0, ok, errors, len(frames) - ok - errors


def many(b: Bench) -> None:
    """Many live idle spaces: activate them paced (a bounded number of activations in flight),
    check all answer, measure memory and idle CPU; then hibernate them and activate them all
    at once (a burst), counting answers and worker crashes."""
    p = b.plan
    b.hibernate_all_but(set())
    names = [f"m{i:03d}" for i in range(p.many_spaces)]
    for space in names:
        b.client.create_space(space, dimension=p.dimension)
    sock = load.dealer(b.ctx, b.zmq)
    frames = [wire.encode_request(f"a{i}", space, "count", {}) for i, space in enumerate(names)]
    crashes0 = b.client.status()["counters"]["crashes"]
    activate_s, ok, _, _ = _activate(sock, frames, p.activation_window, p.burst_deadline_s)
    _, answering, _, _ = _activate(sock, frames, len(frames), p.burst_deadline_s)   # all still answer
    live = b.live()
    pids = [live[s] for s in names if s in live]
    mem = procs.memory_of(pids)
    assert b.server.proc is not None
    router_mem = procs.memory_of([b.server.proc.pid])
    cpu = procs.cpu_over({"workers": pids, "router": [b.server.proc.pid]}, p.idle_window_s)
    paced_crashes = b.client.status()["counters"]["crashes"] - crashes0

    hibernate = [wire.encode_request(f"h{i}", space, "hibernate", {}) for i, space in enumerate(names)]
    _activate(sock, hibernate, len(hibernate), p.burst_deadline_s)
    crashes1 = b.client.status()["counters"]["crashes"]
    burst_s, burst_ok, burst_errors, burst_missing = _activate(sock, frames, len(frames), p.burst_deadline_s)
    burst_crashes = b.client.status()["counters"]["crashes"] - crashes1
    sock.close(0)
    b.report.put("many", {
        "spaces": len(names), "activate_s": activate_s, "first_round_ok": ok, "answering": answering,
        "live_workers": len(pids), "uss_total_mb": mem.uss_total_mb, "rss_total_mb": mem.rss_total_mb,
        "uss_median_mb": mem.uss_median_mb, "router_rss_mb": router_mem.rss_total_mb,
        "cpu_workers_pct_core": cpu["workers"].pct_of_core, "cpu_router_pct_core": cpu["router"].pct_of_core,
        "paced_crashes": paced_crashes, "burst_s": burst_s, "burst_ok": burst_ok,
        "burst_errors": burst_errors, "burst_missing": burst_missing, "burst_crashes": burst_crashes,
    })
    m = b.report.metrics
    b.report.table(f"4b. {len(names)} live idle spaces", ["what", "value"], [
        [f"time to activate all, {p.activation_window} activations in flight (s)", m["many.activate_s"]],
        ["answered the activating request", ok],
        ["answered a second request", answering],
        ["worker crashes while activating", paced_crashes],
        ["live workers", len(pids)],
        ["USS total (MB)", m["many.uss_total_mb"]],
        ["RSS total (MB, shared pages counted per process)", m["many.rss_total_mb"]],
        ["USS per worker, median (MB)", m["many.uss_median_mb"]],
        ["router process RSS (MB)", m["many.router_rss_mb"]],
        [f"CPU of all workers over {cpu['workers'].seconds:.1f} s (% of one core)", m["many.cpu_workers_pct_core"]],
        ["CPU of the router process (% of one core)", m["many.cpu_router_pct_core"]],
        ["burst: all hibernated spaces asked at once, time to last answer (s)", m["many.burst_s"]],
        ["burst: OK / error / no answer", f"{burst_ok} / {burst_errors} / {burst_missing}"],
        ["burst: worker crashes", burst_crashes],
    ])
    if answering != len(names):
        b.report.note(f"only {answering} of {len(names)} spaces answered the second request")
    if burst_ok != len(names):
        b.report.note(f"burst activation of {len(names)} spaces: {burst_ok} OK, {burst_errors} errors, "
                      f"{burst_missing} unanswered after {p.burst_deadline_s:g} s, {burst_crashes} worker crashes")


SECTIONS = {"latency": latency, "spawn": spawn, "throughput": throughput, "idle": idle, "many": many}
