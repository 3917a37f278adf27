"""attnlab: build, train, look inside and understand Transformers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attnlab.catalog import LoadedModel

__version__ = "0.1.0"


def load(name: str) -> LoadedModel:
    """Load a catalogue model by name (``attnlab.load("minilm")``), cached; see ``attnlab.catalog``.

    Imported lazily so that ``import attnlab`` stays light (no torch until a model is asked for).
    """
    from attnlab.catalog import load as _load

    return _load(name)
