"""The gRPC gateway against a real ``memspace serve`` (router, supervisor, workers, gRPC process)."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from memspace.api.pb import pb2, stub
from memspace.testing.server import ServerProcess

DIM = 8
TIMEOUT = 30.0
#: small, so PAYLOAD_TOO_LARGE is cheap to provoke
MAX_REQUEST_BYTES = 200_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("grpc") / "data", grpc=True, env={
        "MEMSPACE_LIMITS_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "MEMSPACE_RESTART_BACKOFF_INITIAL_S": "0.02",
        "MEMSPACE_RESTART_BACKOFF_MAX_S": "0.1",
        "MEMSPACE_SPACES_DIMENSION": str(DIM),
    }).start()
    try:
        endpoints = json.loads((proc.data_root / "endpoints.json").read_text())
        assert endpoints["grpc"] == proc.endpoints["grpc"]
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            code = proc.stop()      # raises if any process of the tree is left
            assert code == 0, proc.log_tail()
        else:
            proc.kill()


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.endpoints["grpc"]) as ch:
        yield ch


@pytest.fixture(scope="module")
def spaces(channel: grpc.Channel) -> Any:
    return stub(channel, "Spaces")


@pytest.fixture(scope="module")
def mem(channel: grpc.Channel) -> Any:
    return stub(channel, "Memories")


def create(spaces: Any, space: str, dimension: int = DIM) -> Any:
    return spaces.Create(pb2.CreateSpaceRequest(memory_space_id=space, dimension=dimension), timeout=TIMEOUT)


def vec(*hot: int) -> list[float]:
    v = [0.0] * DIM
    for i in hot:
        v[i] = 1.0
    return v


def error_of(call: Any, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str, dict[str, Any]]:
    """(status code, message, trailing metadata) of a call that must fail."""
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=TIMEOUT, **kwargs)
    err = info.value
    return err.code(), err.details(), dict(err.trailing_metadata() or ())


# -- spaces and memories ------------------------------------------------------------------------

def test_space_and_memory_lifecycle(spaces: Any, mem: Any) -> None:
    created = create(spaces, "life-one")
    assert (created.created, created.space.id, created.space.dimension) == (True, "life-one", DIM)
    again = create(spaces, "life-one")
    assert again.created is False

    first = mem.Remember(pb2.RememberRequest(memory_space_id="life-one", id="m-1", embedding=vec(0),
                                             content="met Ana at the lab", tags=["people"],
                                             metadata={"room": 12, "who": "ana"}, confidence=0.8),
                         timeout=TIMEOUT)
    assert (first.id, first.outcome) == ("m-1", "stored")
    second = mem.Remember(pb2.RememberRequest(memory_space_id="life-one", id="m-2", embedding=vec(1),
                                              content="the lab is on floor 3"), timeout=TIMEOUT)
    assert (second.id, second.outcome) == ("m-2", "stored")
    merged = mem.Remember(pb2.RememberRequest(memory_space_id="life-one", embedding=vec(0),
                                              content="met Ana again"), timeout=TIMEOUT)
    assert (merged.id, merged.outcome) == ("m-1", "merged")
    assert merged.similarity == pytest.approx(1.0)

    link = mem.Link(pb2.LinkRequest(memory_space_id="life-one", source="m-1", target="m-2", weight=0.9,
                                    kind="about"), timeout=TIMEOUT)
    assert (link.source, link.target, link.weight, link.kind) == ("m-1", "m-2", pytest.approx(0.9), "about")

    got = mem.Get(pb2.GetMemoryRequest(memory_space_id="life-one", id="m-1", include_embedding=True),
                  timeout=TIMEOUT)
    assert got.content == "met Ana at the lab"
    assert list(got.tags) == ["people"]
    assert json_format.MessageToDict(got.metadata) == {"room": 12.0, "who": "ana"}
    assert list(got.embedding) == pytest.approx(vec(0))
    assert [(x.target, x.kind) for x in got.links] == [("m-2", "about")]
    assert got.confidence > 0.8                   # the merge reinforced it
    assert not mem.Get(pb2.GetMemoryRequest(memory_space_id="life-one", id="m-2"), timeout=TIMEOUT).embedding

    hits = mem.Recall(pb2.RecallRequest(memory_space_id="life-one", embedding=vec(0), k=5, mode="spreading"),
                      timeout=TIMEOUT).hits
    by_id = {h.id: h for h in hits}
    assert hits[0].id == "m-1"
    assert list(by_id["m-1"].path) == ["m-1"] and by_id["m-1"].reached == "direct"
    assert list(by_id["m-2"].path) == ["m-1", "m-2"] and by_id["m-2"].reached == "link"
    assert by_id["m-2"].depth == 1 and by_id["m-2"].activation > 0
    similar = mem.Recall(pb2.RecallRequest(memory_space_id="life-one", embedding=vec(0), k=5,
                                           mode="similarity", threshold=0.5), timeout=TIMEOUT).hits
    assert [h.id for h in similar] == ["m-1"]

    forgot = mem.Forget(pb2.ForgetRequest(memory_space_id="life-one", id="m-2"), timeout=TIMEOUT)
    assert forgot.forgotten == 1
    code, _, md = error_of(mem.Get, pb2.GetMemoryRequest(memory_space_id="life-one", id="m-2"))
    assert (code, md["memspace-error-code"]) == (grpc.StatusCode.NOT_FOUND, "MEMORY_NOT_FOUND")

    status = spaces.Get(pb2.GetSpaceRequest(memory_space_id="life-one"), timeout=TIMEOUT)
    assert (status.id, status.state, status.dimension) == ("life-one", "READY", DIM)
    assert status.HasField("pid") and status.pid > 0
    listed = [s.id for s in spaces.List(pb2.ListSpacesRequest(), timeout=TIMEOUT).spaces]
    assert "life-one" in listed and "default" in listed

    drained = spaces.Drain(pb2.DrainSpaceRequest(memory_space_id="life-one"), timeout=TIMEOUT)
    assert drained.state == "STOPPED" and not drained.HasField("pid")

    receipt = spaces.Delete(pb2.DeleteSpaceRequest(memory_space_id="life-one"), timeout=TIMEOUT)
    assert (receipt.memory_space_id, receipt.deleted, receipt.memories) == ("life-one", True, 1)
    assert receipt.files > 0 and receipt.bytes > 0
    code, _, md = error_of(spaces.Get, pb2.GetSpaceRequest(memory_space_id="life-one"))
    assert (code, md["memspace-error-code"]) == (grpc.StatusCode.NOT_FOUND, "SPACE_NOT_FOUND")
    assert "life-one" not in [s.id for s in spaces.List(pb2.ListSpacesRequest(), timeout=TIMEOUT).spaces]


def test_remember_batch_and_forget_by_tag(spaces: Any, mem: Any) -> None:
    create(spaces, "batch-one")
    items = [pb2.MemoryInput(id=f"b-{i}", embedding=vec(i), content=f"item {i}", tags=["t"] if i % 2 else [])
             for i in range(4)]
    results = mem.RememberBatch(pb2.RememberBatchRequest(memory_space_id="batch-one", items=items),
                                timeout=TIMEOUT).results
    assert [(r.id, r.outcome) for r in results] == [(f"b-{i}", "stored") for i in range(4)]
    assert mem.Forget(pb2.ForgetRequest(memory_space_id="batch-one", tags=["t"]), timeout=TIMEOUT).forgotten == 2
    left = mem.Recall(pb2.RecallRequest(memory_space_id="batch-one", embedding=vec(0, 1, 2, 3), k=10,
                                        mode="similarity"), timeout=TIMEOUT).hits
    assert sorted(h.id for h in left) == ["b-0", "b-2"]


def test_spaces_are_isolated(spaces: Any, mem: Any) -> None:
    create(spaces, "iso-a")
    create(spaces, "iso-b")
    for space, text in (("iso-a", "alpha secret"), ("iso-b", "beta secret")):
        mem.Remember(pb2.RememberRequest(memory_space_id=space, id="same-id", embedding=vec(2), content=text),
                     timeout=TIMEOUT)
    mem.Remember(pb2.RememberRequest(memory_space_id="iso-a", id="only-a", embedding=vec(3), content="a only"),
                 timeout=TIMEOUT)
    assert mem.Get(pb2.GetMemoryRequest(memory_space_id="iso-a", id="same-id"), timeout=TIMEOUT).content \
        == "alpha secret"
    assert mem.Get(pb2.GetMemoryRequest(memory_space_id="iso-b", id="same-id"), timeout=TIMEOUT).content \
        == "beta secret"
    code, _, _ = error_of(mem.Get, pb2.GetMemoryRequest(memory_space_id="iso-b", id="only-a"))
    assert code == grpc.StatusCode.NOT_FOUND
    hits = mem.Recall(pb2.RecallRequest(memory_space_id="iso-b", embedding=vec(2, 3), k=10), timeout=TIMEOUT).hits
    assert [(h.id, h.content) for h in hits] == [("same-id", "beta secret")]


# -- selecting the space ------------------------------------------------------------------------

def test_space_precedence_field_metadata_default(spaces: Any, mem: Any) -> None:
    create(spaces, "prec-a")
    create(spaces, "prec-b")

    def remember(memory_id: str, field: str = "", metadata: str | None = None) -> Any:
        md = (("x-memory-space", metadata),) if metadata is not None else None
        return mem.Remember.with_call(
            pb2.RememberRequest(memory_space_id=field, id=memory_id, embedding=vec(4), content=memory_id),
            metadata=md, timeout=TIMEOUT)

    def where(memory_id: str) -> list[str]:
        found = []
        for space in ("prec-a", "prec-b", "default"):
            try:
                mem.Get(pb2.GetMemoryRequest(memory_space_id=space, id=memory_id), timeout=TIMEOUT)
                found.append(space)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND
        return found

    remember("by-field", field="prec-a")
    remember("by-metadata", metadata="prec-b")
    remember("by-both", field="prec-a", metadata="prec-a")
    _, call = remember("by-default")
    assert where("by-field") == ["prec-a"]
    assert where("by-metadata") == ["prec-b"]
    assert where("by-both") == ["prec-a"]
    assert where("by-default") == ["default"]
    warning = dict(call.initial_metadata())["warning"]
    assert warning.startswith("299 memspace") and "default" in warning
    _, named = remember("by-field-2", field="prec-a")
    assert "warning" not in dict(named.initial_metadata())

    code, message, md = error_of(mem.Remember, pb2.RememberRequest(memory_space_id="prec-a", content="x"),
                                 metadata=(("x-memory-space", "prec-b"),))
    assert (code, md["memspace-error-code"]) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFLICTING_SPACE")
    assert "prec-a" in message and "prec-b" in message
    assert where("x") == []


@pytest.mark.parametrize("field, metadata, source, value", [
    ("Bad/Id", None, "field", "Bad/Id"),
    ("", "UPPER", "metadata", "UPPER"),
    ("ok-space", "../etc", "metadata", "../etc"),
    ("ab", None, "field", "ab"),
])
def test_invalid_space_ids_name_their_source(mem: Any, field: str, metadata: str | None, source: str,
                                             value: str) -> None:
    md = (("x-memory-space", metadata),) if metadata is not None else None
    code, message, details = error_of(mem.Get, pb2.GetMemoryRequest(memory_space_id=field, id="m"), metadata=md)
    assert (code, details["memspace-error-code"]) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SPACE_ID")
    assert f"from {source}" in message and value in message
    assert json.loads(details["memspace-error-details-bin"])["source"] == source


def test_spaces_rpcs_never_fall_back_to_default(spaces: Any) -> None:
    code, message, md = error_of(spaces.Delete, pb2.DeleteSpaceRequest())
    assert (code, md["memspace-error-code"]) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert "memory_space_id" in message
    assert "default" in [s.id for s in spaces.List(pb2.ListSpacesRequest(), timeout=TIMEOUT).spaces]


# -- errors --------------------------------------------------------------------------------------

def test_error_codes_map_to_grpc_status(server: ServerProcess, spaces: Any, mem: Any) -> None:
    create(spaces, "err-one")
    cases = [
        (mem.Remember, pb2.RememberRequest(memory_space_id="no-such-space", content="x"),
         grpc.StatusCode.NOT_FOUND, "SPACE_NOT_FOUND"),
        (mem.Get, pb2.GetMemoryRequest(memory_space_id="err-one", id="missing"),
         grpc.StatusCode.NOT_FOUND, "MEMORY_NOT_FOUND"),
        (spaces.Create, pb2.CreateSpaceRequest(memory_space_id="err-one", dimension=DIM * 2),
         grpc.StatusCode.ALREADY_EXISTS, "SPACE_EXISTS"),
        (mem.Remember, pb2.RememberRequest(memory_space_id="err-one", embedding=[1.0, 0.0]),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (mem.Remember, pb2.RememberRequest(memory_space_id="err-one"),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (mem.Recall, pb2.RecallRequest(memory_space_id="err-one", query="x", mode="sideways"),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (mem.Remember, pb2.RememberRequest(memory_space_id="err-one", content="x" * (MAX_REQUEST_BYTES + 10)),
         grpc.StatusCode.INVALID_ARGUMENT, "PAYLOAD_TOO_LARGE"),
        (spaces.Create, pb2.CreateSpaceRequest(memory_space_id="err-two", settings={"decay": "sideways"}),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ]
    for call, request, status, code in cases:
        got_status, message, md = error_of(call, request)
        assert (got_status, md.get("memspace-error-code")) == (status, code), message
        assert message and message != code          # a human message, not just the code
        assert isinstance(json.loads(md["memspace-error-details-bin"]), dict)
    assert "err-two" not in [s.id for s in spaces.List(pb2.ListSpacesRequest(), timeout=TIMEOUT).spaces]


def test_failed_space_is_unavailable(server: ServerProcess, spaces: Any, mem: Any) -> None:
    create(spaces, "err-failed")
    mem.Remember(pb2.RememberRequest(memory_space_id="err-failed", content="before the damage"), timeout=TIMEOUT)
    assert spaces.Drain(pb2.DrainSpaceRequest(memory_space_id="err-failed"), timeout=TIMEOUT).state == "STOPPED"
    (server.data_root / "spaces" / "err-failed" / "space.json").write_text("{damaged")
    code, message, md = error_of(mem.Remember, pb2.RememberRequest(memory_space_id="err-failed", content="x"))
    assert (code, md["memspace-error-code"]) == (grpc.StatusCode.UNAVAILABLE, "SPACE_UNAVAILABLE")
    assert "FAILED" in message
    assert int(md["retry-after"]) >= 1
    assert spaces.Get(pb2.GetSpaceRequest(memory_space_id="err-failed"), timeout=TIMEOUT).state == "FAILED"


def test_client_settings_with_integers_survive_struct(spaces: Any) -> None:
    # Struct carries numbers as doubles; an integer setting must still be accepted as one
    made = spaces.Create(pb2.CreateSpaceRequest(memory_space_id="set-ints", dimension=DIM,
                                                settings={"max_auto_links": 2, "decay": "none"}), timeout=TIMEOUT)
    assert json_format.MessageToDict(made.space.settings) == {"max_auto_links": 2.0, "decay": "none"}


# -- idempotency ---------------------------------------------------------------------------------

def test_request_id_makes_writes_idempotent(spaces: Any, mem: Any) -> None:
    create(spaces, "idem-one")
    first = mem.Remember(pb2.RememberRequest(memory_space_id="idem-one", request_id="key-1", id="i-a",
                                             embedding=vec(5), content="first"), timeout=TIMEOUT)
    retry = mem.Remember(pb2.RememberRequest(memory_space_id="idem-one", request_id="key-1", id="i-b",
                                             embedding=vec(6), content="second"), timeout=TIMEOUT)
    assert (first.id, retry.id, retry.outcome) == ("i-a", "i-a", "stored")
    code, _, _ = error_of(mem.Get, pb2.GetMemoryRequest(memory_space_id="idem-one", id="i-b"))
    assert code == grpc.StatusCode.NOT_FOUND
    # without a key each call is its own write
    other = mem.Remember(pb2.RememberRequest(memory_space_id="idem-one", id="i-c", embedding=vec(7),
                                             content="third"), timeout=TIMEOUT)
    assert other.id == "i-c"
    forgets = [mem.Forget(pb2.ForgetRequest(memory_space_id="idem-one", request_id="key-2", id="i-a"),
                          timeout=TIMEOUT).forgotten for _ in range(2)]
    assert forgets == [1, 1]     # the retry answers the first result; nothing is forgotten twice
    code, _, _ = error_of(mem.Get, pb2.GetMemoryRequest(memory_space_id="idem-one", id="i-a"))
    assert code == grpc.StatusCode.NOT_FOUND


# -- health and reflection -----------------------------------------------------------------------

def test_health_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "memspace.v1.Spaces", "memspace.v1.Memories"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_services(channel: grpc.Channel) -> None:
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {"memspace.v1.Spaces", "memspace.v1.Memories", "grpc.health.v1.Health"} <= services
    described = db.FindFileContainingSymbol("memspace.v1.Memories")
    assert described.package == "memspace.v1"
    methods = {m.name for s in described.service if s.name == "Memories" for m in s.method}
    assert methods == {"Remember", "RememberBatch", "Get", "Forget", "Link", "Recall", "Subscribe"}


# -- change feed ---------------------------------------------------------------------------------

class Collector:
    """Reads a Subscribe stream on a thread; the test waits on a queue with a bounded timeout."""

    def __init__(self, mem: Any, request: Any) -> None:
        self.call = mem.Subscribe(request, timeout=120)
        self.events: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.call:
                self.events.put(event)
        except grpc.RpcError as e:
            self.events.put(e)

    def next(self, timeout: float = TIMEOUT) -> Any:
        item = self.events.get(timeout=timeout)
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def take(self, n: int) -> list[Any]:
        return [self.next() for _ in range(n)]

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(10)
        assert not self.thread.is_alive()


def ids_in(event: Any) -> list[str]:
    return [m["id"] for m in json_format.MessageToDict(event.data).get("memories", [])]


def test_subscribe_sees_only_its_space_and_resumes(spaces: Any, mem: Any) -> None:
    create(spaces, "feed-a")
    create(spaces, "feed-b")
    for i in range(3):
        mem.Remember(pb2.RememberRequest(memory_space_id="feed-a", id=f"fa-{i}", embedding=vec(i),
                                         content=f"a {i}"), timeout=TIMEOUT)
        mem.Remember(pb2.RememberRequest(memory_space_id="feed-b", id=f"fb-{i}", embedding=vec(i),
                                         content=f"b {i}"), timeout=TIMEOUT)
    feed = Collector(mem, pb2.SubscribeRequest(memory_space_id="feed-a", data_only=True))
    try:
        events = feed.take(3)
        assert [(e.type, e.memory_space_id, ids_in(e)) for e in events] == \
            [("remember", "feed-a", [f"fa-{i}"]) for i in range(3)]
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        # live events: a write to feed-b first, so a leak would arrive before feed-a's
        mem.Remember(pb2.RememberRequest(memory_space_id="feed-b", id="fb-live", embedding=vec(5), content="b"),
                     timeout=TIMEOUT)
        mem.Link(pb2.LinkRequest(memory_space_id="feed-a", source="fa-0", target="fa-1", weight=0.5),
                 timeout=TIMEOUT)
        live = feed.next()
        assert (live.type, live.memory_space_id) == ("link", "feed-a")
        assert json_format.MessageToDict(live.data)["source"] == "fa-0"
        assert live.seq > seqs[-1]
    finally:
        feed.close()

    mem.Forget(pb2.ForgetRequest(memory_space_id="feed-a", id="fa-2"), timeout=TIMEOUT)
    resumed = Collector(mem, pb2.SubscribeRequest(memory_space_id="feed-a", data_only=True, after_seq=seqs[1]))
    try:
        got = resumed.take(3)
        assert [(e.type, e.seq) for e in got][:2] == [("remember", seqs[2]), ("link", live.seq)]
        assert ids_in(got[0]) == ["fa-2"]
        assert got[2].type == "forget" and json_format.MessageToDict(got[2].data)["ids"] == ["fa-2"]
    finally:
        resumed.close()


def test_subscribe_lifecycle_events_are_exact_to_the_space(spaces: Any, mem: Any) -> None:
    # "lcy" is a prefix of "lcy-2": zmq topics match by prefix, the feed must not
    for space in ("lcy", "lcy-2"):
        create(spaces, space)
    feed = Collector(mem, pb2.SubscribeRequest(memory_space_id="lcy"))
    seen: list[Any] = []
    try:
        # the SUB socket joins asynchronously: cycle lcy until one of its transitions arrives
        for _ in range(20):
            spaces.Drain(pb2.DrainSpaceRequest(memory_space_id="lcy"), timeout=TIMEOUT)
            try:
                seen.append(feed.next(timeout=5.0))
                break
            except queue.Empty:
                continue
        assert seen, "no lifecycle event of lcy arrived"
        # now subscribed: lcy-2's transitions come first, then lcy's deletion
        mem.Remember(pb2.RememberRequest(memory_space_id="lcy-2", content="wake up"), timeout=TIMEOUT)
        assert spaces.Drain(pb2.DrainSpaceRequest(memory_space_id="lcy-2"), timeout=TIMEOUT).state == "STOPPED"
        spaces.Delete(pb2.DeleteSpaceRequest(memory_space_id="lcy"), timeout=TIMEOUT)
        while not (seen[-1].type == "lifecycle" and seen[-1].lifecycle.new == "DELETING"):
            seen.append(feed.next())
        assert {e.type for e in seen} == {"lifecycle"}
        assert {e.memory_space_id for e in seen} == {"lcy"}
        assert all(e.seq == 0 and e.at > 0 for e in seen)
        # the deleted space ends the stream
        with pytest.raises(grpc.RpcError) as info:
            feed.next()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        feed.close()


def test_subscribe_unknown_space_fails(mem: Any) -> None:
    feed = Collector(mem, pb2.SubscribeRequest(memory_space_id="feed-none", data_only=True))
    with pytest.raises(grpc.RpcError) as info:
        feed.next()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert dict(info.value.trailing_metadata())["memspace-error-code"] == "SPACE_NOT_FOUND"
    feed.close()


def test_require_explicit_space_and_clean_shutdown_with_open_stream(tmp_path: Any) -> None:
    proc = ServerProcess(tmp_path / "data", grpc=True, env={"MEMSPACE_REQUIRE_EXPLICIT_SPACE": "true"}).start()
    try:
        with grpc.insecure_channel(proc.endpoints["grpc"]) as ch:
            mem, spaces = stub(ch, "Memories"), stub(ch, "Spaces")
            code, message, md = error_of(mem.Remember, pb2.RememberRequest(content="who am I?"))
            assert (code, md["memspace-error-code"]) == (grpc.StatusCode.INVALID_ARGUMENT, "SPACE_REQUIRED")
            assert "memory_space_id" in message and "x-memory-space" in message
            create(spaces, "shut-one", dimension=16)
            mem.Remember(pb2.RememberRequest(memory_space_id="shut-one", content="still here"), timeout=TIMEOUT)
            feed = Collector(mem, pb2.SubscribeRequest(memory_space_id="shut-one", data_only=True))
            assert feed.next().type == "remember"
            code = proc.stop()                      # SIGTERM with the stream open
            assert code == 0, proc.log_tail()
            # the stream ended (cleanly or UNAVAILABLE), it did not hang
            feed.thread.join(TIMEOUT)
            assert not feed.thread.is_alive()
    finally:
        proc.kill()
    log = proc.stderr_path.read_text()
    assert "gRPC gateway stopping" in log
    assert "Traceback" not in log
