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

ROLES = ("previous-token", "first-token", "same-token", "broad")

#: A specific role is claimed when the head puts at least this share of its attention on the pattern.
PATTERN_THRESHOLD = 0.5
#: A head is "broad" when its rows' entropy is at least this fraction of the maximum possible.
BROAD_THRESHOLD = 0.8


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
    """The clearest role of one head, if any (see module docstring)."""
    scores = pattern_scores(weights, causal=causal)
    specific = {k: v for k, v in scores.items() if k != "broad"}
    best = max(specific, key=lambda k: specific[k])
    if specific[best] >= PATTERN_THRESHOLD:
        return HeadRole(best, scores)
    if scores["broad"] >= BROAD_THRESHOLD:
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

