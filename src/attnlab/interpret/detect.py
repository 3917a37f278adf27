"""Find heads by what they do on a controlled input: induction and duplicate-token heads.

The standard test (Elhage et al. 2021; Olsson et al. 2022, "In-context Learning and Induction
Heads") feeds random tokens repeated twice, ``[r_0 .. r_{n-1}, r_0 .. r_{n-1}]``. Nothing but the
repetition is predictable, so a head's attention in the second half shows its mechanism: an
*induction head* at position ``i`` looks at the token just after the earlier copy of the current
token (``i - n + 1``) and copies it; a *duplicate-token head* looks at the earlier copy itself
(``i - n``); a *previous-token head* looks at ``i - 1`` (the first half of the induction circuit).
A head's score is its mean attention on that key over the second half's positions and the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnlab.inspect.roles import ROLE_THRESHOLDS
from attnlab.interpret._model import ModelView
from attnlab.models.mode import evaluates

PATTERNS = ("induction", "duplicate-token", "previous-token")
#: A head is reported for a pattern when at least this share of its attention follows it: the role's threshold in
#: ``attnlab.inspect.roles.ROLE_THRESHOLDS`` (TransformerLens's ``detect_head`` examples use 0.3-0.5; uniform
#: attention over 2n keys scores ~1/2n).
THRESHOLDS: dict[str, float] = {p: ROLE_THRESHOLDS[p] for p in PATTERNS}


@dataclass
class HeadDetection:
    """``scores[pattern]``: ``(layers, heads)`` float in [0, 1]; ``heads[pattern]``: the ``(layer,
    head)`` pairs scoring at least ``thresholds[pattern]``, best first."""

    scores: dict[str, Tensor]
    heads: dict[str, list[tuple[int, int]]]
    thresholds: dict[str, float]
    seq_len: int
    stack: str
    tokens: Tensor = field(repr=False)

    def to_dict(self) -> dict:
        return {"scores": {k: v.tolist() for k, v in self.scores.items()},
                "heads": {k: [list(p) for p in v] for k, v in self.heads.items()},
                "thresholds": self.thresholds, "seq_len": self.seq_len, "stack": self.stack}


def repeated_random_tokens(vocab_size: int, seq_len: int, batch: int = 8, *, low: int = 0, seed: int = 0) -> Tensor:
    """``(batch, 2 * seq_len)`` int64: random tokens from ``[low, vocab_size)`` repeated once."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(low, vocab_size, (batch, seq_len), generator=g)
    return torch.cat([r, r], dim=1)


def pattern_scores(weights: Tensor, seq_len: int) -> dict[str, Tensor]:
    """Scores of attention ``weights`` ``(batch, heads, 2n, 2n)`` on repeated tokens; each ``(heads,)``."""
    n = seq_len
    q = torch.arange(n + 1, 2 * n)  # second half, from its second token (position n has no earlier "next")
    return {
        "induction": weights[:, :, q, q - n + 1].mean(dim=(0, 2)),
        "duplicate-token": weights[:, :, q, q - n].mean(dim=(0, 2)),
        "previous-token": weights[:, :, q, q - 1].mean(dim=(0, 2)),
    }


@evaluates
def detect_heads(
    model: nn.Module,
    *,
    seq_len: int | None = None,
    batch: int = 8,
    low: int = 0,
    seed: int = 0,
    threshold: float | None = None,
    stack: str | None = None,
) -> HeadDetection:
    """Score every head of a stack for induction, duplicate-token and previous-token attention.

    ``seq_len``: length of the random half (default: as long as ``max_len`` allows, at most 32);
    ``low``: smallest token id drawn (skip special tokens). For an encoder-decoder the repeated
    tokens are both the source and the target, and ``stack`` (default ``decoder``) picks whose heads
    are scored. Induction is defined for causal stacks; an encoder's heads can see the future copy as
    well, so its induction score is reported but means less. ``threshold``: one bar for every pattern
    (default: each pattern's ``THRESHOLDS``). ``ValueError`` if ``2 * seq_len``
    exceeds ``max_len`` or ``low`` leaves no tokens to draw.
    """
    view = ModelView(model)
    sv = view.stack(stack)
    max_len = view.config.max_len
    n = seq_len if seq_len is not None else min(32, max_len // 2)
    if n < 2 or 2 * n > max_len:
        raise ValueError(f"seq_len must be in [2, max_len // 2 = {max_len // 2}], got {n}")
    vocab = view.config.vocab_size
    if not 0 <= low < vocab:
        raise ValueError(f"low must lie in [0, vocab_size={vocab}), got {low}")
    tokens = repeated_random_tokens(vocab, n, batch, low=low, seed=seed).to(view.device)  # drawn on the CPU: same on every device
    inputs = (tokens, tokens) if view.family == "encoder-decoder" else tokens
    names = [f"{sv.name}.blocks.{layer}.attn.hook_weights" for layer in range(sv.n_layers)]
    _, cache = view.cache(inputs, names)
    per_layer = [pattern_scores(cache[name].float(), n) for name in names]
    scores = {p: torch.stack([s[p] for s in per_layer]) for p in PATTERNS}  # (layers, heads)
    bars = {p: THRESHOLDS[p] if threshold is None else threshold for p in PATTERNS}
    heads = {}
    for p, s in scores.items():
        found = [(int(i) // s.shape[1], int(i) % s.shape[1]) for i in s.flatten().argsort(descending=True)
                 if s.flatten()[i] >= bars[p]]
        heads[p] = found
    return HeadDetection(scores, heads, bars, n, sv.name, tokens)
