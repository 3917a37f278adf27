"""Activation patching (Meng et al. 2022, causal tracing; Wang et al. 2022, path patching's simpler
parent): run the model on one input while copying one activation in from a run on another.

Two inputs of the same shape differ where it matters (``clean``: "When Mary and John went ...,
John gave a drink to", ``corrupted``: the names swapped). ``direction="denoise"`` (the default, as
in Meng et al. and TransformerLens's ``patching`` module) runs ``corrupted`` and restores one clean
activation: a large change of the metric says that activation carries what the clean input adds.
``direction="noise"`` runs ``clean`` and copies one corrupted activation in: a large change says
the model needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attnlab.inspect import hooks_attached
from attnlab.interpret import _names
from attnlab.interpret._model import Inputs, Metric, ModelView
from attnlab.models.mode import evaluates

Where = Literal["resid", "attn", "mlp", "head"]
_POINT = {"resid": "hook_resid_pre", "attn": "attn.hook_out", "mlp": "ff.hook_out", "head": "attn.hook_z"}


@dataclass
class PatchResult:
    """``values[l, i]``: the metric (mean over the batch) with one activation patched, ``(layers, n)``
    float, ``i`` a position (``where`` = resid/attn/mlp) or a head (``where="head"``, every position).
    ``baseline`` is the metric of the run that receives the patch, ``source`` that of the run the
    activation comes from."""

    values: Tensor
    where: str
    direction: str
    baseline: float
    source: float
    stack: str

    def normalized(self) -> Tensor:
        """``(values - baseline) / (source - baseline)``: 0 = no effect, 1 = the patch restores it all."""
        return (self.values - self.baseline) / (self.source - self.baseline)

    def to_dict(self) -> dict:
        return {"values": self.values.tolist(), "where": self.where, "direction": self.direction,
                "baseline": self.baseline, "source": self.source, "stack": self.stack}


def _patch_hook(source: Tensor, copies: int) -> Callable[[nn.Module, object, Tensor], Tensor]:
    """Copy ``i`` of the batch gets slot ``i`` of ``source`` (position ``i``, or head ``i`` at all positions)."""

    def hook(_module: nn.Module, _inputs: object, x: Tensor) -> Tensor:
        x = x.clone().view(copies, x.shape[0] // copies, *x.shape[1:])
        for i in range(copies):  # head i of (batch, heads, seq, d_k), or position i of (batch, seq, d_model)
            x[i, :, i] = source[:, i]
        return x.view(-1, *x.shape[2:])

    return hook


@evaluates
def patch(
    model: nn.Module,
    clean: Inputs,
    corrupted: Inputs,
    metric: Metric,
    *,
    where: Where = "resid",
    direction: Literal["denoise", "noise"] = "denoise",
    stack: str | None = None,
) -> PatchResult:
    """Activation patching over every layer and every position (or head) of a stack.

    ``where``: ``"resid"`` (the residual stream entering each block, ``hook_resid_pre``), ``"attn"``
    (the attention block's output), ``"mlp"`` (the feed-forward output), each per (layer, position);
    ``"head"``: one head's ``z`` at every position, per (layer, head). ``clean`` and ``corrupted``
    must have the same shape (``ValueError`` otherwise). ``metric``: output ``(batch, ...)`` ->
    ``(batch,)``. Returns a ``PatchResult`` with ``values`` ``(layers, positions | heads)``; its
    entries equal TransformerLens's ``get_act_patch_resid_pre`` / ``attn_out`` / ``mlp_out`` /
    ``attn_head_out_all_pos`` for ``direction="denoise"``. For an encoder-decoder, ``stack`` picks
    whose activations are patched (default: the decoder).
    """
    if where not in _POINT:
        raise ValueError(f"where must be one of {list(_POINT)}, got {where!r}")
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    view = ModelView(model)
    clean, corrupted = view.prepare(clean), view.prepare(corrupted)
    shapes = [tuple(x.shape) for x in (clean if isinstance(clean, tuple) else (clean,))]
    if shapes != [tuple(x.shape) for x in (corrupted if isinstance(corrupted, tuple) else (corrupted,))]:
        raise ValueError("clean and corrupted inputs must have the same shape (pad or pick same-length prompts)")
    receiver, donor = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    sv = view.stack(stack)
    names = [f"{sv.name}.blocks.{layer}.{_POINT[where]}" for layer in range(sv.n_layers)]
    donor_out, cache = view.cache(donor, names)
    with torch.no_grad():
        baseline = float(metric(view.run(receiver)).float().mean())
    source = float(metric(donor_out).float().mean())
    n = sv.n_heads if where == "head" else view.ids(receiver, sv.name).shape[1]
    rows = []
    for name in names:
        hook = _patch_hook(cache[name], n)
        with torch.no_grad(), hooks_attached(model, {_names.resolve(model, name): hook}):
            out = view.run(view.repeat(receiver, n))
        rows.append(metric(out).float().view(n, -1).mean(dim=1))
    return PatchResult(torch.stack(rows), where, direction, baseline, source, sv.name)
