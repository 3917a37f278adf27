"""Views moved into their own modules (static/registry.js) keep what index.js did for them: the JSON export
of what they drew, their pickers and their URL state."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_order_views_json_export_is_its_positions_and_the_layer_it_drew(ui, tmp_path) -> None:
    page = ui.page
    ui.open("#order?layer=1", model="demo-encoder")
    page.wait_for_selector("#order-body svg[data-positions=false]")
    with page.expect_download() as download:
        page.click('#view-order .export button[data-kind="json"]')
    path = tmp_path / "order.json"
    download.value.save_as(path)
    data = json.loads(path.read_text())
    assert set(data) == {"positions", "attention_layer"}
    assert data["attention_layer"]["layer"] == 1
    assert len(page.locator("#heads-row .cell").all()) == len(data["attention_layer"]["weights"])
    assert data["positions"]["comparisons"][1]["positions"] is False
    assert ui.errors == []


def test_the_qkv_pickers_push_the_url_state(ui) -> None:
    page = ui.page
    ui.open("#qkv?layer=0&head=0&query=1", model="demo-decoder")
    page.wait_for_selector("#qkv-table tbody tr.focus[data-token='1']")
    with page.expect_response(lambda r: r.url.endswith("/api/qkv") and json.loads(r.request.post_data)["head"] == 1):
        page.select_option("#qkv-head", "1")
    page.locator("#qkv-title", has_text="head 1").wait_for()
    assert "head=1" in page.evaluate("location.hash")
    page.go_back()
    page.locator("#qkv-title", has_text="head 0").wait_for()
    assert ui.errors == []


def test_an_experiments_deep_link_keeps_its_url_and_a_model_change_asks_nothing(ui) -> None:
    page = ui.page
    ui.open("#experiments")
    page.wait_for_selector("#exp-index a")
    name = page.locator("#exp-index a").nth(1).inner_text()
    page.evaluate(f"location.hash = '#experiments/{name}'")
    page.wait_for_function(f"document.getElementById('exp-{name}') !== null")
    assert page.evaluate("location.hash") == f"#experiments/{name}"
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/api/experiments" in r.url else None)
    page.locator("#input-form button[type=submit]").click()
    page.wait_for_timeout(300)
    assert asked == [] and page.evaluate("location.hash") == f"#experiments/{name}"
    assert ui.errors == []


def test_a_timeline_deep_link_opens_its_snapshot_layer_and_head(ui) -> None:
    page = ui.page
    ui.open("#timeline", model="demo-decoder")
    page.wait_for_selector("#tl-heatmap rect[data-i]", state="attached")
    index = page.evaluate("fetch('/api/timeline?model=demo-decoder').then(r => r.json())")
    step = index["snapshots"][-1]["step"]
    head = (index["learning_head"] + 1) % index["n_heads"]
    page.evaluate(f"location.hash = '#timeline?layer=0&head={head}&step={step}'")
    page.wait_for_selector(f"#tl-heatmap[data-step='{step}'] rect[data-i]", state="attached")
    assert (page.input_value("#tl-layer"), page.input_value("#tl-head")) == ("0", str(head))
    assert f"head={head}" in page.evaluate("location.hash") and f"step={step}" in page.evaluate("location.hash")
    assert ui.errors == []
