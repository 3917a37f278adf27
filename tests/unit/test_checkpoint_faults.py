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
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*last \(No space left on device\); "
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
    monkeypatch.setattr(ckpt, "save_file", failing)  # rank 0's training tensors (written by checkpoint.write_layout)
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


def rewrite_weights(path, name: str, change) -> None:
    """Replace one tensor of ``path/model.safetensors`` (keeping the file's metadata)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        metadata = f.metadata()
    tensors[name] = change(tensors[name])
    save_file(tensors, str(path / "model.safetensors"), metadata=metadata)


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.long(), r"'embed.token.weight' is int64 \(expected a floating-point dtype\)"),
    (lambda t: t != 0, r"'embed.token.weight' is bool \(expected a floating-point dtype\)"),
    (lambda t: t.index_fill(0, torch.tensor([2]), float("nan")), r"'embed.token.weight' holds 16 NaN or infinite"),
    (lambda t: t.index_fill(1, torch.tensor([0]), float("inf")), r"'embed.token.weight' holds 8 NaN or infinite"),
])
def test_weights_of_the_wrong_dtype_or_not_finite_are_refused_in_one_line(tmp_path, capsys, change, message) -> None:
    """A checkpoint's int64, bool or NaN weights loaded silently; `generate` printed garbage with rc 0."""
    from attnlab.cli import main

    save_checkpoint(tmp_path / "c", tiny(), TOK)
    rewrite_weights(tmp_path / "c", "embed.token.weight", change)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unusable weights \(damaged file\?\): " + message):
        load_checkpoint(tmp_path / "c")
    assert main(["generate", "ab", "--checkpoint", str(tmp_path / "c"), "-n", "3"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured
    assert "unusable weights" in captured.err


def test_a_sharded_checkpoint_with_nan_weights_is_refused(tmp_path, one_rank_group) -> None:
    model, optimizer = sharded_model()
    with torch.no_grad():
        model.stack.blocks[0].ff.down.weight.fill_(float("nan"))
    sharded.save_sharded_checkpoint(tmp_path / "last", model, TOK, TrainingState(info={"step": 1}), optimizer, tag="t")
    with pytest.raises(CheckpointError, match=r"sharded: unusable weights \(damaged file\?\): 'stack.blocks.0.ff.down.weight' "
                                              r"holds 512 NaN"):
        load_checkpoint(tmp_path / "last")


@pytest.mark.parametrize(("info", "message"), [
    ({"step": 1e30, "best_val": 1.0}, r"'step' is 1e\+30; expected an integer in \[0, "),
    ({"step": -5, "best_val": 1.0}, r"'step' is -5; expected an integer"),
    ({"step": True, "best_val": 1.0}, r"'step' is True"),
    ({"step": 3, "best_val": float("nan")}, r"'best_val' is nan; expected a number >= 0"),
    ({"step": 3, "best_val": -1.0}, r"'best_val' is -1.0"),
    ({"step": 3, "best_val": "low"}, r"'best_val' is 'low'"),
    ({"step": 3, "best_val": 1.0, "world_size": 0}, r"'world_size' is 0"),
    ({"step": 3, "best_val": 1.0, "schedule": {"lr": float("nan"), "min_lr": 0, "warmup": 0, "decay_steps": 9}},
     r"'schedule' is .*expected an object of finite numbers"),
    ([1, 2], r"'info' is list, not an object"),
])
def test_training_state_values_are_checked(tmp_path, info, message) -> None:
    """state.json with "step": 1e30, -5 or "best_val": NaN was accepted."""
    save_checkpoint(tmp_path / "c", tiny(), TOK, TrainingState(info={"step": 3, "best_val": 1.0}))
    state = tmp_path / "c" / "training" / "state.json"
    meta = json.loads(state.read_text())
    state.write_text(json.dumps({**meta, "info": info}))
    with pytest.raises(CheckpointError, match=r"state\.json: " + message + r".*the training state is damaged"):
        ckpt.load_training_state(tmp_path / "c")


def test_training_state_numbers_that_are_fine_load(tmp_path) -> None:
    info = {"step": 0, "best_val": float("inf"), "world_size": 2,
            "schedule": {"lr": 1e-3, "min_lr": 0.0, "warmup": 0, "decay_steps": 9}}
    save_checkpoint(tmp_path / "c", tiny(), TOK, TrainingState(info=info))
    assert ckpt.load_training_state(tmp_path / "c").info == info


def test_optimizer_state_that_is_not_finite_is_refused(tmp_path) -> None:
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 8, (2, 5))).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c", model, TOK, TrainingState(info={"step": 1, "best_val": 2.0}, optimizer=opt.state_dict()))
    state = tmp_path / "c" / "training" / "state.json"
    meta = json.loads(state.read_text())
    meta["optimizer"]["param_groups"][0]["betas"] = [0.9, float("nan")]
    state.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"optimizer setting 'betas' is \[0.9, nan\]; expected finite numbers"):
        ckpt.load_training_state(tmp_path / "c")
    meta["optimizer"]["param_groups"][0]["betas"] = [0.9, 0.95]
    state.write_text(json.dumps(meta))
    from safetensors.torch import load_file
    from safetensors.torch import save_file as write

    tensors = load_file(str(tmp_path / "c" / "training" / "tensors.safetensors"))
    name = next(k for k in tensors if k.endswith("exp_avg"))
    tensors[name] = torch.full_like(tensors[name], float("inf"))
    write(tensors, str(tmp_path / "c" / "training" / "tensors.safetensors"))
    with pytest.raises(CheckpointError, match=rf"tensor '{name}' holds NaN or infinite values"):
        ckpt.load_training_state(tmp_path / "c")


@WRITERS
def test_text_files_written_by_rename_leave_nothing_when_writing_fails(tmp_path, monkeypatch, failing) -> None:
    """The same kind of fault outside checkpoints: `corpus` and `bleu --out` write through one helper."""
    from pathlib import Path

    from attnlab.files import write_replacing

    write_replacing(tmp_path / "train.tsv", "kept\n")
    def half_written(self, *args, **kwargs):
        with open(self, "w") as f:
            f.write("ne")
        failing()

    monkeypatch.setattr(Path, "write_text", half_written)
    with pytest.raises((SafetensorError, OSError)):
        write_replacing(tmp_path / "train.tsv", "new\n")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["train.tsv"] and (tmp_path / "train.tsv").read_text() == "kept\n"
