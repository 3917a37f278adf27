"""The head finder: every self-attention head ranked by how much a query token attends to a key token.

A head that sends *every* token to the same word (``[SEP]``, the first token) also gives this query a
large weight on it; the ranking therefore carries each head's **specificity**: the weight on the key
from this query minus the mean weight on the key from the other queries that can see it. A head with a
large weight and a large specificity links *this* query to *this* key.

Weights are ``hook_weights`` of one forward pass (``attnlab.inspect.run_with_cache``), read per layer
with ``ActivationCache.attention`` so the hook-name scheme lives in one place.
"""

from __future__ import annotations

import torch

from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.models import forward, get_model, self_attention_stack, tokenize

# Specificity at or above this is "links this query to this key"; at or below -SPECIFIC, "others look here more".
SPECIFIC = 0.1


def _check(what: str, value: int, count: int) -> None:
    if not 0 <= value < count:
        raise PayloadError(f"{what} token {value} does not exist; the sentence has {count} tokens (0 to {count - 1})")


def verdict(weight: float, others: float) -> str:
    """A plain-language reading of one head's (weight, others) pair."""
    if weight < 0.1:
        return "barely looks at this key"
    if weight - others >= SPECIFIC:
        return "a link: the other queries look there much less"
    if others - weight >= SPECIFIC:
        return "not special to this query: others look there more"
    return "every query looks there about as much: a parking place, not a link"


def rank_heads(req: s.FinderRequest) -> s.FinderResponse:
    """Every head of the model's self-attention stack, highest ``weight[query, key]`` first (ties: by layer, head)."""
    loaded = get_model(req.model)
    ids, tokens = tokenize(loaded, req.text)
    _check("query", req.query, len(ids))
    _check("key", req.key, len(ids))
    stack = self_attention_stack(loaded)
    _, cache = forward(loaded, ids, names=f"{stack.stack}.blocks.*.attn.hook_weights")
    if stack.causal and req.key > req.query:
        raise PayloadError(f"in the causal model {loaded.name!r} query token {req.query} cannot see the later key "
                           f"token {req.key}: choose a key at or before the query")
    heads = []
    for layer in range(stack.n_layers):
        column = cache.attention(layer, stack=stack.stack)[0, :, :, req.key].double()  # (heads, queries)
        sees = torch.arange(len(ids)) >= req.key if stack.causal else torch.ones(len(ids), dtype=torch.bool)
        sees[req.query] = False
        for head in range(column.shape[0]):
            weight = float(column[head, req.query])
            others = float(column[head, sees].mean()) if bool(sees.any()) else 0.0
            heads.append(s.RankedHead(layer=layer, head=head, label=f"L{layer} H{head}", weight=weight, others=others,
                                      specificity=weight - others, verdict=verdict(weight, others)))
    heads.sort(key=lambda h: (-h.weight, h.layer, h.head))
    return s.FinderResponse(model=loaded.name, tokens=tokens, query=req.query, key=req.key, causal=stack.causal, heads=heads)
