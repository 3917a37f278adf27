"""The training loop: one explicit loop a reader can follow from top to bottom.

Per optimizer step (``Trainer.step``, ``attnlab.train.trainer``): set the learning rate from the
schedule, run ``accum`` micro-batches forward and backward (``backward_step``: the loss is per real
target over all micro-batches and ranks), clip the gradient norm, step the optimizer (``--optimizer``:
AdamW, or Muon with AdamW; see ``attnlab.train.optim``); then log. Every ``eval_interval`` steps:
estimate the validation loss (``Trainer.evaluate``) and write the ``last`` checkpoint (and ``best``
when it improved; ``Trainer.save``). This module owns the run: its folder, its data, its log and
when to evaluate and save; the ``Trainer`` owns the state a checkpoint saves.

Everything the next step depends on -- weights, optimizer state, the step counter, the data sampler's
generator and torch's RNG -- is in the checkpoint, so ``resume=True`` continues with bitwise the same
losses as a run that was never interrupted (CPU, float32). A first Ctrl-C finishes the current step,
saves and returns; a loss that turns NaN or infinite stops the run before the bad update is applied,
leaving the last good checkpoint as it was.

A run folder holds one run (``attnlab.train.runs``): the live run holds its lock (one writer at a
time; rank 0 under torchrun); a fresh run into a folder that holds a run is refused unless
``overwrite``; the tokenizer and the data are prepared in ``OUT/.prepare.tmp-PID`` (rank 0's process
id, the same name on every rank and machine) and moved in when training starts; a run that fails before its first checkpoint is undone (the previous
run, set aside by ``overwrite``, comes back). ``resume`` refuses a config that differs from the saved
one outside ``RESUME_MAY_CHANGE`` or data whose content fingerprint differs (``check_resume``), and
keeps the saved learning-rate schedule, so extending ``iters`` continues at ``min_lr`` past the
original decay instead of jumping back up.

Hardware: the model and every batch live on ``cfg.device`` (``auto``: CUDA, else MPS, else the CPU;
under torchrun each process takes ``cuda:LOCAL_RANK`` or the CPU). The forward pass runs in the
precision ``attnlab.device.choose_precision`` picks for ``cfg.precision`` on that device (bf16 autocast
only where it is faster; fp16 with a gradient scaler); the choice and its reason are printed on the
first line (stderr) and saved in the checkpoint's training state (``device``, ``precision``). A resumed
run with ``precision auto`` keeps the precision the run started with, so its numbers do not change.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnlab.device import Precision, Workload, choose_precision, set_threads
from attnlab.models import build_model, preset
from attnlab.models.init import init_weights
from attnlab.tokenizers import BPETokenizer, CharTokenizer, Tokenizer
from attnlab.train import distributed
from attnlab.train.config import TrainConfig
from attnlab.train.data import corpus_files, data_matches, iter_text, text_sha256
from attnlab.train.runs import (
    HeldFolder,
    RunFolderError,
    check_resume,
    fingerprints_of,
    hold_run_folder,
    restore_run_folder,
    saved_train_config,
    temp_name,
)
from attnlab.train.tasks import DEFAULT_PRESET, DataSpec, Task, make_task
from attnlab.train.trainer import KEPT, StepResult, Trainer
from attnlab.train.trainer import TrainingDiverged as TrainingDiverged  # (a public name of the loop)
from attnlab.train.trainer import backward_step as backward_step
from attnlab.weights.checkpoint import (
    CheckpointError,
    TrainingState,
    load_checkpoint,
    load_training_state,
    remove_stale_temporaries,
)


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
    """Append-only JSONL log (main rank only); a resumed run first drops rows past its checkpoint.

    A last line cut short (the process was killed while writing it) is dropped; any other line that
    is not JSON is an error naming the file and the line.
    """

    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
            kept = []
            for i, line in enumerate(lines, 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    if i == len(lines):
                        break  # a line cut short by a kill: the step it logged is redone anyway
                    raise RunFolderError(f"{path}: line {i} is not JSON ({line[:40]!r}); fix or delete that line") from None
                if isinstance(row, dict) and row.get("step", 0) <= resume_step:
                    kept.append(line)
            path.write_text("".join(r + "\n" for r in kept))
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()


def train(cfg: TrainConfig, *, threads: int | None = None) -> TrainResult:
    """Run (or resume) a training run; see the module docstring for what is saved and when.

    ``threads``: None leaves torch's thread count as it is; 0 chooses one (``attnlab.device.choose_threads``,
    logged on the first line); N uses N.

    Raises ``RunFolderError`` (a live run holds the folder, it holds another run, a resume would change
    the run, a machine of a multi-machine run does not see it),
    ``DataError``, ``CheckpointError``, ``TrainingDiverged``, ``attnlab.device.DeviceError`` (a device or
    precision this machine lacks) or ``ValueError``; a run that fails before its first checkpoint leaves
    ``cfg.out`` as it found it.
    """
    env = distributed.setup(cfg.device)
    threads_line = set_threads(threads) if threads is not None else f"threads {torch.get_num_threads()}"
    try:
        return _train(cfg, env, threads_line)
    finally:
        distributed.teardown(env)


def _train(cfg: TrainConfig, env: distributed.DistEnv, threads_line: str) -> TrainResult:
    tag = temp_name(env)  # the same on every rank, on every machine
    with hold_run_folder(cfg, env) as held:  # one live run per folder; refusals stop every rank
        return _train_held(cfg, env, threads_line, held, tag)


def _train_held(cfg: TrainConfig, env: distributed.DistEnv, threads_line: str, held: HeldFolder,
                tag: str) -> TrainResult:
    # ---- the saved run (resume), compared with this config before anything else is read
    fingerprints = fingerprints_of(cfg)  # a missing data file is named here, before anything else
    resume_state = _saved_run(cfg, fingerprints) if cfg.resume else None
    if resume_state is None:
        _check_family(cfg)
    task = make_task_for(cfg)
    model, tokenizer = _model_and_tokenizer(cfg, task, resume_state)
    model.to(env.device)
    fingerprints["tokenizer"] = text_sha256(tokenizer.to_json())
    aside = _move_in_data(cfg, env, task, tokenizer, model, fingerprints, held, tag)
    trainer: Trainer | None = None
    try:
        trainer = _start(cfg, env, task, model, tokenizer, resume_state, fingerprints, threads_line, tag)
        trainer.aside = aside  # a fresh run owns the folder once it has written a checkpoint; aside goes then
        return _run(trainer)
    except BaseException:
        if env.is_main and not (cfg.resume or (trainer is not None and trainer.committed)):
            restore_run_folder(Path(cfg.out), aside, held.created)
        raise


def _saved_run(cfg: TrainConfig, fingerprints: dict[str, str | None]) -> TrainingState:
    """The training state of ``OUT/last``, after ``check_resume`` accepted this config against it."""
    last_dir = Path(cfg.out) / "last"
    resume_state = load_training_state(last_dir)
    if resume_state.optimizer is None and resume_state.sharded is None:
        raise CheckpointError(f"{last_dir}: holds no optimizer state (an export?), so it cannot be resumed")
    check_resume(saved_train_config(cfg.out), resume_state.info, cfg, fingerprints)
    return resume_state


def _check_family(cfg: TrainConfig) -> None:
    """Refuse (``ValueError``) a fresh run whose preset is not of the family its task trains."""
    family = preset(cfg.preset).family  # type: ignore[arg-type]
    task_family = {"lm": "decoder", "translation": "encoder-decoder"}.get(cfg.task, "encoder")
    if family != task_family:
        raise ValueError(f"the {cfg.task} task trains {task_family} models; preset {cfg.preset!r} is "
                         f"{family!r} (default for this task: {DEFAULT_PRESET[cfg.task]!r})")


def _model_and_tokenizer(cfg: TrainConfig, task: Task, resume_state: TrainingState | None) -> tuple[nn.Module, Tokenizer]:
    """The model and tokenizer of the run (on the CPU): read from ``OUT/last`` on resume, else built
    fresh (a tokenizer learnt from the data, weights initialised from ``cfg.seed``)."""
    if resume_state is not None:
        ckpt = load_checkpoint(Path(cfg.out) / "last")
        return ckpt.model, ckpt.tokenizer
    config = preset(cfg.preset).replace(**cfg.model_overrides)  # type: ignore[arg-type]
    tokenizer = train_tokenizer(cfg, task)
    config = task.configure(config, tokenizer)
    torch.manual_seed(cfg.seed)
    model = build_model(config)
    init_weights(model, config)  # on the CPU: the same initial weights on every device
    return model, tokenizer


def _move_in_data(cfg: TrainConfig, env: distributed.DistEnv, task: Task, tokenizer: Tokenizer, model: nn.Module,
                  fingerprints: dict[str, str | None], held: HeldFolder, tag: str) -> Path | None:
    """Prepare the task's data in ``OUT/.prepare.tmp-TAG`` (or reuse ``OUT/data`` on a resume whose data
    matches) and move it in; ``--overwrite`` sets the previous run aside first. Returns that folder."""
    out = Path(cfg.out)
    if env.is_main:
        remove_stale_temporaries(out)
    prep = out / f".prepare.tmp-{tag}"
    reuse = cfg.resume and data_matches(out / "data", fingerprints["data"] or "", fingerprints["tokenizer"])
    try:
        task.prepare(tokenizer, model.config, out / "data" if reuse else prep / "data", env, reuse=reuse)
    except BaseException:
        if env.is_main:
            shutil.rmtree(prep, ignore_errors=True)  # (a folder this run created goes with its lock)
        raise
    distributed.barrier(env)  # every rank has opened the prepared data before it moves
    aside: Path | None = None
    if env.is_main:
        if held.replaced:  # --overwrite: the old run steps aside until the new one writes its first checkpoint
            aside = out / f".previous-run-{os.getpid()}"
            aside.mkdir()
            for entry in held.replaced:
                os.replace(entry, aside / entry.name)
        if (prep / "data").is_dir():  # memory maps opened on it stay valid across the rename
            if (out / "data").exists():
                shutil.rmtree(out / "data")  # a resume's stale data (ours: checked by data_matches)
            os.replace(prep / "data", out / "data")
        shutil.rmtree(prep, ignore_errors=True)
    distributed.barrier(env)
    return aside


def _start(cfg: TrainConfig, env: distributed.DistEnv, task: Task, model: nn.Module, tokenizer: Tokenizer,
           resume_state: TrainingState | None, fingerprints: dict[str, str | None], threads_line: str,
           tag: str) -> Trainer:
    """The run's ``Trainer``: precision chosen (and printed), optimizer built, the saved run restored."""
    precision = agreed_precision(_precision(cfg, env, resume_state, lambda: training_workload(model, task, env)), env)
    if env.is_main:
        print(f"attnlab train: device {env.device}" + (f" x {env.world_size} processes" if env.enabled else "")
              + f"; precision {precision.name} ({precision.reason}); {threads_line}", file=sys.stderr, flush=True)
    trainer = Trainer.create(cfg, env, task, model, tokenizer, precision, fingerprints, tag)
    if resume_state is not None:
        trainer.restore(resume_state)
    model.train()
    if cfg.compile:
        trainer.runner = torch.compile(trainer.runner)
    return trainer


