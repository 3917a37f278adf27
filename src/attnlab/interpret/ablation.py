"""Remove heads and measure what changes (head ablation; Michel et al. 2019, Olsson et al. 2022).

A head is removed by replacing its output ``z`` (``attn.hook_z``, before ``W_O``) at every position:
with zeros (``"zero"``), or with its mean over the batch and positions of the same input
(``"mean"``, which keeps the average the later layers expect). ``head_effects`` does this for every
head of a stack at once, each copy started at the layer of its head (see ``attnlab.interpret._fast``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attnlab.inspect import hooks_attached
from attnlab.interpret import _names
from attnlab.interpret._fast import ablated_from, ablation_effects
from attnlab.interpret._model import Inputs, Metric, ModelView, StackView
from attnlab.models.mode import evaluates

Method = Literal["zero", "mean"]


@dataclass
class HeadEffects:
    """``effects[l, h]``: metric with head ``(l, h)`` removed minus the clean metric, ``(layers, heads)``
    float (a negative effect: the head helped the metric). ``baseline``: the clean metric (mean over
    the batch). ``estimated``: the values are attribution patching's first-order estimate
    (``attnlab.interpret.estimate_head_effects``), not measured ablations."""

    effects: Tensor
    baseline: float
    method: str
    stack: str
    cross: bool = False
    estimated: bool = False

    def to_dict(self) -> dict:
        return {"effects": self.effects.tolist(), "baseline": self.baseline, "method": self.method,
                "stack": self.stack, "cross": self.cross, "estimated": self.estimated}


def _z_means(view: ModelView, sv: StackView, inputs: Inputs, kind: str) -> dict[int, Tensor]:
    """Per layer, each head's ``z`` averaged over batch and positions, ``(heads, d_k)``."""
    names = [f"{sv.name}.blocks.{layer}.{kind}.hook_z" for layer in range(sv.n_layers)]
    _, cache = view.cache(inputs, names)
    return {layer: cache[name].mean(dim=(0, 2)) for layer, name in enumerate(names)}


def _check_method(method: str, sv: StackView, cross: bool) -> str:
    if method not in ("zero", "mean"):
        raise ValueError(f"method must be 'zero' or 'mean', got {method!r}")
    if cross and sv.stack.blocks[0].cross_attn is None:
        raise ValueError(f"the {sv.name} stack has no cross-attention")
    return "cross_attn" if cross else "attn"


def _ablation_hook(mask: Tensor, means: Tensor | None) -> Callable[[nn.Module, object, Tensor], Tensor]:
    """Replace heads where ``mask`` ``(copies, heads)`` is true; ``z`` is ``(copies * batch, heads, seq, d_k)``."""

    def hook(_module: nn.Module, _inputs: object, z: Tensor) -> Tensor:
        copies = mask.shape[0]
        zz = z.view(copies, z.shape[0] // copies, *z.shape[1:])
        keep = ~mask[:, None, :, None, None]
        fill = torch.zeros((), dtype=z.dtype) if means is None else means[None, None, :, None, :]
        return torch.where(keep, zz, fill).view_as(z)

    return hook


@evaluates
def ablate(
    model: nn.Module,
    inputs: Inputs,
    heads: Iterable[tuple[int, int]],
    *,
    method: Method = "zero",
    stack: str | None = None,
    cross: bool = False,
) -> Tensor:
    """The model's output with ``heads`` (``(layer, head)`` pairs) removed at every position.

    ``stack`` picks the ``encoder`` or ``decoder`` stack (default: the one the output is read from);
    ``cross=True`` removes cross-attention heads of an encoder-decoder's decoder. Returns the
    output the model returns (logits ``(batch, seq, vocab)`` for a language model). Removing no head
    returns the clean output exactly. Errors: ``IndexError`` for a layer or head out of range,
    ``ValueError`` for an unknown method.
    """
    view = ModelView(model)
    inputs = view.prepare(inputs)
    sv = view.stack(stack)
    kind = _check_method(method, sv, cross)
    by_layer: dict[int, Tensor] = {}
    for layer, head in heads:
        view.check_head(sv, layer, head)
        by_layer.setdefault(layer, torch.zeros(1, sv.n_heads, dtype=torch.bool, device=view.device))[0, head] = True
    means = _z_means(view, sv, inputs, kind) if method == "mean" and by_layer else {}
    hooks = {
        _names.block(model, sv.name, layer, f"{kind}.hook_z"): _ablation_hook(mask, means.get(layer))
        for layer, mask in by_layer.items()
    }
    with torch.no_grad(), hooks_attached(model, hooks):
        return view.run(inputs)


@evaluates
def ablate_from(
    model: nn.Module,
    inputs: Inputs,
    layer: int,
    head: int,
    resid_pre: list[Tensor],
    *,
    stack: str | None = None,
    cross: bool = False,
    last_only: bool = False,
) -> Tensor:
    """``ablate(model, inputs, [(layer, head)])`` (zero ablation) run from block ``layer`` on.

    The blocks below ``layer`` do not change when a head of ``layer`` is removed, so the run starts
    from ``resid_pre[layer]``: the clean run's ``{stack}.blocks.{layer}.hook_resid_pre`` on the same
    ``inputs`` ``(batch, seq, d_model)`` (a list indexed by layer; only that entry is read). The
    values equal ``ablate``'s (the tests hold them to 1e-6). ``last_only``: only the last position of
    the output stack is read out (``(batch, 1, ...)``; a large vocabulary's read-out is then one row).
    Errors: ``IndexError`` for a layer or head out of range, ``ValueError`` for ``cross=True`` without
    cross-attention.
    """
    view = ModelView(model)
    inputs = view.prepare(inputs)
    sv = view.stack(stack)
    kind = _check_method("zero", sv, cross)
    view.check_head(sv, layer, head)
    return ablated_from(view, sv, inputs, resid_pre, layer, head, kind, last_only)


@evaluates
def head_effects(
    model: nn.Module,
    inputs: Inputs,
    metric: Metric,
    *,
    method: Method = "zero",
    stack: str | None = None,
    cross: bool = False,
) -> HeadEffects:
    """The change of ``metric`` when each head of a stack is removed alone, for every head.

    ``metric`` maps the model's output ``(batch, ...)`` to ``(batch,)`` (see
    ``attnlab.interpret.metrics``); the effect is averaged over the batch. The clean run is made
    once; each copy with a head of layer ``l`` removed starts at block ``l`` from the clean run's
    residual stream, and the copies of every layer share batched passes (``attnlab.interpret._fast``):
    about ``heads x layers / 2`` forward passes of the input in all, each block's weights read once.
    The results equal ``ablate`` one head at a time (the tests hold them to 1e-5; float32 throughout:
    bfloat16 moved SmolLM2's effects by up to 0.13 nats, see the README). Errors: ``ValueError`` for
    an unknown method, or ``cross=True`` without cross-attention.
    """
    view = ModelView(model)
    inputs = view.prepare(inputs)
    sv = view.stack(stack)
    kind = _check_method(method, sv, cross)
    effects, baseline = ablation_effects(view, sv, inputs, metric, kind, method)
    return HeadEffects(effects, baseline, method, sv.name, cross)
