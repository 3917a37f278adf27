"""The guided tour, the head finder, deep links and layout, in a real Chromium.

Numbers a widget shows are checked against ``run_with_cache`` on the same model and sentence; each
widget lists them in a hidden ``table.check`` naming the hook and index they were read from.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnlab import catalog as cat
from attnlab.inspect import run_with_cache

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SENTENCE = "John gave the book to Sarah because she liked it."


def _available(name: str) -> bool:
    return any(i.name == name and i.available for i in cat.catalog())


def _expected(model: str, text: str, hook: str, index: list[int]) -> torch.Tensor:
    loaded = cat.load(model)
    x = torch.tensor([loaded.tokenizer.encode(text)])
    args = (x, x) if loaded.config.family == "encoder-decoder" else (x,)
    _, cache = run_with_cache(loaded.model, *args, names=hook)
    return cache[hook][tuple(index)].double()


def _check_tables(page) -> list[dict]:
    return page.locator(".tour-widget table.check").evaluate_all(
        "ts => ts.map(t => ({hook: t.dataset.hook, index: t.dataset.index.split(',').map(Number),"
        " values: [...t.querySelectorAll('td[data-value]')].map(c => Number(c.dataset.value))}))")


def _wait_step(page, n: int) -> None:
    """Wait for step n's figure; a step that asks first (predict) is answered with "Skip: show me"."""
    widget = f"#view-tour[data-step='{n}'] .tour-widget"
    page.wait_for_selector(f"{widget}[data-state=ready], {widget}[data-state=asking]", timeout=120_000)
    if page.locator(f"{widget}[data-state=asking]").count():
        page.click(f"#view-tour[data-step='{n}'] .predict-skip")
        page.wait_for_selector(f"{widget}[data-state=ready]", timeout=120_000)


def test_the_tour_is_the_landing_page_and_every_step_shows_the_models_numbers(ui) -> None:
    ui.open()
    page = ui.page
    assert page.evaluate("location.hash") == "#tour/1"
    tour = page.evaluate("fetch('/api/tour').then(r => r.json())")
    steps = tour["steps"]
    assert 10 <= len(steps) <= 20
    assert "tokens talk to each other through attention" in steps[0]["html"]
    checked = 0
    for n, step in enumerate(steps, start=1):
        _wait_step(page, n)
        # The text's computed slots are filled in from GET /api/tour/N: none is left pending or failed.
        page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-text[data-claims=ready]")
        assert page.locator(".tour-text .claim.pending").count() == 0
        slots = (step["html"] + (step["reveal_html"] or "")).count("claim pending")  # a predict step's reveal text too
        if slots and step["note"] is None:  # its own model is installed: every slot computes
            assert page.locator(".tour-text .claim[data-slot]").count() == slots
        assert page.inner_text(".tour-count") == f"Step {n} of {len(steps)}"
        assert page.evaluate("location.hash") == f"#tour/{n}"
        preset = step["preset"]
        for table in _check_tables(page):
            expected = _expected(preset["model"], preset["text"], table["hook"], table["index"])
            shown = torch.tensor(table["values"], dtype=torch.float64)
            torch.testing.assert_close(shown, expected[: len(shown)], rtol=0, atol=1e-6)
            checked += 1
        if preset["widget"] == "toy":
            toy = tour["toy"]
            q = torch.tensor(toy["q"], dtype=torch.float64)
            scores = torch.tensor(toy["keys"], dtype=torch.float64) @ q / math.sqrt(toy["d_k"])
            shown = page.locator("#toy-table td[data-value]").evaluate_all("cs => cs.map(c => Number(c.dataset.value))")
            torch.testing.assert_close(torch.tensor(shown, dtype=torch.float64), torch.softmax(scores, -1), rtol=0, atol=1e-9)
            assert "Toy, not a real model" in page.inner_text(".tour-widget")
        if n in (1, 9, 15):
            ui.screenshot(f"tour-step-{n:02d}")
        if n < len(steps):  # alternate the Next button and the right-arrow key
            if n % 2:
                page.click("#tour-next")
            else:
                page.locator("body").press("ArrowRight")
    assert checked >= 8, "the model widgets should list the numbers they show"
    page.locator("body").press("ArrowLeft")
    _wait_step(page, len(steps) - 1)
    page.click("#tour-back")
    _wait_step(page, len(steps) - 2)
    page.goto(f"{ui.base}/#tour/4")
    _wait_step(page, 4)
    assert page.locator(".tour-progress .dot[aria-current=step]").get_attribute("href") == "#tour/4"
    page.locator("body").press("p")  # presenter mode: chrome hidden, large type, arrows still move
    assert page.locator("header").is_hidden() and page.locator("nav#tabs").is_hidden()
    ui.screenshot("tour-presenter")
    page.locator("body").press("ArrowRight")
    _wait_step(page, 5)
    page.locator("body").press("Escape")
    assert page.locator("header").is_visible()
    assert ui.errors == []


