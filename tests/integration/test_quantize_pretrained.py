"""Quantized real models against their float32 selves: SmolLM2's greedy tokens, MiniLM's embeddings.

Greedy agreement is checked teacher-forced: the quantized model reads the prompt followed by the
float32 model's 32 greedy tokens in one forward pass, and its argmax at each position must be the
float32 model's next token. While all of them match, greedy decoding of the quantized model would
choose exactly those tokens; the count until the first mismatch is the number of tokens it keeps.
"""

from __future__ import annotations

import pytest
import torch

from attnlab.files import MINILM_PACKAGE, SMOLLM2_PACKAGE
from attnlab.pretrained.smollm2 import GGUF_FILE

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, there was a",
    "<|im_start|>user\nWhat is gravity?<|im_end|>\n<|im_start|>assistant\n",
]
SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome!",
    "Quantization stores each weight in eight bits.",
    "Paris is the capital of France.",
]
N_TOKENS = 32


@pytest.fixture(scope="module")
def smollm2():
    if not SMOLLM2_PACKAGE.has(GGUF_FILE):
        pytest.skip(f"SmolLM2 is not installed ({SMOLLM2_PACKAGE.install_hint})")
    import attnlab
    from attnlab.generate import Sampling, stream_ids

    torch.set_num_threads(1)
    loaded = attnlab.load("smollm2")
    greedy = Sampling(temperature=0)
    ref = [[t for t, _ in stream_ids(loaded.model, loaded.tokenizer.encode(p), max_new_tokens=N_TOKENS,
                                     sampling=greedy)] for p in PROMPTS]
    return loaded, ref


def tokens_kept(model, tokenizer, ref: list[list[int]]) -> list[int]:
    kept = []
    with torch.inference_mode():
        for prompt, tokens in zip(PROMPTS, ref, strict=True):
            ids = tokenizer.encode(prompt)
            choice = model(torch.tensor([ids + tokens[:-1]]))[0, len(ids) - 1 :].argmax(-1).tolist()
            kept.append(next((i for i, (a, b) in enumerate(zip(choice, tokens, strict=True)) if a != b), N_TOKENS))
    return kept


def test_int4_smollm2_keeps_all_32_greedy_tokens(smollm2) -> None:
    """SmolLM2's file is Q4_1 (Q8_0 output layer): int4 groups of 32 and the int8 output groups
    recover those weights exactly, so on the float32 path its greedy tokens are float32's."""
    from attnlab.generate import Sampling, stream_ids
    from attnlab.quantize import quantize

    loaded, ref = smollm2
    qm = quantize(loaded.model, "int4", path="dequantize")
    assert qm.quant_path == "mixed: int4-dequantize, int8-dequantize"
    assert tokens_kept(qm, loaded.tokenizer, ref) == [N_TOKENS] * len(PROMPTS)
    # and generation runs on it unchanged (the cached loop, a few real steps)
    got = [t for t, _ in stream_ids(qm, loaded.tokenizer.encode(PROMPTS[0]), max_new_tokens=2,
                                    sampling=Sampling(temperature=0))]
    assert got == ref[0][:2]


@pytest.mark.parametrize("scheme", ["int4", "int8"])
def test_the_kernel_paths_keep_most_greedy_tokens(smollm2, scheme: str) -> None:
    """The kernels round activations to bfloat16, and per-channel int8 cannot hold Q4_1's per-group
    grid: each changes a near-tie somewhere. Measured on these prompts (torch 2.13, AVX-512 CPU), with
    the output layer per channel on the kernel too: int4 32/32/17/32, int8 19/32/32/24 tokens kept. The
    bound guards against a broken scheme, which diverges within a few tokens."""
    import attnlab

    loaded, ref = smollm2
    qm = attnlab.load("smollm2", quantize=scheme).model  # type: ignore[arg-type]  # path "auto": the kernel here
    assert f"{scheme}-kernel" in qm.quant_path
    kept = tokens_kept(qm, loaded.tokenizer, ref)
    assert min(kept) >= 16 and sum(kept) >= 3 * N_TOKENS, kept


@pytest.mark.parametrize(("scheme", "bound"), [("int8", 0.99), ("int4", 0.95)])
def test_quantized_minilm_embeddings_stay_close(scheme: str, bound: float) -> None:
    """int8 meets the 0.99 goal; int4 (groups of 32) does not: 0.96-0.98 measured on these sentences."""
    if not MINILM_PACKAGE.has("model/model.safetensors"):
        pytest.skip(f"MiniLM is not installed ({MINILM_PACKAGE.install_hint})")
    import attnlab
    from attnlab.pretrained.minilm import embed_with

    loaded = attnlab.load("minilm")
    qloaded = attnlab.load("minilm", quantize=scheme)  # type: ignore[arg-type]
    assert qloaded.model.quant_path.startswith(f"{scheme}-") or qloaded.model.quant_path.startswith("mixed")
    want = embed_with(loaded.model, loaded.tokenizer, SENTENCES)
    got = embed_with(qloaded.model, qloaded.tokenizer, SENTENCES)
    assert got.shape == want.shape == (len(SENTENCES), 384)
    cosine = (got * want).sum(-1)  # unit vectors
    assert cosine.min() >= bound, cosine
