"""The building blocks of attnlab.nn against formulas written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.nn import (
    AttentionBackendError,
    FeedForward,
    HookPoint,
    KVCache,
    MultiHeadAttention,
    RMSNorm,
    RotaryEmbedding,
    attention,
    causal_mask,
    combine_masks,
    padding_mask,
    sinusoidal_table,
)


def test_padding_mask_hides_padded_keys_from_every_query() -> None:
    mask = padding_mask(torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert mask.shape == (2, 1, 1, 3) and mask.dtype == torch.bool
    assert mask[:, 0, 0].tolist() == [[True, True, False], [True, False, False]]


def test_causal_mask_with_and_without_cached_keys() -> None:
    assert causal_mask(3, 3)[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    # two new queries after three cached keys: they are positions 3 and 4 of 5
    assert causal_mask(2, 5)[0, 0].tolist() == [[True, True, True, True, False], [True] * 5]
    with pytest.raises(ValueError, match="k_len >= q_len"):
        causal_mask(4, 3)


def test_combined_mask_is_the_logical_and() -> None:
    pad = padding_mask(torch.tensor([[1, 1, 0]]))
    both = combine_masks(pad, None, causal_mask(3, 3))
    assert both[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    assert combine_masks(None, None) is None


def _by_hand(q, k, v, mask=None):
    """softmax(Q K^T / sqrt(d_k)) V, one (batch, head, query) at a time, in float64."""
    b, h, n, d = q.shape
    out = torch.zeros(b, h, n, v.shape[-1], dtype=torch.float64)
    weights = torch.zeros(b, h, n, k.shape[2], dtype=torch.float64)
    for i in range(b):
        for j in range(h):
            for t in range(n):
                scores = [float(q[i, j, t] @ k[i, j, s]) / math.sqrt(d) for s in range(k.shape[2])]
                allowed = [mask is None or bool(mask[0, 0, t, s]) for s in range(k.shape[2])]
                top = max(sc for sc, ok in zip(scores, allowed, strict=True) if ok)
                exp = [math.exp(sc - top) if ok else 0.0 for sc, ok in zip(scores, allowed, strict=True)]
                for s, e in enumerate(exp):
                    weights[i, j, t, s] = e / sum(exp)
                out[i, j, t] = weights[i, j, t] @ v[i, j].double()
    return out, weights


@pytest.mark.parametrize("causal", [False, True])
def test_math_attention_equals_the_formula(causal: bool) -> None:
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    out, weights = attention(q, k, v, backend="math", is_causal=causal)
    ref_out, ref_weights = _by_hand(q, k, v, causal_mask(5, 5) if causal else None)
    torch.testing.assert_close(weights.double(), ref_weights, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("q_len", [1, 3, 6])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_sdpa_equals_math_with_masks_gqa_and_cached_keys(q_len: int, kv_heads: int) -> None:
    q = torch.randn(2, 4, q_len, 8)
    k, v = torch.randn(2, kv_heads, 6, 8), torch.randn(2, kv_heads, 6, 8)
    pad = padding_mask(torch.tensor([[1] * 6, [1, 1, 1, 1, 1, 0]]))
    for mask, causal in [(None, False), (None, True), (pad, False), (pad, True)]:
        fused, none = attention(q, k, v, mask, backend="sdpa", is_causal=causal)
        explicit, weights = attention(q, k, v, mask, backend="math", is_causal=causal)
        assert none is None and weights is not None
        torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_grouped_query_attention_shares_each_kv_head() -> None:
    q, k, v = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
    out, _ = attention(q, k, v, backend="math")
    full, _ = attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), backend="math")
    torch.testing.assert_close(out, full)


def test_fully_masked_row_gets_zero_weights_not_nan() -> None:
    q = k = v = torch.randn(1, 1, 2, 4)
    mask = torch.tensor([[False, False], [True, True]])[None, None]
    out, weights = attention(q, k, v, mask, backend="math")
    assert not out.isnan().any()
    assert weights[0, 0, 0].tolist() == [0.0, 0.0]


def test_sdpa_refuses_to_return_weights() -> None:
    q = torch.randn(1, 1, 2, 4)
    with pytest.raises(AttentionBackendError, match="backend='math'"):
        attention(q, q, q, backend="sdpa", need_weights=True)
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, q, q, backend="flash")  # type: ignore[arg-type]


def test_rotary_dot_product_depends_only_on_relative_position() -> None:
    rope = RotaryEmbedding(head_dim=16, max_len=64, theta=100.0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m: int, n: int) -> float:
        return float((rope(q, torch.tensor([m])) * rope(k, torch.tensor([n]))).sum())

    for m, n in [(5, 2), (9, 9), (3, 11)]:
        for shift in (1, 7, 30):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-4)
    x = torch.randn(1, 2, 4, 16)  # a rotation: lengths unchanged, position 0 untouched
    torch.testing.assert_close(rope(x, torch.arange(4)).norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rope(x[:, :, :1], torch.tensor([0])), x[:, :, :1])


def test_rotary_rotates_each_pair_i_and_i_plus_half_by_position_times_frequency() -> None:
    d, theta = 8, 100.0
    rope = RotaryEmbedding(head_dim=d, max_len=32, theta=theta)
    x = torch.randn(3, 2, 5, d)
    rows = torch.tensor([[0, 1, 2, 3, 4], [4, 5, 6, 7, 8], [0, 0, 1, 2, 3]])  # each row its own positions
    expected = torch.empty_like(x)
    for b in range(3):
        for t in range(5):
            for i in range(d // 2):
                angle = rows[b, t].item() * theta ** (-2 * i / d)
                c, s = torch.tensor(angle).cos(), torch.tensor(angle).sin()
                a, b2 = x[b, :, t, i], x[b, :, t, i + d // 2]
                expected[b, :, t, i], expected[b, :, t, i + d // 2] = a * c - b2 * s, b2 * c + a * s
    torch.testing.assert_close(rope(x, rows), expected, atol=1e-5, rtol=1e-5)
    shared = torch.arange(5)  # the same positions for every row: 1-D, or one row expanded (stride 0)
    torch.testing.assert_close(rope(x, shared.expand(3, 5)), rope(x, shared))
    torch.testing.assert_close(rope(x, shared.expand(3, 5)), rope(x, shared.repeat(3, 1)))
    torch.testing.assert_close(rope(x, shared)[0], expected[0], atol=1e-5, rtol=1e-5)  # row 0's positions are 0..4


def test_sinusoidal_table_follows_the_paper() -> None:
    d = 16
    table = sinusoidal_table(50, d)
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)
    # A fixed offset is a fixed rotation of every (sin, cos) pair (section 3.5's argument).
    offset = 3
    for i in range(d // 2):
        w = 1 / 10000 ** (2 * i / d)
        c, s = math.cos(offset * w), math.sin(offset * w)
        rot = torch.tensor([[c, -s], [s, c]])  # [sin, cos](p) @ rot = [sin, cos](p + offset)
        pairs = table[:40, 2 * i : 2 * i + 2]
        torch.testing.assert_close(pairs @ rot, table[offset : 40 + offset, 2 * i : 2 * i + 2], atol=1e-5, rtol=0)


def test_rmsnorm_and_swiglu_formulas() -> None:
    x = torch.randn(2, 3, 8)
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    torch.testing.assert_close(norm(x), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight)
    ff = FeedForward(8, 12, activation="swiglu", bias=False)
    torch.testing.assert_close(ff(x), ff.down(F.silu(ff.gate(x)) * ff.up(x)))


def test_fused_and_separate_qkv_compute_the_same() -> None:
    separate = MultiHeadAttention(16, 4, n_kv_heads=2)
    fused = MultiHeadAttention(16, 4, n_kv_heads=2, fused_qkv=True)
    with torch.no_grad():
        fused.qkv_proj.weight.copy_(torch.cat([separate.q_proj.weight, separate.k_proj.weight, separate.v_proj.weight]))
        fused.qkv_proj.bias.copy_(torch.cat([separate.q_proj.bias, separate.k_proj.bias, separate.v_proj.bias]))
        fused.out_proj.load_state_dict(separate.out_proj.state_dict())
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(fused(x, is_causal=True), separate(x, is_causal=True))


def test_kv_cache_fills_in_place_and_refuses_overflow() -> None:
    cache = KVCache(max_len=4)
    k, _ = cache.update(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8))
    assert k.shape == (1, 2, 3, 8) and cache.length == 3
    k, _ = cache.update(torch.randn(1, 2, 1, 8), torch.randn(1, 2, 1, 8))
    assert k.shape == (1, 2, 4, 8)
    with pytest.raises(ValueError, match="KV cache is full"):
        cache.update(torch.randn(1, 2, 1, 8), torch.randn(1, 2, 1, 8))


def test_hook_point_is_the_identity_and_still_runs_every_kind_of_hook() -> None:
    """Unwatched, a hook point returns its input without nn.Module's call machinery; its own hooks
    and PyTorch's global module hooks still run (and can replace the value)."""
    point, x = HookPoint(), torch.randn(3)
    assert point(x) is x
    handle = point.register_forward_hook(lambda m, args, out: out * 2)
    torch.testing.assert_close(point(x), x * 2)
    handle.remove()
    assert point(x) is x
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, args, out: seen.append(m))
    try:
        point(x)
    finally:
        handle.remove()
    assert seen == [point]
    pre = point.register_forward_pre_hook(lambda m, args: (args[0] + 1,))
    torch.testing.assert_close(point(x), x + 1)
    pre.remove()
