"""Normalisation, the position-wise feed-forward network, and the Transformer block.

A block is: (masked) self-attention, optionally cross-attention to an encoder, then a feed-forward
network; each sub-layer wrapped in a residual connection and a normalisation. The 2017 paper
normalises *after* adding the residual ("post-norm", section 3.1: LayerNorm(x + Sublayer(x))); GPT-2
and nearly every model since normalise the sub-layer's *input* ("pre-norm": x + Sublayer(Norm(x))),
which keeps an unnormalised residual stream and trains deep stacks without warmup tricks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.nn.attention import KVCache, MultiHeadAttention, StaticKV
from attnlab.nn.hooks import HookPoint
from attnlab.nn.positions import RotaryEmbedding
from attnlab.nn.spec import Activation, LayerConfig, NormKind


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich 2019): rescale, no re-centring, no bias."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """``x / rms(x) * weight`` over the last dimension; any shape ``(..., dim)``, x's dtype."""
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


#: The activations that are a function of one tensor (``swiglu`` gates one projection with another).
PLAIN_ACTIVATIONS = ("relu", "gelu", "gelu_tanh")


def activate(x: Tensor, activation: Activation) -> Tensor:
    """The non-linearity of the feed-forward layer and of BERT's MLM head, on one tensor of any shape
    (x's dtype): ``relu``, ``gelu`` (exact, with erf) or ``gelu_tanh`` (GPT-2's tanh approximation).

    ``swiglu`` is not a function of one tensor (``silu(x W_gate) * x W_up`` needs two projections):
    ``ValueError``, as for an unknown name.
    """
    if activation == "relu":
        return F.relu(x)
    if activation in ("gelu", "gelu_tanh"):
        return F.gelu(x, approximate="tanh" if activation == "gelu_tanh" else "none")
    raise ValueError(f"activation {activation!r} is not a function of one tensor; choose one of {PLAIN_ACTIVATIONS}")


def make_norm(kind: NormKind, dim: int, eps: float, bias: bool | None = None) -> nn.Module:
    """A LayerNorm (with a bias unless ``bias=False``) or an RMSNorm (which has none: ``bias=True``
    is a ``ValueError``, never silently dropped) over the last ``dim`` features."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias is not False)
    if kind == "rmsnorm":
        if bias:
            raise ValueError("an RMSNorm has no bias: norm_bias=True needs norm='layernorm'")
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; choose 'layernorm' or 'rmsnorm'")


def norm_for(config: LayerConfig) -> nn.Module:
    """The norm of ``config`` (kind, ``eps``, bias) over its ``d_model`` features: ``make_norm`` of the
    config's fields, for every norm of a model (in each block, after the embeddings, after the stack)."""
    return make_norm(config.norm, config.d_model, config.norm_eps, config.norm_bias)


