"""What every attnlab tokenizer offers, whatever its algorithm.

Models see integer ids; people see text. The walkthrough also needs each id's *surface form*
(``tokens``) to label the rows and columns of an attention map.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """The interface shared by character, BPE, WordPiece and GGUF-embedded tokenizers."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Text to ids. Empty text gives ``[]``; callers that need a token say so in their error.

        Text is encoded literally: characters that spell a special token (``</s>``,
        ``<|endoftext|>``, ``[SEP]``) stay characters, so a user cannot type a control token.
        ``allow_special=True`` parses them into their ids, for text the caller itself wrote.
        """
        ...

    def decode(self, ids: list[int]) -> str: ...

    def tokens(self, ids: list[int]) -> list[str]:
        """A human-readable label per id (for attention-map axes)."""
        ...

    def to_json(self) -> str:
        """The whole tokenizer as JSON text (saved inside every checkpoint; never pickle)."""
        ...
