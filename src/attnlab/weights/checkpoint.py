"""Checkpoints: one directory a person can read, written so that a crash never destroys the last one.

Layout::

    model.safetensors        weights (tied weights stored once)
    config.json              the resolved TransformerConfig
    tokenizer.json           the tokenizer (``to_json``; reloaded with ``tokenizer_from_json``)
    training/state.json      step, schedule, data position, optimizer hyper-parameters (optional)
    training/tensors.safetensors   optimizer moments and RNG states (optional)

Only safetensors and JSON are ever read, never pickle, so a checkpoint from a stranger cannot run
code. A checkpoint is first written whole into a temporary sibling directory and then swapped in with
``os.replace``; a process killed (or a disk filling up) at any instant leaves the previous checkpoint
readable, either at its name or, during the swap's two renames, at ``.<name>.old`` (which ``load``
finds by itself).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from attnlab.models import TransformerConfig, build_model
from attnlab.models.config import ConfigError
from attnlab.tokenizers import Tokenizer, tokenizer_from_json

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
STATE_FILE = "training/state.json"
TENSORS_FILE = "training/tensors.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the file and the problem."""


@dataclass
class TrainingState:
    """Everything besides the weights that a resumed run needs to continue exactly.

    ``info`` is plain JSON (step, schedule, data position, ...); ``tensors`` holds RNG states and the
    like; ``optimizer`` is a ``torch.optim`` state dict (its tensors go to safetensors, the rest to JSON).
    """

    info: dict[str, Any]
    tensors: dict[str, Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None


@dataclass
class Checkpoint:
    """A loaded checkpoint: a model in eval mode, its config and tokenizer."""

    path: Path
    model: nn.Module
    config: TransformerConfig
    tokenizer: Tokenizer


# ----------------------------------------------------------------------------------------- weights


def unique_state_dict(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The model's tensors with shared storage kept once, plus ``{alias: kept_name}`` for the rest."""
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            tensors[name] = t.detach().contiguous().cpu()
    return tensors, aliases


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file (attnlab's one reader: checkpoints and pretrained weights).

    Raises ``CheckpointError`` naming the file when it is missing, truncated or corrupt.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None


def load_weights(model: nn.Module, path: Path) -> None:
    """Copy ``path``'s tensors into ``model`` after checking names and shapes; errors list the mismatches."""
    tensors = read_safetensors(path)
    expected, aliases = unique_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(tensors) & set(expected))
        if tensors[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append("shape mismatch " + "; ".join(wrong[:5]))
    if problems:
        raise CheckpointError(f"{path}: weights do not fit the model described by config.json: " + "; ".join(problems))
    result = model.load_state_dict(tensors, strict=False)
    left = set(result.missing_keys) - set(aliases)
    if left or result.unexpected_keys:  # pragma: no cover - guarded by the checks above
        raise CheckpointError(f"{path}: could not load {sorted(left)} {result.unexpected_keys}")


# ------------------------------------------------------------------------------- optimizer state


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for idx, values in state["state"].items():
        plain: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                plain[key] = value
        per_param[str(idx)] = plain
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "plain_state": per_param}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in meta["plain_state"].items()}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------------------------ save / load


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _fsync_tree(root: Path) -> None:
    for file in root.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    tokenizer: Tokenizer,
    training: TrainingState | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a complete checkpoint to ``directory``, replacing any previous one atomically.

    ``dtype`` (e.g. ``torch.bfloat16``) stores floating-point weights smaller; loading casts them back
    to the model's dtype. Used for training snapshots, never for a checkpoint meant to resume.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    config: TransformerConfig = model.config  # type: ignore[assignment]
    try:
        tmp.mkdir()
        tensors, aliases = unique_state_dict(model)
        if dtype is not None:
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt", "aliases": json.dumps(aliases)})
        _write_json(tmp / CONFIG_FILE, config.to_dict())
        (tmp / TOKENIZER_FILE).write_text(tokenizer.to_json(), encoding="utf-8")
        if training is not None:
            (tmp / "training").mkdir()
            extra = {f"state.{k}": v.detach().contiguous().cpu() for k, v in training.tensors.items()}
            meta: dict[str, Any] = {"info": training.info}
            if training.optimizer is not None:
                opt_tensors, meta["optimizer"] = _flatten_optimizer(training.optimizer)
                extra.update(opt_tensors)
            save_file(extra, str(tmp / TENSORS_FILE))
            _write_json(tmp / STATE_FILE, meta)
        _fsync_tree(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"; the previous checkpoint at {target} is intact" if target.exists() else ""
        raise CheckpointError(f"could not write checkpoint {target} ({exc.strerror or exc}){kept}") from exc
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def resolve_checkpoint(directory: str | Path) -> Path:
    """The directory to read: ``directory`` itself, or the previous copy left by a save cut short."""
    path = Path(directory)
    if path.is_dir():
        return path
    old = path.parent / f".{path.name}.old"
    if old.is_dir():
        return old
    raise CheckpointError(f"{path}: no checkpoint directory here")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def load_config(directory: str | Path) -> TransformerConfig:
    path = resolve_checkpoint(directory) / CONFIG_FILE
    data = _read_json(path)
    try:
        return TransformerConfig.from_dict(data)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Build the model described by ``config.json`` and fill it from ``model.safetensors`` (CPU, eval mode)."""
    path = resolve_checkpoint(directory)
    config = load_config(path)
    tok_path = path / TOKENIZER_FILE
    if not tok_path.is_file():
        raise CheckpointError(f"{tok_path}: file is missing")
    try:
        tokenizer = tokenizer_from_json(tok_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{tok_path}: {exc}") from None
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{tok_path}: tokenizer has {tokenizer.vocab_size} tokens but config.json's vocab_size is {config.vocab_size}"
        )
    model = build_model(config)
    load_weights(model, path / MODEL_FILE)
    model.eval()
    return Checkpoint(path=path, model=model, config=config, tokenizer=tokenizer)


def load_training_state(directory: str | Path) -> TrainingState:
    """The training state saved beside the weights (for ``--resume``)."""
    path = resolve_checkpoint(directory)
    meta = _read_json(path / STATE_FILE)
    tensors = read_safetensors(path / TENSORS_FILE)
    if not isinstance(meta, dict) or "info" not in meta:
        raise CheckpointError(f"{path / STATE_FILE}: has no 'info' section")
    state = {k.removeprefix("state."): v for k, v in tensors.items() if k.startswith("state.")}
    optimizer = _unflatten_optimizer(tensors, meta["optimizer"]) if "optimizer" in meta else None
    return TrainingState(info=meta["info"], tensors=state, optimizer=optimizer)


def rng_state() -> dict[str, Tensor]:
    """Torch's global CPU generator state (dropout, init), to be saved in ``TrainingState.tensors``."""
    return {"rng.torch": torch.get_rng_state()}


def set_rng_state(tensors: dict[str, Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
