"""The tour's content, the head finder and the next-token route, through the JSON API (no browser)."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from attnlab import catalog as cat
from attnlab.generate import Sampling, sampling_distribution
from attnlab.inspect import run_with_cache
from attnlab.web import tour
from attnlab.web.app import create_app
from attnlab.web.demo import register_demo_models
from attnlab.web.models import view_defaults

TWELVE = "abcdefghijkl"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    register_demo_models(tmp_path_factory.mktemp("timeline"))
    return TestClient(create_app(), base_url="http://127.0.0.1")


def test_the_tour_has_ordered_steps_with_known_widgets_and_existing_pages(client: TestClient) -> None:
    body = client.get("/api/tour").json()
    steps = body["steps"]
    assert 10 <= len(steps) <= 16 and [s["n"] for s in steps] == list(range(1, len(steps) + 1))
    slugs = {p["slug"] for p in client.get("/api/content").json()["pages"]}
    for step in steps:
        assert step["preset"]["widget"] in tour.WIDGETS
        assert step["title"] and "<script" not in step["html"]
        assert step["learn"] in slugs, step["slug"]
        if step["preset"]["model"]:
            assert any(i.name == step["preset"]["model"] and i.available for i in cat.catalog())
    toy = body["toy"]
    assert "toy" in next(s for s in steps if s["preset"]["widget"] == "toy")["html"].lower()
    assert abs(sum(toy["weights"]) - 1) < 1e-12
    # The Learn index follows the tour's order.
    order = [p["slug"] for p in client.get("/api/content").json()["pages"]]
    assert order[: len(tour.learn_order())] == tour.learn_order()


def test_a_step_file_with_an_unknown_key_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown front-matter"):
        tour._front_matter("---\nwidget: attention\ncolour: red\n---\n# x", "99-x.md")
    with pytest.raises(ValueError, match="widget must be one of"):
        tour._front_matter("---\nwidget: hologram\n---\n# x", "99-x.md")


def test_word_level_models_are_the_defaults_when_installed(client: TestClient) -> None:
    body = client.get("/api/models").json()
    available = {m["name"] for m in body["models"] if m["available"]}
    if "minilm" in available:
        assert body["default"] == "minilm" and body["note"] is None
    for kind, name in (("encoder", "minilm"), ("generate", "smollm2"), ("translate", "translator")):
        if name in available:
            assert body["views"][kind] == name == view_defaults()[kind]


def test_head_finder_ranks_every_head_by_the_recorded_weight(client: TestClient) -> None:
    body = client.post("/api/heads/rank", json={"model": "demo-encoder", "text": TWELVE, "query": 7, "key": 2}).json()
    loaded = cat.load("demo-encoder")
    ids = loaded.tokenizer.encode(TWELVE)
    _, cache = run_with_cache(loaded.model, torch.tensor([ids]), names="*hook_weights")
    rows = []
    for layer in range(loaded.config.n_layers):
        w = cache.attention(layer)[0, :, :, 2].double()  # (heads, queries)
        for head in range(w.shape[0]):
            others = torch.cat([w[head, :7], w[head, 8:]]).mean().item()
            rows.append((-w[head, 7].item(), layer, head, others))
    rows.sort()
    assert [h["label"] for h in body["heads"]] == [f"L{layer} H{head}" for _, layer, head, _ in rows]
    for h, (neg, _, _, others) in zip(body["heads"], rows, strict=True):
        assert h["weight"] == pytest.approx(-neg, abs=1e-12) and h["others"] == pytest.approx(others, abs=1e-12)
        assert h["specificity"] == pytest.approx(h["weight"] - h["others"], abs=1e-12) and h["verdict"]


@pytest.mark.parametrize(("body", "needle"), [
    ({"model": "demo-encoder", "text": TWELVE, "query": 12, "key": 0}, "query token 12"),
    ({"model": "demo-encoder", "text": TWELVE, "query": 0, "key": 40}, "key token 40"),
    ({"model": "demo-decoder", "text": TWELVE, "query": 2, "key": 5}, "cannot see the later key"),
    ({"model": "demo-encoder", "text": TWELVE, "query": 0, "key": 0, "colour": 1}, "colour"),
    ({"model": "demo-encoder", "text": TWELVE, "query": -1, "key": 0}, "greater than or equal"),
])
def test_head_finder_bad_input_is_a_422_naming_the_problem(client: TestClient, body: dict, needle: str) -> None:
    r = client.post("/api/heads/rank", json=body)
    assert r.status_code == 422 and needle in r.text, r.text


def test_next_token_logits_are_hook_logits_and_filter_like_the_sampler(client: TestClient) -> None:
    body = client.post("/api/next-token", json={"model": "demo-decoder", "text": "the cat"}).json()
    loaded = cat.load("demo-decoder")
    ids = loaded.tokenizer.encode("the cat")
    _, cache = run_with_cache(loaded.model, torch.tensor([ids]), names="*hook_logits")
    logits = cache[body["hook"]][0, -1].double()
    torch.testing.assert_close(torch.tensor(body["logits"], dtype=torch.float64), logits, rtol=0, atol=0)
    top = logits.topk(5).indices.tolist()
    assert all(str(i) in body["labels"] for i in top)
    assert sampling_distribution(logits, Sampling(temperature=0.5, top_k=3)).count_nonzero() == 3
    r = client.post("/api/next-token", json={"model": "demo-encoder", "text": "the cat"})
    assert r.status_code == 422 and "decoder" in r.text


def _info(name: str, family: str, available: bool, **fields: object) -> cat.ModelInfo:
    """A catalogue row; a built-in name keeps the built-in entry's fields (token kind, preferred view)."""
    builtin = {i.name: i for i in cat.BUILTIN}.get(name)
    known = {"token_kind": builtin.token_kind, "preferred_view": builtin.preferred_view} if builtin else {}
    return cat.ModelInfo(name=name, family=family, description="", n_params="0", source="", licence="", install_hint="make install",
                         is_available=lambda: available, loader=lambda: None,  # type: ignore[arg-type,return-value]
                         **{**known, **fields})  # type: ignore[arg-type]


