"""Which input tokens does a prediction rest on? Gradient attributions over the token embeddings.

``input_x_gradient``: ``e . df/de`` per token (Shrikumar et al. 2016). ``integrated_gradients``
(Sundararajan et al. 2017): ``(e - e') . integral_0^1 df/de(e' + a (e - e')) da`` along the straight
path from a baseline ``e'`` (zero token embeddings, positions untouched) to the input, which is
*complete*: the scores add up to ``f(input) - f(baseline)``. The integral is computed with
Gauss-Legendre quadrature, the default rule of Captum's ``IntegratedGradients``; the tests check
completeness within 1% at the default ``steps=50``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.inspect import hooks_attached
from attnlab.interpret import _names
from attnlab.interpret._model import Inputs, Metric, ModelView

Method = Literal["input_x_gradient", "integrated_gradients"]
#: Interpolation steps run per backward pass.
STEPS_PER_PASS = 16


@dataclass
class Saliency:
    """``scores`` ``(seq,)`` float64: one score per input token of ``stack``. For integrated gradients
    ``value - baseline_value`` is what the scores should sum to (``completeness_gap`` measures how far
    they are); for input x gradient ``baseline_value`` is ``None``."""

    scores: Tensor
    method: str
    value: float
    baseline_value: float | None
    steps: int | None
    stack: str

    @property
    def completeness_gap(self) -> float | None:
        if self.baseline_value is None:
            return None
        return float(self.scores.sum()) - (self.value - self.baseline_value)

    def to_dict(self) -> dict:
        return {"scores": self.scores.tolist(), "method": self.method, "value": self.value,
                "baseline_value": self.baseline_value, "steps": self.steps, "stack": self.stack}


def _target_metric(target: int | Metric, position: int) -> Metric:
    if callable(target):
        return target
    return lambda logits: logits[:, position, target]


def _f_on_embeddings(view: ModelView, inputs: Inputs, stack: str, metric: Metric, emb: Tensor) -> Tensor:
    """``metric`` with the token embeddings of ``stack`` replaced by ``emb`` ``(n, seq, d)``; ``(n,)``."""
    n = emb.shape[0]

    def hook(_m: nn.Module, _i: object, _x: Tensor) -> Tensor:
        return emb

    with torch.enable_grad(), hooks_attached(view.model, {_names.embed(view.model, stack, "tok_embed"): hook}):
        return metric(view.run(view.repeat(inputs, n)))


def saliency(
    model: nn.Module,
    inputs: Inputs,
    target: int | Metric,
    *,
    method: Method = "integrated_gradients",
    steps: int = 50,
    position: int = -1,
    stack: str | None = None,
) -> Saliency:
    """One score per input token: how much the prediction ``target`` rests on it.

    ``target``: a token id (``f`` = its logit at ``position``) or a metric (output ``(batch, ...)`` ->
    ``(batch,)``, e.g. for an encoder without a vocabulary head). ``inputs``: one sequence (batch 1).
    ``stack``: whose input tokens to score (default: the encoder of an encoder-decoder, the only stack
    otherwise). ``steps``: Gauss-Legendre nodes for integrated gradients. Errors: ``ValueError`` for
    an unknown method, ``steps < 1`` or a batch of more than one.
    """
    if method not in ("input_x_gradient", "integrated_gradients"):
        raise ValueError(f"method must be 'input_x_gradient' or 'integrated_gradients', got {method!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    view = ModelView(model)
    inputs = view.prepare(inputs)
    if view.batch_size(inputs) != 1:
        raise ValueError("pass one sequence (batch size 1)")
    sv = view.stack(stack or ("encoder" if view.family == "encoder-decoder" else None))
    metric = _target_metric(target, position)
    tok = _names.embed(model, sv.name, "tok_embed")
    _, cache = view.cache(inputs, [tok])
    emb = cache[tok]  # (1, seq, d)
    with torch.no_grad():
        value = float(metric(view.run(inputs))[0])

    def grads(points: Tensor) -> Tensor:
        points = points.detach().requires_grad_(True)
        f = _f_on_embeddings(view, inputs, sv.name, metric, points)
        return torch.autograd.grad(f.sum(), points)[0]

    if method == "input_x_gradient":
        scores = (emb * grads(emb)).sum(dim=-1)[0].double()
        return Saliency(scores, method, value, None, None, sv.name)
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = torch.tensor((nodes + 1) / 2, dtype=emb.dtype)
    weights = torch.tensor(weights / 2, dtype=torch.float64)
    total = torch.zeros_like(emb[0], dtype=torch.float64)
    for start in range(0, steps, STEPS_PER_PASS):
        a = alphas[start:start + STEPS_PER_PASS]
        g = grads(a[:, None, None] * emb)  # baseline 0: the path is a * e
        total += (weights[start:start + STEPS_PER_PASS, None, None] * g.double()).sum(dim=0)
    scores = (emb[0].double() * total).sum(dim=-1)
    with torch.no_grad():
        baseline_value = float(_f_on_embeddings(view, inputs, sv.name, metric, torch.zeros_like(emb))[0])
    return Saliency(scores, method, value, baseline_value, steps, sv.name)
