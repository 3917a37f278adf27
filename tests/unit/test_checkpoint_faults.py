"""Faults around checkpoint files (issue 23 item 6): a save that fails in any way leaves no temporary
folder and keeps the previous checkpoint; loaders refuse weights of the wrong dtype or with NaN or
infinite values and training states whose values are out of range, each in one line."""

from __future__ import annotations

import errno
import json
import os
import socket

import pytest
import torch
from safetensors import SafetensorError

import attnlab.weights.checkpoint as ckpt
import attnlab.weights.sharded as sharded
from attnlab.models import DecoderLM, TransformerConfig
from attnlab.tokenizers import CharTokenizer
from attnlab.weights.checkpoint import CheckpointError, TrainingState, load_checkpoint, save_checkpoint

TOK = CharTokenizer("abcdefgh")


def tiny() -> DecoderLM:
    return DecoderLM(TransformerConfig(family="decoder", vocab_size=8, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                                       max_len=16))


def disk_full_safetensors(*args, **kwargs):
    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                          'left on device" })')


def disk_full_os(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


WRITERS = pytest.mark.parametrize("failing", [disk_full_safetensors, disk_full_os], ids=["SafetensorError", "ENOSPC"])


def fails_at(monkeypatch, failing, nth: int) -> None:
    """safetensors' ``save_file`` (as the checkpoint module calls it) fails at its ``nth`` call (1-based)."""
    real = ckpt.save_file
    calls = [0]

    def save_file(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            failing()
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", save_file)


@WRITERS
@pytest.mark.parametrize("nth", [1, 2], ids=["weights", "training-tensors"])
def test_a_save_that_fills_the_disk_leaves_no_temporary_and_the_previous_checkpoint(tmp_path, monkeypatch,
                                                                                    failing, nth) -> None:
    first = tiny()
    save_checkpoint(tmp_path / "last", first, TOK, TrainingState(info={"step": 1}))
    fails_at(monkeypatch, failing, nth)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*last \(.*No space left on device.*\); "
                                              r"the previous checkpoint at .*last is intact"):
        save_checkpoint(tmp_path / "last", tiny(), TOK, TrainingState(info={"step": 2}))
    assert sorted(os.listdir(tmp_path)) == ["last"]  # no .last.tmp-PID left behind
    loaded = load_checkpoint(tmp_path / "last")
    assert torch.equal(loaded.model.embed.token.weight, first.embed.token.weight)
    assert ckpt.load_training_state(tmp_path / "last").info == {"step": 1}


def test_a_failed_first_save_leaves_nothing(tmp_path, monkeypatch) -> None:
    fails_at(monkeypatch, disk_full_safetensors, 1)
    with pytest.raises(CheckpointError, match="No space left on device") as info:
        save_checkpoint(tmp_path / "new", tiny(), TOK)
    assert "intact" not in str(info.value)
    assert os.listdir(tmp_path) == []


def test_a_failing_rename_puts_the_previous_checkpoint_back(tmp_path, monkeypatch) -> None:
    first = tiny()
    save_checkpoint(tmp_path / "last", first, TOK)
    real = os.replace

    def replace(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(CheckpointError, match=r"Input/output error.*intact"):
        save_checkpoint(tmp_path / "last", tiny(), TOK)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert torch.equal(load_checkpoint(tmp_path / "last").model.embed.token.weight, first.embed.token.weight)


def test_ctrl_c_inside_a_save_removes_the_temporary_and_stays_a_ctrl_c(tmp_path, monkeypatch) -> None:
    save_checkpoint(tmp_path / "last", tiny(), TOK)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", tiny(), TOK)
    assert sorted(os.listdir(tmp_path)) == ["last"]


@WRITERS
def test_export_that_fills_the_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, failing) -> None:
    from attnlab.cli import main

    save_checkpoint(tmp_path / "src", tiny(), TOK)
    save_checkpoint(tmp_path / "exp", tiny(), TOK)  # an earlier export, kept when the new one fails
    before = (tmp_path / "exp" / "model.safetensors").read_bytes()
    monkeypatch.setattr(ckpt, "save_file", failing)
    assert main(["export", str(tmp_path / "src"), str(tmp_path / "exp")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not write checkpoint") and "No space left" in err[0], err
    assert "SafetensorError" not in err[0]
    assert sorted(os.listdir(tmp_path)) == ["exp", "src"]
    assert (tmp_path / "exp" / "model.safetensors").read_bytes() == before


@pytest.fixture
def one_rank_group():
    """A one-process gloo group, so that FSDP2 and the sharded writer run in this process."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def sharded_model() -> tuple[DecoderLM, torch.optim.Optimizer]:
    from torch.distributed.fsdp import fully_shard

    model = tiny()
    fully_shard(model)
    return model, torch.optim.AdamW(model.parameters())


@WRITERS
def test_a_sharded_save_that_fails_leaves_no_temporary_and_the_previous_checkpoint(tmp_path, monkeypatch,
                                                                                  one_rank_group, failing) -> None:
    model, optimizer = sharded_model()
    state = TrainingState(info={"step": 1}, tensors={"x": torch.zeros(2)})
    sharded.save_sharded_checkpoint(tmp_path / "last", model, TOK, state, optimizer, tag="t")
    before = load_checkpoint(tmp_path / "last").model.embed.token.weight.clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    monkeypatch.setattr(sharded, "save_file", failing)  # rank 0's training tensors
    with pytest.raises(CheckpointError, match=r"No space left on device.*intact"):
        sharded.save_sharded_checkpoint(tmp_path / "last", model, TOK, state, optimizer, tag="t")
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert torch.equal(load_checkpoint(tmp_path / "last").model.embed.token.weight, before)

    import torch.distributed.checkpoint as dcp

    monkeypatch.setattr(dcp, "save", lambda *a, **k: failing())  # the shards themselves
    with pytest.raises(CheckpointError, match=r"No space left on device.*intact"):
        sharded.save_sharded_checkpoint(tmp_path / "last", model, TOK, state, optimizer, tag="t")
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert json.loads((tmp_path / "last" / "training" / "state.json").read_text())["info"] == {"step": 1}


def test_nothing_is_written_inside_a_checkpoint(tmp_path) -> None:
    """``export OUT/last OUT/last/exp`` was accepted, and the next save of ``last`` deleted it."""
    save_checkpoint(tmp_path / "last", tiny(), TOK)
    os.symlink(tmp_path / "last", tmp_path / "link")
    before = sorted(p.name for p in (tmp_path / "last").iterdir())
    for inside in (tmp_path / "last" / "exp", tmp_path / "last" / "a" / "b", tmp_path / "link" / "exp"):
        with pytest.raises(CheckpointError, match=rf"is inside the checkpoint {tmp_path / 'last'}, "):
            save_checkpoint(inside, tiny(), TOK)
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == before
    assert sorted(os.listdir(tmp_path)) == ["last", "link"]
    save_checkpoint(tmp_path / "beside", tiny(), TOK)  # a sibling is fine
