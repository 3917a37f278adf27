"""The "Why" view: what one head does and why the focus token looks where it does, for one sentence.

Every number comes from ``attnlab.interpret`` (itself built on the hook points), run under the
model's lock, on the model's device (the results come back to the CPU for the page): the tools attach
hooks, and another request on the same model must not see them.
What does not depend on the chosen head or focus (the clean run, the head-effects map, the logit lens,
the saliency) is computed once per sentence and kept for the last ``SENTENCES_KEPT`` sentences (keyed
by model and text, checked against the model object and its weights' version counters, dropped when
the model is unloaded), so a click on another head or token costs three forward passes: the ablated
run, the focus pair's recorded weights and its score decomposition. ``head_effects`` starts each
ablated copy at its layer (``attnlab.interpret``), float32.
Bounded like every route, and tighter for large models, because ``head_effects`` runs one copy of
the sentence per head: a model of ``LARGE_PARAMS`` parameters or more takes at most
``MAX_WHY_TOKENS_LARGE`` tokens (SmolLM2: 270 heads x 24 tokens), a small one the usual limit. Decoders get the next-token prediction with and without the
chosen head, the head-effects map, the logit lens, the score decomposition of the focus pair and the
saliency of every token. An encoder without a vocabulary head (minilm) gets the same views measured
on its sentence embedding (cosine similarity to the clean one), with no logit lens; post-norm models
(BERT, MiniLM) get their score decomposition with each norm's statistics read off the forward pass.
An encoder-decoder is a 422 for now.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, field_validator
from torch import Tensor, nn

from attnlab import interpret
from attnlab.inspect import hook_name, main_stack, run_with_cache
from attnlab.interpret import metrics
from attnlab.tokenizers.base import Tokenizer
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.heavy import raise_if_abandoned
from attnlab.web.models import get_model, is_large, max_tokens, model_input, model_lock, on_unload, tokenize
from attnlab.web.view import Mount

MAX_WHY_TOKENS_LARGE = 24
TOP_K = 5
SENTENCES_KEPT = 8


class WhyRequest(s.TextRequest):
    layer: int = s.Layer
    head: int = s.Head
    focus: int | None = Field(default=None, ge=0, le=s.MAX_TOKENS - 1,
                              description="the query token of the score decomposition (default: the last)")

    @field_validator("focus", mode="before")
    @classmethod
    def _integral_focus(cls, value: object) -> object:
        """As the base class does for ``int`` fields: JSON's ``12.0`` is the integer 12 (and ``true`` is not)."""
        return int(value) if isinstance(value, float) and value.is_integer() else value


class Candidate(BaseModel):
    token: str
    id: int
    prob: float


class WhyPrediction(BaseModel):
    metric: str = Field(description="what head_effects and saliency measure")
    clean: float = Field(description="the metric on the sentence")
    ablated: float = Field(description="the metric with the chosen head removed (zero ablation)")
    clean_top: list[Candidate] = Field(default=[], description="next-token candidates (decoders)")
    ablated_top: list[Candidate] = Field(default=[], description="the same with the head removed")


class WhyLens(BaseModel):
    labels: list[str]
    top: list[list[Candidate]] = Field(description="(read-out, k): the last position's top tokens after each layer")


class WhyScore(BaseModel):
    available: bool
    reason: str = ""
    query: int
    key: int
    score: float | None = None
    query_labels: list[str] = []
    key_labels: list[str] = []
    terms: list[list[float]] = Field(default=[], description="(query component, key component); sums to score")
    top_pairs: list[tuple[str, str, float]] = []


class WhyResponse(BaseModel):
    model: str
    family: str
    tokens: list[str]
    layer: int
    head: int
    prediction: WhyPrediction
    head_effects: list[list[float]] = Field(description="(layer, head): metric without the head minus with it")
    logit_lens: WhyLens | None
    score: WhyScore
    saliency: list[float] = Field(description="integrated gradients per token (50 steps); sums to f(x) - f(baseline)")


def routes(router: APIRouter, mount: Mount) -> None:
    """``POST /api/why``: ``why(WhyRequest)`` in a worker, as a long route (one slot: seconds on a large model)."""

    @router.post("/api/why", responses=mount.errors(404, 503), name="why")
    async def why_route(request: Request, req: WhyRequest) -> WhyResponse:
        return await mount.heavy(request, why, req, long=True)


def _top(logits: Tensor, tokenizer: Tokenizer) -> list[Candidate]:
    probs = torch.softmax(logits.cpu().float(), dim=-1)
    p, i = probs.topk(TOP_K)
    labels = tokenizer.tokens(i.tolist())
    return [Candidate(token=str(t), id=int(j), prob=float(q)) for t, j, q in zip(labels, i, p, strict=True)]


@dataclass
class _Sentence:
    """What the answer for one sentence holds whatever head and focus are chosen."""

    model: nn.Module  # the model object it was computed with (a reload is another object)
    weights: int  # the sum of its parameters' version counters then (in-place training moves it)
    clean_out: Tensor
    metric: metrics.Metric
    what: str
    target: int | None
    effects: list[list[float]]
    lens: WhyLens | None
    saliency: list[float]


