"""The Attention view's routes: every head's weights for one sentence (``POST /api/attention``; its builder,
``payloads.attention``, also serves the Q · K · V and Order views and the tour) and the head finder
(``POST /api/heads/rank``, ``finder.rank_heads``), and what a head does across a corpus
(``POST /api/heads/contexts``, ``corpus.head_contexts``). Its page side is ``static/attention.js``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from attnlab.web import corpus, finder, payloads
from attnlab.web import schemas as s
from attnlab.web.view import Mount


def routes(router: APIRouter, mount: Mount) -> None:
    """``POST /api/attention``, ``POST /api/heads/rank`` and ``POST /api/heads/contexts``, each in a worker."""

    @router.post("/api/attention", responses=mount.errors(404, 503), name="attention")
    async def attention_route(request: Request, req: s.TextRequest) -> s.AttentionResponse:
        return await mount.heavy(request, payloads.attention, req)

    @router.post("/api/heads/rank", responses=mount.errors(404, 503), name="rank_heads")
    async def rank_heads_route(request: Request, req: s.FinderRequest) -> s.FinderResponse:
        return await mount.heavy(request, finder.rank_heads, req)

    @router.post("/api/heads/contexts", responses=mount.errors(404, 503), name="head_contexts")
    async def head_contexts_route(request: Request, req: corpus.HeadContextsRequest) -> corpus.HeadContextsResponse:
        """What does a head do? Its most specific links over a corpus of sentences and its role scores there."""
        return await mount.heavy(request, corpus.head_contexts, req, long=True)
