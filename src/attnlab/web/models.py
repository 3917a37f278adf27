"""Access to catalogue models for the web app: load lazily once, tokenize with limits, run one at a time.

``run_with_cache`` attaches hooks to the model itself, so two forward passes of the *same* model at
once would record into each other's caches. Every forward pass here therefore holds that model's lock;
different models still run in parallel (the app bounds how many heavy requests run at all).

Memory is bounded: at most ``MAX_LARGE_MODELS`` models of ``LARGE_PARAMS`` parameters or more stay
loaded (SmolLM2 alone is ~540 MB of float32); using one more unloads the least recently used, and
``DELETE /api/models/{name}`` unloads one at once. Small models (the bundled ones, the demos) are not
counted. A model unloaded mid-request finishes that request; the next one loads it again.

Copies: a view that keeps a derived copy of a model (the Order view's position-free copy, the
timeline's snapshots) makes it with ``model_copy``, under the model's lock, so the copy can never
carry hooks or a backend switch of a request running on the model at that moment (issue 22, item 4).

Device: one per process (``set_device``, called by ``create_app``; the CPU by default). Every model is
loaded onto it (``catalog.load(name, device=...)``), its inputs are made there (``model_input``), and
what is recorded comes back to the CPU (``forward``; ``run_with_cache(..., device="cpu")``), so the
payload builders read plain CPU tensors whatever device computed them. Precision stays float32.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab import catalog as cat
from attnlab.device import resolve_device
from attnlab.generate import model_device
from attnlab.inspect import ActivationCache, hook_name, run_with_cache, stacks
from attnlab.web.errors import ModelNotInstalledError, PayloadError, UnknownModelError
from attnlab.web.heavy import raise_if_abandoned

MAX_CHARS = 400
MAX_TOKENS = 64
MAX_LARGE_MODELS = 2
LARGE_PARAMS = 10_000_000

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_LARGE: OrderedDict[str, None] = OrderedDict()  # loaded large models, least recently used first
_LIMIT = {"large": MAX_LARGE_MODELS}
_DEVICE = {"device": torch.device("cpu")}
_FORGET: list[Callable[[str], object]] = []


def model_info(name: str) -> cat.ModelInfo:
    """The catalogue row of ``name`` (without loading it); an unknown name is a 404 listing the known ones."""
    known = {info.name: info for info in cat.catalog()}
    if name not in known:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(sorted(known)) or 'none'}")
    return known[name]


def get_model(name: str) -> cat.LoadedModel:
    """The loaded catalogue model ``name``; unknown or missing models are 4xx/503 errors with a hint."""
    return _get(name)[0]


def _get(name: str) -> tuple[cat.LoadedModel, list[str]]:
    model_info(name)
    try:
        loaded = cat.load(name, device=_DEVICE["device"])
    except cat.ModelUnavailableError as exc:
        raise ModelNotInstalledError(str(exc)) from None
    return loaded, _touch(loaded)


def load_model(name: str) -> tuple[cat.LoadedModel, float, list[str]]:
    """Load ``name`` (4xx/503 errors as ``get_model``): the model, the seconds that took (0 if it was
    loaded) and the large models unloaded to make room for it."""
    was_loaded = cat.is_loaded(name)
    start = time.perf_counter()
    loaded, unloaded = _get(name)
    return loaded, 0.0 if was_loaded else time.perf_counter() - start, unloaded


def set_max_large_models(count: int) -> None:
    """How many large models may stay loaded at once (at least 1)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"the number of large models kept loaded must be an integer >= 1, got {count!r}")
    _LIMIT["large"] = count


def set_device(spec: str | torch.device) -> torch.device:
    """Run every model the app loads from now on on ``spec`` (``cpu``, ``auto``, ``cuda``, ``cuda:N``,
    ``mps``: ``attnlab.device.resolve_device``); returns the device chosen. Raises
    ``attnlab.device.DeviceError`` for a device this machine lacks. One device per process: models
    already loaded for another device are not used again (``catalog.load`` keeps one copy per device)."""
    _DEVICE["device"] = resolve_device(spec)
    return _DEVICE["device"]