def test_clicking_a_toy_token_moves_the_focus_and_redraws_its_weights(ui) -> None:
    """The toy step: each click makes that token the query; the table then shows its row of the payload
    (softmax of q . K / sqrt(d_k), recomputed here from the hand-set vectors)."""
    page = ui.page
    page.set_viewport_size({"width": 1440, "height": 900})
    tour = page.request.get(f"{ui.base}/api/tour").json()
    n = next(s["n"] for s in tour["steps"] if s["preset"]["widget"] == "toy")
    toy = tour["toy"]
    keys = torch.tensor(toy["keys"], dtype=torch.float64)
    ui.open(f"#tour/{n}")
    _wait_step(page, n)
    assert page.get_attribute("#toy-table", "data-focus") == str(toy["query"])
    for i in [*(j for j in range(len(toy["tokens"])) if j != toy["query"]), toy["query"]]:
        page.click(f".toy-tokens button[data-token='{i}']")
        page.wait_for_selector(f"#toy-table[data-focus='{i}']")
        assert page.get_attribute(f".toy-tokens button[data-token='{i}']", "aria-pressed") == "true"
        assert page.inner_text(".toy-query").startswith(f"Query of “{toy['tokens'][i]}”")
        shown = page.locator("#toy-table td[data-value]").evaluate_all("cs => cs.map(c => Number(c.dataset.value))")
        q = torch.tensor(toy["rows"][i]["q"], dtype=torch.float64)
        expected = torch.softmax(keys @ q / math.sqrt(toy["d_k"]), -1)
        torch.testing.assert_close(torch.tensor(shown, dtype=torch.float64), expected, rtol=0, atol=1e-9)
        if i != toy["query"]:
            ui.screenshot(f"tour-toy-focus-{i}")
    assert ui.errors == []


def test_the_embedding_step_shows_ids_and_token_plus_position_equals_input(ui) -> None:
    page = ui.page
    page.set_viewport_size({"width": 1440, "height": 900})
    tour = page.request.get(f"{ui.base}/api/tour").json()
    step = next(s for s in tour["steps"] if s["preset"]["widget"] == "embed")
    pre = step["preset"]
    ui.open(f"#tour/{step['n']}")
    _wait_step(page, step["n"])
    loaded = cat.load(pre["model"])
    ids = loaded.tokenizer.encode(pre["text"])
    shown = page.locator(".embed-ids tbody tr").evaluate_all("rs => rs.map(r => Number(r.dataset.id))")
    assert shown == ids
    assert page.locator(".embed-part").count() == 3
    tables = _check_tables(page)  # token row, position row, input row of the focus token, each from its hook
    assert [t["hook"].rsplit(".", 1)[-1] for t in tables] == ["hook_tok_embed", "hook_pos_embed", "hook_embed"]
    for t in tables:
        expected = _expected(pre["model"], pre["text"], t["hook"], t["index"])
        torch.testing.assert_close(torch.tensor(t["values"], dtype=torch.float64), expected[: len(t["values"])], rtol=0, atol=1e-6)
    tok, pos, inp = (torch.tensor(t["values"], dtype=torch.float64) for t in tables)
    torch.testing.assert_close(tok + pos, inp, rtol=0, atol=1e-6)
    ui.screenshot("tour-embed-1440x900")
    assert ui.errors == []


def test_the_order_step_draws_both_grids_with_the_numbers_its_text_quotes(ui) -> None:
    page = ui.page
    page.set_viewport_size({"width": 1440, "height": 900})
    tour = page.request.get(f"{ui.base}/api/tour").json()
    n = next(s["n"] for s in tour["steps"] if s["preset"]["widget"] == "order")
    ui.open(f"#tour/{n}")
    _wait_step(page, n)
    page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-text[data-claims=ready]")
    for positions in ("true", "false"):
        head = page.inner_text(f".order-fig[data-positions={positions}] h4")
        slot = page.inner_text(f".tour-text .claim[data-slot='nearest {'with' if positions == 'true' else 'without'}']")
        assert head.endswith(slot), (head, slot)
        assert page.locator(f".order-fig[data-positions={positions}] svg rect").count() > 0
    # the two grids are compared, so they share one colour scale (they had 0-10.97 and 0-15.69: one shade, two distances)
    scales = page.locator(".order-fig svg[data-positions]").evaluate_all("ss => ss.map(s => [s.dataset.lo, s.dataset.hi])")
    assert len(scales) == 2 and scales[0] == scales[1], scales
    ui.screenshot("tour-order-1440x900")
    assert ui.errors == []


