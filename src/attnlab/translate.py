"""Translate text with an encoder-decoder trained by ``attnlab train --task translation``, and score it.

The conventions are the training task's (``train.tasks.TranslationTask``): the source is
``text </s>``, the decoder starts from ``<s>`` and stops at ``</s>``, one tokenizer for both sides.
BLEU is sacrebleu's corpus BLEU (its default 13a tokenisation), reported beside the trivial baseline
of copying the source unchanged, so a score can be read against "did the model learn anything".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from attnlab.generate import GenerationError, check_int, translate_ids
from attnlab.tokenizers import Tokenizer


@dataclass
class Translation:
    source_ids: list[int]  # the source tokens followed by </s>, as the encoder read them
    target_ids: list[int]  # the output, without <s> and </s>
    text: str
    logprob: float


def bos_eos_ids(tokenizer: Tokenizer) -> tuple[int, int] | None:
    """``(<s>, </s>)`` ids of a translation tokenizer, or ``None`` for a tokenizer without them."""
    try:
        return tokenizer.token_id("<s>"), tokenizer.token_id("</s>")  # type: ignore[attr-defined]
    except (AttributeError, KeyError):
        return None


def source_and_target(
    model: nn.Module, source: list[int], bos_eos: tuple[int, int] | None, *, max_len: int, add_eos: bool = True,
) -> tuple[list[int], list[int]]:
    """What the tools read of an encoder-decoder on ``source`` (token ids): ``(source </s>, <s> + the model's
    greedy translation)``, each at most ``max_len`` tokens (``add_eos=False``: ``source`` is already the
    encoder's input). Without ``<s>``/``</s>`` (``bos_eos`` None, an untrained stand-in) both are ``source``."""
    if bos_eos is None:
        return source, source
    bos, eos = bos_eos
    src = [*source, eos][:max_len] if add_eos else source[:max_len]
    with torch.no_grad():
        out, _ = translate_ids(model, src, bos_id=bos, eos_id=eos, max_new_tokens=max_len - 1)
    return src, [bos, *out][:max_len]


def translate_text(
    model: nn.Module, tokenizer: Tokenizer, text: str, *, beam_size: int = 1, max_new_tokens: int | None = None,
) -> Translation:
    """Greedy (``beam_size=1``) or beam-search translation of one sentence.

    ``beam_size`` is an integer in [1, vocab_size], ``max_new_tokens`` None (as long as the model
    allows) or an integer >= 0; other values, and empty or too long text, raise ``GenerationError``.
    """
    beam_size = check_int("beam_size", beam_size, 1, model.config.vocab_size)
    if max_new_tokens is not None:
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
    if not isinstance(text, str):
        raise GenerationError(f"the text to translate must be a string, got {type(text).__name__}")
    if not text.strip():
        raise GenerationError("the text to translate is empty")
    bos, eos = tokenizer.token_id("<s>"), tokenizer.token_id("</s>")  # type: ignore[attr-defined]
    max_len = model.config.max_len
    source = [*tokenizer.encode(text.strip()), eos]
    if len(source) > max_len:
        raise GenerationError(f"the text is {len(source)} tokens long; this translator reads at most {max_len}")
    limit = max_len - 1 if max_new_tokens is None else min(max_new_tokens, max_len - 1)
    out, logprob = translate_ids(model, source, bos_id=bos, eos_id=eos, max_new_tokens=limit, beam_size=beam_size)
    return Translation(source, out, tokenizer.decode(out), logprob)


@dataclass
class BleuReport:
    bleu: float  # the model's corpus BLEU
    copy_bleu: float  # copying the source, as a floor
    n_sentences: int
    hypotheses: list[str]
    signature: str


def bleu_report(
    model: nn.Module, tokenizer: Tokenizer, sources: Sequence[str], references: Sequence[str], *,
    beam_size: int = 4, progress: bool = True,
) -> BleuReport:
    """Translate every source and score the lot with sacrebleu against ``references``."""
    import sacrebleu

    if len(sources) != len(references) or not sources:
        raise ValueError(f"need as many references as sources (and at least one): {len(sources)} vs {len(references)}")
    hyps = [translate_text(model, tokenizer, s, beam_size=beam_size).text
            for s in tqdm(sources, desc="translating", unit="sent", disable=not progress)]
    metric = sacrebleu.metrics.BLEU()
    score = metric.corpus_score(hyps, [list(references)])
    copy = sacrebleu.metrics.BLEU().corpus_score(list(sources), [list(references)])
    return BleuReport(score.score, copy.score, len(sources), hyps, str(metric.get_signature()))
