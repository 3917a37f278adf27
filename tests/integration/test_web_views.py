"""Views that register themselves: a module listed in ``web/registry.py`` (and one in ``static/registry.js``)
is all a view needs; ``create_app`` and the page's router loop over the registries."""

from __future__ import annotations

import re
import threading
import types
from pathlib import Path

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from attnlab.web import registry
from attnlab.web.app import create_app
from attnlab.web.view import Mount

LOCAL = "http://127.0.0.1"
STATIC = Path(registry.__file__).parent / "static"


class _EchoRequest(BaseModel):
    text: str


class _EchoResponse(BaseModel):
    text: str
    thread: str


def _echo(req: _EchoRequest) -> _EchoResponse:
    return _EchoResponse(text=req.text[::-1], thread=threading.current_thread().name)


def _routes(router: APIRouter, mount: Mount) -> None:
    @router.post("/api/echo", responses=mount.errors(404))
    async def echo(request: Request, req: _EchoRequest) -> _EchoResponse:
        return await mount.heavy(request, _echo, req)


def test_a_listed_module_is_a_served_guarded_documented_route(monkeypatch: pytest.MonkeyPatch) -> None:
    view = types.SimpleNamespace(routes=_routes)
    monkeypatch.setattr(registry, "VIEWS", (*registry.VIEWS, view))
    client = TestClient(create_app(), base_url=LOCAL)
    r = client.post("/api/echo", json={"text": "abc"})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "cba"
    assert r.json()["thread"] != threading.current_thread().name  # a worker thread: the app's heavy queue
    assert client.post("/api/echo", content="text=abc", headers={"Content-Type": "text/plain"}).status_code == 415  # the guard
    assert client.post("/api/echo", json={"text": 3}).status_code == 422
    codes = client.get("/openapi.json").json()["paths"]["/api/echo"]["post"]["responses"]
    assert {"200", "400", "403", "404", "413", "415", "422"} <= set(codes)


def test_the_why_view_registers_itself() -> None:
    from attnlab.web import experiments, generation, order, qkv, timeline, translation, why

    assert {why, qkv, order, experiments, timeline, translation, generation} <= set(registry.VIEWS)
    client = TestClient(create_app(), base_url=LOCAL)
    post = client.get("/openapi.json").json()["paths"]["/api/why"]["post"]
    assert post["operationId"] == "why_api_why_post"  # the name it had when app.py declared it
    assert {"404", "503"} <= set(post["responses"])


def _registered_js_views() -> dict[str, str]:
    """id -> module file of the views registry.js imports (the ``wired`` ones are still in index.js)."""
    text = (STATIC / "registry.js").read_text()
    modules = dict(re.findall(r'^import (\w+) from "\./([\w-]+\.js)";', text, flags=re.M))
    listed = re.search(r"export const VIEWS = \[(.*?)\];", text, flags=re.S).group(1)
    out = {}
    for name in re.findall(r"^\s*(\w+),\s*$", listed, flags=re.M):
        view_id = re.search(r'^\s*id: "([\w-]+)"', (STATIC / modules[name]).read_text(), flags=re.M).group(1)
        out[view_id] = modules[name]
    return out


def test_a_registered_view_is_named_nowhere_in_the_page_plumbing() -> None:
    views = _registered_js_views()
    assert set(views) == {"arch", "attention", "qkv", "why", "order", "generate", "timeline", "translate", "experiments"}
    index_js, index_html = (STATIC / "index.js").read_text(), (STATIC / "index.html").read_text()
    for view_id, module in views.items():
        assert f'"{view_id}"' not in index_js and f"./{module}" not in index_js, view_id
        assert f"view-{view_id}" not in index_html and f'data-view="{view_id}"' not in index_html, view_id
    # What is left in the page is plumbing: the tour (the landing page) and Learn, and the router under 300 lines.
    assert re.findall(r'<section id="view-([\w-]+)"', index_html) == ["tour", "learn"]
    assert len(index_js.splitlines()) < 300


def test_the_long_routes_take_the_long_slot_and_the_short_ones_do_not() -> None:
    """Why, generation and translation run seconds on a large model: their views register them as long."""
    app = create_app()
    queue, seen = app.state.heavy, {}
    run = queue.run

    async def recording(request, fn, arg, *, long=False):
        seen[fn.__name__] = long
        return await run(request, fn, arg, long=long)

    queue.run = recording
    client = TestClient(app, base_url=LOCAL)
    for path, body in [("/api/why", {"model": "demo-decoder", "text": "hello", "layer": 0, "head": 0}),
                       ("/api/generate", {"model": "demo-decoder", "text": "hello", "max_new_tokens": 1}),
                       ("/api/translate", {"model": "demo-translator", "text": "hello"}),
                       ("/api/next-token", {"model": "demo-decoder", "text": "hello"}),
                       ("/api/qkv", {"model": "demo-decoder", "text": "hello"}),
                       ("/api/attention", {"model": "demo-decoder", "text": "hello"})]:
        assert client.post(path, json=body).status_code < 500, path
    assert seen == {"why": True, "generate": True, "translate": True, "next_token": False, "qkv": False, "attention": False}
