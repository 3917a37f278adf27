"""Byte-level BPE (GPT-2, Radford et al. 2019, section 2.2): the byte table and the tokenizer shape.

Byte-level BPE merges *bytes*, so any text can be encoded with no unknown token. To keep token
strings printable, each byte is written as a stand-in character: printable Latin-1 bytes stand for
themselves, the other 68 are shifted to code points 256+ in order. ``BYTE_OF`` inverts that table
(every byte-level tokenizer here reads raw bytes back through it), and ``byte_level_bpe`` builds the
tokenizer from a vocabulary and merges (GPT-2's files, a GGUF file's metadata).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer


def _byte_level_table() -> dict[str, int]:
    """Printable stand-in character -> byte, for all 256 bytes."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in keep}
    shifted = 0
    for b in range(256):
        if b not in keep:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


BYTE_OF: dict[str, int] = _byte_level_table()
"""GPT-2's printable stand-in character -> byte (256 entries)."""


def gpt2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """GPT-2's regular expression split, then bytes to stand-in characters (no prefix space)."""
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def byte_level_bpe(
    vocab: Mapping[str, int], merges: Sequence[tuple[str, str]], *, special: Sequence[str] = (),
    pre_tokenizer: pre_tokenizers.PreTokenizer | None = None,
) -> HFTokenizer:
    """A byte-level BPE ``tokenizers.Tokenizer``: ``vocab`` (token string -> id, stand-in characters),
    ``merges`` in priority order, ``special`` tokens matched whole, ``pre_tokenizer`` (default:
    ``gpt2_pre_tokenizer()``). Wrap it in ``HFJsonTokenizer`` to use it as an attnlab tokenizer."""
    hf = HFTokenizer(models.BPE(dict(vocab), list(merges), fuse_unk=False))
    hf.pre_tokenizer = pre_tokenizer if pre_tokenizer is not None else gpt2_pre_tokenizer()
    hf.decoder = decoders.ByteLevel()
    if special:
        hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    return hf
