"""Remove a head, see what breaks: the light payload of the tour's "remove a head" step.

``attnlab.interpret.ablate`` removes one head (zero ablation) and ``attnlab.interpret.head_effects``
removes every head in turn; nothing else is computed (the Why view adds the logit lens, the score
decomposition and saliency). A decoder is measured by the log-probability of its predicted next
token, an encoder by the cosine similarity of its sentence embedding to the clean one. Runs under the
model's lock (the tools attach hooks), on the model's device; an encoder-decoder is a 422.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field

from attnlab import catalog as cat
from attnlab import interpret
from attnlab.interpret import metrics
from attnlab.tokenizers.base import Tokenizer
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.models import get_model, model_input, model_lock, tokenize

TOP_K = 5


class AblationRequest(s.TextRequest):
    layer: int = s.Layer
    head: int = s.Head


class Choice(BaseModel):
    token: str
    id: int
    prob: float


class AblationResponse(BaseModel):
    model: str
    tokens: list[str]
    layer: int
    head: int
    metric: str = Field(description="what 'clean', 'ablated' and 'head_effects' measure")
    clean: float = Field(description="the metric with every head")
    ablated: float = Field(description="the metric with the chosen head removed (zero ablation)")
    clean_top: list[Choice] = Field(default=[], description="next-token candidates (decoders)")
    ablated_top: list[Choice] = Field(default=[], description="the same with the head removed")
    head_effects: list[list[float]] = Field(description="(layer, head): metric without the head minus with it")


def _top(logits: torch.Tensor, tokenizer: Tokenizer) -> list[Choice]:
    p, i = torch.softmax(logits.cpu().float(), dim=-1).topk(TOP_K)
    return [Choice(token=t, id=int(j), prob=float(q)) for t, j, q in zip(tokenizer.tokens(i.tolist()), i, p, strict=True)]


def prediction_metric(loaded: cat.LoadedModel, clean_out: torch.Tensor) -> tuple[metrics.Metric, str]:
    """What removing a head is measured by, and its description: a decoder's log-probability of its predicted
    next token (the clean run's argmax at the last position), an encoder's embedding similarity to ``clean_out``."""
    if loaded.config.family == "decoder":
        target = int(clean_out[0, -1].argmax())
        return (metrics.token_logprob(target),
                f"log-probability of the predicted next token {loaded.tokenizer.tokens([target])[0]!r}")
    return metrics.embedding_similarity(clean_out), "cosine similarity of the sentence embedding to the clean one"


def ablation(req: AblationRequest) -> AblationResponse:
    """The chosen head removed, and every head removed in turn, on one sentence (see the module docstring)."""
    loaded = get_model(req.model)
    family = loaded.config.family
    if family == "encoder-decoder":
        raise PayloadError(f"removing a head is shown for decoders and encoders; {loaded.name!r} is an encoder-decoder")
    ids, tokens = tokenize(loaded, req.text)
    n_layers, n_heads = loaded.config.n_layers, loaded.config.n_heads
    if req.layer >= n_layers or req.head >= n_heads:
        raise PayloadError(f"model {loaded.name!r} has layers 0-{n_layers - 1} and heads 0-{n_heads - 1}")
    model, x = loaded.model, model_input(loaded, ids)
    lm = family == "decoder"
    with model_lock(loaded.name), torch.no_grad():
        clean_out = interpret.ablate(model, x, [])
        ablated_out = interpret.ablate(model, x, [(req.layer, req.head)])
        metric, what = prediction_metric(loaded, clean_out)
        effects = interpret.head_effects(model, x, metric)
    out = AblationResponse(model=loaded.name, tokens=tokens, layer=req.layer, head=req.head, metric=what,
                           clean=float(metric(clean_out)[0]), ablated=float(metric(ablated_out)[0]),
                           head_effects=effects.effects.cpu().tolist())
    if lm:
        out.clean_top = _top(clean_out[0, -1], loaded.tokenizer)
        out.ablated_top = _top(ablated_out[0, -1], loaded.tokenizer)
    return out
