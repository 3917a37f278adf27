"""Any Hugging Face ``tokenizers`` pipeline (WordPiece, byte-level BPE, ...) as an attnlab ``Tokenizer``.

Pretrained models ship their tokenizer as a ``tokenizer.json`` (MiniLM), as vocabulary + merges files
(GPT-2) or inside the weights file (GGUF). All three become a ``tokenizers.Tokenizer``; this wrapper
gives it attnlab's protocol: ids, text, and a readable label per token for attention-map axes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from attnlab.tokenizers.byte_level import BYTE_OF


class TokenizerFileError(ValueError):
    """A tokenizer file that cannot be read, or that does not fit its model; the message names the file."""


def _is_byte_level(hf: HFTokenizer) -> bool:
    decoder = json.loads(hf.to_str()).get("decoder") or {}
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", [])]
    return "ByteLevel" in kinds


class HFJsonTokenizer:
    """A ``tokenizers.Tokenizer`` behind attnlab's ``Tokenizer`` protocol.

    ``add_special_tokens`` decides whether ``encode`` runs the post-processor (BERT's ``[CLS] ...
    [SEP]``), which adds its tokens by id. Padding and truncation stored in a ``tokenizer.json``
    are switched off: they belong to the caller (MiniLM's file pads every input to 128 tokens,
    which would change mean pooling).

    Text is encoded literally: a user who types ``<|endoftext|>``, ``<|im_end|>`` or ``[SEP]`` gets
    the tokens of those characters, never the control token (which could end a document or forge a
    chat turn). Only ``encode(text, allow_special=True)``, for text the caller wrote itself,
    turns spelled-out special tokens into their ids, as tiktoken's ``allowed_special`` does. The
    wrapped ``hf`` tokenizer is the literal one too.
    """

    kind = "hf_json"

    def __init__(self, hf: HFTokenizer, *, add_special_tokens: bool = True) -> None:
        hf.no_padding()
        hf.no_truncation()
        hf.encode_special_tokens = True  # special tokens' text is split like any other text
        self._hf = hf
        self._hf_special: HFTokenizer | None = None  # a copy that parses special tokens, made when asked
        self.add_special_tokens = add_special_tokens
        self.byte_level = _is_byte_level(hf)

    @classmethod
    def from_file(cls, path: str | Path, *, add_special_tokens: bool = True) -> HFJsonTokenizer:
        """Read a Hugging Face ``tokenizer.json``; an unreadable file is an error naming it."""
        path = Path(path)
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for both I/O and parse errors
            raise TokenizerFileError(f"{path}: not a readable Hugging Face tokenizer.json ({exc})") from None
        return cls(hf, add_special_tokens=add_special_tokens)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HFJsonTokenizer:
        """Inverse of ``to_json`` (registered as kind ``hf_json`` in ``attnlab.tokenizers``)."""
        hf = HFTokenizer.from_str(json.dumps(data["tokenizer"]))
        return cls(hf, add_special_tokens=bool(data.get("add_special_tokens", True)))

    @property
    def hf(self) -> HFTokenizer:
        """The wrapped ``tokenizers.Tokenizer`` (for batch encoding with offsets, etc.)."""
        return self._hf

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        """The id of a token string such as ``"[CLS]"`` or ``"<|im_end|>"``; unknown is an error."""
        found = self._hf.token_to_id(token)
        if found is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return found

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Text to ids, literally; ``allow_special=True`` also turns special tokens spelled in
        ``text`` (``"<|im_start|>"``) into their ids: only for text that is not a user's."""
        if text == "":
            return []
        hf = self._hf
        if allow_special:
            if self._hf_special is None:  # a second tokenizer, not a toggled flag: safe across threads
                special = HFTokenizer.from_str(self._hf.to_str())
                special.encode_special_tokens = False
                self._hf_special = special
            hf = self._hf_special
        return hf.encode(text, add_special_tokens=self.add_special_tokens).ids

    def _check_ids(self, ids: list[int]) -> list[int]:
        size = self.vocab_size
        out = [int(i) for i in ids]
        for i in out:
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {size})")
        return out

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str:
        return self._hf.decode(self._check_ids(ids), skip_special_tokens=skip_special_tokens)

    def tokens(self, ids: list[int]) -> list[str]:
        """WordPiece pieces as stored (``"[CLS]"``, ``"##ing"``); byte-level pieces as their text
        (``" the"`` rather than ``"Ġthe"``), with bytes of a split multi-byte character as ``\\xNN``."""
        out = []
        for i in self._check_ids(ids):
            piece = self._hf.id_to_token(i)
            assert piece is not None
            if self.byte_level and all(ch in BYTE_OF for ch in piece):
                piece = bytes(BYTE_OF[ch] for ch in piece).decode("utf-8", errors="backslashreplace")
            out.append(piece)
        return out

    def to_json(self) -> str:
        return json.dumps(
            {"kind": self.kind, "add_special_tokens": self.add_special_tokens, "tokenizer": json.loads(self._hf.to_str())}
        )

    def check_vocab_size(self, model_vocab_size: int, *, source: str | Path) -> None:
        """A tokenizer with more ids than the model has embeddings would index past the table."""
        if self.vocab_size != model_vocab_size:
            raise TokenizerFileError(
                f"{source}: the tokenizer has {self.vocab_size} tokens but the model's vocabulary has "
                f"{model_vocab_size}; they do not belong together"
            )
