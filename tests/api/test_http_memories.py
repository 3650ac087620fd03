"""Memories over REST against a real server: the path-scoped routes, isolation between spaces,
space selection on the compatibility routes, idempotency and the error envelope."""

from __future__ import annotations

import uuid

import httpx
import pytest
from http_support import DIM, Gateway, create_space, error_of, new_space, vec


def test_remember_get_recall_link_forget_list(http: httpx.Client) -> None:
    space = create_space(http)
    base = f"/v1/spaces/{space}"
    r = http.post(f"{base}/memories", json={"id": "m-1", "content": "met Ana at the lab", "embedding": vec(1),
                                             "tags": ["people"], "metadata": {"where": "lab"}, "confidence": 0.8})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "m-1" and r.json()["outcome"] == "stored"
    r = http.post(f"{base}/memories", json={"id": "m-2", "content": "Ana works on spiking nets",
                                             "embedding": vec(0, 1)})
    assert r.json()["outcome"] == "stored"

    got = http.get(f"{base}/memories/m-1").json()
    assert got["content"] == "met Ana at the lab" and got["tags"] == ["people"]
    assert got["metadata"] == {"where": "lab"} and got["confidence"] == pytest.approx(0.8)
    assert "embedding" not in got
    with_vec = http.get(f"{base}/memories/m-1", params={"embedding": "true"}).json()
    assert with_vec["embedding"] == pytest.approx(vec(1))

    r = http.post(f"{base}/links", json={"source": "m-1", "target": "m-2", "weight": 0.9, "kind": "about"})
    assert r.status_code == 200, r.text
    assert r.json() == {"source": "m-1", "target": "m-2", "weight": pytest.approx(0.9), "kind": "about"}

    # spreading from m-1 reaches m-2 over the link even though m-2 is orthogonal to the cue
    hits = http.post(f"{base}/recall", json={"embedding": vec(1), "k": 5, "threshold": 0.5}).json()["results"]
    by_id = {h["id"]: h for h in hits}
    assert by_id["m-1"]["path"] == ["m-1"] and by_id["m-1"]["similarity"] == pytest.approx(1.0)
    assert by_id["m-2"]["path"] == ["m-1", "m-2"] and by_id["m-2"]["activation"] > 0
    assert set(hits[0]) >= {"id", "content", "score", "similarity", "activation", "confidence", "path"}
    only_sim = http.post(f"{base}/recall", json={"embedding": vec(1), "threshold": 0.5,
                                                 "mode": "similarity"}).json()["results"]
    assert [h["id"] for h in only_sim] == ["m-1"]

    page1 = http.get(f"{base}/memories", params={"limit": 1}).json()
    assert [m["id"] for m in page1["items"]] == ["m-1"] and page1["next_cursor"]
    page2 = http.get(f"{base}/memories", params={"limit": 1, "cursor": page1["next_cursor"]}).json()
    assert [m["id"] for m in page2["items"]] == ["m-2"] and page2["next_cursor"] is None

    assert http.delete(f"{base}/memories/m-1").json() == {"forgotten": 1}
    error_of(http.get(f"{base}/memories/m-1"), 404, "MEMORY_NOT_FOUND")
    error_of(http.delete(f"{base}/memories/m-1"), 404, "MEMORY_NOT_FOUND")
    assert [m["id"] for m in http.get(f"{base}/memories").json()["items"]] == ["m-2"]


def test_batch_and_forget_by_filter(http: httpx.Client) -> None:
    space = create_space(http)
    items = [{"id": f"b{i}", "content": f"item {i}", "embedding": vec(*([0] * i + [1])), "tags": ["t"]}
             for i in range(DIM)]
    r = http.post(f"/v1/spaces/{space}/memories:batch", json={"items": items})
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["results"]] == [f"b{i}" for i in range(DIM)]
    assert http.post(f"/v1/spaces/{space}/forget", json={"tags": ["t"]}).json() == {"forgotten": DIM}
    assert http.get(f"/v1/spaces/{space}/memories").json()["items"] == []


