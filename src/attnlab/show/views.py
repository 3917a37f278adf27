"""The notebook views: each view's data is built by the walkthrough's own payload builder where the web
has one, and by ``attnlab.interpret`` where it has none, then wrapped in a ``View`` (self-contained HTML,
see ``_html``). Every number drawn is the tools' own, built by one function whichever page shows it.

From the web's payload builders (``attnlab.web``, the floor below ``show``), on a ``catalog.LoadedModel``
(``_loaded.loaded_model``), so a view's data holds the same JSON as the route's answer:
``attention`` is ``web.payloads.attention_of`` (``POST /api/attention``); ``head_finder`` is the same
payload (its layers x heads grid) plus, with ``key=``, ``web.finder.rank_heads_of`` (``POST /api/heads/rank``)
and ``interpret.detect_heads``'s scores on repeated random tokens, which the web does not compute;
``head_contexts`` (``corpus.py``) is ``web.corpus.head_contexts_of`` (``POST /api/heads/contexts``);
``why`` is ``web.why.why_of`` (``POST /api/why``). The web's limits apply to the text of ``why`` (it tokenizes
the request as the route does); the other builders take token ids, so ``show`` reads any length up to
the model's ``max_len``.

``logit_lens``, ``head_effects`` and ``saliency`` are library-level renderings of ``attnlab.interpret``'s
result objects (``.to_dict()``), not views of the Why payload: they take the choices the Why view fixes
(any metric or target, the ablation or attribution method, every position of the lens, ``k``, a
cross-attention map), while the Why payload is one (head, focus) answer with the page's metric and
only the focus position. Their numbers are computed by the library, once; the Why view calls the same
library functions with its own choices (``show.why`` draws that payload).

Each function takes ``model`` as a catalogue name (``"shakespeare-char"``, ``"minilm"``), a
``LoadedModel`` (model + tokenizer), or a bare ``nn.Module`` with ``tokenizer=`` (or token ids as
``text``). Every family: an encoder-decoder reads ``text`` as its source (``text </s>``) and, as its
target, its own greedy translation when its tokenizer has ``<s>``/``</s>`` (the translator), else the
same tokens (as the web app's views do); ``text`` may also be a pair ``(source ids, target ids)``. Its
attention and head-finder views show the encoder's self-attention (the web app's attention view does the
same, on the sentence without ``</s>``); the logit lens, head effects (``cross=True``: the decoder's
cross-attention heads) and saliency read the decoder's prediction after the last target token, the
saliency scoring the source tokens; ``why`` as the Why view reads it.
Errors: ``KeyError`` for an unknown catalogue name, ``TypeError`` for a module that is not
one of attnlab's model families, ``ValueError`` for empty text, a head or token the model or sentence
does not have, or a view that needs a vocabulary head on a model without one (the message says so in
one sentence).

State: every view runs the model in eval mode and gives it back in the modes it found it in
(``attnlab.models.mode.eval_mode``): no dropout in a number drawn, and a model in training stays in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor

from attnlab import interpret
from attnlab.catalog import LoadedModel
from attnlab.generate import model_device
from attnlab.inspect import math_backend
from attnlab.interpret import Inputs, Metric
from attnlab.models import FamilyModel
from attnlab.models.mode import eval_mode
from attnlab.show._html import View
from attnlab.show._loaded import ModelLike, loaded_model
from attnlab.tokenizers.base import Tokenizer
from attnlab.translate import bos_eos_ids, source_and_target
from attnlab.web.finder import rank_heads_of
from attnlab.web.payloads import attention_of
from attnlab.web.why import WhyRequest, why_of

TextLike = str | Tensor | Sequence[int]


def _ids(text: TextLike, tokenizer: Tokenizer | None) -> list[int]:
    if isinstance(text, str):
        if tokenizer is None:
            raise ValueError("text given as a string needs a tokenizer (pass a catalogue name or tokenizer=)")
        ids = tokenizer.encode(text)
    else:
        ids = [int(i) for i in (text.flatten().tolist() if isinstance(text, Tensor) else text)]
    if not ids:
        raise ValueError("empty input: give at least one token")
    return ids


def _labels(ids: list[int], tokenizer: Tokenizer | None) -> list[str]:
    return [str(t) for t in tokenizer.tokens(ids)] if tokenizer is not None else [str(i) for i in ids]


def _source_target(model: FamilyModel, text: TextLike, tokenizer: Tokenizer | None) -> tuple[list[int], list[int]]:
    """An encoder-decoder's (source, target): ``text </s>`` and ``<s>`` + its greedy translation, or the
    tokens of ``text`` for both with a tokenizer without ``<s>``/``</s>``."""
    max_len = model.config.max_len
    return source_and_target(model, _ids(text, tokenizer)[:max_len], bos_eos_ids(tokenizer) if tokenizer else None,
                             max_len=max_len, add_eos=isinstance(text, str))


@dataclass
class _Read:
    """What a view reads: the model, its inputs ``x`` (on its device), the input (source) token ids and
    labels, and an encoder-decoder's target labels (else empty)."""

    loaded: LoadedModel
    x: Inputs
    ids: list[int]
    tokens: list[str]
    targets: list[str]

    @property
    def model(self) -> FamilyModel:
        return self.loaded.model  # type: ignore[return-value]

    @property
    def tokenizer(self) -> Tokenizer | None:
        return self.loaded.tokenizer


