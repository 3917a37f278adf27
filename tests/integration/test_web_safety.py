"""A local server no input can break and no other web page can use (issue 13, items 5 and 6).

Every input that once answered 500 is a 4xx naming the problem, on every route it can reach; only the
loopback ``Host`` names (and the allow-list) are served; a cross-site form cannot change anything;
every answer carries the security headers; the page is never shown an absolute path; models unload.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from attnlab import catalog as cat
from attnlab.experiments.common import finish
from attnlab.web import models as web_models
from attnlab.web.app import ERRORS, create_app
from attnlab.web.demo import register_demo_models
from attnlab.web.guard import CSP, host_name
from attnlab.web.serve import allowed_hosts

LOCAL = "http://127.0.0.1"
# A valid body for every POST route, by path (a new POST route must be added here: the test says so).
VALID = {
    "/api/attention": {"model": "demo-decoder", "text": "hello"},
    "/api/qkv": {"model": "demo-decoder", "text": "hello", "layer": 1, "head": 1, "focus": 2},
    "/api/part": {"model": "demo-decoder", "text": "hello", "part": "feed-forward", "layer": 0},
    "/api/positions": {"model": "demo-encoder", "first": "ab", "second": "ba"},
    "/api/generate": {"model": "demo-decoder", "text": "hello", "max_new_tokens": 3, "temperature": 0.8, "seed": 1},
    "/api/timeline/attention": {"model": "demo-decoder", "step": 0, "layer": 0, "head": 0},
    "/api/translate": {"model": "demo-translator", "text": "In the beginning", "max_new_tokens": 4},
    "/api/heads/rank": {"model": "demo-decoder", "text": "hello", "query": 3, "key": 1},
    "/api/next-token": {"model": "demo-decoder", "text": "hello"},
    "/api/models/{name}/load": {},
    "/api/why": {"model": "demo-decoder", "text": "hello", "layer": 1, "head": 1, "focus": 2},
    "/api/ablation": {"model": "demo-decoder", "text": "hello", "layer": 1, "head": 1},
    "/api/heads/contexts": {"model": "demo-decoder", "layer": 1, "head": 1, "k": 3, "sentences": 20},
    "/api/shape": {"model": "demo-decoder"},
    "/api/ffn": {"model": "demo-decoder", "text": "hello", "layer": 1, "focus": 2},
}
TEXT_FIELDS = {"/api/attention": ["text"], "/api/qkv": ["text"], "/api/part": ["text"],
               "/api/positions": ["first", "second"], "/api/generate": ["text"], "/api/translate": ["text"],
               "/api/heads/rank": ["text"], "/api/next-token": ["text"], "/api/why": ["text"],
               "/api/ablation": ["text"], "/api/ffn": ["text"]}
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e309", "-1e309"]


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """POST /api/heads/contexts caches its corpus passes under $XDG_CACHE_HOME: a temporary one here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    register_demo_models(tmp_path_factory.mktemp("timeline"))
    return create_app(experiments_dir=tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app, base_url=LOCAL)


def _post_routes(app) -> list[str]:
    return sorted(r.path for r in app.routes if isinstance(r, APIRoute) and "POST" in r.methods)


def _url(path: str) -> str:
    return path.replace("{name}", "demo-decoder")


def _raw(client: TestClient, path: str, body: bytes, **headers: str):
    return client.post(_url(path), content=body, headers={"content-type": "application/json", **headers})


def test_every_post_route_has_a_valid_example_that_is_accepted(app, client: TestClient) -> None:
    assert _post_routes(app) == sorted(VALID), "a POST route was added or removed: list a valid body in VALID"
    for path, body in VALID.items():
        r = client.post(_url(path), json=body)
        assert r.status_code == 200, (path, r.text)


# --- item 5: no input is a 5xx ------------------------------------------------------------------------------


