"""The walkthrough in a real Chromium: it loads cleanly, explains every part, and draws the model's own numbers."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from playwright.sync_api import expect

from attnlab import catalog as cat
from attnlab.inspect import run_with_cache

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_page_loads_without_console_errors(ui) -> None:
    ui.open("#arch")
    assert ui.page.title().startswith("attnlab")
    # The diagram of the current model's family: the default minilm is an encoder (8 boxes, no decoder).
    assert ui.page.get_attribute("button.variant[data-variant=encoder-only]", "aria-pressed") == "true"
    assert ui.page.locator("#diagram [data-box]").count() == 8
    ui.page.select_option("#model", "shakespeare-char")
    ui.page.wait_for_selector("button.variant[data-variant=decoder-only][aria-pressed=true]")
    ui.page.click("button.variant[data-variant=encoder-decoder]")  # the reader's choice stays
    ui.page.select_option("#model", "minilm")
    assert ui.page.get_attribute("button.variant[data-variant=encoder-decoder]", "aria-pressed") == "true"
    assert ui.page.locator("#diagram [data-box]").count() >= 10
    ui.screenshot("walkthrough-start")
    assert ui.errors == []


def test_every_diagram_box_opens_its_explanation_and_live_values(ui) -> None:
    from attnlab.web.diagram import CONTENT_OF_PART

    ui.open("#arch", model="demo-seq2seq")
    page = ui.page
    for variant in ("encoder-decoder", "encoder-only", "decoder-only"):
        page.click(f"button.variant[data-variant={variant}]")
        # Every box of the 2017 diagram; in the other two families the boxes that change (the rest are the same boxes).
        selector = "#diagram [data-box]" if variant == "encoder-decoder" else "#diagram [data-box][aria-label*=changed]"
        boxes = page.locator(selector)
        ids = [boxes.nth(i).get_attribute("data-box") for i in range(boxes.count())]
        assert ids
        for i, box_id in enumerate(ids):
            box = page.locator(f'#diagram [data-box="{box_id}"]')
            part = box.get_attribute("data-part")
            if i % 2:  # every other box by keyboard: focus it and press Enter
                box.focus()
                page.keyboard.press("Enter")
            else:
                box.click()
            page.wait_for_selector(f'#part-panel .explanation[data-slug="{CONTENT_OF_PART[part]}"]')
            page.wait_for_selector("#part-live .tensor, #part-live .note")
            assert page.locator("#part-panel .explanation h1").inner_text().strip()
            assert page.evaluate("location.hash") == f"#arch/{box_id}"
    ui.screenshot("walkthrough-diagram")
    page.reload()  # the URL remembers the selected part
    page.wait_for_selector("#part-panel .explanation")
    assert page.locator("#diagram [aria-pressed=true]").get_attribute("data-box") == ids[-1]
    assert ui.errors == []


@pytest.mark.parametrize("model", ["demo-encoder", "demo-decoder", "minilm"])
def test_clicked_token_shows_the_models_attention_weights(ui, model: str) -> None:
    info = next(i for i in cat.catalog() if i.name == model)
    if model == "minilm" and not info.available:  # a registry package (a failure in CI: tests/ci_skips.py)
        pytest.skip(f"model {model!r} is not installed ({info.install_hint})")
    sentence = "Jake gave the book to Sarah."
    ui.open("#attention", model=model)
    page = ui.page
    page.fill("#sentence", sentence)
    page.click("#run")
    page.wait_for_selector(f'#view-attention[data-sentence="{sentence}"]')
    layer, head, focus = 1, 2, 3
    page.select_option("#att-layer", str(layer))
    page.select_option("#att-head", str(head))
    page.click(f'#att-lines [data-token="{focus}"]')
    page.wait_for_selector(f'#weights-table[data-layer="{layer}"][data-head="{head}"][data-focus="{focus}"]', state="attached")
    shown = [float(v) for v in page.locator("#weights-table td[data-value]").evaluate_all("cells => cells.map(c => c.dataset.value)")]

    loaded = cat.load(model)
    ids = loaded.tokenizer.encode(sentence)
    _, cache = run_with_cache(loaded.model, torch.tensor([ids]), names="*hook_weights")
    expected = cache.attention(layer)[0, head, focus].double()
    assert len(shown) == len(ids)
    torch.testing.assert_close(torch.tensor(shown, dtype=torch.float64), expected, rtol=0, atol=1e-6)
    ui.screenshot(f"walkthrough-attention-{model}")
    assert ui.errors == []


@pytest.mark.parametrize("model", ["demo-decoder", "bible-bpe"])
def test_timeline_slider_changes_the_picture(ui, model: str) -> None:
    infos = {i.name: i for i in cat.catalog()}
    assert infos[model].available, f"model {model!r} is missing: the bundled files (or the demo models) are broken"
    ui.open("#timeline", model=model)
    page = ui.page
    index = page.evaluate(f"fetch('/api/timeline?model={model}').then(r => r.json())")
    steps = [s["step"] for s in index["snapshots"]]
    heatmap = f"#tl-heatmap[data-model='{model}'][data-step='{{}}'] rect[data-i]"
    page.wait_for_selector(heatmap.format(steps[0]), state="attached")
    # It opens on the head that learned most, and says so.
    assert (page.input_value("#tl-layer"), page.input_value("#tl-head")) == (str(index["learning_layer"]), str(index["learning_head"]))
    assert f"Layer {index['learning_layer']} head {index['learning_head']} is the head whose attention changed most" in page.inner_text("#timeline-note")
    before = page.locator("#tl-heatmap rect[data-i]").evaluate_all("rs => rs.map(r => r.getAttribute('fill'))")
    marker_before = page.get_attribute("#step-marker", "x1")
    page.locator("#timeline-slider").evaluate("e => { e.value = e.max; e.dispatchEvent(new Event('input')); }")
    page.wait_for_selector(heatmap.format(steps[-1]), state="attached")
    after = page.locator("#tl-heatmap rect[data-i]").evaluate_all("rs => rs.map(r => r.getAttribute('fill'))")
    assert len(before) == len(after) and before != after
    assert page.get_attribute("#step-marker", "x1") != marker_before
    assert f"step {steps[-1]}" in page.inner_text("#timeline-step")
    ui.screenshot(f"walkthrough-timeline-{model}")
    assert ui.errors == []


def test_export_gives_a_valid_svg_png_and_json(ui, tmp_path) -> None:
    ui.open("#attention", model="demo-encoder")
    page = ui.page
    page.wait_for_selector("#att-lines line", state="attached")
    with page.expect_download() as info:
        page.click('#view-attention .export button[data-kind="svg"]')
    svg_path = tmp_path / "view.svg"
    info.value.save_as(svg_path)
    root = ET.parse(svg_path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.findall(".//{http://www.w3.org/2000/svg}line")
    with page.expect_download() as info:
        page.click('#view-attention .export button[data-kind="png"]')
    png = tmp_path / "view.png"
    info.value.save_as(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with page.expect_download() as info:
        page.click('#view-attention .export button[data-kind="json"]')
    data = json.loads(Path(info.value.path()).read_text())
    assert data["model"] == "demo-encoder" and data["weights"]
    assert ui.errors == []


def test_qkv_generation_and_order_views_render(ui) -> None:
    ui.open("#qkv", model="demo-decoder")
    page = ui.page
    page.wait_for_selector("#qkv-table tbody tr")
    ui.screenshot("walkthrough-qkv")
    page.goto(f"{ui.base}/#generate")
    page.fill("#gen-prompt", "the cat")
    page.fill("#gen-n", "6")
    page.click("#gen-run")
    # a locator wait, not wait_for_function: the page's CSP forbids the eval that polling predicates use
    expect(page.locator("#gen-step")).to_have_attribute("max", "5", timeout=60_000)
    page.locator("#gen-step").evaluate("e => { e.value = 5; e.dispatchEvent(new Event('input')); }")
    assert "12 positions cached" in page.text_content("#gen-cache")  # 7 prompt tokens + 5 fed back by step 6
    assert page.locator("#gen-bars rect").count() > 10
    ui.screenshot("walkthrough-generate")
    page.goto(f"{ui.base}/#order")
    page.wait_for_selector("#order-body svg[data-positions=false]")
    page.wait_for_selector("#heads-row .cell svg rect")
    scales = page.locator("#order-body svg[data-positions]").evaluate_all("ss => ss.map(s => [s.dataset.lo, s.dataset.hi])")
    assert len(scales) == 2 and scales[0] == scales[1], scales  # the compared grids share one colour scale
    # each head's caption sits on its own line above its map, not inline beside the map's foot (which left a blank
    # band the caption's width to the left of every map)
    cells = page.locator("#heads-row .cell").evaluate_all("""cs => cs.map(c => { const r = (e) => e.getBoundingClientRect();
      const t = r(c.querySelector('span')), m = r(c.querySelector('svg'));
      return { above: t.bottom <= m.top + 0.5, left: Math.round(m.left - r(c).left) }; })""")
    assert cells and all(c["above"] and c["left"] <= 8 for c in cells), cells
    ui.screenshot("walkthrough-order")
    assert ui.errors == []
