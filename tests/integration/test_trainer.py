"""The ``Trainer`` on its own (issue 24 item 4): its ``state_dict`` is what a checkpoint saves, and a trainer
restored from a checkpoint continues the run with bitwise the same losses as ``train`` (CPU, float32)."""

from __future__ import annotations

import pytest
import torch

from attnlab.device import choose_precision
from attnlab.train.config import TrainConfig
from attnlab.train.distributed import DistEnv
from attnlab.train.loop import make_task_for, train
from attnlab.train.trainer import Trainer
from attnlab.weights.checkpoint import load_checkpoint, load_training_state

pytestmark = pytest.mark.usefixtures("one_thread")


def config(tmp_path, out: str, iters: int, **changes) -> TrainConfig:
    """A tiny run whose schedule decays over 6 steps whatever ``iters`` is (so 3 + 3 steps = 6 steps)."""
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat and the dog ran to its bed.\n" * 200)
    return TrainConfig(data=str(tmp_path / "corpus.txt"), out=str(tmp_path / out), iters=iters, decay_iters=6,
                       model_overrides={"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 16},
                       batch_size=4, warmup=2, eval_interval=3, eval_iters=2, progress=False, lr=3e-3,
                       precision="fp32", **changes)


def test_a_restored_trainer_continues_the_run_bitwise(tmp_path) -> None:
    whole = train(config(tmp_path, "whole", 6))
    train(config(tmp_path, "half", 3))

    cfg = config(tmp_path, "half", 6, resume=True)
    last = tmp_path / "half" / "last"
    saved, ckpt = load_training_state(last), load_checkpoint(last)
    env = DistEnv()
    task = make_task_for(cfg)
    task.prepare(ckpt.tokenizer, ckpt.config, tmp_path / "half" / "data", env, reuse=True)
    trainer = Trainer.create(cfg, env, task, ckpt.model, ckpt.tokenizer, choose_precision("fp32", env.device), {}, "t")
    assert trainer.state_dict()["step"] == 0
    trainer.restore(saved)
    ckpt.model.train()

    assert trainer.state_dict() == {key: saved.info[key] for key in ("step", "best_val", "schedule")}
    assert trainer.state_dict()["step"] == 3 and trainer.schedule.decay_steps == 6
    losses = [trainer.step().loss for _ in range(3)]
    assert losses == whole.losses[3:]  # bitwise: the same floats
    assert trainer.state_dict()["step"] == 6
    assert torch.isfinite(torch.tensor(trainer.evaluate()["val_loss"]))
