"""Sentence-sized training examples: translation pairs and labelled texts, batched with padding.

A token stream (``data.py``) suits language models; translation and classification learn from whole
sentences instead, which differ in length. They are read from tab-separated files (``source<TAB>target``
or ``label<TAB>text``; translation pairs can also come from two line-aligned files), encoded once in
memory, and batched by :class:`LengthBucketSampler`, which puts sentences of similar length together so
little of each batch is padding (the 2017 paper batched "by approximate sequence length" too).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attnlab.train.data import DataError, corpus_files, iter_text


@dataclass(frozen=True)
class Pair:
    source: str
    target: str


def _lines(path: str | Path) -> list[str]:
    text = "".join(iter_text(corpus_files(path)))
    return [line.rstrip("\r") for line in text.split("\n")]


def read_pairs(path: str | Path, target_path: str | Path | None = None) -> list[Pair]:
    """Pairs from a ``source<TAB>target`` file, or from two files aligned line by line.

    Blank lines are skipped; a line without exactly one tab, or files of different lengths, is an
    error naming the file and line, since a silently shifted pair teaches the model nonsense.
    """
    pairs: list[Pair] = []
    if target_path is not None:
        sources, targets = _lines(path), _lines(target_path)
        while sources and not sources[-1].strip():
            sources.pop()
        while targets and not targets[-1].strip():
            targets.pop()
        if len(sources) != len(targets):
            raise DataError(f"{path} has {len(sources)} lines but {target_path} has {len(targets)}; they must align")
        for n, (s, t) in enumerate(zip(sources, targets, strict=True), start=1):
            if s.strip() and t.strip():
                pairs.append(Pair(s.strip(), t.strip()))
            elif s.strip() or t.strip():
                raise DataError(f"line {n}: one side is empty ({path} / {target_path})")
    else:
        for n, line in enumerate(_lines(path), start=1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise DataError(f"{path}, line {n}: expected 'source<TAB>target' with both sides non-empty")
            pairs.append(Pair(parts[0].strip(), parts[1].strip()))
    if not pairs:
        raise DataError(f"{path}: no sentence pairs")
    return pairs


def read_labelled(path: str | Path) -> list[tuple[str, str]]:
    """``(label, text)`` rows from a ``label<TAB>text`` file (blank lines skipped)."""
    rows = []
    for n, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        label, sep, text = line.partition("\t")
        if not sep or not label.strip() or not text.strip():
            raise DataError(f"{path}, line {n}: expected 'label<TAB>text' with both non-empty")
        rows.append((label.strip(), text.strip()))
    if not rows:
        raise DataError(f"{path}: no labelled examples")
    return rows


def split_examples(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a deterministic (seeded) random train / validation split of ``n`` examples."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise DataError(f"{n} examples are too few to hold out a validation split")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """``(ids, mask)``: right-padded ``(batch, longest)`` ids and a 1/0 mask of real tokens."""
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


class LengthBucketSampler:
    """Batches of example indices, each batch drawn from examples of similar length.

    Each epoch: a seeded permutation, cut into pools of ``pool`` batches; a pool is sorted by length
    and cut into batches, and the batches are shuffled. The data position is just (epoch, batch), so
    a resumed run rebuilds the same epoch and continues at the same batch. With DDP every rank builds
    the same global batch of ``batch_size * world_size`` examples and keeps its slice.
    """

    def __init__(
        self, lengths: list[int], batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
        pool: int = 50,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.global_batch = batch_size * world_size
        if len(self.lengths) < self.global_batch:
            raise DataError(f"{len(self.lengths)} training examples are fewer than one batch of {self.global_batch}")
        self.seed, self.pool = seed, pool
        self.epoch, self.position = 0, 0
        self._batches = self._epoch_batches(0)

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.lengths), generator=g).numpy()
        span = self.global_batch * self.pool
        batches = []
        for start in range(0, len(order), span):
            chunk = order[start : start + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.global_batch] for i in range(0, len(chunk) - self.global_batch + 1, self.global_batch)]
        shuffle = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in shuffle]

    def next(self) -> np.ndarray:
        if self.position >= len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._epoch_batches(self.epoch)
        batch = self._batches[self.position]
        self.position += 1
        return batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def state(self) -> Tensor:
        return torch.tensor([self.epoch, self.position], dtype=torch.long)

    def set_state(self, state: Tensor) -> None:
        self.epoch, self.position = (int(v) for v in state.tolist())
        self._batches = self._epoch_batches(self.epoch)


def fixed_batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    """Validation order: every example once, in order."""
    for start in range(0, n, batch_size):
        yield np.arange(start, min(n, start + batch_size))
