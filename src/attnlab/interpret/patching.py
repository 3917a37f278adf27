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

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from attnlab.interpret._fast import patch_values
from attnlab.interpret._model import Inputs, Metric, ModelView
from attnlab.models.mode import evaluates

Where = Literal["resid", "attn", "mlp", "head"]
_POINT = {"resid": "hook_resid_pre", "attn": "attn.hook_out", "mlp": "ff.hook_out", "head": "attn.hook_z"}


@dataclass
class PatchResult:
    """``values[l, i]``: the metric (mean over the batch) with one activation patched, ``(layers, n)``
    float, ``i`` a position (``where`` = resid/attn/mlp) or a head (``where="head"``, every position).
    ``baseline`` is the metric of the run that receives the patch, ``source`` that of the run the
    activation comes from. ``method``: ``"exact"`` (``patch``) or ``"attribution"`` (the gradient
    estimate of ``attribution_patch``)."""

    values: Tensor
    where: str
    direction: str
    baseline: float
    source: float
    stack: str
    method: str = "exact"

    def normalized(self) -> Tensor:
        """``(values - baseline) / (source - baseline)``: 0 = no effect, 1 = the patch restores it all."""
        return (self.values - self.baseline) / (self.source - self.baseline)

    def to_dict(self) -> dict:
        return {"values": self.values.tolist(), "where": self.where, "direction": self.direction,
                "baseline": self.baseline, "source": self.source, "stack": self.stack, "method": self.method}


def check_pair(view: ModelView, clean: Inputs, corrupted: Inputs, where: str, direction: str) -> tuple[Inputs, Inputs]:
    """``clean`` and ``corrupted`` with a batch dimension; ``ValueError`` for an unknown ``where`` or
    ``direction``, or inputs of different shapes."""
    if where not in _POINT:
        raise ValueError(f"where must be one of {list(_POINT)}, got {where!r}")
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    clean, corrupted = view.prepare(clean), view.prepare(corrupted)
    shapes = [tuple(x.shape) for x in (clean if isinstance(clean, tuple) else (clean,))]
    if shapes != [tuple(x.shape) for x in (corrupted if isinstance(corrupted, tuple) else (corrupted,))]:
        raise ValueError("clean and corrupted inputs must have the same shape (pad or pick same-length prompts)")
    return clean, corrupted


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

    Each patched run starts at its layer from the receiving run's residual stream, recorded once, and
    every layer's patched copies share batched passes (``attnlab.interpret._fast``); the values
    equal patching one activation per run (the tests hold them to 1e-5).
    """
    view = ModelView(model)
    clean, corrupted = check_pair(view, clean, corrupted, where, direction)
    receiver, donor = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    sv = view.stack(stack)
    values, baseline, source = patch_values(view, sv, receiver, donor, metric, _POINT[where], where == "head")
    return PatchResult(values, where, direction, baseline, source, sv.name)