class _Log:
    """What a run reports while it trains: ``metrics.jsonl`` rows, the progress bar, and the losses the
    call returns (``TrainResult``)."""

    def __init__(self, trainer: Trainer) -> None:
        cfg, env, step = trainer.cfg, trainer.env, trainer.step_count
        self.cfg = cfg
        self.metrics = _Metrics(trainer.out / "metrics.jsonl", env.is_main, step if cfg.resume else None)
        self.bar = _progress(cfg, step, env)
        self.losses: list[float] = []
        self.val_losses: dict[int, float] = {}
        self.val_metrics: dict[int, dict[str, float]] = {}
        self.started = time.perf_counter()

    def step(self, step: int, result: StepResult, seconds: float) -> None:
        self.losses.append(result.loss)
        self.metrics.write({"step": step, "loss": result.loss, "lr": result.lr,
                            "tokens_per_s": result.tokens / seconds, "time": time.perf_counter() - self.started})
        if self.bar is not None:
            self.bar.update(1)
            if step % 10 == 0 or step == self.cfg.iters:
                self.bar.set_postfix(loss=f"{result.loss:.4f}", tok_s=f"{result.tokens / seconds:,.0f}")

    def evaluation(self, step: int, scores: dict[str, float]) -> None:
        self.val_losses[step], self.val_metrics[step] = scores["val_loss"], scores
        self.metrics.write({"step": step, **scores, "time": time.perf_counter() - self.started})
        if self.bar is not None:
            self.bar.write(f"step {step}: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in scores.items()))

    def close(self, out: Path, is_main: bool) -> None:
        if self.bar is not None:
            self.bar.close()
        self.metrics.close()
        if is_main:
            with contextlib.suppress(Exception):  # a plot must never hide the real outcome
                plot_losses(out / "metrics.jsonl", out / "loss.png")


def _run(trainer: Trainer) -> TrainResult:
    """Train until ``cfg.iters`` steps or a Ctrl-C; evaluate and save every ``eval_interval`` steps."""
    cfg, env, out = trainer.cfg, trainer.env, trainer.out
    log = _Log(trainer)
    flag = {"stop": False}
    stopped = "done"
    if trainer.step_count == 0:
        trainer.snapshot()
    try:
        with _catch_ctrl_c(flag):
            while trainer.step_count < cfg.iters:
                if distributed.broadcast_flag(flag["stop"], env):
                    stopped = "interrupted"
                    break
                _train_one(trainer, log)
            if stopped == "interrupted" or trainer.step_count % cfg.eval_interval != 0:
                trainer.save(out / "last")
    finally:
        log.close(out, env.is_main)
    return TrainResult(out, trainer.step_count, log.losses, log.val_losses, trainer.best_val, stopped,
                       time.perf_counter() - log.started, log.val_metrics)


def _train_one(trainer: Trainer, log: _Log) -> None:
    """One step, logged; then, when due, an evaluation with the ``best`` and ``last`` saves, a snapshot."""
    t0 = time.perf_counter()
    result = trainer.step()
    step, cfg = trainer.step_count, trainer.cfg
    log.step(step, result, time.perf_counter() - t0)
    if step % cfg.eval_interval == 0 or step == cfg.iters:
        scores = trainer.evaluate()
        log.evaluation(step, scores)
        if scores["val_loss"] < trainer.best_val:
            trainer.best_val = scores["val_loss"]
            trainer.save(trainer.out / "best", with_state=False)
        trainer.save(trainer.out / "last")
    trainer.snapshot()


def training_workload(model: nn.Module, task: Task, env: distributed.DistEnv) -> Workload:
    """One training step of ``model`` on a batch of ``task``'s real shape, for ``choose_precision("auto")``
    to time in fp32 and bf16 autocast: a forward pass and a backward pass, then the gradients cleared
    (no optimizer step: the model is left as it was). The batch is the task's next one, and the task's
    sampler is put back, so the run still starts from its first batch."""
    saved = task.state()
    batch = task.next_batch().to(env.device)
    task.set_state(saved)
    config = getattr(model, "config", None)
    shapes = [tuple(t.shape) for t in batch.inputs]

    def step(autocast: contextlib.AbstractContextManager) -> None:
        was_training = model.training
        model.train()
        try:
            with autocast:
                loss = task.loss(model, batch, training=True).total
            loss.backward()
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)

    key = f"{type(task).__name__} {config.to_dict() if config is not None else type(model).__name__}; batch {shapes}"
    return Workload(key=key, step=step, what="training step")