def test_two_spaces_are_isolated(http: httpx.Client) -> None:
    alpha, beta = create_space(http, new_space("alpha")), create_space(http, new_space("beta"))
    for space, text in ((alpha, "alpha secret"), (beta, "beta secret")):
        r = http.post(f"/v1/spaces/{space}/memories", json={"id": "same", "content": text, "embedding": vec(1)})
        assert r.json() == {"id": "same", "outcome": "stored", "similarity": None, "links": []}
    http.post(f"/v1/spaces/{alpha}/memories", json={"id": "only-alpha", "content": "x", "embedding": vec(0, 1)})
    assert http.get(f"/v1/spaces/{alpha}/memories/same").json()["content"] == "alpha secret"
    assert http.get(f"/v1/spaces/{beta}/memories/same").json()["content"] == "beta secret"
    error_of(http.get(f"/v1/spaces/{beta}/memories/only-alpha"), 404, "MEMORY_NOT_FOUND")
    for space, text in ((alpha, "alpha secret"), (beta, "beta secret")):
        hits = http.post(f"/v1/spaces/{space}/recall", json={"embedding": vec(1), "k": 10}).json()["results"]
        assert {h["content"] for h in hits if h["id"] == "same"} == {text}
        assert all(h["content"] != ("beta secret" if space == alpha else "alpha secret") for h in hits)
    assert {m["id"] for m in http.get(f"/v1/spaces/{beta}/memories").json()["items"]} == {"same"}


def test_compat_precedence_header_query_body_default(http: httpx.Client) -> None:
    h, q, b = (create_space(http, new_space(p)) for p in ("hdr", "qry", "bdy"))
    mem = {"content": "precedence", "embedding": vec(0, 0, 1)}

    def remember(mid: str, headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
                 body_space: str | None = None) -> httpx.Response:
        body = {**mem, "id": mid, **({"memory_space_id": body_space} if body_space else {})}
        return http.post("/v1/memories", json=body, headers=headers or {}, params=params or {})

    # header wins over query and body only when they agree; so give each source alone, then all equal
    assert remember("p-h", headers={"X-Memory-Space": h}).status_code == 200
    assert remember("p-q", params={"space": q}).status_code == 200
    assert remember("p-b", body_space=b).status_code == 200
    r = remember("p-all", headers={"X-Memory-Space": h}, params={"space": h}, body_space=h)
    assert r.status_code == 200 and "warning" not in r.headers
    assert http.get(f"/v1/spaces/{h}/memories/p-h").status_code == 200
    assert http.get(f"/v1/spaces/{h}/memories/p-all").status_code == 200
    assert http.get(f"/v1/spaces/{q}/memories/p-q").status_code == 200
    assert http.get(f"/v1/spaces/{b}/memories/p-b").status_code == 200
    error_of(http.get(f"/v1/spaces/{q}/memories/p-h"), 404, "MEMORY_NOT_FOUND")

    # compat GET and recall follow the same rules
    assert http.get("/v1/memories/p-q", params={"space": q}).json()["content"] == "precedence"
    assert http.get("/v1/memories/p-h", headers={"X-Memory-Space": h}).json()["id"] == "p-h"
    hits = http.post("/v1/recall", json={"embedding": vec(0, 0, 1), "memory_space_id": b}).json()["results"]
    assert [x["id"] for x in hits] == ["p-b"]

    # disagreement between any two sources is refused, naming both
    for headers, params, body_space, names in (
            ({"X-Memory-Space": h}, {"space": q}, None, ("header", "query")),
            ({"X-Memory-Space": h}, None, b, ("header", "body")),
            (None, {"space": q}, b, ("query", "body"))):
        err = error_of(remember("p-x", headers, params, body_space), 400, "CONFLICTING_SPACE")
        assert all(n in err["message"] for n in names), err
        assert set(err["details"]["sources"]) == set(names)
    # a path-scoped route with a header naming another space is a conflict too
    err = error_of(http.get(f"/v1/spaces/{h}/memories", headers={"X-Memory-Space": q}), 400, "CONFLICTING_SPACE")
    assert err["details"]["sources"] == {"path": h, "header": q}


