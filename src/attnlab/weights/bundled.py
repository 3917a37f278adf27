"""Models that ship inside the attnlab package (no download, no extra install).

``shakespeare-char`` is a 0.8M-parameter character-level decoder trained on Tiny Shakespeare with
``attnlab train`` (the exact command is in the README). Its directory also holds the training
metrics and small bfloat16 snapshots from during training, so the walkthrough can show attention
heads forming.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from attnlab.weights.catalog import LoadedModel, ModelInfo, register
from attnlab.weights.checkpoint import load_checkpoint

SHAKESPEARE = "shakespeare-char"


def bundled_dir(name: str = SHAKESPEARE) -> Path:
    """The package directory of a bundled model (checkpoint files, ``metrics.jsonl``, ``snapshots/``)."""
    return Path(str(resources.files("attnlab") / "bundled" / name))


def snapshot_dirs(name: str = SHAKESPEARE) -> dict[int, Path]:
    """``{training step: checkpoint directory}`` of the snapshots shipped with a bundled model."""
    root = bundled_dir(name) / "snapshots"
    if not root.is_dir():
        return {}
    return {int(p.name.split("-")[1]): p for p in sorted(root.iterdir()) if p.name.startswith("step-")}


def _load_shakespeare() -> LoadedModel:
    ckpt = load_checkpoint(bundled_dir())
    return LoadedModel(name=SHAKESPEARE, model=ckpt.model, tokenizer=ckpt.tokenizer, config=ckpt.config, info=_INFO)


_INFO = ModelInfo(
    name=SHAKESPEARE,
    family="decoder",
    description="Character-level GPT (4 layers, 4 heads, width 128, 64-character context) trained on Tiny Shakespeare.",
    n_params="0.8M",
    source="bundled with attnlab (trained with `attnlab train --preset shakespeare-char`)",
    licence="weights: MIT (this project); training text: Shakespeare, public domain",
    install_hint="reinstall attnlab (the files ship inside the package)",
    is_available=lambda: (bundled_dir() / "model.safetensors").is_file(),
    loader=_load_shakespeare,
)

register(_INFO)
