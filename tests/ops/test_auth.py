"""auth.mode = token: the router checks bearer tokens for every surface (native, HTTP, gRPC, CLI)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import grpc
import httpx
import pytest

from memspace.api import pb
from memspace.errors import Forbidden, Unauthenticated
from memspace.testing.server import ServerProcess

ALPHA, ADMIN = "alpha-secret-token", "admin-secret-token"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    tokens = root / "tokens.toml"
    tokens.write_text(f'''
[[token]]
name = "tenant-alpha"
sha256 = "{sha(ALPHA)}"
spaces = ["alpha"]

[[token]]
name = "operator"
sha256 = "{sha(ADMIN)}"
spaces = ["*"]
admin = true
''')
    env = {"MEMSPACE_AUTH_MODE": "token", "MEMSPACE_AUTH_TOKENS_FILE": str(tokens),
           "MEMSPACE_SPACES_DIMENSION": "16"}
    with ServerProcess(root / "data", http=True, grpc=True, env=env) as s:
        admin = s.client(token=ADMIN)
        admin.create_space("alpha", dimension=16)
        admin.create_space("beta", dimension=16)
        yield s


def test_native_client_needs_a_token_with_rights(server):
    with pytest.raises(Unauthenticated, match="requires a token"):
        server.client().space("alpha").count()
    with pytest.raises(Unauthenticated, match="not recognised"):
        server.client(token="guess").space("alpha").count()
    tenant = server.client(token=ALPHA)
    tenant.space("alpha").remember(content="mine")
    assert tenant.space("alpha").count() == 1
    with pytest.raises(Forbidden, match="tenant-alpha.*beta"):
        tenant.space("beta").count()
    with pytest.raises(Forbidden, match="admin"):
        tenant.status()
    assert server.client(token=ADMIN).status()["spaces_by_state"]


def test_http_maps_to_401_and_403(server):
    url = server.endpoints["http"]
    r = httpx.get(f"{url}/v1/spaces/alpha/memories", timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"
    auth = {"Authorization": f"Bearer {ALPHA}"}
    assert httpx.get(f"{url}/v1/spaces/alpha/memories", headers=auth, timeout=30).status_code == 200
    r = httpx.get(f"{url}/v1/spaces/beta/memories", headers=auth, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    assert httpx.get(f"{url}/metrics", headers=auth, timeout=30).status_code == 403
    assert httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200


def test_grpc_maps_to_unauthenticated_and_permission_denied(server):
    with grpc.insecure_channel(server.endpoints["grpc"]) as channel:
        memories = pb.stub(channel, "Memories")
        request = pb.pb2.GetMemoryRequest(memory_space_id="alpha", id="nope")
        with pytest.raises(grpc.RpcError) as err:
            memories.Get(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            memories.Get(pb.pb2.GetMemoryRequest(memory_space_id="beta", id="nope"), timeout=30,
                         metadata=[("authorization", f"Bearer {ALPHA}")])
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as err:
            memories.Get(request, timeout=30, metadata=[("authorization", f"Bearer {ALPHA}")])
        assert err.value.code() == grpc.StatusCode.NOT_FOUND      # allowed in; the memory is missing


def test_cli_token_from_environment(server):
    env = {**os.environ, "MEMSPACE_URL": server.endpoints["zmq"]}
    run = lambda *a, **e: subprocess.run([sys.executable, "-m", "memspace", *a], capture_output=True, text=True,
                                         env={**env, **e}, timeout=120)
    denied = run("--space", "alpha", "get", "x")
    assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
    ok = run("--space", "alpha", "--json", "remember", "from the cli", MEMSPACE_TOKEN=ALPHA)
    assert ok.returncode == 0, ok.stderr
