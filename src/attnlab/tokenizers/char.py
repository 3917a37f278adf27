"""Character-level tokenizer: one id per Unicode character seen in the training corpus.

The simplest tokenizer that can learn language (nanoGPT's Shakespeare model uses it): the vocabulary
is the sorted set of characters of the corpus, so it round-trips any text made of those characters
and refuses, by name, a character it has never seen (a silent ``<unk>`` would hide data problems).
"""

from __future__ import annotations

import json
from collections.abc import Iterable


class UnknownCharacterError(ValueError):
    """Text holds a character outside the vocabulary; the message names it and its position."""


class CharTokenizer:
    """Maps each character of a fixed alphabet to its index in the sorted alphabet."""

    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        alphabet = sorted(set(chars))
        for ch in alphabet:
            if len(ch) != 1:
                raise ValueError(f"a character tokenizer's vocabulary holds single characters, got {ch!r}")
        if not alphabet:
            raise ValueError("a character tokenizer needs at least one character (is the corpus empty?)")
        self.chars: list[str] = alphabet
        self._index = {ch: i for i, ch in enumerate(alphabet)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        """The alphabet of the given texts (an iterable, so a large corpus can come in pieces)."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(seen)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """One id per character; ``allow_special`` changes nothing (there are no special tokens)."""
        index = self._index
        try:
            return [index[ch] for ch in text]
        except KeyError as exc:
            ch = exc.args[0]
            pos = text.index(ch)
            raise UnknownCharacterError(
                f"character {ch!r} (U+{ord(ch):04X}) at position {pos} is not in this tokenizer's "
                f"vocabulary of {self.vocab_size} characters (it never occurred in the training text)"
            ) from None

    def decode(self, ids: list[int]) -> str:
        chars = self.chars
        for i in ids:
            if not 0 <= int(i) < len(chars):
                raise ValueError(f"token id {int(i)} is outside the vocabulary [0, {len(chars)})")
        return "".join(chars[int(i)] for i in ids)

    def tokens(self, ids: list[int]) -> list[str]:
        return [self.decode([i]) for i in ids]

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "chars": self.chars}, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        chars = data.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
            raise ValueError("char tokenizer JSON needs a 'chars' list of strings")
        return cls(chars)
