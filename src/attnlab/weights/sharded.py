"""Sharded checkpoints of FSDP2 runs (``train --strategy fsdp``), written and read by
``torch.distributed.checkpoint`` (DCP) with its Hugging Face safetensors storage, so no pickle is read.

A sharded checkpoint is an ordinary checkpoint folder (``attnlab.weights.checkpoint``: marker,
``config.json``, ``tokenizer.json``, ``training/``, written by its ``write_layout`` in a temporary sibling
and swapped in) whose
weights and AdamW moments live in ``sharded/``, one safetensors file per rank holding that rank's
pieces, instead of ``model.safetensors``. Every rank writes its own pieces, so no process ever holds
the whole model; ``attnlab.weights.checkpoint.load_sharded_weights`` consolidates them into one model
in a single process (``load_checkpoint`` calls it; the one module that reads every checkpoint layout),
and ``load_sharded_optimizer`` gives each rank of a resumed run the
optimizer pieces it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.tokenizers import Tokenizer
from attnlab.weights.checkpoint import (
    _OPTIMIZER_PREFIX,
    SHARDED_DIR,
    STATE_FILE,
    CheckpointError,
    TrainingState,
    _prepare_destination,
    _read_json,
    _sharded_load,
    _swap,
    resolve_checkpoint,
    write_failure,
    write_layout,
)


def save_sharded_checkpoint(
    directory: str | Path, model: nn.Module, tokenizer: Tokenizer, training: TrainingState | None,
    optimizer: torch.optim.Optimizer | None, *, tag: str,
) -> Path:
    """Write a sharded checkpoint of an FSDP-sharded ``model`` (and ``optimizer``): a collective call,
    made by every rank of the process group with the same arguments.

    Each rank writes its own shards of the weights and of the optimizer state into ``sharded/``
    (``torch.distributed.checkpoint`` with its safetensors storage); rank 0 writes the config, the
    tokenizer, ``training.info``/``training.tensors`` and the marker, and swaps the folder in as
    ``save_checkpoint`` does. ``tag`` names the temporary folder and must be the same on every rank
    (``attnlab.train.runs.temp_name``: rank 0's process id, sent to every rank). ``training.optimizer`` is
    ignored: ``optimizer`` is saved.
    Raises ``CheckpointError`` on every rank when rank 0 cannot use the destination.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint import save as dcp_save
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    target = Path(directory)
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    main = dist.get_rank() == 0
    problem = [""]
    if main:
        try:
            _prepare_destination(target, tmp)
        except Exception as exc:
            problem[0] = str(write_failure(target, tmp, exc))
    dist.broadcast_object_list(problem, src=0)
    if problem[0]:
        raise CheckpointError(problem[0])
    if optimizer is not None:
        weights, optim_state = get_state_dict(model, optimizer)
    else:
        weights, optim_state = get_model_state_dict(model), None
    flat: dict[str, Any] = {k: v for k, v in weights.items() if k not in _tied_names(model)}
    plain: dict[str, dict[str, Any]] = {}
    for fqn, values in (optim_state or {}).get("state", {}).items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                flat[f"{_OPTIMIZER_PREFIX}{fqn}.{key}"] = value
            else:
                plain.setdefault(fqn, {})[key] = value
    try:  # DCP gathers every rank's write result, so a failure on any rank raises on all of them
        dcp_save(flat, storage_writer=HuggingFaceStorageWriter(str(tmp / SHARDED_DIR), save_distributed=True))
    except Exception as exc:
        if main:
            raise write_failure(target, tmp, exc) from exc
        raise CheckpointError(f"could not write checkpoint {target} ({exc})") from exc
    dist.barrier()
    if main:
        try:
            section: dict[str, Any] = {}
            if optim_state is not None:
                groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                          for g in optim_state["param_groups"]]
                section["sharded_optimizer"] = {"param_groups": groups, "plain_state": plain}
            write_layout(tmp, model.config, tokenizer, training, section)  # type: ignore[arg-type]
            _swap(tmp, target)
        except Exception as exc:  # safetensors' SafetensorError is no OSError: catch what writers raise
            problem[0] = str(write_failure(target, tmp, exc))
    dist.broadcast_object_list(problem, src=0)
    if problem[0]:
        raise CheckpointError(problem[0])
    return target


def _tied_names(model: nn.Module) -> set[str]:
    """State-dict names that repeat another parameter (tied weights: kept once, under the first name)."""
    own = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return set(model.state_dict()) - own


def load_sharded_optimizer(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Restore ``optimizer`` (built for ``model``, FSDP-sharded or not) from a sharded checkpoint, each
    rank reading the pieces it holds. Raises ``CheckpointError`` when the state does not fit."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    path = resolve_checkpoint(directory)
    meta = _read_json(path / STATE_FILE)
    saved = meta.get("sharded_optimizer") if isinstance(meta, dict) else None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path / STATE_FILE}: records no sharded optimizer state")
    weights, optim_state = get_state_dict(model, optimizer)  # initialises the state to fill
    flat = {f"{_OPTIMIZER_PREFIX}{fqn}.{key}": value for fqn, values in optim_state["state"].items()
            for key, value in values.items() if isinstance(value, Tensor)}
    _sharded_load(flat, path)
    for fqn, values in optim_state["state"].items():
        for key in values:
            if f"{_OPTIMIZER_PREFIX}{fqn}.{key}" in flat:
                values[key] = flat[f"{_OPTIMIZER_PREFIX}{fqn}.{key}"]
        values.update(saved.get("plain_state", {}).get(fqn, {}))
    optim_state["param_groups"] = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
                                   for g in saved["param_groups"]]
    try:
        set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=optim_state,
                       options=StateDictOptions(strict=True))
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the sharded optimizer state does not fit the model ({exc})") from None
