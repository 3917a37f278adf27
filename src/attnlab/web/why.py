"""The "Why" view: what one head does and why the focus token looks where it does, for one sentence.

Every number comes from ``attnlab.interpret`` (itself built on the hook points), run under the
model's lock, on the model's device (the results come back to the CPU for the page): the tools attach
hooks, and another request on the same model must not see them.

The learner picks a head and a focus token (the query). The answer is about that pair: the focus
token's attention in the head, the score decomposition of that attention, and the prediction *after the
focus token* (a decoder reads the sentence up to the focus; the tokens after it cannot change that
prediction), with and without the head.

Two stages (``WhyRequest.stage``). ``first`` answers at once: one clean run records every block's input
and every head's focus row (and the logit lens's read-outs), attribution patching estimates every
head's removal (``interpret.estimate_head_effects``: one forward and one backward pass), and the chosen
head's removal is measured from its layer on (``interpret.ablate_from``). ``exact`` adds what takes
seconds on a large model: every head removed in turn (``head_effects``) and integrated gradients; the
page asks for it after drawing the first stage. What does not depend on the chosen head is kept per
(sentence, focus) for the last ``SENTENCES_KEPT`` of them (keyed by model, text and focus, checked
against the model object and its weights' version counters, dropped when the model is unloaded), so a
click on another head costs the head's removal from its layer on and the score decomposition, and
is exact at once when the sentence's exact stage is done. float32 throughout: bfloat16 autocast ran
``head_effects`` on SmolLM2 in 0.48x the time but moved effects by up to 0.01 nats on the benchmark
sentence (README), beyond the ledger's 1e-4.

Families: a decoder as above. An encoder-decoder reads the sentence as its source and, as its target,
its own greedy translation when its tokenizer has ``<s>``/``</s>`` (the translator), else the sentence
itself; the head is a cross-attention head of the decoder, the focus a target token, the key a source
token, and the saliency scores the source tokens. An encoder without a vocabulary head (minilm) gets
the same views measured on its sentence embedding (cosine similarity to the clean one), with no logit
lens, and says so in one sentence (``unavailable``). Post-norm models get their score decomposition with
each norm's statistics read off the forward pass.

Each answer carries ``sentences`` (plain words computed from its numbers, ``why_words``) and a
``ledger``: every number's check, computed on this input (attribution patching's estimate of the chosen
head against its measured removal; once exact, the estimate's agreement with the measured map and the
map's cell against the separate removal; the decomposition against the recorded score, the integrated
gradients' completeness, with the path's range when it fails; the logit lens's last row against the
model's output).

Bounded like every route, and tighter for large models, because ``head_effects`` runs one copy of
the sentence per head: a model of ``LARGE_PARAMS`` parameters or more takes at most
``MAX_WHY_TOKENS_LARGE`` tokens (SmolLM2: 270 heads x 24 tokens), a small one the usual limit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import torch
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, field_validator
from torch import Tensor, nn

from attnlab import interpret
from attnlab.catalog import LoadedModel
from attnlab.inspect import hook_name, run_with_cache
from attnlab.interpret import metrics
from attnlab.tokenizers.base import Tokenizer
from attnlab.translate import bos_eos_ids, source_and_target
from attnlab.web import schemas as s
from attnlab.web import why_words as words
from attnlab.web.errors import PayloadError
from attnlab.web.heavy import raise_if_abandoned
from attnlab.web.models import get_model, is_large, max_tokens, model_input, model_lock, on_unload, tokenize
from attnlab.web.view import Mount

MAX_WHY_TOKENS_LARGE = 24
TOP_K = 5
SENTENCES_KEPT = 8
#: The ledger's tolerances: attribution patching's estimate of a head's removal against the measured
#: one (the metric's units: nats of log-probability, or cosine similarity), and the integrated
#: gradients' relative completeness gap.
ESTIMATE_TOLERANCE = 0.05
IG_TOLERANCE = 0.05
#: Integrated gradients' steps: the first count whose completeness holds, else the last.
IG_STEPS = (50, 200)


class WhyRequest(s.TextRequest):
    layer: int = s.Layer
    head: int = s.Head
    stage: Literal["first", "exact"] = Field(
        default="exact", description="first: the answer at once, the head-effects map estimated by attribution patching "
        "and no saliency unless the exact parts are already kept; exact: everything exact (seconds on a large model)")
    focus: int | None = Field(default=None, ge=0, le=s.MAX_TOKENS - 1,
                              description="the query token (an encoder-decoder: a target token; default: the last)")

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
    target: str | None = Field(default=None, description="the predicted token after the focus (models with a vocabulary head)")
    clean_prob: float | None = Field(default=None, description="its probability")
    ablated_prob: float | None = Field(default=None, description="its probability with the chosen head removed")
    clean_top: list[Candidate] = Field(default=[], description="next-token candidates after the focus token")
    ablated_top: list[Candidate] = Field(default=[], description="the same with the head removed")


class WhyLens(BaseModel):
    labels: list[str]
    top: list[list[Candidate]] = Field(description="(read-out, k): the focus position's top tokens after each layer")


class WhyScore(BaseModel):
    available: bool
    reason: str = ""
    query: int
    key: int
    weight: float = Field(description="the focus token's recorded attention weight for the key in the head")
    score: float | None = None
    query_labels: list[str] = []
    key_labels: list[str] = []
    terms: list[list[float]] = Field(default=[], description="(query component, key component); sums to score")
    top_pairs: list[tuple[str, str, float]] = []
    top_pairs_plain: list[tuple[str, str]] = Field(default=[], description="top_pairs' labels in plain words")


class Check(BaseModel):
    """One line of the fidelity ledger: what was checked, on this input, and by how much it missed."""

    text: str
    error: float
    tolerance: float
    holds: bool


class WhyResponse(BaseModel):
    model: str
    text: str = Field(description="the sentence asked about, as sent")
    family: str
    exact: bool = Field(description="head_effects are measured ablations and saliency is computed; false: head_effects "
                                    "are attribution patching's estimate and saliency is empty (ask again with stage=exact)")
    tokens: list[str] = Field(description="the sentence (an encoder-decoder: its source)")
    target_tokens: list[str] = Field(default=[], description="an encoder-decoder's target (what the decoder reads)")
    cross: bool = Field(default=False, description="the head is a cross-attention head")
    layer: int
    head: int
    prediction: WhyPrediction
    head_effects: list[list[float]] = Field(description="(layer, head): metric without the head minus with it "
                                            "(exact: measured; else attribution patching's estimate)")
    head_effects_estimate: list[list[float]] = Field(description="(layer, head): attribution patching's estimate of "
                                                     "head_effects (one forward and one backward pass)")
    logit_lens: WhyLens | None
    score: WhyScore
    saliency: list[float] = Field(description="integrated gradients per token (50 steps, 200 where 50 miss completeness); "
                                              "sums to f(x) - f(baseline); "
                                              "a decoder's tokens after the focus are 0 (they cannot act on it); "
                                              "empty until exact")
    sentences: dict[str, str] = Field(description="plain-words reading of each result, computed from these numbers")
    unavailable: dict[str, str] = Field(default={}, description="result -> why this model cannot give it")
    ledger: list[Check] = Field(description="every number's check on this input")


def routes(router: APIRouter, mount: Mount) -> None:
    """``POST /api/why``: ``why(WhyRequest)`` in a worker; its exact stage as a long route (one slot:
    seconds on a large model), its first stage as a short one (under a second), so a click is not queued
    behind another sentence's exact stage."""

    @router.post("/api/why", responses=mount.errors(404, 503), name="why")
    async def why_route(request: Request, req: WhyRequest) -> WhyResponse:
        return await mount.heavy(request, why, req, long=req.stage == "exact")


