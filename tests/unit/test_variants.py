"""Model variants: without positions, an encoder is permutation-equivariant; the original is untouched."""

from __future__ import annotations

import pytest
import torch

from attnlab.models import DecoderLM, EncoderModel, TransformerConfig
from attnlab.models.variants import without_positions


def _config(positions: str, family: str = "encoder") -> TransformerConfig:
    return TransformerConfig(family=family, vocab_size=40, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=16,
                             positions=positions, dropout=0.0)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_encoder_without_positions_is_permutation_equivariant(positions: str) -> None:
    model = EncoderModel(_config(positions)).eval()
    bare = without_positions(model)
    ids = torch.tensor([[3, 9, 4, 17, 3, 25]])
    perm = torch.tensor([5, 2, 0, 4, 1, 3])
    with torch.no_grad():
        out, out_perm = bare(ids), bare(ids[:, perm])
        torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)
        assert (model(ids[:, perm]) - model(ids)[:, perm]).abs().max() > 1e-3  # the original still sees order
    assert bare.config.positions == "none" and model.config.positions == positions
    shared = set(bare.state_dict()) & set(model.state_dict())
    assert all(torch.equal(bare.state_dict()[k], model.state_dict()[k]) for k in shared)


def test_decoder_without_rotary_still_runs_causally() -> None:
    model = DecoderLM(_config("rotary", "decoder")).eval()
    bare = without_positions(model)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        full, prefix = bare(ids), bare(ids[:, :2])
    torch.testing.assert_close(full[:, :2], prefix, atol=1e-5, rtol=1e-5)  # still causal
    assert not torch.allclose(full, model(ids))
