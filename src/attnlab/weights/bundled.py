"""Models that ship inside the attnlab package (no download, no extra install).

- ``shakespeare-char``: a 0.8M-parameter character-level decoder trained on Tiny Shakespeare. Its
  directory also holds the training metrics and small bfloat16 snapshots from during training, so
  the walkthrough can show attention heads forming.
- ``translator``: the 2017 encoder-decoder (``transformer-small-2017``) trained on English -> Spanish
  Bible verses (World English Bible -> Reina-Valera 1909, both public domain), stored in bfloat16;
  its cross-attention is the walkthrough's alignment view. ``bleu.json`` beside it holds its test-set
  score and every test translation.

Both were trained with ``attnlab train``; the exact commands are in the README.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from attnlab.weights.catalog import LoadedModel, ModelInfo, register
from attnlab.weights.checkpoint import load_checkpoint

SHAKESPEARE = "shakespeare-char"
TRANSLATOR = "translator"


def bundled_dir(name: str = SHAKESPEARE) -> Path:
    """The package directory of a bundled model (checkpoint files, ``metrics.jsonl``, ``snapshots/``)."""
    return Path(str(resources.files("attnlab") / "bundled" / name))


def snapshot_dirs(name: str = SHAKESPEARE) -> dict[int, Path]:
    """``{training step: checkpoint directory}`` of the snapshots shipped with a bundled model."""
    root = bundled_dir(name) / "snapshots"
    if not root.is_dir():
        return {}
    return {int(p.name.split("-")[1]): p for p in sorted(root.iterdir()) if p.name.startswith("step-")}


def _bundled(name: str, family: str, description: str, n_params: str, source: str, licence: str) -> ModelInfo:
    def loader() -> LoadedModel:
        ckpt = load_checkpoint(bundled_dir(name))
        return LoadedModel(name=name, model=ckpt.model, tokenizer=ckpt.tokenizer, config=ckpt.config, info=info)

    info = ModelInfo(
        name=name, family=family, description=description, n_params=n_params, source=source, licence=licence,
        install_hint="reinstall attnlab (the files ship inside the package)",
        is_available=lambda: (bundled_dir(name) / "model.safetensors").is_file(), loader=loader,
    )
    return info


register(_bundled(
    SHAKESPEARE, "decoder",
    "Character-level GPT (4 layers, 4 heads, width 128, 64-character context) trained on Tiny Shakespeare.",
    "0.8M", "bundled with attnlab (trained with `attnlab train --preset shakespeare-char`)",
    "weights: MIT (this project); training text: Shakespeare, public domain",
))
register(_bundled(
    TRANSLATOR, "encoder-decoder",
    "English -> Spanish translator: the 2017 encoder-decoder (3+3 layers, width 256, 4 heads, shared 6,000-token "
    "BPE) trained on Bible verses (World English Bible -> Reina-Valera 1909).",
    "7.1M", "bundled with attnlab (trained with `attnlab train --task translation`)",
    "weights: MIT (this project); training text: WEB and RV1909, public domain",
))
