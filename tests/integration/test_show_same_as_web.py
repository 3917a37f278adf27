"""attnlab.show and the walkthrough draw one payload: for the same model and sentence, a notebook view's
data holds the JSON the web route answers (issue 24 item 2: ``show/`` renders from the web's payload
builders), number for number."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from attnlab import catalog as cat
from attnlab import show
from attnlab.interpret import corpus as hc
from attnlab.web.app import create_app

pytestmark = pytest.mark.usefixtures("one_thread")
LOCAL = "http://127.0.0.1"
SENTENCES = {"minilm": "John gave the book to Sarah because she liked it.", "shakespeare-char": "ROMEO: But soft"}


def _models() -> list[str]:
    available = {m.name for m in cat.catalog() if m.available}
    return [pytest.param(name, marks=pytest.mark.skipif(name not in available, reason=f"{name} is not installed"))
            for name in SENTENCES]


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(), base_url=LOCAL)


def _post(client: TestClient, route: str, body: dict) -> dict:
    r = client.post(route, json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("name", _models())
def test_attention_and_head_finder_draw_the_routes_payloads(client: TestClient, name: str) -> None:
    text = SENTENCES[name]
    web = _post(client, "/api/attention", {"model": name, "text": text})
    view = show.attention(name, text, layer=1, head=2)
    assert {k: view.data[k] for k in web} == web  # every field, every weight, bit for bit
    assert (view.data["layer"], view.data["head"], view.data["focus"]) == (1, 2, len(web["tokens"]) - 1)

    query, key = len(web["tokens"]) - 2, 1
    ranking = _post(client, "/api/heads/rank", {"model": name, "text": text, "query": query, "key": key})
    finder = show.head_finder(name, text, query=query, key=key)
    assert finder.data["ranking"] == ranking
    assert {k: finder.data[k] for k in web} == web  # its grid is the attention payload
    assert "function headRanking(" in finder.html
    with pytest.raises(ValueError, match="key="):
        show.head_finder(name, text, query=query)


@pytest.mark.parametrize("name", _models())
def test_why_draws_the_routes_payload(client: TestClient, name: str) -> None:
    text = SENTENCES[name]
    body = {"model": name, "text": text, "layer": 1, "head": 1, "focus": 3}
    web = _post(client, "/api/why", body)
    view = show.why(name, text, layer=1, head=1, focus=3)
    assert view.kind == "why" and view.data == web
    holds = sum(c["holds"] for c in web["ledger"])
    assert view.note == f"{holds} of the {len(web['ledger'])} checks in the ledger hold on this input."
    with pytest.raises(ValueError, match=r"^focus token 20 does not exist"):
        show.why(name, text, focus=20)
    with pytest.raises(ValueError, match="text"):
        show.why(name, "x" * 401)


def test_head_contexts_draws_the_routes_payload(client: TestClient, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    n = 12
    web = _post(client, "/api/heads/contexts", {"model": "bible-bpe", "layer": 2, "head": 1, "k": 4, "sentences": n})
    view = show.head_contexts("bible-bpe", 2, 1, corpus=hc.default_corpus(n), k=4, progress=False)
    assert view.data["from_cache"]  # the route's pass, read back
    def same(d: dict) -> dict:  # what names the corpus and whether this pass was read back differ, by design
        return {k: v for k, v in d.items() if k not in ("corpus", "from_cache")}

    assert same(view.data) == same(web) and not web["from_cache"]
    assert view.data["corpus"] == f"the {n} sentences given to attnlab.show.head_contexts"
