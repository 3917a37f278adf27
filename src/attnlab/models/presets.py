"""Named configurations, as plain functions (read them like a table).

Each returns a fresh ``TransformerConfig``; change fields with ``config.replace(...)``.
"""

from __future__ import annotations

from collections.abc import Callable

from attnlab.models.config import TransformerConfig


def transformer_base_2017(vocab_size: int = 37000) -> TransformerConfig:
    """The base model of Vaswani et al. 2017 (Table 3): 6+6 layers, d_model 512, 8 heads, d_ff 2048.

    Post-norm, ReLU, sinusoidal positions, embeddings scaled by sqrt(d_model) and shared between
    encoder, decoder and output layer; dropout 0.1. 37,000 is the paper's shared BPE vocabulary.
    """
    return TransformerConfig(
        name="transformer-base-2017", family="encoder-decoder", vocab_size=vocab_size, d_model=512,
        n_heads=8, n_layers=6, n_decoder_layers=6, d_ff=2048, max_len=512, positions="sinusoidal",
        norm="layernorm", norm_eps=1e-6, norm_placement="post", activation="relu", dropout=0.1,
        tie_embeddings=True, scale_embeddings=True,
    )


def transformer_small_2017(vocab_size: int = 8000) -> TransformerConfig:
    """The 2017 architecture scaled to train on a 2-core CPU in under an hour (the bundled translator).

    Everything but the size is the base model's: post-norm, ReLU, sinusoidal positions, one shared
    embedding matrix scaled by sqrt(d_model). 3+3 layers of width 256 with 4 heads of 64 and
    d_ff = 4 x d_model; dropout 0.1.
    """
    return transformer_base_2017(vocab_size).replace(
        name="transformer-small-2017", d_model=256, n_heads=4, n_layers=3, n_decoder_layers=3, d_ff=1024, max_len=128,
    )


def bert_tiny(vocab_size: int = 30522) -> TransformerConfig:
    """BERT-Tiny (Turc et al. 2019): 2 layers, width 128, 2 heads; BERT's post-norm layout."""
    return TransformerConfig(
        name="bert-tiny", family="encoder", vocab_size=vocab_size, d_model=128, n_heads=2, n_layers=2,
        d_ff=512, max_len=512, positions="learned", norm="layernorm", norm_eps=1e-12,
        norm_placement="post", embedding_norm=True, activation="gelu", type_vocab_size=2,
        dropout=0.1, pad_token_id=0,
    )


def gpt2_small(vocab_size: int = 50257) -> TransformerConfig:
    """GPT-2 small (Radford et al. 2019): 12 layers, width 768, 12 heads, 1,024 positions."""
    return TransformerConfig(
        name="gpt2-small", family="decoder", vocab_size=vocab_size, d_model=768, n_heads=12, n_layers=12,
        d_ff=3072, max_len=1024, positions="learned", norm="layernorm", norm_eps=1e-5,
        norm_placement="pre", activation="gelu_tanh", fused_qkv=True, dropout=0.1, tie_embeddings=True,
    )


def llama_tiny(vocab_size: int = 32000) -> TransformerConfig:
    """A small Llama-style decoder: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases."""
    return TransformerConfig(
        name="llama-tiny", family="decoder", vocab_size=vocab_size, d_model=256, n_heads=8, n_kv_heads=2,
        n_layers=4, d_ff=688, max_len=1024, positions="rotary", rope_theta=10000.0, norm="rmsnorm",
        norm_eps=1e-5, norm_placement="pre", activation="swiglu", bias=False, tie_embeddings=False,
    )


def shakespeare_char(vocab_size: int = 65) -> TransformerConfig:
    """The character-level Shakespeare model: 4 layers, 4 heads, width 128, 64-character context.

    The shape of nanoGPT's CPU recipe (no dropout), which trains in minutes on a laptop.
    """
    return TransformerConfig(
        name="shakespeare-char", family="decoder", vocab_size=vocab_size, d_model=128, n_heads=4,
        n_layers=4, d_ff=512, max_len=64, positions="learned", norm="layernorm", norm_placement="pre",
        activation="gelu", bias=False, fused_qkv=True, dropout=0.0, tie_embeddings=True,
    )


PRESETS: dict[str, Callable[..., TransformerConfig]] = {
    "transformer-base-2017": transformer_base_2017,
    "transformer-small-2017": transformer_small_2017,
    "bert-tiny": bert_tiny,
    "gpt2-small": gpt2_small,
    "llama-tiny": llama_tiny,
    "shakespeare-char": shakespeare_char,
}


def preset(name: str, **kwargs: int) -> TransformerConfig:
    """Look a preset up by name; an unknown name lists the known ones."""
    try:
        return PRESETS[name](**kwargs)
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