def test_the_head_finder_ranks_heads_by_specificity_like_run_with_cache(ui) -> None:
    model = "minilm" if _available("minilm") else "demo-encoder"
    loaded = cat.load(model)
    ids = loaded.tokenizer.encode(SENTENCE)
    tokens = loaded.tokenizer.tokens(ids)
    query, key = (tokens.index("it"), tokens.index("book")) if model == "minilm" else (len(ids) - 2, 1)
    _, cache = run_with_cache(loaded.model, torch.tensor([ids]), names="*hook_weights")
    others = [i for i, t in enumerate(tokens) if i not in (query, key) and t not in ("[CLS]", "[SEP]")]
    ranked = []
    for layer in range(loaded.config.n_layers):
        for head in range(loaded.config.n_heads):
            w = cache.attention(layer)[0, head, :, key].double()
            ranked.append((float(w[query] - w[others].mean()), layer, head))
    expected = [f"L{layer} H{head}" for _, layer, head in sorted(ranked, key=lambda w: (-w[0], w[1], w[2]))]

    ui.open(f"#attention?model={model}")
    page = ui.page
    page.wait_for_selector("#finder-query option", state="attached")
    page.select_option("#finder-query", str(query))
    page.select_option("#finder-key", str(key))
    page.click("#finder-run")
    page.wait_for_selector(f"ol.ranking[data-query='{query}'][data-key='{key}'] li[data-label]")
    shown = page.locator("ol.ranking li[data-label]").evaluate_all("ls => ls.map(l => l.dataset.label)")
    assert shown == expected[: len(shown)]
    specs = page.locator("ol.ranking li[data-label]").evaluate_all("ls => ls.map(l => Number(l.dataset.specificity))")
    assert specs == sorted(specs, reverse=True)
    # weight and specificity side by side, and the threshold stated on the page; links marked by it
    threshold = float(page.get_attribute("p.threshold", "data-threshold"))
    assert f"at least {threshold:g}" in page.inner_text("p.threshold")
    links = page.locator("ol.ranking li[data-label]").evaluate_all("ls => ls.map(l => l.dataset.link === 'true')")
    assert links == [s >= threshold for s in specs]
    first = page.inner_text("ol.ranking li[data-label] >> nth=0")
    assert f"{specs[0]:.3f}" in first
    outlined = page.locator("#att-grid .cell.top").evaluate_all("cs => cs.map(c => `L${c.dataset.layer} H${c.dataset.head}`)")
    assert sorted(outlined) == sorted(expected[:3])
    assert page.locator("#att-grid .axis.row").count() == loaded.config.n_layers  # a row per layer
    assert page.locator("#att-grid .axis.col").count() == loaded.config.n_heads
    ui.screenshot("head-finder")
    # The URL now holds the sentence, query and key: a fresh page from it shows the same ranking.
    url = page.url
    assert "text=" in url
    page.goto("about:blank")
    page.goto(url)
    page.wait_for_selector(f"ol.ranking[data-query='{query}'][data-key='{key}'] li[data-label]")
    assert page.locator("ol.ranking li[data-label]").evaluate_all("ls => ls.map(l => l.dataset.label)") == shown
    assert ui.errors == []


def test_a_deep_link_without_a_sentence_opens_the_default_sentence_not_the_previous_one(ui) -> None:
    ui.open("#attention?model=demo-encoder&text=hello%20there%20world")
    page = ui.page
    page.wait_for_selector("#view-attention[data-sentence='hello there world'] #att-lines [data-token]")
    default = page.evaluate("import('/static/model.js').then(m => m.DEFAULT_SENTENCE)")
    page.evaluate("location.hash = '#attention?model=demo-encoder&layer=1&head=0&query=5'")
    page.wait_for_selector(f"#view-attention[data-sentence='{default}']")
    page.wait_for_selector('#weights-table[data-layer="1"][data-head="0"][data-focus="5"]', state="attached")
    assert page.input_value("#sentence") == default
    assert "text=" in page.url  # links the page writes always carry their sentence
    # A new sentence without query= starts on that sentence's default focus, not the old index.
    page.evaluate("location.hash = '#attention?model=demo-encoder&text=ab'")
    page.wait_for_selector("#view-attention[data-sentence='ab'] #att-lines [data-token]")
    assert int(page.get_attribute("#weights-table", "data-focus")) == 1
    # The Translate view: a link naming a target token but no sentence opens the showcase verse.
    if _available("translator"):
        page.evaluate("location.hash = '#translate?text=In%20the%20beginning&query=1'")
        page.wait_for_selector("#view-translate[data-sentence='In the beginning'] #tr-lines *")
        page.evaluate("location.hash = '#translate?query=2'")
        verse = page.evaluate("document.getElementById('tr-text').defaultValue")
        page.wait_for_selector(f"#view-translate[data-sentence='{verse}'] #tr-lines *")
        assert page.input_value("#tr-text") == verse
    assert ui.errors == []


