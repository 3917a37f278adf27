"""The head finder: every self-attention head ranked by how specifically a query token attends to a key token.

A head that sends *every* token to the same word (a name, ``[CLS]``, the first token) also gives this
query a large weight on it: a large weight alone is not a link. The finder therefore ranks heads by
**specificity** (``attnlab.interpret.links.specificity``, the one definition the corpus tools share):
the weight on the key from this query minus the mean weight on the key from the other *real* tokens
that can see it (special tokens the tokenizer adds, such as ``[CLS]``/``[SEP]``/BOS, and the key
itself are left out of that mean). A head is called a link only when its specificity is at or
above ``LINK`` (stated on the page beside the ranking).

Weights are ``hook_weights`` of one forward pass (``attnlab.inspect.run_with_cache``), read per layer
with ``ActivationCache.attention`` so the hook-name scheme lives in one place.
"""

from __future__ import annotations

import torch

from attnlab.catalog import LoadedModel
from attnlab.interpret.links import LINK, special_ids, specificity
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.models import forward, get_model, self_attention_stack, tokenize

#: Below this weight the query barely looks at the key at all.
FAINT = 0.1


def _check(what: str, value: int, count: int) -> None:
    if not 0 <= value < count:
        raise PayloadError(f"{what} token {value} does not exist; the sentence has {count} tokens (0 to {count - 1})")


def verdict(weight: float, specificity: float) -> str:
    """A plain-language reading of one head's (weight, specificity) pair, against ``LINK``."""
    if weight < FAINT:
        return "barely looks at this key"
    if specificity >= LINK:
        return "a link: the other words look there much less"
    if specificity <= -LINK:
        return "not a link: the other words look there more"
    return "not a link: the other words look there too"


def rank_heads(req: s.FinderRequest) -> s.FinderResponse:
    """``POST /api/heads/rank``: ``rank_heads_of`` on the request's model and text (within the web's limits)."""
    loaded = get_model(req.model)
    ids, tokens = tokenize(loaded, req.text)
    return rank_heads_of(loaded, ids, tokens, req.query, req.key)


def rank_heads_of(loaded: LoadedModel, ids: list[int], tokens: list[str], query: int, key: int) -> s.FinderResponse:
    """Every head of ``loaded``'s self-attention stack for the pair ``query`` -> ``key`` (indices into ``ids``),
    highest specificity first (ties: by layer, head). ``attnlab.show.head_finder`` draws the same payload.
    Raises ``PayloadError`` for a token index past the sentence, or a later key in a causal model."""
    _check("query", query, len(ids))
    _check("key", key, len(ids))
    stack = self_attention_stack(loaded)
    if stack.causal and key > query:
        raise PayloadError(f"in the causal model {loaded.name!r} query token {query} cannot see the later key "
                           f"token {key}: choose a key at or before the query")
    _, cache = forward(loaded, ids, names=f"{stack.stack}.blocks.*.attn.hook_weights")
    specials = special_ids(loaded.tokenizer)
    real = torch.tensor([i not in specials for i in ids], dtype=torch.bool)
    heads = []
    for layer in range(stack.n_layers):
        weights = cache.attention(layer, stack=stack.stack)[0].double()  # (heads, queries, keys)
        spec, others, count = specificity(weights, real, causal=stack.causal)
        for head in range(spec.shape[0]):
            weight, sp = float(weights[head, query, key]), float(spec[head, query, key])
            heads.append(s.RankedHead(layer=layer, head=head, label=f"L{layer} H{head}", weight=weight,
                                      others=float(others[head, query, key]), specificity=sp,
                                      link=sp >= LINK, verdict=verdict(weight, sp)))
    heads.sort(key=lambda h: (-h.specificity, h.layer, h.head))
    return s.FinderResponse(model=loaded.name, tokens=tokens, query=query, key=key, causal=stack.causal,
                            special=[i for i, t in enumerate(ids) if t in specials], others=int(count[query, key]),
                            threshold=LINK, heads=heads)
