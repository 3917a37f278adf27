"""What the training loop optimises, one class per task, so that the loop itself stays task-agnostic.

A task knows the model family it trains, the special tokens its tokenizer needs, how to turn the
corpus into batches, its loss and its validation metrics, and its data position (for exact resume):

- ``lm``: next-token prediction on a token stream (decoder-only).
- ``mlm``: BERT's masked-token prediction on a token stream (encoder-only).
- ``classification``: one label per text from ``label<TAB>text`` lines (encoder-only).
- ``translation``: target given source from sentence pairs (encoder-decoder), with label smoothing
  0.1 during training as in Vaswani et al. 2017; validation reports plain cross-entropy.

A task's ``loss`` is a *sum* over the batch's real targets together with their count (a
``LossSum``), never a mean: micro-batches and ranks hold different numbers of real targets
(translation pairs of different lengths, MLM's random masked count), and only sums and counts add
up across them. The loop divides the step's total by the step's total count, so a batch of 8, two
accumulated micro-batches of 4 and two ranks of 4 give the same gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.models import TransformerConfig
from attnlab.tokenizers import Tokenizer
from attnlab.train import distributed
from attnlab.train.data import BlockSampler, DataError, corpus_files, mask_for_mlm, open_tokens, prepare_tokens
from attnlab.train.examples import (
    LengthBucketSampler,
    fixed_batches,
    pad_batch,
    read_labelled,
    read_pairs,
    split_examples,
)


@dataclass
class Batch:
    """Model inputs (positional, as the model's ``forward`` takes them) and the targets of the loss."""

    inputs: tuple[Tensor, ...]
    targets: Tensor


class LossSum(NamedTuple):
    """A batch's loss as ``total`` (a float32 scalar tensor: the per-target losses summed, with
    gradient) and ``count`` (how many real targets it sums over). The mean is ``total / count``."""

    total: Tensor
    count: int


@dataclass(frozen=True)
class DataSpec:
    """Where a task's data comes from (the relevant fields of the run's ``TrainConfig``)."""

    data: str
    target_data: str | None
    val_data: str | None
    val_fraction: float
    batch_size: int
    eval_iters: int
    seed: int
    label_smoothing: float


class Task(Protocol):
    name: str
    family: str  # the model family this task trains
    special_tokens: tuple[str, ...]

    def tokenizer_texts(self) -> list[str] | None:
        """The texts to train a tokenizer on (``None``: the corpus files as a token stream)."""

    def configure(self, config: TransformerConfig, tokenizer: Tokenizer) -> TransformerConfig:
        """Fill in what depends on the data (vocabulary size, padding id, number of classes)."""

    def prepare(self, tokenizer: Tokenizer, config: TransformerConfig, directory: Path, env: distributed.DistEnv,
                reuse: bool) -> None:
        """Encode the data and build the samplers (may raise ``DataError``)."""

    def next_batch(self) -> Batch: ...

    def loss(self, model: nn.Module, batch: Batch, *, training: bool) -> LossSum:
        """The summed loss over the batch's real targets and their count (padding and unmasked
        positions excluded); label smoothing only when ``training``."""

    def evaluate(self, model: nn.Module, env: distributed.DistEnv, autocast: Any) -> dict[str, float]:
        """Validation metrics; ``val_loss`` (nats per predicted token) picks the best checkpoint."""

    def state(self) -> dict[str, Tensor]: ...

    def set_state(self, tensors: dict[str, Tensor]) -> None: ...


def _cross_entropy(logits: Tensor, targets: Tensor, smoothing: float = 0.0) -> LossSum:
    """Cross-entropy summed over targets that are not ``-100``, and their count (float32 even under
    bf16 autocast)."""
    targets = targets.reshape(-1)
    total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets,
                            ignore_index=-100, label_smoothing=smoothing, reduction="sum")
    return LossSum(total, int((targets != -100).sum()))


