"""``attnlab serve``: run the walkthrough with uvicorn, on 127.0.0.1 unless told otherwise.

The server answers only to its own names (``attnlab.web.guard``): 127.0.0.1, localhost and [::1],
the ``--host`` it binds when that is a name or address rather than a wildcard, and each
``--allow-host NAME``. Serving on another interface (``--host 0.0.0.0``) therefore also needs the
name the other machines use, e.g. ``--allow-host mybox.local``.
"""

from __future__ import annotations

import tempfile
import threading
import webbrowser
from pathlib import Path

import torch
import typer
import uvicorn

from attnlab.web.app import create_app
from attnlab.web.guard import host_name
from attnlab.web.models import default_model

WILDCARDS = ("0.0.0.0", "::", "")


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
    ``attnlab.device.DeviceError``).

    ``threads`` is PyTorch's intra-op thread count. The app runs up to two forward passes at once, each
    small (one sentence), so one thread each is the default: on a busy 2-core machine, two spinning
    OpenMP threads per request made a 12-token MiniLM request ~20x slower (2.2 s vs 0.11 s, measured).
    """
    try:
        hosts = allowed_hosts(host, allow_host)
        app = create_app(allowed_hosts=hosts, max_large_models=max_models, device=device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
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
    uvicorn.run(app, host=host, port=port, log_level="warning")
