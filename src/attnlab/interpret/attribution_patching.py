"""Attribution patching (Nanda 2023, "Attribution Patching: Activation Patching At Industrial Scale";
Syed et al. 2023): a first-order estimate of every activation patch at once.

Patching activation ``a`` of the receiving run with the donor's ``a'`` changes the metric by about
``(a' - a) . dmetric/da``, the gradient taken on the receiving run. One forward pass of the donor,
one forward and one backward pass of the receiver give the estimate for every layer and every
position (or head) together, where exact patching (``patch``) runs one intervention per entry. The
estimate is exact for a metric linear in the activation and drifts as the patch moves the model off
its tangent: ``agreement`` measures how far, against ``patch``'s exact values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from attnlab.inspect import hooks_attached
from attnlab.interpret import _names
from attnlab.interpret._fast import last_position_out, reads_last_position
from attnlab.interpret._model import Inputs, Metric, ModelView
from attnlab.interpret.ablation import HeadEffects, Method, _check_method
from attnlab.interpret.patching import _POINT, PatchResult, Where, check_pair
from attnlab.models.mode import evaluates


def _recording(store: dict[str, Tensor], name: str) -> Callable[[nn.Module, object, Tensor], Tensor]:
    def hook(_module: nn.Module, _inputs: object, act: Tensor) -> Tensor:
        if not act.requires_grad:  # no parameter needs a gradient: make the graph start here
            act = act.detach().requires_grad_()
        store[name] = act
        return act

    return hook


@evaluates
def attribution_patch(
    model: nn.Module,
    clean: Inputs,
    corrupted: Inputs,
    metric: Metric,
    *,
    where: Where = "head",
    direction: Literal["denoise", "noise"] = "denoise",
    stack: str | None = None,
) -> PatchResult:
    """The gradient estimate of ``patch(model, clean, corrupted, metric, where=..., direction=...)``.

    ``values[l, i] = baseline + sum((donor - receiver) * grad)`` over the batch and the patched slot
    (position ``i`` of ``(batch, seq, d_model)``, or head ``i`` of ``z`` ``(batch, heads, seq, d_k)``
    at every position), ``grad`` being the gradient of the batch-mean metric on the receiving run.
    Same arguments, shapes and errors as ``patch``; the result's ``method`` is ``"attribution"``.
    The model's parameters get no gradient (``torch.autograd.grad`` on the activations only).
    """
    view = ModelView(model)
    clean, corrupted = check_pair(view, clean, corrupted, where, direction)
    receiver, donor = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    sv = view.stack(stack)
    names = [f"{sv.name}.blocks.{layer}.{_POINT[where]}" for layer in range(sv.n_layers)]
    last = reads_last_position(metric) and sv.name == view.output_stack
    with last_position_out(view, last):
        donor_out, donor_acts = view.cache(donor, names)
    m, acts, grads = _metric_gradients(view, model, receiver, metric, names, last)
    rows = []
    for name, grad in zip(names, grads, strict=True):
        if grad is None:  # the metric does not depend on this activation
            grad = torch.zeros_like(acts[name])
        delta = (donor_acts[name] - acts[name].detach()) * grad
        # per head: sum over (batch, seq, d_k) of (batch, heads, seq, d_k); per position: over (batch, d)
        rows.append(delta.sum(dim=(0, 2, 3)) if where == "head" else delta.sum(dim=(0, 2)))
    baseline = float(m.detach())
    source = float(metric(donor_out).float().mean())
    values = torch.stack(rows).float() + baseline
    return PatchResult(values, where, direction, baseline, source, sv.name, method="attribution")


def _metric_gradients(view: ModelView, model: nn.Module, inputs: Inputs, metric: Metric, names: list[str],
                      last: bool) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor | None, ...]]:
    """One forward and one backward pass: the batch-mean metric, the activations at ``names`` and the
    metric's gradient with respect to each (``None`` where the metric does not depend on it)."""
    acts: dict[str, Tensor] = {}
    hooks = {_names.resolve(model, name): _recording(acts, name) for name in names}
    with torch.enable_grad(), last_position_out(view, last), hooks_attached(model, hooks):
        m = metric(view.run(inputs)).float().mean()
        grads = torch.autograd.grad(m, [acts[name] for name in names], allow_unused=True)
    return m, acts, grads


@evaluates
def estimate_head_effects(
    model: nn.Module,
    inputs: Inputs,
    metric: Metric,
    *,
    method: Method = "zero",
    stack: str | None = None,
    cross: bool = False,
) -> HeadEffects:
    """Attribution patching's estimate of ``head_effects(model, inputs, metric, ...)``: one forward and
    one backward pass for every head.

    Removing head ``(l, h)`` replaces its ``z`` ``(batch, heads, seq, d_k)`` by zeros (``"zero"``) or
    by its mean over batch and positions (``"mean"``); the estimate of the metric's change is
    ``sum((z_removed - z) * dmetric/dz)`` over the batch, the positions and ``d_k`` of that head, the
    gradient taken on the clean run (of the batch-mean metric). Same arguments and errors as
    ``head_effects``; the result has ``estimated=True``. ``effects_agreement`` measures it against the
    exact effects. The model's parameters get no gradient.
    """
    view = ModelView(model)
    inputs = view.prepare(inputs)
    sv = view.stack(stack)
    kind = _check_method(method, sv, cross)
    names = [f"{sv.name}.blocks.{layer}.{kind}.hook_z" for layer in range(sv.n_layers)]
    last = reads_last_position(metric) and sv.name == view.output_stack
    m, acts, grads = _metric_gradients(view, model, inputs, metric, names, last)
    rows = []
    for name, grad in zip(names, grads, strict=True):
        z = acts[name].detach()
        if grad is None:  # the metric does not depend on this layer's heads
            grad = torch.zeros_like(z)
        removed = torch.zeros_like(z) if method == "zero" else z.mean(dim=(0, 2), keepdim=True).expand_as(z)
        rows.append(((removed - z) * grad).sum(dim=(0, 2, 3)))  # (heads,)
    return HeadEffects(torch.stack(rows).float(), float(m.detach()), method, sv.name, cross, estimated=True)


def effects_agreement(estimate: HeadEffects, exact: HeadEffects) -> tuple[float, float, tuple[int, int]]:
    """How well an estimate of the head effects matches the exact ones: ``(r, largest, (layer, head))``,
    Pearson's r over every head, the largest absolute difference (the metric's units) and the head
    where it is. ``ValueError`` when the two are of different shapes. r is NaN when either map is constant."""
    if estimate.effects.shape != exact.effects.shape:
        raise ValueError(f"the two maps differ in shape: {tuple(estimate.effects.shape)} and {tuple(exact.effects.shape)}")
    a, b = estimate.effects.double().flatten(), exact.effects.double().flatten()
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    diff = (a - b).abs()
    i = int(diff.argmax())
    heads = estimate.effects.shape[1]
    return r, float(diff[i]), (i // heads, i % heads)


def agreement(estimate: PatchResult, exact: PatchResult) -> float:
    """Pearson's r between an estimate's and the exact patch's changes (``values - baseline``) over
    every entry; both must patch the same thing (``ValueError`` otherwise). 1 = the same pattern; NaN
    when either has no variation at all."""
    if (estimate.where, estimate.direction, estimate.stack) != (exact.where, exact.direction, exact.stack) or \
            estimate.values.shape != exact.values.shape:
        raise ValueError("the two results patch different activations; compare results of the same where/direction")
    pair = torch.stack([(estimate.values - estimate.baseline).flatten(), (exact.values - exact.baseline).flatten()])
    return float(torch.corrcoef(pair.double())[0, 1])
