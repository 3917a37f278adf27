"""The walkthrough's web server: JSON routes over the payload builders, and the static front-end.

Heavy work (forward passes) runs in worker threads, at most ``HEAVY_CONCURRENCY`` at a time, so the
event loop keeps answering; request bodies are capped before they are read; every bad input is a 4xx
answer whose ``detail`` names the problem. The static route serves only the files that exist in
``static/`` when the app starts, looked up by exact name, so no path can reach outside that folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from attnlab.models import ConfigError, InputError
from attnlab.web import content, diagram, experiments, generation, payloads, timeline, translation
from attnlab.web import finder as finder_
from attnlab.web import sampling as sampling_
from attnlab.web import schemas as s
from attnlab.web import tour as tour_
from attnlab.web.errors import NotFoundError, PayloadError
from attnlab.web.models import default_model, load_model, view_defaults
from attnlab.weights import catalog as cat

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 16 * 1024
HEAVY_CONCURRENCY = 2

_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
          ".ico": "image/x-icon"}

T = TypeVar("T")


class BodySizeLimit:
    """ASGI middleware: answer 413 to a request body over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = JSONResponse({"detail": f"request body is larger than the limit of {self.limit} bytes"}, 413)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_big(scope, receive, send)
            return
        # Read the (small) body up front, counting bytes, so an undeclared stream is cut off too; then
        # replay it to the app.
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            more = message.get("more_body", False)
            if seen > self.limit:
                await too_big(scope, receive, send)
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(*, experiments_dir: str | Path | None = None) -> FastAPI:
    """The FastAPI app (models load on first use; see ``attnlab.web.models``).

    ``experiments_dir`` is where the experiments page looks for your ``attnlab experiment`` results
    (default: ``$ATTNLAB_EXPERIMENTS_DIR``, else ``runs/experiments`` in the working directory, which is
    where the command writes); the reference results shipped with attnlab are shown beside them.
    """
    runs_dir = Path(experiments_dir).resolve() if experiments_dir is not None else experiments.default_runs_dir()
    app = FastAPI(title="attnlab walkthrough", version="0.1.0",
                  description="Every number comes from the model's forward pass (attnlab.inspect.run_with_cache).")
    app.add_middleware(BodySizeLimit)
    static_files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _TYPES}
    limiter: dict[str, anyio.CapacityLimiter] = {}

    async def heavy(fn: Callable[[Any], T], arg: Any) -> T:
        if "heavy" not in limiter:
            limiter["heavy"] = anyio.CapacityLimiter(HEAVY_CONCURRENCY)
        return await anyio.to_thread.run_sync(fn, arg, limiter=limiter["heavy"])

    @app.exception_handler(PayloadError)
    async def _payload_error(_: Request, exc: PayloadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)

    @app.exception_handler(InputError)
    @app.exception_handler(ConfigError)
    async def _input_error(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(static_files["index.html"], media_type=_TYPES[".html"])

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        path = static_files.get(name)
        if path is None:
            raise NotFoundError(f"no static file {name!r}")
        return FileResponse(path, media_type=_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})

    @app.get("/api/models")
    async def models() -> s.ModelsResponse:
        default, note = default_model()
        rows = [s.ModelSummary(name=i.name, family=i.family, description=i.description, n_params=i.n_params,
                               source=i.source, licence=i.licence, available=i.available, install_hint=i.install_hint,
                               timeline=timeline.has_timeline(i.name), loaded=cat.is_loaded(i.name))
                for i in cat.catalog()]
        return s.ModelsResponse(models=rows, default=default, note=note, views=view_defaults())

    @app.post("/api/models/{name}/load")
    async def load(name: str) -> s.ModelLoadResponse:
        """Load a catalogue model in a worker thread (the page shows a notice meanwhile); instant when loaded."""
        loaded, seconds = await anyio.to_thread.run_sync(load_model, name)
        return s.ModelLoadResponse(name=loaded.name, family=loaded.config.family, loaded=True, seconds=seconds)

    @app.get("/api/architecture")
    async def architecture() -> s.ArchitectureResponse:
        return diagram.architecture()

    @app.get("/api/content")
    async def content_index() -> s.ContentIndex:
        return content.index()

    @app.get("/api/content/{slug}")
    async def content_page(slug: str) -> s.ContentPage:
        return content.page(slug)

    @app.post("/api/attention")
    async def attention(req: s.TextRequest) -> s.AttentionResponse:
        return await heavy(payloads.attention, req)

    @app.get("/api/tour")
    async def tour_steps() -> s.TourResponse:
        return await anyio.to_thread.run_sync(tour_.tour)

    @app.post("/api/heads/rank")
    async def rank_heads(req: s.FinderRequest) -> s.FinderResponse:
        return await heavy(finder_.rank_heads, req)

    @app.post("/api/next-token")
    async def next_token(req: s.NextTokenRequest) -> s.NextTokenResponse:
        return await heavy(sampling_.next_token, req)

    @app.post("/api/qkv")
    async def qkv(req: s.QKVRequest) -> s.QKVResponse:
        return await heavy(payloads.qkv, req)

    @app.post("/api/part")
    async def part(req: s.PartRequest) -> s.PartResponse:
        return await heavy(payloads.part, req)

    @app.post("/api/positions")
    async def positions(req: s.OrderRequest) -> s.PositionsResponse:
        return await heavy(payloads.positions, req)

    @app.post("/api/generate")
    async def generate(req: s.GenerateRequest) -> s.GenerateResponse:
        return await heavy(generation.generate, req)

    @app.get("/api/timeline")
    async def timeline_index(model: str = "shakespeare-char") -> s.TimelineResponse:
        return await heavy(timeline.timeline, model)

    @app.post("/api/timeline/attention")
    async def timeline_attention(req: s.TimelineAttentionRequest) -> s.TimelineAttentionResponse:
        return await heavy(timeline.attention_at, req)

    @app.post("/api/translate")
    async def translate(req: s.TranslateRequest) -> s.TranslateResponse:
        return await heavy(translation.translate, req)

    @app.get("/api/experiments")
    async def experiments_index() -> s.ExperimentsResponse:
        return await anyio.to_thread.run_sync(experiments.experiments, runs_dir)

    @app.get("/api/experiments/{source}/{run:path}/{name}", include_in_schema=False)
    async def experiment_file(source: str, run: str, name: str) -> Response:
        path = await anyio.to_thread.run_sync(experiments.file_path, runs_dir, source, run, name)
        kind = _TYPES[".png"] if path.suffix == ".png" else "application/json"
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "no-cache"})

    return app
