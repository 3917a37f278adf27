"""The architecture diagram's hover card: the box's formula and the model's own numbers for the focus token.

Every number the card prints (4 decimals) is checked against ``run_with_cache`` on the same model,
sentence and token; the card opens on hover and keyboard focus, closes on mouseleave, blur and Escape,
asks the server once per part, and stays beside its box inside the window.
"""

from __future__ import annotations

import pytest
import torch
from playwright.sync_api import expect

from attnlab import catalog as cat
from attnlab.inspect import run_with_cache

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SENTENCE = "John gave the book to Sarah because she liked it."
PRINTED = 1e-4  # the card prints 4 decimals


def _cache(model: str) -> tuple[list[int], list[str], dict[str, torch.Tensor]]:
    loaded = cat.load(model)
    ids = loaded.tokenizer.encode(SENTENCE)
    _, cache = run_with_cache(loaded.model, torch.tensor([ids]))
    return ids, [str(t) for t in loaded.tokenizer.tokens(ids)], {k: cache[k][0].double() for k in cache}


def _hover(page, box_id: str):
    page.hover(f'#diagram [data-box="{box_id}"]')
    card = page.locator(f'#diagram-card[data-box="{box_id}"][data-state=ready]')
    expect(card).to_be_visible()
    return card


def _numbers(card, name: str) -> torch.Tensor:
    return torch.tensor([float(t) for t in card.locator(f'.num[data-name="{name}"]').all_inner_texts()], dtype=torch.float64)


