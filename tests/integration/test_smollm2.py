"""SmolLM2-135M-Instruct from its GGUF file, against Hugging Face LlamaForCausalLM on the same weights.

The reference gets the dequantized tensors through Hugging Face's own GGUF conversion
(``LlamaTensorProcessor`` un-permutes Q/K its own way), so a wrong un-permutation on our side shows up
as a logit mismatch rather than cancelling out.
"""

from __future__ import annotations

import os

import pytest
import torch

from attnlab.files import SMOLLM2_PACKAGE
from attnlab.pretrained.smollm2 import GGUF_FILE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SMOLLM2_PACKAGE.has(GGUF_FILE),
        reason=f"SmolLM2 GGUF file is not installed ({SMOLLM2_PACKAGE.install_hint})",
    ),
]

TEXTS = [
    "The capital of France is",
    "  leading spaces\n\n\ttabs   and   runs   \n",
    "naïve café, 日本語, 😀👍🏽 emoji",
    "I'm sure they've said we'll; can't?",
    "<|im_start|>user\nHi!<|im_end|>\n",
    "x 2024 abc123 3.14159 $1,000,000",
    "def f(x):\n    return x ** 2\r\n",
]


@pytest.fixture(scope="module")
def ours():
    from attnlab.weights.gguf import load_llama_gguf

    return load_llama_gguf(SMOLLM2_PACKAGE.path(GGUF_FILE))  # (model, tokenizer, gguf file)


@pytest.fixture(scope="module")
def reference(ours):
    pytest.importorskip("transformers")
    from hf_reference import hf_llama_from_gguf

    model, _, gf = ours
    hf = hf_llama_from_gguf(model, gf)  # raises unless only lm_head is missing (tied to the embedding)
    assert torch.equal(hf.lm_head.weight, hf.model.embed_tokens.weight)
    return hf


def test_logits_match_hf_llama(ours, reference) -> None:
    model, tokenizer, _ = ours
    ids = torch.tensor([tokenizer.encode("Hello there! The quick brown fox, 12 jumps; naïve café.")])
    with torch.no_grad():
        got, want = model(ids), reference(ids).logits
    assert got.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_cached_decoding_matches_uncached_and_says_paris(ours) -> None:
    from attnlab.generate import Sampling, stream_ids

    model, tokenizer, _ = ours
    prompt = tokenizer.encode("The capital of France is")
    greedy = Sampling(temperature=0.0)
    new = [t for t, _ in stream_ids(model, prompt, max_new_tokens=4, sampling=greedy)]  # KV cache
    assert "Paris" in tokenizer.decode(new)
    assert [t for t, _ in stream_ids(model, prompt, max_new_tokens=4, sampling=greedy, use_cache=False)] == new
    ids = torch.tensor([prompt + new])
    n_prompt = len(prompt)
    with torch.no_grad():
        full = model(ids)  # uncached: the whole sequence at once
        cache = model.new_cache(max_len=ids.shape[1])
        steps = [model(ids[:, :n_prompt], cache=cache)[:, -1]]
        steps += [model(ids[:, i : i + 1], cache=cache)[:, -1] for i in range(n_prompt, ids.shape[1] - 1)]
    cached = torch.stack(steps, dim=1)
    torch.testing.assert_close(cached, full[:, n_prompt - 1 : -1], atol=1e-4, rtol=0)
    assert cached.argmax(-1)[0].tolist() == new[: cached.shape[1]] == full[0, n_prompt - 1 : -1].argmax(-1).tolist()


def test_tokenizer_matches_transformers_gguf_tokenizer(ours) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    _, tokenizer, gf = ours
    reference = transformers.AutoTokenizer.from_pretrained(str(gf.path.parent), gguf_file=gf.path.name)
    for text in TEXTS:
        ids = tokenizer.encode(text)  # literal: typed markers stay text
        assert ids == reference(text, add_special_tokens=False, split_special_tokens=True).input_ids, text
        assert tokenizer.decode(ids) == text
        assert tokenizer.encode(text, allow_special=True) == reference.encode(text, add_special_tokens=False), text
    assert tokenizer.vocab_size == 49152
    marked = "<|im_start|>user The"
    assert tokenizer.tokens(tokenizer.encode(marked, allow_special=True)) == ["<|im_start|>", "user", " The"]
    assert tokenizer.token_id("<|im_start|>") not in tokenizer.encode(marked)


def test_chat_prompt_renders_the_files_template(ours) -> None:
    jinja2 = pytest.importorskip("jinja2")
    from attnlab.pretrained.smollm2 import chat_prompt
    from attnlab.weights.gguf import chat_system_default

    _, tokenizer, gf = ours
    template = jinja2.Environment().from_string(gf.get("tokenizer.chat_template", required=True))
    system = chat_system_default(gf.get("tokenizer.chat_template"))
    conversations = [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
    ]
    for messages in conversations:
        for add in (True, False):
            want = template.render(messages=messages, add_generation_prompt=add)
            assert chat_prompt(messages, system=system, add_generation_prompt=add) == want
    ids = tokenizer.encode(chat_prompt(conversations[0], system=system), allow_special=True)
    assert ids[0] == tokenizer.token_id("<|im_start|>") and ids.count(tokenizer.token_id("<|im_end|>")) == 2
