"""Issue 27 item 4: the training timeline draws the chosen head's role scores over training."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _lines(page) -> list[dict]:
    return page.locator("#tl-roles polyline.role-line").evaluate_all(
        "ls => ls.map(l => ({role: l.dataset.role, values: l.dataset.values, points: l.getAttribute('points')}))")


def _check(page, layer: int, head: int, step: int) -> dict:
    body = {"model": "bible-bpe", "step": step, "layer": layer, "head": head}
    p = page.evaluate("b => fetch('/api/timeline/attention', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                      " body: JSON.stringify(b)}).then(r => r.json())", body)
    lines = _lines(page)
    assert [line["role"] for line in lines] == list(p["role_scores"])  # one line per role, in the payload's order
    for line in lines:
        values = p["role_scores"][line["role"]]
        assert json.loads(line["values"]) == values
        ys = [float(pt.split(",")[1]) for pt in line["points"].split()]
        # y = bottom (250 - 40) minus the score times the plot's height (250 - 2 * 40); null scores are skipped
        assert ys == pytest.approx([210 - 170 * v for v in values if v is not None], abs=0.06)
    thresholds = page.locator("#tl-roles line.role-threshold").evaluate_all("ls => ls.map(l => [Number(l.dataset.threshold), l.dataset.roles])")
    assert {(t, role) for t, roles in thresholds for role in roles.split(",")} == {(v, r) for r, v in p["role_thresholds"].items()}
    assert p["role_summary"] in page.inner_text("#tl-roles-note")
    return p


def test_timeline_draws_one_line_per_role_with_the_payloads_scores(ui) -> None:
    page = ui.page
    page.set_viewport_size({"width": 1440, "height": 900})
    ui.open("#timeline", model="bible-bpe")
    index = page.evaluate("fetch('/api/timeline?model=bible-bpe').then(r => r.json())")
    first = index["snapshots"][0]["step"]
    layer, head = index["learning_layer"], index["learning_head"]
    page.wait_for_selector(f"#tl-heatmap[data-model='bible-bpe'][data-step='{first}'] rect[data-i]", state="attached")
    page.wait_for_selector("#tl-roles polyline.role-line", state="attached")
    _check(page, layer, head, first)
    other = (head + 1) % index["n_heads"]  # another head: the lines follow it
    before = _lines(page)
    page.select_option("#tl-head", str(other))
    page.wait_for_function("v => document.querySelector('#tl-roles polyline.role-line').dataset.values !== v",
                           arg=before[0]["values"])
    _check(page, layer, other, first)
    page.screenshot(path="/tmp/tl4-timeline.png", full_page=False)
    ui.screenshot("walkthrough-timeline-roles")
    assert ui.errors == []
