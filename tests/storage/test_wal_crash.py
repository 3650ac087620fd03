"""Crash test: a real child process appends and commits in a loop and is SIGKILLed at a random point.

Every seq the child reported after ``commit()`` returned must be there, with its
payload intact, and the WAL must open cleanly (a torn tail is cut, never refused).
SIGKILL kills the process, not the machine: the page cache survives, so the
guarantee checked here holds for every fsync policy.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from memspace.storage.wal import Wal

CHILD = r"""
import hashlib, random, sys
from memspace.storage.wal import Wal

def payload(seq):
    return hashlib.blake2b(str(seq).encode()).digest() * (1 + seq % 40)

directory, policy, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
w = Wal.open(directory, fsync=policy, segment_bytes=16384)
out = sys.stdout
while True:
    for _ in range(rng.randint(1, 4)):
        seq = w.last_seq + 1
        w.append(seq % 256, payload(seq))
    w.commit()
    out.write(f"{w.last_seq}\n")
    out.flush()
"""


def payload(seq: int) -> bytes:
    return hashlib.blake2b(str(seq).encode()).digest() * (1 + seq % 40)


def run_and_kill(directory: Path, policy: str, seed: int, lines: int) -> int:
    """Start the child, read ``lines`` committed seqs, SIGKILL it; return the last seq reported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory), policy, str(seed)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None and child.stderr is not None
    reported = 0
    try:
        for _ in range(lines):
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"child exited early: {child.wait()} {child.stderr.read()}")
            seq = int(line)
            assert seq > reported
            reported = seq
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return reported


@pytest.mark.timeout(120)
def test_every_committed_record_survives_sigkill(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    acknowledged = 0
    for round_, policy in enumerate(["always", "always", "interval", "never", "always", "always"]):
        reported = run_and_kill(tmp_path, policy, seed=rng.randrange(1 << 30), lines=rng.randint(10, 300))
        assert reported > acknowledged  # the child continued where the last round ended
        acknowledged = reported
        with Wal.open(tmp_path, segment_bytes=16384) as w:  # must not raise: at worst a torn tail
            seen = 0
            for rec in w.records():
                seen += 1
                assert rec.seq == seen, f"round {round_}: seq {rec.seq} where {seen} was expected"
                assert rec.type == rec.seq % 256
                assert bytes(rec.payload) == payload(rec.seq), f"round {round_}: payload of {rec.seq}"
            assert seen == w.last_seq >= acknowledged, f"round {round_}: acknowledged {acknowledged}"
    assert len(list(tmp_path.glob("*.wal"))) > 1  # rotation happened along the way
