"""Invariants every family must keep, from one shared table of cases (encoder, GPT-style and
Llama-style decoders, encoder-decoder).

Each ``Case`` knows how to build its model, make inputs (with optional padding) and say which of its
attention maps are causal; every test below runs over the cases it applies to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from attnlab.inspect import hook_points, hooks_attached, run_with_cache
from attnlab.models import TransformerConfig, attention_backend, build_model, set_attention_backend
from attnlab.models.encoder import EncoderModel
from attnlab.nn import AttentionBackendError

VOCAB, BATCH, SEQ, PAD = 50, 2, 9, 0
REAL = 6  # real tokens in the padded row


@dataclass(frozen=True)
class Case:
    name: str
    config: TransformerConfig

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def decodes(self) -> bool:
        return self.family != "encoder"

    def model(self) -> nn.Module:
        torch.manual_seed(0)
        return build_model(self.config).eval()

    def ids(self, seq: int = SEQ) -> Tensor:
        return torch.randint(1, VOCAB, (BATCH, seq))

    def args(self, ids: Tensor, mask: Tensor | None = None) -> tuple:
        """Positional arguments of the model call; ``ids`` is the source of an encoder-decoder."""
        return (ids, self.target(len(ids)), mask) if self.family == "encoder-decoder" else (ids, mask)

    def run(self, model: nn.Module, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            return model(*self.args(ids, mask))

    @staticmethod
    def target(batch: int = BATCH) -> Tensor:
        """The decoder input of an encoder-decoder (teacher forcing)."""
        return torch.arange(1, 6).repeat(batch, 1)

    def causal_points(self, names: list[str]) -> list[str]:
        """Names of the attention maps that must not look ahead."""
        if self.family == "encoder":
            return []
        return [n for n in names if n.endswith("attn.hook_weights") and "cross_attn" not in n
                and not n.startswith("encoder.")]


def _config(family: str, **kw) -> TransformerConfig:
    base = dict(family=family, vocab_size=VOCAB, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=32)
    return TransformerConfig(**{**base, **kw})


CASES = [
    Case("encoder", _config("encoder", norm_placement="post", embedding_norm=True, type_vocab_size=2)),
    Case("gpt", _config("decoder", fused_qkv=True, activation="gelu_tanh")),
    Case("llama", _config("decoder", positions="rotary", norm="rmsnorm", activation="swiglu", n_kv_heads=2,
                          bias=False, tie_embeddings=False)),
    Case("seq2seq", _config("encoder-decoder", positions="sinusoidal", norm_placement="post", activation="relu",
                            scale_embeddings=True)),
]
DECODING = [c for c in CASES if c.decodes]


def over(cases: list[Case]) -> Callable:
    return pytest.mark.parametrize("case", cases, ids=[c.name for c in cases])


def padded(case: Case) -> tuple[Tensor, Tensor]:
    ids = case.ids()
    mask = torch.ones_like(ids)
    mask[1, REAL:] = 0
    ids[1, REAL:] = PAD
    return ids, mask


@over(CASES)
def test_attention_rows_sum_to_one(case: Case) -> None:
    ids, mask = padded(case)
    _, cache = run_with_cache(case.model(), *case.args(ids, mask), names="*hook_weights")
    assert len(cache) > 0
    for name, weights in cache.items():  # (batch, heads, q_len, k_len)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), msg=name)


@over(CASES)
def test_causal_rows_put_exactly_zero_weight_on_the_future(case: Case) -> None:
    model = case.model()
    _, cache = run_with_cache(model, *case.args(case.ids()), names="*hook_weights")
    causal = case.causal_points(list(cache))
    for name in cache:
        weights = cache[name]
        future = torch.ones(weights.shape[-2:], dtype=torch.bool).triu(1)
        if name in causal:
            assert (weights[..., future] == 0).all(), name
        else:  # bidirectional (and cross-) attention does look ahead
            assert weights.shape[-2] != weights.shape[-1] or (weights[..., future] > 0).any(), name
    assert bool(causal) == case.decodes


@over(CASES)
def test_padding_does_not_change_real_tokens(case: Case) -> None:
    model = case.model()
    ids, mask = padded(case)
    junk = ids.clone()
    junk[1, REAL:] = torch.randint(1, VOCAB, (SEQ - REAL,))
    out, out_junk = case.run(model, ids, mask), case.run(model, junk, mask)
    alone = case.run(model, ids[1:, :REAL])  # the padded row's real tokens, without any padding
    if case.family == "encoder-decoder":  # every target position is real; the padding is in the source
        torch.testing.assert_close(out_junk, out)
        torch.testing.assert_close(out[1:], alone)
    else:
        real = mask.bool()
        torch.testing.assert_close(out_junk[real], out[real])
        torch.testing.assert_close(out[1:, :REAL], alone)


@pytest.mark.parametrize("positions", ["none", "sinusoidal", "learned", "rotary"])
def test_encoder_is_permutation_equivariant_only_without_positions(positions: str) -> None:
    torch.manual_seed(0)
    model = EncoderModel(_config("encoder", positions=positions), pooler=False).eval()
    ids = torch.randint(0, VOCAB, (1, SEQ))
    perm = torch.randperm(SEQ)
    with torch.no_grad():
        out, out_perm = model(ids), model(ids[:, perm])
    if positions == "none":
        torch.testing.assert_close(out_perm, out[:, perm])
    else:
        assert not torch.allclose(out_perm, out[:, perm], atol=1e-3)


@over(CASES)
def test_math_and_sdpa_backends_agree(case: Case) -> None:
    model = case.model()
    ids, mask = padded(case)
    assert attention_backend(model) == "sdpa"
    for m in (None, mask):
        fused = case.run(model, ids, m)
        set_attention_backend(model, "math")
        explicit = case.run(model, ids, m)
        set_attention_backend(model, "sdpa")
        torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)


@over(DECODING)
def test_cached_and_uncached_decoding_agree(case: Case) -> None:
    model = case.model()
    ids = case.ids()
    cache = model.new_cache()
    with torch.no_grad():
        if case.family == "encoder-decoder":
            src, mask = padded(case)
            memory = model.encode(src, mask)
            full = model.decode(ids, memory, mask)
            steps = [model.decode(ids[:, i : i + 1], memory, mask, cache=cache) for i in range(SEQ)]
        else:
            full = model(ids)
            prompt = model(ids[:, :3], cache=cache)  # a prompt first, then one token at a time
            steps = [prompt] + [model(ids[:, i : i + 1], cache=cache) for i in range(3, SEQ)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == SEQ


def _no_trace(model: nn.Module) -> None:
    for name, module in model.named_modules():
        assert not module._forward_hooks and not module._forward_pre_hooks, name
    assert attention_backend(model) == "sdpa"


@over(CASES)
def test_hooks_leave_no_trace(case: Case) -> None:
    model = case.model()
    ids = case.ids()
    before = case.run(model, ids)
    _, cache = run_with_cache(model, *case.args(ids))
    assert cache and set(cache) <= set(hook_points(model))
    _no_trace(model)
    torch.testing.assert_close(case.run(model, ids), before, atol=0, rtol=0)


@over(CASES)
def test_hooks_are_removed_when_the_forward_raises(case: Case) -> None:
    model = case.model()
    last_ff = [m for n, m in model.named_modules() if n.endswith("blocks.1.ff")][-1]

    def boom(_module: nn.Module, _inputs: object) -> None:
        raise RuntimeError("boom in the middle of the forward pass")

    handle = last_ff.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            run_with_cache(model, *case.args(case.ids()))
    finally:
        handle.remove()
    _no_trace(model)


@over(CASES)
def test_sdpa_asked_for_weights_raises(case: Case) -> None:
    model = case.model()
    name = next(n for n in hook_points(model) if n.endswith("attn.hook_weights"))
    with hooks_attached(model, {name: lambda *_: None}), pytest.raises(AttentionBackendError, match="math"):
        case.run(model, case.ids())
    _no_trace(model)
