"""``attnlab serve``: run the walkthrough with uvicorn, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import tempfile
import threading
import webbrowser
from pathlib import Path

import typer
import uvicorn

from attnlab.web.app import create_app
from attnlab.web.models import default_model


def run(*, host: str = "127.0.0.1", port: int = 8000, open_browser: bool = False, demo: bool = False,
        threads: int = 1) -> None:
    """Serve until Ctrl+C.

    ``threads`` is PyTorch's intra-op thread count. The app runs up to two forward passes at once, each
    small (one sentence), so one thread each is the default: on a busy 2-core machine, two spinning
    OpenMP threads per request made a 12-token MiniLM request ~20x slower (2.2 s vs 0.11 s, measured).
    """
    import torch

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
    uvicorn.run(create_app(), host=host, port=port, log_level="warning")