def _precision(cfg: TrainConfig, env: distributed.DistEnv, resume_state: TrainingState | None,
               workload: Callable[[], Workload]) -> Precision | None:
    """``choose_precision`` for this run; a resumed ``auto`` run keeps the precision it started with.
    ``auto`` on a CPU measures ``workload()`` (``training_workload``) on the main process, and every
    process of a distributed run takes its choice."""
    info = resume_state.info if resume_state is not None else {}
    saved = info.get("precision") or {}
    old_flag = (info.get("train_config") or {}).get("bf16")  # runs saved before --precision had bf16: bool
    if not saved and isinstance(old_flag, bool):
        saved = {"name": "bf16" if old_flag else "fp32", "reason": f"the run was started with bf16={old_flag}"}
    if cfg.precision == "auto" and isinstance(saved, dict) and saved.get("name") in ("fp32", "bf16", "fp16"):
        kept = choose_precision(saved["name"], env.device)
        reason = str(saved.get("reason", ""))
        while reason.startswith(KEPT):  # runs saved before the reason was stored once grew it per resume
            reason = reason.removeprefix(KEPT)
        return Precision(kept.name, kept.dtype, KEPT + reason)
    if cfg.precision != "auto" or env.device.type != "cpu":
        return choose_precision(cfg.precision, env.device)
    # Only rank 0 measures (a timing differs between machines); agreed_precision hands its choice to every rank.
    return choose_precision("auto", env.device, workload=workload()) if env.is_main else None


def agreed_precision(precision: Precision | None, env: distributed.DistEnv) -> Precision:
    """Rank 0's ``precision`` on every rank (a collective call): ``auto`` measures speed, which differs
    between machines (and between runs of a busy one), and every rank must compute alike. Ranks other
    than 0 may pass ``None`` (they did not measure)."""
    if not env.enabled:
        assert precision is not None
        return precision
    name, reason = distributed.broadcast_object(None if precision is None else (precision.name, precision.reason), env)
    return Precision(name, choose_precision(name, env.device).dtype, reason)


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
    tmp = png_path.parent / f".{png_path.name}.tmp-{os.getpid()}"  # removed by the next run if left
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(png_path)