class _StreamTask:
    """Shared by ``lm`` and ``mlm``: random blocks from a memory-mapped token stream."""

    special_tokens: tuple[str, ...] = ()

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec

    def tokenizer_texts(self) -> list[str] | None:
        return None

    def configure(self, config: TransformerConfig, tokenizer: Tokenizer) -> TransformerConfig:
        return config.replace(vocab_size=tokenizer.vocab_size)

    def prepare(self, tokenizer: Tokenizer, config: TransformerConfig, directory: Path, env: distributed.DistEnv,
                reuse: bool) -> None:
        if env.is_main and not (reuse and (directory / "tokens.npy").is_file()):
            prepare_tokens(corpus_files(self.spec.data, self.spec.seed), tokenizer, directory, self.spec.val_fraction)
        distributed.barrier(env)
        self.data = open_tokens(directory)
        self.block = config.max_len
        self.env = env
        self.sampler = BlockSampler(self.data.train, self.block, self.spec.batch_size, seed=self.spec.seed,
                                    rank=env.rank, world_size=env.world_size)
        BlockSampler(self.data.val, self.block, self.spec.batch_size, split="validation")  # fail early if too short

    def _val_blocks(self) -> BlockSampler:
        return BlockSampler(self.data.val, self.block, self.spec.batch_size, seed=self.spec.seed + 1,
                            rank=self.env.rank, world_size=self.env.world_size, split="validation")

    def state(self) -> dict[str, Tensor]:
        return {"sampler": self.sampler.state()}

    def set_state(self, tensors: dict[str, Tensor]) -> None:
        self.sampler.set_state(tensors["sampler"])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, env: distributed.DistEnv, autocast: Any) -> dict[str, float]:
        """Loss per target over ``eval_iters`` batches on every rank, the same batches every time
        (fixed seed): summed, then divided by the number of targets (MLM's masked count varies)."""
        totals = torch.zeros(2, dtype=torch.float64)  # loss sum, targets
        for batch in self._val_iter():
            with autocast:
                total, count = self.loss(model, batch, training=False)
            totals += torch.tensor([float(total), count], dtype=torch.float64)
        totals = distributed.sum(totals, env)
        return {"val_loss": float(totals[0] / totals[1])}

    def _val_iter(self):  # overridden by mlm to mask with a fixed generator
        sampler = self._val_blocks()
        for _ in range(self.spec.eval_iters):
            x, y = sampler.next()
            yield Batch((x,), y)


class LanguageModelTask(_StreamTask):
    name, family = "lm", "decoder"

    def next_batch(self) -> Batch:
        x, y = self.sampler.next()
        return Batch((x,), y)

    def loss(self, model: nn.Module, batch: Batch, *, training: bool) -> LossSum:
        return _cross_entropy(model(*batch.inputs), batch.targets)


class MaskedLMTask(_StreamTask):
    """15% of tokens selected, 80/10/10 mask/random/keep (see ``data.mask_for_mlm``)."""

    name, family = "mlm", "encoder"
    special_tokens = ("<pad>", "<mask>")

    def prepare(self, tokenizer: Tokenizer, config: TransformerConfig, directory: Path, env: distributed.DistEnv,
                reuse: bool) -> None:
        super().prepare(tokenizer, config, directory, env, reuse)
        self.mask_id = tokenizer.token_id("<mask>")  # type: ignore[attr-defined]
        self.specials = tuple(tokenizer.token_id(t) for t in self.special_tokens)  # type: ignore[attr-defined]
        self.vocab_size = tokenizer.vocab_size
        self.generator = torch.Generator().manual_seed(self.spec.seed + env.rank + 7)

    def _mask(self, x: Tensor, y: Tensor, generator: torch.Generator) -> Batch:
        """Corrupt a block of real tokens (``y``, the next-token shift, is not needed by MLM)."""
        inputs, labels = mask_for_mlm(x, mask_id=self.mask_id, vocab_size=self.vocab_size,
                                      generator=generator, special_ids=self.specials)
        return Batch((inputs,), labels)

    def next_batch(self) -> Batch:
        return self._mask(*self.sampler.next(), self.generator)

    def _val_iter(self):
        sampler, generator = self._val_blocks(), torch.Generator().manual_seed(self.spec.seed + 2)
        for _ in range(self.spec.eval_iters):
            yield self._mask(*sampler.next(), generator)

    def loss(self, model: nn.Module, batch: Batch, *, training: bool) -> LossSum:
        return _cross_entropy(model(*batch.inputs), batch.targets)

    def state(self) -> dict[str, Tensor]:
        return {**super().state(), "mask_rng": self.generator.get_state()}

    def set_state(self, tensors: dict[str, Tensor]) -> None:
        super().set_state(tensors)
        self.generator.set_state(tensors["mask_rng"])


