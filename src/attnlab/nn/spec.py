"""What a Transformer layer reads from a model's configuration.

``attnlab.models.TransformerConfig`` is the one configuration type, but it lives a floor above ``nn/``
(``nn/`` never imports ``models/``). So the layers name the fields they read in a ``Protocol``, with
the config's own names, and take the config itself: ``Block(config)``, as torchtitan's blocks take
their model args. ``TransformerConfig`` satisfies it as it is (nothing to convert, no second list of
fields to keep in step); any object with these attributes does too.
"""

from __future__ import annotations

from typing import Literal, Protocol

Activation = Literal["relu", "gelu", "gelu_tanh", "swiglu"]
NormKind = Literal["layernorm", "rmsnorm"]
NormPlacement = Literal["pre", "post"]


class LayerConfig(Protocol):
    """The fields of ``TransformerConfig`` that ``Block``, ``MultiHeadAttention.from_config``,
    ``FeedForward.from_config`` and ``norm_for`` read (see ``TransformerConfig`` for their meaning)."""

    d_model: int
    n_heads: int
    n_kv_heads: int | None  # None: as many as n_heads
    head_dim: int | None  # None: d_model // n_heads
    d_ff: int
    norm: NormKind
    norm_eps: float
    norm_bias: bool | None  # None: a LayerNorm has a bias, an RMSNorm none
    norm_placement: NormPlacement
    activation: Activation
    bias: bool
    fused_qkv: bool
    dropout: float  # on each sub-layer's output, before the residual addition
    attn_dropout: float  # on the attention weights
    attn_only: bool  # no feed-forward sub-layer (attention-only models, Elhage et al. 2021)
