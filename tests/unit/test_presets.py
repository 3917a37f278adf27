"""Presets and config validation."""

from __future__ import annotations

import pytest

from attnlab.models import ConfigError, TransformerConfig, build_model, preset


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_transformer_base_2017_parameter_count() -> None:
    """The arithmetic of the 2017 base model with a 37,000-token shared vocabulary.

    d=512, d_ff=2048, 6 encoder + 6 decoder layers, biases everywhere, one shared embedding.
    """
    d, f, v = 512, 2048, 37000
    attn = 4 * (d * d + d)  # W_Q, W_K, W_V, W_O with biases
    ffn = d * f + f + f * d + d
    norm = 2 * d
    encoder_layer = attn + ffn + 2 * norm
    decoder_layer = 2 * attn + ffn + 3 * norm
    embedding = v * d  # shared by encoder input, decoder input and output layer
    expected = 6 * encoder_layer + 6 * decoder_layer + embedding
    assert expected == 63_082_496
    assert n_params(build_model(preset("transformer-base-2017"))) == expected


def test_gpt2_small_matches_published_size() -> None:
    assert n_params(build_model(preset("gpt2-small"))) == 124_439_808


def test_unknown_config_key_is_named() -> None:
    data = preset("bert-tiny").to_dict()
    data["n_head"] = 4
    with pytest.raises(ConfigError, match=r"n_head.*did you mean 'n_heads'"):
        TransformerConfig.from_dict(data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_heads": 3}, "divisible by n_heads"),
        ({"n_kv_heads": 3}, "multiple of n_kv_heads"),
        ({"positions": "alibi"}, "positions='alibi'"),
        ({"d_model": 0}, "d_model must be a positive integer"),
        ({"dropout": 1.5}, "dropout must be in"),
    ],
)
def test_invalid_configs_name_the_problem(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        preset("shakespeare-char").replace(**changes)


def test_config_round_trips_through_dict() -> None:
    config = preset("llama-tiny")
    assert TransformerConfig.from_dict(config.to_dict()) == config