def _top(logits: Tensor, tokenizer: Tokenizer) -> list[Candidate]:
    probs = torch.softmax(logits.cpu().float(), dim=-1)
    p, i = probs.topk(TOP_K)
    labels = tokenizer.tokens(i.tolist())
    return [Candidate(token=str(t), id=int(j), prob=float(q)) for t, j, q in zip(labels, i, p, strict=True)]


@dataclass
class _Input:
    """What the model reads for one request: ``x`` (a decoder: the sentence up to the focus)."""

    x: Tensor | tuple[Tensor, Tensor]
    tokens: list[str]
    target_tokens: list[str]
    focus: int
    cross: bool
    key: tuple  # the sentence cache's key


def _input(loaded, req: WhyRequest) -> _Input:
    family = loaded.config.family
    limit = min(MAX_WHY_TOKENS_LARGE, max_tokens(loaded)) if is_large(loaded) else None
    ids, tokens = tokenize(loaded, req.text, limit=limit)
    if family == "encoder-decoder":
        with model_lock(loaded.name):
            src, tgt = source_and_target(loaded.model, ids, bos_eos_ids(loaded.tokenizer), max_len=max_tokens(loaded))
        tokens, targets = loaded.tokenizer.tokens(src), loaded.tokenizer.tokens(tgt)
        focus = _check_focus(req.focus, len(tgt), "target tokens")
        x = (model_input(loaded, src), model_input(loaded, tgt[: focus + 1]))
        return _Input(x, tokens, targets, focus, True, (loaded.name, req.text, focus))
    focus = _check_focus(req.focus, len(ids), "tokens")
    kept = ids[: focus + 1] if family == "decoder" else ids
    return _Input(model_input(loaded, kept), tokens, [], focus, False,
                  (loaded.name, req.text, focus if family == "decoder" else None))