def test_default_fallback_adds_warning(gateway: Gateway) -> None:
    agent = f"fallback-test/{uuid.uuid4().hex[:8]}"
    http = gateway.client(headers={"User-Agent": agent})
    mid = f"fallback-{uuid.uuid4().hex[:8]}"
    r = http.post("/v1/memories", json={"id": mid, "content": "no space named", "embedding": vec(1, 1)})
    assert r.status_code == 200, r.text
    assert r.headers["warning"].startswith('299 memspace "') and "'default'" in r.headers["warning"]
    assert http.get(f"/v1/spaces/default/memories/{mid}").json()["content"] == "no space named"
    r = http.get(f"/v1/memories/{mid}")
    assert r.status_code == 200 and r.headers["warning"].startswith("299 memspace")
    r = http.post("/v1/recall", json={"embedding": vec(1, 1), "k": 1})
    assert r.status_code == 200 and "warning" in r.headers and r.json()["results"][0]["id"] == mid
    # naming the default space explicitly is not a fallback
    r = http.get(f"/v1/memories/{mid}", headers={"X-Memory-Space": "default"})
    assert r.status_code == 200 and "warning" not in r.headers
    # three fallbacks, one log line for this client (remote address + User-Agent); the gateway
    # logs (and flushes) before it answers
    log = gateway.server.stderr_path.read_text(errors="replace")
    assert sum(1 for line in log.splitlines() if "named no memory space" in line and agent in line) == 1


BAD_IDS = ["Alpha", "a/b", "ab", "x" * 65, "al pha", "ünï", "-ab", "a.b"]


# a "/" in the path makes another route (404 NOT_FOUND, see test_unknown_route_and_method_use_the_envelope)
@pytest.mark.parametrize(("source", "bad"), [(s, b) for s in ("path", "header", "query", "body") for b in BAD_IDS
                                             if not (s == "path" and "/" in b)])
def test_invalid_space_id_names_its_source(http: httpx.Client, source: str, bad: str) -> None:
    mem = {"content": "x", "embedding": vec(1)}
    if source == "path":
        r = http.post(f"/v1/spaces/{bad}/memories", json=mem)
    elif source == "header":
        try:
            r = http.post("/v1/memories", json=mem, headers={"X-Memory-Space": bad})
        except UnicodeEncodeError:
            r = http.post("/v1/memories", json=mem, headers=[(b"X-Memory-Space", bad.encode("utf-8"))])
    elif source == "query":
        r = http.post("/v1/memories", json=mem, params={"space": bad})
    else:
        r = http.post("/v1/memories", json={**mem, "memory_space_id": bad})
    err = error_of(r, 400, "INVALID_SPACE_ID")
    assert err["details"]["source"] == source and f"from {source}" in err["message"], err


def test_unknown_space_and_create_semantics(http: httpx.Client) -> None:
    missing = new_space("missing")
    err = error_of(http.post(f"/v1/spaces/{missing}/recall", json={"query": "x"}), 404, "SPACE_NOT_FOUND")
    assert missing in err["message"]
    error_of(http.get("/v1/memories/x", headers={"X-Memory-Space": missing}), 404, "SPACE_NOT_FOUND")
    error_of(http.get(f"/v1/spaces/{missing}"), 404, "SPACE_NOT_FOUND")


