"""Encoder-only models (BERT-style, Devlin et al. 2019): every token sees every other token.

The body turns token ids into contextual vectors. Heads on top: masked-language modelling (predict
the hidden token from both sides), a pooler (the [CLS] vector through a dense layer and tanh) and
sequence classification.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlab.models.config import ConfigError, TransformerConfig
from attnlab.models.family import FamilyModel, StackView
from attnlab.models.stack import (
    Embeddings,
    Stack,
    check_attention_mask,
    check_token_ids,
    positions_for,
    set_attention_backend,
)
from attnlab.nn import PLAIN_ACTIVATIONS, HookPoint, activate, name_hook_points, norm_for, padding_mask


class EncoderModel(FamilyModel):
    """The encoder body. ``forward`` returns hidden states ``(batch, seq, d_model)``.

    Hook points: ``encoder.embed.*``, ``encoder.blocks.{layer}.*`` and ``encoder.hook_resid_final``.
    """

    def __init__(self, config: TransformerConfig, *, pooler: bool = True) -> None:
        super().__init__()
        if config.family != "encoder":
            raise ConfigError(f"EncoderModel needs family='encoder', got {config.family!r}")
        self.config = config
        self.embed = Embeddings(config, stack="encoder")
        self.stack = Stack(config, config.n_layers, stack="encoder")
        self.pooler = nn.Linear(config.d_model, config.d_model) if pooler else None
        set_attention_backend(self, config.attention_backend)

    output_stack = "encoder"

    def stacks(self) -> dict[str, StackView]:
        return {"encoder": StackView("encoder", self.embed, self.stack, False)}

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """Contextual vectors ``(batch, seq, d_model)`` (the weights' dtype) of ``input_ids`` ``(batch, seq)``.

        ``attention_mask`` ``(batch, seq)``: 1 for real tokens, 0 for padding (left or right);
        positions follow it (each row's first real token is position 0) unless ``position_ids``
        ``(batch, seq)`` are given. ``token_type_ids`` ``(batch, seq)`` pick the segment embedding.
        Raises ``InputError`` for ids, masks, token types or positions of the wrong dtype, shape or
        range, and for a sequence longer than ``max_len``.
        """
        check_token_ids(input_ids, self.config)
        mask = None
        if attention_mask is not None:
            check_attention_mask(attention_mask, *input_ids.shape)
            mask = padding_mask(attention_mask)
        positions = positions_for(input_ids, self.config, attention_mask=attention_mask, position_ids=position_ids)
        x = self.embed(input_ids, positions, token_type_ids)
        return self.stack(x, mask=mask)

    def pool(self, hidden: Tensor) -> Tensor:
        """BERT's pooled output: tanh(W h_[CLS] + b)."""
        if self.pooler is None:
            raise ValueError("this encoder was built without a pooler")
        return torch.tanh(self.pooler(hidden[:, 0]))


def mean_pool(hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Average of the real tokens' vectors (the sentence embedding of Sentence-BERT models)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class _EncoderWithHead(FamilyModel):
    """An ``EncoderModel`` (``self.encoder``) with an output head (``head``) whose logits pass ``hook_logits``."""

    encoder: EncoderModel
    output_stack = "encoder"

    def stacks(self) -> dict[str, StackView]:
        return self.encoder.stacks()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """The head's logits (the weights' dtype): ``(batch, seq, vocab)`` at every position for the MLM
        head, ``(batch, n_classes)`` from the pooled first token for the classifier.

        Arguments and errors are ``EncoderModel.forward``'s. Hook points: the encoder's and
        ``hook_logits``.
        """
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, position_ids=position_ids)
        return self.hook_logits(self.head(hidden))


class EncoderForMaskedLM(_EncoderWithHead):
    """Encoder + BERT's MLM head (dense, activation, norm, then the tied vocabulary projection).

    The head's activation is the model's (``config.activation``, through ``attnlab.nn.activate``, the
    feed-forward layer's own function), as in BERT. ``swiglu`` has no one-tensor form (it gates one
    projection with another), so an MLM head on a SwiGLU encoder is refused with a ``ConfigError``
    rather than given some other activation; ``EncoderModel`` and the classifier take any activation.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if config.activation not in PLAIN_ACTIVATIONS:
            raise ConfigError(
                f"the MLM head applies the model's activation to one dense layer, and activation="
                f"{config.activation!r} is gated (two projections); use one of {PLAIN_ACTIVATIONS} for an MLM encoder"
            )
        self.config = config
        self.encoder = EncoderModel(config, pooler=False)
        self.transform = nn.Linear(config.d_model, config.d_model)
        self.transform_norm = norm_for(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        if config.tie_embeddings:
            self.lm_head.weight = self.encoder.embed.token.weight
        self.hook_logits = HookPoint()
        name_hook_points(self.hook_logits, "hook_logits")

    has_vocab_head = True

    def head(self, hidden: Tensor) -> Tensor:
        """BERT's MLM head on final hidden states ``(..., d_model)``: dense, the model's activation, norm,
        then the vocabulary projection -> ``(..., vocab)``; the logit lens reads any residual stream
        through it."""
        return self.lm_head(self.transform_norm(activate(self.transform(hidden), self.config.activation)))


class EncoderForClassification(_EncoderWithHead):
    """Encoder + pooler + a linear classifier over ``config.n_classes`` labels."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if config.n_classes < 1:
            raise ConfigError("EncoderForClassification needs n_classes >= 1")
        self.config = config
        self.encoder = EncoderModel(config, pooler=True)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, config.n_classes)
        self.hook_logits = HookPoint()
        name_hook_points(self.hook_logits, "hook_logits")

    def head(self, hidden: Tensor) -> Tensor:
        """Class logits ``(batch, n_classes)`` of final hidden states ``(batch, seq, d_model)``: the pooled
        first token through the classifier."""
        return self.classifier(self.dropout(self.encoder.pool(hidden)))
