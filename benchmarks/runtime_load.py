"""Clients for the runtime benchmark: synchronous round trips and pipelined load processes.

Every target (bare echo worker, bare relay, memspace router) is driven by the
same code: a DEALER socket sending pre-built memspace request frames and
reading replies of the wire's reply shape ``PROTOCOL REPLY request_id status
body``. Frames are built once per destination; nothing is encoded per request.

Failure semantics: a reply whose status is not ``OK`` raises in
:func:`round_trips` (a latency figure over error replies would be meaningless)
and is counted in ``errors`` by the pipelined load; no reply within
``REPLY_TIMEOUT_MS`` raises TimeoutError in either.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import time
from dataclasses import dataclass
from typing import Any, Self

import zmq

REPLY_TIMEOUT_MS = 60_000
OK = b"OK"


def dealer(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(endpoint)
    return sock


def _reply(sock: zmq.Socket[bytes]) -> list[bytes]:
    try:
        return sock.recv_multipart(zmq.NOBLOCK)
    except zmq.Again:
        if not sock.poll(REPLY_TIMEOUT_MS, zmq.POLLIN):
            raise TimeoutError(f"no reply within {REPLY_TIMEOUT_MS / 1000:g} s") from None
        return sock.recv_multipart()


def round_trips(sock: zmq.Socket[bytes], frames: list[bytes], n: int) -> list[int]:
    """``n`` request/reply round trips, one at a time; nanoseconds each."""
    out = []
    clock = time.perf_counter_ns
    send = sock.send_multipart
    for _ in range(n):
        t0 = clock()
        send(frames)
        reply = _reply(sock)
        out.append(clock() - t0)
        if reply[3] != OK:
            raise RuntimeError(f"error reply {reply[3]!r}: {reply[4][:300]!r}")
    return out


def wait_answering(sock: zmq.Socket[bytes], frames: list[bytes], timeout: float = 60.0) -> None:
    """Send until a reply comes (a ROUTER drops messages to a peer that has not connected yet).
    Bounded by ``timeout``; late duplicate replies are drained."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.send_multipart(frames)
        if sock.poll(200, zmq.POLLIN):
            reply = sock.recv_multipart()
            if reply[3] != OK:
                raise RuntimeError(f"error reply {reply[3]!r}: {reply[4][:300]!r}")
            while sock.poll(50, zmq.POLLIN):
                sock.recv_multipart()
            return
    raise TimeoutError(f"no reply within {timeout:g} s")


def pipelined(sock: zmq.Socket[bytes], destinations: list[list[bytes]], offset: int, window: int,
              duration: float) -> tuple[int, int, float]:
    """Keep ``window`` requests outstanding for ``duration`` seconds, cycling through
    ``destinations`` from ``offset``. Returns (replies within the window, error replies,
    measured seconds). Requests still out at the end are awaited but not counted."""
    n = len(destinations)
    k = offset
    send = sock.send_multipart
    recv = sock.recv_multipart
    noblock, again = zmq.NOBLOCK, zmq.Again
    clock = time.perf_counter
    t0 = clock()
    end = t0 + duration
    for _ in range(window):
        send(destinations[k % n])
        k += 1
    outstanding, done, errors = window, 0, 0
    now = t0
    while outstanding:
        try:
            reply = recv(noblock)
        except again:
            if not sock.poll(REPLY_TIMEOUT_MS, zmq.POLLIN):
                raise TimeoutError(f"no reply within {REPLY_TIMEOUT_MS / 1000:g} s "
                                   f"({outstanding} outstanding)") from None
            continue
        outstanding -= 1
        if reply[3] != OK:
            errors += 1
        now = clock()
        if now < end:
            done += 1
            send(destinations[k % n])
            k += 1
            outstanding += 1
    return done, errors, duration


def _client_main(conn: multiprocessing.connection.Connection) -> None:
    """A load process: runs one pipelined trial per command until told to stop."""
    ctx: zmq.Context[Any] = zmq.Context()
    sockets: dict[str, zmq.Socket[bytes]] = {}
    try:
        while True:
            cmd = conn.recv()
            if cmd[0] == "stop":
                return
            _, endpoint, destinations, offset, window, duration = cmd
            sock = sockets.get(endpoint)
            if sock is None:
                sock = sockets[endpoint] = dealer(ctx, endpoint)
            try:
                conn.send(("ok", pipelined(sock, destinations, offset, window, duration)))
            except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
                conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        for sock in sockets.values():
            sock.close(0)
        ctx.term()


@dataclass
class Trial:
    rps: float
    replies: int
    errors: int


class LoadPool:
    """``processes`` client processes (spawned fresh, so no zmq state is inherited) that run
    pipelined trials together. Use as a context manager."""

    def __init__(self, processes: int) -> None:
        mp = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        for _ in range(processes):
            parent, child = mp.Pipe()
            proc = mp.Process(target=_client_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(self, endpoint: str, destinations: list[list[bytes]], window: int, duration: float) -> Trial:
        """One trial: the window is split evenly over the processes; each cycles through every
        destination from its own offset. Requests/s is the sum over processes."""
        per = max(1, window // len(self.conns))
        for i, conn in enumerate(self.conns):
            offset = (i * len(destinations)) // len(self.conns)
            conn.send(("run", endpoint, destinations, offset, per, duration))
        replies = errors = 0
        rps = 0.0
        failures = []
        for conn in self.conns:
            if not conn.poll(duration + REPLY_TIMEOUT_MS / 1000 + 30):
                raise TimeoutError("a load process did not report")
            status, value = conn.recv()
            if status != "ok":
                failures.append(value)
                continue
            done, errs, seconds = value
            replies += done
            errors += errs
            rps += done / seconds
        if failures:
            raise RuntimeError(f"load process failed: {failures[0]}")
        return Trial(rps, replies, errors)

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for conn in self.conns:
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
