"""The parts every family shares: the embedding layer, the block stack and the decoding cache.

Encoder-only, decoder-only and encoder-decoder models are thin wrappers around these two modules;
they differ by flags (``causal``, ``cross_attend``) and output heads, not by copied code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnlab.models.config import TransformerConfig
from attnlab.nn import (
    BACKENDS,
    Block,
    HookPoint,
    LayerCache,
    LearnedPositions,
    MultiHeadAttention,
    RotaryEmbedding,
    SinusoidalPositions,
    make_norm,
    name_hook_points,
)

#: The public names of block stacks in hook names: ``decoder`` (decoder-only models and the decoder
#: of an encoder-decoder) and ``encoder`` (encoder-only models and the encoder of an encoder-decoder).
STACK_NAMES = ("encoder", "decoder")


class InputError(ValueError):
    """Model input of the wrong dtype, shape or length; the message says which and why."""


def check_token_ids(ids: Tensor, config: TransformerConfig, what: str = "input_ids") -> None:
    if not isinstance(ids, Tensor):
        raise InputError(f"{what} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise InputError(f"{what} must hold integer token ids (int64), got dtype {ids.dtype}")
    if ids.dim() != 2:
        raise InputError(f"{what} must have shape (batch, seq_len), got {tuple(ids.shape)}")
    if ids.shape[1] == 0:
        raise InputError(f"{what} is empty: give at least one token")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= config.vocab_size):
        raise InputError(
            f"{what} holds ids outside the vocabulary [0, {config.vocab_size}): "
            f"min {int(ids.min())}, max {int(ids.max())}"
        )


def check_attention_mask(mask: Tensor, batch: int, length: int, what: str = "attention_mask") -> None:
    """A ``(batch, length)`` mask of 1 (real token) and 0 (padding); anything else is an ``InputError``.

    Values are checked too: an additive mask (0 / -inf, as some libraries use) would otherwise turn
    into "attend everywhere" without a word.
    """
    if not isinstance(mask, Tensor):
        raise InputError(f"{what} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != (batch, length):
        raise InputError(f"{what} must have shape (batch, seq_len) = {(batch, length)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise InputError(f"{what} must hold 1 for real tokens and 0 for padding (or booleans)")


class Embeddings(nn.Module):
    """Token embedding plus absolute positional signal (if any); the input of a block stack.

    Hook points (named ``{stack}.embed.<point>``): ``hook_tok_embed`` ``(batch, seq, d_model)``,
    ``hook_pos_embed`` ``(batch, seq, d_model)`` (only for absolute positions, learned or sinusoidal;
    rotary positions act inside attention) and ``hook_embed`` (what enters the first block).
    """

    def __init__(self, config: TransformerConfig, token: nn.Embedding | None = None, *, stack: str) -> None:
        super().__init__()
        self.config = config
        self.token = token if token is not None else nn.Embedding(config.vocab_size, config.d_model)
        self.scale = math.sqrt(config.d_model) if config.scale_embeddings else 1.0
        self.positions: nn.Module | None = None
        if config.positions == "sinusoidal":
            self.positions = SinusoidalPositions(config.max_len, config.d_model)
        elif config.positions == "learned":
            self.positions = LearnedPositions(config.max_len, config.d_model)
        self.token_type = nn.Embedding(config.type_vocab_size, config.d_model) if config.type_vocab_size else None
        self.norm = make_norm(config.norm, config.d_model, config.norm_eps, config.norm_bias) if config.embedding_norm else None
        self.dropout = nn.Dropout(config.dropout)
        self.hook_tok_embed = HookPoint()
        if self.positions is not None:
            self.hook_pos_embed = HookPoint()
        self.hook_embed = HookPoint()
        name_hook_points(self, f"{_check_stack(stack)}.embed")

    def _check_types(self, types: Tensor, ids: Tensor) -> None:
        if self.token_type is None:
            raise InputError("token_type_ids given, but this model has no token types (type_vocab_size=0)")
        if types.shape != ids.shape or types.dtype not in (torch.int64, torch.int32):
            raise InputError(
                f"token_type_ids must be integers shaped like input_ids {tuple(ids.shape)}, "
                f"got {types.dtype} {tuple(types.shape)}"
            )
        n = self.config.type_vocab_size
        if types.numel() and (int(types.min()) < 0 or int(types.max()) >= n):
            raise InputError(f"token_type_ids must lie in [0, {n}) (type_vocab_size), got max {int(types.max())}")

    def forward(self, ids: Tensor, positions: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Ids ``(batch, seq)`` at absolute ``positions`` (``(seq,)`` or ``(batch, seq)``) ->
        ``(batch, seq, d_model)`` in the embedding's dtype.

        Raises ``InputError`` for ``token_type_ids`` the model has no table for, or of the wrong
        shape or range. (Ids and positions are checked by the model's ``forward``.)
        """
        x = self.token(ids)  # (batch, seq, d_model)
        if self.scale != 1.0:  # the 2017 model scales by sqrt(d_model) (section 3.4)
            x = x * self.scale
        x = self.hook_tok_embed(x)
        if self.positions is not None:
            pos = self.positions(positions)  # (seq, d_model) or (batch, seq, d_model)
            x = x + self.hook_pos_embed(pos.to(x.dtype).expand_as(x))
        if token_type_ids is not None:
            self._check_types(token_type_ids, ids)
        if self.token_type is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(ids)
            x = x + self.token_type(types)
        if self.norm is not None:
            x = self.norm(x)
        return self.hook_embed(self.dropout(x) if self.training else x)