class _ExampleTask:
    """Shared by ``classification`` and ``translation``: sentence-sized examples held in memory."""

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec

    def _split(self, rows: list[Any], val_rows: list[Any] | None) -> tuple[list[Any], list[Any]]:
        if val_rows is not None:
            return rows, val_rows
        train_idx, val_idx = split_examples(len(rows), self.spec.val_fraction, self.spec.seed)
        return [rows[i] for i in train_idx], [rows[i] for i in val_idx]

    def _make_sampler(self, lengths: list[int], env: distributed.DistEnv) -> None:
        self.env = env
        self.sampler = LengthBucketSampler(lengths, self.spec.batch_size, seed=self.spec.seed, rank=env.rank,
                                           world_size=env.world_size)

    def state(self) -> dict[str, Tensor]:
        return {"sampler": self.sampler.state()}

    def set_state(self, tensors: dict[str, Tensor]) -> None:
        self.sampler.set_state(tensors["sampler"])

    def _shard(self, n: int) -> range:
        """This rank's share of the validation examples (all of them without DDP)."""
        return range(self.env.rank, n, self.env.world_size)


class ClassificationTask(_ExampleTask):
    """Texts start with ``<cls>``, whose final hidden state the pooler reads (BERT's convention)."""

    name, family = "classification", "encoder"
    special_tokens = ("<pad>", "<cls>")

    def __init__(self, spec: DataSpec) -> None:
        super().__init__(spec)
        rows = read_labelled(spec.data)
        val_rows = read_labelled(spec.val_data) if spec.val_data else None
        self.train_rows, self.val_rows = self._split(rows, val_rows)
        self.labels = sorted({label for label, _ in rows})
        unknown = {label for label, _ in self.val_rows} - set(self.labels)
        if unknown:
            raise DataError(f"validation labels never seen in training: {sorted(unknown)}")
        if len(self.labels) < 2:
            raise DataError(f"{spec.data}: classification needs at least 2 labels, found {self.labels}")

    def tokenizer_texts(self) -> list[str] | None:
        return [text for _, text in self.train_rows]

    def configure(self, config: TransformerConfig, tokenizer: Tokenizer) -> TransformerConfig:
        return config.replace(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.token_id("<pad>"),  # type: ignore[attr-defined]
                              n_classes=len(self.labels), class_names=tuple(self.labels))

    def _encode(self, rows: list[tuple[str, str]], tokenizer: Tokenizer, max_len: int) -> tuple[list[list[int]], Tensor]:
        cls = tokenizer.token_id("<cls>")  # type: ignore[attr-defined]
        index = {label: i for i, label in enumerate(self.labels)}
        seqs = [[cls, *tokenizer.encode(text)][:max_len] for _, text in rows]  # long texts: keep the start
        return seqs, torch.tensor([index[label] for label, _ in rows])

    def prepare(self, tokenizer: Tokenizer, config: TransformerConfig, directory: Path, env: distributed.DistEnv,
                reuse: bool) -> None:
        self.pad = tokenizer.token_id("<pad>")  # type: ignore[attr-defined]
        self.train_x, self.train_y = self._encode(self.train_rows, tokenizer, config.max_len)
        self.val_x, self.val_y = self._encode(self.val_rows, tokenizer, config.max_len)
        self._make_sampler([len(s) for s in self.train_x], env)

    def _batch(self, seqs: list[list[int]], labels: Tensor, idx: Any) -> Batch:
        ids, mask = pad_batch([seqs[i] for i in idx], self.pad)
        return Batch((ids, mask), labels[torch.as_tensor(np.asarray(idx))])

    def next_batch(self) -> Batch:
        return self._batch(self.train_x, self.train_y, self.sampler.next())

    def loss(self, model: nn.Module, batch: Batch, *, training: bool) -> LossSum:
        return _cross_entropy(model(*batch.inputs), batch.targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, env: distributed.DistEnv, autocast: Any) -> dict[str, float]:
        """Loss and accuracy over every validation example (summed, then averaged across ranks)."""
        mine = list(self._shard(len(self.val_x)))
        totals = torch.zeros(3)  # loss sum, correct, count
        for chunk in fixed_batches(len(mine), self.spec.batch_size):
            batch = self._batch(self.val_x, self.val_y, [mine[i] for i in chunk])
            with autocast:
                logits = model(*batch.inputs).float()
            totals += torch.tensor([F.cross_entropy(logits, batch.targets, reduction="sum").item(),
                                    (logits.argmax(-1) == batch.targets).sum().item(), len(chunk)])
        totals = distributed.sum(totals, env)
        return {"val_loss": float(totals[0] / totals[2]), "val_accuracy": float(totals[1] / totals[2])}


