"""The head finder: every self-attention head ranked by how specifically a query token attends to a key token.

A head that sends *every* token to the same word (a name, ``[CLS]``, the first token) also gives this
query a large weight on it: a large weight alone is not a link. The finder therefore ranks heads by
**specificity**: the weight on the key from this query minus the mean weight on the key from the other
*real* tokens that can see it (special tokens the tokenizer adds, such as ``[CLS]``/``[SEP]``/BOS, and
the key itself are left out of that mean). A head is called a link only when its specificity is at or
above ``LINK`` (stated on the page beside the ranking).

Weights are ``hook_weights`` of one forward pass (``attnlab.inspect.run_with_cache``), read per layer
with ``ActivationCache.attention`` so the hook-name scheme lives in one place.
"""

from __future__ import annotations

import torch

from attnlab.tokenizers.base import Tokenizer
from attnlab.web import schemas as s
from attnlab.web.errors import PayloadError
from attnlab.web.models import forward, get_model, self_attention_stack, tokenize

#: A head links the query to the key when its specificity is at least this (weights are in [0, 1]).
LINK = 0.3
#: Below this weight the query barely looks at the key at all.
FAINT = 0.1


def _check(what: str, value: int, count: int) -> None:
    if not 0 <= value < count:
        raise PayloadError(f"{what} token {value} does not exist; the sentence has {count} tokens (0 to {count - 1})")


def special_ids(tokenizer: Tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens (``[CLS]``, ``[SEP]``, ``<|endoftext|>``...); none for a character tokenizer.

    Text is encoded literally (a typed ``[SEP]`` is characters), so a special id in an encoded sentence
    was added by the tokenizer, never read from the text.
    """
    hf = getattr(tokenizer, "hf", None)  # HFJsonTokenizer (WordPiece, GGUF, GPT-2 files)
    if hf is not None:
        return {int(i) for i, t in hf.get_added_tokens_decoder().items() if t.special}
    return {tokenizer.token_id(t) for t in getattr(tokenizer, "special_tokens", ())}  # attnlab's own BPE


def verdict(weight: float, specificity: float) -> str:
    """A plain-language reading of one head's (weight, specificity) pair, against ``LINK``."""
    if weight < FAINT:
        return "barely looks at this key"
    if specificity >= LINK:
        return "a link: the other words look there much less"
    if specificity <= -LINK:
        return "not a link: the other words look there more"
    return "not a link: the other words look there too"


def others_mask(ids: list[int], specials: set[int], query: int, key: int, *, causal: bool) -> torch.Tensor:
    """``(q_len,)`` bool: the other real queries whose weight on ``key`` is averaged (``query``, ``key``,
    special tokens and, in a causal model, queries before the key are left out)."""
    n = len(ids)
    real = torch.tensor([i not in specials for i in ids], dtype=torch.bool)
    sees = torch.arange(n) >= key if causal else torch.ones(n, dtype=torch.bool)
    mask = real & sees
    mask[query] = False
    mask[key] = False
    return mask


def rank_heads(req: s.FinderRequest) -> s.FinderResponse:
    """Every head of the model's self-attention stack, highest specificity first (ties: by layer, head)."""
    loaded = get_model(req.model)
    ids, tokens = tokenize(loaded, req.text)
    _check("query", req.query, len(ids))
    _check("key", req.key, len(ids))
    stack = self_attention_stack(loaded)
    if stack.causal and req.key > req.query:
        raise PayloadError(f"in the causal model {loaded.name!r} query token {req.query} cannot see the later key "
                           f"token {req.key}: choose a key at or before the query")
    _, cache = forward(loaded, ids, names=f"{stack.stack}.blocks.*.attn.hook_weights")
    specials = special_ids(loaded.tokenizer)
    mask = others_mask(ids, specials, req.query, req.key, causal=stack.causal)
    heads = []
    for layer in range(stack.n_layers):
        column = cache.attention(layer, stack=stack.stack)[0, :, :, req.key].double()  # (heads, queries)
        for head in range(column.shape[0]):
            weight = float(column[head, req.query])
            others = float(column[head, mask].mean()) if bool(mask.any()) else 0.0
            spec = weight - others
            heads.append(s.RankedHead(layer=layer, head=head, label=f"L{layer} H{head}", weight=weight, others=others,
                                      specificity=spec, link=spec >= LINK, verdict=verdict(weight, spec)))
    heads.sort(key=lambda h: (-h.specificity, h.layer, h.head))
    return s.FinderResponse(model=loaded.name, tokens=tokens, query=req.query, key=req.key, causal=stack.causal,
                            special=[i for i, t in enumerate(ids) if t in specials], others=int(mask.sum()),
                            threshold=LINK, heads=heads)
