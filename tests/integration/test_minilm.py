"""all-MiniLM-L6-v2 in attnlab's EncoderModel, against Hugging Face BertModel on the same files."""

from __future__ import annotations

import os

import pytest
import torch

from attnlab.files import MINILM_PACKAGE

pytestmark = pytest.mark.skipif(
    not MINILM_PACKAGE.has("model/model.safetensors", "model/tokenizer.json"),
    reason=f"all-MiniLM-L6-v2 files are not installed ({MINILM_PACKAGE.install_hint})",
)

SENTENCES = [
    "This is an example sentence",
    "Each sentence is converted",
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu — naïve résumé, 42 times!",
    "A man is playing a guitar.",
    "Someone plays an instrument.",
]


@pytest.fixture(scope="module")
def ours():
    from attnlab.pretrained import minilm

    return minilm.load_model()


@pytest.fixture(scope="module")
def reference():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    folder = MINILM_PACKAGE.path("model/config.json").parent
    model = transformers.BertModel.from_pretrained(str(folder)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    return model, tokenizer


def test_tokenizer_matches_reference_and_labels_pieces(ours, reference) -> None:
    from attnlab.pretrained.minilm import batch_encode

    _, tokenizer = ours
    _, hf_tok = reference
    encoded = hf_tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    ids, mask = batch_encode(tokenizer, SENTENCES)
    assert torch.equal(ids, encoded["input_ids"])
    assert torch.equal(mask, encoded["attention_mask"])
    assert tokenizer.tokens(tokenizer.encode("Tokenizing things")) == ["[CLS]", "token", "##izing", "things", "[SEP]"]
    assert tokenizer.vocab_size == 30522
    assert tokenizer.encode("") == []


def test_hidden_states_match_hf_bert(ours, reference) -> None:
    from attnlab.pretrained.minilm import batch_encode

    model, tokenizer = ours
    hf_model, _ = reference
    ids, mask = batch_encode(tokenizer, SENTENCES)
    with torch.no_grad():
        got = model(ids, attention_mask=mask)
        want = hf_model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()  # padding positions carry no meaning in either model
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)
    with torch.no_grad():  # and without padding, one sentence: every position
        one = ids[:1, : int(mask[0].sum())]
        torch.testing.assert_close(model(one), hf_model(input_ids=one).last_hidden_state, atol=1e-5, rtol=0)


def test_sentence_embedding_matches_model_card(ours, reference) -> None:
    """The model card's recipe: mean over real tokens, then L2-normalise."""
    from attnlab.pretrained.minilm import embed_with

    model, tokenizer = ours
    hf_model, hf_tok = reference
    encoded = hf_tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        tokens = hf_model(**encoded)[0]
    weights = encoded["attention_mask"].unsqueeze(-1).float()
    card = torch.nn.functional.normalize((tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9), p=2, dim=1)
    got = embed_with(model, tokenizer, SENTENCES, batch_size=4)  # two batches of different widths
    assert got.shape == (len(SENTENCES), 384)
    cosine = torch.nn.functional.cosine_similarity(got, card, dim=1)
    assert bool((cosine >= 0.99999).all()), cosine
    torch.testing.assert_close(got.norm(dim=1), torch.ones(len(SENTENCES)), atol=1e-5, rtol=0)


def test_similarity_ranks_paraphrase_above_unrelated(ours, monkeypatch) -> None:
    from attnlab.pretrained import minilm

    model, tokenizer = ours
    monkeypatch.setattr(minilm, "embed", lambda texts, batch_size=32: minilm.embed_with(model, tokenizer, texts))
    close = minilm.similarity("A man is playing a guitar.", "Someone plays an instrument.")
    far = minilm.similarity("A man is playing a guitar.", "The stock market fell sharply today.")
    assert close.dim() == 0 and -1.0 <= float(far) < float(close) <= 1.0
    matrix = minilm.similarity(SENTENCES[:2], SENTENCES)
    assert matrix.shape == (2, len(SENTENCES))
    torch.testing.assert_close(matrix[0, 0], torch.tensor(1.0), atol=1e-5, rtol=0)
