"""Name what an attention head does, where one pattern clearly dominates.

Interpretability work (Clark et al. 2019, "What Does BERT Look At?"; Xiao et al. 2023 on attention
sinks) found a few patterns again and again: heads that look at the previous token, heads that park
their attention on the first token (a "sink" when nothing else is relevant), heads that look at the
token itself, and heads that spread attention broadly (a bag-of-words average). Labelling heads lets
a visitor scan a grid of layers x heads for the interesting ones. The labels are heuristics on the
recorded weights of one sentence, not a proof of function; the scores behind them travel with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

#: Every role attnlab gives a head, in one vocabulary, with the score at which the role is given: a mean share of
#: attention on the role's pattern in [0, 1] (``broad``: the rows' entropy as a fraction of the largest possible).
#: The one-sentence labels here (``ROLES``), the corpus roles (``attnlab.interpret.corpus.ROLES``, shown in the
#: head grid's legend and the training timeline) and ``attnlab.interpret.detect_heads``' default all read it.
ROLE_THRESHOLDS: dict[str, float] = {
    "previous-token": 0.4, "first-token": 0.5, "duplicate-token": 0.3, "pronoun-noun": 0.3, "induction": 0.4,
    "same-token": 0.5, "broad": 0.8,
}
#: The roles one sentence's attention map can show on its own (``detect_role``).
ROLES = ("previous-token", "first-token", "same-token", "broad")


@dataclass(frozen=True)
class HeadRole:
    """The detected role (``None`` when no pattern is clear) and the score of every pattern in [0, 1]."""

    role: str | None
    scores: dict[str, float] = field(default_factory=dict)


def pattern_scores(weights: Tensor, *, causal: bool) -> dict[str, float]:
    """Scores of one head's ``(q_len, k_len)`` self-attention weights (rows sum to 1).

    Row 0 is left out of the pattern scores: under a causal mask it can only see itself, so it would
    count towards every pattern at once. ``broad`` is the mean entropy of the rows divided by the
    entropy of a uniform row over the keys that row may see.
    """
    if weights.dim() != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"expected square (q_len, k_len) self-attention weights, got shape {tuple(weights.shape)}")
    n = weights.shape[0]
    if n < 2:
        return dict.fromkeys(ROLES, 0.0)
    w = weights.double()
    rows = torch.arange(1, n)
    previous = w[rows, rows - 1].mean().item()
    first = w[rows, 0].mean().item()
    same = w[rows, rows].mean().item()
    visible = (rows + 1).double() if causal else torch.full((n - 1,), float(n), dtype=torch.float64)
    p = w[rows]
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1)
    broad = (entropy / torch.log(visible)).mean().item()
    return {
        "previous-token": previous,
        "first-token": first,
        "same-token": same,
        "broad": min(max(broad, 0.0), 1.0),
    }


def detect_role(weights: Tensor, *, causal: bool) -> HeadRole:
    """The clearest role of one head, if any: of the specific patterns that reach their ``ROLE_THRESHOLDS``, the
    one with the largest margin over its threshold; else ``broad`` when that reaches its threshold."""
    scores = pattern_scores(weights, causal=causal)
    margins = {k: v - ROLE_THRESHOLDS[k] for k, v in scores.items() if k != "broad"}
    best = max(margins, key=lambda k: margins[k])
    if margins[best] >= 0:
        return HeadRole(best, scores)
    if scores["broad"] >= ROLE_THRESHOLDS["broad"]:
        return HeadRole("broad", scores)
    return HeadRole(None, scores)


def detect_roles(layer_weights: Tensor, *, causal: bool) -> list[HeadRole]:
    """Roles of every head of one layer; ``layer_weights`` is ``(heads, q_len, k_len)`` or has a batch of 1."""
    if layer_weights.dim() == 4:
        if layer_weights.shape[0] != 1:
            raise ValueError("pass one sentence at a time (batch size 1)")
        layer_weights = layer_weights[0]
    if layer_weights.dim() != 3:
        raise ValueError(f"expected (heads, q_len, k_len) weights, got shape {tuple(layer_weights.shape)}")
    return [detect_role(head, causal=causal) for head in layer_weights]

