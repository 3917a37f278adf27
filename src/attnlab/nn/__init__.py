"""Floor 1: pure building blocks (no I/O). Everything above is assembled from these."""

from attnlab.nn.attention import (
    BACKENDS,
    AttentionBackendError,
    KVCache,
    MultiHeadAttention,
    StaticKV,
    attention,
    causal_mask,
    combine_masks,
    padding_mask,
)
from attnlab.nn.hooks import HookPoint, name_hook_points
from attnlab.nn.layers import (
    PLAIN_ACTIVATIONS,
    Block,
    FeedForward,
    LayerCache,
    RMSNorm,
    activate,
    make_norm,
    norm_for,
)
from attnlab.nn.positions import LearnedPositions, RotaryEmbedding, SinusoidalPositions, sinusoidal_table
from attnlab.nn.spec import LayerConfig

__all__ = [
    "BACKENDS",
    "PLAIN_ACTIVATIONS",
    "AttentionBackendError",
    "Block",
    "FeedForward",
    "HookPoint",
    "KVCache",
    "LayerCache",
    "LayerConfig",
    "LearnedPositions",
    "MultiHeadAttention",
    "RMSNorm",
    "RotaryEmbedding",
    "SinusoidalPositions",
    "StaticKV",
    "activate",
    "attention",
    "causal_mask",
    "combine_masks",
    "make_norm",
    "name_hook_points",
    "norm_for",
    "padding_mask",
    "sinusoidal_table",
]