def _check_focus(focus: int | None, n: int, what: str) -> int:
    if focus is None:
        return n - 1
    if focus >= n:
        raise PayloadError(f"focus token {focus} does not exist; the sentence has {n} {what}")
    return focus


@dataclass
class _Sentence:
    """What the answer for one (sentence, focus) holds whatever head is chosen. The first stage fills
    everything up to ``lens_error``; the exact stage adds ``effects`` and the saliency."""

    model: nn.Module  # the model object it was computed with (a reload is another object)
    weights: int  # the sum of its parameters' version counters then (in-place training moves it)
    clean_out: Tensor
    resid_pre: list[Tensor]  # the clean run's input of every block of the stack the heads belong to
    focus_rows: Tensor  # (layers, heads, keys): the focus token's recorded attention weights
    metric: metrics.Metric
    what: str
    target: int | None
    estimate: interpret.HeadEffects  # attribution patching's estimate of every head's removal
    lens: WhyLens | None
    lens_error: float  # the lens's last read-out against the model's own output (max |p| difference)
    effects: interpret.HeadEffects | None = None
    saliency: list[float] = field(default_factory=list)
    saliency_total: tuple[float, float] = (0.0, 0.0)  # f(x) - f(baseline), and |sum of scores - it| / |it|
    saliency_path: tuple[float, float] = (0.0, 0.0)  # the target's lowest and highest value along the path
    saliency_steps: int = 0
    saliency_kept: tuple[int, ...] = ()  # positions the baseline keeps (their scores are 0)


_SENTENCES: OrderedDict[tuple, _Sentence] = OrderedDict()
_SENTENCES_GUARD = threading.Lock()


def _weights_version(model: nn.Module) -> int:
    return sum(p._version for p in model.parameters())


def _forget(name: str) -> None:
    with _SENTENCES_GUARD:
        for key in [k for k in _SENTENCES if k[0] == name]:
            del _SENTENCES[key]


on_unload(_forget)


def _kept(model: nn.Module, key: tuple) -> _Sentence | None:
    with _SENTENCES_GUARD:
        kept = _SENTENCES.get(key)
        if kept is not None and kept.model is model and kept.weights == _weights_version(model):
            _SENTENCES.move_to_end(key)
            return kept
    return None


