"""Scaled dot-product attention, masks and multi-head attention.

The one attention function of attnlab lives here (Vaswani et al. 2017, section 3.2.1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

It has two backends. ``math`` spells the formula out and returns the attention weights, which is
what a learner wants to look at. ``sdpa`` calls PyTorch's fused kernel, which is faster and uses far
less memory but never materialises the weights. Asking ``sdpa`` for weights is an error: a silent
fallback would hide a large, surprising slowdown, and a silent ``None`` would hide a bug.

Masks are boolean tensors where ``True`` means "this query may attend to this key"; they broadcast
to ``(batch, heads, q_len, k_len)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.nn.hooks import HookPoint
from attnlab.nn.positions import RotaryEmbedding
from attnlab.nn.spec import LayerConfig

Backend = Literal["math", "sdpa"]
BACKENDS: tuple[str, ...] = ("math", "sdpa")


class AttentionBackendError(RuntimeError):
    """Raised when a backend is asked for something it cannot give (weights from ``sdpa``)."""


def padding_mask(attention_mask: Tensor) -> Tensor:
    """Turn a ``(batch, k_len)`` 1/0 mask of real/padding tokens into ``(batch, 1, 1, k_len)`` bools.

    Padding keys are hidden from every query, so padding never changes the outputs of real tokens.
    """
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must have shape (batch, seq_len), got {tuple(attention_mask.shape)}"
        )
    return attention_mask.bool()[:, None, None, :]


def causal_mask(q_len: int, k_len: int, device: torch.device | None = None) -> Tensor:
    """The look-ahead mask of a decoder, ``(1, 1, q_len, k_len)``.

    The queries are the *last* ``q_len`` positions of the ``k_len`` keys (with a KV cache the earlier
    keys come from the cache), so query ``i`` sees keys ``0 .. k_len - q_len + i``.
    """
    offset = k_len - q_len
    if offset < 0:
        raise ValueError(f"causal mask needs k_len >= q_len, got q_len={q_len}, k_len={k_len}")
    q_pos = torch.arange(q_len, device=device)[:, None] + offset
    k_pos = torch.arange(k_len, device=device)[None, :]
    return (k_pos <= q_pos)[None, None]


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of the given masks (``None`` means "no restriction")."""
    result: Tensor | None = None
    for m in masks:
        if m is None:
            continue
        result = m if result is None else (result & m)
    return result


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    backend: Backend = "sdpa",
    need_weights: bool = False,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    score_hook: nn.Module | None = None,
    weight_hook: nn.Module | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention over heads.

    Shapes: ``q`` is ``(batch, heads, q_len, d_k)``; ``k`` and ``v`` are ``(batch, kv_heads, k_len,
    d_k)``, where ``kv_heads`` divides ``heads`` (grouped-query attention shares each key/value head
    among ``heads // kv_heads`` query heads). ``is_causal`` adds the look-ahead mask.

    Returns ``(out, weights)``: ``out`` is ``(batch, heads, q_len, d_k)``; ``weights`` is
    ``(batch, heads, q_len, k_len)`` from the ``math`` backend and ``None`` from ``sdpa``.

    Raises ``ValueError`` for an unknown backend or wrong shapes, and ``AttentionBackendError`` when
    ``sdpa`` is asked for weights or given score/weight hooks.
    """
    _check_inputs(q, k, v, backend)
    if backend == "sdpa":
        wants_weights = need_weights or score_hook is not None or weight_hook is not None
        out = fused_attention(q, k, v, mask, is_causal=is_causal, dropout_p=dropout_p, wants_weights=wants_weights)
        return out, None

    # The formula, step by step (section 3.2.1).
    if is_causal:
        mask = combine_masks(mask, causal_mask(q.shape[2], k.shape[2], q.device))
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads != kv_heads:
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (batch, heads, q_len, k_len)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if score_hook is not None:
        scores = score_hook(scores)
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        # A query that may see no key at all (e.g. a fully padded row) gets zero weights, not NaN.
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    if weight_hook is not None:
        weights = weight_hook(weights)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, backend: str) -> None:
    """``ValueError`` for an unknown backend, tensors that are not 4-D, or query heads that are not a
    multiple of the key/value heads."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "attention expects 4-D (batch, heads, seq, d_k) tensors, got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads % kv_heads != 0:
        raise ValueError(f"query heads ({heads}) must be a multiple of key/value heads ({kv_heads})")


def fused_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    wants_weights: bool = False,
) -> Tensor:
    """``attention``'s ``sdpa`` backend: PyTorch's fused kernel, with the rules for using it.

    Same shapes as ``attention``; returns ``out`` ``(batch, heads, q_len, d_k)`` only. The rules:

    - it never materialises the weights, so ``wants_weights`` (weights asked for, or score/weight
      hooks given) is an ``AttentionBackendError``, never a silent fallback to the math backend;
    - the kernel's own causal flag (top-left aligned) is the fast path, and it is only right when
      queries and keys cover the same positions and no other mask applies; otherwise the look-ahead
      mask is built and combined with ``mask`` (a single query, the usual decoding step, sees every
      cached key and needs none);
    - ``dropout_p`` is applied to the weights inside the kernel (pass 0 in eval mode);
    - grouped-query attention is the kernel's ``enable_gqa``, no repeated keys.
    """
    if wants_weights:
        raise AttentionBackendError(
            "the 'sdpa' backend is fused and does not compute attention weights; "
            "use backend='math' (attnlab.inspect selects it for you)"
        )
    # (An `if`, not `fast_causal = ... and q.shape[2] == k.shape[2]`: under torch.compile with a
    # dynamic cache length that comparison is symbolic, and the kernel's flag must be a bool.)
    fast_causal = False
    if is_causal and mask is None and q.shape[2] == k.shape[2]:
        fast_causal = True
    if is_causal and not fast_causal and q.shape[2] > 1:
        mask = combine_masks(mask, causal_mask(q.shape[2], k.shape[2], q.device))
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=fast_causal, enable_gqa=q.shape[1] != k.shape[1],
    )


