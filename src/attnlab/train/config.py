"""``TrainConfig``: every training option once, with its default, help text and allowed range.

The ``attnlab train`` command is generated from these fields (``cli.py`` restates nothing), and both
the command line and the library validate through ``Range.check``, so a value is refused with the
same one-line message wherever it enters. This module imports nothing heavy (no torch), so
``attnlab --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

TASK_NAMES = ("lm", "mlm", "classification", "translation")  # attnlab.train.tasks.TASKS (checked there)
SEED_MAX = 2**63 - 1  # torch generators take seeds below 2**64; the loop adds small offsets per rank
SNAPSHOT_DTYPES = ("bfloat16", "float16", "float32")
# attnlab.device's DEVICE_HELP and PRECISIONS, restated so that this module needs no torch (a unit test
# checks that they agree).
DEVICE_HELP = "auto (CUDA if available, else MPS, else CPU) | cpu | cuda | cuda:N | mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STRATEGIES = ("ddp", "fsdp")
OPTIMIZERS = ("adamw", "muon")  # attnlab.train.optim.make_optimizer builds them

# Options a resumed run may change: the run's length, how it reports, and the hardware it runs on
# (``device``: the same run continues on another machine, e.g. a GPU one; checkpoints hold no device).
# Everything else must match the saved run, or --resume would silently train something else than what
# it says it continues; ``precision`` is kept because it changes the numbers (bf16 rounds every product).
# ``strategy`` may change too: both compute the same step, and a checkpoint is read by what it holds.
RESUME_MAY_CHANGE = frozenset(
    {"iters", "eval_interval", "eval_iters", "snapshots", "snapshot_dtype", "progress", "compile", "resume",
     "overwrite", "out", "device", "strategy"}
)


@dataclass(frozen=True)
class Range:
    """An allowed interval for a number; ``check`` raises ``ValueError`` with the range in the message."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def text(self) -> str:
        kind = "an integer" if self.integer else "a number"
        lo = "-inf" if self.lo is None else f"{self.lo:g}" if not self.integer else str(self.lo)
        hi = "inf" if self.hi is None else f"{self.hi:g}" if not self.integer else str(self.hi)
        return f"{kind} in {'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"

    def ok(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return not (self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)))

    def check(self, name: str, value: Any) -> None:
        if not self.ok(value):
            raise ValueError(f"{name} must be {self.text()}, got {value!r}")


def option(default: Any, help: str, *, range: Range | None = None, choices: tuple[str, ...] | None = None,
           cli: bool = True, flag: str | None = None) -> Any:
    """A dataclass field with its command-line help, allowed range or choices, and flag name."""
    meta = {"help": help, "range": range, "choices": choices, "cli": cli, "flag": flag}
    if default is ...:  # required
        return field(metadata=meta)
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def count(lo: int, hi: int) -> Range:
    return Range(lo, hi, integer=True)


NOT_OVERRIDABLE = ("vocab_size", "family")  # set by the tokenizer and the task


