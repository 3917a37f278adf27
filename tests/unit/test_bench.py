"""The benchmark runs end to end on tiny shapes (no timing assertions: the figures are the README's)."""

from __future__ import annotations

import pytest

from attnlab.bench import Sizes, format_report, run_bench

pytest.importorskip("transformers")

TINY = Sizes(layers=1, width=32, heads=2, batch=2, seq=16, enc_layers=1, enc_width=32, enc_heads=2, enc_ff=64,
             enc_vocab=2000, enc_batch=2, enc_seq=8, warmup=1, repeats=2)


def test_bench_reports_every_variant_side_by_side() -> None:
    import torch

    before = torch.get_rng_state()
    report = run_bench(TINY, bf16="on")
    assert torch.equal(torch.get_rng_state(), before)  # it seeds its own models without touching the caller's generator
    assert [r.name for r in report.training] == [
        "HF GPT2LMHeadModel fp32", "attnlab DecoderLM fp32",
        "HF GPT2LMHeadModel bf16 autocast", "attnlab DecoderLM bf16 autocast",
    ]
    assert all(len(r.losses) == 3 and r.rate > 0 for r in report.training)
    text = format_report(report, TINY)
    assert "vs HF fp32" in text and "bf16 loss trajectory vs fp32" in text and "1.00x" in text
