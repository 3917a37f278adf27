"""GPT-2's byte-level BPE from encoder.json + vocab.bpe, against Hugging Face's GPT-2 tokenizer."""

from __future__ import annotations

import json

import pytest

from attnlab.files import GPT2_TOKENIZER_PACKAGE
from attnlab.tokenizers import Tokenizer, tokenizer_from_json
from attnlab.tokenizers.hf_json import TokenizerFileError

needs_files = pytest.mark.skipif(
    not GPT2_TOKENIZER_PACKAGE.has("data/encoder.json", "data/vocab.bpe"),
    reason=f"GPT-2 tokenizer files are not installed ({GPT2_TOKENIZER_PACKAGE.install_hint})",
)

TEXTS = [
    "Hello world",
    "  leading spaces\n\n\ttabs   and   runs   \n",
    "naïve café, 日本語のテキスト, 😀👍🏽 emoji, Ελληνικά, עברית",
    "I'm sure they've said we'll see; can't they?",
    "before<|endoftext|>after",
    "12345 3.14159 -0.5e10 $1,000,000",
    "\u00a0non-breaking\u2028line sep\u200bzero width",
    "def f(x):\n    return x ** 2  # comment\r\n",
    "A" * 300,
]


@pytest.fixture(scope="module")
def pair():
    transformers = pytest.importorskip("transformers")
    from attnlab.tokenizers.gpt2 import gpt2_tokenizer

    vocab = str(GPT2_TOKENIZER_PACKAGE.path("data/encoder.json"))
    merges = str(GPT2_TOKENIZER_PACKAGE.path("data/vocab.bpe"))
    reference = transformers.GPT2TokenizerFast(vocab=vocab, merges=merges)
    assert len(reference) == 50257  # the reference really read the files
    return gpt2_tokenizer(), reference


@needs_files
@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_hf_gpt2_tokenizer(pair, text: str) -> None:
    ours, reference = pair
    ids = ours.encode(text)  # typed text is literal: "<|endoftext|>" is 7 ordinary tokens
    assert ids == reference(text, split_special_tokens=True).input_ids
    assert ours.decode(ids) == text  # byte-level: every string round-trips
    assert ours.encode(text, allow_special=True) == reference.encode(text)  # asked for: 50256


@needs_files
def test_protocol_labels_and_json_round_trip(pair) -> None:
    ours, _ = pair
    assert isinstance(ours, Tokenizer)
    assert ours.vocab_size == 50257
    assert ours.encode("") == []
    ids = ours.encode("Hello world<|endoftext|>", allow_special=True)
    assert ids == [15496, 995, 50256]
    assert 50256 not in ours.encode("Hello world<|endoftext|>")
    assert ours.tokens(ids) == ["Hello", " world", "<|endoftext|>"]
    assert "".join(ours.tokens(ours.encode("ééé"))) == "ééé"
    again = tokenizer_from_json(ours.to_json())
    assert again.encode(TEXTS[2]) == ours.encode(TEXTS[2])
    assert again.encode(TEXTS[4]) == ours.encode(TEXTS[4]) and 50256 not in again.encode(TEXTS[4])  # still literal
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.decode([50257])


def test_mismatched_files_are_named(tmp_path) -> None:
    from attnlab.tokenizers.gpt2 import gpt2_tokenizer

    vocab = tmp_path / "encoder.json"
    merges = tmp_path / "vocab.bpe"
    vocab.write_text(json.dumps({"a": 0, "b": 1}))
    merges.write_text("#version: 0.2\na b\n")
    with pytest.raises(TokenizerFileError, match=r"vocab\.bpe.*do not belong together"):
        gpt2_tokenizer(vocab, merges)
    vocab.write_text("{not json")
    with pytest.raises(TokenizerFileError, match=r"encoder\.json"):
        gpt2_tokenizer(vocab, merges)
    vocab.write_text(json.dumps({"a": 0, "b": 1, "ab": 2}))
    tok = gpt2_tokenizer(vocab, merges)
    assert tok.encode("ab") == [2] and tok.tokens([2]) == ["ab"]