def parse_model_override(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE`` (``--set``) as ``(field, value)``: an integer, a number, true/false, or text.

    Raises ``ValueError`` without the ``=`` or a name; the field itself is checked by ``TrainConfig``.
    """
    name, sep, raw = (part.strip() for part in text.partition("="))
    if not sep or not name or not raw:
        raise ValueError(f"--set {text!r}: expected FIELD=VALUE, e.g. positions=rotary")
    if raw.lower() in ("true", "false"):
        return name, raw.lower() == "true"
    for kind in (int, float):
        try:
            return name, kind(raw)
        except ValueError:
            pass
    return name, raw


def check_model_overrides(preset_name: str, overrides: dict[str, Any]) -> None:
    """Refuse ``overrides`` that do not make a valid model of preset ``preset_name``: ``ValueError`` naming
    the field (``vocab_size`` and ``family`` are never replaceable); ``KeyError`` for an unknown preset.
    Imports torch (the model code), so it runs only when a run changes its model."""
    from attnlab.models.config import ConfigError
    from attnlab.models.presets import preset

    fixed = sorted(set(overrides) & set(NOT_OVERRIDABLE))
    if fixed:
        raise ValueError(f"--set {', '.join(fixed)}: set by the tokenizer and the task, not replaceable")
    try:
        preset(preset_name).replace(**overrides)
    except ConfigError as exc:
        raise ValueError(f"--set: {exc}") from None


@dataclass(kw_only=True)
class TrainConfig:
    """A training run. Defaults follow nanoGPT's Shakespeare-char CPU recipe where they overlap.

    Raises ``ValueError`` naming the field and its allowed range for any value outside it.
    """

    data: str = option(..., "lm/mlm: a UTF-8 text file or folder; classification: label<TAB>text lines; "
                       "translation: source<TAB>target lines (or the source side, with --target-data). "
                       "With --resume: default the run's own.")
    out: str = option(..., "Run folder: last/ and best/ checkpoints, metrics.jsonl, loss.png, data/. A fresh run "
                      "needs a new or empty folder (or --overwrite); --resume continues the run there.")
    task: str = option("lm", "lm (decoder) | mlm, classification (encoder) | translation (encoder-decoder).",
                       choices=TASK_NAMES)
    preset: str | None = option(None, "Model preset (see `attnlab presets`); default: shakespeare-char for lm, "
                                "bert-tiny for mlm/classification, transformer-small-2017 for translation.")
    model_overrides: dict[str, Any] = option(  # noqa: RUF009
        {}, "FIELD=VALUE: a field of the model config replaced in the preset (repeatable), e.g. --set "
        "positions=rotary --set activation=relu (`attnlab presets` lists the fields); not vocab_size or family, "
        "which the tokenizer and the task set.", flag="--set")
    tokenizer: str | None = option(None, "'char' or 'bpe' (byte-level BPE trained on the corpus); default: char "
                                   "for lm, bpe (with the task's special tokens) otherwise.", choices=("char", "bpe"))
    bpe_vocab_size: int = option(1024, "Vocabulary size for --tokenizer bpe.", range=count(256, 262_144))
    target_data: str | None = option(None, "translation: the target side, aligned line by line with --data.")
    val_data: str | None = option(None, "classification/translation: a held-out file (default: a seeded split).")
    val_fraction: float = option(0.1, "Share of the corpus held out for validation (lm/mlm, or without --val-data).",
                                 range=Range(0.0, 1.0, lo_open=True, hi_open=True))
    iters: int = option(2000, "Optimizer steps (the run's length; --resume may extend it).",
                        range=count(1, 10**9))
    batch_size: int = option(12, "Sequences per step per process.", range=count(1, 65_536))
    accum: int = option(1, "Gradient accumulation micro-batches per step.", range=count(1, 4096))
    lr: float = option(1e-3, "Peak learning rate.", range=Range(0.0, 10.0, lo_open=True))
    min_lr: float = option(1e-4, "Learning rate at the end of the cosine decay (at most --lr).",
                           range=Range(0.0, 10.0))
    warmup: int = option(100, "Linear warmup steps.", range=count(0, 10**9))
    decay_iters: int | None = option(None, "Step at which the cosine reaches --min-lr (default: --iters of the "
                                     "run's first start); after it the rate stays at --min-lr.",
                                     range=count(1, 10**9))
    optimizer: str = option("adamw", "adamw (every parameter) | muon (Muon, Jordan et al. 2024, for the Transformer "
                            "blocks' weight matrices; AdamW for embeddings, output head, norms and biases). Both "
                            "follow --lr, its schedule and --weight-decay.", choices=OPTIMIZERS)
    weight_decay: float = option(0.1, "Decoupled weight decay of matrices (AdamW's and Muon's; norms and biases: "
                                 "none).", range=Range(0.0, 10.0))
    beta1: float = option(0.9, "AdamW beta1.", range=Range(0.0, 1.0, hi_open=True))
    beta2: float = option(0.99, "AdamW beta2.", range=Range(0.0, 1.0, hi_open=True))
    grad_clip: float = option(1.0, "Gradient-norm clip (0: off).", range=Range(0.0, 1e6))
    label_smoothing: float = option(0.1, "translation: label smoothing during training (Vaswani et al. 2017, "
                                    "section 5.4; validation: none).", range=Range(0.0, 1.0, hi_open=True))
    eval_interval: int = option(250, "Steps between validation estimates and checkpoints.", range=count(1, 10**9))
    eval_iters: int = option(20, "Validation batches per estimate.", range=count(1, 10_000))
    device: str = option("auto", f"Where to train: {DEVICE_HELP}. Under torchrun each process takes "
                         "cuda:LOCAL_RANK when CUDA is available. A resumed run may move to another device.")
    precision: str = option("auto", "Arithmetic of the forward pass: auto (bf16 autocast where it is faster: a CUDA "
                            "GPU with bf16, or a CPU whose bf16 matmul beats fp32 in a quick cached probe; else "
                            "fp32) | fp32 | bf16 | fp16 (CUDA only, with a gradient scaler).", choices=PRECISIONS)
    strategy: str = option("ddp", "Multi-process training under torchrun: ddp (every process holds the whole model) | "
                           "fsdp (FSDP2: each process holds a shard of the weights, gradients and AdamW state; "
                           "checkpoints are written sharded, one file per process). Alone: no difference.",
                           choices=STRATEGIES)
    compile: bool = option(False, "torch.compile the model (slow start).")
    seed: int = option(1337, "Seed for initialisation, data order and sampling.", range=count(0, SEED_MAX))
    snapshots: tuple[int, ...] = option((), "Comma-separated steps (0 to --iters) at which to save small "
                                        "snapshots.", range=count(0, 10**9))
    snapshot_dtype: str = option("bfloat16", "Storage dtype of snapshot weights.", choices=SNAPSHOT_DTYPES)
    progress: bool = option(True, "Show a progress bar.", flag="--progress/--no-progress")
    resume: bool = option(False, "Continue the run in --out from its last checkpoint; options not given keep "
                          "the run's values, and only the run's length and reporting may change.")
    overwrite: bool = option(False, "Replace the run already in --out (deleted when the new run writes its "
                             "first checkpoint; restored if it fails before).")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            choices, rng = f.metadata.get("choices"), f.metadata.get("range")
            if value is None:
                continue
            if choices and value not in choices:
                raise ValueError(f"unknown {f.name} {value!r}; choose one of: {', '.join(choices)}")
            if rng is not None and f.name == "snapshots":
                self.snapshots = tuple(value)
                for step in self.snapshots:
                    count(0, self.iters).check("each snapshot step", step)
            elif rng is not None:
                rng.check(f.name, value)
        if not self.data:
            raise ValueError("data is required: the corpus to train on")
        if not self.out:
            raise ValueError("out is required: the run folder")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr must be at most lr ({self.lr}), got {self.min_lr}")
        if self.decay_iters is not None and self.decay_iters < self.warmup:
            raise ValueError(f"decay_iters must be at least warmup ({self.warmup}), got {self.decay_iters}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device.strip().lower()):
            raise ValueError(f"unknown device {self.device!r}; choose {DEVICE_HELP}")
        if self.strategy == "fsdp" and self.optimizer == "muon":
            raise ValueError("optimizer muon does not run under strategy fsdp (torch.optim.Muon does not handle "
                             "sharded DTensor parameters); use --strategy ddp or --optimizer adamw")
        if self.strategy == "fsdp" and self.snapshots:
            raise ValueError("snapshots are not written under --strategy fsdp (no process holds the whole model); "
                             "export a sharded checkpoint instead (attnlab export)")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite contradict each other: choose one")
        if self.tokenizer is None:
            self.tokenizer = "char" if self.task == "lm" else "bpe"
        if self.tokenizer == "char" and self.task != "lm":
            raise ValueError(f"the {self.task} task needs special tokens (padding, ...): use --tokenizer bpe")
        if self.preset is None:
            from attnlab.train.tasks import DEFAULT_PRESET

            self.preset = DEFAULT_PRESET[self.task]
        if self.model_overrides:
            # an unknown preset (KeyError) is reported where the model is built, with the list of presets
            with contextlib.suppress(KeyError):
                check_model_overrides(self.preset, self.model_overrides)
        if self.target_data is not None and self.task != "translation":
            raise ValueError("target_data (a second, aligned file) is for the translation task")
