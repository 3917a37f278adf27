"""The walkthrough's web server: JSON routes over the payload builders, and the static front-end.

Heavy work (forward passes) runs in worker threads, at most ``HEAVY_CONCURRENCY`` at a time, so the
event loop keeps answering, and at most one of them a long one (Why, generation, translation), so the
short views always have a slot; at most ``HEAVY_QUEUE`` more wait (one more is a 503 with
``Retry-After``), and a waiting request whose client disconnected is dropped (``attnlab.web.heavy``).
The static route serves only the files that exist in ``static/`` when the app starts, looked up by
exact name, so no path can reach outside that folder.

**No input is a 5xx, and the schema says what the server does.** Three places, generic for any
route, keep that true (a new route follows the same pattern and needs nothing else):

- ``attnlab.web.guard.Guard`` (middleware) checks every request before a route sees it: the ``Host``
  (400), a cross-site state-changing request (403), a non-JSON POST (415, ``require_json``), the body size (413,
  ``MAX_BODY_BYTES``), and standard JSON (422: no ``NaN``/``Infinity``/``1e309``, no lone surrogates);
  it adds the security headers (CSP, nosniff, no framing) to every answer.
- Request bodies are ``schemas.Request`` models: strict types, unknown keys refused, and every limit
  the server enforces written in the schema (lengths, ranges, ``seed < 2**64``). What depends on the
  chosen model (its layers, heads, token limit, vocabulary) is a 422 naming the limit.
- Errors become answers in one place (``_install_error_handlers``): ``PayloadError`` subclasses carry
  their status (``attnlab.web.errors``), the library's ``InputError``, ``ConfigError`` and
  ``GenerationError`` are 422, and a schema violation is a 422 whose ``detail`` is one line and
  whose ``errors`` list the fields; the offending input is never echoed, so nothing in it can fail
  to encode. Every answer's body is ``schemas.ErrorBody``, and ``_document_errors`` writes each
  route's possible codes (``ERRORS``) into the OpenAPI schema: 400, 403, 413, 415 and 422 for every
  route they apply to, plus the ``responses=errors(404, 503)`` a route declares for what it looks up.

**The views register themselves.** Each walkthrough view's module (listed in ``registry.VIEWS``) adds
its own routes with ``routes(router, mount)``; ``create_app`` lends it the heavy queue, the error codes
and the experiments folder (``view.Mount``) and loops over the list. The routes left here are the
page's plumbing: the models, the tour, the explanations and the static files.

A test runs ``schemathesis`` against the app (tests/integration/test_web_schema.py) to hold all this.
Tests talk to the app as ``TestClient(app, base_url="http://127.0.0.1")``: the default
``testserver`` host is refused like any other foreign name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.utils import create_model_field
from starlette.exceptions import HTTPException

from attnlab import catalog as cat
from attnlab.generate import GenerationError
from attnlab.models import ConfigError, InputError
from attnlab.web import ablation as ablation_
from attnlab.web import content, experiments, registry, timeline
from attnlab.web import models as web_models
from attnlab.web import schemas as s
from attnlab.web import tour as tour_
from attnlab.web.errors import NotFoundError, PayloadError
from attnlab.web.guard import Guard, require_json
from attnlab.web.heavy import Abandoned, HeavyQueue, QueueFullError
from attnlab.web.models import default_model, load_model, view_defaults
from attnlab.web.models import device as serve_device
from attnlab.web.view import Mount

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 16 * 1024
HEAVY_CONCURRENCY = 2
HEAVY_QUEUE = 32  # requests waiting for a heavy slot (30 open tabs fit); one more is a 503 with Retry-After

_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
          ".ico": "image/x-icon"}

T = TypeVar("T")

# Every error status a route can answer, with what it means there (the OpenAPI schema shows these).
ERRORS = {
    400: "the Host header does not name this server (127.0.0.1, localhost, [::1] or an --allow-host name)",
    403: "a state-changing request from another site (Origin or Sec-Fetch-Site)",
    404: "no such model, page or file (`detail` lists what exists)",
    413: f"the request body is over {MAX_BODY_BYTES} bytes",
    415: "a POST whose body is not Content-Type: application/json",
    422: ("the body is not standard JSON, breaks the schema (`errors` lists the fields), or asks for what the "
          "chosen model does not have: a layer, head or token past its size, text over its token limit or "
          "with characters its tokenizer cannot encode, a model of the wrong family"),
    503: ("the model is known but its files are not installed (`detail` says what to install), or the server is "
          f"busy: {HEAVY_QUEUE} requests already wait for a worker (the `Retry-After` header says when to try again)"),
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``codes``, each with the ``ErrorBody`` model and its meaning."""
    return {code: {"model": s.ErrorBody, "description": ERRORS[code]} for code in codes}


