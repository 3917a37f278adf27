"""The notebook views: build each view's data with ``attnlab.interpret`` / ``attnlab.inspect`` and
wrap it in a ``View`` (self-contained HTML, see ``_html``). Every number drawn is the tools' own.

Each function takes ``model`` as a catalogue name (``"shakespeare-char"``, ``"minilm"``), a
``LoadedModel`` (model + tokenizer), or a bare ``nn.Module`` with ``tokenizer=`` (or token ids as
``text``). Every family: an encoder-decoder reads ``text`` as its source and, as its target, its own
greedy translation when its tokenizer has ``<s>``/``</s>`` (the translator), else the same tokens (as
the web app's views do); ``text`` may also be a pair ``(source ids, target ids)``. Its attention and
head-finder views show the encoder's self-attention (the web app's attention view does the same); the
logit lens, head effects (``cross=True``: the decoder's cross-attention heads) and saliency read the
decoder's prediction after the last target token, the saliency scoring the source tokens.
Errors: ``KeyError`` for an unknown catalogue name, ``TypeError`` for a module that is not
one of attnlab's model families, ``ValueError`` for empty text, or a view that needs a vocabulary head
on a model without one (the message says so in one sentence).

State: every view runs the model in eval mode and gives it back in the modes it found it in
(``attnlab.models.mode.eval_mode``): no dropout in a number drawn, and a model in training stays in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attnlab import interpret
from attnlab.catalog import LoadedModel, load
from attnlab.generate import model_device
from attnlab.inspect import hook_name, math_backend, run_with_cache
from attnlab.inspect.roles import detect_roles
from attnlab.interpret import Inputs, Metric
from attnlab.models import FamilyModel
from attnlab.models.mode import eval_mode
from attnlab.show._html import View
from attnlab.tokenizers.base import Tokenizer
from attnlab.translate import bos_eos_ids, source_and_target

ModelLike = str | LoadedModel | nn.Module
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
    return tokenizer.tokens(ids) if tokenizer is not None else [str(i) for i in ids]


def _source_target(model: FamilyModel, text: TextLike, tokenizer: Tokenizer | None) -> tuple[list[int], list[int]]:
    """An encoder-decoder's (source, target): ``text </s>`` and ``<s>`` + its greedy translation, or the
    tokens of ``text`` for both with a tokenizer without ``<s>``/``</s>``."""
    max_len = model.config.max_len
    return source_and_target(model, _ids(text, tokenizer)[:max_len], bos_eos_ids(tokenizer) if tokenizer else None,
                             max_len=max_len, add_eos=isinstance(text, str))


def _resolve(model: ModelLike, text: TextLike | tuple, tokenizer: Tokenizer | None
             ) -> tuple[FamilyModel, Inputs, list[str], Tokenizer | None, list[str]]:
    """``(model, its inputs, the input (source) token labels, tokenizer, an encoder-decoder's target labels)``."""
    if isinstance(model, str):
        model = load(model)
    if isinstance(model, LoadedModel):
        tokenizer = tokenizer or model.tokenizer
        model = model.model
    if not isinstance(model, FamilyModel):
        raise TypeError(f"attnlab.show draws attnlab's model families, got {type(model).__name__}")
    device, max_len = model_device(model), model.config.max_len
    if model.config.family == "encoder-decoder":
        if isinstance(text, tuple):
            src, tgt = _ids(text[0], tokenizer)[:max_len], _ids(text[1], tokenizer)[:max_len]
        else:
            src, tgt = _source_target(model, text, tokenizer)
        inputs = (torch.tensor([src], device=device), torch.tensor([tgt], device=device))
        return model, inputs, _labels(src, tokenizer), tokenizer, _labels(tgt, tokenizer)
    ids = _ids(text, tokenizer)[:max_len]  # type: ignore[arg-type]
    return model, torch.tensor([ids], device=device), _labels(ids, tokenizer), tokenizer, []  # where the model is


def _vocab_labels(tokenizer: Tokenizer | None, ids: set[int]) -> dict[int, str]:
    ordered = sorted(ids)
    labels = tokenizer.tokens(ordered) if tokenizer is not None else [str(i) for i in ordered]
    return dict(zip(ordered, labels, strict=True))


def _attention_weights(model: FamilyModel, ids: Inputs) -> tuple[list, bool]:
    """Every head's weights of the self-attention stack shown (an encoder-decoder: its encoder)."""
    sv = model.stack_view("encoder" if isinstance(ids, tuple) else None)
    names = [hook_name(sv.name, layer, "attn.hook_weights") for layer in range(sv.n_layers)]
    _, cache = run_with_cache(model, *(ids if isinstance(ids, tuple) else (ids,)), names=names, device="cpu")
    return [cache[n][0] for n in names], sv.causal


def attention(model: ModelLike, text: TextLike, *, layer: int = 0, head: int = 0, focus: int | None = None,
              tokenizer: Tokenizer | None = None) -> View:
    """Where every head looks: the focus token's attention as lines, the head's full map as a heatmap,
    with layer and head pickers. Data: ``weights`` ``[layer][head][query][key]`` from ``run_with_cache``."""
    model, ids, tokens, _, _ = _resolve(model, text, tokenizer)
    with eval_mode(model):
        layers, causal = _attention_weights(model, ids)
        model.stack_view("encoder" if isinstance(ids, tuple) else None).check_head(layer, head)
        data = {"tokens": tokens, "weights": [w.tolist() for w in layers], "layer": layer, "head": head,
                "focus": len(tokens) - 1 if focus is None else focus, "causal": causal}
        return View("attention", "Attention", data, "Click a token to make it the query; pick a layer and head.")


def head_finder(model: ModelLike, text: TextLike, *, tokenizer: Tokenizer | None = None, seed: int = 0) -> View:
    """Every head at a glance (its map on ``text`` and its role, as in the walkthrough) and its
    induction / duplicate-token / previous-token scores on repeated random tokens (``detect_heads``)."""
    model, ids, tokens, _, _ = _resolve(model, text, tokenizer)
    with eval_mode(model):
        layers, causal = _attention_weights(model, ids)
        roles = [[{"role": r.role, "scores": r.scores} for r in detect_roles(w, causal=causal)] for w in layers]
        detection = interpret.detect_heads(model, seed=seed, low=min(4, model.config.vocab_size - 1),
                                           stack="encoder" if isinstance(ids, tuple) else None)
        data = {"tokens": tokens, "weights": [w.tolist() for w in layers], "roles": roles,
                "detection": detection.to_dict()}
        return View("head_finder", "Head finder", data,
                    f"Roles from the attention on this text; scores from {detection.seq_len} random tokens repeated twice.")


def logit_lens(model: ModelLike, text: TextLike, *, target: int | str | None = None, k: int = 5,
               tokenizer: Tokenizer | None = None) -> View:
    """The prediction after every layer: per read-out and position, the top token and its probability
    (``interpret.logit_lens``); with ``target`` (an id, or text of one token), its rank per layer."""
    model, ids, tokens, tok, targets = _resolve(model, text, tokenizer)
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
    model, ids, _, _, _ = _resolve(model, text, tokenizer)
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
    model, ids, tokens, _, _ = _resolve(model, text, tokenizer)
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
                     f"(relative gap {abs(sal.completeness_gap or 0.0) / max(abs(total), 1e-12):.1e}).")
        return View("saliency", "Saliency", data, note)