def _first(loaded, inp: _Input) -> _Sentence:
    """The per-(sentence, focus) part of the first stage, from the cache or computed (under the model's
    lock): one clean run recording every block's input and the focus row of every head, attribution
    patching (one forward, one backward) and the logit lens at the focus."""
    model, key, x = loaded.model, inp.key, inp.x
    kept = _kept(model, key)
    if kept is not None:
        return kept
    sv = model.stack_view()
    lm = model.has_vocab_head and loaded.config.family != "encoder"
    point = "cross_attn.hook_weights" if inp.cross else "attn.hook_weights"
    pre = [hook_name(sv.name, layer, "hook_resid_pre") for layer in range(sv.n_layers)]
    rows = [hook_name(sv.name, layer, point) for layer in range(sv.n_layers)]
    lens_names = interpret.accumulated_names(model)[1] if lm else []
    args = x if isinstance(x, tuple) else (x,)
    clean_out, cache = run_with_cache(model, *args, names=list(dict.fromkeys(pre + rows + lens_names)))
    focus_rows = torch.stack([cache[name][0, :, inp.focus].cpu() for name in rows])
    target, lens_out, lens_error = None, None, 0.0
    if lm:
        target = int(clean_out[0, -1].argmax())
        metric = metrics.token_logprob(target)
        what = f"log-probability of {words.quote(loaded.tokenizer.tokens([target])[0])} after the focus token"
    else:
        metric = metrics.embedding_similarity(clean_out)
        what = "cosine similarity of the sentence embedding to the clean one"
    estimate = interpret.estimate_head_effects(model, x, metric, cross=inp.cross)
    if lm:
        lens = interpret.logit_lens(model, x, k=TOP_K, position=-1, recorded={n: cache[n] for n in lens_names})
        top = [[Candidate(token=str(loaded.tokenizer.tokens([int(i)])[0]), id=int(i), prob=float(p))
                for i, p in zip(lens.top_ids[r, 0, -1].cpu().tolist(), lens.top_probs[r, 0, -1].cpu().tolist(), strict=True)]
               for r in range(len(lens.labels))]
        lens_out = WhyLens(labels=lens.labels, top=top)
        probs = torch.softmax(clean_out[0, -1].cpu().float(), dim=-1)
        lens_error = max(abs(float(probs[c.id]) - c.prob) for c in top[-1])
    kept = _Sentence(model, _weights_version(model), clean_out, [cache[name] for name in pre], focus_rows, metric,
                     what, target, estimate, lens_out, lens_error)
    with _SENTENCES_GUARD:
        _SENTENCES[key] = kept
        while len(_SENTENCES) > SENTENCES_KEPT:
            _SENTENCES.popitem(last=False)
    return kept


def _exact(loaded, inp: _Input, sentence: _Sentence) -> None:
    """Add the exact stage to ``sentence`` (under the model's lock): every head removed in turn, measured,
    and integrated gradients (50 steps, 200 when 50 miss completeness); stops between steps when nobody
    waits for the answer."""
    model, x = loaded.model, inp.x
    if sentence.effects is None:
        sentence.effects = interpret.head_effects(model, x, sentence.metric, cross=inp.cross)
    if not sentence.saliency:
        raise_if_abandoned()
        token_baseline = loaded.config.positions in ("rotary", "none")  # zero embeddings: see interpret.saliency
        # a decoder's first token is its attention sink: the baseline keeps it (see interpret.saliency's keep)
        keep = (0,) if token_baseline and loaded.config.family == "decoder" else ()
        target = sentence.target if sentence.target is not None else sentence.metric
        for steps in IG_STEPS:  # more steps only when completeness fails
            sal = interpret.saliency(model, x, target, baseline=0 if token_baseline else None, keep=keep, steps=steps)
            total = sal.value - (sal.baseline_value or 0.0)
            gap = sal.relative_gap or 0.0
            if gap <= IG_TOLERANCE:
                break
            raise_if_abandoned()
        path = sal.path_values if sal.path_values is not None else torch.zeros(1)
        sentence.saliency_total = (total, gap)
        sentence.saliency_path = (float(path.min()), float(path.max()))
        sentence.saliency_steps, sentence.saliency_kept = steps, keep
        sentence.saliency = sal.scores.cpu().tolist()


def why(req: WhyRequest) -> WhyResponse:
    """``POST /api/why``: ``why_of`` on the request's model."""
    return why_of(get_model(req.model), req)