def _close(printed: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(printed, expected.double(), rtol=0, atol=PRINTED)


def _beside(page, card, box_id: str, viewport: tuple[int, int]) -> None:
    """The card lies inside the window and does not cover the box it describes."""
    c = card.bounding_box()
    b = page.locator(f'#diagram [data-box="{box_id}"]').bounding_box()
    assert c["x"] >= 0 and c["y"] >= 0 and c["x"] + c["width"] <= viewport[0] and c["y"] + c["height"] <= viewport[1], (c, viewport)
    apart = (c["x"] >= b["x"] + b["width"] or c["x"] + c["width"] <= b["x"] or c["y"] >= b["y"] + b["height"]
             or c["y"] + c["height"] <= b["y"])
    assert apart, (c, b)


def test_the_card_shows_the_formula_and_the_models_numbers(make_ui) -> None:
    ui = make_ui(1440, 900)
    page = ui.page
    part_requests: list[str] = []
    page.on("request", lambda r: part_requests.append(r.post_data or "") if r.url.endswith("/api/part") else None)
    ui.open("#arch")  # the default model (minilm), the default sentence, focus on "she"
    ids, tokens, cache = _cache("minilm")
    focus = tokens.index("she")
    expect(page.locator("#serve-device")).to_have_text("the server's cpu")  # where the numbers are computed

    card = _hover(page, "enc-embed")
    # MiniLM's own formula, not the 2017 paper's: its embeddings are not scaled by sqrt(d_model)
    formula = card.locator(".formula-line")
    expect(formula).to_have_text("x = E[token] (a learned row per token, not scaled); 30,522 rows of 384")
    assert formula.get_attribute("data-source") == "model" and "√d_model" in formula.get_attribute("title")
    expect(card).to_contain_text(f"token {focus} “she”")
    expect(card.locator(".click-hint")).to_have_text("Click for the explanation")
    assert card.locator('.num[data-name="id"]').inner_text() == str(ids[focus])
    _close(_numbers(card, "first"), cache["encoder.embed.hook_tok_embed"][focus, :4])
    _close(_numbers(card, "norm"), torch.stack([cache[f"encoder.embed.hook_{p}"][focus].norm() for p in ("tok_embed", "embed")]))
    _beside(page, card, "enc-embed", (1440, 900))
    assert page.locator('#diagram [data-box="enc-embed"]').get_attribute("aria-describedby") == "diagram-card"
    assert page.locator("#diagram title").count() == 0  # no native tooltip on top of the card

    page.mouse.move(1300, 880)  # off the box: the card goes
    expect(page.locator("#diagram-card")).to_be_hidden()

    card = _hover(page, "enc-attn")
    expect(card).to_contain_text("softmax(Q Kᵀ / √d_k) V, d_k = 32, 12 heads")
    expect(card).to_contain_text("layer 0, head 0")
    weights = cache["encoder.blocks.0.attn.hook_weights"][0, focus]  # layer 0, head 0: the page's current choice
    best = weights.topk(3)
    assert [int(k) for k in card.locator("ol.top li").evaluate_all("ls => ls.map(l => l.dataset.key)")] == best.indices.tolist()
    expect(card.locator("ol.top li").first).to_contain_text(f"“{tokens[int(best.indices[0])]}”")
    _close(_numbers(card, "weight"), best.values)
    _beside(page, card, "enc-attn", (1440, 900))
    c, label = card.bounding_box(), page.locator("#diagram text", has_text="Encoder block").bounding_box()
    assert c["x"] >= label["x"] + label["width"] or c["y"] >= label["y"] + label["height"], (c, label)  # label readable
    ui.screenshot("diagram-hover-1440x900")
    page.keyboard.press("Escape")  # the pointer is still on the box
    expect(page.locator("#diagram-card")).to_be_hidden()

    card = _hover(page, "enc-norm1")
    expect(card).to_contain_text("LayerNorm(x + Sublayer(x))")
    rows = [cache[f"encoder.blocks.0.hook_{p}"][focus] for p in ("resid_pre", "resid_mid", "resid_post")]
    _close(_numbers(card, "norm"), torch.stack([r.norm() for r in rows]))
    _close(_numbers(card, "mean"), torch.stack([r.mean() for r in rows]))
    _close(_numbers(card, "std"), torch.stack([r.std(correction=0) for r in rows]))

    # Back on a box seen before: the answer is kept, nothing is asked again.
    asked = len(part_requests)
    _hover(page, "enc-attn")
    _hover(page, "enc-norm2")  # the same part as enc-norm1
    assert len(part_requests) == asked
    assert all('"tensors":false' in body for body in part_requests)  # the summary, without the heatmaps

    card = _hover(page, "softmax")  # MiniLM ends with its vectors: the card says so
    expect(card.locator(".note")).to_contain_text("no output layer over a vocabulary")
    assert ui.errors == []


def test_keyboard_focus_opens_the_card_and_blur_closes_it(make_ui) -> None:
    ui = make_ui(1440, 900)
    page = ui.page
    ui.open("#arch")
    _, tokens, cache = _cache("minilm")
    focus = tokens.index("she")
    page.locator('#diagram [data-box="enc-embed"]').focus()
    page.keyboard.press("Tab")  # to the next box, "+ Positional encoding"
    card = page.locator('#diagram-card[data-box="enc-pos"][data-state=ready]')
    expect(card).to_be_visible()
    expect(card).to_contain_text(f"Position {focus} adds the vector")
    _close(_numbers(card, "first"), cache["encoder.embed.hook_pos_embed"][focus, :4])
    _close(_numbers(card, "norm"), cache["encoder.embed.hook_pos_embed"][focus].norm()[None])
    page.focus("#sentence")  # blur
    expect(page.locator("#diagram-card")).to_be_hidden()
    page.locator('#diagram [data-box="enc-pos"]').focus()
    page.keyboard.press("Tab")
    expect(page.locator('#diagram-card[data-box="enc-attn"]')).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#diagram-card")).to_be_hidden()
    assert ui.errors == []


def test_a_decoders_output_boxes_show_its_next_token_predictions(make_ui) -> None:
    ui = make_ui(1440, 900)
    page = ui.page
    ui.open("#arch", model="shakespeare-char")
    _, tokens, cache = _cache("shakespeare-char")
    focus = len(tokens) - 1  # no token "she" in a character model: the last one
    logits = cache["hook_logits"][focus]
    for box, values, name in (("softmax", torch.softmax(logits, dim=-1), "probability"), ("linear", logits, "logit")):
        card = _hover(page, box)
        expect(card).to_contain_text("shakespeare-char")
        expect(card).to_contain_text(f"Next token after “{tokens[focus]}”")
        best = values.topk(3)
        _close(_numbers(card, name), best.values)
        listed = card.locator("ol.top li").all_inner_texts()
        loaded = cat.load("shakespeare-char")
        for text, i in zip(listed, best.indices.tolist(), strict=True):
            label = loaded.tokenizer.tokens([i])[0].replace("\n", "⏎").replace(" ", "␣")
            assert text.startswith(f"“{label}”"), (text, label)
    assert ui.errors == []


def test_near_the_windows_edges_the_card_flips_and_stays_inside(make_ui) -> None:
    viewport = (720, 560)
    ui = make_ui(*viewport)
    page = ui.page
    ui.open("#arch")
    page.click("button.variant[data-variant=encoder-decoder]")  # the widest diagram (minilm's own is encoder-only)
    for box in ("softmax", "dec-embed", "enc-embed"):  # right column (flips left), bottom row (moves up)
        page.locator(f'#diagram [data-box="{box}"]').scroll_into_view_if_needed()
        card = _hover(page, box)
        _beside(page, card, box, viewport)
        if box == "softmax":  # no room on its right in a 720 px window
            c, b = card.bounding_box(), page.locator('#diagram [data-box="softmax"]').bounding_box()
            assert c["x"] + c["width"] <= b["x"], (c, b)
    assert ui.errors == []


def test_the_tours_diagram_shows_the_formula_card(make_ui) -> None:
    from attnlab.web.tour import tour

    step = next(s for s in tour().steps if s.preset.widget == "arch")
    ui = make_ui(1440, 900)
    page = ui.page
    ui.open(f"#tour/{step.n}")
    page.wait_for_selector(".tour-widget[data-state=ready]")
    page.wait_for_selector("#model-strip[data-state=ready]")  # the translator's strip is taller: wait for it to be drawn
    page.hover('#tour-diagram [data-box="dec-cross"]')
    card = page.locator('#diagram-card[data-box="dec-cross"][data-state=formula]')  # no model in this step: the formula only
    expect(card).to_be_visible()
    expect(card).to_contain_text("Q from the decoder, K and V from the encoder")
    assert card.locator(".formula-line").get_attribute("data-source") == "paper"
    expect(card.locator(".click-hint")).to_have_text("Click for the explanation")
    page.mouse.move(5, 890)
    expect(page.locator("#diagram-card")).to_be_hidden()
    assert ui.errors == []


def test_card_and_panel_follow_the_layer_chosen_in_the_attention_view(make_ui) -> None:
    ui = make_ui(1440, 900)
    page = ui.page
    ui.open("#attention")  # minilm
    page.wait_for_selector("#att-layer option[value=\"2\"]", state="attached")
    page.select_option("#att-layer", "2")
    focus = int(page.input_value("#finder-query"))  # the attention view's focus token (the tour's preset may set it)
    page.click('nav a[data-view="arch"]')
    _, _, cache = _cache("minilm")
    card = _hover(page, "enc-attn")
    expect(card).to_contain_text("layer 2, head")
    head = int(page.input_value("#att-head")) if page.input_value("#att-head") != "mean" else 0
    best = cache["encoder.blocks.2.attn.hook_weights"][head, focus].topk(3)
    _close(_numbers(card, "weight"), best.values)
    page.click('#diagram [data-box="enc-norm1"]')
    expect(page.locator("#part-panel > h3")).to_contain_text("layer 2")
    expect(page.locator("#part-live .tensor").first).to_be_visible()
    assert ui.errors == []


def test_the_orange_outline_is_explained_on_the_figure_when_a_family_has_one(make_ui) -> None:
    """A box the family changed from 2017 is outlined in orange with a dot; the figure says what that means (it did
    not: nothing on the Architecture view or the tour's diagram named the colour), clear of every box and frame."""
    ui = make_ui(1440, 900)
    ui.open("#arch")
    page = ui.page
    seen = set()
    for variant in ("encoder-decoder", "encoder-only", "decoder-only"):
        page.click(f"button.variant[data-variant={variant}]")
        page.wait_for_selector(f"button.variant[data-variant={variant}][aria-pressed=true]")
        got = page.evaluate("""() => { const d = document.getElementById('diagram');
          const r = (e) => e.getBoundingClientRect();
          const legend = d.querySelector('.diagram-legend');
          const boxes = [...d.querySelectorAll('.box, rect[stroke-dasharray]')].map(r);
          const hit = legend ? boxes.filter((b) => { const l = r(legend);
            return l.left < b.right && l.right > b.left && l.top < b.bottom && l.bottom > b.top; }).length : 0;
          return { changed: d.querySelectorAll('.box circle').length, legend: legend ? legend.textContent : null, hit }; }""")
        assert (got["legend"] is not None) == (got["changed"] > 0), (variant, got)
        assert got["hit"] == 0, (variant, got)
        if got["legend"]:
            assert "orange" in got["legend"] and "changed" in got["legend"]
            seen.add(variant)
    assert seen == {"encoder-only", "decoder-only"}
    assert ui.errors == []
