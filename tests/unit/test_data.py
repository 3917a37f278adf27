"""Corpus reading, token preparation and block sampling: determinism, sharding and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab.tokenizers import CharTokenizer
from attnlab.train.data import BlockSampler, DataError, corpus_files, iter_text, open_tokens, prepare_tokens

TEXT = "".join(f"line {i}: the cat sat on the mat; ü ß 日本\n" for i in range(200))


def test_iter_text_chunks_rejoin_exactly(tmp_path) -> None:
    path = tmp_path / "a.txt"
    path.write_text(TEXT + "no newline at the end ✓", encoding="utf-8")
    pieces = list(iter_text([path], chunk_bytes=37))
    assert "".join(pieces) == path.read_text(encoding="utf-8")
    assert all(p.endswith("\n") for p in pieces[:-1])
    long_line = tmp_path / "b.txt"
    long_line.write_text("日本語" * 500, encoding="utf-8")  # no newline: cut between characters
    assert "".join(iter_text([long_line], chunk_bytes=16)) == "日本語" * 500


def test_non_utf8_names_byte_offset(tmp_path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello\nworld\n" * 10 + b"abc\xffdef\n")
    with pytest.raises(DataError, match=r"bad\.txt: not UTF-8 text: byte 0xff at byte offset 123"):
        list(iter_text([path], chunk_bytes=16))


def test_prepare_is_memory_mapped_and_split(tmp_path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    tok = CharTokenizer.train([TEXT])
    data = prepare_tokens([path], tok, tmp_path / "data", val_fraction=0.1)
    assert isinstance(data.train.base, np.memmap) or isinstance(data.train, np.memmap)
    n = len(TEXT)
    assert len(data.train) == int(n * 0.9) and len(data.train) + len(data.val) == n
    assert tok.decode(list(data.train[:20])) == TEXT[:20]
    assert tok.decode(list(data.val[-10:])) == TEXT[-10:]
    again = open_tokens(tmp_path / "data")
    assert np.array_equal(again.val, data.val)


def test_empty_and_too_short(tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        prepare_tokens([empty], CharTokenizer("a"), tmp_path / "d")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="corpus is empty"):
        corpus_files(tmp_path / "folder")
    with pytest.raises(DataError, match=r"train split has 10 tokens, fewer than one block of 16 \+ 1"):
        BlockSampler(np.zeros(10, dtype=np.uint16), 16, 2)


def test_folder_order_is_seeded(tmp_path) -> None:
    for i in range(8):
        (tmp_path / f"{i}.txt").write_text(str(i))
    (tmp_path / ".hidden").write_text("x")
    a, b = corpus_files(tmp_path, seed=1), corpus_files(tmp_path, seed=1)
    assert a == b and len(a) == 8
    assert corpus_files(tmp_path, seed=2) != a


def test_sampler_targets_shift_and_shards_match_global_batch() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = BlockSampler(tokens, 8, 4, seed=5).next()
    assert x.dtype == torch.int64 and x.shape == (4, 8)
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    whole = BlockSampler(tokens, 8, 4, seed=5)
    ranks = [BlockSampler(tokens, 8, 2, seed=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        xw, _ = whole.next()
        assert torch.equal(torch.cat([s.next()[0] for s in ranks]), xw)
    # the generator state is the data position: restoring it replays the same batches
    state = whole.state()
    first = whole.next()[0]
    whole.set_state(state)
    assert torch.equal(whole.next()[0], first)


def test_mlm_masking_rates_and_labels() -> None:
    from attnlab.train.data import mask_for_mlm

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (64, 512), generator=g)
    ids[:, 0] = 1  # a special token ([CLS]) is never selected
    inputs, labels = mask_for_mlm(ids, mask_id=2, vocab_size=1000, generator=g, special_ids=(1,))
    selected = labels != -100
    assert not selected[:, 0].any()
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])  # unselected tokens untouched
    rate = selected.float().mean().item()
    assert 0.14 < rate < 0.16
    n = selected.sum().item()
    masked = (inputs[selected] == 2).sum().item() / n
    kept = (inputs[selected] == ids[selected]).sum().item() / n
    assert 0.78 < masked < 0.82 and 0.08 < kept < 0.12  # the rest (~10%) became random tokens
