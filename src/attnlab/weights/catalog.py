"""The catalogue of models attnlab can load by name, offline.

Each entry knows where its files come from (a file bundled in this package, or a registry package
installed beside it), how to build the model through attnlab's own model code, and what to install
when its files are missing. ``load`` caches loaded models, so the web app and the CLI share them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from attnlab.models.config import TransformerConfig
from attnlab.tokenizers.base import Tokenizer


class ModelUnavailableError(RuntimeError):
    """A catalogue model whose files are not present; the message says what to install."""


@dataclass
class LoadedModel:
    """A ready-to-run model with its tokenizer and what the UI needs to describe it."""

    name: str
    model: nn.Module
    tokenizer: Tokenizer
    config: TransformerConfig
    info: ModelInfo


@dataclass(frozen=True)
class ModelInfo:
    """One catalogue row."""

    name: str
    family: str  # "encoder" | "decoder" | "encoder-decoder"
    description: str
    n_params: str  # human-readable, e.g. "22.7M"
    source: str  # where the files come from
    licence: str
    install_hint: str  # the exact command that makes it available
    is_available: Callable[[], bool] = field(compare=False)
    loader: Callable[[], LoadedModel] = field(compare=False)

    @property
    def available(self) -> bool:
        return self.is_available()


_REGISTRY: dict[str, ModelInfo] = {}
_LOADED: dict[str, LoadedModel] = {}
_LOCK = threading.Lock()


def register(info: ModelInfo) -> None:
    """Add a model to the catalogue (called at import time by the modules that know how to load it)."""
    _REGISTRY[info.name] = info


def catalog() -> list[ModelInfo]:
    """Every known model, bundled or installable."""
    _register_builtin()
    return list(_REGISTRY.values())


def is_loaded(name: str) -> bool:
    """Whether ``load(name)`` has already run in this process (never loads anything)."""
    return name in _LOADED


def unload(name: str) -> bool:
    """Forget the loaded ``name`` (its memory is freed once no caller holds it); whether it was loaded."""
    with _LOCK:
        return _LOADED.pop(name, None) is not None


def load(name: str) -> LoadedModel:
    """Load a catalogue model by name (once; later calls return the same object)."""
    _register_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    with _LOCK:
        if name not in _LOADED:
            info = _REGISTRY[name]
            if not info.available:
                raise ModelUnavailableError(
                    f"model {name!r} is not installed; its files come from {info.source}. "
                    f"Install them with: {info.install_hint}"
                )
            loaded = info.loader()
            loaded.model.eval()
            _LOADED[name] = loaded
        return _LOADED[name]


def _register_builtin() -> None:
    """Import the modules that register catalogue entries (each calls ``register``)."""
    # Entries are added here as their loaders land (bundled Shakespeare model, MiniLM, SmolLM2, ...).
    import attnlab.pretrained.minilm
    import attnlab.pretrained.smollm2
    import attnlab.weights.bundled  # noqa: F401