@pytest.mark.parametrize("literal", NON_FINITE)
def test_non_finite_numbers_anywhere_in_a_body_are_422_on_every_post_route(app, client: TestClient, literal: str) -> None:
    for path in _post_routes(app):
        fields = list(VALID[path]) or ["model"]
        for field in fields:  # in place of each field, where the field is a string, a number or absent
            body = {**VALID[path]}
            body.pop(field, None)
            text = json.dumps(body)[:-1] + (", " if body else "") + f'"{field}": {literal}}}'
            r = _raw(client, path, text.encode())
            assert r.status_code == 422, (path, field, r.text)
            assert literal.lstrip("-") in r.json()["detail"] and r.json()["errors"] == []
        nested = json.dumps(VALID[path])[:-1] + (", " if VALID[path] else "") + f'"extra": [1, {{"x": {literal}}}]}}'
        assert _raw(client, path, nested.encode()).status_code == 422, (path, "nested")


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\udbff", "a\\ud800b", "\\udc00\\ud800"])
def test_lone_surrogates_are_422_on_every_text_route(client: TestClient, escape: str) -> None:
    for path, fields in TEXT_FIELDS.items():
        for field in fields:
            body = json.dumps({**VALID[path], field: "@@"}).replace("@@", escape).encode()
            r = _raw(client, path, body)
            assert r.status_code == 422, (path, field, r.text)
            assert "surrogate" in r.json()["detail"]
    # a surrogate *pair* is one real character (U+1F600): not refused as a surrogate
    r = _raw(client, "/api/attention", b'{"model": "demo-decoder", "text": "hi \\ud83d\\ude00"}')
    assert r.status_code == 422 and "surrogate" not in r.text and "cannot encode" in r.text


@pytest.mark.parametrize("model", ["demo-decoder", "demo-encoder", "demo-seq2seq", "demo-translator", "shakespeare-char"])
def test_lone_surrogates_are_422_for_every_model(client: TestClient, model: str) -> None:
    r = _raw(client, "/api/attention", json.dumps({"model": model, "text": "@@"}).replace("@@", "a\\ud800b").encode())
    assert r.status_code == 422 and "surrogate" in r.text


def test_bodies_that_are_not_json_text_are_422(client: TestClient) -> None:
    for body in (b'{"model": "demo-decoder", "text": "caf\xe9"}', b"\xff\xfe{}", b'{"model": 1' + b"0" * 5000 + b"}"):
        r = _raw(client, "/api/attention", body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"]


def test_tiny_temperature_is_greedy_and_tiny_top_p_keeps_the_top_token(client: TestClient) -> None:
    base = {"model": "demo-decoder", "text": "the cat", "max_new_tokens": 4, "seed": 5}
    greedy = client.post("/api/generate", json={**base, "temperature": 0}).json()
    for temperature in (1.1754943508222875e-38, 5e-324, 1e-30):
        r = client.post("/api/generate", json={**base, "temperature": temperature})
        assert r.status_code == 200, r.text
        assert [s["id"] for s in r.json()["steps"]] == [s["id"] for s in greedy["steps"]]
    r = client.post("/api/generate", json={**base, "top_p": 5e-324})
    assert r.status_code == 200, r.text
    for step in r.json()["steps"]:
        kept = [c for c in step["candidates"] if c["kept"] > 0]
        assert [c["id"] for c in kept] == [step["id"]] and kept[0]["kept"] == pytest.approx(1.0)
        assert step["id"] == max(step["candidates"], key=lambda c: c["prob"])["id"]


def test_a_generation_error_from_the_library_is_a_422(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from attnlab.generate import GenerationError
    from attnlab.web import generation

    def refuse(*_: object, **__: object) -> int:
        raise GenerationError("top_p must be a finite number in (0, 1], got nan")

    monkeypatch.setattr(generation, "stream_ids", refuse)  # the library's decoding loop refuses
    r = client.post("/api/generate", json={"model": "demo-decoder", "text": "hi", "max_new_tokens": 1})
    assert r.status_code == 422 and r.json() == {"detail": "top_p must be a finite number in (0, 1], got nan", "errors": []}


def test_validation_errors_are_one_line_and_list_the_fields(client: TestClient) -> None:
    r = client.post("/api/qkv", json={"model": "demo-decoder", "head": False, "layer": "1", "focus": 10**40})
    body = r.json()
    assert r.status_code == 422 and set(body) == {"detail", "errors"}
    assert "\n" not in body["detail"] and all(f in body["detail"] for f in ("head:", "layer:", "focus:"))
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "head"), ("body", "layer"), ("body", "focus")}
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])  # the input itself is never echoed


