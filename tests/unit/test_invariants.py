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

from attnlab.inspect import (
    HookNotFiredError,
    hook_name,
    hook_points,
    hooks_attached,
    main_stack,
    math_backend,
    run_with_cache,
    stacks,
)
from attnlab.models import InputError, TransformerConfig, attention_backend, build_model, set_attention_backend
from attnlab.models.encoder import EncoderModel
from attnlab.nn import AttentionBackendError, HookPoint

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
def test_run_with_cache_keeps_activations_on_the_device_asked_for(case: Case) -> None:
    """``device=``: each activation moved there, dtype and shape kept; values unchanged; output left where it was.

    A machine without a GPU still has a second device to move to: ``meta`` (shapes and dtypes, no data)."""
    model = case.model()
    args = case.args(case.ids())
    out, here = run_with_cache(model, *args)
    out_cpu, on_cpu = run_with_cache(model, *args, device="cpu")
    out_meta, on_meta = run_with_cache(model, *args, device=torch.device("meta"))
    assert set(here) == set(on_cpu) == set(on_meta) and here
    for name, t in here.items():
        torch.testing.assert_close(on_cpu[name], t, atol=0, rtol=0)
        assert on_cpu[name].device.type == "cpu" and on_cpu[name].dtype == t.dtype
        assert on_meta[name].device.type == "meta" and (on_meta[name].dtype, on_meta[name].shape) == (t.dtype, t.shape)
    for o in (out_cpu, out_meta):  # the output is the model's, on its own device
        torch.testing.assert_close(o, out, atol=0, rtol=0)
    _no_trace(model)


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
    with pytest.raises(AttentionBackendError, match="math"), hooks_attached(model, {name: lambda *_: None}):
        case.run(model, case.ids())
    _no_trace(model)


# --- hook points: one naming scheme for every family ---------------------------------------------------

CLASSIFIER = Case("classifier", _config("encoder", n_classes=3, positions="sinusoidal"))
HOOKED = [*CASES, CLASSIFIER]
ATTN = ("hook_q", "hook_k", "hook_v", "hook_scores", "hook_weights", "hook_z", "hook_out")


def expected_hook_shapes(case: Case, src_len: int, tgt_len: int) -> dict[str, tuple[int, ...]]:
    """Every hook point the scheme promises for ``case``, with the shape it must record."""
    c = case.config
    d, heads, kv, d_k = c.d_model, c.n_heads, c.n_kv_heads or c.n_heads, c.d_model // c.n_heads
    stack_shapes = {"encoder": (src_len, c.n_layers)} if case.family != "decoder" else {}
    if case.family != "encoder":
        stack_shapes["decoder"] = (tgt_len if case.family == "encoder-decoder" else src_len,
                                   c.n_decoder_layers or c.n_layers)
    shapes: dict[str, tuple[int, ...]] = {}
    for stack, (n, layers) in stack_shapes.items():
        embed = ["hook_tok_embed"] + (["hook_pos_embed"] if c.positions in ("learned", "sinusoidal") else []) + ["hook_embed"]
        shapes |= {hook_name(stack, None, f"embed.{p}"): (BATCH, n, d) for p in embed}
        for layer in range(layers):
            def at(point: str, layer: int = layer, stack: str = stack) -> str:
                return hook_name(stack, layer, point)
            shapes |= {at(f"hook_resid_{w}"): (BATCH, n, d) for w in ("pre", "mid", "post")}
            kinds = [("attn", n)] + ([("cross_attn", src_len)] if case.family == "encoder-decoder" and stack == "decoder" else [])
            for kind, k_len in kinds:
                shapes |= {
                    at(f"{kind}.hook_q"): (BATCH, heads, n, d_k), at(f"{kind}.hook_k"): (BATCH, kv, k_len, d_k),
                    at(f"{kind}.hook_v"): (BATCH, kv, k_len, d_k), at(f"{kind}.hook_scores"): (BATCH, heads, n, k_len),
                    at(f"{kind}.hook_weights"): (BATCH, heads, n, k_len), at(f"{kind}.hook_z"): (BATCH, heads, n, d_k),
                    at(f"{kind}.hook_out"): (BATCH, n, d),
                }
                if c.positions == "rotary" and kind == "attn":
                    shapes |= {at("attn.hook_rot_q"): (BATCH, heads, n, d_k), at("attn.hook_rot_k"): (BATCH, kv, n, d_k)}
            shapes |= {at("ff.hook_pre"): (BATCH, n, c.d_ff), at("ff.hook_hidden"): (BATCH, n, c.d_ff), at("ff.hook_out"): (BATCH, n, d)}
        shapes[hook_name(stack, None, "hook_resid_final")] = (BATCH, n, d)
    out_len = tgt_len if case.family == "encoder-decoder" else src_len
    shapes["hook_logits"] = (BATCH, c.n_classes) if c.n_classes else (BATCH, out_len, c.vocab_size)
    return shapes