def _resolve(model: ModelLike, text: TextLike | tuple, tokenizer: Tokenizer | None) -> _Read:
    loaded = loaded_model(model, tokenizer)
    net, tokenizer = loaded.model, loaded.tokenizer
    if not isinstance(net, FamilyModel):
        raise TypeError(f"attnlab.show draws attnlab's model families, got {type(net).__name__}")
    device, max_len = model_device(net), net.config.max_len
    if net.config.family == "encoder-decoder":
        if isinstance(text, tuple):
            src, tgt = _ids(text[0], tokenizer)[:max_len], _ids(text[1], tokenizer)[:max_len]
        else:
            src, tgt = _source_target(net, text, tokenizer)
        x = (torch.tensor([src], device=device), torch.tensor([tgt], device=device))
        return _Read(loaded, x, src, _labels(src, tokenizer), _labels(tgt, tokenizer))
    ids = _ids(text, tokenizer)[:max_len]  # type: ignore[arg-type]
    return _Read(loaded, torch.tensor([ids], device=device), ids, _labels(ids, tokenizer), [])  # where the model is


def _payload(answer: BaseModel) -> dict[str, Any]:
    """A builder's answer as the JSON the route sends."""
    return answer.model_dump(mode="json")


def _attention_stack(r: _Read) -> str | None:
    return "encoder" if isinstance(r.x, tuple) else None


def attention(model: ModelLike, text: TextLike, *, layer: int = 0, head: int = 0, focus: int | None = None,
              tokenizer: Tokenizer | None = None) -> View:
    """Where every head looks: the focus token's attention as lines, the head's full map as a heatmap,
    with layer and head pickers. Data: ``POST /api/attention``'s payload (``web.payloads.attention_of``:
    ``weights`` ``[layer][head][query][key]`` float64 lists from ``run_with_cache``, each head's role...)
    and the view's ``layer``, ``head``, ``focus`` (default: the last token)."""
    r = _resolve(model, text, tokenizer)
    r.model.stack_view(_attention_stack(r)).check_head(layer, head)
    with eval_mode(r.model):
        data = _payload(attention_of(r.loaded, r.ids, r.tokens))
    data.update(layer=layer, head=head, focus=len(r.tokens) - 1 if focus is None else focus)
    return View("attention", "Attention", data, "Click a token to make it the query; pick a layer and head.")


