"""Byte-level BPE (GPT-2's scheme) trained on the user's corpus with Hugging Face ``tokenizers``.

Working on UTF-8 *bytes* rather than characters means the 256 byte values form the base alphabet,
so every string, in any script, has an encoding and decodes back exactly; merges learned from the
corpus (Sennrich et al. 2016) make frequent byte sequences single tokens.

Training reads a bounded amount of text, in bounded pieces: at most ``TRAIN_MAX_CHARS`` characters
(the first 64 Mi; merges learnt from that much text barely change with more), fed to the trainer in
pieces of at most ``TRAIN_PIECE_CHARS`` characters cut before a space or newline (where the
pre-tokenizer splits anyway, so the words counted are the same). Without the pieces, one 50 MB line
took 3.5 minutes and 6 GB of memory. With them, the trainer's memory is bounded by the distinct words
of the sample (about 1 KB each in Hugging Face's trainer: a 50 MB line of random words, nearly all
distinct, peaked at 3.9 GB), so the sample also ends once it holds ``max_words`` distinct words
(counted at whitespace, 16 per token of the vocabulary asked for, at least 65,536). Ordinary text
repeats its words and is read up to the character bound.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from attnlab.tokenizers.byte_level import BYTE_OF, gpt2_pre_tokenizer

_BYTE_LEVEL = gpt2_pre_tokenizer()



def _split_special(text: str, specials: Sequence[str]) -> list[str]:
    """``text`` cut before and after every occurrence of a special token (longest match first)."""
    if not specials:
        return [text]
    pattern = "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True))
    return [piece for piece in re.split(f"({pattern})", text) if piece]

TRAIN_MAX_CHARS = 64 << 20
TRAIN_MIN_WORDS = 1 << 16  # distinct words the sample may always hold (~70 MB in the trainer)
TRAIN_WORDS_PER_TOKEN = 16  # and per token of the vocabulary asked for
TRAIN_PIECE_CHARS = 1 << 16


def bounded_pieces(texts: Iterable[str], max_chars: int = TRAIN_MAX_CHARS, piece_chars: int = TRAIN_PIECE_CHARS,
                   max_words: int = TRAIN_MIN_WORDS) -> Iterator[str]:
    """The start of ``texts`` in pieces of at most ``piece_chars``, each cut before a space or newline
    when one is near (a word longer than a piece is cut where it must be), up to ``max_chars``
    characters or the piece in which ``max_words`` distinct words (split at whitespace) have been seen,
    whichever comes first. Lazy: ``texts`` is read only as far as the bound."""
    budget = max_chars
    seen: set[int] = set()  # hashes of the distinct words so far: the trainer's memory grows with them
    for text in texts:
        start = 0
        while start < len(text) and budget > 0:
            end = min(len(text), start + piece_chars, start + budget)
            if end < len(text):
                cut = max(text.rfind(" ", start + 1, end), text.rfind("\n", start + 1, end))
                if cut > start:
                    end = cut
            piece = text[start:end]
            yield piece
            seen.update(map(hash, piece.split()))
            if len(seen) >= max_words:
                return
            budget -= end - start
            start = end
        if budget <= 0:
            return


class BPETokenizer:
    """A byte-level BPE tokenizer; ``train`` learns it from text, ``to_json`` saves it whole."""

    kind = "bpe"

    def __init__(self, hf: HFTokenizer) -> None:
        self._hf = hf
        self._hf.encode_special_tokens = True  # text that spells "</s>" stays text

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2,
        special_tokens: Sequence[str] = (), max_chars: int = TRAIN_MAX_CHARS, max_words: int | None = None,
    ) -> BPETokenizer:
        """Learn merges from ``texts`` (an iterable of strings, e.g. lines or files) up to ``vocab_size``.

        Only the start of the text is read, in bounded pieces (see the module docstring): at most
        ``max_chars`` characters, and no more once ``max_words`` distinct words have been seen (default:
        ``TRAIN_WORDS_PER_TOKEN`` per token of ``vocab_size``, at least ``TRAIN_MIN_WORDS``), so memory
        stays bounded whatever the corpus's size, line length or variety of words.

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
        if max_words is None:
            max_words = max(TRAIN_MIN_WORDS, TRAIN_WORDS_PER_TOKEN * vocab_size)
        hf.train_from_iterator(bounded_pieces(texts, max_chars, max_words=max_words), trainer=trainer)
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
            raw = bytes(BYTE_OF[ch] for ch in piece)
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