@pytest.mark.parametrize("record", [
    [], "text", 5, None, {"summary": 5}, {"figures": 5}, {"figures": [5, None, {}]}, {"notes": 5},
    {"machine": [1]}, {"elapsed_s": "slow"}, {"experiment": 5, "title": [], "mode": {}}, {"summary": [1, None, "ok"]},
])
def test_a_results_file_of_the_wrong_shape_never_breaks_the_experiments_page(tmp_path: Path, record: object) -> None:
    good = tmp_path / "positions"
    finish("positions", "my run", "tiny", 0, time.perf_counter(), good, data={}, summary=["fine"], figures=[])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text(json.dumps(record))
    (tmp_path / "inf").mkdir()
    (tmp_path / "inf" / "results.json").write_text('{"experiment": "scaling", "elapsed_s": Infinity, "mode": NaN}')
    client = TestClient(create_app(experiments_dir=tmp_path), base_url=LOCAL)
    r = client.get("/api/experiments")
    assert r.status_code == 200, r.text
    by = {e["name"]: e for e in r.json()["experiments"]}
    assert by["positions"]["results"][0]["summary"] == ["fine"]  # the good run is still shown
    assert by["scaling"]["results"][0]["elapsed_s"] is None


# --- the schema says what the server does --------------------------------------------------------------------


def test_every_documented_error_has_the_error_body_and_every_route_documents_its_codes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["components"]["schemas"]["ErrorBody"]["properties"]) == {"detail", "errors"}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            codes = {int(c) for c in op["responses"] if c != "200"}
            assert 400 in codes, (path, method)
            if "requestBody" in op:
                assert {403, 413, 415, 422} <= codes, (path, method)
            if method == "post" and "model" in json.dumps(op.get("requestBody", {})):
                assert {404, 503} <= codes or path == "/api/models/{name}/load", (path, method)
            for code in codes:
                assert code in ERRORS
                schema = op["responses"][str(code)]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method, code)


def test_limits_are_in_the_schema(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    qkv = schemas["QKVRequest"]["properties"]
    assert all("maximum" in qkv[f] for f in ("layer", "head", "focus"))
    assert qkv["text"]["maxLength"] == 400 and qkv["text"]["minLength"] == 1
    assert schemas["TimelineAttentionRequest"]["properties"]["step"]["maximum"] == 2**31 - 1
    assert schemas["GenerateRequest"]["properties"]["seed"]["maximum"] == 2**53 - 1
    assert all(schemas[name].get("additionalProperties") is False for name in schemas if name.endswith("Request"))


def test_a_model_limit_is_a_422_that_is_no_schema_violation(client: TestClient) -> None:
    r = client.post("/api/attention", json={"model": "demo-encoder", "text": "x" * 65})  # 65 characters: schema-valid
    assert r.status_code == 422 and r.json()["errors"] == [] and "limit is 64 tokens" in r.json()["detail"]
    r = client.post("/api/qkv", json={"model": "demo-encoder", "text": "hi", "layer": 200})
    assert r.status_code == 422 and r.json()["errors"] == [] and "layer 200" in r.json()["detail"]


# --- item 6: a local server other pages cannot use -----------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.evil.example:8000",
                                  "attacker.test:80", "", "[::1", "localhost:abc", "127.0.0.2", "0.0.0.0:8000"])
