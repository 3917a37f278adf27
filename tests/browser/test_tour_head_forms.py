"""Issue 27 item 4: the tour step "A head forms" shows the induction-heads run beside its computed sentence."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_head_forms_step_shows_the_runs_figure_and_its_numbers(make_ui) -> None:
    ui = make_ui(1440, 900)
    ui.open()
    page = ui.page
    steps = page.evaluate("fetch('/api/tour').then(r => r.json())")["steps"]
    n = next(s["n"] for s in steps if s["slug"].endswith("head-forms"))
    page.goto("about:blank")
    ui.open(f"#tour/{n}")
    page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-widget[data-state=ready]", timeout=120_000)
    page.wait_for_selector(f"#view-tour[data-step='{n}'] .tour-text[data-claims=ready]")
    # the figure is the run's phase-change plot, loaded (not a broken image)
    experiments = page.evaluate("fetch('/api/experiments').then(r => r.json())")["experiments"]
    run = next(e for e in experiments if e["name"] == "induction-heads")["results"][0]
    assert page.get_attribute(".tour-widget figure", "data-figure") == run["figures"][0]["file"] == "phase_change.png"
    assert page.evaluate("document.querySelector('.tour-widget figure img').naturalWidth") > 0
    # every slot is filled with the text the server computed from that run's results
    rendered = page.evaluate(f"fetch('/api/tour/{n}').then(r => r.json())")
    shown = page.locator(".tour-text .claim[data-slot]").evaluate_all("cs => cs.map(c => [c.dataset.slot, c.textContent])")
    assert sorted(shown) == sorted([c["slot"], c["text"]] for c in rendered["claims"])
    assert {s for s, _ in shown} >= {"induction_jump", "induction_loss", "induction_drop", "induction_end", "induction_control"}
    data = page.evaluate(f"fetch('{run['results_url']}').then(r => r.json())")["data"]
    jump = data["runs"]["attn-only 2L"]["shift_jump"]  # the head forming: its attention on one key of the earlier copy
    text = dict(shown)["induction_jump"]
    assert f"between steps {jump['from_step']} and {jump['to_step']}" in text
    assert re.search(rf"rose from {jump['from_score']:.2f} to {jump['to_score']:.2f}$", text)
    # the figure sits beside the text, above the fold
    box, fig = page.locator(".tour-text").bounding_box(), page.locator(".tour-widget").bounding_box()
    assert fig["x"] >= box["x"] + box["width"] and fig["y"] < 900
    ui.screenshot("tour-step-head-forms-1440x900")
    assert ui.errors == []
