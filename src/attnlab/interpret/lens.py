"""The logit lens (nostalgebraist 2020, "interpreting GPT: the logit lens").

Every layer writes into one residual stream, and the model reads its prediction off the end of it
through the final norm and the output layer. Reading the stream at every earlier layer the same way
shows the prediction forming. For an encoder with an MLM head the read-out is that head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnlab.interpret._model import Inputs, ModelView
from attnlab.models.mode import evaluates


@dataclass
class LogitLens:
    """The logit lens of one input.

    ``labels[i]`` names read-out ``i``: ``"embed"`` (the input of block 0), then ``"block l"`` (its
    output). Tensors, for ``L = n_layers + 1`` read-outs:
    ``logits`` ``(L, batch, seq, vocab)`` float; ``top_ids`` / ``top_probs`` ``(L, batch, seq, k)``
    (int64 / float, by descending probability); ``target_rank`` (0 = top) and ``target_prob``
    ``(L, batch, seq)`` for ``target``, or ``None`` when no target was asked for.
    """

    labels: list[str]
    logits: Tensor
    top_ids: Tensor
    top_probs: Tensor
    target: int | None = None
    target_rank: Tensor | None = None
    target_prob: Tensor | None = None
    residuals: Tensor | None = field(default=None, repr=False)  # (L, batch, seq, d_model), before the norm

    def to_dict(self, batch: int = 0) -> dict:
        """JSON-ready lists for one batch row (``logits`` and ``residuals`` are left out: too big)."""
        out = {
            "labels": self.labels,
            "top_ids": self.top_ids[:, batch].tolist(),
            "top_probs": self.top_probs[:, batch].tolist(),
            "target": self.target,
        }
        if self.target_rank is not None and self.target_prob is not None:
            out["target_rank"] = self.target_rank[:, batch].tolist()
            out["target_prob"] = self.target_prob[:, batch].tolist()
        return out


@evaluates
def accumulated_residual(model: nn.Module, inputs: Inputs) -> tuple[list[str], Tensor]:
    """The output stack's residual stream at the input of every block and after the last one.

    Returns ``(labels, resid)`` with ``resid`` ``(n_layers + 1, batch, seq, d_model)`` float
    (TransformerLens's ``cache.accumulated_resid()``, without a norm applied).
    """
    view = ModelView(model)
    inputs = view.prepare(inputs)
    labels, names = accumulated_names(model)
    _, cache = view.cache(inputs, names)
    return labels, torch.stack([cache[name] for name in names])


def accumulated_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """``(labels, hook names)`` of ``accumulated_residual``'s read-outs: the output stack's
    ``hook_resid_pre`` of every block, then the last block's ``hook_resid_post``."""
    sv = ModelView(model).stack(None)
    n = sv.n_layers
    names = [f"{sv.name}.blocks.{layer}.hook_resid_pre" for layer in range(n)]
    names.append(f"{sv.name}.blocks.{n - 1}.hook_resid_post")
    return ["embed"] + [f"block {layer}" for layer in range(n)], names


@evaluates
def logit_lens(model: nn.Module, inputs: Inputs, *, target: int | None = None, k: int = 5,
               position: int | None = None, recorded: dict[str, Tensor] | None = None) -> LogitLens:
    """Read the output stack's residual stream after every layer through the model's own read-out.

    ``inputs``: token ids ``(batch, seq)`` or ``(seq,)`` (an encoder-decoder: ``(src_ids, tgt_ids)``;
    the lens reads the decoder). ``target``: a token id whose rank and probability to follow.
    ``position``: read out that position only (negative counts from the end); every tensor's ``seq``
    dimension is then 1 (a large vocabulary costs one read-out per layer instead of one per token).
    ``recorded``: the activations named by ``accumulated_names(model)`` from a run already made on
    ``inputs`` (``run_with_cache``), which saves this function its own forward pass.
    The last read-out equals the model's logits (the tests hold it to 1e-5). Works for decoders,
    encoder-decoders and encoders with an MLM head; an encoder without a vocabulary head, or a
    classifier, raises ``ValueError``.
    """
    view = ModelView(model)
    if not view.has_vocab_head:
        raise ValueError(f"the logit lens needs a vocabulary head; {type(model).__name__} has none")
    if recorded is None:
        labels, resid = accumulated_residual(model, inputs)
    else:
        labels, names = accumulated_names(model)
        resid = torch.stack([recorded[name] for name in names])
    if position is not None:
        resid = resid.narrow(2, position % resid.shape[2], 1)
    with torch.no_grad():
        logits = view.readout(resid)
    probs = torch.softmax(logits.float(), dim=-1)
    k = min(k, probs.shape[-1])
    top_probs, top_ids = probs.topk(k, dim=-1)
    result = LogitLens(labels, logits, top_ids, top_probs, residuals=resid)
    if target is not None:
        if not 0 <= target < probs.shape[-1]:
            raise IndexError(f"target token {target} outside the vocabulary [0, {probs.shape[-1]})")
        p = probs[..., target]
        result.target = target
        result.target_prob = p
        result.target_rank = (probs > p[..., None]).sum(dim=-1)
    return result