def device() -> torch.device:
    """The device the app's models run on (``set_device``)."""
    return _DEVICE["device"]


def on_unload(forget: Callable[[str], object]) -> None:
    """Call ``forget(name)`` when a model is unloaded (for caches holding copies of it)."""
    _FORGET.append(forget)


def unload_model(name: str) -> bool:
    """Unload ``name`` (unknown: 404) and whatever was cached from it; whether it was loaded."""
    model_info(name)
    with _LOCKS_GUARD:
        _LARGE.pop(name, None)
    return _drop(name)


def _drop(name: str) -> bool:
    for forget in _FORGET:  # first the copies, so that unloading gives their memory back too
        forget(name)
    return cat.unload(name)


def is_large(loaded: cat.LoadedModel) -> bool:
    """Whether ``loaded`` has ``LARGE_PARAMS`` parameters or more (it counts towards the memory bound)."""
    return sum(p.numel() for p in loaded.model.parameters()) >= LARGE_PARAMS


def _touch(loaded: cat.LoadedModel) -> list[str]:
    """Mark a large model as just used; unload the least recently used ones past the limit."""
    if not is_large(loaded):
        return []
    with _LOCKS_GUARD:
        _LARGE[loaded.name] = None
        _LARGE.move_to_end(loaded.name)
        evicted = []
        while len(_LARGE) > _LIMIT["large"]:
            evicted.append(_LARGE.popitem(last=False)[0])
    for name in evicted:
        _drop(name)
    return evicted


@contextmanager
def model_lock(name: str) -> Iterator[None]:
    """Hold model ``name``'s lock: every forward pass, hook and copy of a shared model happens inside it.

    Raises ``attnlab.web.heavy.Abandoned`` instead of running when the client of the heavy request this
    thread works for disconnected while it waited for the lock."""
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(name, threading.Lock())
    with lock:
        raise_if_abandoned()
        yield


def model_copy(loaded: cat.LoadedModel, make: Callable[[nn.Module], nn.Module] = copy.deepcopy) -> nn.Module:
    """``make(loaded.model)`` (a deep copy by default, or e.g. ``without_positions``) taken while holding
    the model's lock, so no other request's hooks or backend switch are copied with it. The copy is
    private to the caller, who guards its own uses of it; it is returned with no forward or backward
    hooks on any module (a catalogue model carries none at rest)."""
    with model_lock(loaded.name):
        clone = make(loaded.model)
    for module in clone.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
                      module._backward_pre_hooks):
            hooks.clear()
    return clone


# The kinds of view that pick a default model, and the family each needs. Which model each prefers, and
# which are character-level or random-weight stand-ins, is the catalogue's knowledge (``ModelInfo``'s
# ``preferred_view``, ``token_kind``, ``demo``): word-level tokens, so a sentence reads as words (``make
# install`` installs the preferred ones). A character model is only a last resort.
VIEW_FAMILIES = {"encoder": "encoder", "generate": "decoder", "translate": "encoder-decoder"}


def _preferred(infos: list[cat.ModelInfo], kind: str) -> cat.ModelInfo | None:
    """The real (non-demo) model the catalogue names as ``kind``'s default, installed or not."""
    return next((i for i in infos if i.preferred_view == kind and not i.demo), None)


def view_defaults() -> dict[str, str | None]:
    """For each kind of view (``encoder``, ``generate``, ``translate``): its preferred model if installed,
    else an available model of the same family that is not character-level nor a demo, else any of that family."""
    infos = cat.catalog()
    available = [i for i in infos if i.available]
    out: dict[str, str | None] = {}
    for kind, family_name in VIEW_FAMILIES.items():
        family = [i for i in available if i.family == family_name]
        preferred = _preferred(infos, kind)
        words = [i for i in family if i.token_kind != "character" and not i.demo]
        chosen = preferred if preferred in family else (words or family or [None])[0]
        out[kind] = chosen.name if chosen is not None else None
    return out


