"""The Q · K · V view: one head's attention for one query token, step by step (``POST /api/qkv``).

Every number is a hook point's (``hook_q``/``k``/``v``/``scores``/``weights``/``z``, via
``attnlab.inspect.run_with_cache``); the one product computed here, q . k before scaling, is reported
next to ``hook_scores`` with the difference, so the page shows the scaling step and proves it matches.
Its page side is ``static/qkv.js``.
"""

from __future__ import annotations

import math

import torch
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from attnlab.web import schemas as s
from attnlab.web.models import forward, get_model, self_attention_stack, tokenize
from attnlab.web.payloads import _check_index, _floats
from attnlab.web.view import Mount


class QKVRequest(s.TextRequest):
    layer: int = s.Layer
    head: int = s.Head
    focus: int = Field(default=0, ge=0, le=s.MAX_TOKENS - 1, description="index of the query token; past the text's tokens: 422")


class QKVResponse(BaseModel):
    model: str
    tokens: list[str]
    layer: int
    head: int
    focus: int
    d_k: int
    sqrt_d_k: float
    query: list[float] = Field(description="hook_q[focus] (hook_rot_q, after rotation, for rotary models)")
    keys: list[list[float]] = Field(description="hook_k, one row per key token (hook_rot_k for rotary models)")
    values: list[list[float]] = Field(description="hook_v, one row per key token")
    dots: list[float] = Field(description="q . k for every key")
    scores: list[float | None] = Field(description="hook_scores: scaled and masked (null = masked out)")
    masked: list[bool]
    weights: list[float] = Field(description="hook_weights: softmax of the scores")
    output: list[float] = Field(description="hook_z[focus]: the weighted sum of the values")
    max_scale_error: float = Field(description="max |q.k / sqrt(d_k) - hook_scores| over visible keys")
    hooks: dict[str, str]


def routes(router: APIRouter, mount: Mount) -> None:
    """``POST /api/qkv``: ``qkv(QKVRequest)`` in a worker."""

    @router.post("/api/qkv", responses=mount.errors(404, 503), name="qkv")
    async def qkv_route(request: Request, req: QKVRequest) -> QKVResponse:
        return await mount.heavy(request, qkv, req)


def qkv(req: QKVRequest) -> QKVResponse:
    """Q, K, V step by step for one query token and head, from hook_q/k/v/scores/weights/z."""
    loaded = get_model(req.model)
    ids, tokens = tokenize(loaded, req.text)
    stack = self_attention_stack(loaded)
    _check_index("layer", req.layer, stack.n_layers)
    # Rotary models: the scores are products of the rotated queries and keys, so those are shown.
    rot = "rot_" if loaded.config.positions == "rotary" else ""
    points = {"q": f"{rot}q", "k": f"{rot}k", **{p: p for p in ("v", "scores", "weights", "z")}}
    names = {p: stack.name(req.layer, f"attn.hook_{point}") for p, point in points.items()}
    _, cache = forward(loaded, ids, names=list(names.values()))
    q_all, k_all, v_all = (cache[names[p]][0] for p in "qkv")  # (heads | kv_heads, seq, d_k)
    n_heads = q_all.shape[0]
    _check_index("head", req.head, n_heads)
    _check_index("focus token", req.focus, len(ids))
    kv_head = req.head // (n_heads // k_all.shape[0])  # grouped-query attention shares K/V heads
    q, keys, values = q_all[req.head, req.focus], k_all[kv_head], v_all[kv_head]
    scores = cache[names["scores"]][0, req.head, req.focus]
    weights = cache[names["weights"]][0, req.head, req.focus]
    d_k = q.shape[-1]
    dots = keys.double() @ q.double()
    masked = torch.isinf(scores) & (scores < 0)
    visible = ~masked
    error = (dots[visible] / math.sqrt(d_k) - scores[visible].double()).abs().max().item()
    return QKVResponse(
        model=loaded.name, tokens=tokens, layer=req.layer, head=req.head, focus=req.focus, d_k=d_k,
        sqrt_d_k=math.sqrt(d_k), query=_floats(q), keys=_floats(keys), values=_floats(values),
        dots=_floats(dots), scores=[None if m else float(v) for v, m in zip(_floats(scores), masked.tolist(), strict=True)],
        masked=masked.tolist(), weights=_floats(weights), output=_floats(cache[names["z"]][0, req.head, req.focus]),
        max_scale_error=error, hooks=names,
    )
