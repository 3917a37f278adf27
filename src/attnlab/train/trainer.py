"""The trainer: what a training run *is* between two steps, and the three things it does.

A ``Trainer`` holds the model, its optimizer, the learning-rate schedule, the fp16 gradient scaler
and the counters (``step``, ``best_val``). ``state_dict()`` is the run's own state (counters, schedule,
scaler) and ``load_state_dict()`` puts it back, so a checkpoint saves what the trainer is
(torchtitan's ``Trainer`` is ``Stateful`` the same way). It does three things:

- ``step()``: one optimizer step -- the learning rate from the schedule, ``accum`` micro-batches
  forward and backward (``backward_step``), a check that the loss is finite (before the update is
  applied), then ``attnlab.train.step.apply_update`` (unscale, clip, update: the one optimizer update
  of the project; the experiments and the web demo reach it through ``train_step``);
- ``evaluate()``: the task's validation metrics, the model in eval mode for the call;
- ``save()``: the checkpoint (``attnlab.weights.checkpoint`` writes its layout; sharded under FSDP),
  with the training state that makes ``resume`` continue bitwise.

``attnlab.train.loop.train`` builds one, restores it on ``resume`` and runs its steps; the loop owns the
run folder, the logging and when to evaluate and save.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnlab.device import Precision
from attnlab.tokenizers import Tokenizer
from attnlab.train import distributed
from attnlab.train.config import TrainConfig
from attnlab.train.optim import make_optimizer
from attnlab.train.schedule import WarmupCosine
from attnlab.train.step import apply_update
from attnlab.train.tasks import Batch, Task
from attnlab.weights.checkpoint import (
    CheckpointError,
    TrainingState,
    rng_state,
    save_checkpoint,
    set_rng_state,
    snapshot_dir,
)
from attnlab.weights.sharded import load_sharded_optimizer, save_sharded_checkpoint

KEPT = "kept from the run's start: "  # a resumed run's precision reason: the start's own, stored once


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message gives the step and the checkpoint that was kept."""


def backward_step(
    runner: nn.Module, model: nn.Module, task: Task, batches: Sequence[Batch], env: distributed.DistEnv,
    autocast: Any = None, scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, int]:
    """Forward and backward over one optimizer step's micro-batches, on every rank.

    The step's loss is the per-target loss summed over every real target of every micro-batch and
    rank, divided by their total count, so the gradients left in ``model``'s parameters are the same
    for one batch of 8, two micro-batches of 4 (``accum=2``) or two ranks of 4, whatever number of
    real targets each holds. Each micro-batch's *sum* is back-propagated (DDP averages
    across ranks in the last one's backward; the others skip the sync); then the target count is
    summed across ranks and the gradients scaled by ``world_size / count``. ``runner`` is
    ``model`` as the loop calls it (DDP-wrapped, compiled); ``autocast`` a context for the forward
    pass (bf16) or None; ``scaler`` a ``GradScaler`` (fp16) that scales each backward pass (the
    gradients stay scaled until ``scaler.unscale_``). The batches must be on ``env.device``. Returns the
    step's loss and target count (all ranks); with no target at all the gradients stay zero and the
    loss is 0.
    """
    autocast = autocast if autocast is not None else contextlib.nullcontext()
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    for i, batch in enumerate(batches):
        sync = i == len(batches) - 1 or not env.enabled
        with (contextlib.nullcontext() if sync else distributed.no_sync(runner, env)), autocast:
            loss_sum, n = task.loss(runner, batch, training=True)
        (loss_sum if scaler is None else scaler.scale(loss_sum)).backward()
        total += loss_sum.detach().double()
        count += n
    totals = distributed.sum(torch.stack([total, torch.tensor(float(count), dtype=torch.float64)]), env)
    n_all = int(totals[1])
    if n_all == 0:
        return 0.0, 0
    scale = env.world_size / n_all
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(scale)
    return float(totals[0] / n_all), n_all


@dataclass
class StepResult:
    """What one ``Trainer.step()`` did: the step's loss (per real target, all micro-batches and ranks),
    its learning rate and the input tokens it read on all ranks (padding included)."""

    loss: float
    lr: float
    tokens: int


