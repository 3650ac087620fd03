"""The gRPC gateway's parts without a server: generated code, conversions, error mapping, the feed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from memspace import errors
from memspace.api import grpc_convert as convert
from memspace.api import pb
from memspace.api.grpc_feed import Feed
from memspace.api.grpc_server import status_code, trailing_metadata
from memspace.api.pb import pb2

# -- the proto -----------------------------------------------------------------------------------

def test_services_and_methods_match_the_contract() -> None:
    services = pb2.DESCRIPTOR.services_by_name
    assert pb.SERVICES == ("memspace.v1.Spaces", "memspace.v1.Memories")
    assert [m.name for m in services["Spaces"].methods] == ["Create", "List", "Get", "Delete", "Drain"]
    memories = {m.name: m for m in services["Memories"].methods}
    assert list(memories) == ["Remember", "RememberBatch", "Get", "Forget", "Link", "Recall", "Subscribe"]
    assert [n for n, m in memories.items() if m.server_streaming] == ["Subscribe"]


def test_every_memories_request_names_its_space_in_field_1() -> None:
    for method in pb2.DESCRIPTOR.services_by_name["Memories"].methods:
        field = method.input_type.fields_by_number[1]
        assert (field.name, field.type) == ("memory_space_id", FieldDescriptor.TYPE_STRING), method.name
    for write in ("Remember", "RememberBatch", "Forget", "Link"):
        method = pb2.DESCRIPTOR.services_by_name["Memories"].methods_by_name[write]
        assert "request_id" in method.input_type.fields_by_name, write


def test_proto_dir_points_at_the_packaged_proto() -> None:
    root = Path(__file__).resolve().parents[2]
    assert (root / "proto" / pb.PROTO).read_bytes() == pb.proto_source()


def _import_in_subprocess(cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMSPACE_PROTO_CACHE": str(cache)}
    code = "from memspace.api.pb import pb2; print(pb2.__file__)"
    return subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120)


def test_generated_code_is_cached_by_proto_hash(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _import_in_subprocess(cache)
    assert first.returncode == 0, first.stderr
    generated = Path(first.stdout.strip())
    key = pb._key(pb.proto_source())
    assert generated == cache / key / "memspace" / "v1" / "memspace_pb2.py"
    stamp = generated.stat().st_mtime_ns
    second = _import_in_subprocess(cache)
    assert second.returncode == 0, second.stderr
    assert Path(second.stdout.strip()) == generated and generated.stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir()] == [key]          # no leftover work directories
    assert pb._key(pb.proto_source() + b"\n// changed") != key


def test_concurrent_first_imports_agree(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "MEMSPACE_PROTO_CACHE": str(cache)}
    code = "from memspace.api.pb import pb2; print(pb2.Memory(id='x').id)"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [(p.returncode, out.strip()) for p, (out, _) in zip(procs, outputs)] == [(0, "x")] * 3, outputs
    assert len(list(cache.iterdir())) == 1


def test_shared_writable_cache_is_not_trusted(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert not pb._usable(shared)
    private = tmp_path / "private"
    assert pb._usable(private)


# -- conversions ---------------------------------------------------------------------------------

def test_request_bodies_hold_only_set_fields() -> None:
    assert convert.memory_input(pb2.RememberRequest(memory_space_id="a", content="x")) == {"content": "x"}
    full = pb2.RememberRequest(memory_space_id="a", request_id="k", content="", embedding=[1.0, 0.5], id="m",
                               confidence=0.0, tags=["t"], metadata={"n": 3, "f": 1.5, "l": [1, "x"]},
                               links=[pb2.LinkSpec(target="o", weight=0.5)])
    assert convert.memory_input(full) == {
        "content": "", "embedding": [1.0, 0.5], "id": "m", "confidence": 0.0, "tags": ["t"],
        "metadata": {"n": 3, "f": 1.5, "l": [1, "x"]}, "links": [{"target": "o", "weight": 0.5}]}
    assert isinstance(convert.memory_input(full)["metadata"]["n"], int)
    assert convert.recall_body(pb2.RecallRequest(memory_space_id="a")) == {}
    assert convert.recall_body(pb2.RecallRequest(query="q", k=0, mode="similarity", tiers=["warm"])) == \
        {"query": "q", "k": 0, "mode": "similarity", "tiers": ["warm"]}
    assert convert.link_body(pb2.LinkRequest(source="a", target="b")) == {"source": "a", "target": "b"}
    assert convert.forget_body(pb2.ForgetRequest(tags=["x"], before=5.0)) == {"tags": ["x"], "before": 5.0}
    assert convert.create_body("s", pb2.CreateSpaceRequest(settings={"max_auto_links": 2})) == \
        {"id": "s", "settings": {"max_auto_links": 2}}


def test_results_become_messages() -> None:
    status = convert.space_status({"id": "a", "state": "REGISTERED", "pid": None, "generation": 0,
                                   "dimension": 8, "settings": {}, "created_at": 1.5, "memories": None,
                                   "memories_by_tier": None, "last_error": {"why": "x"}, "queued": 2,
                                   "future_field": [1]})
    assert (status.id, status.state, status.dimension, status.queued) == ("a", "REGISTERED", 8, 2)
    assert not status.HasField("pid") and not status.HasField("memories")
    assert status.last_error == '{"why":"x"}'
    assert json_format.MessageToDict(status.raw)["future_field"] == [1]
    receipt = convert.receipt({"space": "a", "deleted": True, "memories": None, "files": 3, "bytes": 10})
    assert (receipt.memory_space_id, receipt.deleted, receipt.HasField("memories")) == ("a", True, False)
    hit = convert.hit({"id": "b", "content": None, "score": 0.5, "similarity": 0.4, "activation": 0.3,
                       "confidence": 1.0, "path": ["a", "b"], "depth": 1, "reached": "link", "tags": [],
                       "metadata": {}, "tier": "hot"})
    assert (list(hit.path), hit.depth, hit.HasField("content")) == (["a", "b"], 1, False)
    result = convert.remember_result({"id": "m", "outcome": "merged", "similarity": 0.97, "links": []})
    assert (result.outcome, result.similarity) == ("merged", pytest.approx(0.97))
    event = convert.data_event("s", {"seq": 7, "type": "forget", "ids": ["x"]})
    assert (event.seq, event.type, event.memory_space_id) == (7, "forget", "s")
    assert json_format.MessageToDict(event.data) == {"ids": ["x"]}


# -- errors --------------------------------------------------------------------------------------

CONTRACT_STATUS = {
    "INVALID_SPACE_ID": "INVALID_ARGUMENT", "INVALID_ARGUMENT": "INVALID_ARGUMENT",
    "SPACE_REQUIRED": "INVALID_ARGUMENT", "CONFLICTING_SPACE": "INVALID_ARGUMENT",
    "UNAUTHENTICATED": "UNAUTHENTICATED", "FORBIDDEN": "PERMISSION_DENIED",
    "SPACE_NOT_FOUND": "NOT_FOUND", "MEMORY_NOT_FOUND": "NOT_FOUND", "SPACE_EXISTS": "ALREADY_EXISTS",
    "PAYLOAD_TOO_LARGE": "INVALID_ARGUMENT", "QUOTA_EXCEEDED": "RESOURCE_EXHAUSTED",
    "RATE_LIMITED": "RESOURCE_EXHAUSTED", "OVERLOADED": "RESOURCE_EXHAUSTED",
    "SPACE_UNAVAILABLE": "UNAVAILABLE", "DEADLINE_EXCEEDED": "DEADLINE_EXCEEDED",
    "POISON_REQUEST": "FAILED_PRECONDITION", "INTERNAL": "INTERNAL",
}


@pytest.mark.parametrize("code", errors.CODES)
def test_every_error_code_maps_to_the_contract_status(code: str) -> None:
    err = errors.from_code(code, "boom", {"retry_after_s": 2.5})
    assert status_code(err) == getattr(grpc.StatusCode, CONTRACT_STATUS[code])
    md = dict(trailing_metadata(err))
    assert md["memspace-error-code"] == code
    assert md["memspace-error-details-bin"] == b'{"retry_after_s":2.5}'
    retryable = CONTRACT_STATUS[code] in ("RESOURCE_EXHAUSTED", "UNAVAILABLE")
    assert md.get("retry-after") == ("3" if retryable else None)


# -- the change feed with a scripted router ------------------------------------------------------

class ScriptedRouter:
    """Answers ``events`` calls from a script; records the ``after`` and ``passive`` of each call."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.afters: list[int] = []
        self.passive: list[bool] = []
        self.idle = asyncio.Event()

    async def call(self, space: str, op: str, body: Any, *, passive: bool = False, **kwargs: Any) -> Any:
        assert op == "events" and body["limit"] >= 1
        # the first call is an ordinary request that does not wait; every later one a passive long poll
        assert (body["wait_ms"] > 0) == passive == bool(self.passive)
        self.afters.append(body["after"])
        self.passive.append(passive)
        if not self.script:
            self.idle.set()
            await asyncio.Event().wait()     # a long poll with no news
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