def default_model() -> tuple[str | None, str | None]:
    """The encoder default of ``view_defaults`` (the catalogue's word-level encoder), else the first available
    model; with a one-line note when the page has to fall back (to a character model, say)."""
    infos = cat.catalog()
    available = sorted((i for i in infos if i.available), key=lambda i: (i.demo, i.token_kind == "character"))
    preferred = _preferred(infos, "encoder")
    if preferred is not None and preferred in available:
        return preferred.name, None
    if not available:
        return None, "no model is available; install one (see `attnlab models` or the README)"
    first = available[0]
    kind = "a character-level model: every letter is a token" if first.token_kind == "character" else "a stand-in"
    if preferred is None:
        return first.name, f"the catalogue names no word-level encoder, so the page shows {first.name!r}, {kind}"
    return first.name, (f"the word-level model {preferred.name!r} is not installed (`make install`), so the page "
                        f"shows {first.name!r}, {kind}")


def max_tokens(loaded: cat.LoadedModel) -> int:
    return min(MAX_TOKENS, loaded.config.max_len)


def tokenize(loaded: cat.LoadedModel, text: str, *, limit: int | None = None) -> tuple[list[int], list[str]]:
    """Ids and labels of ``text``, enforcing the character and token limits (stated in the error)."""
    if not text or not text.strip():
        raise PayloadError("text is empty: type a sentence")
    if len(text) > MAX_CHARS:
        raise PayloadError(f"text is {len(text)} characters long; the limit is {MAX_CHARS} characters")
    try:
        ids = loaded.tokenizer.encode(text)
    except (KeyError, ValueError) as exc:
        raise PayloadError(
            f"model {loaded.name!r} cannot encode this text (unsupported characters?): {exc}"
        ) from None
    limit = limit if limit is not None else max_tokens(loaded)
    if not ids:
        raise PayloadError(f"text gives no tokens for model {loaded.name!r}")
    if len(ids) > limit:
        raise PayloadError(
            f"text is {len(ids)} tokens long for model {loaded.name!r}; the limit is {limit} tokens"
        )
    return ids, [str(t) for t in loaded.tokenizer.tokens(ids)]


def model_input(model: cat.LoadedModel | torch.nn.Module, ids: list[int]) -> Tensor:
    """``ids`` as a batch of one, ``(1, len(ids))`` int64, on the device of ``model`` (a loaded catalogue
    model, or a copy of one such as a timeline snapshot): the one way the web app makes model inputs."""
    net = model.model if isinstance(model, cat.LoadedModel) else model
    return torch.tensor([ids], dtype=torch.long, device=model_device(net))


def forward(loaded: cat.LoadedModel, ids: list[int], names: object = None) -> tuple[Tensor, ActivationCache]:
    """One forward pass through ``run_with_cache`` (math backend, hooks recorded), holding the model's lock.

    Returns the output (on the model's device) and the recorded activations, on the CPU. An
    encoder-decoder reads the sentence as its source and is given the same tokens as target, so both
    stacks (and the cross-attention between them) have something to show.
    """
    x = model_input(loaded, ids)
    args = (x, x) if loaded.config.family == "encoder-decoder" else (x,)
    with model_lock(loaded.name):
        return run_with_cache(loaded.model, *args, names=names, device="cpu")


@dataclass(frozen=True)
class StackInfo:
    """The stack the attention views show (``"decoder"`` or ``"encoder"``), its depth, and whether it is causal."""

    stack: str
    n_layers: int
    causal: bool

    def name(self, layer: int, point: str) -> str:
        return hook_name(self.stack, layer, point)


def self_attention_stack(loaded: cat.LoadedModel) -> StackInfo:
    """The stack the attention views show: the only one, or the encoder of an encoder-decoder."""
    found = stacks(loaded.model)
    if not found:
        raise PayloadError(f"model {loaded.name!r} has no attention stack")
    stack = found[0]  # the encoder comes first; config.n_layers counts its blocks in every family
    return StackInfo(stack, loaded.config.n_layers, causal=stack == "decoder")
