"""Decoder-only language models (GPT-style; Llama-style by configuration alone).

Each token attends to itself and the tokens before it (the causal mask), and the model predicts the
next token at every position. GPT-2 is pre-norm LayerNorm + GELU + learned positions; Llama is
pre-norm RMSNorm + SwiGLU + rotary positions + grouped-query attention: the same class, another
config (see ``attnlab.models.presets``).
"""

from __future__ import annotations

from torch import Tensor, nn

from attnlab.models.config import ConfigError, TransformerConfig
from attnlab.models.family import FamilyModel, StackView
from attnlab.models.stack import (
    DecodingCache,
    Embeddings,
    Stack,
    check_attention_mask,
    check_token_ids,
    positions_for,
    set_attention_backend,
)
from attnlab.nn import HookPoint, name_hook_points, padding_mask


class DecoderLM(FamilyModel):
    """Token ids ``(batch, seq)`` -> next-token logits ``(batch, seq, vocab)``.

    Pass a ``DecodingCache`` (from ``new_cache``) to decode incrementally: each call appends its
    tokens' keys and values, so the next call only feeds the new token.

    Hook points: ``decoder.embed.*``, ``decoder.blocks.{layer}.*``, ``decoder.hook_resid_final`` and
    ``hook_logits`` (see ``attnlab.inspect.hook_points``).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if config.family != "decoder":
            raise ConfigError(f"DecoderLM needs family='decoder', got {config.family!r}")
        self.config = config
        self.embed = Embeddings(config, stack="decoder")
        self.stack = Stack(config, config.n_layers, stack="decoder")
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.token.weight
        self.hook_logits = HookPoint()
        name_hook_points(self.hook_logits, "hook_logits")
        set_attention_backend(self, config.attention_backend)

    output_stack = "decoder"
    has_vocab_head = True
    can_generate = True

    def stacks(self) -> dict[str, StackView]:
        return {"decoder": StackView("decoder", self.embed, self.stack, True)}

    def head(self, hidden: Tensor) -> Tensor:
        """Next-token logits ``(..., vocab)`` of final hidden states ``(..., d_model)``."""
        return self.lm_head(hidden)

    def new_cache(self, max_len: int | None = None) -> DecodingCache:
        """An empty cache for ``max_len`` positions (default ``config.max_len``) of every layer."""
        return DecodingCache(self.config.n_layers, max_len or self.config.max_len)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        cache: DecodingCache | None = None,
        *,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """Next-token logits ``(batch, seq, vocab)`` (the weights' dtype) for ``input_ids`` ``(batch, seq)``.

        ``attention_mask`` ``(batch, cached + seq)`` holds 1 for real tokens and 0 for padding (on the
        left or the right); with a ``cache`` it covers the cached tokens too. Positions follow it:
        each row's first real token is position 0, so a left-padded row gives its real tokens the
        logits they have alone. ``position_ids`` ``(batch, seq)`` overrides that. Raises
        ``InputError`` for ids that are not integer ``(batch, seq)`` tensors inside the vocabulary, a
        mask of the wrong shape or values, bad ``position_ids``, or a position past ``max_len``; and
        ``ValueError`` when the cache is full.
        """
        check_token_ids(input_ids, self.config)
        start = cache.length if cache is not None else 0
        mask = None
        if attention_mask is not None:  # it covers the cached positions and the new ones
            check_attention_mask(attention_mask, input_ids.shape[0], start + input_ids.shape[1])
            mask = padding_mask(attention_mask)
        positions = positions_for(input_ids, self.config, start, attention_mask=attention_mask,
                                  position_ids=position_ids)
        x = self.embed(input_ids, positions)  # (batch, seq, d_model)
        x = self.stack(x, mask=mask, is_causal=True, positions=positions, cache=cache)
        return self.hook_logits(self.head(x))  # (batch, seq, vocab)

    def logits_at(
        self,
        input_ids: Tensor,
        positions: Tensor,
        *,
        mask: Tensor | None = None,
        cache: DecodingCache | None = None,
        last_only: bool = False,
    ) -> Tensor:
        """``forward`` without its input checks: ``input_ids`` ``(batch, n)`` at absolute ``positions``
        (``(n,)`` shared by the rows, or ``(batch, n)``), with a boolean ``mask`` (``padding_mask``) if any.

        For callers that built valid input themselves: the generation loop checks the prompt once,
        then feeds back the model's own choices, and re-checking each of them (two reductions and two
        reads of their results per token) would be pure overhead. ``last_only`` computes the logits
        of the last position only, ``(batch, 1, vocab)``: all a sampler needs, and for a large
        vocabulary the biggest matrix product of a prompt pass. Raises only what torch raises for
        out-of-range input, and ``ValueError`` when the cache is full. (``forward`` spells the same
        three steps out after its checks, so that a reader reaches the blocks in one call.)
        """
        x = self.embed(input_ids, positions)
        x = self.stack(x, mask=mask, is_causal=True, positions=positions, cache=cache)
        if last_only:
            x = x[:, -1:]
        return self.hook_logits(self.head(x))
