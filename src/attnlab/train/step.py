"""One optimizer step, the same everywhere a small loop trains a model (experiments, the web demo)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], Tensor],
               clip: float = 1.0) -> float:
    """One optimizer step on ``loss_fn()`` (a 0-d float tensor): clear the gradients, backpropagate,
    clip the global gradient norm to ``clip`` (0: no clipping), update. Returns the loss (before the
    update) as a Python float. ``attnlab.train.train`` is the full loop (schedule, accumulation,
    evaluation, checkpoints); this is its core for loops of a few hundred steps."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return float(loss.detach())
