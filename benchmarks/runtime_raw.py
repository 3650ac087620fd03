"""Bare pyzmq baselines for the runtime benchmark: an echo worker and a relay.

They speak just enough of the memspace wire layout to take the same request
frames a memspace client sends and to answer with a reply of the same shape,
so the client code is identical for every target. Nothing is validated or
decoded: these are the floor the memspace router and worker are compared with.

    python runtime_raw.py direct                      # ROUTER on tcp; echoes; prints "endpoint: ..."
    python runtime_raw.py relay --backend ipc://...   # ROUTER/ROUTER relay; prints "endpoint: ..."
    python runtime_raw.py worker --connect ipc://... --identity t000   # echo worker behind the relay

Each process runs until SIGTERM, and dies with its parent (PR_SET_PDEATHSIG),
so a benchmark that crashes leaves none behind.

Frames (after the ROUTER envelope), as in :mod:`memspace.wire`::

    request   PROTOCOL REQUEST request_id space op meta body
    reply     PROTOCOL REPLY   request_id b"OK" body
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import subprocess
import sys
import time

import zmq

PROTOCOL = b"MSP1"
REPLY = bytes([2])
#: A reply body the size of a ``count`` result.
ECHO_BODY = b"1000"
DRAIN_LIMIT = 1000


def _die_with_parent() -> None:
    # Default SIGTERM kills without zmq teardown, which is what a baseline wants: nothing to
    # flush. SIGINT (Ctrl-C on the benchmark) is the parent's to handle; it then SIGTERMs us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def direct(bind: str) -> None:
    """One hop: a ROUTER socket that answers every request itself."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.bind(bind)
    print("endpoint:", sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    recv, send = sock.recv_multipart, sock.send_multipart
    while True:
        msg = recv()
        # [client, PROTOCOL, REQUEST, rid, space, op, meta, body]
        send([msg[0], PROTOCOL, REPLY, msg[3], b"OK", ECHO_BODY])


def relay(bind: str, backend: str) -> None:
    """A bare ROUTER/ROUTER relay: forward a request to the worker whose identity is its
    space frame, forward a reply to the client named in its first frame. The same loop
    shape as the memspace router (poll, then drain each readable socket without blocking),
    with none of its bookkeeping."""
    ctx = zmq.Context()
    front = ctx.socket(zmq.ROUTER)
    back = ctx.socket(zmq.ROUTER)
    for sock in (front, back):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
    front.bind(bind)
    back.bind(backend)
    print("endpoint:", front.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    front_recv, front_send = front.recv_multipart, front.send_multipart
    back_recv, back_send = back.recv_multipart, back.send_multipart
    noblock, again = zmq.NOBLOCK, zmq.Again
    while True:
        events = dict(poller.poll())
        if back in events:
            for _ in range(DRAIN_LIMIT):
                try:
                    msg = back_recv(noblock)
                except again:
                    break
                # [worker, client, *reply]
                front_send(msg[1:])
        if front in events:
            for _ in range(DRAIN_LIMIT):
                try:
                    msg = front_recv(noblock)
                except again:
                    break
                # [client, PROTOCOL, REQUEST, rid, space, ...] -> [space, client, PROTOCOL, ...]
                try:
                    back_send([msg[4], *msg])
                except zmq.ZMQError:
                    pass   # unknown worker identity (ROUTER_MANDATORY off: never raised)


def worker(connect: str, identity: str) -> None:
    """An echo worker behind the relay: a DEALER whose routing id is ``identity``."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(connect)
    print("connected:", identity, flush=True)
    recv, send = sock.recv_multipart, sock.send_multipart
    while True:
        msg = recv()
        # [client, PROTOCOL, REQUEST, rid, space, op, meta, body]
        send([msg[0], PROTOCOL, REPLY, msg[3], b"OK", ECHO_BODY])


# -- launching (used by bench_runtime.py) -------------------------------------------------------


def launch(*args: str, expect: str, timeout: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``runtime_raw.py *args`` and wait (bounded) for its ``expect: value`` line."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *args],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                stop([proc])
                raise TimeoutError(f"runtime_raw.py {' '.join(args)} printed nothing in {timeout:g} s")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"runtime_raw.py {' '.join(args)} exited with {proc.wait()}")
            buffer += chunk
    key, _, value = buffer.split(b"\n", 1)[0].decode().partition(": ")
    if key != expect:
        stop([proc])
        raise RuntimeError(f"runtime_raw.py {' '.join(args)}: expected {expect!r}, got {key!r}")
    return proc, value.strip()


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process, then wait for each (SIGKILL after 10 s)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("direct")
    p.add_argument("--bind", default="tcp://127.0.0.1:*")
    p = sub.add_parser("relay")
    p.add_argument("--bind", default="tcp://127.0.0.1:*")
    p.add_argument("--backend", required=True)
    p = sub.add_parser("worker")
    p.add_argument("--connect", required=True)
    p.add_argument("--identity", required=True)
    args = parser.parse_args(argv)
    _die_with_parent()
    if args.role == "direct":
        direct(args.bind)
    elif args.role == "relay":
        relay(args.bind, args.backend)
    else:
        worker(args.connect, args.identity)
    return 0


if __name__ == "__main__":
    sys.exit(main())
