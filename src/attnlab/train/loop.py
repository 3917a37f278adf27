"""The training loop: one explicit loop a reader can follow from top to bottom.

Per optimizer step: set the learning rate from the schedule, run ``accum`` micro-batches forward and
backward (gradients add up), clip the gradient norm, step AdamW, log. Every ``eval_interval`` steps:
estimate the validation loss and write the ``last`` checkpoint (and ``best`` when it improved).

Everything the next step depends on -- weights, AdamW moments, the step counter, the data sampler's
generator and torch's RNG -- is in the checkpoint, so ``resume=True`` continues with bitwise the same
losses as a run that was never interrupted (CPU, float32). A first Ctrl-C finishes the current step,
saves and returns; a loss that turns NaN or infinite stops the run before the bad update is applied,
leaving the last good checkpoint as it was.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnlab.models import build_model, preset
from attnlab.models.init import init_weights
from attnlab.tokenizers import BPETokenizer, CharTokenizer, Tokenizer
from attnlab.train import distributed
from attnlab.train.data import corpus_files, iter_text
from attnlab.train.schedule import WarmupCosine
from attnlab.train.tasks import DEFAULT_PRESET, TASKS, DataSpec, Task, make_task
from attnlab.weights.checkpoint import (
    TrainingState,
    load_checkpoint,
    load_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message gives the step and the checkpoint that was kept."""


