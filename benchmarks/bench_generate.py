"""Batch-1 greedy generation speed: attnlab with and without KV cache vs Hugging Face ``generate``.

    .venv/bin/python benchmarks/bench_generate.py [--tokens 200] [--repeats 5] [--threads 1]

One GPT-2-shaped model (6 layers, width 384, 6 heads, vocab 65, 256 positions; ~10.8M parameters) is
built in Hugging Face ``transformers`` and its weights converted into attnlab's ``DecoderLM`` with the
same key map users call (``attnlab.weights.hf``). Both generate the same number of tokens greedily
from the same prompt, in alternation, ``--repeats`` times; the table reports medians. The memory
bandwidth bound is what reading every weight once per token allows (``--bandwidth`` GB/s, measured
~31-34 GB/s on the development machine). The machine is shared, so compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from attnlab.generate import Sampling, stream_ids
from attnlab.models import DecoderLM
from attnlab.weights.hf import config_from_hf, from_hf_state_dict


def build(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hf_config = GPT2Config(vocab_size=65, n_positions=256, n_embd=384, n_layer=6, n_head=6, resid_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                           embd_pdrop=0.0, attn_pdrop=0.0)
    hf = GPT2LMHeadModel(hf_config).eval()
    config = config_from_hf(hf_config, dropout=0.0, attn_dropout=0.0)
    ours = DecoderLM(config).eval()
    ours.load_state_dict(from_hf_state_dict("gpt2", hf.state_dict(), config), strict=False)
    with torch.no_grad():
        ids = torch.randint(0, 65, (1, 32))
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)  # same weights, same model
    return hf, ours


def time_hf(hf, prompt: list[int], n: int) -> tuple[float, list[int]]:
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, use_cache=True, pad_token_id=0)
    return time.perf_counter() - start, out[0, len(prompt):].tolist()


def time_ours(model, prompt: list[int], n: int, use_cache: bool) -> tuple[float, list[int]]:
    start = time.perf_counter()
    tokens = [t for t, _ in stream_ids(model, prompt, max_new_tokens=n, sampling=Sampling(temperature=0),
                                       use_cache=use_cache)]
    return time.perf_counter() - start, tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bandwidth", type=float, default=32.0, help="memory read bandwidth, GB/s")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf, ours = build()
    ours_bf16 = DecoderLM(ours.config).eval()
    ours_bf16.load_state_dict(ours.state_dict())
    ours_bf16.to(torch.bfloat16)  # half the bytes per token; reported separately (different numerics)
    n_params = sum(p.numel() for p in ours.parameters())
    prompt = [1, 2, 3, 4]
    runners = {
        "hf_generate": lambda: time_hf(hf, prompt, args.tokens),
        "attnlab_cache": lambda: time_ours(ours, prompt, args.tokens, True),
        "attnlab_no_cache": lambda: time_ours(ours, prompt, args.tokens, False),
        "attnlab_cache_bf16": lambda: time_ours(ours_bf16, prompt, args.tokens, True),
    }
    for run in runners.values():  # warm-up
        run()
    seconds: dict[str, list[float]] = {k: [] for k in runners}
    outputs: dict[str, list[int]] = {}
    for _ in range(args.repeats):
        for name, run in runners.items():
            s, toks = run()
            seconds[name].append(s)
            outputs[name] = toks
    tps = {k: args.tokens / statistics.median(v) for k, v in seconds.items()}
    bound = args.bandwidth * 1e9 / (4 * n_params)
    same = sum(a == b for a, b in zip(outputs["hf_generate"], outputs["attnlab_cache"], strict=True))
    print(f"{n_params / 1e6:.2f}M parameters, {args.tokens} new tokens, batch 1, greedy, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'':20s} {'tokens/s':>9s} {'vs HF':>7s} {'of bound':>9s}")
    for k, v in tps.items():
        print(f"{k:20s} {v:9.1f} {v / tps['hf_generate']:6.2f}x {v / bound:8.0%}")
    print(f"bandwidth bound (fp32 weights read once per token at {args.bandwidth:g} GB/s): {bound:.0f} tokens/s")
    print(f"greedy tokens identical to HF: {same}/{args.tokens} (float32), "
          f"{sum(a == b for a, b in zip(outputs['hf_generate'], outputs['attnlab_cache_bf16'], strict=True))}"
          f"/{args.tokens} (bfloat16 weights); the bound row is for float32 weights")
    print(json.dumps({"tokens_per_s": tps, "bound": bound, "same_tokens": same}))


if __name__ == "__main__":
    main()
