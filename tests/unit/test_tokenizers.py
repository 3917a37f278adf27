"""Character and byte-level BPE tokenizers: round trips, clear errors, JSON reload."""

from __future__ import annotations

import pytest

from attnlab.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    UnknownCharacterError,
    register_tokenizer,
    tokenizer_from_json,
)

CORPUS = ["The quick brown fox jumps over the lazy dog.\n", "Grüße aus Köln — ναι, 日本語 テキスト 🎉\n"] * 30
HARD = "Grüße\t\r\n  日本語🎉 ναι \x00 e\u0301 \U0010ffff tabs\t\tand  spaces  "


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=300)


def test_char_round_trip_and_protocol() -> None:
    tok = CharTokenizer.train(CORPUS)
    assert isinstance(tok, Tokenizer)
    text = "Köln 🎉 the dog"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.tokens(ids) == list(text)
    assert tok.vocab_size == len(set("".join(CORPUS)))
    assert tok.encode("") == []


def test_char_unknown_character_is_named() -> None:
    tok = CharTokenizer.train(["abc"])
    with pytest.raises(UnknownCharacterError, match=r"'z' \(U\+007A\) at position 2"):
        tok.encode("abz")


def test_bpe_round_trips_arbitrary_unicode(bpe: BPETokenizer) -> None:
    assert isinstance(bpe, Tokenizer)
    for text in (HARD, "".join(CORPUS), "unseen: ∮ E⋅da = Q, 😀😃 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", " ", ""):
        assert bpe.decode(bpe.encode(text)) == text
    # merges were learned: frequent words take fewer tokens than bytes
    assert len(bpe.encode("The quick brown fox")) < len(b"The quick brown fox")
    assert 256 < bpe.vocab_size <= 300


def test_bpe_tokens_label_bytes(bpe: BPETokenizer) -> None:
    labels = bpe.tokens(bpe.encode("the dog"))
    assert "".join(labels) == "the dog"


@pytest.mark.parametrize("make", [lambda: CharTokenizer.train(CORPUS), lambda: BPETokenizer.train(CORPUS, 280)])
def test_json_reload_gives_same_ids(make) -> None:
    tok = make()
    again = tokenizer_from_json(tok.to_json())
    text = "Grüße the fox 🎉"
    assert type(again) is type(tok)
    assert again.encode(text) == tok.encode(text)
    assert again.vocab_size == tok.vocab_size


def test_loader_errors_and_registration() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer kind 'nope'"):
        tokenizer_from_json('{"kind": "nope"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        tokenizer_from_json("{")
    register_tokenizer("test-upper", lambda data: CharTokenizer(data["letters"]))
    assert tokenizer_from_json('{"kind": "test-upper", "letters": "AB"}').encode("BA") == [1, 0]


def test_bad_vocab_sizes() -> None:
    with pytest.raises(ValueError, match="vocab_size >= 256"):
        BPETokenizer.train(CORPUS, vocab_size=100)
    with pytest.raises(ValueError, match="corpus empty"):
        CharTokenizer.train([""])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CharTokenizer.train(["ab"]).decode([5])


def test_bpe_special_tokens_take_the_first_ids_and_never_come_from_text() -> None:
    tok = BPETokenizer.train(["a cat sat on </s> the mat <pad>"] * 20, vocab_size=300,
                             special_tokens=("<pad>", "<s>", "</s>"))
    assert tok.special_tokens == ("<pad>", "<s>", "</s>")
    assert [tok.token_id(t) for t in tok.special_tokens] == [0, 1, 2]
    ids = tok.encode("the </s> and <pad>")
    assert not set(ids) & {0, 1, 2} and tok.decode(ids) == "the </s> and <pad>"
    again = tokenizer_from_json(tok.to_json())
    assert again.encode("the </s>") == tok.encode("the </s>") and again.token_id("</s>") == 2
    with pytest.raises(KeyError, match="no special token '<mask>'"):
        tok.token_id("<mask>")