def test_errors_from_validation_and_engine_are_400(http: httpx.Client) -> None:
    space = create_space(http)
    base = f"/v1/spaces/{space}"
    err = error_of(http.post(f"{base}/recall", json={"k": "many"}), 400, "INVALID_ARGUMENT")
    assert err["details"]["field"] == "k" and "'k'" in err["message"]
    err = error_of(http.post(f"{base}/memories", json={"content": "x", "colour": "red"}), 400, "INVALID_ARGUMENT")
    assert err["details"]["field"] == "colour"
    err = error_of(http.post(f"{base}/memories", content=b'{"content": ', headers={"content-type": "application/json"}),
                   400, "INVALID_ARGUMENT")
    assert "not valid JSON" in err["message"]
    err = error_of(http.post(f"{base}/memories", content=b"[1, 2]", headers={"content-type": "application/json"}),
                   400, "INVALID_ARGUMENT")
    assert "JSON object" in err["message"]
    # the engine's own checks pass through unchanged
    err = error_of(http.post(f"{base}/memories", json={"embedding": [1.0, 2.0]}), 400, "INVALID_ARGUMENT")
    assert "embedding" in err["message"] and str(DIM) in err["message"]
    err = error_of(http.post(f"{base}/recall", json={"query": "x", "k": 51}), 400, "INVALID_ARGUMENT")
    assert "50" in err["message"]
    err = error_of(http.post(f"{base}/memories", json={"content": "x" * (17 * 1024)}), 400, "INVALID_ARGUMENT")
    assert "content" in err["message"]
    items = [{"content": f"c{i}"} for i in range(1001)]
    error_of(http.post(f"{base}/memories:batch", json={"items": items}), 400, "INVALID_ARGUMENT")
    err = error_of(http.get(f"{base}/memories/bad%20id"), 400, "INVALID_ARGUMENT")
    assert "memory id" in err["message"]
    err = error_of(http.post(f"{base}/memories", json={"content": "x"}, headers={"Idempotency-Key": "a b"}),
                   400, "INVALID_ARGUMENT")
    assert "Idempotency-Key" in err["message"]


def test_unknown_route_and_method_use_the_envelope(http: httpx.Client) -> None:
    err = error_of(http.get("/v1/nothing-here"), 404, "NOT_FOUND")
    assert "/v1/nothing-here" in err["message"]
    error_of(http.get("/v1/spaces/a/b/memories"), 404, "NOT_FOUND")
    error_of(http.put("/v1/spaces"), 405, "METHOD_NOT_ALLOWED")


def test_payload_too_large(http: httpx.Client) -> None:
    space = create_space(http)
    big = {"content": "x", "metadata": {"blob": "y" * (300 * 1024)}}
    err = error_of(http.post(f"/v1/spaces/{space}/memories", json=big), 413, "PAYLOAD_TOO_LARGE")
    assert err["details"]["limit"] == 256 * 1024 and "max_request_bytes" in err["message"]

    def chunks():   # no Content-Length: the gateway counts what arrives
        yield b'{"content": "x", "metadata": {"blob": "'
        for _ in range(40):
            yield b"z" * 8192
        yield b'"}}'

    r = http.post(f"/v1/spaces/{space}/memories", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    err = error_of(r, 413, "PAYLOAD_TOO_LARGE")
    assert err["details"]["size"] > 256 * 1024
    assert http.get(f"/v1/spaces/{space}/memories").json()["items"] == []


def test_idempotency_key_applies_a_retried_write_once(http: httpx.Client) -> None:
    space = create_space(http)
    key = uuid.uuid4().hex
    first = http.post(f"/v1/spaces/{space}/memories", json={"content": "only once", "embedding": vec(1)},
                      headers={"Idempotency-Key": key})
    again = http.post(f"/v1/spaces/{space}/memories", json={"content": "only once", "embedding": vec(1)},
                      headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and first.json()["outcome"] == "stored"
    items = http.get(f"/v1/spaces/{space}/memories").json()["items"]
    assert [(m["id"], m["access_count"]) for m in items] == [(first.json()["id"], 0)]
    # without a key the same write is a new request: it merges into the existing memory
    third = http.post(f"/v1/spaces/{space}/memories", json={"content": "only once", "embedding": vec(1)})
    assert third.json()["outcome"] == "merged" and third.json()["id"] == first.json()["id"]
    # forget with a key: the retry answers the first result instead of MEMORY_NOT_FOUND
    fkey = uuid.uuid4().hex
    assert http.delete(f"/v1/spaces/{space}/memories/{first.json()['id']}",
                       headers={"Idempotency-Key": fkey}).json() == {"forgotten": 1}
    assert http.delete(f"/v1/spaces/{space}/memories/{first.json()['id']}",
                       headers={"Idempotency-Key": fkey}).json() == {"forgotten": 1}
