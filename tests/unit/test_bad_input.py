"""Wrong input is a clear exception that names the problem, never a deep shape error or a silent result."""

from __future__ import annotations

import pytest
import torch

from attnlab.models import (
    ConfigError,
    DecoderLM,
    EncoderDecoder,
    EncoderModel,
    InputError,
    TransformerConfig,
    preset,
)
from attnlab.weights.hf import from_hf_state_dict, to_hf_state_dict
from attnlab.weights.keymap import CheckpointMismatchError

SMALL = dict(vocab_size=40, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=16)


def decoder(**kw) -> DecoderLM:
    return DecoderLM(TransformerConfig(family="decoder", **{**SMALL, **kw})).eval()


def encoder() -> EncoderModel:
    return EncoderModel(TransformerConfig(family="encoder", type_vocab_size=2, **SMALL)).eval()


IDS = torch.randint(0, 40, (2, 5))


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (IDS.float(), "integer token ids.*float32"),
        (IDS.bool(), "integer token ids.*bool"),
        (IDS[0], r"shape \(batch, seq_len\), got \(5,\)"),
        (IDS[None], r"shape \(batch, seq_len\), got \(1, 2, 5\)"),
        (IDS[:, :0], "empty"),
        (IDS + 40, r"outside the vocabulary \[0, 40\)"),
        (IDS.numpy(), "must be a torch.Tensor.*ndarray"),
    ],
)
def test_wrong_dtype_or_shape_of_ids(ids, message: str) -> None:
    with pytest.raises(InputError, match=message):
        decoder()(ids)


def test_sequence_longer_than_max_len() -> None:
    with pytest.raises(InputError, match=r"17 tokens is longer than the model's 16 positions \(max_len\)"):
        decoder()(torch.zeros(1, 17, dtype=torch.long))
    model = decoder()
    cache = model.new_cache()
    model(torch.zeros(1, 15, dtype=torch.long), cache=cache)
    with pytest.raises(InputError, match="17 tokens is longer"):  # also one step at a time
        model(torch.zeros(1, 2, dtype=torch.long), cache=cache)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.ones(2, 6), r"attention_mask must have shape .* = \(2, 5\), got \(2, 6\)"),
        (torch.ones(3, 5), r"got \(3, 5\)"),
        (torch.ones(5), r"got \(5,\)"),
        (torch.zeros(2, 5).masked_fill(torch.rand(2, 5) > 0.5, float("-inf")), "1 for real tokens and 0 for padding"),
    ],
)
def test_wrong_attention_mask(mask: torch.Tensor, message: str) -> None:
    for model in (encoder(), decoder()):
        with pytest.raises(InputError, match=message):
            model(IDS, mask)