@over(HOOKED)
def test_every_hook_point_fires_exactly_once_with_its_documented_shape(case: Case) -> None:
    model = case.model()
    expected = expected_hook_shapes(case, SEQ, len(case.target()[0]))
    assert set(hook_points(model)) == set(expected)  # exactly the names of the scheme
    seen: dict[str, list[tuple[int, ...]]] = {name: [] for name in expected}

    def record(name: str) -> Callable:
        return lambda _m, _i, out: seen[name].append(tuple(out.shape))

    with math_backend(model), hooks_attached(model, {name: record(name) for name in expected}):
        case.run(model, case.ids())
    assert seen == {name: [shape] for name, shape in expected.items()}


def test_hook_names_are_built_by_one_helper() -> None:
    assert hook_name("decoder", 3, "attn.hook_weights") == "decoder.blocks.3.attn.hook_weights"
    assert hook_name("encoder", None, "embed.hook_embed") == "encoder.embed.hook_embed"
    assert hook_name(None, None, "hook_logits") == "hook_logits"
    for bad in (("stack", 0, "hook_resid_pre"), (None, 0, "hook_resid_pre"), ("decoder", -1, "hook_resid_pre")):
        with pytest.raises(ValueError):
            hook_name(*bad)
    by_case = {case.name: case.model() for case in HOOKED}
    assert main_stack(by_case["gpt"]) == "decoder" and main_stack(by_case["classifier"]) == "encoder"
    assert stacks(by_case["seq2seq"]) == ("encoder", "decoder")
    with pytest.raises(ValueError, match="encoder"):
        main_stack(by_case["seq2seq"])


def test_a_hook_asked_for_that_never_fires_is_an_error() -> None:
    llama, seq2seq = (next(c for c in CASES if c.name == n) for n in ("llama", "seq2seq"))
    model = llama.model()
    with pytest.raises(KeyError, match="hook_pos_embed"):  # rotary: no positions are added
        run_with_cache(model, llama.ids(), names="decoder.embed.hook_pos_embed")
    _, cache = run_with_cache(model, llama.ids(), names="*hook_rot_*")
    assert len(cache) == 2 * llama.config.n_layers
    gpt = next(c for c in CASES if c.name == "gpt")
    unpositioned = gpt.model()
    unpositioned.embed.positions = None  # the point exists, but nothing is added any more
    with pytest.raises(HookNotFiredError, match="hook_pos_embed"):
        run_with_cache(unpositioned, gpt.ids(), names=["*hook_pos_embed", "*hook_embed"])
    s2s = seq2seq.model()
    memory = s2s.encode(seq2seq.ids())
    never = {"encoder.hook_resid_final": lambda *_: None}  # decode() alone never runs the encoder
    with pytest.raises(HookNotFiredError, match="encoder"), hooks_attached(s2s, never):
        s2s.decode(seq2seq.target(), memory)
    _no_trace(s2s)
    _, cache = run_with_cache(s2s, seq2seq.ids(), seq2seq.target(), names="*attn.hook_weights")
    with pytest.raises(KeyError, match="stack="):
        cache.attention(0)
    assert cache.attention(1, stack="decoder", cross=True).shape[-1] == SEQ


def test_hook_point_watched_is_the_public_check() -> None:
    point = HookPoint()
    assert not point.watched
    handle = point.register_forward_hook(lambda *_: None)
    assert point.watched
    handle.remove()
    assert not point.watched


# --- left padding: positions follow the attention mask ---------------------------------------------------

POSITION_TYPES = ["learned", "sinusoidal", "rotary", "none"]
FAMILIES = ["decoder", "encoder", "encoder-decoder"]


def left_padded(ids: Tensor, pad: int) -> tuple[Tensor, Tensor]:
    """``ids`` with row 1's first ``pad`` tokens replaced by padding, and its mask."""
    ids, mask = ids.clone(), torch.ones_like(ids)
    ids[1, :pad], mask[1, :pad] = PAD, 0
    return ids, mask


