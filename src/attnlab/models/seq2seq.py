"""The encoder-decoder of "Attention Is All You Need" (Vaswani et al. 2017), built for translation.

The encoder reads the whole source sentence; the decoder writes the target one token at a time,
attending causally to what it has written and, through cross-attention, to every source position
(queries from the decoder, keys and values from the encoder output). Section 3.4: one embedding
matrix is shared by the source, the target and the output projection (with a shared vocabulary).
"""

from __future__ import annotations

from torch import Tensor, nn

from attnlab.models.config import ConfigError, TransformerConfig
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
from attnlab.nn import HookPoint, padding_mask


class EncoderDecoder(nn.Module):
    """``forward(src_ids, tgt_ids)`` -> logits ``(batch, tgt_len, vocab)`` (teacher forcing).

    For generation: ``memory = encode(src)``, then ``decode(tgt, memory, cache=...)`` step by step.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if config.family != "encoder-decoder":
            raise ConfigError(f"EncoderDecoder needs family='encoder-decoder', got {config.family!r}")
        assert config.n_decoder_layers is not None
        self.config = config
        self.src_embed = Embeddings(config)
        self.tgt_embed = Embeddings(config, token=self.src_embed.token)
        self.encoder = Stack(config, config.n_layers)
        self.decoder = Stack(config, config.n_decoder_layers, cross_attend=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.src_embed.token.weight
        self.hook_logits = HookPoint()
        set_attention_backend(self, config.attention_backend)

    def new_cache(self, max_len: int | None = None) -> DecodingCache:
        assert self.config.n_decoder_layers is not None
        return DecodingCache(self.config.n_decoder_layers, max_len or self.config.max_len)

    def encode(self, src_ids: Tensor, src_mask: Tensor | None = None) -> Tensor:
        check_token_ids(src_ids, self.config, "src_ids")
        if src_mask is not None:
            check_attention_mask(src_mask, *src_ids.shape, what="src_mask")
        x = self.src_embed(src_ids, positions_for(src_ids, self.config))
        return self.encoder(x, mask=padding_mask(src_mask) if src_mask is not None else None)

    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor,
        src_mask: Tensor | None = None,
        cache: DecodingCache | None = None,
    ) -> Tensor:
        check_token_ids(tgt_ids, self.config, "tgt_ids")
        if memory.dim() != 3 or memory.shape[0] != tgt_ids.shape[0] or memory.shape[2] != self.config.d_model:
            raise InputError(
                f"memory (the encoder output) must be (batch={tgt_ids.shape[0]}, src_len, "
                f"d_model={self.config.d_model}), got {tuple(memory.shape)}"
            )
        if src_mask is not None:
            check_attention_mask(src_mask, *memory.shape[:2], what="src_mask")
        start = cache.length if cache is not None else 0
        positions = positions_for(tgt_ids, self.config, start)
        x = self.tgt_embed(tgt_ids, positions)
        x = self.decoder(
            x, is_causal=True, positions=positions, memory=memory,
            memory_mask=padding_mask(src_mask) if src_mask is not None else None, cache=cache,
        )
        return self.hook_logits(self.lm_head(x))

    def forward(self, src_ids: Tensor, tgt_ids: Tensor, src_mask: Tensor | None = None) -> Tensor:
        return self.decode(tgt_ids, self.encode(src_ids, src_mask), src_mask)