@dataclass
class Trainer:
    """One run's model, optimizer, schedule, gradient scaler and counters (see the module docstring).

    Build it with ``Trainer.create``. ``out`` is the run folder (``last``/``best``/``snapshots`` inside);
    ``committed`` says whether this run has written its ``last`` checkpoint (a fresh run owns the folder
    from then on, and ``aside``, the previous run set aside by ``--overwrite``, is deleted).
    """

    cfg: TrainConfig
    env: distributed.DistEnv
    task: Task
    model: nn.Module
    tokenizer: Tokenizer
    precision: Precision
    fingerprints: dict[str, str | None]
    tag: str  # the run's temporary-name suffix (``attnlab.train.runs.temp_name``)
    runner: nn.Module
    optimizer: Any  # torch.optim.Optimizer | attnlab.train.optim.Optimizers
    schedule: WarmupCosine
    scaler: torch.amp.GradScaler | None = None
    step_count: int = 0
    best_val: float = math.inf
    committed: bool = False
    aside: Path | None = None
    sharded: bool = False
    autocast: Any = field(default_factory=contextlib.nullcontext)  # the forward pass's precision context

    @classmethod
    def create(cls, cfg: TrainConfig, env: distributed.DistEnv, task: Task, model: nn.Module, tokenizer: Tokenizer,
               precision: Precision, fingerprints: dict[str, str | None], tag: str) -> Trainer:
        """Wrap ``model`` (on ``env.device``) for ``cfg.strategy``, then build its optimizer, the schedule
        ``cfg`` asks for and, for fp16, a gradient scaler. Counters start at 0 (``restore`` for a resume)."""
        scaler = torch.amp.GradScaler(env.device.type) if precision.needs_grad_scaler else None
        runner = distributed.wrap(model, env, cfg.strategy)  # fsdp shards model's parameters in place
        optimizer = make_optimizer(model, cfg)
        schedule = WarmupCosine(cfg.lr, cfg.min_lr, min(cfg.warmup, cfg.iters), cfg.decay_iters or cfg.iters)
        return cls(cfg, env, task, model, tokenizer, precision, fingerprints, tag, runner, optimizer, schedule,
                   scaler, committed=cfg.resume, sharded=distributed.is_sharded(model),
                   autocast=precision.autocast(env.device))

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    # ------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The trainer's own state, plain JSON: ``step``, ``best_val``, ``schedule`` (its four numbers) and,
        with fp16, ``grad_scaler`` (the scaler's state dict)."""
        state: dict[str, Any] = {"step": self.step_count, "best_val": self.best_val, "schedule": asdict(self.schedule)}
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], where: Path | None = None) -> None:
        """Take back ``state_dict()``'s values (``where``: the checkpoint they came from, for messages).

        One rule for a resumed run, extended or not: the schedule is the one the run started with
        (warmup, cosine down to ``min_lr`` at its first ``--iters`` or ``--decay-iters``, then flat at
        ``min_lr``), so the learning rate continues where it was and never jumps back up. Raises
        ``CheckpointError`` for an unusable schedule or a state without ``step`` or ``best_val``."""
        where = where if where is not None else self.out / "last"
        saved_schedule = state.get("schedule")
        if isinstance(saved_schedule, dict):
            try:
                self.schedule = WarmupCosine(**saved_schedule)
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{where}: its saved schedule {saved_schedule!r} is unusable ({exc})") from None
        if self.scaler is not None and isinstance(state.get("grad_scaler"), dict):
            self.scaler.load_state_dict(state["grad_scaler"])
        if not {"step", "best_val"} <= set(state):
            raise CheckpointError(f"{where}: its training state records no step or best_val")
        self.step_count, self.best_val = int(state["step"]), float(state["best_val"])

    def restore(self, saved: TrainingState) -> None:
        """Continue the run ``saved`` (read from ``OUT/last``): optimizer moments (each rank its own
        pieces of a sharded one), the data sampler, the RNGs and ``load_state_dict``'s counters."""
        where = self.out / "last"
        if saved.sharded is not None:  # written by fsdp: each rank reads its pieces
            load_sharded_optimizer(saved.sharded, self.model, self.optimizer)
        else:
            try:
                self.optimizer.load_state_dict(saved.optimizer)
            except (ValueError, KeyError, RuntimeError) as exc:
                raise CheckpointError(f"{where}: optimizer state does not fit the model ({exc})") from None
        self.task.set_state(saved.tensors)
        set_rng_state(saved.tensors)
        self.load_state_dict(saved.info, where)

    # ---------------------------------------------------------------------------------- actions

    def step(self) -> StepResult:
        """One optimizer step (see the module docstring); ``step_count`` goes up by one.

        Raises ``TrainingDiverged`` when the loss is NaN or infinite, before the update is applied (the
        message names the step and the checkpoint kept)."""
        lr = self.schedule(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = [self.task.next_batch().to(self.env.device) for _ in range(self.cfg.accum)]
        tokens = sum(batch.inputs[0].numel() for batch in batches) * self.env.world_size
        loss, _ = backward_step(self.runner, self.model, self.task, batches, self.env, self.autocast, self.scaler)
        if not math.isfinite(loss):
            raise TrainingDiverged(self._diverged(loss))
        apply_update(self.model, self.optimizer, self.cfg.grad_clip, self.scaler)
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        return StepResult(loss, lr, tokens)

    def _diverged(self, loss: float) -> str:
        kept = (f"The last good checkpoint is {self.out / 'last'}" if self.committed else
                f"No checkpoint had been written yet (the first is at step "
                f"{min(self.cfg.eval_interval, self.cfg.iters)}), so {self.out} is left as it was")
        return (f"loss became {loss} at step {self.step_count + 1}; stopped before applying that update. "
                f"{kept} (try a lower --lr or a longer warmup)")

    def evaluate(self) -> dict[str, float]:
        """The task's validation metrics (``val_loss`` among them) over every rank, the model in eval
        mode for the call and back in training mode after."""
        self.model.eval()
        try:
            return self.task.evaluate(self.runner, self.env, self.autocast)
        finally:
            self.model.train()

    def training_state(self) -> TrainingState:
        """What ``save`` writes beside the weights: ``state_dict()``, the run's identity (its config, world
        size, data fingerprints, device, precision), the sampler and RNG states, the optimizer."""
        own = self.state_dict()
        scaler = {"grad_scaler": own.pop("grad_scaler")} if "grad_scaler" in own else {}
        info = {**own, "train_config": asdict(self.cfg), "world_size": self.env.world_size,
                "fingerprints": self.fingerprints, "device": str(self.env.device),
                "precision": {"name": self.precision.name, "reason": self.precision.reason.removeprefix(KEPT)},
                **scaler}
        return TrainingState(info=info, tensors={**self.task.state(), **rng_state()},
                             optimizer=None if self.sharded else self.optimizer.state_dict())

    def save(self, directory: Path, with_state: bool = True) -> None:
        """Write a checkpoint of the model (and, ``with_state``, the training state) to ``directory``: the
        main rank alone, or every rank its shards under FSDP. The first save of ``OUT/last`` commits the
        run (``committed``; the run set aside by ``--overwrite`` is deleted)."""
        if not (self.env.is_main or self.sharded):
            return
        state = self.training_state() if with_state else None
        if self.sharded:  # every rank writes its shards
            save_sharded_checkpoint(directory, self.model, self.tokenizer, state,
                                    self.optimizer if with_state else None, tag=self.tag)
        else:
            save_checkpoint(directory, self.model, self.tokenizer, state)
        if directory == self.out / "last" and not self.committed:
            self.committed = True
            if self.aside is not None:
                shutil.rmtree(self.aside, ignore_errors=True)

    def snapshot(self) -> None:
        """Save the weights alone (``--snapshot-dtype``) when this step is one of ``--snapshots``."""
        if self.env.is_main and self.step_count in self.cfg.snapshots:
            save_checkpoint(snapshot_dir(self.out, self.step_count), self.model, self.tokenizer,
                            dtype=getattr(torch, self.cfg.snapshot_dtype))