def _family_model(family: str, positions: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(_config(family, positions=positions, norm="rmsnorm" if positions == "rotary" else "layernorm")).eval()


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("positions", POSITION_TYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_left_padding_gives_real_tokens_their_unpadded_outputs(family: str, positions: str, backend: str) -> None:
    model = _family_model(family, positions)
    set_attention_backend(model, backend)
    pad = SEQ - REAL
    src, src_mask = left_padded(torch.randint(1, VOCAB, (BATCH, SEQ)), pad)
    with torch.no_grad():
        if family == "encoder-decoder":  # both sides left-padded: the source by `pad`, the target by 2
            tgt, tgt_mask = left_padded(torch.randint(1, VOCAB, (BATCH, 6)), 2)
            out = model(src, tgt, src_mask, tgt_mask=tgt_mask)[1, 2:]
            alone = model(src[1:, pad:], tgt[1:, 2:])[0]
        else:
            out = model(src, src_mask)[1, pad:]
            alone = model(src[1:, pad:])[0]
    torch.testing.assert_close(out, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", POSITION_TYPES)
def test_left_padded_cached_decoding_equals_uncached(positions: str) -> None:
    model = _family_model("decoder", positions)
    ids, mask = left_padded(torch.randint(1, VOCAB, (BATCH, SEQ)), SEQ - REAL)
    cache = model.new_cache()
    with torch.no_grad():
        full = model(ids, mask)
        steps = [model(ids[:, :4], mask[:, :4], cache)]  # a prompt first, then one token at a time
        steps += [model(ids[:, i : i + 1], mask[:, : i + 1], cache) for i in range(4, SEQ)]
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, dim=1)[real], full[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", POSITION_TYPES)
def test_left_padded_cached_target_decoding_equals_uncached(positions: str) -> None:
    model = _family_model("encoder-decoder", positions)
    src, src_mask = left_padded(torch.randint(1, VOCAB, (BATCH, SEQ)), 3)
    tgt, tgt_mask = left_padded(torch.randint(1, VOCAB, (BATCH, 6)), 2)
    cache = model.new_cache()
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        full = model.decode(tgt, memory, src_mask, tgt_mask=tgt_mask)
        steps = [model.decode(tgt[:, i : i + 1], memory, src_mask, cache, tgt_mask=tgt_mask[:, : i + 1])
                 for i in range(6)]
    real = tgt_mask.bool()
    torch.testing.assert_close(torch.cat(steps, dim=1)[real], full[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_explicit_position_ids_are_used_and_checked(family: str) -> None:
    model = _family_model(family, "learned")
    ids, mask = left_padded(torch.randint(1, VOCAB, (BATCH, SEQ)), 3)
    following = (mask.cumsum(-1) - 1).clamp(min=0)

    def run(position_ids: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            if family == "encoder-decoder":  # the same ids, mask and positions on both sides
                return model(ids, ids, mask, tgt_mask=mask, src_position_ids=position_ids,
                             tgt_position_ids=position_ids)
            return model(ids, mask, position_ids=position_ids)

    torch.testing.assert_close(run(position_ids=following), run(), atol=0, rtol=0)
    shifted = following + 1
    assert not torch.allclose(run(position_ids=shifted), run(), atol=1e-3)
    for bad, message in ((following[:, :-1], "shape"), (following + 30, r"\[0, 32\)"), (following.float(), "integer")):
        with pytest.raises(InputError, match=message):
            run(position_ids=bad)


def test_rotary_scores_are_made_of_the_rotated_queries_and_keys() -> None:
    llama = next(c for c in CASES if c.name == "llama")
    model = llama.model()
    _, cache = run_with_cache(model, llama.ids())
    q, k, rot_q, rot_k, recorded = (cache[hook_name("decoder", 1, f"attn.hook_{p}")]
                                    for p in ("q", "k", "rot_q", "rot_k", "scores"))
    groups = q.shape[1] // k.shape[1]
    scores = rot_q @ rot_k.repeat_interleave(groups, dim=1).transpose(-2, -1) / q.shape[-1] ** 0.5
    visible = ~torch.ones(SEQ, SEQ, dtype=torch.bool).triu(1)
    torch.testing.assert_close(recorded[..., visible], scores[..., visible])
    # A rotation: each (i, i + d/2) pair keeps its length, position 0 is not moved, later ones are.
    half = q.shape[-1] // 2
    torch.testing.assert_close(rot_q[..., :half] ** 2 + rot_q[..., half:] ** 2, q[..., :half] ** 2 + q[..., half:] ** 2)
    torch.testing.assert_close(rot_k[:, :, 0], k[:, :, 0])
    assert not torch.allclose(rot_k[:, :, 1:], k[:, :, 1:])


@over([c for c in CASES if c.family == "decoder"])
def test_under_a_kv_cache_keys_are_this_calls_and_weights_cover_the_cache(case: Case) -> None:
    model = case.model()
    ids = case.ids()
    cache = model.new_cache()
    with torch.no_grad():
        model(ids[:, :5], cache=cache)
    _, rec = run_with_cache(model, ids[:, 5:6], cache=cache, names="decoder.blocks.0.attn.*")
    heads, kv = case.config.n_heads, case.config.n_kv_heads or case.config.n_heads
    assert rec["decoder.blocks.0.attn.hook_k"].shape[:3] == (BATCH, kv, 1)
    assert rec["decoder.blocks.0.attn.hook_weights"].shape == (BATCH, heads, 1, 6)