def head_finder(model: ModelLike, text: TextLike, *, query: int | None = None, key: int | None = None,
                tokenizer: Tokenizer | None = None, seed: int = 0) -> View:
    """Every head at a glance (its map on ``text`` and its role: the attention payload's grid, as in the
    walkthrough), with ``key=`` every head ranked by how specifically token ``query`` (default: the last)
    attends to token ``key`` (``POST /api/heads/rank``'s payload, ``web.finder.rank_heads_of``, under
    ``ranking``; the best three outlined in the grid), and each head's induction / duplicate-token /
    previous-token scores on repeated random tokens (``interpret.detect_heads``, under ``detection``).
    Raises ``ValueError`` for ``query=`` without ``key=``, a token past the sentence, or (causal
    models) a key after the query."""
    if query is not None and key is None:
        raise ValueError("the head finder ranks heads for a query -> key pair: give key= too")
    r = _resolve(model, text, tokenizer)
    with eval_mode(r.model):
        data = _payload(attention_of(r.loaded, r.ids, r.tokens))
        ranking = None
        if key is not None:
            query = len(r.ids) - 1 if query is None else query
            ranking = _payload(rank_heads_of(r.loaded, r.ids, r.tokens, query, key))
        detection = interpret.detect_heads(r.model, seed=seed, low=min(4, r.model.config.vocab_size - 1),
                                           stack=_attention_stack(r))
    data.update(ranking=ranking, detection=detection.to_dict())
    note = f"Roles from the attention on this text; scores from {detection.seq_len} random tokens repeated twice."
    if ranking is not None:
        note = f"Heads ranked for token {query} -> token {key}. " + note
    return View("head_finder", "Head finder", data, note)


def why(model: ModelLike, text: str, *, layer: int = 0, head: int = 0, focus: int | None = None,
        tokenizer: Tokenizer | None = None) -> View:
    """The walkthrough's Why view for head (``layer``, ``head``) and query token ``focus`` (default: the
    last; an encoder-decoder: a target token): ``POST /api/why``'s payload (``web.why.why_of``), its
    prediction with and without the head, every head's effect, the score decomposition of the focus
    token's attention, the logit lens at the focus, the saliency, the sentences computed from them and
    the ledger of checks. ``text`` is a string, within the web's limits (400 characters, 64 tokens; 24 on
    a large model). Raises ``ValueError`` (one line) for a module without ``tokenizer=``, text past the
    limits, or a head or focus the model or sentence does not have."""
    loaded = loaded_model(model, tokenizer)
    if loaded.tokenizer is None:
        raise ValueError("the Why view reads text: a model given as a module needs tokenizer=")
    if not isinstance(loaded.model, FamilyModel):
        raise TypeError(f"attnlab.show draws attnlab's model families, got {type(loaded.model).__name__}")
    try:
        req = WhyRequest(model=loaded.name, text=text, layer=layer, head=head, focus=focus)
    except ValidationError as exc:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    with eval_mode(loaded.model):
        data = _payload(why_of(loaded, req))
    held = sum(c["holds"] for c in data["ledger"])
    return View("why", f"Why? Layer {layer} head {head}", data,
                f"{held} of the {len(data['ledger'])} checks in the ledger hold on this input.")


def _vocab_labels(tokenizer: Tokenizer | None, ids: set[int]) -> dict[int, str]:
    ordered = sorted(ids)
    labels = tokenizer.tokens(ordered) if tokenizer is not None else [str(i) for i in ordered]
    return dict(zip(ordered, labels, strict=True))


def logit_lens(model: ModelLike, text: TextLike, *, target: int | str | None = None, k: int = 5,
               tokenizer: Tokenizer | None = None) -> View:
    """The prediction after every layer: per read-out and position, the top token and its probability
    (``interpret.logit_lens``); with ``target`` (an id, or text of one token), its rank per layer."""
    r = _resolve(model, text, tokenizer)
    model, ids, tokens, tok, targets = r.model, r.x, r.tokens, r.tokenizer, r.targets
    _need_vocab_head(model, "logit lens")
    with eval_mode(model):
        if isinstance(target, str):
            if tok is None or len(tok.encode(target)) != 1:
                raise ValueError(f"target {target!r} must be one token of the model's tokenizer")
            target = tok.encode(target)[0]
        lens = interpret.logit_lens(model, ids, target=target, k=k)
        data = lens.to_dict()
        seen = {int(i) for i in lens.top_ids.flatten().tolist()} | ({target} if target is not None else set())
        labels = _vocab_labels(tok, seen)
        data.update(tokens=targets or tokens, vocab={str(i): s for i, s in labels.items()},
                    target_token=labels.get(target) if target is not None else None)
        with torch.no_grad(), math_backend(model):
            out = model(*(ids if isinstance(ids, tuple) else (ids,)))
        gap = float((lens.logits[-1] - out).abs().max())
        return View("logit_lens", "Logit lens", data,
                    "Each row reads the residual stream after one layer through the final norm and the output layer. "
                    f"Check: the last row equals the model's logits within {gap:.1e}.")


