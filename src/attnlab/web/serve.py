"""``attnlab serve``: run the walkthrough with uvicorn, on 127.0.0.1 unless told otherwise.

The server answers only to its own names (``attnlab.web.guard``): 127.0.0.1, localhost and [::1],
the ``--host`` it binds when that is a name or address rather than a wildcard, and each
``--allow-host NAME``. Serving on another interface (``--host 0.0.0.0``) therefore also needs the
name the other machines use, e.g. ``--allow-host mybox.local``.

The listening socket is bound before anything is printed (``bind``), so a busy port is one error
line (exit status 2) and never a URL followed by uvicorn's error.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import tempfile
import threading
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import typer
import uvicorn

from attnlab.web.app import create_app
from attnlab.web.guard import host_name
from attnlab.web.models import default_model

WILDCARDS = ("0.0.0.0", "::", "")


class ServeError(OSError):
    """The server cannot start (its port is taken, its address is not this machine's); a usage error."""

    exit_code = 2


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: a free one), IPv4 or IPv6 as ``host`` is.

    Raises ``ServeError`` naming the port when it is in use or the address cannot be bound."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                            flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ServeError(f"cannot serve on host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart needs no TIME_WAIT pause
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on {host} is already in use (another server?); stop it or choose "
                             "another with --port") from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn from a background thread of this process (tests, benchmarks), on
    loopback and a free port by default; yields the base URL and stops the server on exit."""
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread stopped before it started")
            time.sleep(0.02)
        name = f"[{host}]" if ":" in host else host
        yield f"http://{name}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def allowed_hosts(host: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``Host`` names served besides the loopback ones: the bound ``host`` unless it is a wildcard,
    then ``extra`` (``--allow-host``); a name with a port or a scheme is an error naming it."""
    names = [] if host in WILDCARDS else [host]
    for name in extra:
        bare = host_name(name)
        if bare is None or "/" in bare or bare != name.strip().lower().strip("[]"):
            raise ValueError(f"--allow-host takes a host name or address (IPv6 in brackets) without a scheme or "
                             f"port, got {name!r}")
        names.append(bare)
    return names


def run(*, host: str = "127.0.0.1", port: int = 8000, open_browser: bool = False, demo: bool = False,
        threads: int = 1, allow_host: list[str] | tuple[str, ...] = (), max_models: int | None = None,
        device: str | torch.device = "cpu") -> None:
    """Serve until Ctrl+C.

    ``allow_host``: more ``Host`` names to answer to (see the module docstring); ``max_models``: how
    many large models stay loaded at once (``attnlab.web.models.MAX_LARGE_MODELS`` by default);
    ``device``: where the models run (``create_app``; a device this machine lacks raises
    ``attnlab.device.DeviceError``). A port in use raises ``ServeError`` before anything is printed.

    ``threads`` is PyTorch's intra-op thread count. The app runs up to two forward passes at once, each
    small (one sentence), so one thread each is the default: on a busy 2-core machine, two spinning
    OpenMP threads per request made a 12-token MiniLM request ~20x slower (2.2 s vs 0.11 s, measured).
    """
    try:
        hosts = allowed_hosts(host, allow_host)
        app = create_app(allowed_hosts=hosts, max_large_models=max_models, device=device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    sock = bind(host, port)  # ServeError (one line, exit status 2) before any URL is printed
    torch.set_num_threads(max(1, threads))
    if demo:
        from attnlab.web.demo import register_demo_models

        register_demo_models(Path(tempfile.mkdtemp(prefix="attnlab-demo-")))
    default, note = default_model()
    if note:
        typer.echo(f"note: {note}", err=True)
    if default is None and not demo:
        typer.echo("hint: `attnlab serve --demo` offers tiny random-weight models to try the app", err=True)
    url = f"http://{host}:{port}/"
    typer.echo(f"attnlab walkthrough on {url} (default model: {default}); Ctrl+C to stop")
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
