"""Tokenizers: text <-> ids (character-level, byte-level BPE, WordPiece, GGUF-embedded)."""

from attnlab.tokenizers.base import Tokenizer

__all__ = ["Tokenizer"]
