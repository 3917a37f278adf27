"""The Attention view's routes: every head's weights for one sentence (``POST /api/attention``; its builder,
``payloads.attention``, also serves the Q · K · V and Order views and the tour) and the head finder
(``POST /api/heads/rank``, ``finder.rank_heads``). Its page side is ``static/attention.js``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from attnlab.web import finder, payloads
from attnlab.web import schemas as s
from attnlab.web.view import Mount


def routes(router: APIRouter, mount: Mount) -> None:
    """``POST /api/attention`` and ``POST /api/heads/rank``, each in a worker."""

    @router.post("/api/attention", responses=mount.errors(404, 503), name="attention")
    async def attention_route(request: Request, req: s.TextRequest) -> s.AttentionResponse:
        return await mount.heavy(request, payloads.attention, req)

    @router.post("/api/heads/rank", responses=mount.errors(404, 503), name="rank_heads")
    async def rank_heads_route(request: Request, req: s.FinderRequest) -> s.FinderResponse:
        return await mount.heavy(request, finder.rank_heads, req)
