"""Checkpoints: exact round trip, tied weights stored once, atomic replacement, clear errors."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

import attnlab.weights.checkpoint as ckpt
from attnlab.models import DecoderLM, TransformerConfig
from attnlab.tokenizers import CharTokenizer
from attnlab.weights.checkpoint import (
    CheckpointError,
    TrainingState,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
)


def tiny(n_layers: int = 2) -> DecoderLM:
    config = TransformerConfig(family="decoder", vocab_size=8, d_model=16, n_heads=2, n_layers=n_layers, d_ff=32, max_len=16)
    return DecoderLM(config)


TOK = CharTokenizer("abcdefgh")


def test_round_trip_weights_config_tokenizer(tmp_path) -> None:
    model = tiny()
    save_checkpoint(tmp_path / "c", model, TOK)
    loaded = load_checkpoint(tmp_path / "c")
    assert loaded.config == model.config
    assert loaded.tokenizer.encode("hag") == TOK.encode("hag")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert loaded.model.lm_head.weight is loaded.model.embed.token.weight  # still tied after loading
    with safe_open(str(tmp_path / "c" / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert ("lm_head.weight" in names) != ("embed.token.weight" in names)  # stored once


def test_training_state_round_trip(tmp_path) -> None:
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randint(0, 8, (2, 5))).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(3)
    state = TrainingState(info={"step": 7, "data": {"offset": 12}}, tensors={"gen": gen.get_state()}, optimizer=opt.state_dict())
    save_checkpoint(tmp_path / "c", model, TOK, state)
    back = load_training_state(tmp_path / "c")
    assert back.info == {"step": 7, "data": {"offset": 12}}
    assert torch.equal(back.tensors["gen"], gen.get_state())
    opt2 = torch.optim.AdamW(tiny().parameters(), lr=5.0)
    opt2.load_state_dict(back.optimizer)
    assert opt2.param_groups[0]["betas"] == (0.9, 0.95) and opt2.param_groups[0]["lr"] == 1e-3
    for s1, s2 in zip(opt.state.values(), opt2.state.values(), strict=True):
        assert torch.equal(s1["exp_avg_sq"], s2["exp_avg_sq"]) and torch.equal(s1["step"], s2["step"])


def test_missing_truncated_and_wrong_shape(tmp_path) -> None:
    save_checkpoint(tmp_path / "c", tiny(), TOK)
    weights = tmp_path / "c" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_checkpoint(tmp_path / "c")
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: file is missing"):
        load_checkpoint(tmp_path / "c")
    # weights of a 2-layer model under a config that says 3 layers
    save_checkpoint(tmp_path / "d", tiny(2), TOK)
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    cfg["n_layers"] = 3
    (tmp_path / "d" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing tensors \['stack\.blocks\.2"):
        load_checkpoint(tmp_path / "d")
    cfg["n_layers"], cfg["d_model"], cfg["head_dim"] = 2, 32, None
    (tmp_path / "d" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(tmp_path / "d")
    cfg["d_modle"] = 1
    (tmp_path / "d" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json: unknown config key.*d_modle"):
        load_checkpoint(tmp_path / "d")
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch) -> None:
    first = tiny()
    save_checkpoint(tmp_path / "c", first, TOK)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    with pytest.raises(CheckpointError, match=r"No space left on device.*previous checkpoint.*intact"):
        save_checkpoint(tmp_path / "c", tiny(), TOK)
    loaded = load_checkpoint(tmp_path / "c")
    assert torch.equal(loaded.model.embed.token.weight, first.embed.token.weight)
    assert sorted(os.listdir(tmp_path)) == ["c"]  # no temporary directory left behind


def test_interrupted_swap_is_recovered(tmp_path) -> None:
    model = tiny()
    save_checkpoint(tmp_path / "c", model, TOK)
    os.replace(tmp_path / "c", tmp_path / ".c.old")  # killed between the two renames
    loaded = load_checkpoint(tmp_path / "c")
    assert torch.equal(loaded.model.embed.token.weight, model.embed.token.weight)
