"""Answers that add up: a logit, and an attention score, split into the parts that built them.

A pre-norm Transformer's residual stream is a sum: the embeddings plus what every head and every
feed-forward block wrote (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits").
Everything that reads the stream reads it through a norm. With the norm's scale frozen at its
recorded value the norm is affine, so a read-out (a logit, a query, a key) is a sum over the stream's
components plus a constant, and each term is that component's direct contribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.interpret._model import Inputs, ModelView, component_names, frozen_norm, residual_components
from attnlab.models.mode import evaluates
from attnlab.nn import activate


def _single(view: ModelView, inputs: Inputs) -> Inputs:
    inputs = view.prepare(inputs)
    if view.batch_size(inputs) != 1:
        raise ValueError("pass one sequence (batch size 1)")
    return inputs


@dataclass
class DirectLogitAttribution:
    """The direct contribution of each residual component to one logit.

    ``contributions[i]`` belongs to ``labels[i]`` (see ``residual_components``), float64 of shape
    ``(n_components,)``; ``contributions.sum() == logit - bias_term`` where ``bias_term`` is the final
    norm's bias and the output layer's bias read through the token's unembedding.
    """

    labels: list[str]
    contributions: Tensor
    logit: float
    bias_term: float
    token: int
    position: int

    def to_dict(self) -> dict:
        return {"labels": self.labels, "contributions": self.contributions.tolist(), "logit": self.logit,
                "bias_term": self.bias_term, "token": self.token, "position": self.position}


@evaluates
def direct_logit_attribution(model: nn.Module, inputs: Inputs, token: int, *, position: int = -1) -> DirectLogitAttribution:
    """Split the logit of ``token`` at ``position`` into the direct contributions of the embeddings,
    every head and every feed-forward block (Elhage et al. 2021; the final norm's scale frozen at its
    recorded value, as TransformerLens's ``apply_ln_to_stack`` does).

    ``inputs``: one sequence, ``(1, seq)`` or ``(seq,)`` (an encoder-decoder: ``(src, tgt)``; the
    decoder's components, cross-attention heads included; the encoder acts through them). Every family
    with a vocabulary head, pre- or post-norm (a post-norm stream's norms are affine at this input;
    see ``residual_components``). An encoder's MLM head applies ``W_t``, a GELU and a LayerNorm before
    the output layer: the GELU is read as the per-unit gain ``gelu(h) / h`` it has on the recorded
    ``h`` and the LayerNorm as its frozen affine map, so the split is exact at this input under that
    stated linearisation (the head's biases join ``bias_term``). A model without a vocabulary head
    (an encoder that outputs hidden states, such as MiniLM) has no logit to split: ``ValueError``, as
    is a batch of more than one.
    """
    view = ModelView(model)
    inputs = _single(view, inputs)
    if not view.has_vocab_head:
        raise ValueError(f"{type(model).__name__} has no vocabulary head: it outputs hidden states, not logits, "
                         "so there is no logit to attribute")
    sv = view.stack(None)
    vocab = model.lm_head.weight.shape[0]
    if not 0 <= token < vocab:
        raise IndexError(f"token {token} outside the vocabulary [0, {vocab})")
    names = [*component_names(view, sv, sv.n_layers), f"{sv.name}.blocks.{sv.n_layers - 1}.hook_resid_post"]
    logits, cache = view.cache(inputs, names)
    with torch.no_grad():
        return _dla(model, sv, view, cache, logits, names[-1], token, position)


def _dla(model, sv, view, cache, logits, resid_name, token, position) -> DirectLogitAttribution:
    labels, comps = residual_components(view, sv, cache, sv.n_layers)  # (n, 1, seq, d)
    resid = cache[resid_name][0, position].double()
    linear, bias = frozen_norm(sv.stack.final_norm, resid)
    parts, const = linear(comps[:, 0, position].double()), bias.double()  # the read-out's input = parts.sum(0) + const
    if view.family == "encoder":
        parts, const = _through_mlm_transform(view, model, parts, const)
    w_u = model.lm_head.weight[token].detach().double()
    b_u = model.lm_head.bias[token].item() if model.lm_head.bias is not None else 0.0
    contributions = parts @ w_u
    bias_term = float(const @ w_u) + b_u
    return DirectLogitAttribution(labels, contributions, float(logits[0, position, token]), bias_term, token, position)


def _through_mlm_transform(view: ModelView, model: nn.Module, parts: Tensor, const: Tensor) -> tuple[Tensor, Tensor]:
    """An MLM head's ``transform_norm(act(transform(x)))`` on ``x = parts.sum(0) + const``, exact at the
    recorded ``x``: ``transform`` is affine, the activation the per-unit gain it has on the recorded
    pre-activation ``h`` (``act(h) / h``; its slope at 0 where ``h == 0``), the norm frozen at its input."""
    w, b = model.transform.weight.detach().double(), model.transform.bias
    parts, const = parts @ w.T, const @ w.T + (b.detach().double() if b is not None else 0.0)
    h = parts.sum(0) + const
    a = activate(h, model.config.activation)
    safe = torch.where(h == 0, torch.ones_like(h), h)
    gain = torch.where(h == 0, activate(torch.full_like(h, 1e-6), model.config.activation) / 1e-6, a / safe)
    linear, norm_bias = frozen_norm(model.transform_norm, a)
    return linear(gain * parts), linear(gain * const) + norm_bias.double()


@dataclass
class ScoreDecomposition:
    """One pre-softmax attention score split into query-side x key-side component pairs.

    ``terms[i, j]`` (float64, ``(len(query_labels), len(key_labels))``) is the part of the score due to
    query-side component ``query_labels[i]`` meeting key-side component ``key_labels[j]``; the last
    label of each side is ``"q/k bias"`` (the norm's bias and the projection's bias). ``terms.sum() ==
    score``, the recorded ``hook_scores`` value.
    """

    query_labels: list[str]
    key_labels: list[str]
    terms: Tensor
    score: float
    layer: int
    head: int
    query: int
    key: int

    @property
    def by_query_component(self) -> Tensor:
        return self.terms.sum(dim=1)

    @property
    def by_key_component(self) -> Tensor:
        return self.terms.sum(dim=0)

    def top_pairs(self, n: int = 10) -> list[tuple[str, str, float]]:
        """The ``n`` terms largest in magnitude, as ``(query component, key component, value)``."""
        flat = self.terms.flatten()
        idx = flat.abs().argsort(descending=True)[:n]
        k = len(self.key_labels)
        return [(self.query_labels[int(i) // k], self.key_labels[int(i) % k], float(flat[i])) for i in idx]

    def to_dict(self) -> dict:
        return {"query_labels": self.query_labels, "key_labels": self.key_labels, "terms": self.terms.tolist(),
                "score": self.score, "layer": self.layer, "head": self.head, "query": self.query, "key": self.key,
                "by_query_component": self.by_query_component.tolist(),
                "by_key_component": self.by_key_component.tolist()}


def _head_projection(attn: nn.Module, which: str, head: int) -> tuple[Tensor, Tensor | None]:
    """``W`` ``(d_k, d_model)`` and bias ``(d_k,)`` of one head's query (``"q"``) or key (``"k"``) projection."""
    d = attn.head_dim
    if which == "k":  # grouped-query attention: query head h reads key head h // group
        head = head // (attn.n_heads // attn.n_kv_heads)
    if attn.fused_qkv:
        offset = 0 if which == "q" else attn.n_heads * d
        w, b = attn.qkv_proj.weight, attn.qkv_proj.bias
    else:
        offset = 0
        proj = attn.q_proj if which == "q" else attn.k_proj
        w, b = proj.weight, proj.bias
    rows = slice(offset + head * d, offset + (head + 1) * d)
    return w[rows].detach(), (b[rows].detach() if b is not None else None)


@evaluates
def score_decomposition(
    model: nn.Module, inputs: Inputs, layer: int, head: int, query: int, key: int, *, stack: str | None = None,
    cross: bool = False,
) -> ScoreDecomposition:
    """Why does position ``query`` attend to position ``key`` in head ``(layer, head)``?

    The score ``q . k / sqrt(d_k)`` is bilinear in the query-side and key-side inputs. Each is the
    residual stream entering the attention (a sum of components: embeddings, positions, every earlier
    head and feed-forward block, biases; see ``residual_components``), through the attention norm with
    its scale frozen at the recorded value (pre-norm; a post-norm block's attention reads the stream
    itself, and its earlier norms are inside the components) and the head's projection (and rotation,
    for rotary models: rotary positions act here, not as a component). So the score is a sum over
    (query component, key component) pairs, and the pairs add up to the score ``run_with_cache``
    records (1e-5).

    ``cross=True`` (an encoder-decoder's decoder): the cross-attention score of decoder position
    ``query`` for source position ``key``; the query side is the decoder stream after the block's
    self-attention, the key side the encoder's output, whose components are labelled ``enc ...``.
    ``inputs``: one sequence (batch 1); ``stack``: ``encoder`` or ``decoder`` (default: the output
    stack). ``ValueError`` for a masked (query, key) pair or ``cross`` without cross-attention;
    ``IndexError`` for positions, layers or heads out of range.
    """
    view = ModelView(model)
    inputs = _single(view, inputs)
    sv = view.stack(stack)
    view.check_head(sv, layer, head)
    kind = "cross_attn" if cross else "attn"
    if cross and sv.stack.blocks[layer].cross_attn is None:
        raise ValueError(f"the {sv.name} stack has no cross-attention")
    key_sv = view.stack("encoder") if cross else sv
    n_q, n_k = view.ids(inputs, sv.name).shape[1], view.ids(inputs, key_sv.name).shape[1]
    if not (0 <= query < n_q and 0 <= key < n_k):
        raise IndexError(f"query {query} must lie in [0, {n_q}) and key {key} in [0, {n_k})")
    score_name = f"{sv.name}.blocks.{layer}.{kind}.hook_scores"
    names = [*_side_names(view, sv, layer, cross), score_name]
    if cross:
        names += _side_names(view, key_sv, key_sv.n_layers, False)
    _, cache = view.cache(inputs, list(dict.fromkeys(names)))
    score = float(cache[score_name][0, head, query, key])
    if math.isinf(score):
        raise ValueError(f"query {query} may not attend to key {key} (masked); its score is -inf")
    with torch.no_grad():
        return _decompose(view, sv, key_sv, cache, layer, head, query, key, score, cross)


def _side_names(view: ModelView, sv, upto: int, within: bool) -> list[str]:
    """What ``_side`` reads: the components of the stream entering block ``upto`` (or its
    cross-attention) and that stream itself."""
    names = component_names(view, sv, upto, within)
    if upto < sv.n_layers:
        names += [f"{sv.name}.blocks.{upto}.hook_resid_pre"]
        if within:
            names += [f"{sv.name}.blocks.{upto}.attn.hook_out"]
    else:
        names += [f"{sv.name}.blocks.{upto - 1}.hook_resid_post"]
    return names


def _side(view: ModelView, sv, cache, upto: int, within: bool) -> tuple[list[str], Tensor, Tensor]:
    """``(labels, components (n, seq, d_model), the stream (seq, d_model))``, float64, of batch row 0:
    the stream entering block ``upto`` (``within``: its cross-attention sub-layer; ``upto = n_layers``:
    the stack's output, through its final norm frozen at the recorded statistics)."""
    labels, comps = residual_components(view, sv, cache, upto, within=within)
    comps = comps[:, 0].double()
    if upto == sv.n_layers:
        resid = cache[f"{sv.name}.blocks.{upto - 1}.hook_resid_post"][0].double()
        if sv.stack.final_norm is not None:
            linear, bias = frozen_norm(sv.stack.final_norm, resid)
            comps = torch.cat([linear(comps), bias.double().expand_as(comps[:1])])
            labels = [*labels, "final norm offset"]
        return labels, comps, resid
    resid = cache[f"{sv.name}.blocks.{upto}.hook_resid_pre"][0].double()
    if within:  # the stream after a pre-norm self-attention sub-layer (only a pre-norm block's cross-
        # attention norm reads these statistics; a post-norm one reads the stream itself)
        resid = resid + cache[f"{sv.name}.blocks.{upto}.attn.hook_out"][0].double()
    return labels, comps, resid


def _decompose(view, sv, key_sv, cache, layer, head, query, key, score, cross) -> ScoreDecomposition:
    block = sv.stack.blocks[layer]
    attn = block.cross_attn if cross else block.attn
    pre = view.config.norm_placement == "pre"
    q_labels, q_comps, q_resid = _side(view, sv, cache, layer, cross)
    if cross:
        k_labels, k_comps, k_resid = _side(view, key_sv, cache, key_sv.n_layers, False)
        k_labels = [f"enc {label}" for label in k_labels]
    else:
        k_labels, k_comps, k_resid = q_labels, q_comps, q_resid
    q_norm = (block.cross_norm if cross else block.attn_norm) if pre else None
    k_norm = None if cross else q_norm  # cross-attention reads the encoder output as it is
    sides = []
    for which, pos, comps, resid, norm in (("q", query, q_comps, q_resid, q_norm), ("k", key, k_comps, k_resid, k_norm)):
        linear, norm_bias = frozen_norm(norm, resid[pos])
        w, b = _head_projection(attn, which, head)
        w = w.double()
        parts = linear(comps[:, pos]) @ w.T  # (n, d_k)
        const = norm_bias.double() @ w.T + (b.double() if b is not None else 0.0)
        vectors = torch.cat([parts, const[None]])  # (n + 1, d_k)
        if attn.rotary is not None and not cross:
            vectors = attn.rotary(vectors[:, None, None], torch.tensor([pos], device=vectors.device))[:, 0, 0]
        sides.append(vectors)
    terms = sides[0] @ sides[1].T / math.sqrt(attn.head_dim)
    bias_label = "q/k bias"
    return ScoreDecomposition([*q_labels, bias_label], [*k_labels, bias_label], terms, score, layer, head, query, key)
