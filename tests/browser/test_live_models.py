"""Models run in the browser (static/live.js + onnxruntime-web): the server's numbers, without a server.

A folder laid out as the static site lays it out (live.js beside the page, ``vendor/onnxruntime-web/``,
``models/<name>/`` from ``attnlab.site.onnx``) is served by a plain ``http.server`` in a thread and
opened in Chromium. ``liveAnswer`` computes POST /api/attention, /api/qkv and /api/next-token there;
each answer is compared with the server's payload builder (``attnlab.web.payloads.attention``,
``attnlab.web.qkv.qkv``, ``attnlab.web.sampling.next_token``, all ``run_with_cache``) on the same
sentences: within 1e-4 for float32 exports, and within ``INT8_BOUND`` (attention weights,
probabilities) / ``INT8_RELATIVE_BOUND`` (q, k, v, scores, logits) for int8. The JS tokenizers give
the Python tokenizers' ids and labels on tricky strings, and no request leaves the page's origin.
"""

from __future__ import annotations

import functools
import http.server
import math
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from attnlab import catalog as cat
from attnlab.site import onnx as site_onnx
from attnlab.web import payloads, sampling
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.models import tokenize
from attnlab.web.qkv import QKVRequest, qkv

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

STATIC = Path(site_onnx.__file__).resolve().parents[1] / "web" / "static"
MODELS = ("shakespeare-char", "minilm")
SENTENCES = {
    "shakespeare-char": ["ROMEO: But soft, what light", "O", "First Citizen:\nWe are accounted poor citizens."],
    "minilm": ["The cat sat on the mat because it was tired.", "Héllo, WÖRLD! naïve café", "unbelievably [SEP] x"],
}
TRICKY = [  # accents, punctuation, unknown words, casing, CJK, controls, odd whitespace, long words
    "Café déjà vu — ÉCOLE, naïve façade; Ångström e\u0301", "Hello,world!!(really?) don't $100+50=150 a|b ~c^",
    "xqzvjkw 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀 ﬁne", "我爱你 東京 こんにちは 한국어", "[SEP] [CLS] [mask] <s>", "ΟΔΟΣ Σίσυφος İstanbul ß",
    "a\u0000b\u200bc\ufeffd\u00ade", "a\tb\nc\r\nd\u00a0e\u2003f\u2028g", "x" * 120 + " antidisestablishmentarianism",
    "  ", "", "It's 3:45 p.m.; 50% off!", "Ünïcödé ÇÀÏ and ʼapostrophes’ «quotes»",
]
CHAR_TRICKY = ["To be, or not to be", "KING HENRY:\nO", "what?! -- yes; no: 'tis"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args: object) -> None:  # quiet
        pass


def _site(root: Path, int8: bool) -> None:
    got = site_onnx.export_for_site(root, [cat.load(name) for name in MODELS], int8=int8)
    assert sorted(got["models"]) == sorted(MODELS)
    for name in ("live.js", "live-tokenizers.js"):
        shutil.copyfile(STATIC / name, root / name)
    (root / "index.html").write_text(
        "<!doctype html><meta charset=utf-8><title>live</title><script type=module>"
        "import * as live from './live.js'; import * as tok from './live-tokenizers.js';"
        "window.live = live; window.tok = tok; document.body.dataset.ready = 'true';</script><body></body>",
        encoding="utf-8")


