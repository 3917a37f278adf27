"""attnlab.show's saved pages in a real Chromium, offline: they draw with no console error, with no
request leaving the page, and the numbers they print are the view's data."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnlab import show
from attnlab.catalog import load

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
TEXT = "ROMEO: But soft"


@pytest.fixture(scope="module")
def views() -> dict[str, show.View]:
    loaded = load("shakespeare-char")
    return {
        "attention": show.attention(loaded, TEXT, layer=1, head=0),
        "logit_lens": show.logit_lens(loaded, TEXT, target="e"),
        "head_effects": show.head_effects(loaded, TEXT),
        "saliency": show.saliency(loaded, TEXT),
        "head_finder": show.head_finder(loaded, TEXT),
        "head_finder_ranked": show.head_finder(loaded, TEXT, query=9, key=3),
        "why": show.why(loaded, TEXT, layer=1, head=2, focus=9),
    }


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1200, "height": 900}, offline=True)
    p = context.new_page()
    p.errors = []  # type: ignore[attr-defined]
    p.requests = []  # type: ignore[attr-defined]
    p.on("console", lambda m: p.errors.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    p.on("request", lambda r: p.requests.append(r.url))
    yield p
    context.close()


@pytest.mark.parametrize("kind", ["attention", "logit_lens", "head_effects", "saliency", "head_finder", "head_finder_ranked",
                                  "why"])
def test_saved_view_renders_offline(views, page, tmp_path: Path, kind: str) -> None:
    path = views[kind].save(tmp_path / f"{kind}.html")
    page.goto(path.as_uri())
    root = page.locator(".view-root")
    assert root.locator("svg, table, span").count() > 0, "nothing was drawn"
    assert page.errors == []
    assert [u for u in page.requests if not u.startswith("file://")] == []


def test_attention_view_follows_clicks_and_pickers(views, page, tmp_path: Path) -> None:
    view = views["attention"]
    page.goto(view.save(tmp_path / "a.html").as_uri())
    lines = page.locator("line[data-key]")
    # the focus row's lines carry the recorded weights of layer 1, head 0, last token
    row = view.data["weights"][1][0][-1]
    drawn = {int(x.get_attribute("data-key")): float(x.get_attribute("data-weight")) for x in lines.all()}
    assert drawn == {j: w for j, w in enumerate(row) if w > 0}
    page.locator("g[data-token='2']").click()
    drawn = {int(x.get_attribute("data-key")) for x in page.locator("line[data-key]").all()}
    assert drawn == {j for j, w in enumerate(view.data["weights"][1][0][2]) if w > 0}
    page.locator("select").nth(0).select_option("3")
    page.locator("select").nth(1).select_option("2")
    drawn = {int(x.get_attribute("data-key")): float(x.get_attribute("data-weight")) for x in page.locator("line[data-key]").all()}
    assert drawn == {j: w for j, w in enumerate(view.data["weights"][3][2][2]) if w > 0}
    assert page.errors == []


def test_numbers_printed_are_the_data(views, page, tmp_path: Path) -> None:
    view = views["saliency"]
    page.goto(view.save(tmp_path / "s.html").as_uri())
    printed = [float(s.get_attribute("data-score")) for s in page.locator(".tokens span").all()]
    assert printed == view.data["scores"]
    view = views["head_effects"]
    page.goto(view.save(tmp_path / "h.html").as_uri())
    cells = [float(td.get_attribute("data-value")) for td in page.locator("table.numbers td").all()]
    assert cells == [v for row in view.data["effects"] for v in row]
    assert page.errors == []


def test_a_view_shown_twice_draws_both_outputs(views, page, tmp_path: Path) -> None:
    """A notebook that displays one view twice holds two outputs in one document: each draws its own."""
    view = views["attention"]
    path = tmp_path / "twice.html"
    path.write_text(f"<!doctype html><html><body>{view._repr_html_()}{view._repr_html_()}</body></html>")
    page.goto(path.as_uri())
    roots = page.locator(".view-root")
    assert roots.count() == 2
    counts = [roots.nth(i).locator("svg, table, span").count() for i in range(2)]
    assert counts[0] > 0 and counts[0] == counts[1]
    assert page.errors == []


def test_why_and_finder_pages_print_their_payloads(views, page, tmp_path: Path) -> None:
    """show.why draws POST /api/why's payload: its sentences, saliency and ledger as the data says; the
    head finder with key= lists the route's ranking in its order and outlines its best three in the grid."""
    view = views["why"]
    page.goto(view.save(tmp_path / "why.html").as_uri())
    said = {p.get_attribute("data-result"): p.inner_text() for p in page.locator(".sentences p[data-result]").all()}
    assert said == view.data["sentences"]
    assert [float(s.get_attribute("data-score")) for s in page.locator(".tokens span").all()] == view.data["saliency"]
    ledger = [r.locator("th").inner_text() for r in page.locator("table.numbers").last.locator("tbody tr").all()]
    assert ledger == [c["text"] for c in view.data["ledger"]]
    view = views["head_finder_ranked"]
    page.goto(view.save(tmp_path / "finder.html").as_uri())
    labels = [li.get_attribute("data-label") for li in page.locator("ol.ranking li[data-label]").all()]
    assert labels == [h["label"] for h in view.data["ranking"]["heads"][:10]]
    top = [(int(c.get_attribute("data-layer")), int(c.get_attribute("data-head"))) for c in page.locator(".cell.top").all()]
    assert sorted(top) == sorted((h["layer"], h["head"]) for h in view.data["ranking"]["heads"][:3])
    assert page.errors == []
