"""POST /api/heads/contexts ("what does L3H1 do?") and the head grid's corpus_roles, through the JSON API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from attnlab import catalog as cat
from attnlab import interpret
from attnlab.interpret import corpus as hc
from attnlab.web import finder
from attnlab.web.app import create_app

N = 12  # verses: a small corpus keeps the pass short


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    return TestClient(create_app(), base_url="http://127.0.0.1")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


def test_head_contexts_route_is_the_library_ranking_and_fills_the_head_grids_roles(client: TestClient, tmp_path) -> None:
    body = {"model": "bible-bpe", "layer": 2, "head": 1, "k": 4, "sentences": N}
    first = client.post("/api/heads/contexts", json=body)
    assert first.status_code == 200, first.text
    got = first.json()
    loaded = cat.load("bible-bpe")
    corpus = hc.default_corpus(N)
    want = interpret.head_contexts(loaded.model, loaded.tokenizer, corpus, 2, 1, k=4, cache=False, progress=False)
    assert got["sentences"] == want.sentences and got["stack"] == "decoder" and not got["from_cache"]
    assert [(c["sentence"], c["query"], c["key"]) for c in got["contexts"]] == \
        [(c.sentence, c.query, c.key) for c in want.contexts]
    assert [c["specificity"] for c in got["contexts"]] == pytest.approx([c.specificity for c in want.contexts], abs=1e-5)
    assert got["link_threshold"] == finder.LINK
    links = sum(c.specificity >= finder.LINK for c in want.contexts)
    assert f"{links} of the top 4 are links" in got["summary"]
    roles = {r["role"]: r for r in got["roles"]}
    assert list(roles) == list(hc.ROLES)
    for name, r in roles.items():
        assert r["threshold"] == hc.ROLE_THRESHOLDS[name] and r["given"] == (r["score"] is not None and r["score"] >= r["threshold"])
    assert list((tmp_path / "attnlab" / "corpus").glob("*.pt"))  # cached under $XDG_CACHE_HOME/attnlab

    again = client.post("/api/heads/contexts", json={**body, "head": 3}).json()  # another head: from the cache
    assert again["from_cache"] and again["head"] == 3

    grid = client.post("/api/attention", json={"model": "bible-bpe", "text": "In the beginning"}).json()
    cr = grid["corpus_roles"]
    assert cr["sentences"] == got["sentences"] and cr["thresholds"] == hc.ROLE_THRESHOLDS
    assert cr["scores"]["previous-token"][2][1] == pytest.approx(roles["previous-token"]["score"])
    assert ("previous-token" in cr["roles"][2][1]) == roles["previous-token"]["given"]


def test_a_model_without_a_pass_has_no_corpus_roles_yet(client: TestClient) -> None:
    grid = client.post("/api/attention", json={"model": "shakespeare-char", "text": "To be"}).json()
    assert grid["corpus_roles"] is None


@pytest.mark.parametrize(("body", "needle"), [
    ({"model": "bible-bpe", "layer": 4, "head": 0, "sentences": N}, "L4H0 does not exist"),
    ({"model": "bible-bpe", "layer": 0, "head": 0, "k": 0, "sentences": N}, "greater than or equal"),
    ({"model": "bible-bpe", "layer": 0, "head": 0, "sentences": 100000}, "less than or equal"),
])
def test_bad_input_is_a_422_naming_the_problem(client: TestClient, body: dict, needle: str) -> None:
    r = client.post("/api/heads/contexts", json=body)
    assert r.status_code == 422 and needle in r.text
