"""The Why view in Chromium: it draws POST /api/why's numbers, follows clicks, and logs no error."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _asked(response, key: str, value: int) -> bool:
    """A /api/why answer to a request with ``key == value`` (the page's first load asks for others)."""
    if not response.url.endswith("/api/why"):
        return False
    return json.loads(response.request.post_data or "{}").get(key) == value


def _answers(page) -> list:
    """Every 200 answer of /api/why from now on, as the page got them."""
    got: list = []
    page.on("response", lambda r: got.append(r) if r.url.endswith("/api/why") and r.status == 200 else None)
    return got


def test_why_view_draws_the_api_numbers_and_follows_clicks(ui) -> None:
    page = ui.page
    got = _answers(page)
    ui.open("#why", model="demo-decoder")
    page.wait_for_selector("#why-effects rect[data-i]")
    with page.expect_response(lambda r: _asked(r, "layer", 1)):
        page.locator("#why-effects rect[data-i='1'][data-j='1']").click()
    page.locator("#why-root h4", has_text="remove layer 1 head 1").wait_for()
    page.wait_for_selector("#why-root[data-stage=exact] #why-effects[data-exact=true]")  # the second stage drawn
    body = next(b for b in (r.json() for r in reversed(got)) if b["exact"] and (b["layer"], b["head"]) == (1, 1))
    page.locator("#why-root h4", has_text="remove layer 1 head 1").wait_for()
    assert body["layer"] == 1 and body["head"] == 1
    drawn = [float(b.get_attribute("data-score")) for b in page.locator("#why-root button[data-token]").all()]
    assert drawn == body["saliency"]
    for key, words in body["sentences"].items():  # the server's sentences, each beside its result
        assert page.locator(f"#why-root [data-sentence={key}]").inner_text() == words
    assert page.locator("#why-ledger li").all_inner_texts() == [("✓ " if c["holds"] else "✗ ") + c["text"] for c in body["ledger"]]
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
    ui.open("#tour/10")
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
    page.locator("#why-root h4", has_text="remove layer 1 head 1").wait_for()
    assert "layer=1" in page.evaluate("location.hash") and "head=1" in page.evaluate("location.hash")
    page.evaluate("location.hash = '#why?model=demo-decoder&layer=57&head=0'")
    page.locator("#error").wait_for(state="visible")
    page.wait_for_function("!document.querySelector('#why-root').firstChild")
    ui.errors.clear()  # the 422 answer is logged by the browser; it is what this test asked for


def _ask(ui, model: str, text: str = "In the beginning") -> dict:
    page = ui.page
    with page.expect_response(lambda r: r.url.endswith("/api/why") and json.loads(r.request.post_data or "{}").get("model") == model
                              and r.status == 200, timeout=120_000) as answer:
        page.select_option("#model", model)
    body = answer.value.json()
    page.locator(f"#why-root[data-model={model}]").wait_for()
    return body


@pytest.mark.parametrize("model", ["demo-decoder", "demo-encoder", "demo-translator"])
def test_why_view_on_each_family(ui, model: str) -> None:
    """Every family draws: the encoder-decoder with its translation as the focus row, the encoder saying
    in one sentence why it has no prediction and no logit lens."""
    page = ui.page
    page.set_viewport_size({"width": 1440, "height": 900})
    ui.open("#why")
    body = _ask(ui, model)
    assert page.locator("#why-root [data-sentence=attention]").inner_text() == body["sentences"]["attention"]
    assert page.locator("#why-effects rect[data-i]").count() == sum(map(len, body["head_effects"]))
    if model == "demo-translator":
        assert page.locator("#why-root button[data-target]").all_inner_texts() == body["target_tokens"]
        with page.expect_response(lambda r: _asked(r, "focus", 1)) as answer:
            page.locator("#why-root button[data-target='1']").click()
        assert answer.value.json()["score"]["query"] == 1
        page.wait_for_selector("#why-root button[data-target='1'][aria-pressed=true]")
    if model == "demo-encoder":
        note = page.locator("#why-root [data-unavailable=logit_lens]")
        assert "no vocabulary head" in note.inner_text() and page.locator("#why-lens").count() == 0
    else:
        assert page.locator("#why-lens td").count() == sum(map(len, body["logit_lens"]["top"]))
    assert ui.errors == []
    ui.screenshot(f"why-{model}")


def test_switching_model_leaves_nothing_of_the_old_results(ui) -> None:
    """After a result, another model: while it computes and once it has answered, nothing of the old model's
    answer is on the page (its sentences, its heads, its tokens)."""
    page = ui.page
    ui.open("#why")
    old = _ask(ui, "demo-decoder")
    held: list = []
    page.route("**/api/why", lambda route: held.append(route))  # hold the next answer until the page has been looked at
    page.select_option("#model", "demo-translator")
    page.wait_for_function("() => true")
    while not held:
        page.wait_for_timeout(100)
    assert page.locator("#why-root [data-sentence]").count() == 0  # cleared at once, before the answer
    assert page.locator("#why-effects").count() == 0
    for route in held:
        route.continue_()
    page.unroute("**/api/why")
    page.locator("#why-root[data-model=demo-translator]").wait_for(timeout=120_000)
    texts = page.locator("#why-root [data-sentence]").all_inner_texts()
    assert old["sentences"]["attention"] not in texts and page.locator("#why-root button[data-target]").count() > 0
    assert page.locator("#why-root").count() == 1 and page.locator("#why-root[data-model=demo-decoder]").count() == 0
    assert ui.errors == []


def test_chip_and_lens_text_contrast_meets_wcag_aa(ui) -> None:
    """The text colour is chosen by the background's luminance: every colour the view paints (the diverging
    saliency scale and the sequential lens scale, sampled finely, saturated ends included) reads at 4.5:1 or more."""
    ui.open("#why")
    worst = ui.page.evaluate("""async () => {
      const W = await import("/static/why.js"), V = await import("/static/views.js");
      let worst = Infinity;
      for (let i = -400; i <= 400; i++) {
        for (const bg of [V.colour(i / 400, { min: -1, max: 1, diverging: true }), V.colour((i + 400) / 800)]) {
          worst = Math.min(worst, W.contrast(bg, W.textOn(bg)));
        }
      }
      return worst;
    }""")
    assert worst >= 4.5
    # the same function drawn on the page: a saturated chip has the text colour the function gives
    assert ui.page.evaluate("""async () => (await import("/static/why.js")).contrast("rgb(255,0,0)", "#1d2330")""") < 4.5


def test_the_exact_stage_replaces_the_estimate_only_for_the_selection_it_was_asked_for(ui) -> None:
    """The first stage draws the estimate at once and says so; the exact stage, asked next, is drawn only while
    the page still shows its (model, sentence, head, focus): an exact answer for a head the learner has
    clicked away from is dropped, the new head's own exact answer is drawn, with the agreement in the ledger."""
    page = ui.page
    held: list = []

    def hold_exact(route) -> None:
        if json.loads(route.request.post_data or "{}").get("stage") == "exact":
            held.append(route)
        else:
            route.continue_()

    page.route("**/api/why", hold_exact)
    ui.open("#why?model=demo-decoder&text=" + quote("In the end, the beginning"))  # a sentence no other test asked
    page.wait_for_selector("#why-root[data-stage=first] #why-effects[data-exact=false]")
    assert "Estimate" in page.locator("#why-stage").inner_text()
    assert page.locator("#why-root button[data-score]").count() == 0  # no saliency drawn before it is computed
    while not held:
        page.wait_for_timeout(50)
    old = json.loads(held[0].request.post_data)
    layer, head = (1, 1) if (old["layer"], old["head"]) != (1, 1) else (0, 1)
    page.locator(f"#why-effects rect[data-i='{layer}'][data-j='{head}']").click()
    page.locator("#why-root h4", has_text=f"remove layer {layer} head {head}").wait_for()
    def asked_for(route) -> bool:
        return (json.loads(route.request.post_data)["layer"], json.loads(route.request.post_data)["head"]) == (layer, head)

    while not any(asked_for(route) for route in held):
        page.wait_for_timeout(50)
    olds = [route for route in held if not asked_for(route)]
    assert olds  # the first view's (the page may have loaded twice while it opened)
    for route in olds:  # the old selection's exact answers arrive late
        with page.expect_response(lambda r, sent=route.request.post_data: r.request.post_data == sent):
            route.continue_()
    page.wait_for_timeout(300)
    assert page.locator("#why-root").get_attribute("data-stage") == "first"  # dropped: it is not what is shown
    assert page.locator("#why-root h4", has_text=f"remove layer {layer} head {head}").count() == 1
    next(route for route in held if asked_for(route)).continue_()
    page.wait_for_selector("#why-root[data-stage=exact] #why-effects[data-exact=true]")
    key = json.loads(page.locator("#why-root").get_attribute("data-key"))
    assert key[0] == "demo-decoder" and key[2:4] == [layer, head]
    assert "Exact" in page.locator("#why-stage").inner_text()
    assert any(t.startswith("✓ attribution patching vs exact removal") or t.startswith("✗ attribution patching vs exact removal")
               for t in page.locator("#why-ledger li").all_inner_texts())
    page.unroute("**/api/why")
    assert ui.errors == []
