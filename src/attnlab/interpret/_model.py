"""What every tool needs to know about a model, in one place.

A ``ModelView`` holds the model's block stacks (``encoder`` / ``decoder``, from the model's own
``stacks()``), runs it on the tools' ``inputs``, repeats inputs for batched interventions and reads a
residual stream out through the model's own ``readout`` (final norm, then output head). It asks the
model (``attnlab.models.FamilyModel``'s surface) and never checks its class; no model math is copied here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from attnlab.generate import model_device
from attnlab.inspect import math_backend, run_with_cache
from attnlab.interpret import _names
from attnlab.models import FamilyModel, StackView

#: A decoder or encoder takes a ``(batch, seq)`` (or ``(seq,)``) tensor of token ids; an
#: encoder-decoder takes ``(src_ids, tgt_ids)``.
Inputs = Tensor | tuple[Tensor, Tensor]
#: Model output ``(batch, ...)`` -> one float per batch row, ``(batch,)``.
Metric = Callable[[Tensor], Tensor]

__all__ = ["Inputs", "Metric", "ModelView", "StackView"]


class ModelView:
    """A model seen by the interpretability tools (see module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, FamilyModel):
            raise TypeError(
                f"attnlab.interpret works on DecoderLM, EncoderModel, EncoderForMaskedLM and EncoderDecoder, "
                f"got {type(model).__name__}"
            )
        self.model = model
        self.config = model.config
        self.stacks = model.stacks()
        self.output_stack = model.output_stack
        self.family = self.config.family

    @property
    def device(self) -> torch.device:
        """Where the model's weights are: the tools make their own tensors (masks, positions) there."""
        return model_device(self.model)

    # ----- inputs -----
    def prepare(self, inputs: Inputs) -> Inputs:
        """Inputs with a batch dimension; the wrong kind for the family is a ``TypeError``."""
        if self.family == "encoder-decoder":
            if not (isinstance(inputs, tuple | list) and len(inputs) == 2):
                raise TypeError("an encoder-decoder takes inputs=(src_ids, tgt_ids)")
            src, tgt = (x[None] if isinstance(x, Tensor) and x.dim() == 1 else x for x in inputs)
            if src.shape[0] != tgt.shape[0]:
                raise ValueError(f"src and tgt batch sizes differ: {src.shape[0]} vs {tgt.shape[0]}")
            return (src, tgt)
        if not isinstance(inputs, Tensor):
            raise TypeError(f"a {self.family} model takes a tensor of token ids, got {type(inputs).__name__}")
        return inputs[None] if inputs.dim() == 1 else inputs

    def batch_size(self, inputs: Inputs) -> int:
        return (inputs[0] if isinstance(inputs, tuple) else inputs).shape[0]

    def ids(self, inputs: Inputs, stack: str) -> Tensor:
        """The token ids that enter ``stack``, ``(batch, seq)``."""
        if isinstance(inputs, tuple):
            return inputs[0] if stack == "encoder" else inputs[1]
        return inputs

    def repeat(self, inputs: Inputs, n: int) -> Inputs:
        """``n`` copies stacked along the batch: rows ``[copy 0 (batch rows), copy 1, ...]``."""
        if isinstance(inputs, tuple):
            return (inputs[0].repeat(n, 1), inputs[1].repeat(n, 1))
        return inputs.repeat(n, 1)

    def run(self, inputs: Inputs) -> Tensor:
        """The model's output, with the same (``math``) attention backend ``run_with_cache`` uses, so that
        a tool's clean, patched and recorded runs compute alike."""
        with math_backend(self.model):
            return self.model(*inputs) if isinstance(inputs, tuple) else self.model(inputs)

    def cache(self, inputs: Inputs, names: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """Run once and record ``names`` (scheme names are resolved first); keys are the given names."""
        resolved = {_names.resolve(self.model, n): n for n in names}
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        out, cache = run_with_cache(self.model, *args, names=list(resolved))
        return out, {resolved[k]: cache[k] for k in resolved}

    # ----- stacks -----
    def stack(self, name: str | None) -> StackView:
        return self.model.stack_view(name)

    def check_head(self, sv: StackView, layer: int, head: int) -> None:
        sv.check_head(layer, head)

    # ----- read-out -----
    @property
    def has_vocab_head(self) -> bool:
        return self.model.has_vocab_head

    def readout(self, resid: Tensor) -> Tensor:
        """Logits ``(..., vocab)`` of an output-stack residual stream ``(..., d_model)``: the stack's
        final norm (if it has one), then the model's output head (``FamilyModel.readout``)."""
        return self.model.readout(resid)


def frozen_norm(norm: nn.Module | None, x: Tensor) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """A norm as an affine map, its scale frozen at the value it has on the recorded input ``x``.

    Returns ``(linear, bias)`` with ``norm(x) == linear(x) + bias``; ``linear`` is linear in its
    argument, so it distributes over a sum of residual components (Elhage et al. 2021, "folding" the
    norm). LayerNorm: ``linear(c) = w * (c - mean(c)) / sigma(x)``, ``bias = b``; RMSNorm:
    ``linear(c) = w * c / rms(x)``, ``bias = 0``. ``x`` is ``(..., d_model)`` and a component must
    broadcast against it.
    """
    if norm is None:
        return (lambda c: c), torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device)
    weight = norm.weight if norm.weight is not None else torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
    if isinstance(norm, nn.LayerNorm):
        scale = (x.var(dim=-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
        bias = norm.bias if norm.bias is not None else torch.zeros_like(weight)
        return (lambda c: weight * (c - c.mean(dim=-1, keepdim=True)) / scale), bias.detach()
    scale = (x.pow(2).mean(dim=-1, keepdim=True) + norm.eps).sqrt()  # RMSNorm
    return (lambda c: weight * c / scale), torch.zeros_like(weight).detach()


def head_outputs(attn: nn.Module, z: Tensor) -> Tensor:
    """Each head's write into the residual stream: ``z`` ``(batch, heads, seq, d_k)`` through its
    slice of ``W_O`` -> ``(heads, batch, seq, d_model)`` (the output bias is not included)."""
    w = attn.out_proj.weight  # (d_model, heads * d_k)
    w = w.view(w.shape[0], attn.n_heads, attn.head_dim)
    return torch.einsum("bhsk,dhk->hbsd", z, w)


def _point_names(view: ModelView, sv: StackView, upto: int) -> list[str]:
    names = [f"{sv.name}.embed.hook_tok_embed", f"{sv.name}.embed.hook_embed"]
    if sv.embed.positions is not None:
        names.append(f"{sv.name}.embed.hook_pos_embed")
    for layer in range(upto):
        names.append(f"{sv.name}.blocks.{layer}.attn.hook_z")
        if sv.stack.blocks[layer].ff is not None:  # attention-only blocks have no MLP
            names.append(f"{sv.name}.blocks.{layer}.ff.hook_out")
        if sv.stack.blocks[layer].cross_attn is not None:
            names.append(f"{sv.name}.blocks.{layer}.cross_attn.hook_z")
    return names


def residual_components(view: ModelView, sv: StackView, cache: dict[str, Tensor], upto: int) -> tuple[list[str], Tensor]:
    """The terms whose sum is the residual stream entering block ``upto`` (``upto = n_layers``: the
    stack's output before its final norm), ``(n_components, batch, seq, d_model)``, and their labels.

    Terms: ``tok embed``, ``pos embed`` (absolute positions), ``token type`` (BERT), or one ``embed``
    when the embeddings are normalised; every head ``L{l}H{h}`` (and ``L{l}X{h}`` for cross-attention)
    without its layer's output bias; ``MLP{l}`` (with its bias); ``biases`` (the attention output
    biases). Only a pre-norm stack has such a sum: a post-norm stack renormalises the stream after
    every sub-layer, and asking for it is a ``ValueError``.
    """
    if not view.config.norm_placement == "pre":
        raise ValueError(
            "this model is post-norm: its residual stream is renormalised after every sub-layer, so it is not a "
            "sum of per-component terms (direct attributions and score decompositions need a pre-norm model)"
        )
    s = sv.name
    labels: list[str] = []
    parts: list[Tensor] = []
    embed = cache[f"{s}.embed.hook_embed"]
    if sv.embed.norm is not None:
        labels.append("embed")
        parts.append(embed)
    else:
        tok = cache[f"{s}.embed.hook_tok_embed"]
        labels.append("tok embed")
        parts.append(tok)
        rest = embed - tok
        if sv.embed.positions is not None:
            pos = cache[f"{s}.embed.hook_pos_embed"].expand_as(tok)
            labels.append("pos embed")
            parts.append(pos)
            rest = rest - pos
        if sv.embed.token_type is not None:
            labels.append("token type")
            parts.append(rest)
    bias = torch.zeros_like(embed)
    for layer in range(upto):
        blk = sv.stack.blocks[layer]
        for kind, tag in (("attn", "H"), ("cross_attn", "X")):
            attn = getattr(blk, kind)
            if attn is None:
                continue
            heads = head_outputs(attn, cache[f"{s}.blocks.{layer}.{kind}.hook_z"])
            labels += [f"L{layer}{tag}{h}" for h in range(attn.n_heads)]
            parts += list(heads)
            if attn.out_proj.bias is not None:
                bias = bias + attn.out_proj.bias
        if blk.ff is not None:
            labels.append(f"MLP{layer}")
            parts.append(cache[f"{s}.blocks.{layer}.ff.hook_out"])
    labels.append("biases")
    parts.append(bias)
    return labels, torch.stack(parts)


def component_names(view: ModelView, sv: StackView, upto: int) -> list[str]:
    """The scheme hook names ``residual_components`` reads."""
    return _point_names(view, sv, upto)
