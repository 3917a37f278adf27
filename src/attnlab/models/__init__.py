"""Floor 2: one block stack, three families (encoder-only, decoder-only, encoder-decoder)."""

from __future__ import annotations

from attnlab.models.config import ConfigError, TransformerConfig
from attnlab.models.decoder import DecoderLM
from attnlab.models.encoder import EncoderForClassification, EncoderForMaskedLM, EncoderModel, mean_pool
from attnlab.models.family import FamilyModel, StackView
from attnlab.models.mode import eval_mode
from attnlab.models.presets import PRESETS, preset
from attnlab.models.seq2seq import EncoderDecoder
from attnlab.models.stack import (
    DecodingCache,
    InputError,
    attention_backend,
    set_attention_backend,
)
from attnlab.nn import sinusoidal_table  # the table sinusoidal positions add (section 3.5), for the views


def build_model(config: TransformerConfig) -> FamilyModel:
    """The natural model of a config's family: MLM encoder (or classifier if ``n_classes``), LM, seq2seq."""
    if config.family == "decoder":
        return DecoderLM(config)
    if config.family == "encoder-decoder":
        return EncoderDecoder(config)
    if config.n_classes:
        return EncoderForClassification(config)
    return EncoderForMaskedLM(config)


__all__ = [
    "PRESETS",
    "ConfigError",
    "DecoderLM",
    "DecodingCache",
    "EncoderDecoder",
    "EncoderForClassification",
    "EncoderForMaskedLM",
    "EncoderModel",
    "FamilyModel",
    "InputError",
    "StackView",
    "TransformerConfig",
    "attention_backend",
    "build_model",
    "eval_mode",
    "mean_pool",
    "preset",
    "set_attention_backend",
    "sinusoidal_table",
]