def _top_prediction(model: FamilyModel, ids: Inputs) -> int:
    """The model's top next-token prediction at the last position (math backend, as the tools run it)."""
    with torch.no_grad(), math_backend(model):
        return int(model(*(ids if isinstance(ids, tuple) else (ids,)))[0, -1].argmax())


def _need_vocab_head(model: FamilyModel, what: str, instead: str = "") -> None:
    if not model.has_vocab_head:
        raise ValueError(f"{type(model).__name__} has no vocabulary head (it outputs a sentence embedding, not a "
                         f"next token), so it has no {what}{instead}")


def _default_metric(model: FamilyModel, ids: Inputs) -> tuple[Metric, str]:
    _need_vocab_head(model, "next-token prediction to measure", "; pass metric=")
    top = _top_prediction(model, ids)
    return interpret.metrics.token_logprob(top), f"log-probability of the model's top prediction (token {top})"


def head_effects(model: ModelLike, text: TextLike, *, metric: Metric | None = None, method: str = "zero",
                 cross: bool = False, tokenizer: Tokenizer | None = None) -> View:
    """What breaks without each head: the change of ``metric`` when one head is removed
    (``interpret.head_effects``), as a layers x heads map. Default metric: the log-probability of the
    model's own top next-token prediction at the last position. ``cross=True``: an encoder-decoder's
    cross-attention heads (``ValueError`` for a model without them)."""
    r = _resolve(model, text, tokenizer)
    model, ids = r.model, r.x
    with eval_mode(model):
        what = "the metric"
        if metric is None:
            metric, what = _default_metric(model, ids)
        effects = interpret.head_effects(model, ids, metric, method=method, cross=cross)  # type: ignore[arg-type]
        layer, head = divmod(int(effects.effects.abs().argmax()), effects.effects.shape[1])
        alone = interpret.ablate(model, ids, [(layer, head)], method=method, cross=cross)  # type: ignore[arg-type]
        gap = abs(float(metric(alone)[0]) - effects.baseline - float(effects.effects[layer, head]))
        return View("head_effects", "Head effects", effects.to_dict(),
                    f"Change of {what} when each head is removed ({method} ablation); blue: the head helped. "
                    f"Check: the largest cell (layer {layer} head {head}) equals that head removed on its own "
                    f"within {gap:.1e}.")


def saliency(model: ModelLike, text: TextLike, *, target: int | Metric | None = None,
             method: str = "integrated_gradients", baseline: int | None = None,
             tokenizer: Tokenizer | None = None) -> View:
    """Which input tokens the prediction rests on (``interpret.saliency``), as shaded tokens. Default
    target: the logit of the model's top next-token prediction at the last position."""
    r = _resolve(model, text, tokenizer)
    model, ids, tokens = r.model, r.x, r.tokens
    with eval_mode(model):
        if target is None:
            _need_vocab_head(model, "next-token prediction to explain", "; pass target= (a metric)")
            target = _top_prediction(model, ids)
        sal = interpret.saliency(model, ids, target, method=method, baseline=baseline)  # type: ignore[arg-type]
        data: dict[str, Any] = {**sal.to_dict(), "tokens": tokens}
        note = f"{method.replace('_', ' ')}: red raises the target, blue lowers it."
        if sal.baseline_value is not None:  # integrated gradients: complete, up to its quadrature
            total = sal.value - sal.baseline_value
            note += (f" Check: the scores sum to {float(sal.scores.sum()):.4g}, f(input) - f(baseline) is {total:.4g} "
                     f"(relative gap {sal.relative_gap:.1e}).")
        return View("saliency", "Saliency", data, note)
