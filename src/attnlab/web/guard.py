"""The checks every request passes before a route sees it, and the headers every answer carries.

``attnlab serve`` is a local server: any web page the user opens can send requests to it, and a
page on a DNS-rebinding domain can even read the answers. As Jupyter does, the guard therefore

0. refuses a request that repeats a header the checks below (or the app) read: ``Host``, ``Origin``,
   ``Referer``, ``Content-Type``, ``Content-Length``, ``Transfer-Encoding``, ``Sec-Fetch-Site``: **400**
   (with two ``Origin`` headers the guard and FastAPI could each read a different one);
1. answers only requests whose ``Host`` names this machine (``127.0.0.1``, ``localhost``, ``[::1]``,
   with any port) or a name on the allow-list (``attnlab serve --allow-host NAME``): **400** otherwise;
2. refuses a state-changing request (any method but GET, HEAD, OPTIONS) that a browser marks as
   coming from another site (an ``Origin`` that is not this server's, ``Sec-Fetch-Site: cross-site``
   or ``same-site``): **403**; and (``require_json``, once a route matched) a POST whose body is not
   ``Content-Type: application/json``, the only kind a plain HTML form cannot send: **415**;
3. reads the body before the app does, counting bytes: over ``limit`` bytes is a **413**;
4. checks a JSON body is standard JSON (RFC 8259) in UTF-8, nested at most ``MAX_DEPTH`` levels
   (counted before parsing, so no parser recurses on it): no ``NaN``, ``Infinity`` or numbers too large
   for a float (``1e309``), no lone UTF-16 surrogates (``"\\ud800"``) in any string: **422**;
5. adds security headers to every answer: ``X-Content-Type-Options: nosniff``, a
   ``Content-Security-Policy`` that allows only this server's own scripts, styles and images (the
   front-end has no inline script or style and loads nothing from elsewhere), and
   ``X-Frame-Options: DENY`` / ``frame-ancestors 'none'`` so that no other page can frame it; and an
   error that escapes the app is answered here, a **500** with the same headers and body shape (then
   re-raised, so the server's log shows it).

Every refusal is a JSON body ``{"detail": "...", "errors": []}`` (``schemas.ErrorBody``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
MAX_DEPTH = 32  # JSON nesting; the app's bodies nest 2 levels, Python's parsers recurse near 1,000
SINGLE_HEADERS = ("host", "origin", "referer", "content-type", "content-length", "transfer-encoding", "sec-fetch-site")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_TOKEN = re.compile(rb'[\\"\[\]{}]')
_PORT = re.compile(r"^(?::\d{1,5})?$")


class RequestRefused(Exception):
    """A request the guard answers itself: ``status`` and a one-line ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def host_name(value: str) -> str | None:
    """The name in a ``Host`` header without its port (``[::1]:8000`` -> ``::1``); None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, port = (value[1:end], value[end + 1:]) if end > 0 else ("", "x")
    else:
        name, colon, port = value.partition(":")
        port = colon + port
    return name if name and _PORT.match(port) else None


def nesting_depth(body: bytes) -> int:
    """How deeply ``[`` and ``{`` nest in ``body`` outside JSON strings (no recursion: any input is fine)."""
    depth = deepest = 0
    in_string, escaped_at = False, -1
    for found in _JSON_TOKEN.finditer(body):  # one pass over backslashes, quotes and brackets
        at, byte = found.start(), body[found.start()]
        if at == escaped_at:
            continue
        if in_string:
            if byte == 0x5C:  # backslash: the next byte is escaped
                escaped_at = at + 1
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def check_json(body: bytes) -> None:
    """Raise ``RequestRefused(422)`` unless ``body`` is standard JSON in UTF-8, nested at most
    ``MAX_DEPTH`` levels, with only finite numbers and well-formed strings (Python's ``json`` alone
    accepts ``NaN``, ``Infinity`` and ``"\\ud800"``, and raises ``RecursionError`` on deep nesting)."""
    depth = nesting_depth(body)
    if depth > MAX_DEPTH:
        raise RequestRefused(422, f"the request body nests {depth} levels deep; the limit is {MAX_DEPTH}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestRefused(422, f"the request body is not UTF-8 (byte {exc.start})") from None

    def constant(name: str) -> float:
        raise RequestRefused(422, f"the request body holds {name}, which is not a JSON number: send a finite number")

    def number(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise RequestRefused(422, f"the number {literal[:40]} in the request body is too large for a float")
        return value

    try:
        data = json.loads(text, parse_constant=constant, parse_float=number)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:  # ValueError: an integer over the digit limit
        raise RequestRefused(422, f"the request body is not valid JSON: {str(exc)[:200]}") from None
    for string in _strings(data):
        found = _SURROGATE.search(string)
        if found:
            raise RequestRefused(
                422, f"the request body holds a lone UTF-16 surrogate (\\u{ord(found[0]):04x}), which is not a character")


def _strings(data: Any) -> Iterable[str]:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class Guard:
    """ASGI middleware applying the checks of this module's docstring, in that order."""

    def __init__(self, app: Any, *, limit: int, allowed_hosts: Iterable[str] = ()) -> None:
        self.app, self.limit = app, limit
        self.allowed = {h.lower().strip("[]") for h in (*LOCAL_HOSTS, *allowed_hosts)}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *((k, v) for k, v in SECURITY_HEADERS if k not in present)]}
            await send(message)

        try:
            await self._guarded(scope, receive, send_with_headers)
        except Exception:
            if not started:
                await _refuse(RequestRefused(500, "the server failed on this request (its log says why)"),
                              send_with_headers)
            raise

    async def _guarded(self, scope: dict, receive: Callable, send: Callable) -> None:
        try:
            headers = self._headers(scope)
            self._check_request(scope, headers)
            body = await self._read_body(receive, headers)
            if body and _json_like(_media_type(headers)):
                check_json(body)
        except RequestRefused as refused:
            await _refuse(refused, send)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _headers(scope: dict) -> dict[str, str]:
        """The request's headers by lower-case name; ``RequestRefused(400)`` when one of ``SINGLE_HEADERS``
        comes more than once (which copy counts would depend on who reads it)."""
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", []):
            name = key.decode("latin-1").lower()
            if name in headers and name in SINGLE_HEADERS:
                raise RequestRefused(400, f"the request repeats the {name!r} header; send it once")
            headers[name] = value.decode("latin-1")
        return headers

    def _check_request(self, scope: dict, headers: dict[str, str]) -> None:
        host = headers.get("host", "")
        name = host_name(host)
        if name is None or (name not in self.allowed and "*" not in self.allowed):
            # The answer may be read by the very page refused (DNS rebinding): it names no allow-listed host.
            raise RequestRefused(400, f"this server does not answer to the host {host[:100]!r}; it answers to "
                                      "127.0.0.1, localhost, [::1] and names given with `attnlab serve --allow-host NAME`")
        if scope["method"] in SAFE_METHODS:
            return
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            raise RequestRefused(403, f"a {scope['method']} from another site ({origin[:100]!r}) is refused")
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise RequestRefused(403, f"a {scope['method']} from another site is refused")

    async def _read_body(self, receive: Callable, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise RequestRefused(413, f"request body is larger than the limit of {self.limit} bytes")
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:  # counted as it streams, so a body without a Content-Length is cut off too
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            more = message.get("more_body", False)
            if seen > self.limit:
                raise RequestRefused(413, f"request body is larger than the limit of {self.limit} bytes")
        return b"".join(chunks)


def require_json(request: Request) -> None:
    """App-wide dependency (it runs once a route matched, so a wrong method is still a 405): a POST,
    PUT or PATCH must carry ``Content-Type: application/json``, which a plain HTML form cannot send."""
    if request.method in ("POST", "PUT", "PATCH") and _media_type(dict(request.headers)) != "application/json":
        raise HTTPException(415, f"a {request.method} needs a JSON body (Content-Type: application/json)")


def _media_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def _json_like(media_type: str) -> bool:
    """Whether FastAPI would parse a body of this type as JSON (``application/json``, ``application/*+json``)."""
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


async def _refuse(refused: RequestRefused, send: Callable) -> None:
    body = json.dumps({"detail": refused.detail, "errors": []}).encode()
    await send({"type": "http.response.start", "status": refused.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
