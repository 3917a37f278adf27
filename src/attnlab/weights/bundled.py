"""Models that ship inside the attnlab package (no download, no extra install).

- ``shakespeare-char``: a 0.8M-parameter character-level decoder trained on Tiny Shakespeare, with its
  training metrics.
- ``bible-bpe``: a 1.1M-parameter decoder of the same shape reading subword tokens (a 2,048-token
  byte-level BPE) trained on the World English Bible (public domain). Its directory also holds the
  training metrics and small bfloat16 snapshots from during training (steps 0 to the last, spread
  over the run), so the walkthrough's training timeline can show attention heads forming on words.
- ``translator``: the 2017 encoder-decoder (``transformer-small-2017``) trained on English -> Spanish
  Bible verses (World English Bible -> Reina-Valera 1909, both public domain), stored in bfloat16;
  its cross-attention is the walkthrough's alignment view. ``bleu.json`` beside it holds its test-set
  score and every test translation.

Both were trained with ``attnlab train``; the exact commands are in the README. Their catalogue rows
(``attnlab.load("translator")``) are in ``attnlab.catalog``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from attnlab.weights.checkpoint import MODEL_FILE, Checkpoint, load_checkpoint
from attnlab.weights.checkpoint import snapshot_dirs as checkpoint_snapshot_dirs

SHAKESPEARE = "shakespeare-char"
BIBLE_BPE = "bible-bpe"
TRANSLATOR = "translator"


def bundled_dir(name: str = SHAKESPEARE) -> Path:
    """The package directory of a bundled model (checkpoint files, ``metrics.jsonl``, ``snapshots/``)."""
    return Path(str(resources.files("attnlab") / "bundled" / name))


def snapshot_dirs(name: str = BIBLE_BPE) -> dict[int, Path]:
    """``{training step: checkpoint directory}`` of the snapshots shipped with a bundled model."""
    return checkpoint_snapshot_dirs(bundled_dir(name))


def is_bundled(name: str) -> bool:
    """Whether the bundled model ``name`` has its weights file in the installed package."""
    return (bundled_dir(name) / MODEL_FILE).is_file()


def load_bundled(name: str) -> Checkpoint:
    """The bundled checkpoint ``name`` (model in eval mode, config, tokenizer); the catalogue lists it.

    Raises ``CheckpointError`` when its files are missing or damaged (a broken install).
    """
    return load_checkpoint(bundled_dir(name))