def test_the_defaults_come_from_catalogue_fields_not_from_model_names(client: TestClient,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from attnlab.web import models

    rows = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert rows["shakespeare-char"]["token_kind"] == "character" and rows["minilm"]["preferred_view"] == "encoder"
    assert rows["translator"]["preferred_view"] == "translate" and not rows["translator"]["demo"]
    assert rows["demo-translator"]["preferred_view"] == "translate" and rows["demo-translator"]["demo"]
    renamed = [_info("letters", "decoder", True, token_kind="character"), _info("sentences", "encoder", True,
               preferred_view="encoder"), _info("chat", "decoder", True, preferred_view="generate"),
               _info("stand-in", "encoder-decoder", True, preferred_view="translate", demo=True),
               _info("spanish", "encoder-decoder", True, preferred_view="translate")]
    monkeypatch.setattr(models.cat, "catalog", lambda: renamed)
    assert models.default_model() == ("sentences", None)
    assert models.view_defaults() == {"encoder": "sentences", "generate": "chat", "translate": "spanish"}
    fallback = [renamed[0], _info("sentences", "encoder", False, preferred_view="encoder"), renamed[3]]
    monkeypatch.setattr(models.cat, "catalog", lambda: fallback)
    default, note = models.default_model()
    assert default == "letters" and "character-level" in note and "'sentences' is not installed" in note
    assert models.view_defaults() == {"encoder": None, "generate": "letters", "translate": "stand-in"}


def test_a_character_model_is_the_default_only_when_nothing_else_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    from attnlab.web import models

    only_char = [_info("shakespeare-char", "decoder", True), _info("minilm", "encoder", False), _info("smollm2", "decoder", False)]
    monkeypatch.setattr(models.cat, "catalog", lambda: only_char)
    default, note = models.default_model()
    assert default == "shakespeare-char" and "character-level" in note and "minilm" in note
    assert models.view_defaults()["generate"] == "shakespeare-char"
    words = [*only_char[:1], _info("smollm2", "decoder", True), _info("translator", "encoder-decoder", True)]
    monkeypatch.setattr(models.cat, "catalog", lambda: words)
    default, note = models.default_model()
    assert default == "smollm2" and "character" not in note  # a word-level stand-in beats the character model
    assert models.view_defaults() == {"encoder": None, "generate": "smollm2", "translate": "translator"}
