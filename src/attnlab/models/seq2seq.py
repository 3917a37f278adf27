"""The encoder-decoder of "Attention Is All You Need" (Vaswani et al. 2017), built for translation.

The encoder reads the whole source sentence; the decoder writes the target one token at a time,
attending causally to what it has written and, through cross-attention, to every source position
(queries from the decoder, keys and values from the encoder output). Section 3.4: one embedding
matrix is shared by the source, the target and the output projection (with a shared vocabulary).
"""

from __future__ import annotations

from torch import Tensor, nn

from attnlab.models.config import ConfigError, TransformerConfig
from attnlab.models.family import FamilyModel, StackView
from attnlab.models.stack import (
    DecodingCache,
    Embeddings,
    InputError,
    Stack,
    check_attention_mask,
    check_token_ids,
    positions_for,
    set_attention_backend,
)
from attnlab.nn import HookPoint, name_hook_points, padding_mask


class EncoderDecoder(FamilyModel):
    """``forward(src_ids, tgt_ids)`` -> logits ``(batch, tgt_len, vocab)`` (teacher forcing).

    For generation: ``memory = encode(src)``, then ``decode(tgt, memory, cache=...)`` step by step.
    Hook points: ``encoder.embed.*``, ``encoder.blocks.{layer}.*``, ``encoder.hook_resid_final``, the
    same under ``decoder.`` (whose blocks also have ``cross_attn.*``) and ``hook_logits``.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if config.family != "encoder-decoder":
            raise ConfigError(f"EncoderDecoder needs family='encoder-decoder', got {config.family!r}")
        assert config.n_decoder_layers is not None
        self.config = config
        self.src_embed = Embeddings(config, stack="encoder")
        self.tgt_embed = Embeddings(config, token=self.src_embed.token, stack="decoder")
        self.encoder = Stack(config, config.n_layers, stack="encoder")
        self.decoder = Stack(config, config.n_decoder_layers, stack="decoder", cross_attend=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.src_embed.token.weight
        self.hook_logits = HookPoint()
        name_hook_points(self.hook_logits, "hook_logits")
        set_attention_backend(self, config.attention_backend)

    output_stack = "decoder"
    has_vocab_head = True

    def stacks(self) -> dict[str, StackView]:
        return {
            "encoder": StackView("encoder", self.src_embed, self.encoder, False),
            "decoder": StackView("decoder", self.tgt_embed, self.decoder, True),
        }

    def head(self, hidden: Tensor) -> Tensor:
        """Target-token logits ``(..., vocab)`` of the decoder's final hidden states ``(..., d_model)``."""
        return self.lm_head(hidden)

    def new_cache(self, max_len: int | None = None) -> DecodingCache:
        """An empty cache for ``max_len`` target positions (default ``config.max_len``)."""
        assert self.config.n_decoder_layers is not None
        return DecodingCache(self.config.n_decoder_layers, max_len or self.config.max_len)

    def encode(
        self, src_ids: Tensor, src_mask: Tensor | None = None, *, position_ids: Tensor | None = None
    ) -> Tensor:
        """The encoder output ``(batch, src_len, d_model)`` (the weights' dtype) of ``src_ids`` ``(batch, src_len)``.

        ``src_mask`` ``(batch, src_len)``: 1 for real tokens, 0 for padding; positions follow it
        (each row's first real token is position 0) unless ``position_ids`` are given. Raises
        ``InputError`` for ids, mask or positions of the wrong dtype, shape or range.
        """
        check_token_ids(src_ids, self.config, "src_ids")
        if src_mask is not None:
            check_attention_mask(src_mask, *src_ids.shape, what="src_mask")
        positions = positions_for(src_ids, self.config, attention_mask=src_mask, position_ids=position_ids)
        x = self.src_embed(src_ids, positions)
        return self.encoder(x, mask=padding_mask(src_mask) if src_mask is not None else None)

    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor,
        src_mask: Tensor | None = None,
        cache: DecodingCache | None = None,
        *,
        tgt_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """Logits ``(batch, tgt_len, vocab)`` (the weights' dtype) of the target ``tgt_ids`` ``(batch, tgt_len)``.

        ``memory`` is ``encode``'s output and ``src_mask`` its padding mask. ``tgt_mask``
        ``(batch, cached + tgt_len)`` marks real target tokens (1) and padding (0), covering the
        cached ones too; target positions follow it unless ``position_ids`` ``(batch, tgt_len)`` are
        given. ``cache`` (from ``new_cache``) decodes incrementally. Raises ``InputError`` for bad ids,
        masks, positions, or a ``memory`` that does not match the batch and ``d_model``; ``ValueError``
        when the cache is full.
        """
        check_token_ids(tgt_ids, self.config, "tgt_ids")
        if memory.dim() != 3 or memory.shape[0] != tgt_ids.shape[0] or memory.shape[2] != self.config.d_model:
            raise InputError(
                f"memory (the encoder output) must be (batch={tgt_ids.shape[0]}, src_len, "
                f"d_model={self.config.d_model}), got {tuple(memory.shape)}"
            )
        if src_mask is not None:
            check_attention_mask(src_mask, *memory.shape[:2], what="src_mask")
        start = cache.length if cache is not None else 0
        if tgt_mask is not None:
            check_attention_mask(tgt_mask, tgt_ids.shape[0], start + tgt_ids.shape[1], what="tgt_mask")
        positions = positions_for(tgt_ids, self.config, start, attention_mask=tgt_mask, position_ids=position_ids)
        x = self.tgt_embed(tgt_ids, positions)
        x = self.decoder(
            x, mask=padding_mask(tgt_mask) if tgt_mask is not None else None, is_causal=True,
            positions=positions, memory=memory,
            memory_mask=padding_mask(src_mask) if src_mask is not None else None, cache=cache,
        )
        return self.hook_logits(self.head(x))

    def forward(
        self,
        src_ids: Tensor,
        tgt_ids: Tensor,
        src_mask: Tensor | None = None,
        *,
        tgt_mask: Tensor | None = None,
        src_position_ids: Tensor | None = None,
        tgt_position_ids: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced logits ``(batch, tgt_len, vocab)``: ``decode(tgt_ids, encode(src_ids))``.

        Masks and positions as in ``encode`` (source) and ``decode`` (target); raises what they raise.
        """
        memory = self.encode(src_ids, src_mask, position_ids=src_position_ids)
        return self.decode(tgt_ids, memory, src_mask, tgt_mask=tgt_mask, position_ids=tgt_position_ids)
