"""What a walkthrough view's module gets from ``create_app`` to add its routes (see ``web/registry.py``).

A view module (e.g. ``web/why.py``) holds its schemas, its payload builder and a
``routes(router: APIRouter, mount: Mount) -> None`` that adds its routes. The builder takes a
``catalog.LoadedModel`` (``why_of(loaded, req)``) and the route's function only looks the request's
model name up (``get_model``), so ``attnlab.show`` (a floor above) draws the same payload in a notebook.
``create_app`` calls ``routes`` once for every module listed in ``registry.VIEWS``. The guard, the error answers and the OpenAPI error codes
are the app's, generic for any route (``attnlab.web.app``), so a view declares only what it looks up
(``responses=mount.errors(404, 503)``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fastapi import APIRouter, Request

T = TypeVar("T")


class Heavy(Protocol):
    """Run ``fn(arg)`` in a worker thread, queued (``attnlab.web.heavy``); ``long=True`` for a route that
    takes seconds on a large model (at most one such runs at a time, so the short views keep a slot)."""

    def __call__(self, request: Request, fn: Callable[[Any], T], arg: Any, *, long: bool = False) -> Awaitable[T]: ...


@dataclass(frozen=True)
class Mount:
    """What ``create_app`` lends a view's ``routes``.

    ``heavy``: runs a payload builder off the event loop (see ``Heavy``). ``errors(*codes)``: the OpenAPI
    ``responses`` of the error statuses a route declares (the app's ``ERRORS``). ``runs_dir``: where the
    experiments page reads ``attnlab experiment`` results.
    """

    heavy: Heavy
    errors: Callable[..., dict[int | str, dict[str, Any]]]
    runs_dir: Path


class ViewModule(Protocol):
    """A module listed in ``registry.VIEWS``."""

    def routes(self, router: APIRouter, mount: Mount) -> None: ...