LONG = "word " * 80  # more tokens than any view takes: a 422 naming the limit


def test_every_view_clears_its_results_after_an_error(ui) -> None:
    ui.open("#attention?model=demo-encoder&text=hello%20there")
    page = ui.page
    page.wait_for_selector("#att-lines [data-token]")
    page.evaluate(f"location.hash = '#attention?model=demo-encoder&text={LONG.strip().replace(' ', '%20')}'")
    page.wait_for_selector("#error:not([hidden])")
    assert "tokens" in page.inner_text("#error")
    for sel in ("#att-lines", "#att-heatmap", "#att-grid", "#finder-result", "#weights-table"):
        assert page.locator(f"{sel} > *").count() == 0, sel
    assert page.inner_text("#att-focus-label") == ""

    long_ = LONG.strip().replace(" ", "%20")
    page.evaluate("location.hash = '#qkv?model=demo-encoder&text=hello%20there'")
    page.wait_for_selector("#qkv-body tr")
    page.wait_for_selector("#error", state="hidden")
    page.evaluate(f"location.hash = '#qkv?model=demo-encoder&text={long_}'")
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#qkv-body > *").count() == 0 and page.inner_text("#qkv-title") == ""

    page.evaluate("location.hash = '#generate?model=demo-decoder&text=the%20cat'")
    page.wait_for_selector("#gen-next rect")
    page.wait_for_selector("#error", state="hidden")
    page.evaluate(f"location.hash = '#generate?model=demo-decoder&text={long_}'")
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#gen-next > *").count() == 0

    page.evaluate("location.hash = '#why?model=demo-decoder&text=the%20cat'")
    page.wait_for_selector("#why-root > *")
    page.wait_for_selector("#error", state="hidden")
    page.evaluate(f"location.hash = '#why?model=demo-decoder&text={long_}'")  # (every family answers Why now)
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#why-root > *").count() == 0

    # Architecture: a part's live values for the sentence; a failed request leaves no "computing…" beside the error
    page.evaluate("location.hash = '#arch/enc-ff?model=demo-encoder&text=hello%20there'")
    page.wait_for_selector("#part-live > *", state="attached")
    page.wait_for_selector("#error", state="hidden")
    page.evaluate(f"location.hash = '#arch/enc-ff?model=demo-encoder&text={long_}'")
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#part-live > *").count() == 0 and page.inner_text("#part-live") == ""

    if _available("translator"):
        page.evaluate("location.hash = '#translate?text=In%20the%20beginning'")
        page.wait_for_selector("#view-translate[data-sentence='In the beginning'] #tr-lines *")
        page.wait_for_selector("#error", state="hidden")
        page.fill("#tr-text", LONG)
        page.click("#tr-run")
        page.wait_for_selector("#error:not([hidden])")
        for sel in ("#tr-output", "#tr-lines", "#tr-heatmap", "#tr-table"):
            assert page.locator(f"{sel} > *").count() == 0, sel
    assert [e for e in ui.errors if "422" not in e] == []


_WIDER_THAN_THE_FIGURE = """() => {
  const box = document.querySelector('.tour-widget').getBoundingClientRect();
  return [...document.querySelectorAll('.tour-widget *')].map(e => [e, e.getBoundingClientRect()])
    .filter(([, r]) => r.width > 0 && r.right > box.right + 1)
    .map(([e, r]) => `${e.tagName}#${e.id} ${Math.round(r.right - box.right)} px`).slice(0, 5);
}"""


