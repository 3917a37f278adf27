"""The ``attnlab`` command: serve | train | generate | inspect | experiment | bench | models.

Each subcommand is a thin shell over a library function; no model math lives here. Heavy imports
happen inside the commands so that ``attnlab --help`` is instant.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="attnlab",
    help="Attention Lab: build, train, look inside and understand Transformers.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Attention Lab: build, train, look inside and understand Transformers."""


@app.command()
def presets() -> None:
    """List the named model configurations and their sizes."""
    from attnlab.models import PRESETS, build_model

    for name, make in PRESETS.items():
        config = make()
        n_params = sum(p.numel() for p in build_model(config).parameters())
        typer.echo(f"{name:24s} {config.family:16s} {n_params / 1e6:8.2f}M parameters")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