_SENTENCES: OrderedDict[tuple[str, str], _Sentence] = OrderedDict()
_SENTENCES_GUARD = threading.Lock()


def _weights_version(model: nn.Module) -> int:
    return sum(p._version for p in model.parameters())


def _forget(name: str) -> None:
    with _SENTENCES_GUARD:
        for key in [k for k in _SENTENCES if k[0] == name]:
            del _SENTENCES[key]


on_unload(_forget)


def _sentence(loaded, x: Tensor, text: str) -> _Sentence:
    """The per-sentence part of the answer, from the cache or computed (under the model's lock)."""
    model, key = loaded.model, (loaded.name, text)
    with _SENTENCES_GUARD:
        kept = _SENTENCES.get(key)
        if kept is not None and kept.model is model and kept.weights == _weights_version(model):
            _SENTENCES.move_to_end(key)
            return kept
    lm = loaded.config.family == "decoder"
    baseline = 0 if loaded.config.positions in ("rotary", "none") else None
    clean_out = interpret.ablate(model, x, [])
    target = None
    if lm:
        target = int(clean_out[0, -1].argmax())
        metric = metrics.token_logprob(target)
        what = f"log-probability of the predicted next token {loaded.tokenizer.tokens([target])[0]!r}"
    else:
        metric = metrics.embedding_similarity(clean_out)
        what = "cosine similarity of the sentence embedding to the clean one"
    effects = interpret.head_effects(model, x, metric)
    lens_out = None
    if lm:
        lens = interpret.logit_lens(model, x, k=TOP_K)
        top = [[Candidate(token=str(loaded.tokenizer.tokens([int(i)])[0]), id=int(i), prob=float(p))
                for i, p in zip(lens.top_ids[r, 0, -1].cpu().tolist(), lens.top_probs[r, 0, -1].cpu().tolist(), strict=True)]
               for r in range(len(lens.labels))]
        lens_out = WhyLens(labels=lens.labels, top=top)
    sal = interpret.saliency(model, x, target if lm else metric, baseline=baseline)
    kept = _Sentence(model, _weights_version(model), clean_out, metric, what, target,
                     effects.effects.cpu().tolist(), lens_out, sal.scores.cpu().tolist())
    with _SENTENCES_GUARD:
        _SENTENCES[key] = kept
        while len(_SENTENCES) > SENTENCES_KEPT:
            _SENTENCES.popitem(last=False)
    return kept


def why(req: WhyRequest) -> WhyResponse:
    loaded = get_model(req.model)
    family = loaded.config.family
    if family == "encoder-decoder":
        raise PayloadError(f"the Why view reads decoders and encoders; {loaded.name!r} is an encoder-decoder")
    large = is_large(loaded)
    ids, tokens = tokenize(loaded, req.text, limit=min(MAX_WHY_TOKENS_LARGE, max_tokens(loaded)) if large else None)
    n_layers, n_heads = loaded.config.n_layers, loaded.config.n_heads
    if req.layer >= n_layers or req.head >= n_heads:
        raise PayloadError(f"model {loaded.name!r} has layers 0-{n_layers - 1} and heads 0-{n_heads - 1}")
    focus = len(ids) - 1 if req.focus is None else req.focus
    if focus >= len(ids):
        raise PayloadError(f"focus token {focus} does not exist; the sentence has {len(ids)} tokens")
    model, x = loaded.model, model_input(loaded, ids)
    with model_lock(loaded.name), torch.no_grad():
        sentence = _sentence(loaded, x, req.text)
        raise_if_abandoned()  # the longest step is done: stop here if nobody waits for the answer
        ablated_out = interpret.ablate(model, x, [(req.layer, req.head)])
        key = _focus_key(model, x, req.layer, req.head, focus)
        try:
            dec = interpret.score_decomposition(model, x, req.layer, req.head, focus, key)
            score = WhyScore(available=True, query=focus, key=key, score=dec.score, query_labels=dec.query_labels,
                             key_labels=dec.key_labels, terms=dec.terms.cpu().tolist(), top_pairs=dec.top_pairs(8))
        except ValueError as exc:
            score = WhyScore(available=False, reason=str(exc), query=focus, key=key)
    clean_out, metric = sentence.clean_out, sentence.metric
    prediction = WhyPrediction(metric=sentence.what, clean=float(metric(clean_out)[0]),
                               ablated=float(metric(ablated_out)[0]))
    if sentence.target is not None:
        prediction.clean_top = _top(clean_out[0, -1], loaded.tokenizer)
        prediction.ablated_top = _top(ablated_out[0, -1], loaded.tokenizer)
    return WhyResponse(model=loaded.name, family=family, tokens=tokens, layer=req.layer, head=req.head,
                       prediction=prediction, head_effects=sentence.effects, logit_lens=sentence.lens,
                       score=score, saliency=sentence.saliency)


def _focus_key(model: nn.Module, x: Tensor, layer: int, head: int, focus: int) -> int:
    """The key the focus token attends to most in the chosen head (from the recorded weights)."""
    name = hook_name(main_stack(model), layer, "attn.hook_weights")
    _, cache = run_with_cache(model, x, names=name, device="cpu")
    return int(cache[name][0, head, focus].argmax())