def _check_stack(stack: str) -> str:
    if stack not in STACK_NAMES:
        raise ValueError(f"stack must be one of {STACK_NAMES}, got {stack!r}")
    return stack


class Stack(nn.Module):
    """``n`` identical blocks, plus the final norm a pre-norm stack needs.

    ``stack`` (``"encoder"`` or ``"decoder"``) is the first part of its hook names:
    ``{stack}.blocks.{layer}.<point>`` and ``{stack}.hook_resid_final``, the stack's output
    ``(batch, seq, d_model)`` after its final norm (the last block's output when it has none).
    """

    def __init__(self, config: TransformerConfig, n_layers: int, *, stack: str, cross_attend: bool = False) -> None:
        super().__init__()
        rotary = None
        if config.positions == "rotary":
            assert config.head_dim is not None
            rotary = RotaryEmbedding(config.head_dim, config.max_len, config.rope_theta)
        self.blocks = nn.ModuleList(
            Block(
                config.d_model, config.n_heads, config.d_ff,
                n_kv_heads=config.n_kv_heads, head_dim=config.head_dim, cross_attend=cross_attend,
                norm=config.norm, norm_eps=config.norm_eps, norm_placement=config.norm_placement,
                activation=config.activation, bias=config.bias, norm_bias=config.norm_bias, fused_qkv=config.fused_qkv,
                dropout=config.dropout, attn_dropout=config.attn_dropout, rotary=rotary,
                attn_only=config.attn_only,
            )
            for _ in range(n_layers)
        )
        self.final_norm = (make_norm(config.norm, config.d_model, config.norm_eps, config.norm_bias)
                           if config.final_norm else None)
        self.hook_resid_final = HookPoint()
        name_hook_points(self, _check_stack(stack))

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        is_causal: bool = False,
        positions: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: DecodingCache | None = None,
    ) -> Tensor:
        """Every block over ``x`` ``(batch, seq, d_model)``, then the final norm; same shape and dtype.

        The keyword arguments are ``Block.forward``'s; ``cache`` holds one ``LayerCache`` per block.
        Raises what ``MultiHeadAttention`` raises.
        """
        for i, block in enumerate(self.blocks):
            x = block(
                x, mask=mask, is_causal=is_causal, positions=positions, memory=memory,
                memory_mask=memory_mask, cache=cache.layers[i] if cache is not None else None,
            )
        return self.hook_resid_final(self.final_norm(x) if self.final_norm is not None else x)


class DecodingCache:
    """Per-layer KV caches of a decoder, for incremental decoding (one new token per step)."""

    def __init__(self, n_layers: int, max_len: int) -> None:
        self.max_len = max_len
        self.layers = [LayerCache(max_len) for _ in range(n_layers)]

    @property
    def length(self) -> int:
        """How many positions are cached (the position of the next token)."""
        return self.layers[0].self_attn.length if self.layers else 0

    def reorder(self, index: Tensor) -> None:
        for layer in self.layers:
            layer.reorder(index)


def positions_for(
    ids: Tensor,
    config: TransformerConfig,
    start: int = 0,
    *,
    attention_mask: Tensor | None = None,
    position_ids: Tensor | None = None,
) -> Tensor:
    """The absolute positions ``(batch, seq)`` (int64) of the tokens ``ids`` ``(batch, seq)``.

    ``position_ids`` given by the caller are checked and used as they are. Otherwise positions follow
    ``attention_mask`` (``(batch, start + seq)``, already checked, covering any cached tokens): each
    row's first real token is position 0 and each real token one more than the previous one, so a
    left-padded row reads its tokens at the positions they have alone (padding gets position 0; it is
    masked out anyway). Without a mask they are ``start .. start + seq - 1``, ``start`` being the
    number of cached tokens. A position past ``config.max_len - 1`` is an ``InputError``.
    """
    batch, n = ids.shape
    if position_ids is not None:
        if not isinstance(position_ids, Tensor) or position_ids.dtype not in (torch.int64, torch.int32):
            raise InputError("position_ids must be a torch.Tensor of integer positions (int64)")
        if tuple(position_ids.shape) != (batch, n):
            raise InputError(f"position_ids must have shape (batch, seq_len) = {(batch, n)}, got {tuple(position_ids.shape)}")
        if position_ids.numel() and (int(position_ids.min()) < 0 or int(position_ids.max()) >= config.max_len):
            raise InputError(
                f"position_ids must lie in [0, {config.max_len}) (max_len), got "
                f"min {int(position_ids.min())}, max {int(position_ids.max())}"
            )
        return position_ids.long()
    if attention_mask is not None:
        positions = (attention_mask.long().cumsum(-1) - 1)[:, start:].clamp(min=0)
        last = int(positions.max()) + 1 if positions.numel() else 0
        if last > config.max_len:
            raise InputError(
                f"a row holds {last} real tokens, more than the model's {config.max_len} positions "
                f"(max_len); shorten the input"
            )
        return positions
    end = start + n
    if end > config.max_len:
        raise InputError(
            f"sequence of {end} tokens is longer than the model's {config.max_len} positions "
            f"(max_len); shorten the input"
        )
    return torch.arange(start, end, device=ids.device).expand(batch, n)


def set_attention_backend(model: nn.Module, backend: str) -> None:
    """Switch every attention layer of ``model`` to ``math`` (weights visible) or ``sdpa`` (fused)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.backend = backend  # type: ignore[assignment]


def attention_backend(model: nn.Module) -> str:
    """The backend of the model's attention layers (they are switched together)."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            return module.backend
    raise ValueError("model has no attention layers")
