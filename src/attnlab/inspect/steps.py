"""The one attention function's steps on queries, keys and values you give it (hand-set numbers to teach with).

The walkthrough's toy shows scaled dot-product attention on three two-number vectors. It runs the
library's own ``attention`` (the ``math`` backend, which computes the weights) and reads the scores
before the softmax off its score hook, so the page draws the function's numbers, not a copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from attnlab.nn import HookPoint, attention


@dataclass(frozen=True)
class AttentionSteps:
    """``scores`` (scaled, masked, before the softmax) and ``weights`` ``(batch, heads, q_len, k_len)``;
    ``out`` ``(batch, heads, q_len, d_k)``; q's dtype."""

    scores: Tensor
    weights: Tensor
    out: Tensor


def attention_steps(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> AttentionSteps:
    """``attnlab.nn.attention`` with the ``math`` backend on ``q`` ``(batch, heads, q_len, d_k)`` and ``k``,
    ``v`` ``(batch, kv_heads, k_len, d_k)``, its scores recorded by its score hook. Raises what
    ``attention`` raises (``ValueError`` for wrong shapes)."""
    recorded: dict[str, Tensor] = {}
    point = HookPoint()
    point.register_forward_hook(lambda _m, _i, out: recorded.__setitem__("scores", out.detach()))
    out, weights = attention(q, k, v, mask, backend="math", need_weights=True, score_hook=point)
    if weights is None:  # the math backend always returns them; a silent None would be a bug
        raise RuntimeError("the math attention backend returned no weights")
    return AttentionSteps(recorded["scores"], weights, out)
