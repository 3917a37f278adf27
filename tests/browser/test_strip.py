"""The model strip (static/strip.js) in a real Chromium: on every tour step and every explore view, drawn for the
model shown (its family and its sizes), the step's or view's part lit, residual paths drawn, clickable, never over
the content at 1440x900, 1024x768 and 390x844; Q·K·V as coloured vectors and the feed-forward step's numbers."""

from __future__ import annotations

import time

import pytest
import torch

from attnlab import catalog as cat
from attnlab.inspect import run_with_cache

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The part each explore view is about (strip.js VIEW_PART); the others show the whole model.
VIEW_PART = {"attention": "attention", "qkv": "attention", "why": "attention", "timeline": "attention", "order": "position",
             "generate": "output", "translate": "cross"}
FAMILY = {"encoder": "encoder", "decoder": "decoder", "encoder-decoder": "encoder-decoder"}


def _until(page, expression: str, timeout_s: float = 120) -> None:
    """Poll ``expression`` in the page until it is true (the page's CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        page.wait_for_timeout(100)


def _strip(page) -> dict:
    page.wait_for_selector("#model-strip[data-state=ready]", timeout=120_000)
    return page.evaluate("""() => { const s = document.getElementById('model-strip');
      const parts = (sel) => [...s.querySelectorAll(sel)].map((g) => g.dataset.stripPart);
      return { model: s.dataset.model, family: s.dataset.family, lit: s.dataset.lit, hidden: s.hidden,
        litParts: [...new Set(parts('.strip-part.lit'))].sort(), allParts: [...new Set(parts('.strip-part'))].sort(),
        skips: s.querySelectorAll('[data-strip-part=residual] .strip-skip').length,
        adds: s.querySelectorAll('[data-strip-part=residual] .strip-add').length,
        text: s.innerText }; }""")


def _wait_strip_for(page, model: str) -> dict:
    _until(page, f"document.getElementById('model-strip').dataset.model === {model!r} && "
                 "document.getElementById('model-strip').dataset.state === 'ready'")
    return _strip(page)


def test_the_strip_is_on_every_tour_step_for_its_model_with_its_part_lit(ui) -> None:
    ui.open("#tour/1")
    page = ui.page
    steps = page.evaluate("fetch('/api/tour').then(r => r.json())")["steps"]
    models = {m["name"]: m for m in page.evaluate("fetch('/api/models').then(r => r.json())")["models"]}
    families = set()
    for step in steps:
        page.evaluate(f"location.hash = '#tour/{step['n']}'")
        page.wait_for_selector(f"#view-tour[data-step='{step['n']}']")
        pre = step["preset"]
        model = pre["model"] or (next(m for m in models.values() if m["timeline"] and m["available"])["name"]
                                 if pre["widget"] == "timeline" else None)
        s = _wait_strip_for(page, model) if model else _strip(page)
        assert not s["hidden"]
        assert s["litParts"] == sorted((step["strip"] or "").split()), (step["slug"], s)
        assert s["family"] == models[s["model"]]["family"]
        families.add(s["family"])
        # the residual connections: a skip path and an add (⊕) around every sub-layer of a block
        shape = page.evaluate(f"fetch('/api/shape', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: JSON.stringify({{model: {s['model']!r}}})}}).then(r => r.json())")
        sublayers = (1 + (not shape["attn_only"])) + (2 + (not shape["attn_only"]) if shape["family"] == "encoder-decoder" else 0)
        assert s["skips"] == s["adds"] == sublayers, (step["slug"], s)
        # its real sizes, from the model's config
        assert f"{shape['n_heads']} heads" in s["text"] and f"width {shape['d_model']}" in s["text"]
        assert (f"{shape['n_layers']} blocks" in s["text"]) or (f"{shape['n_layers']} + {shape['n_decoder_layers']} blocks" in s["text"])
        assert ("ffn" in s["allParts"]) == (not shape["attn_only"])
        assert ("cross" in s["allParts"]) == (shape["family"] == "encoder-decoder")
    assert len(families) >= 2  # the steps' models are of several families, and the strip follows them


def test_the_strip_follows_every_view_and_redraws_for_another_family(ui) -> None:
    ui.open("#attention")
    page = ui.page
    views = page.eval_on_selector_all("#tabs a[data-view]", "as => as.map(a => a.dataset.view)")
    views = [v for v in views if v not in ("tour", "learn")]
    assert {"arch", "attention", "qkv"} <= set(views)
    for v in views:
        page.evaluate(f"location.hash = '#{v}'")
        _until(page, f"document.body.dataset.view === {v!r}")
        page.wait_for_timeout(200)
        s = _strip(page)
        assert not s["hidden"]
        assert s["lit"] == VIEW_PART.get(v, ""), (v, s)
    # Opening a box of the Architecture view lights its part
    page.evaluate("location.hash = '#arch/enc-ff'")
    _until(page, "document.getElementById('model-strip').dataset.lit === 'ffn'")
    # A model of another family redraws the strip for that family
    page.evaluate("location.hash = '#attention'")
    for name, family in (("demo-decoder", "decoder"), ("demo-seq2seq", "encoder-decoder"), ("demo-encoder", "encoder")):
        page.select_option("#model", name)
        s = _wait_strip_for(page, name)
        assert s["family"] == family and s["lit"] == "attention"
        assert ("cross" in s["allParts"]) == (family == "encoder-decoder")
        assert ("output" in s["allParts"]) == (family != "encoder")  # the demo encoder has no output head
    # Learn shows no strip
    page.evaluate("location.hash = '#learn'")
    _until(page, "document.getElementById('model-strip').hidden")


def test_clicking_a_part_of_the_strip_opens_its_step_or_its_explanation(ui) -> None:
    ui.open("#tour/1")
    page = ui.page
    steps = page.evaluate("fetch('/api/tour').then(r => r.json())")["steps"]
    _strip(page)
    page.click("#model-strip [data-strip-part=ffn] rect")
    first_ffn = next(s["n"] for s in steps if "ffn" in (s["strip"] or "").split())
    _until(page, f"location.hash === '#tour/{first_ffn}'")
    _until(page, "document.getElementById('model-strip').dataset.lit.split(' ').includes('ffn')")
    page.evaluate("location.hash = '#qkv'")
    _until(page, "document.getElementById('model-strip').dataset.lit === 'attention'")
    page.focus("#model-strip [data-strip-part=embed]")
    page.keyboard.press("Enter")
    _until(page, "location.hash === '#learn/embeddings'")


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (1024, 768), (390, 844)])
def test_the_strip_never_covers_the_content(make_ui, width: int, height: int) -> None:
    ui = make_ui(width, height)
    ui.open("#tour/1")
    page = ui.page
    for target in ("#tour/1", "#tour/5", "#tour/12", "#tour/14", "#qkv", "#arch"):
        page.evaluate(f"location.hash = '{target}'")
        page.wait_for_timeout(300)
        _strip(page)
        boxes = page.evaluate("""() => { const r = (el) => el && el.getBoundingClientRect();
          const strip = r(document.getElementById('model-strip'));
          const content = [...document.querySelectorAll('.view:not([hidden]) .tour-text, .view:not([hidden]) .tour-widget, .view:not([hidden]) > *')]
            .map(r).filter((b) => b.width && b.height);
          const overlaps = content.filter((b) => b.top < strip.bottom - 0.5 && b.bottom > strip.top + 0.5 && b.left < strip.right && b.right > strip.left);
          return { overlaps: overlaps.length, n: content.length, scroll: document.documentElement.scrollWidth, inner: innerWidth,
                   stripRight: strip.right, figure: r(document.querySelector('#model-strip svg')) }; }""")
        assert boxes["n"] > 0 and boxes["overlaps"] == 0, (target, width, boxes)
        assert boxes["scroll"] <= boxes["inner"] and boxes["stripRight"] <= boxes["inner"], (target, width, boxes)
        # drawn at full size on a desktop; on a phone the whole picture shrinks to the width, not to a line
        assert boxes["figure"]["height"] >= (80 if width >= 1024 else 50), (target, width, boxes)
    ui.screenshot(f"strip-{width}x{height}")


@pytest.mark.parametrize("viewport", [(1440, 900), (1024, 768)])
def test_the_feed_forward_figures_are_drawn_at_full_size(make_ui, viewport) -> None:
    """At 1024x768 the residual map was squeezed beside the plot to about half its size (labels 6 px high)."""
    ui = make_ui(*viewport)
    ui.open("#tour/1")
    page = ui.page
    steps = page.evaluate("fetch('/api/tour').then(r => r.json())")["steps"]
    n = next(s["n"] for s in steps if s["preset"]["widget"] == "ffn")
    page.evaluate(f"location.hash = '#tour/{n}'")
    page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-widget[data-state=ready]", timeout=120_000)
    scales = page.locator(".ffn-split figure > svg").evaluate_all(
        "ss => ss.map(s => s.getBoundingClientRect().width / Number(s.getAttribute('width')))")
    assert len(scales) == 2 and min(scales) >= 0.99, scales
    assert ui.errors == []


def test_no_line_of_the_strip_runs_through_its_labels(ui) -> None:
    """The residual stream ends before the "→ vectors" label of an encoder-only model (it once struck the label
    through); every text of the strip (box names, "block × N", "rotary positions") is clear of the stream lines.
    The boxes are drawn over the line on purpose (the stream passes through them), so only free text is checked."""
    ui.open("#tour/1")
    page = ui.page
    for target in ("#attention?model=demo-encoder", "#attention?model=demo-decoder", "#tour/1"):
        page.evaluate(f"location.hash = '{target}'")
        page.wait_for_timeout(300)
        shape = _strip(page)
        crossed = page.evaluate("""() => {
          const s = document.getElementById('model-strip'), out = [];
          const lines = [...s.querySelectorAll('line.strip-stream')].map((l) => l.getBoundingClientRect());
          for (const t of s.querySelectorAll('svg > text')) {
            const r = t.getBoundingClientRect();
            for (const l of lines) if (l.left < r.right - 1 && l.right > r.left + 1 && l.top >= r.top && l.top <= r.bottom) out.push(t.textContent);
          }
          return out; }""")
        assert crossed == [], (target, shape["model"], crossed)
    assert ui.errors == []


def test_qkv_vectors_are_the_models_numbers_in_the_colours_of_the_formulas_terms(ui) -> None:
    name = "demo-encoder"
    text = "the cat sat on the mat."
    ui.open(f"#qkv?model={name}&text={text.replace(' ', '%20')}&layer=1&head=2&query=4")
    page = ui.page
    page.wait_for_selector(".qkv-vectors g[data-term=q] rect")
    colours = page.evaluate("""() => Object.fromEntries(['q', 'k', 'v'].map((t) => [t, {
        term: getComputedStyle(document.querySelector('.qkv-formula .term-' + t)).color,
        cell: getComputedStyle(document.querySelector('.qkv-vectors g[data-term=' + t + '] rect')).fill,
        values: [...document.querySelectorAll('.qkv-vectors g[data-term=' + t + '] rect')].map((r) => Number(r.dataset.value))}]))""")
    assert len({c["term"] for c in colours.values()}) == 3  # three different colours
    for c in colours.values():
        assert c["term"] == c["cell"]  # each vector is drawn in its term's colour
    key = int(page.get_attribute(".qkv-formula", "data-key"))
    loaded = cat.load(name)
    ids = loaded.tokenizer.encode(text)
    _, cache = run_with_cache(loaded.model, torch.tensor([ids]), names="encoder.blocks.1.attn.*")
    weights = cache["encoder.blocks.1.attn.hook_weights"][0, 2, 4]
    assert key == int(weights.argmax())  # the key shown first is the one the query weighs most
    for t, index in (("q", 4), ("k", key), ("v", key)):
        want = cache[f"encoder.blocks.1.attn.hook_{t}"][0, 2, index, :8].double()
        torch.testing.assert_close(torch.tensor(colours[t]["values"], dtype=torch.float64), want, rtol=0, atol=1e-6)
    # another key: its k and v
    page.click(".qkv-keys button[data-token='1']")
    page.wait_for_selector(".qkv-formula[data-key='1']")
    k1 = page.eval_on_selector_all(".qkv-vectors g[data-term=k] rect", "rs => rs.map(r => Number(r.dataset.value))")
    torch.testing.assert_close(torch.tensor(k1, dtype=torch.float64), cache["encoder.blocks.1.attn.hook_k"][0, 2, 1, :8].double(), rtol=0, atol=1e-6)


def test_the_feed_forward_step_draws_the_hooks_numbers_and_says_only_computed_numbers(ui) -> None:
    ui.open("#tour/1")
    page = ui.page
    steps = page.evaluate("fetch('/api/tour').then(r => r.json())")["steps"]
    step = next(s for s in steps if s["preset"]["widget"] == "ffn")
    page.evaluate(f"location.hash = '#tour/{step['n']}'")
    page.wait_for_selector(f"#view-tour[data-step='{step['n']}'] .tour-widget[data-state=ready]", timeout=120_000)
    page.wait_for_selector(".tour-text[data-claims=ready]")
    pre = step["preset"]
    loaded = cat.load(pre["model"])
    tables = page.locator(".tour-widget table.check").evaluate_all(
        "ts => ts.map(t => ({hook: t.dataset.hook, index: t.dataset.index.split(',').map(Number),"
        " values: [...t.querySelectorAll('td[data-value]')].map(c => Number(c.dataset.value))}))")
    hooks = {t["hook"].rsplit(".", 1)[-1] for t in tables}
    assert {"hook_hidden", "hook_pre"} <= hooks
    ids = page.evaluate(f"fetch('/api/attention', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: JSON.stringify({{model: {pre['model']!r}, text: {pre['text']!r}}})}}).then(r => r.json())")["ids"]
    _, cache = run_with_cache(loaded.model, torch.tensor([ids]), names=[t["hook"] for t in tables])
    for t in tables:
        want = cache[t["hook"]][tuple(t["index"])][: len(t["values"])].double()
        torch.testing.assert_close(torch.tensor(t["values"], dtype=torch.float64), want, rtol=0, atol=1e-5)
    # the text's numbers are all computed slots (test_web_tour recomputes each)
    assert page.locator(".tour-text .claim[data-slot^=ffn_]").count() >= 8
    # the residual map's rows are named in plain words, not drawn as tokens ("+␣ffn␣out")
    labels = page.locator(".ffn-residual svg text.label").evaluate_all("ts => ts.map(t => t.textContent.replace(/\\u00a0/g, ' '))")
    assert labels[:4] == ["stream", "+ ffn out", "= sum", "output"], labels  # then the colour bar's two ends
    # and a click on another token redraws the step for it
    page.click(".tour-widget .chip[data-token='1']")
    page.wait_for_selector(".tour-widget .chip[data-token='1'][aria-pressed=true]")


def test_the_content_does_not_jump_when_the_strip_arrives(ui) -> None:
    """The strip keeps its drawn height while its model's shape loads (a one-stack model), so what a learner is about
    to click does not move under the mouse; it was 9 px high while loading and 99 px once drawn."""
    page = ui.page
    page.set_viewport_size({"width": 1440, "height": 900})
    page.route("**/api/shape", lambda route: (page.wait_for_timeout(1500), route.continue_()))  # hold the shape back
    ui.open("#tour/1")
    loading = page.evaluate("document.getElementById('model-strip').getBoundingClientRect().height")
    page.wait_for_selector("#model-strip[data-state=ready]", timeout=120_000)
    drawn = page.evaluate("document.getElementById('model-strip').getBoundingClientRect().height")
    assert drawn == loading, (loading, drawn)


def test_a_step_whose_figure_is_not_from_a_model_says_so_on_the_strip(ui) -> None:
    """The toy and experiment-plot steps show the page's model in the strip; the strip says their figure is not its."""
    ui.open("#tour/1")
    page = ui.page
    steps = page.evaluate("fetch('/api/tour').then(r => r.json())")["steps"]
    checked = 0
    for step in steps:
        pre = step["preset"]
        page.evaluate(f"location.hash = '#tour/{step['n']}'")
        page.wait_for_selector(f"#view-tour[data-step='{step['n']}']")
        n = step["n"]
        _until(page, "(() => { const s = document.getElementById('model-strip'); return s.dataset.state === 'ready' && "
                     f"(s.innerText.includes('step {n}:') || s.innerText.includes('step {n} (')); }})()")
        here = _strip(page)["text"]
        says = "not this model" in here
        assert says == (pre["widget"] in ("toy", "figure") and not pre["model"]), (step["n"], pre["widget"], here)
        checked += says
    assert checked >= 2  # the toy step and at least one experiment plot
