"""Tokenizers: text <-> ids (character-level, byte-level BPE, WordPiece, GGUF-embedded).

Every tokenizer serialises itself to JSON with a ``"kind"`` field; ``tokenizer_from_json`` reads it
back by looking the kind up in a table, which other modules extend with ``register_tokenizer``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from attnlab.tokenizers.base import Tokenizer
from attnlab.tokenizers.bpe import BPETokenizer
from attnlab.tokenizers.char import CharTokenizer, UnknownCharacterError
from attnlab.tokenizers.hf_json import HFJsonTokenizer

_LOADERS: dict[str, Callable[[dict[str, Any]], Tokenizer]] = {
    "char": CharTokenizer.from_dict,
    "bpe": BPETokenizer.from_dict,
    "hf_json": HFJsonTokenizer.from_dict,
}


def register_tokenizer(kind: str, loader: Callable[[dict[str, Any]], Tokenizer]) -> None:
    """Teach ``tokenizer_from_json`` a new kind; ``loader`` gets the parsed JSON object."""
    _LOADERS[kind] = loader


def tokenizer_from_json(text: str) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_json`` text (e.g. a checkpoint's ``tokenizer.json``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"tokenizer JSON is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError("tokenizer JSON must be an object with a 'kind' field")
    kind = data["kind"]
    if kind not in _LOADERS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; known kinds: {', '.join(sorted(_LOADERS))}")
    return _LOADERS[kind](data)


__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "HFJsonTokenizer",
    "Tokenizer",
    "UnknownCharacterError",
    "register_tokenizer",
    "tokenizer_from_json",
]
