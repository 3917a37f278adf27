"""From a text file (or a folder of them) to memory-mapped token arrays and random training blocks.

The corpus is read in chunks, checked to be UTF-8 (an error names the file and byte offset), encoded
chunk by chunk and written to ``tokens.npy``. Training opens that file with ``np.load(mmap_mode="r")``,
so a corpus larger than memory streams from disk: a batch reads only the blocks it samples.

The split is the one nanoGPT uses: the first ``1 - val_fraction`` of the tokens train, the rest
validate. With a folder, the files are first put in an order shuffled by ``seed``, so which files end
up (mostly) in validation is deterministic but not alphabetical.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attnlab.tokenizers import Tokenizer
from attnlab.weights.checkpoint import remove_stale_temporaries

CHUNK_BYTES = 1 << 22


class DataError(ValueError):
    """A corpus that cannot train a model (empty, too short, not UTF-8); the message says why."""


def corpus_files(path: str | Path, seed: int = 0) -> list[Path]:
    """The text files of ``path`` (a file, or a folder searched recursively; hidden files skipped)."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"{root}: no such file or folder")
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise DataError(f"{root}: the folder holds no files (the corpus is empty)")
    random.Random(seed).shuffle(files)
    return files


def iter_text(files: list[Path], chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Decoded text in chunks that end at a newline (a newline byte never sits inside a UTF-8 character)."""
    for file in files:
        with open(file, "rb") as f:
            offset, carry = 0, b""
            while True:
                block = f.read(chunk_bytes)
                data = carry + block
                if not data:
                    break
                cut = data.rfind(b"\n") + 1 if block else len(data)
                if cut == 0 and len(data) >= 4 * chunk_bytes:  # a very long line: cut before a lead byte
                    cut = max(i for i in range(len(data) - 4, len(data)) if data[i] & 0xC0 != 0x80)
                piece, carry = data[:cut], data[cut:]
                if piece:
                    try:
                        yield piece.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        bad = piece[exc.start : exc.start + 1]
                        raise DataError(
                            f"{file}: not UTF-8 text: byte 0x{bad.hex()} at byte offset {offset + exc.start} "
                            f"({exc.reason}); convert the file to UTF-8"
                        ) from None
                offset += len(piece)
                if not block and not carry:
                    break


def files_fingerprint(files: list[Path]) -> str:
    """SHA-256 over the files' bytes in the given order (the order decides the tokens): the corpus a
    run trained on, compared on ``--resume`` so that a changed or swapped corpus is refused."""
    whole = hashlib.sha256()
    for file in files:
        one = hashlib.sha256()
        try:
            with open(file, "rb") as f:
                while block := f.read(CHUNK_BYTES):
                    one.update(block)
        except OSError as exc:
            raise DataError(f"{file}: cannot read ({exc.strerror or exc})") from None
        whole.update(one.digest())
    return whole.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def data_matches(directory: str | Path, corpus: str, tokenizer: str) -> bool:
    """Whether ``directory`` holds readable prepared tokens of this corpus under this tokenizer
    (fingerprints as written by ``prepare_tokens``); anything else is to be prepared again."""
    try:
        meta = json.loads((Path(directory) / "split.json").read_text(encoding="utf-8"))
        if meta.get("corpus_sha256") != corpus or meta.get("tokenizer_sha256") != tokenizer:
            return False
        open_tokens(directory)
    except (OSError, ValueError, AttributeError):
        return False
    return True


@dataclass
class TokenData:
    """Train and validation token arrays (memory-mapped views of one ``tokens.npy``)."""

    train: np.ndarray
    val: np.ndarray
    directory: Path


def prepare_tokens(
    files: list[Path], tokenizer: Tokenizer, directory: str | Path, val_fraction: float = 0.1
) -> TokenData:
    """Encode ``files`` into ``directory/tokens.npy`` (+ ``split.json``) and open it memory-mapped."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # left by a preparation that was killed
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    raw = out / f".tokens.bin.tmp-{os.getpid()}"
    tmp_npy = out / f".tokens.npy.tmp-{os.getpid()}"
    try:
        n = 0
        with open(raw, "wb") as f:
            for text in iter_text(files):
                ids = np.asarray(tokenizer.encode(text), dtype=dtype)
                f.write(ids.tobytes())
                n += len(ids)
        if n == 0:
            raise DataError(f"the corpus ({', '.join(str(p) for p in files[:3])}) is empty: no text to train on")
        source = np.memmap(raw, dtype=dtype, mode="r", shape=(n,))
        dest = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=dtype, shape=(n,))
        for start in range(0, n, CHUNK_BYTES):
            dest[start : start + CHUNK_BYTES] = source[start : start + CHUNK_BYTES]
        dest.flush()
        del dest, source
        os.replace(tmp_npy, out / "tokens.npy")
    finally:
        for tmp in (raw, tmp_npy):
            tmp.unlink(missing_ok=True)
    split = int(n * (1.0 - val_fraction))
    meta = {"n_tokens": n, "split": split, "files": [str(p) for p in files], "corpus_sha256": files_fingerprint(files),
            "tokenizer_sha256": text_sha256(tokenizer.to_json())}
    (out / "split.json").write_text(json.dumps(meta))
    return open_tokens(out)