@pytest.fixture(scope="module")
def site_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        site_onnx.runtime_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    for name in MODELS:
        if not any(i.name == name and i.available for i in cat.catalog()):
            pytest.skip(f"model {name} is not installed")
    root = tmp_path_factory.mktemp("live-site")
    _site(root, int8=False)
    _site(root / "int8", int8=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def pages(chromium, site_url) -> Iterator[dict]:
    context = chromium.new_context()
    requests: list[str] = []
    errors: list[str] = []
    out = {}
    for label, path in (("fp32", "/"), ("int8", "/int8/")):
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(site_url + path + "index.html")
        page.wait_for_selector("body[data-ready=true]", state="attached")
        out[label] = page
    yield {"pages": out, "requests": requests, "errors": errors, "origin": site_url}
    context.close()


def _live(page, path: str, body: dict) -> dict | None:
    return page.evaluate("([p, b]) => window.live.liveAnswer(p, b)", [path, body])


def _live_error(page, path: str, body: dict) -> dict:
    return page.evaluate(
        "async ([p, b]) => { try { await window.live.liveAnswer(p, b); return null; }"
        " catch (e) { return {status: e.status, body: e.body, message: String(e)}; } }", [path, body])


def _compare(live: object, ref: object, tol, where: str = "") -> None:
    """``live`` equals ``ref`` in structure, strings, booleans and integers; floats within ``tol(where, ref)``."""
    if isinstance(ref, dict):
        assert isinstance(live, dict) and set(live) == set(ref), (where, sorted(live or {}), sorted(ref))
        for key in ref:
            _compare(live[key], ref[key], tol, f"{where}.{key}")
    elif isinstance(ref, list | tuple):
        assert isinstance(live, list) and len(live) == len(ref), (where, live, ref)
        for i, (a, b) in enumerate(zip(live, ref, strict=True)):
            _compare(a, b, tol, f"{where}[{i}]")
    elif isinstance(ref, float):
        assert isinstance(live, int | float) and math.isfinite(live), (where, live)
        assert abs(live - ref) <= tol(where), (where, live, ref, tol(where))
    else:
        assert live == ref, (where, live, ref)


def _peak(values: object) -> float:
    return max(abs(v) for v in torch.tensor(values, dtype=torch.float64).flatten().tolist())


def test_tokenizers_match_python(pages) -> None:
    page = pages["pages"]["fp32"]
    for name, texts in (("minilm", TRICKY), ("shakespeare-char", CHAR_TRICKY)):
        tok = cat.load(name).tokenizer
        got = page.evaluate("async ([n, ts]) => { const m = await window.live.liveModel(n);"
                            " return ts.map((t) => { const ids = m.tokenizer.encode(t); return [ids, m.tokenizer.tokens(ids)]; }); }",
                            [name, texts])
        for text, (ids, labels) in zip(texts, got, strict=True):
            assert ids == tok.encode(text), (name, text)
            assert labels == [str(t) for t in tok.tokens(ids)], (name, text)


def test_bad_input_gets_the_servers_message(pages) -> None:
    page = pages["pages"]["fp32"]
    char = cat.load("shakespeare-char")
    for body, path in (({"model": "shakespeare-char", "text": "naïve 1"}, "/api/attention"),
                       ({"model": "shakespeare-char", "text": "   "}, "/api/attention"),
                       ({"model": "shakespeare-char", "text": "a" * 65}, "/api/attention"),
                       ({"model": "shakespeare-char", "text": "abc", "layer": 9}, "/api/qkv"),
                       ({"model": "shakespeare-char", "text": "abc", "focus": 3}, "/api/qkv"),
                       ({"model": "minilm", "text": "abc"}, "/api/next-token")):
        err = _live_error(page, path, body)
        assert err is not None and err["status"] == 422, (body, err)
        if path == "/api/attention":
            with pytest.raises(PayloadError) as exc:
                tokenize(char, body["text"])
        elif path == "/api/qkv":
            with pytest.raises(PayloadError) as exc:
                qkv(QKVRequest(**body))
        else:
            with pytest.raises(PayloadError) as exc:
                sampling.next_token(s.NextTokenRequest(**body))
        assert err["body"]["detail"] == str(exc.value), body
    assert _live(page, "/api/attention", {"model": "smollm2", "text": "hi"}) is None  # not exported here
    assert _live(page, "/api/why", {"model": "minilm", "text": "hi"}) is None  # a route it does not compute


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_attention_matches_the_server(pages, precision: str) -> None:
    page = pages["pages"][precision]
    bound = 1e-4 if precision == "fp32" else site_onnx.INT8_BOUND
    for name in MODELS:
        for text in SENTENCES[name]:
            live = _live(page, "/api/attention", {"model": name, "text": text})
            ref = payloads.attention(s.TextRequest(model=name, text=text)).model_dump()
            assert live["corpus_roles"] is None
            live.pop("corpus_roles"), ref.pop("corpus_roles")
            if precision == "int8":  # a score beside a threshold may land on its other side: compare the scores
                for layer in (*live["roles"], *ref["roles"]):
                    for role in layer:
                        role.pop("role")
            _compare(live, ref, lambda _where, b=bound: b)


def _qkv_tolerance(precision: str, ref: dict, where: str) -> float:
    """fp32: 1e-4 (q . k: relative to its largest value); int8: the bound of each field's kind."""
    key = where.split("[")[0].lstrip(".")
    if key == "sqrt_d_k":
        return 1e-12
    if precision == "fp32":
        return 1e-4 * max(1.0, _peak(ref["dots"])) if key == "dots" else 1e-4
    if key in ("weights", "max_scale_error"):
        return site_onnx.INT8_BOUND
    return site_onnx.INT8_RELATIVE_BOUND * _peak([v for v in ref[key] if v is not None])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_qkv_matches_the_server(pages, precision: str) -> None:
    page = pages["pages"][precision]
    for name, layer, head, focus in (("shakespeare-char", 0, 0, 0), ("shakespeare-char", 3, 2, 9),
                                     ("minilm", 0, 0, 1), ("minilm", 5, 11, 4)):
        text = SENTENCES[name][0]
        body = {"model": name, "text": text, "layer": layer, "head": head, "focus": focus}
        live = _live(page, "/api/qkv", body)
        ref = qkv(QKVRequest(**body)).model_dump()
        _compare(live, ref, functools.partial(_qkv_tolerance, precision, ref))
        assert live["max_scale_error"] < 1e-5  # the page's own check: q . k / sqrt(d_k) is the recorded score


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_next_token_probabilities_match_the_server(pages, precision: str) -> None:
    page = pages["pages"][precision]
    for text in SENTENCES["shakespeare-char"]:
        live = _live(page, "/api/next-token", {"model": "shakespeare-char", "text": text})
        ref = sampling.next_token(s.NextTokenRequest(model="shakespeare-char", text=text)).model_dump()
        probs = torch.softmax(torch.tensor(live["logits"], dtype=torch.float64), -1)
        ref_probs = torch.softmax(torch.tensor(ref["logits"], dtype=torch.float64), -1)
        if precision == "fp32":
            _compare(live, ref, lambda _where: 1e-4)
            assert (probs - ref_probs).abs().max().item() <= 1e-4
        else:
            assert (probs - ref_probs).abs().max().item() <= site_onnx.INT8_BOUND
            assert live["prompt_tokens"] == ref["prompt_tokens"]
            peak = _peak(ref["logits"])
            assert max(abs(a - b) for a, b in zip(live["logits"], ref["logits"], strict=True)) <= site_onnx.INT8_RELATIVE_BOUND * peak


def test_requests_at_once_answer_as_each_alone(pages) -> None:
    page = pages["pages"]["fp32"]
    bodies = [("/api/attention", {"model": "minilm", "text": SENTENCES["minilm"][0]}),
              ("/api/qkv", {"model": "shakespeare-char", "text": SENTENCES["shakespeare-char"][0], "layer": 1, "head": 3, "focus": 4}),
              ("/api/next-token", {"model": "shakespeare-char", "text": SENTENCES["shakespeare-char"][2]}),
              ("/api/attention", {"model": "minilm", "text": SENTENCES["minilm"][1]})]
    together = page.evaluate("(bs) => Promise.all(bs.map(([p, b]) => window.live.liveAnswer(p, b)))", bodies)
    assert together == [_live(page, path, body) for path, body in bodies]


def test_no_request_leaves_the_page(pages) -> None:
    # Runs after the others (file order): every model, the runtime and its wasm have been fetched.
    requests = pages["requests"]
    assert any(u.endswith("ort-wasm-simd-threaded.wasm") for u in requests)
    assert any(u.endswith("/models/minilm/model.onnx") for u in requests)
    outside = [u for u in requests if not u.startswith(pages["origin"] + "/")]
    assert outside == [], outside
    assert pages["errors"] == []
