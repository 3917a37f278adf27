"""How specifically a head links a query token to a key token: the one definition the finder and the corpus tools share.

A head that sends *every* token to the same word (a name, ``[CLS]``, the first token) also gives this
query a large weight on it: a large weight alone is not a link. The **specificity** of a (query, key)
pair is the weight on the key from this query minus the mean weight on the key from the other *real*
tokens that can see it: special tokens the tokenizer adds (``[CLS]``/``[SEP]``/BOS), padding, the query
itself and the key itself are left out of that mean, and in a causal model so are the queries before
the key (they cannot see it). With no such other token the mean is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.tokenizers.base import Tokenizer

#: A pair is called a link when its specificity is at least this (weights are in [0, 1]).
LINK = 0.3


def special_ids(tokenizer: Tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens (``[CLS]``, ``[SEP]``, ``<|endoftext|>``...); none for a character tokenizer.

    Text is encoded literally (a typed ``[SEP]`` is characters), so a special id in an encoded sentence
    was added by the tokenizer, never read from the text.
    """
    hf = getattr(tokenizer, "hf", None)  # HFJsonTokenizer (WordPiece, GGUF, GPT-2 files)
    if hf is not None:
        return {int(i) for i, t in hf.get_added_tokens_decoder().items() if t.special}
    return {tokenizer.token_id(t) for t in getattr(tokenizer, "special_tokens", ())}  # attnlab's own BPE


def specificity(weights: Tensor, real: Tensor, *, causal: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Specificity of every (query, key) pair at once (see the module docstring).

    ``weights``: ``(..., n, n)`` attention weights, rows are queries; ``real``: ``(n,)`` bool, False for
    special tokens and padding. Returns ``(specificity, others, count)``: ``specificity = weights - others``
    and ``others`` (the mean over the other real queries), both ``(..., n, n)`` float64, and ``count``
    ``(n, n)`` int64, how many queries that mean is over (0: ``others`` is 0). Raises ``ValueError`` for
    non-square weights or a ``real`` of the wrong length.
    """
    n = weights.shape[-1]
    if weights.dim() < 2 or weights.shape[-2] != n or real.shape != (n,):
        raise ValueError(f"expected (..., n, n) weights and an (n,) mask, got {tuple(weights.shape)} and {tuple(real.shape)}")
    real = real.to(device=weights.device, dtype=torch.bool)
    pos = torch.arange(n, device=weights.device)
    sees = pos[:, None] >= pos[None, :] if causal else torch.ones(n, n, dtype=torch.bool, device=weights.device)
    member = real[:, None] & sees  # member[q', k]: query q' counts towards key k's mean
    eye = torch.eye(n, dtype=torch.bool, device=weights.device)
    key_self = member.diagonal()[None, :] & ~eye  # (q, k): the key itself is a member to remove (q != k)
    w = weights.double()
    total = (w * member).sum(dim=-2, keepdim=True)  # (..., 1, k)
    removed = w * member + torch.diagonal(w, dim1=-2, dim2=-1)[..., None, :] * key_self
    count = member.sum(dim=0, keepdim=True).long() - member.long() - key_self.long()
    others = torch.where(count > 0, (total - removed) / count.clamp_min(1), torch.zeros((), dtype=w.dtype, device=w.device))
    return w - others, others, count
