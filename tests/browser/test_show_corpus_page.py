"""attnlab.show.head_contexts's saved page in a real Chromium, offline: every sentence drawn with its query
and key marked, and the role table printing the view's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnlab import show
from attnlab.catalog import load

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
CORPUS = ["In the beginning God created the heavens and the earth.", "God saw the light, and saw that it was good.",
          "The man took the stone and set it up.", "It was evening and it was morning, the first day."]


def test_head_contexts_page_marks_query_and_key_and_prints_the_roles(chromium, tmp_path: Path) -> None:
    view = show.head_contexts(load("bible-bpe"), 2, 0, corpus=CORPUS, k=3, cache_dir=tmp_path / "cache", progress=False)
    context = chromium.new_context(offline=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(view.save(tmp_path / "contexts.html").as_uri())
    items = page.locator("ol.contexts li")
    assert items.count() == len(view.data["contexts"]) == 3
    for i, c in enumerate(view.data["contexts"]):
        li = items.nth(i)
        assert li.locator("span.query").text_content() == c["tokens"][c["query"]]
        assert li.locator("span.key").text_content() == c["tokens"][c["key"]]
        assert float(li.get_attribute("data-specificity")) == c["specificity"]
    rows = page.locator("table.roles tbody tr")
    assert [r.get_attribute("data-role") for r in rows.all()] == [r["role"] for r in view.data["roles"]]
    assert [r.get_attribute("data-given") for r in rows.all()] == [str(r["given"]).lower() for r in view.data["roles"]]
    assert page.locator("p.summary").inner_text() == view.data["summary"]
    assert errors == []
    context.close()
