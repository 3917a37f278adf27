"""The model strip's and the feed-forward step's routes (POST /api/shape, POST /api/ffn), the diagram of an
attention-only model, and the strip part every tour step names, through the JSON API (no browser)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import torch
from fastapi.testclient import TestClient

from attnlab import catalog as cat
from attnlab.inspect import hook_points, run_with_cache
from attnlab.models import DecoderLM
from attnlab.web import tour
from attnlab.web.app import create_app
from attnlab.web.demo import _config, _entry, register_demo_models

TEXT = "the cat sat on the mat."


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    torch.set_num_threads(1)
    register_demo_models()
    # An attention-only decoder (blocks without a feed-forward network), as the induction-heads experiment trains;
    # taken out of the catalogue again afterwards, so other modules' model lists do not see it.
    cat.register(_entry("demo-attn-only", "decoder", DecoderLM, _config("decoder", attn_only=True), 5))
    yield TestClient(create_app(), base_url="http://127.0.0.1")
    cat.unload("demo-attn-only")
    cat._REGISTRY.pop("demo-attn-only", None)


@pytest.mark.parametrize("name", ["demo-decoder", "demo-encoder", "demo-seq2seq"])
def test_the_shape_is_the_models_own_config(client: TestClient, name: str) -> None:
    body = client.post("/api/shape", json={"model": name}).json()
    c = cat.load(name).config
    assert (body["family"], body["n_layers"], body["d_model"], body["n_heads"], body["d_ff"]) == \
        (c.family, c.n_layers, c.d_model, c.n_heads, c.d_ff)
    assert body["norm_placement"] == c.norm_placement and body["positions"] == c.positions and body["attn_only"] is False
    assert body["n_decoder_layers"] == (c.n_decoder_layers if c.family == "encoder-decoder" else None)
    assert body["variant"]["id"] == {"decoder": "decoder-only", "encoder": "encoder-only", "encoder-decoder": "encoder-decoder"}[c.family]
    assert any(b["part"] == "feed-forward" for b in body["variant"]["boxes"])
    # the frames count its real blocks
    assert all(f["label"].endswith(f"× {c.n_layers}") for f in body["variant"]["frames"])
    boxes = {b["id"] for b in body["variant"]["boxes"]}
    assert all(a["from"] in boxes and a["to"] in boxes for a in body["variant"]["arrows"])


def test_an_attention_only_model_is_drawn_without_a_feed_forward_network(client: TestClient) -> None:
    """The diagram of the model draws what it has: no feed-forward box (nor the add & norm after it), arrows re-joined."""
    loaded = cat.load("demo-attn-only")
    assert not any(n.endswith("ff.hook_hidden") for n in hook_points(loaded.model))  # the model really has none
    body = client.post("/api/shape", json={"model": "demo-attn-only"}).json()
    assert body["attn_only"] is True
    variant = body["variant"]
    ids = [b["id"] for b in variant["boxes"]]
    assert not any(b["part"] == "feed-forward" for b in variant["boxes"])
    assert ids == ["dec-embed", "dec-pos", "dec-attn", "dec-norm1", "linear", "softmax"]
    assert [(a["from"], a["to"]) for a in variant["arrows"]] == list(itertools.pairwise(ids))
    assert variant["frames"][0]["label"] == "Decoder block (attention only) × 2"  # its real depth
    # the textbook diagram (GET /api/architecture) keeps its feed-forward boxes
    textbook = client.get("/api/architecture").json()["variants"]
    assert all(any(b["part"] == "feed-forward" for b in v["boxes"]) for v in textbook)
    # and the feed-forward route says in one line why there is nothing to show
    r = client.post("/api/ffn", json={"model": "demo-attn-only", "text": TEXT, "layer": 0, "focus": 1})
    assert r.status_code == 422 and "attention-only" in r.json()["detail"] and "Traceback" not in r.text


@pytest.mark.parametrize("name", ["demo-decoder", "demo-encoder"])
def test_the_feed_forward_payload_is_the_models_hooks(client: TestClient, name: str) -> None:
    loaded = cat.load(name)
    ids = loaded.tokenizer.encode(TEXT)
    body = client.post("/api/ffn", json={"model": name, "text": TEXT, "layer": 1, "focus": 4}).json()
    stack = "decoder" if name == "demo-decoder" else "encoder"
    _, cache = run_with_cache(loaded.model, torch.tensor([ids]), names=f"{stack}.blocks.1.*")
    for key, point in (("before", "ff.hook_pre"), ("after", "ff.hook_hidden"), ("out", "ff.hook_out"),
                       ("stream", "hook_resid_mid"), ("result", "hook_resid_post")):
        name_ = f"{stack}.blocks.1.{point}"
        assert body["hooks"][key] == name_
        torch.testing.assert_close(torch.tensor(body[key], dtype=torch.float64), cache[name_][0, 4].double(), rtol=0, atol=1e-6)
    before, after = cache[f"{stack}.blocks.1.ff.hook_pre"][0, 4], cache[f"{stack}.blocks.1.ff.hook_hidden"][0, 4]
    assert body["negative_before"] == int((before < 0).sum()) and body["negative_after"] == int((after < 0).sum())
    assert body["zero_after"] == int((after == 0).sum()) and body["d_ff"] == loaded.config.d_ff
    # hook_pre is what enters the non-linearity: the activation of it is hook_hidden
    torch.testing.assert_close(torch.nn.functional.gelu(before) if loaded.config.activation == "gelu" else torch.relu(before), after)
    stream, out = (torch.tensor(body[k], dtype=torch.float64) for k in ("stream", "out"))
    torch.testing.assert_close(torch.tensor(body["added"], dtype=torch.float64), stream + out, rtol=0, atol=1e-12)
    if loaded.config.norm_placement == "pre":  # the block's output is the sum itself
        assert body["max_add_error"] < 1e-5


def test_every_tour_step_names_the_strip_parts_it_is_about(client: TestClient) -> None:
    steps = client.get("/api/tour").json()["steps"]
    by_slug = {s["slug"]: s["strip"] for s in steps}
    for s in steps:
        assert all(p in tour.STRIP_PARTS for p in (s["strip"] or "").split()), s["slug"]
    assert by_slug["03-qkv"] == "attention" and by_slug["10-cross"] == "cross" and by_slug["02-tokens"] == "embed position"
    assert set(by_slug["12-ffn"].split()) == {"ffn", "residual"} and by_slug["13-generate"] == "output"
    assert by_slug["11-families"] is None  # the whole model
    with pytest.raises(ValueError, match="unknown strip part 'wings'"):
        tour.strip_part({"widget": "attention", "strip": "wings"})