@pytest.mark.parametrize("viewport", [(1440, 900), (1024, 768)])
def test_the_qkv_table_fits_its_box_in_the_tour_and_the_view(make_ui, viewport) -> None:
    """All seven columns of the Q·K·V table, value v included, lie inside the figure's box (it was 1,125 px wide in a
    996 px box at 1440x900, 638 px at 1024x768) and inside the Q·K·V view's panel."""
    ui = make_ui(*viewport)
    ui.open("#tour/1")
    steps = ui.page.request.get(f"{ui.base}/api/tour").json()["steps"]
    n = next(s["n"] for s in steps if s["preset"]["widget"] == "qkv")
    ui.page.evaluate(f"location.hash = '#tour/{n}'")
    _wait_step(ui.page, n)
    ui.page.wait_for_selector("#qkv-table tbody tr")
    assert ui.page.evaluate(_WIDER_THAN_THE_FIGURE) == []
    ui.page.evaluate("location.hash = '#qkv'")
    ui.page.wait_for_selector("#view-qkv #qkv-table tbody tr")
    table, panel = ui.page.evaluate("""() => { const t = document.querySelector('#view-qkv #qkv-table');
      return [t.getBoundingClientRect().right, t.parentElement.getBoundingClientRect().right]; }""")
    assert table <= panel + 1
    assert ui.errors == []


@pytest.mark.parametrize("viewport", [(1440, 900), (1024, 768)])
def test_screenshots_of_every_step_with_the_figure_beside_the_text(make_ui, viewport) -> None:
    ui = make_ui(*viewport)
    steps = ui.page.request.get(f"{ui.base}/api/tour").json()["steps"]
    for n in range(1, len(steps) + 1):
        ui.page.goto("about:blank")
        ui.open(f"#tour/{n}")
        _wait_step(ui.page, n)
        ui.page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-text[data-claims=ready]")
        assert ui.page.locator(".tour-text .claim.pending").count() == 0
        # the text says "on the right": at both desktop sizes the figure sits beside the text, above the fold
        text, fig = ui.page.locator(".tour-text").bounding_box(), ui.page.locator(".tour-widget").bounding_box()
        assert fig["x"] >= text["x"] + text["width"] and fig["y"] < viewport[1], (n, text, fig)
        # nothing in the figure reaches past its box (step 5's table once hid its value column off to the right)
        assert ui.page.evaluate(_WIDER_THAN_THE_FIGURE) == [], n
        ui.screenshot(f"tour-step-{n:02d}-{viewport[0]}x{viewport[1]}")
    assert ui.errors == []


def test_a_model_loading_for_another_step_dims_only_what_waits_for_it(ui) -> None:
    """Stepping on while a model an earlier step asked for still loads (smollm2 takes seconds the first time), the
    finished step was drawn at 45 % opacity, as if switched off, and the strip went on showing the previous step's
    model as current. Now only a tour figure still loading is dimmed, and a strip that is loading is shown faded."""
    ui.open("#tour/2")
    page = ui.page
    _wait_step(page, 2)
    page.wait_for_selector("#model-strip[data-state=ready]", timeout=120_000)
    opacity = """() => { const o = (sel) => { let e = document.querySelector(sel), x = 1;
        for (; e; e = e.parentElement) x *= Number(getComputedStyle(e).opacity); return x; };
      return { text: o('.tour-text'), widget: o('.tour-widget'), strip: o('#model-strip .strip-figure') }; }"""
    page.evaluate("document.body.setAttribute('data-loading-model', '')")
    page.wait_for_timeout(400)  # past the 0.2 s fade
    got = page.evaluate(opacity)
    assert got["text"] == 1 and got["widget"] == 1, got  # a finished step stays fully drawn
    page.evaluate("document.querySelector('.tour-widget').dataset.state = 'loading';"
                  "document.getElementById('model-strip').dataset.state = 'loading'")
    page.wait_for_timeout(400)
    got = page.evaluate(opacity)
    assert got["widget"] < 0.5 and got["text"] == 1 and got["strip"] < 0.5, got
    assert ui.errors == []


def test_a_plot_shrunk_into_a_step_opens_full_size(make_ui) -> None:
    """The experiment plots (steps "A head forms", "Why it scales") are drawn for a wide page; at 1024x768 they were
    shrunk to about half (axis labels ~5 px) with no way to see them whole. Each is now a link to itself, full size."""
    ui = make_ui(1024, 768)
    ui.open("#tour/1")
    page = ui.page
    steps = page.request.get(f"{ui.base}/api/tour").json()["steps"]
    figures = [s["n"] for s in steps if s["preset"]["widget"] == "figure"]
    assert figures
    for n in figures:
        page.evaluate(f"location.hash = '#tour/{n}'")
        _wait_step(page, n)
        page.wait_for_selector(".tour-widget figure img")
        got = page.evaluate("""() => { const img = document.querySelector('.tour-widget figure img'), a = img.closest('a');
          return { href: a && a.href, src: img.src, shrunk: img.getBoundingClientRect().width < img.naturalWidth }; }""")
        assert got["href"] == got["src"], (n, got)
        assert page.request.get(got["href"]).status == 200
    assert ui.errors == []