def test_wrong_token_types() -> None:
    with pytest.raises(InputError, match=r"token_type_ids must lie in \[0, 2\)"):
        encoder()(IDS, None, torch.full_like(IDS, 2))
    with pytest.raises(InputError, match="shaped like input_ids"):
        encoder()(IDS, None, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(InputError, match="no token types"):
        EncoderModel(TransformerConfig(family="encoder", **SMALL))(IDS, None, torch.zeros_like(IDS))


def test_cache_of_another_batch_is_refused() -> None:
    model = decoder()
    cache = model.new_cache()
    model(IDS, cache=cache)
    with pytest.raises(ValueError, match=r"KV cache holds .* \(2, 2, 8\), got \(1, 2, 8\)"):
        model(IDS[:1, :1], cache=cache)


def test_encoder_output_of_another_batch_is_refused() -> None:
    model = EncoderDecoder(TransformerConfig(family="encoder-decoder", **SMALL)).eval()
    memory = model.encode(IDS[:1])
    with pytest.raises(InputError, match=r"memory .* must be \(batch=2, src_len, d_model=16\), got \(1, 5, 16\)"):
        model.decode(IDS, memory)


def test_unknown_config_key_is_named() -> None:
    data = {"family": "decoder", **SMALL, "n_head": 2}
    with pytest.raises(ConfigError, match=r"unknown config key\(s\): 'n_head' \(did you mean 'n_heads'\?\)"):
        TransformerConfig.from_dict(data)
    with pytest.raises(TypeError, match="n_head"):
        TransformerConfig(**data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_kv_heads": "2"}, "n_kv_heads must be a positive integer"),
        ({"head_dim": 0}, "head_dim must be a positive integer"),
        ({"rope_theta": -1.0}, "rope_theta must be a positive number"),
        ({"pad_token_id": 40}, r"pad_token_id=40 is outside the vocabulary \[0, 40\)"),
        ({"n_classes": 3}, "n_classes is for encoder classifiers"),
        ({"family": "gpt"}, "family='gpt' is not one of"),
    ],
)
def test_invalid_config_values_are_named(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TransformerConfig(**{"family": "decoder", **SMALL, **changes})


# --- config vs checkpoint ---------------------------------------------------------------------------

def _gpt2_checkpoint(**kw) -> tuple[dict, TransformerConfig]:
    config = preset("gpt2-small").replace(**{**SMALL, "dropout": 0.0, **kw})
    return to_hf_state_dict("gpt2", DecoderLM(config).state_dict(), config), config


def test_checkpoint_wider_than_config_names_key_and_both_shapes() -> None:
    checkpoint, config = _gpt2_checkpoint()
    with pytest.raises(
        CheckpointMismatchError,
        match=r"shape mismatch for 'transformer.wte.weight': .* has \(40, 16\), the config expects \(40, 32\)",
    ):
        from_hf_state_dict("gpt2", checkpoint, config.replace(d_model=32))


def test_checkpoint_with_fewer_or_more_layers_names_the_key() -> None:
    checkpoint, config = _gpt2_checkpoint()
    with pytest.raises(CheckpointMismatchError, match=r"missing key\(s\) 'transformer.h.2.ln_1.weight'"):
        from_hf_state_dict("gpt2", checkpoint, config.replace(n_layers=3))
    with pytest.raises(CheckpointMismatchError, match=r"unexpected key\(s\) 'transformer.h.1.ln_1.weight'"):
        from_hf_state_dict("gpt2", checkpoint, config.replace(n_layers=1))


def test_checkpoint_missing_a_key_names_it() -> None:
    checkpoint, config = _gpt2_checkpoint()
    del checkpoint["transformer.h.0.attn.c_proj.bias"]
    with pytest.raises(CheckpointMismatchError, match=r"missing key.*'transformer.h.0.attn.c_proj.bias'"):
        from_hf_state_dict("gpt2", checkpoint, config)


def test_untied_checkpoint_for_a_tied_config_is_refused() -> None:
    checkpoint, config = _gpt2_checkpoint()
    checkpoint["lm_head.weight"] = torch.randn_like(checkpoint["lm_head.weight"])
    with pytest.raises(CheckpointMismatchError, match=r"'lm_head.weight' differs from 'transformer.wte.weight'"):
        from_hf_state_dict("gpt2", checkpoint, config)


def test_config_of_another_architecture_is_refused() -> None:
    checkpoint, config = _gpt2_checkpoint()
    with pytest.raises(ConfigError, match="a gpt2 checkpoint needs norm_placement='pre'"):
        from_hf_state_dict("gpt2", checkpoint, config.replace(norm_placement="post"))
    with pytest.raises(ValueError, match="unknown checkpoint kind 'gpt3'"):
        from_hf_state_dict("gpt3", checkpoint, config)


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.long(), r"'transformer.h.0.mlp.c_fc.weight' is int64 \(expected a floating-point dtype\)"),
    (lambda t: t > 0, r"'transformer.h.0.mlp.c_fc.weight' is bool \(expected a floating-point dtype\)"),
    (lambda t: t.index_fill(0, torch.tensor([1, 3]), float("nan")), r"'transformer.h.0.mlp.c_fc.weight' holds 64 NaN"),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("-inf")), r"'transformer.h.0.mlp.c_fc.weight' holds 32 NaN or inf"),
])
def test_checkpoint_weights_of_the_wrong_dtype_or_not_finite_are_refused(change, message) -> None:
    """Issue 23 item 6: int64, bool or NaN weights loaded silently (and generated garbage)."""
    checkpoint, config = _gpt2_checkpoint()
    checkpoint["transformer.h.0.mlp.c_fc.weight"] = change(checkpoint["transformer.h.0.mlp.c_fc.weight"])
    with pytest.raises(CheckpointMismatchError, match=r"has unusable weights: " + message):
        from_hf_state_dict("gpt2", checkpoint, config)
