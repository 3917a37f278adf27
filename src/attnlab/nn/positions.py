"""Positional information: sinusoidal, learned absolute and rotary.

Attention itself is blind to order: permute the tokens and the outputs are permuted the same way.
Positional information breaks that symmetry. The 2017 paper adds a fixed sinusoidal signal to the
embeddings (section 3.5); BERT and GPT-2 learn one vector per position; RoPE (Su et al. 2021) rotates
queries and keys so that their dot product depends on the *relative* distance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)); ``(max_len, d)``.

    Each pair of dimensions is a clock of its own frequency, from one turn every 2*pi positions to
    one every 10000*2*pi, so a fixed offset is a fixed rotation (the paper's argument for relative
    positions being easy to learn).
    """
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal signal, added to the token embeddings."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, d_model), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """The vectors of integer ``positions`` (any shape ``S``): ``S + (d_model,)``, float32."""
        return self.table[positions]


class LearnedPositions(nn.Module):
    """One trained vector per absolute position (BERT, GPT-2)."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, positions: Tensor) -> Tensor:
        """The vectors of integer ``positions`` (any shape ``S``): ``S + (d_model,)``, the table's dtype."""
        return self.embedding(positions)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding applied to queries and keys inside attention.

    Uses the "rotate half" pairing (dimension ``i`` with ``i + d/2``), the layout of GPT-NeoX, Llama
    and Hugging Face checkpoints.
    """

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
        self.half = head_dim // 2
        # Rotating pair (i, i + d/2) by angle a: (x_i cos a - x_{i+d/2} sin a, x_{i+d/2} cos a + x_i sin a).
        # With the two halves swapped (a flip of a (2, d/2) view, no copy in the graph) the minus sign
        # lives in ``sin``'s first half, so the rotation is two products and a sum.
        self.register_buffer("cos", torch.cat([angles.cos(), angles.cos()], dim=-1), persistent=False)
        self.register_buffer("sin", torch.cat([-angles.sin(), angles.sin()], dim=-1), persistent=False)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x`` ``(batch, heads, seq, head_dim)`` by the angles of ``positions``.

        ``positions`` is ``(seq,)`` (the same for every row) or ``(batch, seq)`` (each row its own, e.g.
        left-padded rows whose first real token is position 0). Returns ``x``'s shape and dtype.
        """
        if positions.dim() == 2 and positions.stride(0) == 0:  # one row expanded: the same for every row
            positions = positions[0]
        cos = self.cos[positions].to(x.dtype)  # (seq, head_dim) or (batch, seq, head_dim)
        sin = self.sin[positions].to(x.dtype)
        if positions.dim() == 2:  # one angle per row and position, shared by the heads
            cos, sin = cos[:, None], sin[:, None]
        swapped = x.unflatten(-1, (2, self.half)).flip(-2).flatten(-2)  # (x_{d/2..d}, x_{0..d/2})
        return x * cos + swapped * sin
