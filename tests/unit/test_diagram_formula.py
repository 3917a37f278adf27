"""The hover card's formula follows the model's config (``attnlab.web.diagram.model_formula``)."""

from __future__ import annotations

import pytest

from attnlab.models.presets import preset
from attnlab.web.diagram import FORMULA, model_formula


def test_the_2017_model_reads_as_the_paper_with_its_sizes() -> None:
    config = preset("transformer-base-2017")
    assert model_formula("input-embedding", config).startswith("x = E[token] · √d_model (√512;")
    assert model_formula("positional-encoding", config) == FORMULA["positional-encoding"]
    assert model_formula("add-norm", config) == FORMULA["add-norm"]  # post-norm
    assert model_formula("feed-forward", config) == "max(0, x W₁ + b₁) W₂ + b₂, per token, 512 → 2048 → 512"
    assert model_formula("self-attention", config).startswith("softmax(Q Kᵀ / √d_k) V, d_k = 64, 8 heads")
    assert model_formula("softmax", config) == FORMULA["softmax"]


def test_each_difference_from_the_paper_shows() -> None:
    gpt = preset("shakespeare-char")  # pre-norm LayerNorm, GELU without biases, learned positions, unscaled
    assert "√d_model" not in model_formula("input-embedding", gpt)
    assert model_formula("add-norm", gpt) == "x + Sublayer(LayerNorm(x))"
    assert model_formula("feed-forward", gpt) == "GELU(x W₁) W₂, per token, 128 → 512 → 128"
    assert model_formula("positional-encoding", gpt).startswith("x + P[pos] (a learned row per position, 64")
    llama = preset("llama-tiny")  # RMSNorm, SwiGLU, rotary, grouped-query attention, untied output
    assert model_formula("add-norm", llama) == "x + Sublayer(RMSNorm(x))"
    assert model_formula("feed-forward", llama).startswith("(SiLU(x W_gate) ⊙ x W_up) W_down")
    assert "rotated" in model_formula("positional-encoding", llama)
    assert "rotated Q Kᵀ" in model_formula("masked-self-attention", llama)
    assert "K and V shared by 4 heads each" in model_formula("masked-self-attention", llama)
    assert model_formula("linear", llama) == "logits = h W_vocab"
    bert = preset("bert-tiny")  # segment embeddings and an embedding LayerNorm
    assert model_formula("positional-encoding", bert).endswith("then LayerNorm")
    assert "S[segment]" in model_formula("positional-encoding", bert)


def test_an_unknown_part_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        model_formula("decoder-block", preset("bert-tiny"))
