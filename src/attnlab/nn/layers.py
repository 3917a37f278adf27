"""Normalisation, the position-wise feed-forward network, and the Transformer block.

A block is: (masked) self-attention, optionally cross-attention to an encoder, then a feed-forward
network; each sub-layer wrapped in a residual connection and a normalisation. The 2017 paper
normalises *after* adding the residual ("post-norm", section 3.1: LayerNorm(x + Sublayer(x))); GPT-2
and nearly every model since normalise the sub-layer's *input* ("pre-norm": x + Sublayer(Norm(x))),
which keeps an unnormalised residual stream and trains deep stacks without warmup tricks.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.nn.attention import KVCache, MultiHeadAttention, StaticKV
from attnlab.nn.hooks import HookPoint
from attnlab.nn.positions import RotaryEmbedding

Activation = Literal["relu", "gelu", "gelu_tanh", "swiglu"]
NormKind = Literal["layernorm", "rmsnorm"]
NormPlacement = Literal["pre", "post"]


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


class FeedForward(nn.Module):
    """Position-wise feed-forward network (section 3.3): the same two-layer MLP at every position.

    ``swiglu`` (Shazeer 2020, used by Llama) gates the hidden layer: ``W2(silu(W1 x) * W3 x)``.
    Hook points: ``hook_hidden`` (after the non-linearity, ``(batch, seq, d_ff)``) and ``hook_out``.
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
        self.hook_hidden = HookPoint()
        self.hook_out = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, seq, d_model)`` -> ``(batch, seq, d_model)``, x's dtype, each position alone."""
        h = F.silu(self.gate(x)) * self.up(x) if self.gate is not None else activate(self.up(x), self.activation)
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
    """One Transformer layer. Encoder, decoder and encoder-decoder stacks are lists of these.

    Hook points: ``hook_resid_pre`` (input), ``hook_resid_mid`` (after attention, before the
    feed-forward network) and ``hook_resid_post`` (output), each ``(batch, seq, d_model)``, besides
    those of ``attn``, ``cross_attn`` and ``ff``. ``attn_only=True`` leaves out the feed-forward
    sub-layer (``ff`` and ``ff_norm`` are ``None``; ``hook_resid_post`` then equals ``hook_resid_mid``).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        cross_attend: bool = False,
        norm: NormKind = "layernorm",
        norm_eps: float = 1e-5,
        norm_placement: NormPlacement = "pre",
        activation: Activation = "gelu",
        bias: bool = True,
        norm_bias: bool | None = None,
        fused_qkv: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        rotary: RotaryEmbedding | None = None,
        attn_only: bool = False,
    ) -> None:
        super().__init__()
        if norm_placement not in ("pre", "post"):
            raise ValueError(f"norm_placement must be 'pre' or 'post', got {norm_placement!r}")
        self.pre_norm = norm_placement == "pre"
        self.hook_resid_pre = HookPoint()
        self.attn = MultiHeadAttention(
            d_model, n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim, bias=bias,
            fused_qkv=fused_qkv, dropout=attn_dropout, rotary=rotary,
        )
        self.attn_norm = make_norm(norm, d_model, norm_eps, norm_bias)
        self.cross_attn: MultiHeadAttention | None = None
        self.cross_norm: nn.Module | None = None
        if cross_attend:
            self.cross_attn = MultiHeadAttention(
                d_model, n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim, bias=bias,
                cross=True, dropout=attn_dropout,
            )
            self.cross_norm = make_norm(norm, d_model, norm_eps, norm_bias)
        self.hook_resid_mid = HookPoint()
        self.ff: FeedForward | None = None if attn_only else FeedForward(d_model, d_ff, activation=activation, bias=bias)
        self.ff_norm: nn.Module | None = None if attn_only else make_norm(norm, d_model, norm_eps, norm_bias)
        self.dropout = nn.Dropout(dropout)
        self.hook_resid_post = HookPoint()

    def _sublayer(self, x: Tensor, norm: nn.Module, fn) -> Tensor:
        if self.pre_norm:
            out = fn(norm(x))
            return x + (self.dropout(out) if self.training else out)
        out = fn(x)
        return norm(x + (self.dropout(out) if self.training else out))

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
        x = self.hook_resid_pre(x)
        x = self._sublayer(
            x, self.attn_norm,
            lambda h: self.attn(h, mask=mask, is_causal=is_causal, positions=positions,
                                cache=cache.self_attn if cache is not None else None),
        )
        if self.cross_attn is not None:
            assert self.cross_norm is not None
            cross = self.cross_attn
            x = self._sublayer(
                x, self.cross_norm,
                lambda h: cross(h, memory=memory, mask=memory_mask,
                                cache=cache.cross_attn if cache is not None else None),
            )
        x = self.hook_resid_mid(x)
        if self.ff is not None:
            assert self.ff_norm is not None
            x = self._sublayer(x, self.ff_norm, self.ff)
        return self.hook_resid_post(x)
