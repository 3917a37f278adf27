"""Real pretrained models loaded into attnlab's own model code, offline, from registry packages.

``minilm``: all-MiniLM-L6-v2 sentence embeddings (encoder-only); ``smollm2``: SmolLM2-135M-Instruct
(decoder-only, from a 4-bit GGUF file). The catalogue (``attnlab.catalog``, one floor up) lists both,
so ``attnlab.load("minilm")`` works; these modules never import it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoadOnce(Generic[T]):
    """A model loaded on first use and kept for the process: ``get`` loads it at most once, even from
    several threads at a time (a second load of SmolLM2 would cost ~700 MB); ``release`` drops it, so
    the next ``get`` loads it again. ``loaded`` holds it (empty until the first ``get``)."""

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self.loaded: list[T] = []

    def get(self) -> T:
        with self._lock:
            if not self.loaded:
                self.loaded.append(self._load())
            return self.loaded[0]

    def release(self) -> None:
        with self._lock:
            self.loaded.clear()
