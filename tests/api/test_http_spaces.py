"""Spaces, health and NDJSON export/import over REST against a real server."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest
from http_support import DIM, Gateway, create_space, error_of, new_space, vec


def test_create_is_201_then_200_then_409(http: httpx.Client) -> None:
    space = new_space("create")
    first = http.post("/v1/spaces", json={"id": space, "dimension": DIM, "settings": {"dedup_threshold": 0.9}})
    assert first.status_code == 201, first.text
    assert first.json()["created"] is True and first.json()["space"]["id"] == space
    assert first.json()["space"]["dimension"] == DIM
    again = http.post("/v1/spaces", json={"id": space, "dimension": DIM, "settings": {"dedup_threshold": 0.9}})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["space"]["id"] == space
    err = error_of(http.post("/v1/spaces", json={"id": space, "dimension": DIM + 1}), 409, "SPACE_EXISTS")
    assert "dimension" in err["message"]
    err = error_of(http.post("/v1/spaces", json={"id": "Bad.Id"}), 400, "INVALID_SPACE_ID")
    assert err["details"]["source"] == "body"
    error_of(http.post("/v1/spaces", json={"dimension": 4}), 400, "INVALID_ARGUMENT")
    error_of(http.post("/v1/spaces", json={"id": new_space(), "settings": {"colour": 1}}), 400, "INVALID_ARGUMENT")


def test_list_get_status_and_delete_receipt(http: httpx.Client, gateway: Gateway) -> None:
    space = create_space(http)
    for i in range(3):
        http.post(f"/v1/spaces/{space}/memories", json={"id": f"d{i}", "content": f"m{i}",
                                                        "embedding": vec(*([0] * i + [1]))})
    listed = {s["id"]: s for s in http.get("/v1/spaces").json()["spaces"]}
    assert listed[space]["state"] == "READY" and "default" in listed
    one = http.get(f"/v1/spaces/{space}").json()
    assert one["id"] == space and one["state"] == "READY" and isinstance(one["pid"], int)
    status = http.get("/v1/status").json()
    assert space in {s["id"] for s in status["spaces"]} and status["spaces_by_state"]["READY"] >= 1

    directory = gateway.server.data_root / "spaces" / space
    assert directory.is_dir()
    receipt = http.delete(f"/v1/spaces/{space}")
    assert receipt.status_code == 200, receipt.text
    body = receipt.json()
    assert body["space"] == space and body["deleted"] is True and body["memories"] == 3
    assert body["files"] > 0 and body["bytes"] > 0
    assert not directory.exists()
    error_of(http.get(f"/v1/spaces/{space}"), 404, "SPACE_NOT_FOUND")
    error_of(http.get(f"/v1/spaces/{space}/memories/d0"), 404, "SPACE_NOT_FOUND")
    error_of(http.delete(f"/v1/spaces/{space}"), 404, "SPACE_NOT_FOUND")
    assert space not in {s["id"] for s in http.get("/v1/spaces").json()["spaces"]}


def test_drain_hibernate_restart(http: httpx.Client) -> None:
    space = create_space(http)
    http.post(f"/v1/spaces/{space}/memories", json={"id": "keep", "content": "kept", "embedding": vec(1)})
    drained = http.post(f"/v1/spaces/{space}/drain")
    assert drained.status_code == 200 and drained.json()["state"] == "STOPPED" and drained.json()["pid"] is None
    # the next request starts it again, with its data
    assert http.get(f"/v1/spaces/{space}/memories/keep").json()["content"] == "kept"
    hib = http.post(f"/v1/spaces/{space}/hibernate")
    assert hib.status_code == 200 and hib.json()["state"] == "HIBERNATED"
    restarted = http.post(f"/v1/spaces/{space}/restart")
    assert restarted.status_code == 200 and restarted.json()["state"] == "READY"
    assert isinstance(restarted.json()["pid"], int)
    error_of(http.post(f"/v1/spaces/{new_space('nope')}/drain"), 404, "SPACE_NOT_FOUND")


def test_failed_space_is_503_with_retry_after(http: httpx.Client, gateway: Gateway) -> None:
    space = create_space(http, new_space("broken"))
    http.post(f"/v1/spaces/{space}/memories", json={"content": "x", "embedding": vec(1)})
    assert http.post(f"/v1/spaces/{space}/drain").json()["state"] == "STOPPED"
    # damage the space's files: its next start is a boot error, the space goes FAILED
    (gateway.server.data_root / "spaces" / space / "space.json").write_bytes(b"{not json")
    first = http.get(f"/v1/spaces/{space}/memories")
    err = error_of(first, 503, "SPACE_UNAVAILABLE")
    assert "FAILED" in err["message"] and int(first.headers["retry-after"]) >= 1
    again = http.post(f"/v1/spaces/{space}/recall", json={"query": "x"})
    err = error_of(again, 503, "SPACE_UNAVAILABLE")
    assert "repair" in err["message"] and again.headers["retry-after"] == "30"
    assert http.get(f"/v1/spaces/{space}").json()["state"] == "FAILED"


def test_health_ready_and_docs(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"ready": True}
    docs = http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower() and "/openapi.json" in docs.text


def test_export_import_round_trip(http: httpx.Client) -> None:
    source, target = create_space(http, new_space("src")), create_space(http, new_space("dst"))
    n = 1203   # more than two export pages and two import batches
    for start in range(0, n, 500):
        items = [{"id": f"e{i:05d}", "content": f"memory {i}", "tags": [f"t{i % 3}"], "metadata": {"i": i},
                  "embedding": [((i * 7 + j * 3) % 11) - 5.0 for j in range(DIM)]}
                 for i in range(start, min(n, start + 500))]
        assert http.post(f"/v1/spaces/{source}/memories:batch", json={"items": items}).status_code == 200
    http.post(f"/v1/spaces/{source}/links", json={"source": "e00001", "target": "e00002", "weight": 0.5})

    exported = http.get(f"/v1/spaces/{source}/export")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/x-ndjson")
    lines = exported.content.splitlines()
    records = [orjson.loads(line) for line in lines]
    assert [r["id"] for r in records] == [f"e{i:05d}" for i in range(n)]
    assert all(len(r["embedding"]) == DIM for r in records)

    def body():   # streamed in odd-sized chunks: lines are split across chunks
        data = exported.content
        for i in range(0, len(data), 7777):
            yield data[i:i + 7777]

    r = http.post(f"/v1/spaces/{target}/import", content=body(), headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert r.json() == {"imported": n}
    again = http.get(f"/v1/spaces/{target}/export").content
    # a restore: the same lines, byte for byte (ids, embeddings, times, counts, every link)
    assert again == exported.content
    links_out = sum(len(r["links"]) for r in records)
    assert links_out > n   # auto-links both ways: many point to later lines (and to later batches)
    got = http.get(f"/v1/spaces/{target}/memories/e00001").json()
    assert {"target": "e00002", "weight": 0.5, "kind": "related"} in got["links"]
    # importing it again replaces every memory with itself
    r = http.post(f"/v1/spaces/{target}/import", content=exported.content)
    assert r.json() == {"imported": n} and http.get(f"/v1/spaces/{target}/export").content == again


def test_import_bad_line_names_it_and_keeps_earlier_batches(http: httpx.Client) -> None:
    space = create_space(http)
    good = [orjson.dumps({"id": f"g{i:04d}", "content": f"good {i}",
                          "embedding": [float((i + j) % 5) - 2 for j in range(DIM)]}) for i in range(600)]
    body = b"\n".join(good[:550] + [b"{oops"] + good[550:]) + b"\n"
    err = error_of(http.post(f"/v1/spaces/{space}/import", content=body), 400, "INVALID_ARGUMENT")
    assert err["message"].startswith("line 551: not valid JSON")
    assert err["details"]["line"] == 551 and err["details"]["imported"] == 500
    assert "500 memories" in err["message"] and "stay imported" in err["message"]
    ids = []
    cursor = None
    for _ in range(10):
        page = http.get(f"/v1/spaces/{space}/memories", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}
                        ).json()
        ids += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert ids == [f"g{i:04d}" for i in range(500)]

    # an engine error inside a batch names the line of the offending memory
    bad_dim = b"\n".join([good[0], orjson.dumps({"id": "short", "embedding": [1.0, 2.0]})])
    err = error_of(http.post(f"/v1/spaces/{space}/import", content=bad_dim), 400, "INVALID_ARGUMENT")
    assert err["message"].startswith("line 2: ") and err["details"]["line"] == 2
    one_bad = orjson.dumps({"id": "alone", "content": "x", "confidence": 7})
    err = error_of(http.post(f"/v1/spaces/{space}/import", content=b"\n" + one_bad), 400, "INVALID_ARGUMENT")
    assert err["message"].startswith("line 2: items[0].confidence") and err["details"]["line"] == 2
    err = error_of(http.post(f"/v1/spaces/{space}/import", content=b"[1]\n"), 400, "INVALID_ARGUMENT")
    assert err["message"].startswith("line 1: expected a JSON object")


def test_import_with_idempotency_key_is_not_applied_twice(http: httpx.Client) -> None:
    space = create_space(http)
    lines = b"".join(orjson.dumps({"id": f"k{i}", "embedding": [float(i == j) for j in range(DIM)]}) + b"\n"
                     for i in range(DIM))
    key = uuid.uuid4().hex
    seqs = []
    for _ in range(2):
        r = http.post(f"/v1/spaces/{space}/import", content=lines, headers={"Idempotency-Key": key})
        assert r.json() == {"imported": DIM}
        seqs.append(http.get(f"/v1/spaces/{space}/stats").json()["wal_last_seq"])
    assert seqs[0] == seqs[1]                       # the second time nothing was written
    assert len(http.get(f"/v1/spaces/{space}/memories").json()["items"]) == DIM


def test_import_line_longer_than_the_limit_is_413(http: httpx.Client) -> None:
    space = create_space(http)
    huge = b'{"content": "' + b"x" * (300 * 1024) + b'"}\n'
    err = error_of(http.post(f"/v1/spaces/{space}/import", content=huge), 413, "PAYLOAD_TOO_LARGE")
    assert err["details"]["line"] == 1 and err["message"].startswith("line 1 is ")

    def streamed():   # the long line arrives in pieces (refused as soon as the buffered part is too long)
        yield b'{"id": "ok", "content": "fine", "embedding": [1, 0, 0, 0, 0, 0, 0, 0]}\n{"content": "'
        for _ in range(40):
            yield b"y" * 8192
        yield b'"}\n'

    err = error_of(http.post(f"/v1/spaces/{space}/import", content=streamed()), 413, "PAYLOAD_TOO_LARGE")
    assert err["details"]["line"] == 2 and err["message"].startswith("line 2 is ")
    assert err["details"]["imported"] == 0 and "nothing from that line on" in err["message"]


@pytest.mark.parametrize("path", ["/v1/spaces/{space}/export", "/v1/spaces/{space}/events"])
def test_streams_of_an_unknown_space_are_404(http: httpx.Client, path: str) -> None:
    error_of(http.get(path.format(space=new_space("ghost"))), 404, "SPACE_NOT_FOUND")
