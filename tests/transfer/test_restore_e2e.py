"""Export -> import -> export through a real ``memspace serve``: the CLI (over zmq), the REST routes
and the Python client over HTTP all restore a space exactly (same NDJSON lines, same recall)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import memspace
from memspace.client import Client
from memspace.testing.server import ServerProcess

DIM = 16
ENV = {"MEMSPACE_SPACES_DIMENSION": str(DIM), "MEMSPACE_DRAIN_TIMEOUT_S": "10"}
SETTINGS = {"decay": "exponential", "half_life_s": 3600.0}
CLI_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("restore") / "data", http=True, env=ENV) as s:
        yield s


@pytest.fixture(scope="module")
def z(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def source(z: Client) -> str:
    """A space with what a real one holds: auto-links both ways (many to later ids), merges,
    explicit links of several kinds, reinforcement from recalls, a forget and an update."""
    z.create_space("rs-src", dimension=DIM, settings=SETTINGS)
    s = z.space("rs-src")
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, DIM))
    items = [{"id": f"m{i:03d}" if i % 5 else None, "content": f"memory {i}", "tags": [f"c{i % 4}"],
              "metadata": {"i": i}, "confidence": round(0.3 + (i % 7) / 10, 2),
              "embedding": (centres[i % 4] + 0.35 * rng.normal(size=DIM)).tolist()} for i in range(80)]
    for start in range(0, len(items), 25):
        s.remember_batch([{k: v for k, v in it.items() if v is not None} for it in items[start:start + 25]])
    s.remember(embedding=items[1]["embedding"], tags=["again"])                 # merged into m001
    s.link("m001", "m079", 0.45, "cause")
    s.link("m078", "m002", 0.9)
    for q in centres[:2]:
        s.recall(embedding=q.tolist(), k=5)
    s.forget("m003")
    s.remember(id="m004", embedding=centres[3].tolist(), content="updated")
    return "rs-src"


def cli(server: ServerProcess, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSPACE_")}
    env["MEMSPACE_URL"] = server.endpoints["zmq"]
    proc = subprocess.run([sys.executable, "-m", "memspace", *args], capture_output=True, text=True, env=env,
                          timeout=CLI_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def sorted_lines(data: bytes) -> list[bytes]:
    return sorted(line for line in data.splitlines() if line.strip())


def test_cli_export_import_export_gives_the_same_file(server: ServerProcess, z: Client, source: str,
                                                      tmp_path: Path) -> None:
    first, second = tmp_path / "first.ndjson", tmp_path / "second.ndjson"
    cli(server, "space", "export", source, str(first))
    lines = sorted_lines(first.read_bytes())
    assert len(lines) == z.space(source).count() > 70
    z.create_space("rs-cli", dimension=DIM, settings=SETTINGS)
    summary = cli(server, "space", "import", "rs-cli", str(first), "--batch", "7", "--json")
    assert json.loads(summary) == {"space": "rs-cli", "imported": len(lines), "file": str(first)}
    cli(server, "space", "export", "rs-cli", str(second))
    assert sorted_lines(second.read_bytes()) == lines
    # importing it again (a retried restore) changes nothing
    cli(server, "space", "import", "rs-cli", str(first))
    cli(server, "space", "export", "rs-cli", str(second))
    assert sorted_lines(second.read_bytes()) == lines
    assert_same_recall(z, source, "rs-cli")


def test_http_export_import_export_gives_the_same_lines(server: ServerProcess, z: Client, source: str) -> None:
    with httpx.Client(base_url=server.endpoints["http"], timeout=60.0) as http:
        exported = http.get(f"/v1/spaces/{source}/export")
        assert exported.status_code == 200
        z.create_space("rs-http", dimension=DIM, settings=SETTINGS)
        r = http.post("/v1/spaces/rs-http/import", content=exported.content,
                      headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 200, r.text
        lines = sorted_lines(exported.content)
        assert r.json() == {"imported": len(lines)}
        assert sorted_lines(http.get("/v1/spaces/rs-http/export").content) == lines
    # the Python client over HTTP (its import op goes to the same route), in small batches
    with memspace.connect(server.endpoints["http"], timeout=60.0) as h:
        h.create_space("rs-client", dimension=DIM, settings=SETTINGS)
        dump = list(h.space(source).export())
        assert h.space("rs-client").import_(dump, batch=9) == len(dump)
        assert list(h.space("rs-client").export()) == dump
    assert_same_recall(z, source, "rs-http")


def assert_same_recall(z: Client, a: str, b: str) -> None:
    """The same hits, in the same order, by the same paths. Scores may differ in the last digits:
    the two recalls happen a moment apart, and confidence decays with the time since last access."""
    rng = np.random.default_rng(11)
    for q in rng.normal(size=(3, DIM)):
        for mode in ("similarity", "spreading"):
            got: list[Any] = [z.space(space).recall(embedding=q.tolist(), k=12, mode=mode, threshold=-1.0)
                              for space in (a, b)]
            assert [(h.id, h.path) for h in got[0]] == [(h.id, h.path) for h in got[1]]
            assert [h.score for h in got[0]] == pytest.approx([h.score for h in got[1]], abs=1e-6)
            assert [h.activation for h in got[0]] == [h.activation for h in got[1]]