def why_of(loaded: LoadedModel, req: WhyRequest) -> WhyResponse:
    """The Why view's answer for ``req`` (``stage``: see ``WhyRequest``; its ``model`` name is not looked up) on
    ``loaded``; ``attnlab.show.why`` draws the same payload. ``PayloadError`` (422) for a layer, head or focus
    the model does not have, or a sentence over the limit."""
    family = loaded.config.family
    inp = _input(loaded, req)
    sv = loaded.model.stack_view()  # the output stack: the decoder of an encoder-decoder
    n_layers, n_heads = sv.n_layers, sv.n_heads
    if req.layer >= n_layers or req.head >= n_heads:
        raise PayloadError(f"model {loaded.name!r} has layers 0-{n_layers - 1} and heads 0-{n_heads - 1}")
    model, x, focus = loaded.model, inp.x, inp.focus
    with model_lock(loaded.name), torch.no_grad():
        sentence = _first(loaded, inp)
        if req.stage == "exact":
            raise_if_abandoned()
            _exact(loaded, inp, sentence)
            raise_if_abandoned()  # the longest steps are done: stop here if nobody waits for the answer
        ablated_out = interpret.ablate_from(model, x, req.layer, req.head, sentence.resid_pre, cross=inp.cross)
        row = sentence.focus_rows[req.layer, req.head]
        key = int(row.argmax())
        weight = float(row[key])
        try:
            dec = interpret.score_decomposition(model, x, req.layer, req.head, focus, key, cross=inp.cross)
            pairs = dec.top_pairs(8)
            score = WhyScore(available=True, query=focus, key=key, weight=weight, score=dec.score,
                             query_labels=dec.query_labels, key_labels=dec.key_labels, terms=dec.terms.cpu().tolist(),
                             top_pairs=pairs, top_pairs_plain=[(words.plain_label(q), words.plain_label(k)) for q, k, _ in pairs])
        except ValueError as exc:
            score = WhyScore(available=False, reason=str(exc), query=focus, key=key, weight=weight)
    clean_out, metric = sentence.clean_out, sentence.metric
    prediction = WhyPrediction(metric=sentence.what, clean=float(metric(clean_out)[0]),
                               ablated=float(metric(ablated_out)[0]))
    if sentence.target is not None:
        prediction.clean_top = _top(clean_out[0, -1], loaded.tokenizer)
        prediction.ablated_top = _top(ablated_out[0, -1], loaded.tokenizer)
        prediction.target = loaded.tokenizer.tokens([sentence.target])[0]
        prediction.clean_prob = float(torch.softmax(clean_out[0, -1].cpu().float(), -1)[sentence.target])
        prediction.ablated_prob = float(torch.softmax(ablated_out[0, -1].cpu().float(), -1)[sentence.target])
    exact = sentence.effects is not None and bool(sentence.saliency)
    saliency = sentence.saliency + [0.0] * (len(inp.tokens) - len(sentence.saliency)) if exact else []
    estimate = sentence.estimate.effects.cpu().tolist()
    body = WhyResponse(model=loaded.name, text=req.text, family=family, exact=exact, tokens=inp.tokens,
                       target_tokens=inp.target_tokens, cross=inp.cross, layer=req.layer, head=req.head,
                       prediction=prediction, head_effects=sentence.effects.effects.cpu().tolist() if exact else estimate,
                       head_effects_estimate=estimate, logit_lens=sentence.lens, score=score, saliency=saliency,
                       sentences={}, ledger=[])
    if sentence.target is None:
        body.unavailable["prediction"] = body.unavailable["logit_lens"] = words.no_vocabulary_head(loaded.name)
    body.sentences = _sentences(body, sentence)
    body.ledger = _ledger(body, sentence)
    return body