def _document_errors(app: FastAPI) -> None:
    """Add to every route the codes the guard and the validation answer for it (400 always; 403 for a
    state-changing method; 413, 415 and 422 when it reads a body; 422 when it takes parameters)."""
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        codes = [400]
        if set(route.methods) - {"GET", "HEAD", "OPTIONS"}:
            codes.append(403)
        if route.body_field is not None:
            codes += [413, 415, 422]
        elif route.dependant.query_params or route.dependant.path_params:
            codes.append(422)
        for code, spec in errors(*codes).items():
            if code not in route.responses:  # what FastAPI does with a route's ``responses=`` argument
                route.responses[code] = spec
                route.response_fields[code] = create_model_field(
                    name=f"Response_{code}_{route.unique_id}", type_=s.ErrorBody, mode="serialization")


def _error(status: int, detail: str, field_errors: list[dict[str, Any]] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = s.ErrorBody(detail=detail, errors=field_errors or []).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    """Each error becomes an ``ErrorBody`` answer with a one-line ``detail`` (see the module docstring)."""

    @app.exception_handler(PayloadError)
    async def _payload_error(_: Request, exc: PayloadError) -> JSONResponse:
        return _error(exc.status_code, str(exc))

    @app.exception_handler(InputError)
    @app.exception_handler(ConfigError)
    @app.exception_handler(GenerationError)
    async def _library_error(_: Request, exc: Exception) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The input itself (``input``, ``ctx``) is left out: it may be anything, even unencodable.
        rows = [{"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                 "type": str(e.get("type", ""))} for e in exc.errors()]
        where = lambda row: ".".join(str(p) for p in row["loc"][1:]) or str(row["loc"][0] if row["loc"] else "request")  # noqa: E731
        return _error(422, "; ".join(f"{where(r)}: {r['msg']}" for r in rows) or "invalid request", rows)

    @app.exception_handler(QueueFullError)
    async def _busy(_: Request, exc: QueueFullError) -> JSONResponse:
        return _error(503, str(exc), headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Abandoned)
    async def _abandoned(_: Request, exc: Abandoned) -> JSONResponse:  # nobody reads it: the client has gone
        return _error(499, str(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:  # unknown path (404), method (405)...
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)


def create_app(*, experiments_dir: str | Path | None = None, allowed_hosts: tuple[str, ...] | list[str] = (),
               max_large_models: int | None = None, device: str | torch.device = "cpu") -> FastAPI:
    """The FastAPI app (models load on first use; see ``attnlab.web.models``).

    ``experiments_dir`` is where the experiments page looks for your ``attnlab experiment`` results
    (default: ``$ATTNLAB_EXPERIMENTS_DIR``, else ``runs/experiments`` in the working directory, which is
    where the command writes); the reference results shipped with attnlab are shown beside them.
    ``allowed_hosts``: ``Host`` names served besides 127.0.0.1, localhost and ::1 (``"*"``: any).
    ``max_large_models``: how many large models stay loaded at once (``attnlab.web.models.MAX_LARGE_MODELS``
    by default); loading one more unloads the least recently used.
    ``device``: where every model runs (``attnlab.web.models.set_device``): ``cpu`` (default: the
    walkthrough's numbers are checked against float32 CPU references, and its models are small),
    ``auto``, ``cuda``, ``cuda:N`` or ``mps``; one device per process, the last app built sets it.
    Raises ``attnlab.device.DeviceError`` for a device this machine lacks.
    """
    web_models.set_device(device)
    runs_dir = Path(experiments_dir).resolve() if experiments_dir is not None else experiments.default_runs_dir()
    if max_large_models is not None:
        web_models.set_max_large_models(max_large_models)
    app = FastAPI(title="attnlab walkthrough", version="0.1.0", docs_url=None, redoc_url=None,
                  dependencies=[Depends(require_json)],
                  description="Every number comes from the model's forward pass (attnlab.inspect.run_with_cache). "
                              "Error answers: " + "; ".join(f"{k}: {v}" for k, v in ERRORS.items()))
    app.add_middleware(Guard, limit=MAX_BODY_BYTES, allowed_hosts=tuple(allowed_hosts))
    _install_error_handlers(app)
    static_files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _TYPES}
    app.state.heavy = queue = HeavyQueue(HEAVY_CONCURRENCY, HEAVY_QUEUE)

    async def heavy(request: Request, fn: Callable[[Any], T], arg: Any, *, long: bool = False) -> T:
        """``long``: seconds on a large model (Why, generation, translation): at most one such runs at a time."""
        return await queue.run(request, fn, arg, long=long)

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
                               timeline=timeline.has_timeline(i.name), loaded=cat.is_loaded(i.name),
                               token_kind=i.token_kind, preferred_view=i.preferred_view, demo=i.demo)
                for i in cat.catalog()]
        return s.ModelsResponse(models=rows, default=default, note=note, views=view_defaults(), device=str(serve_device()))

    @app.post("/api/models/{name}/load", responses=errors(404, 503))
    async def load(name: str, _body: s.EmptyRequest) -> s.ModelLoadResponse:
        """Load a catalogue model in a worker thread (the page shows a notice meanwhile); instant when loaded.

        The body is ``{}``: a JSON body is what keeps a plain cross-site form from calling this. At most
        ``MAX_LARGE_MODELS`` large models stay loaded: the least recently used are unloaded (listed)."""
        loaded, seconds, unloaded = await anyio.to_thread.run_sync(load_model, name)
        return s.ModelLoadResponse(name=loaded.name, family=loaded.config.family, loaded=True, seconds=seconds,
                                   unloaded=unloaded)

    @app.delete("/api/models/{name}", responses=errors(404))
    async def unload(name: str) -> s.ModelUnloadResponse:
        """Unload a model to free its memory (it loads again when next used)."""
        was_loaded = await anyio.to_thread.run_sync(web_models.unload_model, name)
        return s.ModelUnloadResponse(name=name, loaded=False, was_loaded=was_loaded)

    @app.get("/api/content")
    async def content_index() -> s.ContentIndex:
        return content.index(tour_.learn_order())

    @app.get("/api/content/{slug}", responses=errors(404))
    async def content_page(slug: str) -> s.ContentPage:
        return content.page(slug)

    @app.get("/api/tour")
    async def tour_steps() -> s.TourResponse:
        return await anyio.to_thread.run_sync(tour_.tour)

    @app.get("/api/tour/{n}", responses=errors(404, 503))
    async def tour_step(request: Request, n: int) -> s.TourStep:
        """Step ``n`` with the numbers and comparisons of its text computed from its widget's payload."""
        return await heavy(request, lambda k: tour_.step(k, runs_dir), n)

    @app.post("/api/ablation", responses=errors(404, 503))
    async def ablation(request: Request, req: ablation_.AblationRequest) -> ablation_.AblationResponse:
        """One head removed and every head removed in turn (attnlab.interpret): the tour's "remove a head"."""
        return await heavy(request, ablation_.ablation, req)

    mount = Mount(heavy=heavy, errors=errors, runs_dir=runs_dir)
    for view in registry.VIEWS:  # the views that register themselves (web/registry.py)
        view.routes(app.router, mount)
    _document_errors(app)
    return app