def test_a_foreign_host_is_refused(app, host: str) -> None:
    client = TestClient(app, base_url=LOCAL)
    for method, path in (("GET", "/"), ("GET", "/api/models"), ("GET", "/api/experiments"), ("POST", "/api/attention")):
        r = client.request(method, path, headers={"host": host}, json=VALID["/api/attention"] if method == "POST" else None)
        assert r.status_code == 400, (host, path, r.text)
        assert "does not answer to the host" in r.json()["detail"] and "experiments" not in r.text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "localhost", "LOCALHOST:8000", "[::1]", "[::1]:8000"])
def test_the_loopback_names_are_served(app, host: str) -> None:
    assert TestClient(app, base_url=LOCAL).get("/api/models", headers={"host": host}).status_code == 200


def test_the_allow_list_adds_names(tmp_path: Path) -> None:
    app = create_app(experiments_dir=tmp_path, allowed_hosts=allowed_hosts("0.0.0.0", ["mybox.local"]))
    client = TestClient(app, base_url="http://mybox.local:8000")
    assert client.get("/api/models").status_code == 200
    refused = client.get("/api/models", headers={"host": "other.local"})
    assert refused.status_code == 400 and "mybox" not in refused.text  # the refused page learns no allowed name
    assert host_name("[::1]:8000") == "::1" and host_name("mybox.local") == "mybox.local" and host_name("a:b") is None
    with pytest.raises(ValueError, match="without a scheme or port"):
        allowed_hosts("127.0.0.1", ["mybox.local:8000"])


@pytest.mark.parametrize(("headers", "status"), [
    ({"content-type": "application/x-www-form-urlencoded"}, 415),
    ({"content-type": "multipart/form-data; boundary=x"}, 415),
    ({"content-type": "text/plain"}, 415),
    ({}, 415),
    ({"content-type": "application/json", "origin": "http://evil.example"}, 403),
    ({"content-type": "application/json", "origin": "null"}, 403),
    ({"content-type": "application/json", "origin": "http://localhost:9999"}, 403),
    ({"content-type": "application/json", "sec-fetch-site": "cross-site"}, 403),
    ({"content-type": "application/json", "sec-fetch-site": "same-site"}, 403),
    ({"content-type": "application/json", "origin": LOCAL, "sec-fetch-site": "same-origin"}, 200),
])
def test_state_changing_routes_refuse_cross_site_and_form_requests(client: TestClient, headers: dict, status: int) -> None:
    cat.unload("demo-decoder")
    r = client.post("/api/models/demo-decoder/load", content=b"{}", headers=headers)
    assert r.status_code == status, r.text
    assert cat.is_loaded("demo-decoder") is (status == 200)  # a refused request changed nothing
    r = client.delete("/api/models/demo-decoder", headers={"origin": "http://evil.example"})
    assert r.status_code == 403


def test_security_headers_on_every_answer(app, client: TestClient) -> None:
    answers = [client.get("/"), client.get("/static/index.js"), client.get("/api/models"), client.get("/nope"),
               client.post("/api/attention", json={"model": "x"}), client.put("/api/models"),
               TestClient(app).get("/"), client.post("/api/attention", content=b"a" * 20000)]
    assert [r.status_code for r in answers] == [200, 200, 200, 404, 404, 405, 400, 413]
    for r in answers:
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["content-security-policy"] == CSP
    assert "frame-ancestors 'none'" in CSP and "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    page = answers[0].text
    assert "<script>" not in page and "<style" not in page and " style=" not in page and " on" + "click=" not in page


def test_experiments_page_shows_no_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "experiments" / "positions"
    finish("positions", "my run", "tiny", 0, time.perf_counter(), out, data={}, summary=[f"data: {tmp_path}/d.txt"],
           figures=[])
    record = json.loads((out / "results.json").read_text())
    (out / "results.json").write_text(json.dumps({**record, "command": f"attnlab experiment positions --data {tmp_path}/d.txt",
                                                  "notes": [f"read {Path.home()}/corpus.txt"]}))
    text = TestClient(create_app(), base_url=LOCAL).get("/api/experiments").text
    assert str(tmp_path) not in text and str(Path.home()) not in text
    body = json.loads(text)
    assert body["runs_dir"] == "runs/experiments"
    mine = next(e for e in body["experiments"] if e["name"] == "positions")["results"][0]
    assert mine["label"].startswith("your run: positions")
    assert mine["command"] == "attnlab experiment positions --data ./d.txt" and mine["summary"] == ["data: ./d.txt"]
    assert mine["notes"] == ["read ~/corpus.txt"]
    outside = TestClient(create_app(experiments_dir="/tmp"), base_url=LOCAL).get("/api/experiments").json()
    assert not outside["runs_dir"].startswith("/")


