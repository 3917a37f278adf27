"""Batch-1 greedy generation speed: attnlab (eager with and without KV cache, compiled) vs Hugging Face.

    nice -n 5 .venv/bin/python benchmarks/bench_generate.py [--tokens 200] [--repeats 5] [--threads 1]
                                                           [--bf16] [--warm-compile-cache]

One GPT-2-shaped model (6 layers, width 384, 6 heads, vocab 65, 256 positions; ~10.8M parameters) is
built in Hugging Face ``transformers`` and its weights converted into attnlab's ``DecoderLM`` with the
same key map users call (``attnlab.weights.hf``). Every variant generates the same number of tokens
greedily from the same prompt; the variants run in turn, ``--repeats`` rounds after one warm-up round,
and the table reports medians, so all ratios come from one run under the same load.

The bound: a batch-1 decoding step must read every weight once (the position table only one row), so
tokens/s can be at most (memory read bandwidth) / (bytes of weights read per token). The bandwidth is
measured in the same run, in every round, as the read rate of ``sum()`` over a 256 MB tensor on the
same number of threads (its median is used). The KV cache adds reads on top (~0.2-4 MB per token
here, growing with the context); the bound leaves them out, so it is slightly optimistic.

``attnlab_compiled`` is ``stream_ids(..., compile=True)``: its first call compiles (reported
separately, as seconds for compile + one generation). By default the compile caches start empty
(a fresh ``TORCHINDUCTOR_CACHE_DIR``), so that figure is a cold start; ``--warm-compile-cache``
keeps the user's cache. ``--bf16`` adds rows with bfloat16 weights (half the bytes per token, other
numerics; their bound is computed for their own bytes).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

if __name__ == "__main__" and "--warm-compile-cache" not in sys.argv:  # before torch is imported
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_generate_inductor_")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from attnlab.generate import Sampling, stream_ids
from attnlab.models import DecoderLM
from attnlab.quantize import weight_bytes_per_token
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


def read_bandwidth(buffer: torch.Tensor) -> float:
    """Bytes per second that ``sum()`` reads from ``buffer`` (best of three passes)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - start)
    return buffer.numel() * buffer.element_size() / best


def timed_rounds(
    runners: dict[str, tuple[str, Callable[[], tuple[float, list[int]]]]], repeats: int,
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, list[int]], list[float]]:
    """Every runner once as a warm-up (compiled rows compile here), then ``repeats`` interleaved rounds
    with a read-bandwidth probe (256 MB, far beyond the caches) before each round and after the last.

    Returns the warm-up seconds, each runner's seconds per round, its last tokens, and the bandwidths.
    """
    first_call = {name: run()[0] for name, (_, run) in runners.items()}
    probe = torch.ones(64 * 2**20)
    bandwidth: list[float] = []
    seconds: dict[str, list[float]] = {k: [] for k in runners}
    outputs: dict[str, list[int]] = {}
    for _ in range(repeats):
        bandwidth.append(read_bandwidth(probe))
        for name, (_, run) in runners.items():
            s, toks = run()
            seconds[name].append(s)
            outputs[name] = toks
    bandwidth.append(read_bandwidth(probe))
    return first_call, seconds, outputs, bandwidth


def time_hf(hf, prompt: list[int], n: int) -> tuple[float, list[int]]:
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, use_cache=True, pad_token_id=0)
    return time.perf_counter() - start, out[0, len(prompt):].tolist()


def time_ours(model, prompt: list[int], n: int, **kwargs) -> tuple[float, list[int]]:
    start = time.perf_counter()
    tokens = [t for t, _ in stream_ids(model, prompt, max_new_tokens=n, sampling=Sampling(temperature=0), **kwargs)]
    return time.perf_counter() - start, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--bf16", action="store_true", help="add rows with bfloat16 weights")
    ap.add_argument("--warm-compile-cache", action="store_true", help="keep the existing torch.compile caches")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf, ours = build()
    prompt = [1, 2, 3, 4]
    models = {"float32": ours}
    if args.bf16:
        ours_bf16 = DecoderLM(ours.config).eval()
        ours_bf16.load_state_dict(ours.state_dict())
        models["bfloat16"] = ours_bf16.to(torch.bfloat16)
    runners: dict[str, tuple[str, Callable[[], tuple[float, list[int]]]]] = {
        "hf_generate": ("float32", lambda: time_hf(hf, prompt, args.tokens)),
        "attnlab_cache": ("float32", lambda: time_ours(ours, prompt, args.tokens)),
        "attnlab_no_cache": ("float32", lambda: time_ours(ours, prompt, args.tokens, use_cache=False)),
        "attnlab_compiled": ("float32", lambda: time_ours(ours, prompt, args.tokens, compile=True)),
    }
    if args.bf16:
        runners["attnlab_cache_bf16"] = ("bfloat16", lambda: time_ours(models["bfloat16"], prompt, args.tokens))
        runners["attnlab_compiled_bf16"] = (
            "bfloat16", lambda: time_ours(models["bfloat16"], prompt, args.tokens, compile=True))

    first_call, seconds, outputs, bandwidth = timed_rounds(runners, args.repeats)
    bw = statistics.median(bandwidth)
    per_token = {dtype: weight_bytes_per_token(m) for dtype, m in models.items()}
    bound = {dtype: bw / b for dtype, b in per_token.items()}
    tps = {k: args.tokens / statistics.median(v) for k, v in seconds.items()}
    same = {k: sum(a == b for a, b in zip(outputs["hf_generate"], v, strict=True)) for k, v in outputs.items()}
    n_params = sum(p.numel() for p in ours.parameters())
    print(f"{n_params / 1e6:.2f}M parameters, {args.tokens} new tokens from a {len(prompt)}-token prompt, batch 1, "
          f"greedy, {torch.get_num_threads()} thread(s), median of {args.repeats} rounds")
    print(f"read bandwidth (sum over 256 MB, median of {len(bandwidth)} probes between rounds): {bw / 1e9:.1f} GB/s "
          f"(min {min(bandwidth) / 1e9:.1f}, max {max(bandwidth) / 1e9:.1f})")
    for dtype, b in per_token.items():
        print(f"weights read per token ({dtype}): {b / 1e6:.1f} MB -> bound {bound[dtype]:.0f} tokens/s")
    print(f"{'':22s} {'tokens/s':>9s} {'vs HF':>7s} {'of bound':>9s} {'same as HF':>11s}")
    for k, v in tps.items():
        dtype = runners[k][0]
        print(f"{k:22s} {v:9.1f} {v / tps['hf_generate']:6.2f}x {v / bound[dtype]:8.0%} {same[k]:7d}/{args.tokens}")
    for k in runners:
        if "compiled" in k:
            print(f"{k}: first call (compile + {args.tokens} tokens) {first_call[k]:.1f} s"
                  f"{'' if args.warm_compile_cache else ', cold compile cache'}")
    print(json.dumps({"tokens_per_s": tps, "bandwidth_GBps": bw / 1e9, "bytes_per_token": per_token,
                      "bound_tokens_per_s": bound, "same_tokens_as_hf": same, "first_call_s": first_call}))


if __name__ == "__main__":
    main()
