"""Speed of the pretrained models in attnlab's own code, beside Hugging Face on the same weights.

    .venv/bin/python benchmarks/bench_pretrained.py [--new-tokens 64] [--repeats 3] [--threads 0] [--compile]

SmolLM2-135M-Instruct: greedy decoding at batch 1 with a KV cache (new tokens per second, prompt
excluded) and prompt processing (tokens per second); ``--compile`` adds decoding with the compiled
step (``stream_ids(..., compile=True)``), its first call (the compilation) reported apart.
all-MiniLM-L6-v2: sentence embeddings per second (batch 32 x ~16 tokens). Each figure is the median of ``--repeats`` runs; the machine is
shared, so compare the attnlab / Hugging Face ratio rather than absolute numbers across runs.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

# The Hugging Face reference builders are test helpers (tests/hf_reference.py), not library code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "The history of the printing press begins in the fifteenth century, when"


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_smollm2(new_tokens: int, repeats: int, compile: bool = False) -> dict[str, float]:
    from hf_reference import hf_llama_from_gguf  # tests/hf_reference.py (on the path: see the top)

    from attnlab.files import SMOLLM2_PACKAGE
    from attnlab.generate import Sampling, stream_ids
    from attnlab.pretrained.smollm2 import GGUF_FILE
    from attnlab.weights.gguf import load_llama_gguf

    start = time.perf_counter()
    model, tokenizer, gf = load_llama_gguf(SMOLLM2_PACKAGE.path(GGUF_FILE), max_len=2048)
    load_s = time.perf_counter() - start
    hf = hf_llama_from_gguf(model, gf)
    ids = tokenizer.encode(PROMPT)
    x = torch.tensor([ids])

    def ours_generate(compile: bool = False) -> None:
        out = list(stream_ids(model, ids, max_new_tokens=new_tokens, sampling=Sampling(temperature=0.0),
                              compile=compile))
        assert len(out) == new_tokens

    def hf_generate() -> None:
        with torch.no_grad():
            out = hf.generate(x, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              pad_token_id=2)
        assert out.shape[1] == len(ids) + new_tokens

    def prefill(m: Callable) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                m(x)
        return run

    ours_prefill = median_seconds(prefill(model), repeats)
    hf_prefill = median_seconds(prefill(lambda t: hf(t).logits), repeats)
    ours_gen = median_seconds(ours_generate, repeats)
    hf_gen = median_seconds(hf_generate, repeats)
    if compile:
        start = time.perf_counter()
        ours_generate(compile=True)  # compiles the decoding step
        compile_s = time.perf_counter() - start
        ours_compiled = median_seconds(lambda: ours_generate(compile=True), repeats)
    # generation time includes one prompt pass; subtract it to get per-new-token speed
    return {
        "smollm2_load_s": round(load_s, 2),
        "smollm2_prompt_tokens": len(ids),
        "smollm2_prefill_tok_per_s_attnlab": round(len(ids) / ours_prefill, 1),
        "smollm2_prefill_tok_per_s_hf": round(len(ids) / hf_prefill, 1),
        "smollm2_decode_tok_per_s_attnlab": round(new_tokens / max(ours_gen - ours_prefill, 1e-9), 1),
        "smollm2_decode_tok_per_s_hf": round(new_tokens / max(hf_gen - hf_prefill, 1e-9), 1),
        "smollm2_end_to_end_tok_per_s_attnlab": round(new_tokens / ours_gen, 1),
        "smollm2_end_to_end_tok_per_s_hf": round(new_tokens / hf_gen, 1),
    } | ({
        "smollm2_first_compiled_call_s": round(compile_s, 1),
        "smollm2_decode_tok_per_s_attnlab_compiled": round(new_tokens / max(ours_compiled - ours_prefill, 1e-9), 1),
    } if compile else {})


def bench_minilm(repeats: int) -> dict[str, float]:
    import transformers

    from attnlab.files import MINILM_PACKAGE
    from attnlab.pretrained.minilm import batch_encode, embed_with, load_model

    model, tokenizer = load_model()
    hf = transformers.BertModel.from_pretrained(str(MINILM_PACKAGE.path("model/config.json").parent)).eval()
    texts = [f"Sentence number {i} is about attention in Transformers." for i in range(32)]
    ids, mask = batch_encode(tokenizer, texts)

    def hf_run() -> None:
        with torch.no_grad():
            hf(input_ids=ids, attention_mask=mask)

    ours = median_seconds(lambda: embed_with(model, tokenizer, texts), repeats)
    ref = median_seconds(hf_run, repeats)
    return {
        "minilm_batch": f"{len(texts)} x {ids.shape[1]}",
        "minilm_sentences_per_s_attnlab": round(len(texts) / ours, 1),
        "minilm_sentences_per_s_hf_body_only": round(len(texts) / ref, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--compile", action="store_true", help="add SmolLM2 decoding with generate(compile=True)")
    ap.add_argument("--skip-minilm", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, object] = {"torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}
    if not args.skip_minilm:
        result |= bench_minilm(args.repeats)
    result |= bench_smollm2(args.new_tokens, args.repeats, args.compile)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