def test_models_unload_and_large_models_are_bounded(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    client.post("/api/models/demo-encoder/load", json={})
    r = client.delete("/api/models/demo-encoder")
    assert r.status_code == 200 and r.json() == {"name": "demo-encoder", "loaded": False, "was_loaded": True}
    assert not next(m for m in client.get("/api/models").json()["models"] if m["name"] == "demo-encoder")["loaded"]
    assert client.delete("/api/models/demo-encoder").json()["was_loaded"] is False
    assert client.delete("/api/models/no-such-model").status_code == 404
    # every model counts as large here; keep at most two: the least recently *used* goes first
    monkeypatch.setattr(web_models, "LARGE_PARAMS", 0)
    monkeypatch.setitem(web_models._LIMIT, "large", 2)
    monkeypatch.setattr(web_models, "_LARGE", type(web_models._LARGE)())
    for name in ("demo-decoder", "demo-encoder"):
        assert client.post(f"/api/models/{name}/load", json={}).json()["unloaded"] == []
    client.post("/api/attention", json={"model": "demo-decoder", "text": "hi"})  # demo-decoder used again
    third = client.post("/api/models/demo-seq2seq/load", json={}).json()
    assert third["unloaded"] == ["demo-encoder"]
    assert cat.is_loaded("demo-decoder") and cat.is_loaded("demo-seq2seq") and not cat.is_loaded("demo-encoder")
    r = client.post("/api/attention", json={"model": "demo-encoder", "text": "hi"})  # loads again when used
    assert r.status_code == 200 and cat.is_loaded("demo-encoder") and not cat.is_loaded("demo-decoder")
    with pytest.raises(ValueError, match=">= 1"):
        web_models.set_max_large_models(0)


def test_unloading_frees_the_models_memory(client: TestClient) -> None:
    import gc
    import weakref

    client.post("/api/models/demo-encoder/load", json={})
    client.post("/api/positions", json={"model": "demo-encoder"})  # also caches a position-free copy
    ref = weakref.ref(cat.load("demo-encoder").model)
    client.delete("/api/models/demo-encoder")
    gc.collect()
    assert ref() is None  # nothing else (the position-free copy included) holds it


# --- issue 23 items 5 and 9: deep nesting, 500s, results files, repeated headers -------------------------------


@pytest.mark.parametrize("depth", [33, 900, 1000, 2000])
def test_deeply_nested_bodies_are_422_on_every_post_route(app, client: TestClient, depth: int) -> None:
    for path in _post_routes(app):
        for deep in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
            body = json.dumps(VALID[path])[:-1] + (", " if VALID[path] else "") + f'"extra": {deep}}}'
            for kind in ("application/json", "application/vnd.api+json"):
                r = _raw(client, path, body.encode(), **{"content-type": kind})
                assert r.status_code == 422, (path, depth, kind, r.text[:200])
                assert f"nests {depth + 1} levels deep; the limit is 32" in r.json()["detail"]
                assert r.headers["content-security-policy"] == CSP
    # brackets inside strings are text, not nesting
    r = client.post("/api/attention", json={"model": "demo-decoder", "text": "[[[[" * 40 + '\\"{{'})
    assert r.status_code == 422 and "limit is" in r.json()["detail"] and "nests" not in r.json()["detail"]


def test_an_unexpected_error_is_a_500_with_the_security_headers_and_the_error_body(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attnlab.web import payloads

    app = create_app(experiments_dir=tmp_path)
    monkeypatch.setattr(payloads, "attention", lambda req: 1 / 0)
    client = TestClient(app, base_url=LOCAL, raise_server_exceptions=False)
    for r in (client.post("/api/attention", json=VALID["/api/attention"]),):
        assert r.status_code == 500
        assert r.json() == {"detail": "the server failed on this request (its log says why)", "errors": []}
        assert r.headers["content-security-policy"] == CSP and r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(("name", "values"), [
    ("origin", ["http://evil.example", LOCAL]), ("origin", [LOCAL, "http://evil.example"]),
    ("content-type", ["text/plain", "application/json"]), ("content-type", ["application/json", "text/plain"]),
    ("host", ["evil.example", "127.0.0.1"]), ("host", ["127.0.0.1", "127.0.0.1"]),
    ("sec-fetch-site", ["cross-site", "same-origin"]), ("referer", ["http://evil.example/", LOCAL + "/"]),
])
def test_a_repeated_security_header_is_refused(app, name: str, values: list[str]) -> None:
    """With two ``Origin`` headers the guard read the last and FastAPI the first: an evil first one passed."""
    cat.unload("demo-decoder")
    headers = [("host", "127.0.0.1"), ("content-type", "application/json")]
    headers = [h for h in headers if h[0] != name] + [(name, v) for v in values]
    scope_headers = [(k.encode(), v.encode()) for k, v in headers] + [(b"content-length", b"2")]
    status, body, sent = _asgi(app, "POST", "/api/models/demo-decoder/load", scope_headers, b"{}")
    assert status == 400, body
    assert json.loads(body)["detail"] == f"the request repeats the {name!r} header; send it once"
    assert (b"content-security-policy", CSP.encode()) in sent
    assert not cat.is_loaded("demo-decoder")  # the request changed nothing


def test_repeated_harmless_headers_are_still_served(app) -> None:
    headers = [(b"host", b"127.0.0.1"), (b"accept", b"text/html"), (b"accept", b"application/json")]
    assert _asgi(app, "GET", "/api/models", headers, b"")[0] == 200


def _asgi(app, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes, list]:
    """One request straight through the ASGI interface, headers exactly as given (repeats included)."""
    import anyio

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    out: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        out.append(message)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    # In a thread of its own: a browser test earlier in the session may leave an event loop running here.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, main).result()
    start = next(m for m in out if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body"), start["headers"]


BAD_RESULTS = {
    "huge-integer": '{"experiment": "scaling", "elapsed_s": 1' + "0" * 400 + "}",
    "huge-integer-in-summary": '{"experiment": "scaling", "summary": [1' + "0" * 400 + "]}",
    "deep-list": '{"experiment": "scaling", "summary": ' + "[" * 5000 + "]" * 5000 + "}",
    "deep-object": '{"experiment": "scaling", "machine": ' + '{"a":' * 100 + "1" + "}" * 100 + "}",
    "surrogate-title": '{"experiment": "scaling", "title": "\\ud800"}',
    "surrogate-summary": '{"experiment": "scaling", "summary": ["ok \\udfff"]}',
    "surrogate-key": '{"experiment": "scaling", "machine": {"\\udc00": "x"}}',
    "surrogate-figure": '{"experiment": "scaling", "figures": ["\\ud800.png"]}',
}


@pytest.mark.parametrize("shape", sorted(BAD_RESULTS))
def test_results_files_that_took_the_experiments_page_down_are_skipped_with_a_reason(tmp_path: Path, shape: str) -> None:
    good = tmp_path / "positions"
    finish("positions", "my run", "tiny", 0, time.perf_counter(), good, data={}, summary=["fine"], figures=[])
    (tmp_path / shape).mkdir()
    (tmp_path / shape / "results.json").write_text(BAD_RESULTS[shape])
    r = TestClient(create_app(experiments_dir=tmp_path), base_url=LOCAL).get("/api/experiments")
    assert r.status_code == 200, r.text
    body = r.json()
    by = {e["name"]: e for e in body["experiments"]}
    assert by["positions"]["results"][0]["summary"] == ["fine"]  # the good run is still shown
    assert not any(res["id"].endswith(shape) for res in by["scaling"]["results"])
    assert len(body["skipped"]) == 1 and body["skipped"][0].startswith(f"{shape}/results.json: ")
    assert "1 result file skipped" in body["note"]


def test_a_long_figure_name_is_no_figure_and_the_run_is_shown(tmp_path: Path) -> None:
    run = tmp_path / "scaling"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"experiment": "scaling", "figures": ["x" * 300 + ".png", "a.png"],
                                                  "summary": ["kept"]}))
    (run / "a.png").write_bytes(b"\x89PNG")
    r = TestClient(create_app(experiments_dir=tmp_path), base_url=LOCAL).get("/api/experiments")
    assert r.status_code == 200, r.text
    mine = next(e for e in r.json()["experiments"] if e["name"] == "scaling")["results"][0]
    assert mine["summary"] == ["kept"] and [f["file"] for f in mine["figures"]] == ["a.png"]