def test_a_deep_link_restores_the_same_numbers(ui) -> None:
    ui.open("#attention", model="demo-encoder")
    page = ui.page
    page.wait_for_selector("#att-lines [data-token]")
    page.select_option("#att-layer", "1")
    page.select_option("#att-head", "2")
    page.click('#att-lines [data-token="3"]')
    page.wait_for_selector('#weights-table[data-layer="1"][data-head="2"][data-focus="3"]', state="attached")
    cells = "#weights-table td[data-value]"
    clicked = page.locator(cells).evaluate_all("cs => cs.map(c => c.dataset.value)")
    url = page.url
    assert "model=demo-encoder" in url and "layer=1" in url and "head=2" in url and "query=3" in url
    page.goto("about:blank")
    page.goto(url)
    page.wait_for_selector('#weights-table[data-layer="1"][data-head="2"][data-focus="3"]', state="attached")
    assert page.locator(cells).evaluate_all("cs => cs.map(c => c.dataset.value)") == clicked
    page.go_back()  # back to about:blank, forward again: the same state
    page.go_forward()
    page.wait_for_selector('#weights-table[data-layer="1"][data-head="2"][data-focus="3"]', state="attached")
    # Q·K·V keeps the selection and shows the same weights (the same hook), also when restored from its URL.
    page.click("#tabs a[data-view=qkv]")
    page.wait_for_selector("#qkv-table tbody tr.focus[data-token='3']")
    qkv = page.locator("#qkv-table td[data-value]").evaluate_all("cs => cs.map(c => c.dataset.value)")
    assert [float(v) for v in qkv] == [float(v) for v in clicked]
    assert page.input_value("#qkv-layer") == "1" and page.input_value("#qkv-head") == "2"
    url = page.url
    assert url.split("#")[1].startswith("qkv?")
    page.goto("about:blank")
    page.goto(url)
    page.wait_for_selector("#qkv-table tbody tr.focus[data-token='3']")
    assert page.locator("#qkv-table td[data-value]").evaluate_all("cs => cs.map(c => c.dataset.value)") == qkv
    assert ui.errors == []


LAYOUT_VIEWS = ["#tour/1", "#tour/2", "#tour/3", "#tour/4", "#tour/9", "#tour/14", "#attention", "#qkv", "#order", "#generate", "#timeline", "#arch/enc-ff", "#translate"]

_OVERLAPS = """() => {
  const out = [];
  for (const svg of document.querySelectorAll('main .view:not([hidden]) svg')) {
    const boxes = [...svg.querySelectorAll('text')].map(t => [t.textContent, t.getBoundingClientRect()]).filter(([, r]) => r.width > 0 && r.height > 0);
    for (let i = 0; i < boxes.length; i += 1) for (let j = i + 1; j < boxes.length; j += 1) {
      const a = boxes[i][1], b = boxes[j][1];
      if (Math.min(a.right, b.right) - Math.max(a.left, b.left) > 0.5 && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 0.5)
        out.push(`${boxes[i][0]} / ${boxes[j][0]}`);
    }
  }
  return out;
}"""


@pytest.mark.parametrize("viewport", [(1440, 900), (1024, 768)])
def test_views_have_no_overlapping_labels_and_fit_the_window(make_ui, viewport) -> None:
    ui = make_ui(*viewport)
    for hash_ in LAYOUT_VIEWS:
        if hash_ == "#translate" and not _available("translator"):
            continue
        ui.page.goto("about:blank")  # a fresh load each time, so nothing of the previous view is waited on
        ui.open(hash_)
        page = ui.page
        if hash_.startswith("#tour"):
            _wait_step(page, int(hash_.split("/")[1]))
        elif hash_ == "#qkv":  # tables, no SVG text
            page.wait_for_selector("#softmax-table tbody tr")
        else:
            page.wait_for_selector("main .view:not([hidden]) svg text", state="attached")
        page.wait_for_selector("#status", state="hidden")
        assert page.evaluate(_OVERLAPS) == [], hash_
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport[0], f"{hash_}: page is {width} px wide in a {viewport[0]} px window"
        content = page.evaluate("document.querySelector('footer').getBoundingClientRect().bottom + scrollY")
        height = page.evaluate("document.documentElement.scrollHeight")
        assert height <= 1.5 * max(content, viewport[1]), f"{hash_}: {height} px tall for {content} px of content"
        ui.screenshot(f"layout-{hash_.strip('#').replace('/', '-')}-{viewport[0]}x{viewport[1]}")
    assert ui.errors == []