def _sentences(body: WhyResponse, sentence: _Sentence) -> dict[str, str]:
    """Plain words for each result, every number taken from ``body`` (``why_words``)."""
    p, sc, queries = body.prediction, body.score, body.target_tokens or body.tokens
    out = {"attention": words.attention_sentence(body.layer, body.head, queries[sc.query], body.tokens[sc.key],
                                                 sc.weight, body.cross)}
    if p.target is not None and p.clean_prob is not None and p.ablated_prob is not None:
        out["prediction"] = words.prediction_sentence(body.layer, body.head, queries[sc.query], p.target,
                                                      p.clean_prob, p.ablated_prob, body.cross)
        effect_what = f"log-probability of {words.quote(p.target)}"
    else:
        out["prediction"] = words.embedding_sentence(body.layer, body.head, p.ablated)
        effect_what = "embedding's cosine similarity"
    out["effects"] = words.effects_sentence(body.head_effects, effect_what, body.cross, estimated=not body.exact)
    if sc.available and sc.score is not None:
        out["score"] = words.score_sentence(queries[sc.query], body.tokens[sc.key], sc.score,
                                            sc.top_pairs[0] if sc.top_pairs else None)
    if body.saliency:
        saliency_what = (f"the logit of {words.quote(p.target)}" if p.target is not None
                         else "the embedding's cosine similarity to the original")
        out["saliency"] = words.saliency_sentence(body.tokens, body.saliency, saliency_what)
    return out


def _ledger(body: WhyResponse, sentence: _Sentence) -> list[Check]:
    """Each result's check on this input; the text prints the measured error."""
    def check(text: str, error: float, tolerance: float) -> Check:
        return Check(text=text.format(e=f"{error:.1e}"), error=error, tolerance=tolerance, holds=error <= tolerance)

    p, sc = body.prediction, body.score
    kind = "cross-attention head" if body.cross else "head"
    measured = p.ablated - p.clean
    guess = body.head_effects_estimate[body.layer][body.head]
    checks = [check(f"attribution patching: its estimate for layer {body.layer} {kind} {body.head}, {guess:.4g}, is off "
                    f"its measured removal, {measured:.4g}, by {{e}} (an estimate; up to 5e-02 holds)",
                    abs(guess - measured), ESTIMATE_TOLERANCE)]
    if body.exact and sentence.effects is not None:
        r, largest, (layer, head) = interpret.effects_agreement(sentence.estimate, sentence.effects)
        n = len(body.head_effects) * len(body.head_effects[0])
        checks.append(check(f"attribution patching vs exact removal: r = {r:.3f} over {n} {kind}s; the largest "
                            f"disagreement, {{e}}, is at layer {layer} {kind} {head} (up to 5e-02 holds)",
                            largest, ESTIMATE_TOLERANCE))
        checks.append(check(f"head effects: the map's cell for layer {body.layer} {kind} {body.head} equals its separate "
                            "ablation within {e}", abs(body.head_effects[body.layer][body.head] - measured), 1e-4))
    if sc.available and sc.score is not None:
        total = sum(map(sum, sc.terms))
        checks.append(check(f"score decomposition: its {len(sc.terms) * len(sc.terms[0])} terms sum to the recorded "
                            "score within {e}", abs(total - sc.score), 1e-5))
    if body.saliency:
        total, gap = sentence.saliency_total
        low, high = sentence.saliency_path
        kept = (" the baseline keeps the first token, the attention sink every later token leans on (its score is 0);"
                if sentence.saliency_kept else "")
        text = (f"integrated gradients:{kept} the token scores sum to {sum(body.saliency):.4g}, f(sentence) - "
                f"f(baseline) is {total:.4g}: a relative gap of {{e}} ({sentence.saliency_steps} steps; up to 5e-02 holds)")
        if gap > IG_TOLERANCE:
            text += (f". Along the path from the baseline to the sentence f ranges from {low:.4g} to {high:.4g}, far "
                     f"beyond the {abs(total):.4g} between its ends: {sentence.saliency_steps} steps do not follow its "
                     "swings, so these token scores are not to be trusted")
        checks.append(check(text, gap, IG_TOLERANCE))
    if sentence.lens is not None:
        checks.append(check("logit lens: its last row equals the model's own prediction within {e}", sentence.lens_error, 1e-4))
    return checks