def open_tokens(directory: str | Path) -> TokenData:
    """Open prepared tokens memory-mapped (nothing is read until a block is sampled)."""
    out = Path(directory)
    meta_path, tokens_path = out / "split.json", out / "tokens.npy"
    if not meta_path.is_file() or not tokens_path.is_file():
        raise DataError(f"{out}: no prepared tokens (tokens.npy and split.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        _ = (meta["n_tokens"], meta["split"])  # both must be there
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{meta_path}: not a readable split file ({exc}); delete {out} to prepare the data again") from None
    try:
        tokens = np.load(tokens_path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        size = tokens_path.stat().st_size
        raise DataError(f"{tokens_path}: truncated or corrupt ({size} bytes on disk for {meta['n_tokens']} tokens: "
                        f"{exc}); delete {out} to prepare the data again") from None
    if len(tokens) != meta["n_tokens"]:
        raise DataError(f"{tokens_path}: holds {len(tokens)} tokens, split.json says {meta['n_tokens']}")
    return TokenData(train=tokens[: meta["split"]], val=tokens[meta["split"] :], directory=out)


class BlockSampler:
    """Random ``(x, y)`` blocks of ``block_size`` tokens, ``y`` shifted by one (next-token targets).

    Every rank draws the same *global* batch of ``batch_size * world_size`` offsets from one seeded
    generator and keeps its own slice, so N processes see exactly the blocks one process would with
    the same global batch. The generator's state is the data position saved in checkpoints.
    """

    def __init__(
        self, tokens: np.ndarray, block_size: int, batch_size: int, *, seed: int = 0, rank: int = 0,
        world_size: int = 1, split: str = "train",
    ) -> None:
        if len(tokens) < block_size + 1:
            raise DataError(
                f"the {split} split has {len(tokens)} tokens, fewer than one block of {block_size} + 1; "
                f"use a longer corpus or a smaller block size"
            )
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.generator = torch.Generator().manual_seed(seed)
        self._arange = np.arange(block_size + 1)

    def next(self) -> tuple[Tensor, Tensor]:
        starts = torch.randint(
            len(self.tokens) - self.block_size, (self.batch_size * self.world_size,), generator=self.generator
        )
        mine = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].numpy()
        blocks = torch.from_numpy(self.tokens[mine[:, None] + self._arange].astype(np.int64))
        return blocks[:, :-1], blocks[:, 1:]

    def state(self) -> Tensor:
        return self.generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self.generator.set_state(state)


def mask_for_mlm(
    ids: Tensor, *, mask_id: int, vocab_size: int, generator: torch.Generator, prob: float = 0.15,
    special_ids: tuple[int, ...] = (),
) -> tuple[Tensor, Tensor]:
    """BERT's masked-language-model corruption (Devlin et al. 2019, section 3.1).

    Each token (except ``special_ids``) is selected with probability ``prob``; of the selected, 80%
    become ``mask_id``, 10% a random token and 10% stay as they are, so the model cannot learn that
    only ``[MASK]`` positions matter. Returns ``(inputs, labels)`` with labels ``-100`` (ignored by
    ``cross_entropy``) at unselected positions.
    """
    selected = torch.rand(ids.shape, generator=generator) < prob
    for special in special_ids:
        selected &= ids != special
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[selected & (roll < 0.8)] = mask_id
    randomise = selected & (roll >= 0.8) & (roll < 0.9)
    inputs[randomise] = torch.randint(vocab_size, ids.shape, generator=generator)[randomise]
    return inputs, labels
