"""Byte-level BPE (GPT-2's scheme) trained on the user's corpus with Hugging Face ``tokenizers``.

Working on UTF-8 *bytes* rather than characters means the 256 byte values form the base alphabet,
so every string, in any script, has an encoding and decodes back exactly; merges learned from the
corpus (Sennrich et al. 2016) make frequent byte sequences single tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

_BYTE_LEVEL = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte -> printable-character table, inverted (printable bytes map to themselves)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[str, int] = {chr(b): b for b in keep}
    extra = 0
    for b in range(256):
        if b not in keep:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_BYTES = _byte_decoder()


def _split_special(text: str, specials: Sequence[str]) -> list[str]:
    """``text`` cut before and after every occurrence of a special token (longest match first)."""
    if not specials:
        return [text]
    pattern = "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True))
    return [piece for piece in re.split(f"({pattern})", text) if piece]


class BPETokenizer:
    """A byte-level BPE tokenizer; ``train`` learns it from text, ``to_json`` saves it whole."""

    kind = "bpe"

    def __init__(self, hf: HFTokenizer) -> None:
        self._hf = hf
        self._hf.encode_special_tokens = True  # text that spells "</s>" stays text

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2,
        special_tokens: Sequence[str] = (),
    ) -> BPETokenizer:
        """Learn merges from ``texts`` (an iterable of strings, e.g. lines or files) up to ``vocab_size``.

        ``special_tokens`` (e.g. ``<pad>``, ``<s>``, ``</s>`` for translation, ``[MASK]`` for MLM) take
        ids 0, 1, ... in order; text never encodes to them, so a corpus that happens to contain the
        string ``</s>`` cannot end a sentence early.
        """
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(
                f"byte-level BPE needs vocab_size >= 256 (the byte alphabet) + {len(special_tokens)} special tokens, "
                f"got {vocab_size}"
            )
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = _BYTE_LEVEL
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=list(special_tokens),
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size()

    def token_id(self, token: str) -> int:
        """The id of a special token such as ``</s>``; an error names the ones this tokenizer has."""
        found = self._hf.token_to_id(token)
        if found is None or token not in self.special_tokens:
            raise KeyError(f"this tokenizer has no special token {token!r}; it has: {list(self.special_tokens) or 'none'}")
        return found

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return tuple(t.content for _, t in sorted(self._hf.get_added_tokens_decoder().items()))

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Text to ids, literally (a typed ``</s>`` is text); ``allow_special=True`` maps spelled
        special tokens to their ids, for text the caller wrote itself."""
        if not allow_special:
            return self._hf.encode(text, add_special_tokens=False).ids
        out: list[int] = []
        for piece in _split_special(text, self.special_tokens):
            out.extend([self._hf.token_to_id(piece)] if piece in self.special_tokens else self.encode(piece))
        return out

    def decode(self, ids: list[int]) -> str:
        size = self.vocab_size
        for i in ids:
            if not 0 <= int(i) < size:
                raise ValueError(f"token id {int(i)} is outside the vocabulary [0, {size})")
        return self._hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def tokens(self, ids: list[int]) -> list[str]:
        """Each token's bytes as text; a token that is part of a multi-byte character shows as \\xNN."""
        out = []
        for i in ids:
            piece = self._hf.id_to_token(int(i))
            if piece is None:
                raise ValueError(f"token id {int(i)} is outside the vocabulary [0, {self.vocab_size})")
            raw = bytes(_BYTES[ch] for ch in piece)
            out.append(raw.decode("utf-8", errors="backslashreplace"))
        return out

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "tokenizer": json.loads(self._hf.to_str())}, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict) -> BPETokenizer:
        inner = data.get("tokenizer")
        if not isinstance(inner, dict):
            raise ValueError("bpe tokenizer JSON needs a 'tokenizer' object (Hugging Face tokenizer.json)")
        return cls(HFTokenizer.from_str(json.dumps(inner)))
