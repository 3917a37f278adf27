"""Payload builders: turn one forward pass of a real model into the JSON each view draws.

Every number comes from the model's own hook points via ``attnlab.inspect.run_with_cache``; the
builders select, slice and label, they do not re-derive attention. The views that register
themselves keep their builders in their own modules (``web/registry.py``: e.g. ``qkv.py``, ``why.py``).
A builder that ``attnlab.show`` draws too takes a ``catalog.LoadedModel`` (``attention_of``); the route's
function only resolves the request (``get_model``, ``tokenize``) and calls it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.catalog import LoadedModel
from attnlab.inspect import hook_name, hook_points, main_stack
from attnlab.inspect.roles import detect_roles
from attnlab.web import schemas as s
from attnlab.web.corpus import latest_roles
from attnlab.web.diagram import model_formula
from attnlab.web.errors import PayloadError
from attnlab.web.models import forward, get_model, self_attention_stack, tokenize

MAX_COLUMNS = 64


def _floats(t: Tensor) -> list:
    return t.detach().to(torch.float64).tolist()


def _check_index(what: str, value: int, count: int) -> None:
    if not 0 <= value < count:
        raise PayloadError(f"{what} {value} does not exist; this model has {count} (0 to {count - 1})")


def attention(req: s.TextRequest) -> s.AttentionResponse:
    """``POST /api/attention``: ``attention_of`` on the request's model and text (within the web's limits)."""
    loaded = get_model(req.model)
    return attention_of(loaded, *tokenize(loaded, req.text))


def attention_of(loaded: LoadedModel, ids: list[int], tokens: list[str]) -> s.AttentionResponse:
    """All layers x heads of the self-attention weights (``hook_weights``) with each head's role, for the
    token ``ids`` (labelled ``tokens``) of ``loaded`` (an encoder-decoder: its encoder, read with the same
    ids as target). Weights as float64 lists ``[layer][head][query][key]``; ``attnlab.show.attention``
    draws the same payload. Raises ``PayloadError`` for a model without an attention stack."""
    stack = self_attention_stack(loaded)
    _, cache = forward(loaded, ids, names=f"{stack.stack}.blocks.*.attn.hook_weights")
    layers = [cache[stack.name(i, "attn.hook_weights")][0] for i in range(stack.n_layers)]  # (heads, q, k)
    roles = [
        [s.HeadRoleOut(role=r.role, scores=r.scores) for r in detect_roles(w, causal=stack.causal)] for w in layers
    ]
    return s.AttentionResponse(
        model=loaded.name, family=loaded.config.family, causal=stack.causal, stack=stack.stack,
        tokens=tokens, ids=ids, n_layers=stack.n_layers, n_heads=layers[0].shape[0],
        weights=[_floats(w) for w in layers], mean_weights=[_floats(w.double().mean(dim=0)) for w in layers],
        roles=roles, corpus_roles=latest_roles(loaded.name),
    )


# --- live values of the diagram's parts -------------------------------------------------------------

# part -> (where, point, label): "where" is "stack" (the stack's own point), "layer" (a point of block
# ``req.layer``) or "model" (the output head). Several parts show more than one tensor.
_PART_HOOKS: dict[str, list[tuple[str, str, str]]] = {
    "input-embedding": [("stack", "embed.hook_tok_embed", "token embeddings"),
                        ("stack", "embed.hook_embed", "what enters block 0")],
    "output-embedding": [("stack", "embed.hook_tok_embed", "token embeddings"),
                         ("stack", "embed.hook_embed", "what enters block 0")],
    "positional-encoding": [("stack", "embed.hook_pos_embed", "positional vectors added to the embeddings")],
    "self-attention": [("layer", "attn.hook_weights", "attention weights")],
    "masked-self-attention": [("layer", "attn.hook_weights", "masked attention weights")],
    "cross-attention": [("layer", "cross_attn.hook_weights", "cross-attention weights (target x source)")],
    "add-norm": [("layer", "hook_resid_pre", "block input"), ("layer", "hook_resid_mid", "after attention + residual"),
                 ("layer", "hook_resid_post", "block output")],
    "feed-forward": [("layer", "ff.hook_hidden", "hidden layer after the non-linearity"),
                     ("layer", "ff.hook_out", "feed-forward output")],
    "linear": [("model", "hook_logits", "logits")],
    "softmax": [("model", "hook_logits", "logits")],
}

# Which stack a part of the 2017 diagram belongs to, for an encoder-decoder model (others: the encoder).
_SIDE = {
    "input-embedding": "encoder", "output-embedding": "decoder", "self-attention": "encoder",
    "masked-self-attention": "decoder", "cross-attention": "decoder",
}

PARTS = tuple(_PART_HOOKS)


def _family_reason(part: str, family: str) -> str | None:
    if family == "decoder" and part in ("input-embedding", "self-attention", "cross-attention"):
        return ("a decoder-only model has no encoder and no cross-attention; its one attention is the "
                "masked self-attention")
    if family == "encoder" and part in ("output-embedding", "masked-self-attention", "cross-attention"):
        return "an encoder-only model has no decoder: its self-attention is unmasked and there is no cross-attention"
    return None


def part(req: s.PartRequest) -> s.PartResponse:
    """The recorded tensors of one diagram part (layer ``req.layer``) for the current sentence."""
    if req.part not in _PART_HOOKS:
        raise PayloadError(f"unknown part {req.part!r}; parts: {', '.join(PARTS)}")
    loaded = get_model(req.model)
    family = loaded.config.family
    reason = _family_reason(req.part, family)
    if reason:
        return s.PartResponse(part=req.part, model=loaded.name, available=False, reason=reason)
    formula = model_formula(req.part, loaded.config)
    ids, tokens = tokenize(loaded, req.text)
    stack = _SIDE.get(req.part, "encoder") if family == "encoder-decoder" else main_stack(loaded.model)
    points = hook_points(loaded.model)
    wanted: list[tuple[str, str]] = []
    for where, point, label in _PART_HOOKS[req.part]:
        name = hook_name(None if where == "model" else stack, req.layer if where == "layer" else None, point)
        if name in points:
            wanted.append((name, label))
        elif where == "layer" and hook_name(stack, 0, point) in points:
            raise PayloadError(f"layer {req.layer} does not exist in model {loaded.name!r}")
    if not wanted:
        if req.part == "positional-encoding" and loaded.config.positions == "rotary":
            reason = "this model uses rotary positions: they rotate queries and keys inside attention, nothing is added"
        elif req.part == "positional-encoding" and loaded.config.positions == "none":
            reason = "this model has no positional information"
        elif req.part in ("linear", "softmax"):
            reason = (f"model {loaded.name!r} has no output layer over a vocabulary (no hook_logits): it ends with "
                      "its last block's vectors")
        else:
            reason = f"model {loaded.name!r} records no tensor for this part"
        return s.PartResponse(part=req.part, model=loaded.name, available=False, reason=reason, formula=formula)
    _, cache = forward(loaded, ids, names=[name for name, _ in wanted])
    views: list[s.TensorView] = []
    for name, label in wanted if req.tensors else ():
        t = cache[name][0]  # drop the batch of one
        if t.dim() == 3:  # (heads, q, k): one view per head
            views += [_view(name, f"{label}, head {h}", t[h], tokens) for h in range(t.shape[0])]
        else:
            views.append(_view(name, label, t, tokens))
    summary = _token_summaries([(name, label, cache[name][0]) for name, label in wanted], ids, tokens, req.head)
    top, top_label = [], None
    if req.part in ("linear", "softmax"):
        logits = cache["hook_logits"][0]
        if logits.dim() == 2 and logits.shape[-1] == loaded.tokenizer.vocab_size:
            values = torch.softmax(logits.double(), dim=-1) if req.part == "softmax" else logits.double()
            best = values.topk(min(5, values.shape[-1]), dim=-1)
            top = [
                [s.TopToken(token=loaded.tokenizer.tokens([int(i)])[0], value=float(v)) for v, i in zip(vs, ix, strict=True)]
                for vs, ix in zip(best.values, best.indices, strict=True)
            ]
            top_label = "probabilities (softmax of the logits)" if req.part == "softmax" else "highest logits"
    return s.PartResponse(part=req.part, model=loaded.name, available=True, formula=formula, tensors=views, top=top, top_label=top_label,
                          tokens=summary)


FIRST_NUMBERS = 4  # how many of a vector's numbers a token summary lists
TOP_KEYS = 3  # how many keys it lists for an attention head


def _token_summaries(recorded: list[tuple[str, str, Tensor]], ids: list[int], tokens: list[str],
                     head: int) -> list[s.TokenSummary]:
    """Each token's rows of the recorded tensors in a few numbers: for a (token x width) tensor the first
    numbers, length, mean and standard deviation of the whole row; for attention weights (heads x
    queries x keys) the keys ``head`` weighs most."""
    rows = [s.TokenSummary(position=i, token=t, id=k) for i, (t, k) in enumerate(zip(tokens, ids, strict=True))]
    for name, label, t in recorded:
        t = t.detach().double()
        if t.dim() == 3:
            _check_index("head", head, t.shape[0])
            best = t[head].topk(min(TOP_KEYS, t.shape[-1]), dim=-1)
            for row, weights, keys in zip(rows, best.values.tolist(), best.indices.tolist(), strict=True):
                row.attends = [s.AttendedKey(key=j, token=tokens[j], weight=w) for w, j in zip(weights, keys, strict=True) if w > 0]
            continue
        norms, means, stds = t.norm(dim=-1).tolist(), t.mean(dim=-1).tolist(), t.std(dim=-1, correction=0).tolist()
        for row, first, norm, mean, std in zip(rows, t[:, :FIRST_NUMBERS].tolist(), norms, means, stds, strict=True):
            row.vectors.append(s.VectorSummary(hook=name, label=label, first=first, norm=norm, mean=mean, std=std))
    return rows


def _view(name: str, label: str, t: Tensor, tokens: list[str]) -> s.TensorView:
    """A (rows x columns) tensor as a heatmap: one row per token, the first ``MAX_COLUMNS`` columns."""
    t = t.detach().double()
    if t.dim() == 1:
        t = t[None]
    shown = t[:, :MAX_COLUMNS]
    rows = tokens[: t.shape[0]] if len(tokens) >= t.shape[0] else [str(i) for i in range(t.shape[0])]
    return s.TensorView(
        hook=name, label=label, shape=list(t.shape), rows=rows, values=shown.tolist(),
        shown_columns=shown.shape[1], min=float(t.min()), max=float(t.max()),
    )

