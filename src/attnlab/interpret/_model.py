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
    w = attn.out_proj.weight.to(z.dtype)  # (d_model, heads * d_k)
    w = w.view(w.shape[0], attn.n_heads, attn.head_dim)
    return torch.einsum("bhsk,dhk->hbsd", z, w)


def _point_names(view: ModelView, sv: StackView, upto: int, within: bool = False) -> list[str]:
    names = [f"{sv.name}.embed.hook_tok_embed", f"{sv.name}.embed.hook_embed"]
    if sv.embed.positions is not None:
        names.append(f"{sv.name}.embed.hook_pos_embed")
    post = view.config.norm_placement == "post"
    for layer in range(upto + within):
        last = within and layer == upto  # only the self-attention sub-layer of block `upto`
        blk = sv.stack.blocks[layer]
        kinds = ["attn"] + (["cross_attn"] if blk.cross_attn is not None and not last else [])
        for kind in kinds:
            names.append(f"{sv.name}.blocks.{layer}.{kind}.hook_z")
            if post:
                names.append(f"{sv.name}.blocks.{layer}.{kind}.hook_out")
        if not last and blk.ff is not None:  # attention-only blocks have no MLP
            names.append(f"{sv.name}.blocks.{layer}.ff.hook_out")
        if post:
            names.append(f"{sv.name}.blocks.{layer}.hook_resid_pre")
    return names


def _embedding_terms(sv: StackView, cache: dict[str, Tensor]) -> tuple[list[str], list[Tensor]]:
    s = sv.name
    embed = cache[f"{s}.embed.hook_embed"]
    if sv.embed.norm is not None:
        return ["embed"], [embed]
    tok = cache[f"{s}.embed.hook_tok_embed"]
    labels, parts, rest = ["tok embed"], [tok], embed - tok
    if sv.embed.positions is not None:
        pos = cache[f"{s}.embed.hook_pos_embed"].expand_as(tok)
        labels.append("pos embed")
        parts.append(pos)
        rest = rest - pos
    if sv.embed.token_type is not None:
        labels.append("token type")
        parts.append(rest)
    return labels, parts


def residual_components(
    view: ModelView, sv: StackView, cache: dict[str, Tensor], upto: int, *, within: bool = False,
) -> tuple[list[str], Tensor]:
    """The terms whose sum is the residual stream entering block ``upto`` (``upto = n_layers``: the
    stack's output before its final norm), ``(n_components, batch, seq, d_model)``, and their labels.
    ``within=True``: the stream after block ``upto``'s self-attention sub-layer (what its
    cross-attention reads). ``cache`` holds ``component_names(view, sv, upto, within)``.

    Terms: ``tok embed``, ``pos embed`` (absolute positions), ``token type`` (BERT), or one ``embed``
    when the embeddings are normalised; every head ``L{l}H{h}`` (and ``L{l}X{h}`` for cross-attention)
    without its layer's output bias; ``MLP{l}`` (with its bias); ``biases`` (the attention output
    biases). A post-norm stack (Vaswani et al. 2017; BERT) renormalises the stream after every
    sub-layer: each norm is affine once its mean and scale are read off the forward pass (its input is
    the recorded ``resid + sub-layer output``; ``frozen_norm``), so every term is carried through
    each later norm's linear part, and the norms' own offsets (their biases, carried the same way)
    are one more term, ``norm offsets``. The sum is exact at this input, up to rounding; a post-norm
    stack's terms are float64 (the cache's dtype otherwise).
    """
    s = sv.name
    post = view.config.norm_placement == "post"
    if post:  # carried through many norms: float64, so that the terms' rounding stays far below the model's
        cache = {name: value.double() for name, value in cache.items()}
    labels, parts = _embedding_terms(sv, cache)
    bias = torch.zeros_like(cache[f"{s}.embed.hook_embed"])
    offsets = torch.zeros_like(bias)
    for layer in range(upto + within):
        last = within and layer == upto
        blk = sv.stack.blocks[layer]
        x = cache[f"{s}.blocks.{layer}.hook_resid_pre"] if post else None
        subs = [("attn", "H", blk.attn, blk.attn_norm)]
        if blk.cross_attn is not None and not last:
            subs.append(("cross_attn", "X", blk.cross_attn, blk.cross_norm))
        for kind, tag, attn, norm in subs:
            heads = head_outputs(attn, cache[f"{s}.blocks.{layer}.{kind}.hook_z"])  # in z's dtype
            labels += [f"L{layer}{tag}{h}" for h in range(attn.n_heads)]
            parts += list(heads)
            if attn.out_proj.bias is not None:
                bias = bias + attn.out_proj.bias.to(bias.dtype)
            if post:
                x, parts, bias, offsets = _through_norm(norm, x + cache[f"{s}.blocks.{layer}.{kind}.hook_out"],
                                                         parts, bias, offsets)
        if last:
            break
        if blk.ff is None:  # attention-only blocks have no MLP
            continue
        labels.append(f"MLP{layer}")
        parts.append(cache[f"{s}.blocks.{layer}.ff.hook_out"])
        if post:
            _, parts, bias, offsets = _through_norm(blk.ff_norm, x + parts[-1], parts, bias, offsets)
    labels.append("biases")
    parts.append(bias)
    if post:
        labels.append("norm offsets")
        parts.append(offsets)
    return labels, torch.stack([p.expand_as(bias) for p in parts])


def _through_norm(
    norm: nn.Module, y: Tensor, parts: list[Tensor], bias: Tensor, offsets: Tensor,
) -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
    """A post-norm sub-layer's ``norm(y)``, ``y`` its recorded input: the norm's output and every term
    carried through it (its scale read off ``y``), its own bias added to the offsets."""
    linear, norm_bias = frozen_norm(norm, y)
    return linear(y) + norm_bias, [linear(p) for p in parts], linear(bias), linear(offsets) + norm_bias


def component_names(view: ModelView, sv: StackView, upto: int, within: bool = False) -> list[str]:
    """The scheme hook names ``residual_components`` reads."""
    return _point_names(view, sv, upto, within)