TIES = [2.0, 1.0, 2.0, 0.5, 1.0, -1.0, 1.0, 3.0, 1.0, -2.5]
SETTINGS = [(1.0, 0, 1.0), (0.7, 0, 1.0), (0.0, 0, 1.0), (1.0, 3, 1.0), (1.0, 4, 1.0), (1.0, 0, 0.5), (1.0, 0, 0.8),
            (0.5, 2, 0.9), (2.0, 5, 0.3), (1.5, 0, 0.95), (1.0, 1, 1.0), (0.3, 6, 0.6)]


def test_the_pages_sampling_filter_equals_the_librarys(ui) -> None:
    from attnlab.generate import Sampling, sampling_distribution

    ui.open("#arch")
    gen = torch.Generator().manual_seed(0)
    tables = [TIES, [0.0] * 6, torch.randn(300, generator=gen).mul(3).tolist()]
    for logits in tables:
        for temperature, top_k, top_p in SETTINGS:
            shown = ui.page.evaluate(
                "([l, s]) => import('/static/model.js').then(m => Array.from(m.samplingDistribution(l, s)))",
                [logits, {"temperature": temperature, "top_k": top_k, "top_p": top_p}])
            expected = sampling_distribution(torch.tensor(logits), Sampling(temperature=temperature, top_k=top_k, top_p=top_p))
            label = f"T={temperature} top_k={top_k} top_p={top_p} on {len(logits)} logits"
            torch.testing.assert_close(torch.tensor(shown, dtype=torch.float64), expected.double(), rtol=0, atol=1e-6,
                                       msg=lambda m, label=label: f"{label}: {m}")
    assert ui.errors == []


def test_the_sampling_sliders_redraw_without_a_request(ui) -> None:
    ui.open("#generate", model="demo-decoder")
    page = ui.page
    page.fill("#gen-prompt", "the cat")
    page.locator("#gen-next rect").nth(10).wait_for(state="attached")  # the page's CSP forbids wait_for_function's eval
    # the model strip asks for the new model's shape on its own; on a loaded machine that request came in the window below
    page.wait_for_selector("#model-strip[data-state=ready][data-model=demo-decoder]")
    before = page.locator("#gen-next rect").evaluate_all("rs => rs.map(r => r.getAttribute('width'))")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.locator("[data-setting=temperature]").evaluate("e => { e.value = 0.3; e.dispatchEvent(new Event('input')); }")
    after = page.locator("#gen-next rect").evaluate_all("rs => rs.map(r => r.getAttribute('width'))")
    assert after != before and requests == []
    assert ui.errors == []


def test_architecture_fits_a_390_px_phone_without_horizontal_overflow(make_ui) -> None:
    """The diagram scales by its viewBox on a phone (it was a fixed 600 px, the page 620 px wide)."""
    ui = make_ui(390, 844)
    ui.open("#arch")
    page = ui.page
    page.wait_for_selector("#diagram text", state="attached")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"#arch is {width} px wide in a 390 px window"
    box = page.locator("#diagram").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    ui.screenshot("layout-arch-390x844")
    assert ui.errors == []


@pytest.mark.parametrize("viewport", [(1440, 900), (1024, 768)])
def test_presenter_mode_enlarges_the_figure_not_only_the_text(make_ui, viewport) -> None:
    ui = make_ui(*viewport)
    page = ui.page
    tour = page.request.get(f"{ui.base}/api/tour").json()
    n = next(s["n"] for s in tour["steps"] if s["preset"]["widget"] == "order")
    ui.open(f"#tour/{n}")
    _wait_step(page, n)
    figure = ".order-fig[data-positions=true] svg"
    before = page.locator(figure).bounding_box()
    text_before = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.tour-text p')).fontSize)")
    page.locator("body").press("p")
    page.wait_for_selector("body.presenter")
    after = page.locator(figure).bounding_box()
    text_after = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.tour-text p')).fontSize)")
    assert text_after > text_before
    assert after["width"] >= 1.2 * before["width"] and after["height"] >= 1.2 * before["height"], (before, after)
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport[0]
    text, fig = page.locator(".tour-text").bounding_box(), page.locator(".tour-widget").bounding_box()
    assert fig["x"] >= text["x"] + text["width"], (text, fig)  # still side by side
    ui.screenshot(f"tour-presenter-figure-{viewport[0]}x{viewport[1]}")
    assert ui.errors == []


PHONE_VIEWS = ["#attention", "#qkv", "#why", "#order", "#generate", "#timeline", "#arch", "#arch/enc-ff", "#translate", "#experiments",
               "#learn/self-attention"]


