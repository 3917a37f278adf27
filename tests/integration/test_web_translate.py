"""Translation as alignment (/api/translate) and model loading (/api/models/{name}/load).

The translation tests use ``demo-translator``, a tiny random-weight encoder-decoder with the real
translator's special tokens; what they check is that the cross-attention the route returns is the
model's own (``run_with_cache`` over the teacher-forced translation), whatever the translation says.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from attnlab import catalog as cat
from attnlab.inspect import run_with_cache
from attnlab.translate import translate_text
from attnlab.web.app import create_app
from attnlab.web.demo import register_demo_models

LOCAL = "http://127.0.0.1"  # the default testserver host is refused (DNS-rebinding guard)
SENTENCE = "In the beginning God created the heaven and the earth."


@pytest.fixture(scope="module")
def client() -> TestClient:
    register_demo_models()
    return TestClient(create_app(), base_url=LOCAL)


def _t(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_cross_attention_is_the_teacher_forced_runs_own(client: TestClient) -> None:
    r = client.post("/api/translate", json={"model": "demo-translator", "text": SENTENCE, "max_new_tokens": 12})
    assert r.status_code == 200, r.text
    body = r.json()
    loaded = cat.load("demo-translator")
    tok = loaded.tokenizer
    expected = translate_text(loaded.model, tok, SENTENCE, beam_size=1, max_new_tokens=12)
    assert body["text"] == expected.text
    assert body["source_tokens"] == tok.tokens(expected.source_ids) and body["source_tokens"][-1] == "</s>"
    assert body["target_tokens"] == [*tok.tokens(expected.target_ids), "</s>"]
    assert body["decoder_input_tokens"] == tok.tokens([tok.token_id("<s>"), *expected.target_ids])
    weights = _t(body["weights"])  # (layer, head, target, source)
    n_tgt, n_src = len(expected.target_ids) + 1, len(expected.source_ids)
    assert weights.shape == (2, 4, n_tgt, n_src)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, n_tgt, dtype=torch.float64), rtol=0, atol=1e-6)
    src = torch.tensor([expected.source_ids])
    tgt = torch.tensor([[tok.token_id("<s>"), *expected.target_ids]])
    _, cache = run_with_cache(loaded.model, src, tgt)
    for layer in range(2):
        reference = cache.attention(layer, stack="decoder", cross=True)[0].double()
        for head in range(4):
            torch.testing.assert_close(weights[layer, head], reference[head], rtol=0, atol=1e-6)
        torch.testing.assert_close(_t(body["mean_weights"][layer]), reference.mean(0), rtol=0, atol=1e-6)
    assert body["hooks"] == ["decoder.blocks.0.cross_attn.hook_weights", "decoder.blocks.1.cross_attn.hook_weights"]


def test_beam_and_length_bounds_are_passed_on(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import attnlab.web.translation as web_translation

    calls: list[dict] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return translate_text(*args, **kwargs)

    monkeypatch.setattr(web_translation, "translate_text", spy)
    for beam, limit in ((1, 3), (2, 5), (4, 64)):
        r = client.post("/api/translate", json={"model": "demo-translator", "text": "And God said", "beam_size": beam,
                                                "max_new_tokens": limit})
        assert r.status_code == 200, r.text
        assert r.json()["beam_size"] == beam
        assert calls[-1] == {"beam_size": beam, "max_new_tokens": limit}


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"model": "demo-decoder", "text": "hi"}, 422, "encoder-decoder"),
    ({"model": "demo-encoder", "text": "hi"}, 422, "encoder-decoder"),
    ({"model": "demo-seq2seq", "text": "hi"}, 422, "<s>"),
    ({"model": "no-such-model", "text": "hi"}, 404, "unknown model"),
    ({"model": "demo-translator", "text": ""}, 422, "at least 1 character"),
    ({"model": "demo-translator", "text": "   "}, 422, "empty"),
    ({"model": "demo-translator", "text": "x" * 401}, 422, "400"),
    ({"model": "demo-translator", "text": "¶ " * 64}, 422, "limit is 63 tokens"),
    ({"model": "demo-translator", "text": "hi", "beam_size": 5}, 422, "less than or equal to 4"),
    ({"model": "demo-translator", "text": "hi", "beam_size": 0}, 422, "greater than or equal to 1"),
    ({"model": "demo-translator", "text": "hi", "max_new_tokens": 65}, 422, "64"),
    ({"model": "demo-translator", "text": "hi", "extra": 1}, 422, "extra"),
])
def test_bad_translation_requests_are_4xx_that_name_the_problem(client: TestClient, body: dict, status: int,
                                                                needle: str) -> None:
    r = client.post("/api/translate", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


# --- loading models off the event loop -----------------------------------------------------------------


def _slow_entry(name: str, seconds: float) -> cat.ModelInfo:
    demo = next(i for i in cat.catalog() if i.name == "demo-decoder")

    def loader() -> cat.LoadedModel:
        time.sleep(seconds)
        loaded = demo.loader()
        loaded.name = name
        return loaded

    return cat.ModelInfo(name=name, family="decoder", description="slow to load (test)", n_params="~30k", source="test",
                         licence="MIT", install_hint="nothing", is_available=lambda: True, loader=loader)


def test_load_route_loads_once_and_models_says_so(client: TestClient) -> None:
    cat.register(_slow_entry("test-slow-api", 0.3))
    row = next(m for m in client.get("/api/models").json()["models"] if m["name"] == "test-slow-api")
    assert row["loaded"] is False
    first = client.post("/api/models/test-slow-api/load", json={}).json()
    assert first["loaded"] is True and first["seconds"] >= 0.3 and first["family"] == "decoder"
    row = next(m for m in client.get("/api/models").json()["models"] if m["name"] == "test-slow-api")
    assert row["loaded"] is True
    assert client.post("/api/models/test-slow-api/load", json={}).json()["seconds"] == 0
    assert client.post("/api/models/no-such-model/load", json={}).status_code == 404
    cat.register(cat.ModelInfo(name="test-missing-load", family="encoder", description="", n_params="0", source="nowhere",
                               licence="", install_hint="pip install nothing", is_available=lambda: False,
                               loader=lambda: None))  # type: ignore[arg-type,return-value]
    r = client.post("/api/models/test-missing-load/load", json={})
    assert r.status_code == 503 and "pip install nothing" in r.text
