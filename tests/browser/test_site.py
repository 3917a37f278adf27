"""The static classroom edition (``attnlab site OUT``), served by a plain static file server, in Chromium.

One export per module, written by the command itself: MiniLM and the character model only (``--only``:
their tour steps, views and in-browser models; about a minute, where the default set takes minutes);
the default set's size is bounded from it (``test_the_site_command_...``). The page is opened from
``http.server`` (no attnlab code serves it) and what it shows is compared with ``run_with_cache`` on the
same model and sentence: recorded answers to 1e-4 (float32), a sentence typed in the page (computed by
onnxruntime-web) to the in-browser model's stated bound (``onnx.INT8_BOUND`` for int8).
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import torch

from attnlab import catalog as cat
from attnlab.inspect import run_with_cache
from attnlab.site import onnx as site_onnx
from attnlab.site.export import BUDGET_MB, LIVE_MODELS, SITE_FILE
from attnlab.web.app import STATIC_DIR
from attnlab.web.models import self_attention_stack
from tests.browser.conftest import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SENTENCE = "John gave the book to Sarah because she liked it."
ONLY = ("minilm", "shakespeare-char")  # the models this module exports (LIVE_MODELS: both run in the browser too)
NEEDS_SERVER = "This needs the attnlab server"
ATOL = 1e-4  # float32 answers, written as float32's shortest decimals


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """MiniLM and the character model exported by ``python -m attnlab site OUT --only ...`` (the command a teacher
    runs), with their in-browser models, and its stdout."""
    out = tmp_path_factory.mktemp("site") / "classroom"
    only = [arg for name in ONLY for arg in ("--only", name)]
    run = subprocess.run([sys.executable, "-m", "attnlab", "site", str(out), *only], capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-2000:]
    return out, run.stdout


@pytest.fixture(scope="module")
def static_url(site: tuple[Path, str]) -> Iterator[str]:
    """The exported folder behind Python's own static file server (what ``python -m http.server`` runs)."""
    handler = functools.partial(_Quiet, directory=str(site[0]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def sui(chromium: object, static_url: str) -> Iterator[tuple[Page, list[str]]]:
    """A page on the static site, and every URL it requests (the listener sees each request, fetches and
    module imports included, before it leaves the browser)."""
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    yield Page(page, static_url), requests
    context.close()


def _hook(model: str, text: str, hook: str, index: list[int] | tuple[int, ...]) -> torch.Tensor:
    torch.set_num_threads(1)
    loaded = cat.load(model)
    x = torch.tensor([loaded.tokenizer.encode(text)])
    args = (x, x) if loaded.config.family == "encoder-decoder" else (x,)
    _, cache = run_with_cache(loaded.model, *args, names=hook)
    return cache[hook][tuple(index)].double()


def _close(shown: list[float], expected: torch.Tensor) -> None:
    torch.testing.assert_close(torch.tensor(shown, dtype=torch.float64), expected.reshape(-1)[: len(shown)], rtol=0, atol=ATOL)


def _only_own_origin(requests: list[str], base: str) -> None:
    foreign = [u for u in requests if not (u.startswith(base + "/") or u.startswith("data:") or u.startswith("blob:"))]
    assert requests and not foreign, f"requests left the page's origin: {foreign[:5]}"


def test_the_site_command_writes_the_page_and_its_answers_within_the_budget(site: tuple[Path, str]) -> None:
    out, stdout = site
    files = {p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    total = sum(files.values())
    # It prints its size, and the size is the folder's.
    said = re.search(r"wrote .*: (\d+) files, ([\d.]+) MB", stdout)
    assert said and int(said.group(1)) == len(files) and abs(float(said.group(2)) - total / 2**20) < 0.051
    # The page: index.html marked as a static site with relative URLs only, every front-end file, the run-the-server page.
    html = (out / "index.html").read_text(encoding="utf-8")
    assert f'data-site="{SITE_FILE}"' in html and not re.search(r'(href|src)="/', html)
    for p in STATIC_DIR.iterdir():
        if p.is_file():
            assert (out / "static" / p.name).read_bytes() == p.read_bytes()
    assert "make serve" in (out / "server.html").read_text(encoding="utf-8")
    # The answers: one file per recorded request, each named in site.json, and nothing else under api/ but experiment
    # files; the in-browser models (site.json "live" only when they were written) and their runtime.
    site_json = json.loads((out / SITE_FILE).read_text(encoding="utf-8"))
    named = {e["file"] for e in site_json["answers"].values()}
    assert named == {f for f in files if re.fullmatch(r"api/[0-9a-f]{20}\.json", f)}
    assert all(f in named or f.startswith(("api/experiments/", "static/", "models/", "vendor/"))
               or f in ("index.html", SITE_FILE, "server.html", ".nojekyll") for f in files)
    if site_json["live"]:
        assert sorted(site_json["live_models"]) == sorted(n for n in LIVE_MODELS if n in ONLY)
        for name in site_json["live_models"]:
            assert {f"models/{name}/model.onnx", f"models/{name}/manifest.json"} <= set(files)
        assert {f"vendor/onnxruntime-web/{f}" for f in site_onnx.RUNTIME_FILES} <= set(files)
        assert "in the browser (type your own sentence): " in stdout
    else:
        assert not any(f.startswith(("models/", "vendor/")) for f in files)
        assert "no in-browser models: onnxruntime-web is not installed" in stdout
    assert sorted(site_json["models"]) == sorted(ONLY)
    tour = json.loads((out / site_json["answers"]["GET /api/tour"]["file"]).read_text(encoding="utf-8"))
    for step in tour["steps"]:
        pre = step["preset"]
        held = not pre["model"] or pre["model"] in ONLY
        assert (f"GET /api/tour/{step['n']}" in site_json["answers"]) == held
        if pre["model"] in ONLY and pre["text"]:
            assert pre["text"] in site_json["sentences"][pre["model"]]
    assert all(e["status"] == 200 for e in site_json["answers"].values())
    # The default set's size, bounded from this one: everything but the answers is the same (the page, the
    # in-browser models, the runtime, the experiment figures); each of the default set's models is given the
    # answers of the largest model measured here, scaled by its sentence count against that model's.
    per_model: dict[str, int] = {}
    for key, e in site_json["answers"].items():
        m = re.search(r'"model":"([^"]+)"|/api/models/([^/]+)/load|model=([^&]+)', key)
        name = next((g for g in m.groups() if g), None) if m else None
        per_model[name] = per_model.get(name, 0) + files[e["file"]]
    fixed = total - sum(v for k, v in per_model.items() if k is not None)
    per_sentence = max(per_model[n] / len(site_json["sentences"][n]) for n in ONLY)
    default_pairs = sum(len({pre["text"] for pre in (s["preset"] for s in tour["steps"]) if pre["model"] == n and pre["text"]} | {SENTENCE})
                        for n in {s["preset"]["model"] for s in tour["steps"] if s["preset"]["model"]})
    estimate = fixed + per_sentence * default_pairs
    print(f"this export {total / 2**20:.1f} MB; the default set's ({default_pairs} model-sentence pairs) estimated "
          f"{estimate / 2**20:.1f} MB; budget {BUDGET_MB} MB")
    assert total <= BUDGET_MB * 2**20 and estimate <= BUDGET_MB * 2**20


def test_every_tour_step_shows_the_models_numbers_and_no_request_leaves_the_origin(sui) -> None:
    ui, requests = sui
    page = ui.page
    ui.open("index.html#tour/1")
    steps = json.loads(page.evaluate("fetch('site.json').then(r => r.json()).then(s => fetch(s.answers['GET /api/tour'].file))"
                                     ".then(r => r.text())"))["steps"]
    checked, explore, server_steps = 0, {}, []
    for n, step in enumerate(steps, start=1):
        pre = step["preset"]
        if pre["model"] and pre["model"] not in ONLY:  # a step on a model this site does not hold
            page.locator("#error").wait_for(state="visible")
            assert page.inner_text("#error").startswith(NEEDS_SERVER), (n, page.inner_text("#error"))
            server_steps.append(n)
            page.click("#tour-next")
            continue
        page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-widget:is([data-state=ready], [data-state=asking])", timeout=120_000)
        if page.locator(".tour-widget[data-state=asking]").count():  # a predict step: skip to the model's answer
            page.click(".predict-skip")
            page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-widget[data-state=ready]", timeout=120_000)
        page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-text[data-claims=ready]")
        page.wait_for_selector("#model-strip[data-state=ready]")  # the model strip's POST /api/shape, recorded
        assert page.locator(".tour-text .claim.pending").count() == 0
        assert page.locator("#error").is_hidden(), f"step {n}: {page.inner_text('#error')}"
        tables = page.locator(".tour-widget table.check").evaluate_all(
            "ts => ts.map(t => ({hook: t.dataset.hook, index: t.dataset.index.split(',').map(Number),"
            " values: [...t.querySelectorAll('td[data-value]')].map(c => Number(c.dataset.value))}))")
        for t in tables:  # attention weights, Q·K·V's weights, embeddings, logits: each from its hook
            _close(t["values"], _hook(pre["model"], pre["text"], t["hook"], t["index"]))
            checked += 1
        if pre["widget"] == "ablation":  # probabilities: the prediction with every head, softmax of the last logits
            items = page.locator(".ablation-side").first.locator("li[data-prob]").evaluate_all(
                "ls => ls.map(l => [Number(l.dataset.id), Number(l.dataset.prob)])")
            probs = torch.softmax(_hook(pre["model"], pre["text"], "hook_logits", [0, -1]), -1)
            _close([p for _, p in items], probs[[i for i, _ in items]])
            checked += 1
        if page.locator(".tour-links a.explore").count():
            explore[n] = page.get_attribute(".tour-links a.explore", "href")
        if n in (1, 9, 13):
            ui.screenshot(f"site-tour-{n:02d}")
        if n < len(steps):
            page.click("#tour-next")
    assert checked >= 6 and len(server_steps) == sum(1 for s in steps if s['preset']['model'] not in (None, *ONLY))
    # Each step's "Explore freely" link opens its view with its state, answered from the site; only the Why
    # view, which computes attributions on demand, says that it needs the server.
    for n, href in explore.items():
        page.goto("about:blank")
        page.goto(f"{ui.base}/index.html{href}")
        page.wait_for_selector("body[data-ready=true]")
        page.wait_for_load_state("networkidle")
        error = page.inner_text("#error") if page.locator("#error").is_visible() else ""
        if href.startswith("#why"):
            assert error.startswith("This needs the attnlab server"), (n, href, error)
        else:
            assert error == "", (n, href, error)
    assert len(explore) >= 8
    _only_own_origin([u for u in requests if not u.startswith("about:")], ui.base)
    assert ui.errors == []


def test_deep_links_open_the_views_on_their_state_with_the_models_numbers(sui) -> None:
    ui, requests = sui
    page = ui.page
    text = quote(SENTENCE)
    # #attention?...: the layer, head and focus of the link, the focus row's weights from hook_weights.
    ui.open(f"index.html#attention?model=minilm&text={text}&layer=5&head=3&query=8")
    table = page.locator("#weights-table")
    page.wait_for_selector("#weights-table td[data-value]")
    assert (table.get_attribute("data-layer"), table.get_attribute("data-head"), table.get_attribute("data-focus")) == ("5", "3", "8")
    shown = table.locator("td[data-value]").evaluate_all("cs => cs.map(c => Number(c.dataset.value))")
    _close(shown, _hook("minilm", SENTENCE, "encoder.blocks.5.attn.hook_weights", [0, 3, 8]))
    ui.screenshot("site-attention")
    # #qkv?...: Q, K, V, scores and weights as drawn (the view's JSON export is the answer it drew).
    page.goto(f"{ui.base}/index.html#qkv?model=minilm&text={text}&layer=3&head=1&query=10")
    page.wait_for_selector("#qkv-table tr.focus")
    with page.expect_download() as info:
        page.click('#view-qkv [data-export="qkv"] button[data-kind=json]')
    p = json.loads(Path(info.value.path()).read_text(encoding="utf-8"))
    assert (p["layer"], p["head"], p["focus"]) == (3, 1, 10)
    # hook_q/k/v: (batch, heads, tokens, d_k)
    _close(p["query"], _hook("minilm", SENTENCE, p["hooks"]["q"], [0, 1, 10]))
    _close([x for row in p["keys"] for x in row], _hook("minilm", SENTENCE, p["hooks"]["k"], [0, 1]))
    _close([x for row in p["values"] for x in row], _hook("minilm", SENTENCE, p["hooks"]["v"], [0, 1]))
    _close(p["weights"], _hook("minilm", SENTENCE, p["hooks"]["weights"], [0, 1, 10]))
    ui.screenshot("site-qkv")
    # #tour/N opens that step directly.
    page.goto(f"{ui.base}/index.html#tour/9")
    page.wait_for_selector("#view-tour[data-step='9'] .tour-widget[data-state=ready]", timeout=120_000)
    assert page.inner_text(".tour-count").startswith("Step 9 of")
    _only_own_origin(requests, ui.base)
    assert ui.errors == []


def test_what_was_not_computed_in_advance_says_in_one_line_that_it_needs_the_server(site: tuple[Path, str], sui) -> None:
    ui, requests = sui
    page = ui.page
    # A sentence nobody exported is computed in the page when MiniLM runs in the browser, but the head finder on it
    # is not (it needs the server); without the in-browser models the sentence itself needs the server.
    ui.open(f"index.html#attention?model=minilm&text={quote('A sentence nobody exported.')}")
    if json.loads((site[0] / SITE_FILE).read_text(encoding="utf-8"))["live"]:
        page.wait_for_selector("#weights-table td[data-value]")
        page.click("#finder-run")
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert error.inner_text().startswith("This needs the attnlab server")
    assert "\n" not in error.inner_text().strip()
    assert error.locator("a").get_attribute("href") == "server.html"
    page.click("#error a")
    page.wait_for_load_state()
    assert "make serve" in page.inner_text("body")
    ui.screenshot("site-needs-server")
    _only_own_origin(requests, ui.base)


TYPED = {"minilm": "My grandmother planted a lemon tree behind the old school.",
         "shakespeare-char": "KING LEAR: Why weep you, daughter?"}  # an input field holds one line


def test_a_sentence_typed_in_the_static_site_is_computed_in_the_browser(site: tuple[Path, str], sui) -> None:
    """A sentence nobody exported, typed into the Attention and Q·K·V views: onnxruntime-web computes it in the page
    (no needs-server line, no request off the page's origin) and the weights shown equal ``run_with_cache``'s
    within the in-browser model's stated bound (its manifest: ``INT8_BOUND`` for int8, 1e-4 for float32)."""
    out, _ = site
    site_json = json.loads((out / SITE_FILE).read_text(encoding="utf-8"))
    if not site_json["live"]:
        pytest.skip("onnxruntime-web is not installed here (make install with npm puts it in site-vendor/)")
    ui, requests = sui
    page = ui.page
    for model, text in TYPED.items():
        assert text not in site_json["sentences"][model]
        bound = json.loads((out / "models" / model / "manifest.json").read_text(encoding="utf-8"))["tolerance"]["unit_interval"]
        page.goto(f"{ui.base}/index.html#attention?model={model}&layer=1&head=2")
        page.wait_for_selector("#weights-table td[data-value]")
        page.fill("#sentence", text)
        page.press("#sentence", "Enter")
        page.wait_for_function("t => document.getElementById('view-attention').dataset.sentence === t", arg=text)
        page.wait_for_selector("#weights-table td[data-value]")
        table = page.locator("#weights-table")
        layer, head, focus = (int(table.get_attribute(f"data-{k}")) for k in ("layer", "head", "focus"))
        shown = table.locator("td[data-value]").evaluate_all("cs => cs.map(c => Number(c.dataset.value))")
        loaded = cat.load(model)
        expected = _hook(model, text, self_attention_stack(loaded).name(layer, "attn.hook_weights"), [0, head, focus])
        assert (layer, head) == (1, 2) and len(shown) == len(loaded.tokenizer.encode(text))
        torch.testing.assert_close(torch.tensor(shown, dtype=torch.float64), expected[: len(shown)], rtol=0, atol=bound)
        assert page.locator("#error").is_hidden(), page.inner_text("#error")
        ui.screenshot(f"site-typed-{model}")
    # Q·K·V on MiniLM's typed sentence: the view's JSON export is the answer it drew.
    text = TYPED["minilm"]
    page.goto(f"{ui.base}/index.html#qkv?model=minilm&text={quote(text)}&layer=4&head=2&query=3")
    page.wait_for_selector("#qkv-table tr.focus")
    with page.expect_download() as info:
        page.click('#view-qkv [data-export="qkv"] button[data-kind=json]')
    p = json.loads(Path(info.value.path()).read_text(encoding="utf-8"))
    assert (p["layer"], p["head"], p["focus"]) == (4, 2, 3)
    bound = json.loads((out / "models/minilm/manifest.json").read_text(encoding="utf-8"))["tolerance"]["unit_interval"]
    torch.testing.assert_close(torch.tensor(p["weights"], dtype=torch.float64),
                               _hook("minilm", text, p["hooks"]["weights"], [0, 2, 3]), rtol=0, atol=bound)
    assert page.locator("#error").is_hidden(), page.inner_text("#error")
    # The character model's next token after a typed prompt (the Generate view's bars: token, probability to 3 digits).
    prompt = "KING LEAR: Why weep you, daught"
    page.goto(f"{ui.base}/index.html#generate?model=shakespeare-char&text={quote(prompt)}")
    page.wait_for_selector("#gen-next text[x='420']")
    page.evaluate("""() => { for (const [k, v] of [["temperature", 1], ["top_k", 0], ["top_p", 1]]) {  // plain softmax
        const input = document.querySelector(`#gen-sliders input[data-setting=${k}]`);
        input.value = String(v); input.dispatchEvent(new Event("input", { bubbles: true })); } }""")
    bars = page.locator("#gen-next").evaluate(
        "svg => [...svg.querySelectorAll('text[x=\"100\"]')].map((t, i) => [JSON.parse(t.textContent),"
        " Number(svg.querySelectorAll('text[x=\"420\"]')[i].textContent)])")
    bound = json.loads((out / "models/shakespeare-char/manifest.json").read_text(encoding="utf-8"))["tolerance"]["unit_interval"]
    probs = torch.softmax(_hook("shakespeare-char", prompt, "hook_logits", [0, -1]), -1)
    tok = cat.load("shakespeare-char").tokenizer
    assert len(bars) >= 5 and tok.encode(bars[0][0]) == [int(probs.argmax())]  # the model's first choice on top
    for token, shown in bars:
        assert abs(shown - probs[tok.encode(token)[0]].item()) <= bound + 5e-4, (token, shown)  # 3 digits shown
    assert page.locator("#error").is_hidden(), page.inner_text("#error")
    _only_own_origin(requests, ui.base)
    assert any("/models/shakespeare-char/model.onnx" in u for u in requests)
    assert any("/models/minilm/model.onnx" in u for u in requests) and any("/vendor/onnxruntime-web/" in u for u in requests)
    assert ui.errors == []
