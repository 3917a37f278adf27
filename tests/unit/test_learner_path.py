"""The learner's path through the model code (issue 24, item 3; DESIGN.md example 14).

A reader who opens ``DecoderLM.forward`` reaches the softmax in a few calls (forward -> stack ->
block -> multi-head attention -> ``attention`` -> softmax), a block is built from the config and
reads as its residual lines, and every forward says the shapes it takes and returns.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import traceback
from pathlib import Path

import pytest
import torch
from torch import nn

import attnlab
import attnlab.models
import attnlab.nn
from attnlab.models import DecoderLM, TransformerConfig
from attnlab.nn import Block, LayerConfig, attention
from attnlab.nn.attention import AttentionBackendError, fused_attention

SOURCE = Path(attnlab.__file__).parent


def _tiny(**changes: object) -> TransformerConfig:
    fields = {"family": "decoder", "vocab_size": 31, "d_model": 16, "n_heads": 4, "n_layers": 2, "d_ff": 24,
              "max_len": 16, "attention_backend": "math"}
    return TransformerConfig(**{**fields, **changes})  # type: ignore[arg-type]


def _calls_to_softmax(model: nn.Module, *args: object) -> list[str]:
    """The attnlab functions on the stack when the softmax runs, from ``type(model).forward`` down."""
    seen: list[list[traceback.FrameSummary]] = []
    real = torch.softmax

    def spy(*a: object, **k: object) -> torch.Tensor:
        seen.append(traceback.extract_stack()[:-1])  # without this spy's own frame
        return real(*a, **k)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(torch, "softmax", spy)
        model(*args)
    assert seen, "the math backend never called torch.softmax"
    ours = [f for f in seen[0] if Path(f.filename).is_relative_to(SOURCE)]  # torch's Module.__call__ frames left out
    top = inspect.getsourcefile(type(model).forward)
    start = next(i for i, f in enumerate(ours) if f.filename == top and f.name == "forward")
    return [f"{Path(f.filename).relative_to(SOURCE)}:{f.name}" for f in ours[start:]]


def test_the_softmax_is_at_most_five_calls_from_decoder_forward() -> None:
    torch.manual_seed(0)
    model = DecoderLM(_tiny()).eval()
    chain = _calls_to_softmax(model, torch.tensor([[1, 2, 3, 4]]))
    # each function on the chain makes one call: the last one is attention() calling the softmax
    assert len(chain) <= 5, f"{len(chain)} calls from DecoderLM.forward to the softmax: {' -> '.join(chain)}"
    assert chain[0] == "models/decoder.py:forward" and chain[-1] == "nn/attention.py:attention"


def test_layer_config_names_fields_of_transformer_config() -> None:
    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    wanted = set(LayerConfig.__annotations__)
    assert wanted and wanted <= fields, f"LayerConfig asks for fields TransformerConfig lacks: {wanted - fields}"


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_block_is_built_from_the_config(placement: str) -> None:
    config = _tiny(n_kv_heads=2, head_dim=8, norm="rmsnorm", norm_eps=1e-4, norm_placement=placement,
                   activation="swiglu", bias=False, dropout=0.25, attn_dropout=0.125, fused_qkv=True)
    block = Block(config)
    assert block.pre_norm == (placement == "pre")
    assert (block.attn.n_heads, block.attn.n_kv_heads, block.attn.head_dim) == (4, 2, 8)
    assert block.attn.fused_qkv and block.attn.dropout == 0.125 and block.attn.out_proj.bias is None
    assert block.ff.activation == "swiglu" and block.ff.up.out_features == 24 and block.ff.up.bias is None
    assert block.dropout.p == 0.25 and block.ff.dropout.p == 0.0  # the block drops the sub-layer's output
    for norm in (block.attn_norm, block.ff_norm):
        assert type(norm).__name__ == "RMSNorm" and norm.eps == 1e-4 and norm.weight.shape == (16,)
    assert block.cross_attn is None and block.cross_norm is None
    cross = Block(_tiny(family="encoder-decoder"), cross_attend=True)
    assert cross.cross_attn is not None and cross.cross_attn.cross and not cross.cross_attn.fused_qkv


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_block_forward_is_its_residual_lines(placement: str) -> None:
    """Pre-norm: ``x + sublayer(norm(x))``; post-norm: ``norm(x + sublayer(x))``, for self-attention,
    cross-attention and the feed-forward layer, with the block's own sub-layers (fp32)."""
    torch.manual_seed(0)
    block = Block(_tiny(family="encoder-decoder", norm_placement=placement), cross_attend=True).eval()
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    pre = placement == "pre"

    def residual(x: torch.Tensor, norm: nn.Module, sublayer) -> torch.Tensor:  # type: ignore[no-untyped-def]
        return x + sublayer(norm(x)) if pre else norm(x + sublayer(x))

    with torch.no_grad():
        h = residual(x, block.attn_norm, lambda h: block.attn(h, is_causal=True))
        h = residual(h, block.cross_norm, lambda h: block.cross_attn(h, memory=memory))
        h = residual(h, block.ff_norm, block.ff)
        torch.testing.assert_close(block(x, is_causal=True, memory=memory), h, rtol=0, atol=0)


def test_fused_attention_keeps_the_mask_rules() -> None:
    """The fused kernel's rules in one helper: its causal flag only for square unmasked attention, the
    look-ahead mask otherwise (cached keys, explicit masks), and no weights."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    pad = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]).bool()[:, None, None, :]
    cases = [
        (q, k[:, :, :3], v[:, :, :3], None),  # square, no mask: the kernel's own causal flag
        (q, k, v, None),  # 3 queries after 2 cached keys: the look-ahead mask is built
        (q, k, v, pad),  # and combined with a padding mask
        (q[:, :, -1:], k, v, pad),  # one decoding step sees every key it may
    ]
    for qq, kk, vv, mask in cases:
        expected, _ = attention(qq, kk, vv, mask, backend="math", is_causal=True)
        torch.testing.assert_close(fused_attention(qq, kk, vv, mask, is_causal=True), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(AttentionBackendError, match="does not compute attention weights"):
        fused_attention(q, k, v, wants_weights=True)


def _modules_with_forward() -> list[tuple[str, type[nn.Module]]]:
    found = []
    for package in (attnlab.nn, attnlab.models):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for name, cls in vars(module).items():
                if (inspect.isclass(cls) and issubclass(cls, nn.Module) and cls.__module__ == module.__name__
                        and "forward" in vars(cls)):
                    found.append((f"{module.__name__}.{name}", cls))
    return found


def test_every_forward_in_nn_and_models_states_its_shapes() -> None:
    found = _modules_with_forward()
    assert len(found) >= 10
    missing = [name for name, cls in found
               if not any(mark in (cls.forward.__doc__ or "") for mark in ("``(", "shape"))]
    assert not missing, f"forward without a shape docstring: {missing}"