def test_a_fifo_named_results_json_is_skipped_without_waiting(tmp_path: Path) -> None:
    import os
    import threading

    good = tmp_path / "positions"
    finish("positions", "my run", "tiny", 0, time.perf_counter(), good, data={}, summary=["fine"], figures=[])
    (tmp_path / "pipe").mkdir()
    os.mkfifo(tmp_path / "pipe" / "results.json")
    answer: dict = {}
    reader = threading.Thread(target=lambda: answer.update(
        r=TestClient(create_app(experiments_dir=tmp_path), base_url=LOCAL).get("/api/experiments")), daemon=True)
    reader.start()
    reader.join(60)  # it answers at once; before, it waited for a writer that never comes
    if reader.is_alive():  # unblock the stuck reader so that the test run can end
        with open(tmp_path / "pipe" / "results.json", "w"):
            pass
        reader.join(10)
        pytest.fail("reading a FIFO named results.json blocked the request")
    body = answer["r"].json()
    assert body["skipped"] == ["pipe/results.json: is not a regular file"]
    assert {e["name"]: e for e in body["experiments"]}["positions"]["results"][0]["summary"] == ["fine"]


def test_a_busy_port_is_one_error_line_before_any_url(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.create_server(("127.0.0.1", 0)) as taken:  # another server holds the port
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run([sys.executable, "-m", "attnlab", "serve", "--port", str(port)], capture_output=True,
                              text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "http://" not in done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: port {port} on 127.0.0.1 is already in use (another server?); stop it or choose "
                      "another with --port"], done.stderr
    assert "Traceback" not in done.stderr


def test_a_deeply_nested_metrics_line_is_skipped_by_the_timeline(client: TestClient, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from attnlab.web import timeline
    from attnlab.web.demo import DEMO_SENTENCE, write_demo_timeline

    write_demo_timeline(tmp_path, steps=(0, 2))
    with (tmp_path / "metrics.jsonl").open("a") as log:
        log.write("[" * 100_000 + "]" * 100_000 + "\n" + '{"step": 3, "loss": 1' + "0" * 400 + "}\n"
                  '{"step": 4, "loss": NaN}\n{"step": 5, "loss": Infinity}\n{"step": 1e400, "loss": 1}\n'
                  '{"step": true, "loss": 1}\n{"step": 6, "loss": 0.5}\n')
    monkeypatch.setitem(timeline._DIRS, "demo-decoder", tmp_path)
    monkeypatch.setitem(timeline._SENTENCES, "demo-decoder", DEMO_SENTENCE)
    r = client.get("/api/timeline", params={"model": "demo-decoder"})
    assert r.status_code == 200, r.text
    assert [(p["step"], p["value"]) for p in r.json()["curve"]][-1] == (6, 0.5)  # the readable rows, and only those
    assert [p["step"] for p in r.json()["curve"]] == [0, 1, 2, 6]
