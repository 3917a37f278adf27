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
