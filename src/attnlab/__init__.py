"""attnlab: build, train, look inside and understand Transformers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from attnlab.catalog import LoadedModel

__version__ = "0.1.0"


def load(name: str, quantize: Literal["int8", "int4"] | None = None) -> LoadedModel:
    """Load a catalogue model by name (``attnlab.load("minilm")``), cached; see ``attnlab.catalog``.

    ``quantize="int8"`` or ``"int4"`` returns a cached weight-only quantized copy for inference
    (``attnlab.quantize``; the float32 model is unchanged); an unknown scheme raises ``QuantizationError``.
    Imported lazily so that ``import attnlab`` stays light (no torch until a model is asked for).
    """
    from attnlab.catalog import load as _load

    loaded = _load(name)
    if quantize is None:
        return loaded
    from attnlab.quantize import quantized_copy

    return quantized_copy(loaded, quantize)
