"""Config flags do what their names say, or are refused (issue 22, item 9).

``bias=False`` used to leave every LayerNorm with a bias (``make_norm`` was never given it), and an
encoder with ``activation="swiglu"`` got a GELU MLM head without a word. The bundled models were
trained with LayerNorm biases under ``bias=False``: their configs now say ``norm_bias: true``, and a
``config.json`` from before ``norm_bias`` existed is read the way its model was built.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from attnlab.models import (
    ConfigError,
    DecoderLM,
    EncoderDecoder,
    EncoderForClassification,
    EncoderForMaskedLM,
    TransformerConfig,
    build_model,
    preset,
)
from attnlab.weights.bundled import bundled_dir
from attnlab.weights.checkpoint import load_checkpoint, save_checkpoint
from attnlab.weights.hf import config_from_hf

pytestmark = pytest.mark.usefixtures("one_thread")
FAMILIES = {
    "decoder": dict(family="decoder"),
    "encoder-mlm": dict(family="encoder", embedding_norm=True, norm_placement="post"),
    "encoder-decoder": dict(family="encoder-decoder", positions="sinusoidal"),
}


def config(family: str, **kw) -> TransformerConfig:
    base = dict(vocab_size=31, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=16)
    return TransformerConfig(**{**base, **FAMILIES[family], **kw})


def layernorm_biases(model: nn.Module) -> list[bool]:
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms
    return [m.bias is not None for m in norms]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bias_false_leaves_no_layernorm_bias(family: str) -> None:
    model = build_model(config(family, bias=False))
    assert model.config.norm_bias is False
    assert not any(layernorm_biases(model))  # old code: every LayerNorm had one
    assert all(layernorm_biases(build_model(config(family))))  # bias=True: all of them


@pytest.mark.parametrize("family", list(FAMILIES))
def test_norm_bias_is_its_own_flag(family: str) -> None:
    assert all(layernorm_biases(build_model(config(family, bias=False, norm_bias=True))))
    no_norm_bias = build_model(config(family, bias=True, norm_bias=False))
    assert not any(layernorm_biases(no_norm_bias))
    assert any(m.bias is not None for m in no_norm_bias.modules() if isinstance(m, nn.Linear))


def test_rmsnorm_has_no_bias_and_refuses_one() -> None:
    assert config("decoder", norm="rmsnorm", bias=True).norm_bias is False
    with pytest.raises(ConfigError, match=r"norm_bias=True.*RMSNorm has no bias"):
        config("decoder", norm="rmsnorm", norm_bias=True)
    with pytest.raises(ConfigError, match="norm_bias"):
        config("decoder", norm_bias="yes")


def test_replace_keeps_norm_bias_following_bias_and_norm() -> None:
    base = preset("gpt2-small")
    assert base.norm_bias is True and base.replace(bias=False).norm_bias is False
    assert base.replace(norm="rmsnorm").norm_bias is False  # not an error: it followed the norm
    assert base.replace(bias=False, norm_bias=True).norm_bias is True
    explicit = preset("shakespeare-char").replace(norm_bias=True)
    assert explicit.replace(d_model=64).norm_bias is True
    assert preset("shakespeare-char").norm_bias is False  # nanoGPT's bias=False: no LayerNorm biases either
    assert preset("llama-tiny").norm_bias is False and preset("bert-tiny").norm_bias is True


def test_hugging_face_configs_pin_their_norm_biases() -> None:
    bert = {"model_type": "bert", "vocab_size": 30, "hidden_size": 16, "num_attention_heads": 2,
            "num_hidden_layers": 1, "intermediate_size": 32, "max_position_embeddings": 16}
    gpt2 = {"model_type": "gpt2", "vocab_size": 30, "n_embd": 16, "n_head": 2, "n_layer": 1, "n_positions": 16}
    llama = {"model_type": "llama", "vocab_size": 30, "hidden_size": 16, "num_attention_heads": 2,
             "num_hidden_layers": 1, "intermediate_size": 32, "max_position_embeddings": 16, "attention_bias": True,
             "mlp_bias": True}
    assert config_from_hf(bert).norm_bias is True and config_from_hf(gpt2).norm_bias is True
    assert config_from_hf(llama).norm_bias is False and config_from_hf(llama).bias is True


@pytest.mark.parametrize("name", ["shakespeare-char", "bible-bpe"])
def test_the_bundled_models_keep_their_trained_layernorm_biases(name: str) -> None:
    path = bundled_dir(name)
    ckpt = load_checkpoint(path)
    assert ckpt.config.bias is False and ckpt.config.norm_bias is True
    stored = load_file(str(path / "model.safetensors"))
    norms = {n: m for n, m in ckpt.model.named_modules() if isinstance(m, nn.LayerNorm)}
    assert len(norms) == 2 * ckpt.config.n_layers + 1
    for n, m in norms.items():
        assert torch.equal(m.bias.detach(), stored[f"{n}.bias"].to(m.bias.dtype)) and m.bias.abs().max() > 0


def test_a_config_from_before_norm_bias_loads_with_layernorm_biases(tmp_path: Path) -> None:
    """A checkpoint written by an older attnlab (bias=False, no norm_bias key) loads as it was built."""
    old = tmp_path / "old"
    shutil.copytree(bundled_dir("shakespeare-char"), old)
    data = json.loads((old / "config.json").read_text())
    del data["norm_bias"]
    (old / "config.json").write_text(json.dumps(data))
    ids = torch.tensor([[20, 30, 40, 1, 2]])
    with torch.no_grad():
        want = load_checkpoint(bundled_dir("shakespeare-char")).model(ids)
        got = load_checkpoint(old).model(ids)
    assert torch.equal(got, want)


def test_a_model_without_norm_biases_saves_and_loads(tmp_path: Path) -> None:
    from attnlab.tokenizers import CharTokenizer

    model = DecoderLM(config("decoder", bias=False)).eval()
    path = save_checkpoint(tmp_path / "ckpt", model, CharTokenizer("abcdefghijklmnopqrstuvwxyz .,!?"))
    assert json.loads((path / "config.json").read_text())["norm_bias"] is False
    loaded = load_checkpoint(path).model
    assert not any(layernorm_biases(loaded))
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


# ------------------------------------------------------------------ the MLM head's activation


@pytest.mark.parametrize(("activation", "fn"), [("relu", F.relu), ("gelu", F.gelu),
                                                ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"))])
def test_the_mlm_head_uses_the_models_activation(activation: str, fn) -> None:
    model = EncoderForMaskedLM(config("encoder-mlm", activation=activation)).eval()
    h = torch.randn(2, 5, 16)
    want = model.lm_head(model.transform_norm(fn(model.transform(h))))
    assert torch.equal(model.head(h), want)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(ids), model.head(model.encoder(ids)))


def test_an_mlm_head_on_a_swiglu_encoder_is_refused() -> None:
    swiglu = config("encoder-mlm", activation="swiglu")
    with pytest.raises(ConfigError, match=r"swiglu.*MLM"):  # old code: a GELU head, without a word
        EncoderForMaskedLM(swiglu)
    with pytest.raises(ConfigError, match="swiglu"):
        build_model(swiglu)
    assert isinstance(build_model(swiglu.replace(n_classes=2)), EncoderForClassification)  # no MLM head: fine
    assert isinstance(build_model(config("encoder-decoder", activation="swiglu")), EncoderDecoder)


def test_attn_only_blocks_have_no_feed_forward() -> None:
    """``attn_only=True`` builds the attention-only models of Olsson et al. 2022: no MLP, no MLP norm,
    the residual stream unchanged after attention, and the interpret tools still decompose it."""
    from attnlab import interpret
    from attnlab.inspect import run_with_cache

    config = TransformerConfig(family="decoder", vocab_size=11, d_model=16, n_heads=2, n_layers=2, d_ff=32,
                               max_len=8, attn_only=True)
    model, full = DecoderLM(config).eval(), DecoderLM(config.replace(attn_only=False)).eval()
    assert all(block.ff is None and block.ff_norm is None for block in model.stack.blocks)
    assert not [name for name, _ in model.named_parameters() if ".ff" in name]
    ff_params = sum(p.numel() for b in full.stack.blocks for m in (b.ff, b.ff_norm) for p in m.parameters())
    assert ff_params == 2 * (16 * 32 + 32 + 32 * 16 + 16 + 2 * 16)  # up, down and the norm, per block
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in full.parameters()) - ff_params
    ids = torch.tensor([[1, 2, 3, 4, 5, 1, 2]])
    _, cache = run_with_cache(model, ids, names=["*hook_resid_mid", "*hook_resid_post"])
    for layer in range(2):
        assert torch.equal(cache[f"decoder.blocks.{layer}.hook_resid_mid"], cache[f"decoder.blocks.{layer}.hook_resid_post"])
    dla = interpret.direct_logit_attribution(model, ids, token=3)
    assert dla.labels == ["tok embed", "pos embed", "L0H0", "L0H1", "L1H0", "L1H1", "biases"]
    assert float(dla.contributions.sum()) + dla.bias_term == pytest.approx(dla.logit, abs=1e-4)
    with pytest.raises(ConfigError, match="attn_only"):
        TransformerConfig(family="decoder", vocab_size=11, d_model=16, n_heads=2, n_layers=1, d_ff=32, attn_only=1)
