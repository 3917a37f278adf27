"""Tiny random-weight models for trying the walkthrough's plumbing without any downloaded weights.

``attnlab serve --demo`` and the web tests register them: a decoder, an encoder and an
encoder-decoder of a few thousand parameters over a printable-ASCII character vocabulary, an
encoder-decoder with a small byte-level BPE tokenizer and the translation special tokens (so the
translation view has something to run; its "translations" are noise), plus a short real training run of the decoder (a few Adam steps on one sentence, each
``attnlab.train.step.train_step``) whose snapshots and
``metrics.jsonl`` feed the training timeline. Their attention is meaningless; their numbers are
still exactly what the models compute, which is what the tests check.
"""

from __future__ import annotations

import json
import string
import threading
from pathlib import Path

import torch

from attnlab import catalog as cat
from attnlab.models import DecoderLM, EncoderDecoder, EncoderModel, TransformerConfig
from attnlab.tokenizers import BPETokenizer, CharTokenizer
from attnlab.train.step import train_step
from attnlab.web import timeline
from attnlab.weights.checkpoint import save_checkpoint, snapshot_dir

ALPHABET = string.printable[:95]  # digits, letters, punctuation, space
DEMO_SENTENCE = "the cat sat on the mat. the dog sat on the log."
_TRAINED: Path | None = None
_SEEDED = threading.Lock()  # catalogue loads run in parallel now; a seeded build must not interleave with another


def _config(family: str, positions: str = "learned", vocab_size: int = len(ALPHABET), **kw: object) -> TransformerConfig:
    return TransformerConfig(
        name=f"demo-{family}", family=family, vocab_size=vocab_size, d_model=32, n_heads=4, n_layers=2,
        d_ff=64, max_len=128, positions=positions, attention_backend="sdpa", **kw,  # type: ignore[arg-type]
    )


def _entry(name: str, family: str, build: type, config: TransformerConfig, seed: int) -> cat.ModelInfo:
    def loader() -> cat.LoadedModel:
        with _SEEDED, torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build(config).eval()
        return cat.LoadedModel(name=name, model=model, tokenizer=CharTokenizer(ALPHABET), config=config, info=info)

    info = cat.ModelInfo(
        name=name, family=family, description=f"tiny random-weight {family} (demo and tests)", n_params="~30k",
        source="built in memory", licence="MIT", install_hint="nothing to install",
        is_available=lambda: True, loader=loader, token_kind="character", demo=True,
    )
    return info


TRANSLATION_SPECIALS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2, as the real translator's tokenizer
_TRANSLATION_TEXT = [
    "In the beginning God created the heaven and the earth.", "En el principio crio Dios los cielos y la tierra.",
    "And God said, Let there be light: and there was light.", "Y dijo Dios: Sea la luz: y fue la luz.",
]


def _translator_entry(seed: int = 4) -> cat.ModelInfo:
    def loader() -> cat.LoadedModel:
        tokenizer = BPETokenizer.train(_TRANSLATION_TEXT, vocab_size=320, min_frequency=1,
                                       special_tokens=TRANSLATION_SPECIALS)
        config = _config("encoder-decoder", "sinusoidal", vocab_size=tokenizer.vocab_size)
        with _SEEDED, torch.random.fork_rng():
            torch.manual_seed(seed)
            model = EncoderDecoder(config).eval()
        return cat.LoadedModel(name="demo-translator", model=model, tokenizer=tokenizer, config=config, info=info)

    info = cat.ModelInfo(
        name="demo-translator", family="encoder-decoder",
        description="tiny random-weight encoder-decoder with a BPE tokenizer (<pad>, <s>, </s>): "
                    "the translation view's plumbing, with noise for translations",
        n_params="~50k", source="built in memory", licence="MIT", install_hint="nothing to install",
        is_available=lambda: True, loader=loader, preferred_view="translate", demo=True,
    )
    return info


def register_demo_models(timeline_dir: Path | None = None) -> list[str]:
    """Register ``demo-decoder``, ``demo-encoder``, ``demo-seq2seq`` and ``demo-translator``; with ``timeline_dir``, train the
    decoder briefly (once per process; later calls reuse the first directory, which must outlive them)
    and register its snapshots as the decoder's timeline."""
    entries = [
        _entry("demo-decoder", "decoder", DecoderLM, _config("decoder"), 1),
        _entry("demo-encoder", "encoder", EncoderModel, _config("encoder", "sinusoidal"), 2),
        _entry("demo-seq2seq", "encoder-decoder", EncoderDecoder, _config("encoder-decoder", "sinusoidal"), 3),
        _translator_entry(),
    ]
    for info in entries:
        cat.register(info)
    global _TRAINED
    if timeline_dir is not None:
        if _TRAINED is None:  # the run is deterministic: train once per process, reuse its files
            write_demo_timeline(timeline_dir)
            _TRAINED = timeline_dir
        timeline.register_timeline("demo-decoder", _TRAINED, DEMO_SENTENCE)
    return [e.name for e in entries]


def write_demo_timeline(directory: Path, steps: tuple[int, ...] = (0, 10, 30)) -> None:
    """Train a fresh demo decoder on one sentence, saving snapshots at ``steps`` and a loss log."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    config = _config("decoder")
    model = DecoderLM(config)
    tokenizer = CharTokenizer(ALPHABET)
    ids = torch.tensor([tokenizer.encode(DEMO_SENTENCE)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        logits = model(ids[:, :-1])
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[0, 1:])

    with (directory / "metrics.jsonl").open("w") as log:
        for step in range(max(steps) + 1):
            if step in steps:  # the weights before this step's update, in the layout `attnlab train` writes
                save_checkpoint(snapshot_dir(directory, step), model, tokenizer)
            value = train_step(model, optimizer, loss, clip=0.0)
            log.write(json.dumps({"step": step, "loss": round(value, 5)}) + "\n")