class FeedForward(nn.Module):
    """Position-wise feed-forward network (section 3.3): the same two-layer MLP at every position.

    ``swiglu`` (Shazeer 2020, used by Llama) gates the hidden layer: ``W2(silu(W1 x) * W3 x)``.
    Hook points: ``hook_pre`` (what enters the non-linearity: ``W1 x``, for ``swiglu`` the gate's ``W1 x``,
    ``(batch, seq, d_ff)``), ``hook_hidden`` (after the non-linearity, ``(batch, seq, d_ff)``) and ``hook_out``.
    """

    def __init__(self, d_model: int, d_ff: int, *, activation: Activation = "relu", bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if activation not in ("relu", "gelu", "gelu_tanh", "swiglu"):
            raise ValueError(f"unknown activation {activation!r}")
        self.activation = activation
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if activation == "swiglu" else None
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.hook_pre = HookPoint()
        self.hook_hidden = HookPoint()
        self.hook_out = HookPoint()

    @classmethod
    def from_config(cls, config: LayerConfig) -> FeedForward:
        """The feed-forward layer of a block of ``config`` (``d_model`` -> ``d_ff`` -> ``d_model``, its
        activation and biases). Its hidden layer has no dropout: the block drops the sub-layer's output
        (``config.dropout``) before the residual addition, as GPT-2 does."""
        return cls(config.d_model, config.d_ff, activation=config.activation, bias=config.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, seq, d_model)`` -> ``(batch, seq, d_model)``, x's dtype, each position alone."""
        if self.gate is not None:
            h = F.silu(self.hook_pre(self.gate(x))) * self.up(x)
        else:
            h = activate(self.hook_pre(self.up(x)), self.activation)
        h = self.hook_hidden(h)  # (batch, seq, d_ff)
        if self.training:  # dropout is the identity in eval mode; skipping the call is exact
            h = self.dropout(h)
        return self.hook_out(self.down(h))


class LayerCache:
    """What one block keeps between decoding steps: its self-attention KV and the encoder's K/V."""

    def __init__(self, max_len: int) -> None:
        self.self_attn = KVCache(max_len)
        self.cross_attn = StaticKV()

    def reorder(self, index: Tensor) -> None:
        self.self_attn.reorder(index)
        self.cross_attn.reorder(index)


class Block(nn.Module):
    """One Transformer layer, built from the model's config. Encoder, decoder and encoder-decoder
    stacks are lists of these.

    ``config`` is any ``LayerConfig`` (``attnlab.models.TransformerConfig`` is one): its widths, heads,
    norm (kind, placement, ``eps``, bias), activation, biases, fused Q/K/V and dropouts. A decoder
    block of an encoder-decoder has ``cross_attend``; ``rotary`` is the stack's one rotary table.

    Hook points: ``hook_resid_pre`` (input), ``hook_resid_mid`` (after attention, before the
    feed-forward network) and ``hook_resid_post`` (output), each ``(batch, seq, d_model)``, besides
    those of ``attn``, ``cross_attn`` and ``ff``. ``attn_only=True`` leaves out the feed-forward
    sub-layer (``ff`` and ``ff_norm`` are ``None``; ``hook_resid_post`` then equals ``hook_resid_mid``).
    """

    def __init__(
        self, config: LayerConfig, *, cross_attend: bool = False, rotary: RotaryEmbedding | None = None
    ) -> None:
        super().__init__()
        if config.norm_placement not in ("pre", "post"):
            raise ValueError(f"norm_placement must be 'pre' or 'post', got {config.norm_placement!r}")
        self.pre_norm = config.norm_placement == "pre"
        self.hook_resid_pre = HookPoint()
        self.attn = MultiHeadAttention.from_config(config, rotary=rotary)
        self.attn_norm = norm_for(config)
        self.cross_attn = MultiHeadAttention.from_config(config, cross=True) if cross_attend else None
        self.cross_norm = norm_for(config) if cross_attend else None
        self.hook_resid_mid = HookPoint()
        self.ff = None if config.attn_only else FeedForward.from_config(config)  # attention-only: no MLP
        self.ff_norm = None if config.attn_only else norm_for(config)
        self.dropout = nn.Dropout(config.dropout)
        self.hook_resid_post = HookPoint()

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        is_causal: bool = False,
        positions: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """One layer over ``x`` ``(batch, seq, d_model)``; returns the same shape and dtype.

        ``mask`` (boolean, ``True`` = may attend) and ``is_causal`` restrict self-attention;
        ``positions`` ``(seq,)`` or ``(batch, seq)`` feed rotary attention; ``memory``
        ``(batch, src_len, d_model)`` and ``memory_mask`` feed cross-attention; ``cache`` keeps this
        layer's keys and values between decoding steps. Raises what ``MultiHeadAttention`` raises.
        """
        self_kv, cross_kv = (cache.self_attn, cache.cross_attn) if cache is not None else (None, None)
        attend = {"mask": mask, "is_causal": is_causal, "positions": positions, "cache": self_kv}
        attend_memory = {"memory": memory, "mask": memory_mask, "cache": cross_kv}
        x = self.hook_resid_pre(x)
        if self.pre_norm:  # x + Sublayer(Norm(x)): GPT-2, Llama and most models since
            x = x + self._drop(self.attn(self.attn_norm(x), **attend))
            if self.cross_attn is not None:
                x = x + self._drop(self.cross_attn(self.cross_norm(x), **attend_memory))
            x = self.hook_resid_mid(x)
            if self.ff is not None:
                x = x + self._drop(self.ff(self.ff_norm(x)))
        else:  # Norm(x + Sublayer(x)): the 2017 paper (section 3.1) and BERT
            x = self.attn_norm(x + self._drop(self.attn(x, **attend)))
            if self.cross_attn is not None:
                x = self.cross_norm(x + self._drop(self.cross_attn(x, **attend_memory)))
            x = self.hook_resid_mid(x)
            if self.ff is not None:
                x = self.ff_norm(x + self._drop(self.ff(x)))
        return self.hook_resid_post(x)

    def _drop(self, out: Tensor) -> Tensor:
        """Dropout on a sub-layer's output; in eval mode it is the identity, and skipping the call is exact."""
        return self.dropout(out) if self.training else out
