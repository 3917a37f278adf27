"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

Warmup keeps the first Adam steps small while its moment estimates are still noise; the cosine then
lowers the rate smoothly so the last steps refine instead of bouncing (Loshchilov & Hutter 2017).

Past ``decay_steps`` the rate stays at ``min_lr``. A run's schedule is saved in its checkpoint and a
resumed run uses the saved one, so extending a run (more ``iters``) continues at ``min_lr`` after the
original decay: the rate is continuous and never jumps back up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    """``lr(step)`` for ``step`` = number of optimizer steps already taken (0-based)."""

    lr: float
    min_lr: float
    warmup: int
    decay_steps: int

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup < 0 or self.decay_steps < self.warmup:
            raise ValueError(f"need 0 <= warmup <= decay_steps, got warmup={self.warmup}, decay_steps={self.decay_steps}")

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / (self.warmup + 1)
        if step >= self.decay_steps:
            return self.min_lr
        progress = (step - self.warmup) / max(1, self.decay_steps - self.warmup)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)
