"""The one surface every model family offers, so that the tools above ``models`` ask, never check a class.

TransformerLens's ``HookedTransformer`` shows the idea: every model exposes its embedding, its blocks,
its final norm and its unembedding, and the tools use them directly. Here every family model
(``DecoderLM``, ``EncoderModel``, ``EncoderForMaskedLM``, ``EncoderForClassification``,
``EncoderDecoder``) derives from ``FamilyModel`` and answers:

- ``stacks()`` / ``stack_view(name)``: its block stacks (``encoder`` / ``decoder``) as ``StackView``s, each
  with its embeddings, its ``Stack`` (blocks and final norm) and whether it is causal;
- ``output_stack``: the stack the output head reads; ``has_vocab_head``: whether that head gives
  logits over the vocabulary at every position;
- ``head(hidden)``: the output head on the output stack's final hidden states (BERT's MLM transform
  included), the very lines ``forward`` runs; ``readout(resid)``: the final norm, then ``head``, on any
  residual stream of the output stack (the logit lens);
- ``readout_hooks``: the hook names of the read-out (``{stack}.hook_resid_final``, ``hook_logits``);
- ``can_generate``, ``new_cache()``, ``logits_at()``: incremental decoding, for the families that
  continue a prefix by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from attnlab.models.config import TransformerConfig
from attnlab.models.stack import DecodingCache, Embeddings, Stack


@dataclass(frozen=True)
class StackView:
    """One block stack of a model: its hook-name prefix, embeddings, blocks (with final norm), causality."""

    name: str  # "encoder" | "decoder"
    embed: Embeddings
    stack: Stack
    causal: bool

    @property
    def n_layers(self) -> int:
        return len(self.stack.blocks)

    @property
    def n_heads(self) -> int:
        return self.stack.blocks[0].attn.n_heads

    def check_head(self, layer: int, head: int) -> None:
        """Raises ``IndexError`` naming the range when ``layer`` or ``head`` does not exist."""
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range: the {self.name} has {self.n_layers} layers")
        if not 0 <= head < self.n_heads:
            raise IndexError(f"head {head} out of range: layers have {self.n_heads} heads")


class FamilyModel(nn.Module):
    """The shared base of every family model (see the module docstring for the surface)."""

    config: TransformerConfig
    #: The stack whose output the head reads.
    output_stack: ClassVar[str] = "decoder"
    #: ``head`` gives logits over the vocabulary at every position.
    has_vocab_head: ClassVar[bool] = False
    #: ``new_cache`` and ``logits_at`` continue a prefix token by token (decoder-only language models).
    can_generate: ClassVar[bool] = False

    def stacks(self) -> dict[str, StackView]:
        """Every block stack by name, encoder before decoder."""
        raise NotImplementedError

    def stack_view(self, name: str | None = None) -> StackView:
        """The stack ``name`` (default: ``output_stack``); ``ValueError`` naming the stacks there are."""
        name = name or self.output_stack
        found = self.stacks()
        if name not in found:
            raise ValueError(f"this {self.config.family} model has no {name!r} stack; it has {list(found)}")
        return found[name]

    @property
    def readout_hooks(self) -> tuple[str, ...]:
        """Hook names of the read-out: the output stack's final residual, then ``hook_logits`` if there is a head."""
        final = f"{self.output_stack}.hook_resid_final"
        return (final, "hook_logits") if hasattr(self, "hook_logits") else (final,)

    def head(self, hidden: Tensor) -> Tensor:
        """The output head on final hidden states ``(..., d_model)`` (after the final norm).

        Raises ``ValueError`` for a model without one (a bare encoder body).
        """
        raise ValueError(f"{type(self).__name__} has no output head: its output is the hidden states")

    def readout(self, resid: Tensor) -> Tensor:
        """Logits ``(..., vocab)`` of an output-stack residual stream ``(..., d_model)``: the stack's final
        norm (if it has one), then ``head``. ``ValueError`` for a model without a vocabulary head."""
        if not self.has_vocab_head:
            raise ValueError(f"{type(self).__name__} has no vocabulary head to read the residual stream with")
        final_norm = self.stack_view().stack.final_norm
        return self.head(final_norm(resid) if final_norm is not None else resid)

    def new_cache(self, max_len: int | None = None) -> DecodingCache:
        """An empty decoding cache; ``TypeError`` for a family that does not decode."""
        raise TypeError(f"{type(self).__name__} does not decode token by token (no decoding cache)")

    def logits_at(self, input_ids: Tensor, positions: Tensor, **kwargs: object) -> Tensor:
        """Logits of ``input_ids`` at ``positions`` without input checks (see ``DecoderLM.logits_at``);
        ``TypeError`` for a family that does not continue a prefix by itself."""
        raise TypeError(f"{type(self).__name__} does not continue a prefix by itself (no logits_at)")
