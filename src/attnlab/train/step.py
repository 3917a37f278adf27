"""The optimizer step: one update rule for every place that trains a model.

``apply_update`` is the project's one optimizer update (unscale an fp16 gradient scaler's gradients,
clip the global gradient norm, step); ``attnlab.train.trainer.Trainer.step`` calls it for ``attnlab
train``, and ``train_step`` wraps it for the short loops of the experiments and the web demo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


def apply_update(model: nn.Module, optimizer: Any, clip: float, scaler: torch.amp.GradScaler | None = None) -> None:
    """Update ``model``'s parameters from the gradients they hold: with ``scaler`` (fp16) first unscale
    them so that clipping sees the true gradients; clip their global norm to ``clip`` (0: no clipping);
    step ``optimizer`` (a ``torch.optim`` optimizer or ``attnlab.train.optim.Optimizers``; through
    ``scaler.step``, which skips the step when fp16 overflowed, then ``scaler.update`` shrinks or grows
    the scale). The gradients are left as they are (the caller clears them)."""
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if scaler is not None:
        scaler.step(optimizer)  # skipped when fp16 overflowed; the scale then shrinks
        scaler.update()
    else:
        optimizer.step()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], Tensor],
               clip: float = 1.0) -> float:
    """One optimizer step on ``loss_fn()`` (a 0-d float tensor): clear the gradients, backpropagate,
    clip the global gradient norm to ``clip`` (0: no clipping), update (``apply_update``). Returns the
    loss (before the update) as a Python float. ``attnlab.train.train`` is the full loop (schedule,
    accumulation, evaluation, checkpoints); this is its core for loops of a few hundred steps."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    apply_update(model, optimizer, clip)
    return float(loss.detach())