async def _collect(router: ScriptedRouter, n: int, after: int = 0) -> tuple[list[Any], BaseException | None]:
    stopping = asyncio.Event()
    feed = Feed(router.call, None, router_space="s", topic_space="s", after=after, lifecycle=False,
                stopping=stopping)
    got: list[Any] = []
    error: BaseException | None = None
    try:
        async with asyncio.timeout(30):
            async for event in feed.run():
                got.append(event)
                if len(got) == n:
                    break
    except errors.MemspaceError as e:
        error = e
    return got, error


def test_feed_reports_gaps_skips_repeats_and_retries_transient_errors() -> None:
    router = ScriptedRouter([
        {"events": [{"seq": 5, "type": "remember", "at": 1.0}], "last_seq": 5, "gap": True},
        errors.SpaceUnavailable("restarting"),
        {"events": [{"seq": 5, "type": "remember"}, {"seq": 6, "type": "link", "source": "a"}],
         "last_seq": 6, "gap": False},
    ])
    got, error = asyncio.run(_collect(router, 3, after=2))
    assert error is None
    assert [(e.type, e.seq) for e in got] == [("gap", 0), ("remember", 5), ("link", 6)]
    assert json_format.MessageToDict(got[0].data) == {"after": 2, "last_seq": 5}
    assert router.afters[:3] == [2, 5, 5] and set(router.afters[3:]) <= {6}


def test_feed_ends_with_a_permanent_error() -> None:
    router = ScriptedRouter([
        {"events": [{"seq": 1, "type": "forget", "ids": ["x"]}], "last_seq": 1, "gap": False},
        errors.SpaceNotFound("gone"),
    ])
    got, error = asyncio.run(_collect(router, 10))
    assert [e.seq for e in got] == [1]
    assert isinstance(error, errors.SpaceNotFound)


def test_feed_stops_when_the_gateway_stops() -> None:
    async def main() -> list[Any]:
        router = ScriptedRouter([{"events": [{"seq": 1, "type": "forget"}], "last_seq": 1, "gap": False}])
        stopping = asyncio.Event()
        feed = Feed(router.call, None, router_space="s", topic_space="s", after=0, lifecycle=False,
                    stopping=stopping)
        got = []
        async with asyncio.timeout(30):
            async for event in feed.run():
                got.append(event)
                await router.idle.wait()
                stopping.set()
        return got

    assert [e.seq for e in asyncio.run(main())] == [1]
