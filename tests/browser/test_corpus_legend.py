"""The head grid's legend shows the corpus roles (thresholds and the heads given each) once a corpus pass
of the model exists (POST /api/heads/contexts), and nothing of them before."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_role_legend_lists_the_corpus_roles_from_the_payload(ui, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the server runs in this process: its cache goes here
    ui.open("#attention", model="bible-bpe")
    expect(ui.page.locator("#att-grid .cell").first).to_be_visible()
    body = {"model": "bible-bpe", "layer": 0, "head": 0, "k": 3, "sentences": 12}
    r = ui.page.request.post(f"{ui.base}/api/heads/contexts", data=body)
    assert r.ok, r.text()
    grid = ui.page.request.post(f"{ui.base}/api/attention", data={"model": "bible-bpe", "text": "In the beginning"}).json()
    corpus = grid["corpus_roles"]
    ui.open("#attention", model="bible-bpe")
    legend = ui.page.locator("#role-legend .corpus-roles")
    expect(legend).to_have_attribute("data-sentences", str(corpus["sentences"]))
    for role, threshold in corpus["thresholds"].items():
        want = [f"L{layer}H{h}" for layer, row in enumerate(corpus["roles"]) for h, given in enumerate(row) if role in given]
        item = legend.locator(f".corpus-role[data-role='{role}']")
        assert item.get_attribute("data-heads") == " ".join(want)
        assert f"{role} ≥ {threshold}" in item.inner_text()
    ui.screenshot("corpus-legend")
    assert ui.errors == []


def test_what_does_this_head_do_lists_the_heads_sentences(ui, monkeypatch, tmp_path) -> None:
    from attnlab.interpret import corpus as hc
    from attnlab.train.corpora import bible_verses

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    short = bible_verses()[:10]
    monkeypatch.setattr(hc, "default_corpus", lambda n=hc.DEFAULT_SENTENCES: short[:n])  # a short pass
    ui.open("#attention", model="bible-bpe")
    ui.page.locator("#att-grid .cell[data-layer='1'][data-head='2']").click()
    ui.page.click("#contexts-run")
    items = ui.page.locator("#contexts-result ol.contexts li")
    expect(ui.page.locator("#contexts-result ol.contexts")).to_have_attribute("data-head", "2")
    want = ui.page.request.post(f"{ui.base}/api/heads/contexts", data={"model": "bible-bpe", "layer": 1, "head": 2}).json()
    assert want["from_cache"] and want["sentences"] == 10
    assert items.count() == len(want["contexts"])
    for i, c in enumerate(want["contexts"]):
        assert items.nth(i).locator("span.query").text_content() == c["tokens"][c["query"]]
        assert items.nth(i).locator("span.key").text_content() == c["tokens"][c["key"]]
    expect(ui.page.locator("#role-legend .corpus-roles")).to_have_attribute("data-sentences", "10")
    ui.screenshot("head-contexts")
    assert ui.errors == []