@dataclass(kw_only=True)
class TrainConfig:
    """A training run. Defaults follow nanoGPT's Shakespeare-char CPU recipe where they overlap."""

    data: str
    out: str
    task: str = "lm"  # see attnlab.train.tasks.TASKS
    preset: str | None = None  # default: the task's (tasks.DEFAULT_PRESET)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None  # "char" | "bpe"; default: char for lm, bpe (with special tokens) otherwise
    bpe_vocab_size: int = 1024
    target_data: str | None = None  # translation: the target side as a second, line-aligned file
    val_data: str | None = None  # classification/translation: a held-out file instead of a random split
    val_fraction: float = 0.1
    iters: int = 2000
    batch_size: int = 12  # per process; the global batch is batch_size * world_size
    accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    decay_iters: int | None = None  # default: iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    label_smoothing: float = 0.1  # translation only (Vaswani et al. 2017, section 5.4)
    eval_interval: int = 250
    eval_iters: int = 20
    bf16: bool = False
    compile: bool = False
    seed: int = 1337
    snapshots: tuple[int, ...] = ()
    snapshot_dtype: str = "bfloat16"
    progress: bool = True
    resume: bool = False

    def __post_init__(self) -> None:
        for key in ("iters", "batch_size", "accum", "eval_interval", "eval_iters"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; tasks: {', '.join(TASKS)}")
        if self.tokenizer is None:
            self.tokenizer = "char" if self.task == "lm" else "bpe"
        if self.tokenizer not in ("char", "bpe"):
            raise ValueError(f"tokenizer must be 'char' or 'bpe', got {self.tokenizer!r}")
        if self.tokenizer == "char" and self.task != "lm":
            raise ValueError(f"the {self.task} task needs special tokens (padding, ...): use --tokenizer bpe")
        if self.preset is None:
            self.preset = DEFAULT_PRESET[self.task]
        if self.target_data is not None and self.task != "translation":
            raise ValueError("target_data (a second, aligned file) is for the translation task")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass
class TrainResult:
    out: Path
    step: int
    losses: list[float]  # training loss of each step run by this call
    val_losses: dict[int, float]
    best_val: float
    stopped: str  # "done" | "interrupted"
    seconds: float
    val_metrics: dict[int, dict[str, float]] = field(default_factory=dict)  # every validation metric


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (decaying norms' gains and biases only hurts)."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()  # tied weights once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    except (RuntimeError, TypeError):  # fused kernels missing for this device/dtype
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def make_task_for(cfg: TrainConfig) -> Task:
    return make_task(cfg.task, DataSpec(
        data=cfg.data, target_data=cfg.target_data, val_data=cfg.val_data, val_fraction=cfg.val_fraction,
        batch_size=cfg.batch_size, eval_iters=cfg.eval_iters, seed=cfg.seed, label_smoothing=cfg.label_smoothing,
    ))


def train_tokenizer(cfg: TrainConfig, task: Task) -> Tokenizer:
    """A tokenizer learnt from the training text (for sentence tasks, the training split only)."""
    texts = task.tokenizer_texts()
    source = iter_text(corpus_files(cfg.data, cfg.seed)) if texts is None else texts
    if cfg.tokenizer == "char":
        return CharTokenizer.train(source)
    return BPETokenizer.train(source, vocab_size=cfg.bpe_vocab_size, special_tokens=task.special_tokens)


@contextlib.contextmanager
def _catch_ctrl_c(flag: dict[str, bool]) -> Iterator[None]:
    """First Ctrl-C: ask the loop to stop after this step; a second one interrupts at once."""

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Metrics:
    """Append-only JSONL log (main rank only); a resumed run first drops rows past its checkpoint."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            rows = [line for line in path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if json.loads(r).get("step", 0) <= resume_step]
            path.write_text("".join(r + "\n" for r in kept))
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) a training run; see the module docstring for what is saved and when."""
    env = distributed.setup()
    out = Path(cfg.out)
    last_dir, best_dir = out / "last", out / "best"

    # ---- task, model, tokenizer, data (resumed from the checkpoint, or built fresh)
    task = make_task_for(cfg)
    resume_state: TrainingState | None = None
    if cfg.resume:
        ckpt = load_checkpoint(last_dir)
        tokenizer, config, model = ckpt.tokenizer, ckpt.config, ckpt.model
        resume_state = load_training_state(last_dir)
    else:
        config = preset(cfg.preset).replace(**cfg.model_overrides)  # type: ignore[arg-type]
        if config.family != task.family:
            raise ValueError(f"the {cfg.task} task trains {task.family} models; preset {cfg.preset!r} is "
                             f"{config.family!r} (default for this task: {DEFAULT_PRESET[cfg.task]!r})")
        tokenizer = train_tokenizer(cfg, task)
        config = task.configure(config, tokenizer)
        torch.manual_seed(cfg.seed)
        model = build_model(config)
        init_weights(model, config)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
    task.prepare(tokenizer, config, out / "data", env, reuse=cfg.resume)

    optimizer = make_optimizer(model, cfg)
    schedule = WarmupCosine(cfg.lr, cfg.min_lr, min(cfg.warmup, cfg.iters), cfg.decay_iters or cfg.iters)
    step, best_val = 0, math.inf
    if resume_state is not None:
        assert resume_state.optimizer is not None
        optimizer.load_state_dict(resume_state.optimizer)
        task.set_state(resume_state.tensors)
        set_rng_state(resume_state.tensors)
        step, best_val = int(resume_state.info["step"]), float(resume_state.info["best_val"])
    model.train()
    runner = distributed.wrap(model, env)
    if cfg.compile:
        runner = torch.compile(runner)

    def save(directory: Path, with_state: bool = True) -> None:
        if not env.is_main:
            return
        state = None
        if with_state:
            state = TrainingState(
                info={"step": step, "best_val": best_val, "schedule": asdict(schedule), "train_config": asdict(cfg),
                      "world_size": env.world_size},
                tensors={**task.state(), **rng_state()},
                optimizer=optimizer.state_dict(),
            )
        save_checkpoint(directory, model, tokenizer, state)

    def snapshot() -> None:
        if env.is_main and step in cfg.snapshots:
            save_checkpoint(out / "snapshots" / f"step-{step:06d}", model, tokenizer, dtype=getattr(torch, cfg.snapshot_dtype))

    metrics = _Metrics(out / "metrics.jsonl", env.is_main, step if cfg.resume else None)
    autocast = torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=cfg.bf16)
    losses: list[float] = []
    val_losses: dict[int, float] = {}
    val_metrics: dict[int, dict[str, float]] = {}
    flag = {"stop": False}
    stopped = "done"
    bar = _progress(cfg, step, env)
    started = time.perf_counter()
    if step == 0:
        snapshot()
    try:
        with _catch_ctrl_c(flag):
            while step < cfg.iters:
                if distributed.broadcast_flag(flag["stop"], env):
                    stopped = "interrupted"
                    break
                t0 = time.perf_counter()
                lr = schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                total = torch.zeros(())
                n_tokens = 0
                for micro in range(cfg.accum):
                    batch = task.next_batch()
                    n_tokens += batch.inputs[0].numel()
                    sync = micro == cfg.accum - 1 or not env.enabled
                    with (contextlib.nullcontext() if sync else runner.no_sync()), autocast:  # type: ignore[operator]
                        loss = task.loss(runner, batch, training=True) / cfg.accum
                    loss.backward()
                    total += loss.detach()
                loss_value = float(distributed.mean(total, env))
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"loss became {loss_value} at step {step + 1}; stopped before applying that update. "
                        f"The last good checkpoint is {last_dir} "
                        f"(try a lower --lr or a longer warmup)"
                    )
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                losses.append(loss_value)
                dt = time.perf_counter() - t0
                tokens_per_step = n_tokens * env.world_size  # input tokens (padding included)
                metrics.write({"step": step, "loss": loss_value, "lr": lr, "tokens_per_s": tokens_per_step / dt,
                               "time": time.perf_counter() - started})
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0 or step == cfg.iters:
                        bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens_per_step / dt:,.0f}")
                if step % cfg.eval_interval == 0 or step == cfg.iters:
                    model.eval()
                    scores = task.evaluate(runner, env, autocast)
                    model.train()
                    val = scores["val_loss"]
                    val_losses[step], val_metrics[step] = val, scores
                    metrics.write({"step": step, **scores, "time": time.perf_counter() - started})
                    if bar is not None:
                        bar.write(f"step {step}: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in scores.items()))
                    if val < best_val:
                        best_val = val
                        save(best_dir, with_state=False)
                    save(last_dir)
                snapshot()
            if stopped == "interrupted" or step % cfg.eval_interval != 0:
                save(last_dir)
    finally:
        if bar is not None:
            bar.close()
        metrics.close()
        if env.is_main:
            with contextlib.suppress(Exception):  # a plot must never hide the real outcome
                plot_losses(out / "metrics.jsonl", out / "loss.png")
        distributed.teardown(env)
    return TrainResult(out, step, losses, val_losses, best_val, stopped, time.perf_counter() - started, val_metrics)


def _progress(cfg: TrainConfig, step: int, env: distributed.DistEnv):
    if not (cfg.progress and env.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.iters, initial=step, unit="step", dynamic_ncols=True)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    """Training loss per step and validation loss per evaluation, as a PNG beside the checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), lw=0.8, alpha=0.7, label="train")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png_path)