def test_nothing_overflows_a_390_px_phone(make_ui) -> None:
    """Every tour step (its figure drawn) and every view fit a 390 px window: no horizontal scroll of the page."""
    ui = make_ui(390, 844)
    page = ui.page
    steps = page.request.get(f"{ui.base}/api/tour").json()["steps"]
    wide = []
    for hash_ in [f"#tour/{s['n']}" for s in steps] + PHONE_VIEWS:
        if hash_ == "#translate" and not _available("translator"):
            continue
        page.goto("about:blank")
        ui.open(hash_)
        if hash_.startswith("#tour"):
            _wait_step(page, int(hash_.split("/")[1]))
        else:
            drawn = {"#why": "#why-root > *", "#experiments": ".experiment figure", "#learn/self-attention": ".learn-live"}
            page.wait_for_selector(drawn.get(hash_, "main .view:not([hidden]) svg *, main .view:not([hidden]) table tr"), state="attached")
        page.wait_for_selector("#status", state="hidden")
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > 390:
            wide.append(f"{hash_}: {width} px")
            ui.screenshot(f"phone-overflow-{hash_.strip('#').replace('/', '-')}")
    ui.screenshot("phone-last-390x844")
    assert wide == [], wide
    assert ui.errors == []


def test_every_explore_link_carries_its_steps_sentence(ui) -> None:
    """A step's "Explore freely" opens its view on the step's own model and sentence (text= in the link, also for a
    view with an argument such as #arch/enc-ff), before and after the widget has drawn."""
    from urllib.parse import parse_qs, urlparse

    page = ui.page
    steps = page.request.get(f"{ui.base}/api/tour").json()["steps"]
    checked = 0
    for step in steps:
        pre = step["preset"]
        if not (pre["text"] and step["view"]):
            continue
        page.goto("about:blank")
        ui.open(f"#tour/{step['n']}")
        query = parse_qs(urlparse(page.get_attribute(".tour-links a.explore", "href")).fragment.partition("?")[2])
        assert query.get("text") == [pre["text"]], (step["slug"], query)  # already while the widget loads
        _wait_step(page, step["n"])
        href = page.get_attribute(".tour-links a.explore", "href")
        view, _, params = href.lstrip("#").partition("?")
        assert view.split("/")[0] == step["view"].split("/")[0] and parse_qs(params)["text"] == [pre["text"]], (step["slug"], href)
        if step["view"] == "arch/enc-ff":  # the part's live values are the step's sentence's
            page.click(".tour-links a.explore")
            page.wait_for_selector("#part-live svg, #part-live table", state="attached")
            assert f"“{pre['text']}”" in page.inner_text("#part-panel h3")
        if step["view"] == "generate":
            page.click(".tour-links a.explore")
            page.wait_for_selector("#gen-next rect", state="attached")
            assert page.input_value("#gen-prompt") == pre["text"]
        checked += 1
    assert checked >= 8
    assert ui.errors == []


def test_a_click_on_the_old_figure_while_a_new_model_loads_is_kept_for_the_new_one(ui) -> None:
    """The model changes (the focus resets) and its attention is slow to come: choosing a layer and a token on the
    figure still shown must not break the page (it read the reset focus on the old payload) and must be what the
    new model's figure shows once it arrives."""
    ui.open("#attention?model=demo-encoder&text=hello%20there")
    page = ui.page
    page.wait_for_selector("#view-attention[data-sentence='hello there'] #att-lines [data-token]")
    held = []
    page.route("**/api/attention", lambda route: held.append(route))
    page.select_option("#model", "demo-decoder")
    for _ in range(600):  # until the page has asked for the new model's attention (held above)
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the page never asked for the new model's attention"
    page.select_option("#att-layer", "1")
    page.click('#att-lines [data-token="2"]')
    for route in held:
        route.continue_()
    page.unroute("**/api/attention")
    page.wait_for_selector('#weights-table[data-layer="1"][data-focus="2"]', state="attached")
    head = int(page.get_attribute("#weights-table", "data-head"))
    shown = page.locator("#weights-table td[data-value]").evaluate_all("cs => cs.map(c => Number(c.dataset.value))")
    loaded = cat.load("demo-decoder")
    x = torch.tensor([loaded.tokenizer.encode("hello there")])
    _, cache = run_with_cache(loaded.model, x, names="*hook_weights")
    torch.testing.assert_close(torch.tensor(shown, dtype=torch.float64), cache.attention(1)[0, head, 2].double(), rtol=0, atol=1e-6)
    assert ui.errors == []