class KVCache:
    """Keys and values of one attention layer, kept across decoding steps.

    The buffer is allocated once for ``max_len`` positions and filled in place, so a decoding step
    costs one small copy instead of re-concatenating the whole history.
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.length = 0
        self._k: Tensor | None = None
        self._v: Tensor | None = None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``(batch, kv_heads, new, d_k)`` keys/values; return everything cached so far."""
        new = k.shape[2]
        if self.length + new > self.max_len:
            raise ValueError(
                f"KV cache is full: {self.length} cached + {new} new > max_len {self.max_len}"
            )
        if self._k is None:
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            self._k = k.new_empty(shape)
            self._v = v.new_empty(shape)
        assert self._v is not None
        if k.shape[:2] != self._k.shape[:2] or k.shape[3] != self._k.shape[3]:
            raise ValueError(
                f"KV cache holds (batch, kv_heads, d_k) = {(self._k.shape[0], self._k.shape[1], self._k.shape[3])}, "
                f"got {(k.shape[0], k.shape[1], k.shape[3])}; start a new cache for another batch"
            )
        self._k.narrow(2, self.length, new).copy_(k)
        self._v.narrow(2, self.length, new).copy_(v)
        self.length += new
        return self._k.narrow(2, 0, self.length), self._v.narrow(2, 0, self.length)

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search keeps the surviving beams)."""
        if self._k is not None and self._v is not None:
            self._k = self._k.index_select(0, index)
            self._v = self._v.index_select(0, index)


class StaticKV:
    """Keys and values computed once and reused at every step (cross-attention on the encoder)."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def reorder(self, index: Tensor) -> None:
        if self.k is not None and self.v is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Multi-head attention (section 3.2.2): ``h`` heads attend in parallel in ``d_k``-wide subspaces.

    One module covers self-attention (keys from the same sequence), cross-attention (keys and values
    from the encoder output ``memory``), grouped-query / multi-query attention (``n_kv_heads <
    n_heads``) and rotary positions. Q, K and V come from one fused projection (one matmul, faster)
    or three separate ones (the layout of BERT and Llama checkpoints).

    Hook points (see ``attnlab.inspect``), for this call's tokens: ``hook_q`` ``(batch, heads, q_len,
    d_k)``, ``hook_k`` and ``hook_v`` ``(batch, kv_heads, seq, d_k)`` (``seq`` is ``q_len`` for
    self-attention, the source length for cross-attention), before rotation; with rotary positions
    also ``hook_rot_q`` and ``hook_rot_k`` after it (as TransformerLens names them); ``hook_scores``
    (pre-softmax, masked) and ``hook_weights`` ``(batch, heads, q_len, k_len)``, where ``k_len``
    counts the cached keys too; ``hook_z`` per-head outputs ``(batch, heads, q_len, d_k)``;
    ``hook_out`` after W_O ``(batch, q_len, d_model)``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        bias: bool = True,
        fused_qkv: bool = False,
        cross: bool = False,
        dropout: float = 0.0,
        rotary: RotaryEmbedding | None = None,
        backend: Backend = "sdpa",
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.head_dim = head_dim or d_model // n_heads
        self.cross = cross
        self.dropout = dropout
        self.rotary = rotary
        self.backend: Backend = backend
        if n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if fused_qkv and cross:
            raise ValueError("cross-attention takes queries and keys from different inputs; use fused_qkv=False")
        q_dim, kv_dim = n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv_proj = nn.Linear(d_model, q_dim + 2 * kv_dim, bias=bias)
        else:
            self.q_proj = nn.Linear(d_model, q_dim, bias=bias)
            self.k_proj = nn.Linear(d_model, kv_dim, bias=bias)
            self.v_proj = nn.Linear(d_model, kv_dim, bias=bias)
        self.out_proj = nn.Linear(q_dim, d_model, bias=bias)
        points = ("q", "k", "v") + (("rot_q", "rot_k") if rotary is not None and not cross else ()) + (
            "scores", "weights", "z", "out")
        for name in points:  # in the order the forward pass reaches them
            setattr(self, f"hook_{name}", HookPoint())

    @classmethod
    def from_config(
        cls, config: LayerConfig, *, cross: bool = False, rotary: RotaryEmbedding | None = None
    ) -> MultiHeadAttention:
        """The self-attention (or, with ``cross``, the cross-attention) of a block of ``config``:
        its widths, heads, biases and ``attn_dropout``; a cross-attention layer never fuses Q/K/V."""
        return cls(
            config.d_model, config.n_heads, n_kv_heads=config.n_kv_heads, head_dim=config.head_dim,
            bias=config.bias, fused_qkv=config.fused_qkv and not cross, cross=cross,
            dropout=config.attn_dropout, rotary=rotary,
        )

    def _split(self, x: Tensor, heads: int) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, heads, self.head_dim).transpose(1, 2)  # (batch, heads, seq, d_k)

    def _project_kv(self, source: Tensor) -> tuple[Tensor, Tensor]:
        return self._split(self.k_proj(source), self.n_kv_heads), self._split(self.v_proj(source), self.n_kv_heads)

    def forward(
        self,
        x: Tensor,
        *,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        is_causal: bool = False,
        positions: Tensor | None = None,
        cache: KVCache | StaticKV | None = None,
    ) -> Tensor:
        """Attend from ``x`` ``(batch, q_len, d_model)``; returns ``(batch, q_len, d_model)``, x's dtype.

        ``memory`` ``(batch, src_len, d_model)`` is the encoder output (cross-attention only); ``mask``
        is boolean, broadcastable to ``(batch, heads, q_len, k_len)``, ``True`` where a query may see a
        key. ``positions`` are the absolute positions of ``x``'s tokens for rotary attention, ``(q_len,)``
        shared by every row or ``(batch, q_len)`` (left-padded rows start later); default
        ``0 .. q_len - 1``. ``cache`` keeps keys and values between decoding steps.

        Raises ``ValueError`` when cross-attention has no ``memory`` or the cache is full or holds
        another batch, and ``AttentionBackendError`` when the ``sdpa`` backend's scores or weights are
        hooked (they are never computed).
        """
        if self.fused_qkv:
            q, k, v = self.qkv_proj(x).split(
                [self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim, self.n_kv_heads * self.head_dim],
                dim=-1,
            )
            q, k, v = self._split(q, self.n_heads), self._split(k, self.n_kv_heads), self._split(v, self.n_kv_heads)
        else:
            q = self._split(self.q_proj(x), self.n_heads)
            if self.cross:
                if memory is None:
                    raise ValueError("cross-attention needs the encoder output (memory)")
                if isinstance(cache, StaticKV):
                    if cache.k is None:
                        cache.k, cache.v = self._project_kv(memory)
                    k, v = cache.k, cache.v
                else:
                    k, v = self._project_kv(memory)
            else:
                k, v = self._project_kv(x)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        if self.rotary is not None and not self.cross:
            if positions is None:
                positions = torch.arange(x.shape[1], device=x.device)
            q = self.hook_rot_q(self.rotary(q, positions))
            k = self.hook_rot_k(self.rotary(k, positions))
        if isinstance(cache, KVCache):
            k, v = cache.update(k, v)

        # The math backend always feeds the score/weight hook points. For sdpa they are passed only
        # when someone watches them, so that attention() refuses instead of silently never calling them.
        watch = self.backend == "math" or self.hook_scores.watched or self.hook_weights.watched
        z, _ = attention(
            q,
            k,
            v,
            mask,
            backend=self.backend,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            score_hook=self.hook_scores if watch else None,
            weight_hook=self.hook_weights if watch else None,
        )
        z = self.hook_z(z)  # (batch, heads, q_len, d_k)
        b, _, n, _ = z.shape
        return self.hook_out(self.out_proj(z.transpose(1, 2).reshape(b, n, self.n_heads * self.head_dim)))
