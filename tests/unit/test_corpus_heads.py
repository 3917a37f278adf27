"""A head across a corpus (attnlab.interpret.corpus): ranking against a brute-force reference, role scores
on hand-set heads whose answer is known, the disk cache and cancellation."""

from __future__ import annotations

import threading

import pytest
import torch

from attnlab import catalog
from attnlab.inspect import run_with_cache
from attnlab.interpret import corpus as hc
from attnlab.interpret.links import special_ids, specificity
from attnlab.models import DecoderLM, EncoderDecoder, EncoderModel, TransformerConfig
from attnlab.tokenizers.char import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = ["the dog saw the cat.", "a cat ate it.", "she took the bread and ate it",
             "dad did add", "the end", "it was the dog, and the dog ran."]
CHARS = CharTokenizer(sorted(set("".join(SENTENCES))))


def _tiny(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = TransformerConfig(family=family, vocab_size=CHARS.vocab_size, d_model=32, n_heads=4, n_layers=2, d_ff=48,
                            max_len=40)
    if family == "encoder-decoder":
        cfg = TransformerConfig(family=family, vocab_size=CHARS.vocab_size, d_model=32, n_heads=4, n_layers=2,
                                n_decoder_layers=1, d_ff=48, max_len=40, positions="sinusoidal")
    model = {"decoder": DecoderLM, "encoder": EncoderModel, "encoder-decoder": EncoderDecoder}[family](cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # sharp, uneven attention: the ranking has something to rank
    return model.eval()


def _brute_force(model, tokenizer, sentences, layer, head, *, causal, stack, k):
    """One sentence at a time (no padding), every candidate pair, the mean over the others by a plain loop."""
    specials = special_ids(tokenizer)
    found = []
    for i, text in enumerate(sentences):
        ids = tokenizer.encode(text)
        x = torch.tensor([ids])
        args = (x, x) if model.config.family == "encoder-decoder" else (x,)  # a seq2seq reads it as source and target
        _, cache = run_with_cache(model, *args, names=f"{stack}.blocks.{layer}.attn.hook_weights")
        w = cache[f"{stack}.blocks.{layer}.attn.hook_weights"][0, head].double()
        real = [t not in specials for t in ids]
        best = None
        for q in range(len(ids)):
            for key in range(len(ids)):
                if not (real[q] and real[key] and q != key and (not causal or key < q)):
                    continue
                others = [float(w[o, key]) for o in range(len(ids))
                          if real[o] and o not in (q, key) and (not causal or o >= key)]
                spec = float(w[q, key]) - (sum(others) / len(others) if others else 0.0)
                cand = (spec, float(w[q, key]), -q, -key)
                if best is None or cand > best:
                    best = cand
        if best is not None:
            found.append((best[0], best[1], i, -best[2], -best[3]))
    found.sort(key=lambda t: (-t[0], -t[1], t[2]))
    return found[:k]


@pytest.mark.parametrize("which", ["tiny-decoder", "tiny-encoder", "tiny-encoder-decoder", "bible-bpe", "minilm"])
def test_corpus_ranking_matches_a_brute_force_reference(which: str, tmp_path) -> None:
    if which.startswith("tiny"):
        family = which.removeprefix("tiny-")
        model, tok, stack = _tiny(family), CHARS, "encoder" if family == "encoder-decoder" else family
    else:
        loaded = catalog.load(which)
        model, tok, stack = loaded.model, loaded.tokenizer, loaded.config.family
    scan = hc.scan_corpus(model, tok, SENTENCES, batch_size=4, cache_dir=tmp_path, progress=False)  # padded batches
    assert scan.sentences == SENTENCES and scan.skipped == 0
    n_layers, n_heads = scan.query.shape[1:]
    for layer in range(n_layers):
        for head in range(n_heads):
            want = _brute_force(model, tok, SENTENCES, layer, head, causal=stack == "decoder", stack=stack, k=4)
            got = scan.head_contexts(layer, head, k=4).contexts
            assert [(SENTENCES.index(c.sentence), c.query, c.key) for c in got] == [(w[2], w[3], w[4]) for w in want]
            assert [c.specificity for c in got] == pytest.approx([w[0] for w in want], abs=1e-5)
            assert [c.weight for c in got] == pytest.approx([w[1] for w in want], abs=1e-5)


def test_specificity_matches_the_per_pair_definition() -> None:
    torch.manual_seed(1)
    n = 7
    for causal in (False, True):
        w = torch.rand(3, n, n)
        if causal:
            w = w.tril()
        w = w / w.sum(-1, keepdim=True)
        real = torch.tensor([False, True, True, True, False, True, True])
        spec, others, count = specificity(w, real, causal=causal)
        for q in range(n):
            for key in range(n):
                members = [o for o in range(n) if real[o] and o not in (q, key) and (not causal or o >= key)]
                assert int(count[q, key]) == len(members)
                mean = w[:, members, key].double().mean(-1) if members else torch.zeros(3, dtype=torch.float64)
                assert torch.allclose(others[:, q, key], mean) and torch.allclose(spec[:, q, key], w[:, q, key].double() - mean)


# ----- roles on hand-set heads -----

MAX_LEN = 16


def _hand_set_model() -> DecoderLM:
    """Layer 0: head 0 attends to the previous token, head 1 to the earlier copies of its own token.

    Post-norm (the first attention reads the raw embedding), no biases; position p is the one-hot
    e_p in dims 0..15, token t is e_(16+t) in dims 16..39. Head 0: q_i = c e_(i-1), k_j = e_j, so the
    score is c where j = i - 1. Head 1: q_i = c (token_i - position_i), k_j = token_j + position_j, so the
    score is c for an earlier copy of the token and 0 for the token itself.
    """
    v = CHARS.vocab_size
    assert v <= 24
    cfg = TransformerConfig(family="decoder", vocab_size=v, d_model=80, n_heads=2, n_layers=1, d_ff=8,
                            max_len=MAX_LEN, norm_placement="post", bias=False)
    model = DecoderLM(cfg).eval()
    c = 60.0
    eye = torch.eye(16)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        emb = model.embed
        emb.token.weight[:, 16:16 + v] = torch.eye(v)
        emb.positions.embedding.weight[:, :16] = eye
        attn = model.stack.blocks[0].attn
        hd = 40  # head_dim
        shift = torch.diag(torch.ones(15), 1)  # q = shift @ e_i = e_(i-1)
        attn.q_proj.weight[0:16, 0:16] = c * shift
        attn.k_proj.weight[0:16, 0:16] = eye
        attn.q_proj.weight[hd:hd + v, 16:16 + v] = c * torch.eye(v)
        attn.k_proj.weight[hd:hd + v, 16:16 + v] = torch.eye(v)
        attn.q_proj.weight[hd + 24:hd + 40, 0:16] = -c * eye
        attn.k_proj.weight[hd + 24:hd + 40, 0:16] = eye
    return model


def test_roles_over_the_corpus_find_the_hand_set_previous_token_and_duplicate_token_heads(tmp_path) -> None:
    model = _hand_set_model()
    short = [t for t in SENTENCES if len(t) <= MAX_LEN]
    scan = hc.scan_corpus(model, CHARS, SENTENCES, cache_dir=tmp_path, progress=False)
    assert scan.sentences == short and scan.skipped == len(SENTENCES) - len(short)  # longer than max_len: left out
    roles = scan.roles
    prev, dup = roles.scores["previous-token"][0], roles.scores["duplicate-token"][0]
    assert float(prev[0]) > 0.99 and float(dup[1]) > 0.99
    assert float(prev[1]) < hc.ROLE_THRESHOLDS["previous-token"]
    assert float(dup[0]) < hc.ROLE_THRESHOLDS["duplicate-token"]
    assert roles.roles(0, 0)[0] == "previous-token" and "duplicate-token" in roles.roles(0, 1)
    assert "previous-token" not in roles.roles(0, 1)
    # cases counted by hand: every character after the first is a previous-token case
    assert roles.cases["previous-token"] == sum(len(t) - 1 for t in short)
    assert roles.cases["duplicate-token"] == sum(sum(ch in t[:i] for i, ch in enumerate(t)) for t in short)
    assert roles.cases["pronoun-noun"] == 0  # characters are not words


def test_role_sums_on_constructed_weights() -> None:
    labels = ["[CLS]", "the", "dog", "saw", "it", "[SEP]"]
    ids = [101, 1, 2, 3, 4, 102]
    real = torch.tensor([False, True, True, True, True, False])
    w = torch.zeros(1, 1, 6, 6)
    w[0, 0, :, 0] = 1.0  # everything on [CLS] ...
    w[0, 0, 4] = torch.tensor([0.1, 0.0, 0.7, 0.2, 0.0, 0.0])  # ... but "it" mostly on "dog"
    sums = hc._role_sums(w, ids, real, labels)
    assert sums["pronoun-noun"][1] == 1 and float(sums["pronoun-noun"][0]) == pytest.approx(0.7)
    assert sums["first-token"][1] == 4 and float(sums["first-token"][0]) == pytest.approx(3.1)
    assert sums["previous-token"][1] == 3 and float(sums["previous-token"][0]) == pytest.approx(0.2)
    assert sums["duplicate-token"][1] == 0


@pytest.mark.parametrize(("labels", "nouns", "pronouns"), [
    (["[CLS]", "the", "dog", "ate", "it", "[SEP]"], [2], [4]),
    (["The", " do", "g", " ate", " it", " and", " the", " cat", " ran"], [7], [4]),
    (["his", "house", "##s", "are", "her", "home"], [5], [0, 4]),
])
def test_noun_and_pronoun_heuristic(labels, nouns, pronouns) -> None:
    noun, pronoun = hc.nouns_and_pronouns(labels)
    assert [i for i, x in enumerate(noun) if x] == nouns
    assert [i for i, x in enumerate(pronoun) if x] == pronouns


# ----- cache and cancellation -----

def test_cache_hit_miss_and_instant_heads(tmp_path) -> None:
    model = _tiny("decoder")
    first = hc.scan_corpus(model, CHARS, SENTENCES, cache_dir=tmp_path, progress=False)
    assert not first.from_cache and first.path is not None and first.path.is_file()
    again = hc.scan_corpus(model, CHARS, SENTENCES, cache_dir=tmp_path, progress=False)
    assert again.from_cache and again.path == first.path
    assert torch.equal(again.specificity, first.specificity) and torch.equal(again.query, first.query)
    assert again.head_contexts(1, 2).to_dict() == first.head_contexts(1, 2).to_dict()
    assert hc.cached_scan(model, CHARS, SENTENCES, cache_dir=tmp_path) is not None
    other = hc.scan_corpus(model, CHARS, SENTENCES[:3], cache_dir=tmp_path, progress=False)  # another corpus
    assert not other.from_cache and other.path != first.path
    with torch.no_grad():
        model.stack.blocks[0].attn.q_proj.weight[0, 0] += 1.0  # other weights
    assert hc.cached_scan(model, CHARS, SENTENCES, cache_dir=tmp_path) is None
    changed = hc.scan_corpus(model, CHARS, SENTENCES, cache_dir=tmp_path, progress=False)
    assert not changed.from_cache and changed.path not in (first.path, other.path)


@pytest.mark.parametrize("how", ["event", "ctrl-c"])
def test_a_cancelled_pass_leaves_no_cache_file(tmp_path, how: str) -> None:
    model = _tiny("encoder")
    stop = threading.Event()
    calls = []

    def cancel() -> bool:
        calls.append(1)
        if len(calls) == 2:  # between the first and the second batch
            if how == "ctrl-c":
                raise KeyboardInterrupt
            stop.set()
        return stop.is_set()

    with pytest.raises(KeyboardInterrupt if how == "ctrl-c" else hc.ScanCancelled):
        hc.scan_corpus(model, CHARS, SENTENCES, batch_size=2, cache_dir=tmp_path, cancel=cancel, progress=False)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []
    assert hc.cached_scan(model, CHARS, SENTENCES, cache_dir=tmp_path) is None
    done = threading.Event()
    assert not hc.scan_corpus(model, CHARS, SENTENCES, cache_dir=tmp_path, cancel=done, progress=False).from_cache


def test_bad_arguments_are_clear_errors(tmp_path) -> None:
    model = _tiny("decoder")
    scan = hc.scan_corpus(model, CHARS, SENTENCES, cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="L2H0 does not exist"):
        scan.head_contexts(2, 0)
    with pytest.raises(ValueError, match="k must be"):
        scan.head_contexts(0, 0, k=0)
    odd = hc.scan_corpus(model, CHARS, [*SENTENCES, "caf\u00e9 \u20ac"], cache_dir=tmp_path, progress=False)
    assert odd.sentences == SENTENCES and odd.skipped == 1  # a character the tokenizer never saw: left out
    with pytest.raises(ValueError, match="no sentence"):
        hc.scan_corpus(model, CHARS, ["", "   "], cache_dir=tmp_path, progress=False)