class TranslationTask(_ExampleTask):
    """Source ``text </s>``; the decoder reads ``<s> target`` and predicts ``target </s>``.

    One tokenizer serves both languages (the paper's shared BPE vocabulary, which lets the source
    embedding, the target embedding and the output layer share one matrix). Pairs longer than the
    model's ``max_len`` on either side are left out of training rather than truncated, since a cut
    target would teach the model to stop mid-sentence; the count is reported.
    """

    name, family = "translation", "encoder-decoder"
    special_tokens = ("<pad>", "<s>", "</s>")

    def __init__(self, spec: DataSpec) -> None:
        super().__init__(spec)
        pairs = read_pairs(spec.data, spec.target_data)
        val_pairs = read_pairs(spec.val_data) if spec.val_data else None
        self.train_pairs, self.val_pairs = self._split(pairs, val_pairs)
        self.skipped = 0

    def tokenizer_texts(self) -> list[str] | None:
        return [p.source for p in self.train_pairs] + [p.target for p in self.train_pairs]

    def configure(self, config: TransformerConfig, tokenizer: Tokenizer) -> TransformerConfig:
        return config.replace(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.token_id("<pad>"))  # type: ignore[attr-defined]

    def _encode(self, pairs: list[Any], tokenizer: Tokenizer, max_len: int, *, drop_long: bool) -> tuple[list, list]:
        bos, eos = tokenizer.token_id("<s>"), tokenizer.token_id("</s>")  # type: ignore[attr-defined]
        sources = [[*tokenizer.encode(p.source), eos] for p in pairs]
        targets = [[bos, *tokenizer.encode(p.target), eos] for p in pairs]
        keep = [i for i in range(len(pairs)) if len(sources[i]) <= max_len and len(targets[i]) - 1 <= max_len]
        if drop_long:
            self.skipped = len(pairs) - len(keep)
        else:  # validation keeps every pair, cut to fit, so the metric always covers the same set
            keep = list(range(len(pairs)))
        return ([sources[i][:max_len] for i in keep], [targets[i][: max_len + 1] for i in keep])

    def prepare(self, tokenizer: Tokenizer, config: TransformerConfig, directory: Path, env: distributed.DistEnv,
                reuse: bool) -> None:
        self.pad = tokenizer.token_id("<pad>")  # type: ignore[attr-defined]
        self.train_src, self.train_tgt = self._encode(self.train_pairs, tokenizer, config.max_len, drop_long=True)
        self.val_src, self.val_tgt = self._encode(self.val_pairs, tokenizer, config.max_len, drop_long=False)
        if env.is_main and self.skipped:
            print(f"translation: left out {self.skipped} of {len(self.train_pairs)} training pairs longer than "
                  f"max_len={config.max_len} tokens")
        self._make_sampler([len(s) + len(t) for s, t in zip(self.train_src, self.train_tgt, strict=True)], env)

    def _batch(self, src: list[list[int]], tgt: list[list[int]], idx: Any) -> Batch:
        src_ids, src_mask = pad_batch([src[i] for i in idx], self.pad)
        tgt_ids, tgt_mask = pad_batch([tgt[i] for i in idx], self.pad)
        labels = tgt_ids[:, 1:].masked_fill(tgt_mask[:, 1:] == 0, -100)
        return Batch((src_ids, tgt_ids[:, :-1], src_mask), labels)

    def next_batch(self) -> Batch:
        return self._batch(self.train_src, self.train_tgt, self.sampler.next())

    def loss(self, model: nn.Module, batch: Batch, *, training: bool) -> LossSum:
        return _cross_entropy(model(*batch.inputs), batch.targets, self.spec.label_smoothing if training else 0.0)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, env: distributed.DistEnv, autocast: Any) -> dict[str, float]:
        """Cross-entropy per target token (no smoothing) over every validation pair."""
        mine = list(self._shard(len(self.val_src)))
        totals = torch.zeros(2)  # loss sum, target tokens
        for chunk in fixed_batches(len(mine), self.spec.batch_size):
            batch = self._batch(self.val_src, self.val_tgt, [mine[i] for i in chunk])
            with autocast:
                logits = model(*batch.inputs).float()
            total, count = _cross_entropy(logits, batch.targets)
            totals += torch.tensor([float(total), count])
        totals = distributed.sum(totals, env)
        return {"val_loss": float(totals[0] / totals[1])}


_TASK_CLASSES: dict[str, type] = {
    task.name: task for task in (LanguageModelTask, MaskedLMTask, ClassificationTask, TranslationTask)
}
TASKS = tuple(_TASK_CLASSES)


def make_task(name: str, spec: DataSpec) -> Task:
    if name not in _TASK_CLASSES:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return _TASK_CLASSES[name](spec)


DEFAULT_PRESET = {"lm": "shakespeare-char", "mlm": "bert-tiny", "classification": "bert-tiny",
                  "translation": "transformer-small-2017"}
