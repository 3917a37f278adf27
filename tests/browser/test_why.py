"""The Why view in Chromium: it draws POST /api/why's numbers, follows clicks, and logs no error."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _asked(response, key: str, value: int) -> bool:
    """A /api/why answer to a request with ``key == value`` (the page's first load asks for others)."""
    if not response.url.endswith("/api/why"):
        return False
    return json.loads(response.request.post_data or "{}").get(key) == value


def test_why_view_draws_the_api_numbers_and_follows_clicks(ui) -> None:
    page = ui.page
    ui.open("#why", model="demo-decoder")
    page.wait_for_selector("#why-effects rect[data-i]")
    with page.expect_response(lambda r: _asked(r, "layer", 1)) as answer:
        page.locator("#why-effects rect[data-i='1'][data-j='1']").click()
    body = answer.value.json()
    page.locator("#why-root .summary", has_text="layer 1 head 1").wait_for()
    assert body["layer"] == 1 and body["head"] == 1
    drawn = [float(b.get_attribute("data-score")) for b in page.locator("#why-root button[data-token]").all()]
    assert drawn == body["saliency"]
    if body["score"]["available"]:
        bars = [float(r.get_attribute("data-value")) for r in page.locator("#why-score rect[data-value]").all()]
        assert bars == [v for _, _, v in body["score"]["top_pairs"]]
    with page.expect_response(lambda r: _asked(r, "focus", 2)) as answer:
        page.locator("#why-root button[data-token='2']").click()
    assert answer.value.json()["score"]["query"] == 2
    page.wait_for_selector("#why-root button[data-token='2'][aria-pressed=true]")
    assert ui.errors == []
    ui.screenshot("why-view")


def test_the_tour_step_opens_the_why_view_on_its_preset(ui) -> None:
    page = ui.page
    ui.open("#tour/9")
    page.locator("h1", has_text="remove a head").wait_for()
    explore = page.locator("a.explore")
    page.wait_for_selector(".tour-widget[data-state=ready]", timeout=120_000)  # its URL state is in the link now
    with page.expect_response(lambda r: r.url.endswith("/api/why")) as answer:
        explore.click()
    body = answer.value.json()
    assert body["model"] == "shakespeare-char"
    page.wait_for_selector("#why-effects rect[data-i]")
    assert page.evaluate("location.hash").startswith("#why")
    assert ui.errors == []


def test_the_registered_why_view_keeps_its_tab_url_state_and_clears_on_error(ui) -> None:
    """The Why view is registered (static/registry.js), not wired in index.js: its tab stays between Q · K · V
    and Order, its selection goes into the URL, and a failed request clears what it drew."""
    page = ui.page
    ui.open("#why", model="demo-decoder")
    page.wait_for_selector("#why-effects rect[data-i]")
    tabs = [a.get_attribute("data-view") for a in page.locator("#tabs a").all()]
    assert tabs == ["tour", "arch", "attention", "qkv", "why", "order", "generate", "timeline", "translate", "experiments", "learn"]
    assert page.locator("#tabs a[data-view=why]").get_attribute("aria-current") == "page"
    with page.expect_response(lambda r: _asked(r, "layer", 1)):
        page.locator("#why-effects rect[data-i='1'][data-j='1']").click()
    page.locator("#why-root .summary", has_text="layer 1 head 1").wait_for()
    assert "layer=1" in page.evaluate("location.hash") and "head=1" in page.evaluate("location.hash")
    page.evaluate("location.hash = '#why?model=demo-decoder&layer=57&head=0'")
    page.locator("#error").wait_for(state="visible")
    page.wait_for_function("!document.querySelector('#why-root').firstChild")
    ui.errors.clear()  # the 422 answer is logged by the browser; it is what this test asked for
