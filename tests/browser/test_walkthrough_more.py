"""The experiments page, the loading notice for slow models, and translation as alignment, in Chromium."""

from __future__ import annotations

import time

import pytest
import torch

from attnlab import catalog as cat
from attnlab.inspect import run_with_cache
from attnlab.translate import translate_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_experiments_page_shows_every_plot_with_its_explanation(ui) -> None:
    from attnlab.experiments import EXPERIMENTS

    ui.open("#experiments")
    page = ui.page
    page.wait_for_selector(".experiment[data-experiment] figure img")
    sections = page.locator(".experiment[data-experiment]")
    assert [sections.nth(i).get_attribute("data-experiment") for i in range(sections.count())] == list(EXPERIMENTS)
    images = page.locator(".experiment figure img")
    assert images.count() >= len(EXPERIMENTS)
    for _ in range(600):  # polled from here: the page's CSP forbids the eval wait_for_function uses
        if images.evaluate_all("imgs => imgs.every(i => i.complete)"):
            break
        page.wait_for_timeout(50)
    widths = images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert all(w > 0 for w in widths), widths
    for i in range(sections.count()):
        section = sections.nth(i)
        assert "Claim" in section.inner_text()
        assert section.locator("figcaption h4").count() == section.locator("figure img").count()
        assert "attnlab experiment" in section.locator(".run-meta code").inner_text()
    ui.screenshot("walkthrough-experiments")
    assert ui.errors == []


def test_a_slow_model_shows_a_loading_notice_then_its_attention(ui) -> None:
    demo = next(i for i in cat.catalog() if i.name == "demo-encoder")

    def slow_loader() -> cat.LoadedModel:
        time.sleep(1.5)
        loaded = demo.loader()
        loaded.name = "test-slow-ui"
        return loaded

    cat.register(cat.ModelInfo(name="test-slow-ui", family="encoder", description="slow to load (browser test)",
                               n_params="~30k", source="test", licence="MIT", install_hint="nothing",
                               is_available=lambda: True, loader=slow_loader))
    ui.open("#attention")
    page = ui.page
    page.wait_for_selector("#att-lines line", state="attached")
    page.select_option("#model", "test-slow-ui")
    notice = page.wait_for_selector("#status[data-loading='test-slow-ui']", state="visible", timeout=1_000)
    assert "Loading model test-slow-ui (first time takes a few seconds)" in notice.inner_text()
    assert page.get_attribute("body", "aria-busy") == "true"
    assert page.evaluate("document.body.hasAttribute('data-loading-model')")  # the stale view is dimmed
    assert "loading" in page.locator("#model option[value='test-slow-ui']").inner_text()
    ui.screenshot("walkthrough-loading")
    page.wait_for_selector("#status", state="hidden", timeout=10_000)
    page.wait_for_selector("body[aria-busy=false]", state="attached")
    page.wait_for_selector("#att-lines line", state="attached")
    models = page.evaluate("fetch('/api/models').then(r => r.json())")["models"]
    assert next(m for m in models if m["name"] == "test-slow-ui")["loaded"] is True
    assert ui.errors == []


def test_translation_view_draws_the_models_cross_attention(ui) -> None:
    sentence = "And God said, Let there be light"
    ui.open("#translate")
    page = ui.page
    if "translator" not in {i.name for i in cat.catalog()}:
        assert "no “translator” model" in page.inner_text("#tr-missing")  # says what is missing
    page.select_option("#tr-model", "demo-translator")
    page.fill("#tr-text", sentence)  # translated as it is typed (after a short pause)
    page.wait_for_selector(f'#view-translate[data-sentence="{sentence}"]')
    layer, head, focus = 0, 1, 2
    page.select_option("#tr-layer", str(layer))
    page.select_option("#tr-head", str(head))
    page.click(f'#tr-lines [data-target-token="{focus}"]')
    page.wait_for_selector(f'#tr-table[data-layer="{layer}"][data-head="{head}"][data-focus="{focus}"]', state="attached")
    shown = [float(v) for v in page.locator("#tr-table td[data-value]").evaluate_all("cells => cells.map(c => c.dataset.value)")]

    loaded = cat.load("demo-translator")
    tok = loaded.tokenizer
    result = translate_text(loaded.model, tok, sentence, beam_size=1, max_new_tokens=64)
    _, cache = run_with_cache(loaded.model, torch.tensor([result.source_ids]),
                              torch.tensor([[tok.token_id("<s>"), *result.target_ids]]))
    expected = cache.attention(layer, stack="decoder", cross=True)[0, head, focus].double()
    torch.testing.assert_close(torch.tensor(shown, dtype=torch.float64), expected, rtol=0, atol=1e-6)
    assert page.locator("#tr-lines line[data-target]").count() > 0
    assert page.locator("#tr-heatmap rect[data-i]").count() == (len(result.target_ids) + 1) * len(result.source_ids)
    ui.screenshot("walkthrough-translate")
    assert ui.errors == []
