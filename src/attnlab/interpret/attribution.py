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
    decoder's components, cross-attention heads included; the encoder acts through them). Defined for
    pre-norm models whose read-out is linear after the final norm: decoders and pre-norm
    encoder-decoders. An encoder's MLM head has a non-linearity after the norm and a post-norm model's
    stream is not a sum: both are ``ValueError``, as is a batch of more than one.
    """
    view = ModelView(model)
    inputs = _single(view, inputs)
    if view.family == "encoder" or not view.has_vocab_head:
        raise ValueError("direct logit attribution needs a linear read-out after the final norm (decoder or "
                         "encoder-decoder); an encoder's MLM head is non-linear")
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
    w_u = model.lm_head.weight[token].detach().double()
    b_u = model.lm_head.bias[token].item() if model.lm_head.bias is not None else 0.0
    contributions = linear(comps[:, 0, position].double()) @ w_u
    bias_term = float(bias.double() @ w_u) + b_u
    return DirectLogitAttribution(labels, contributions, float(logits[0, position, token]), bias_term, token, position)


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
) -> ScoreDecomposition:
    """Why does position ``query`` attend to position ``key`` in head ``(layer, head)``?

    The score ``q . k / sqrt(d_k)`` is bilinear in the query-side and key-side inputs. Each is the
    residual stream entering the block (a sum of components: embeddings, positions, every earlier head
    and feed-forward block, biases; see ``residual_components``) through the attention norm with its
    scale frozen at the recorded value and the head's projection (and rotation, for rotary models:
    rotary positions act here, not as a component). So the score is a sum over (query component, key
    component) pairs, and the pairs add up to the score ``run_with_cache`` records (1e-5).

    ``inputs``: one sequence (batch 1); ``stack``: ``encoder`` or ``decoder`` (default: the output
    stack). Self-attention only. ``ValueError`` for a post-norm model or a masked (query, key) pair;
    ``IndexError`` for positions, layers or heads out of range.
    """
    view = ModelView(model)
    inputs = _single(view, inputs)
    sv = view.stack(stack)
    view.check_head(sv, layer, head)
    seq = view.ids(inputs, sv.name).shape[1]
    if not (0 <= query < seq and 0 <= key < seq):
        raise IndexError(f"query {query} and key {key} must lie in [0, {seq})")
    score_name = f"{sv.name}.blocks.{layer}.attn.hook_scores"
    resid_name = f"{sv.name}.blocks.{layer}.hook_resid_pre"
    _, cache = view.cache(inputs, [*component_names(view, sv, layer), score_name, resid_name])
    score = float(cache[score_name][0, head, query, key])
    if math.isinf(score):
        raise ValueError(f"query {query} may not attend to key {key} (masked); its score is -inf")
    with torch.no_grad():
        return _decompose(view, sv, cache, layer, head, query, key, score, resid_name)


def _decompose(view, sv, cache, layer, head, query, key, score, resid_name) -> ScoreDecomposition:
    labels, comps = residual_components(view, sv, cache, layer)
    comps = comps[:, 0].double()  # (n, seq, d)
    block = sv.stack.blocks[layer]
    attn = block.attn
    resid = cache[resid_name][0].double()  # (seq, d)
    sides = []
    for which, pos in (("q", query), ("k", key)):
        linear, norm_bias = frozen_norm(block.attn_norm, resid[pos])
        w, b = _head_projection(attn, which, head)
        w = w.double()
        parts = linear(comps[:, pos]) @ w.T  # (n, d_k)
        const = norm_bias.double() @ w.T + (b.double() if b is not None else 0.0)
        vectors = torch.cat([parts, const[None]])  # (n + 1, d_k)
        if attn.rotary is not None:
            vectors = attn.rotary(vectors[:, None, None], torch.tensor([pos], device=vectors.device))[:, 0, 0]
        sides.append(vectors)
    terms = sides[0] @ sides[1].T / math.sqrt(attn.head_dim)
    labels = [*labels, "q/k bias"]
    return ScoreDecomposition(labels, list(labels), terms, score, layer, head, query, key)
