"""The Architecture view's routes: the diagram's layout (``GET /api/architecture``, ``diagram.architecture``)
and a part's live values (``POST /api/part``, ``payloads.part``, which the tour's widgets use too); a model's
shape (``POST /api/shape``, for the model strip) and one token through a feed-forward network (``POST /api/ffn``),
both ``web/ffn.py``. Its page side is ``static/arch.js`` (and ``static/strip.js``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from attnlab.web import diagram, ffn, payloads
from attnlab.web import schemas as s
from attnlab.web.view import Mount


def routes(router: APIRouter, mount: Mount) -> None:
    """``GET /api/architecture``, ``POST /api/part`` (in a worker) and ``web/ffn.py``'s routes."""
    ffn.routes(router, mount)

    @router.get("/api/architecture", name="architecture")
    async def architecture_route() -> s.ArchitectureResponse:
        return diagram.architecture()

    @router.post("/api/part", responses=mount.errors(404, 503), name="part")
    async def part_route(request: Request, req: s.PartRequest) -> s.PartResponse:
        return await mount.heavy(request, payloads.part, req)
