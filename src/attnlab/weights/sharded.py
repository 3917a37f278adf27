"""Sharded checkpoints of FSDP2 runs (``train --strategy fsdp``), written and read by
``torch.distributed.checkpoint`` (DCP) with its Hugging Face safetensors storage, so no pickle is read.

A sharded checkpoint is an ordinary checkpoint folder (``attnlab.weights.checkpoint``: marker,
``config.json``, ``tokenizer.json``, ``training/``, written in a temporary sibling and swapped in) whose
weights and AdamW moments live in ``sharded/``, one safetensors file per rank holding that rank's
pieces, instead of ``model.safetensors``. Every rank writes its own pieces, so no process ever holds
the whole model; ``load_sharded_weights`` consolidates them into one model in a single process
(``load_checkpoint`` calls it), and ``load_sharded_optimizer`` gives each rank of a resumed run the
optimizer pieces it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from attnlab.models import TransformerConfig, build_model
from attnlab.tokenizers import Tokenizer
from attnlab.weights.checkpoint import (
    CONFIG_FILE,
    MARKER,
    MARKER_FILE,
    MAX_POSITIONS,
    SHARDED_DIR,
    STATE_FILE,
    TENSORS_FILE,
    TOKENIZER_FILE,
    CheckpointError,
    TrainingState,
    _fsync_tree,
    _mismatches,
    _prepare_destination,
    _read_json,
    _swap,
    _write_json,
    resolve_checkpoint,
    write_failure,
)
from attnlab.weights.keymap import bad_values

_OPTIMIZER_PREFIX = "optimizer."


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
    (the torchrun agent's process id). ``training.optimizer`` is ignored: ``optimizer`` is saved.
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
            config: TransformerConfig = model.config  # type: ignore[assignment]
            _write_json(tmp / CONFIG_FILE, config.to_dict())
            (tmp / TOKENIZER_FILE).write_text(tokenizer.to_json(), encoding="utf-8")
            if training is not None:
                (tmp / "training").mkdir()
                extra = {f"state.{k}": v.detach().contiguous().cpu() for k, v in training.tensors.items()}
                save_file(extra, str(tmp / TENSORS_FILE))
                meta: dict[str, Any] = {"info": training.info}
                if optim_state is not None:
                    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                              for g in optim_state["param_groups"]]
                    meta["sharded_optimizer"] = {"param_groups": groups, "plain_state": plain}
                _write_json(tmp / STATE_FILE, meta)
            _write_json(tmp / MARKER_FILE, MARKER)
            _fsync_tree(tmp)
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


def _sharded_load(state: dict[str, Tensor], path: Path) -> None:
    """Fill ``state``'s tensors in place from the sharded checkpoint at ``path`` (resharded as needed:
    plain tensors in one process, DTensors across the process group)."""
    import warnings

    import torch.distributed as dist
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint import load as dcp_load

    reader = HuggingFaceStorageReader(str(path / SHARDED_DIR))
    sharded = any(type(t).__name__ == "DTensor" for t in state.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "assuming the intent is to load in a single process"
        try:
            dcp_load(state, storage_reader=reader, no_dist=not (sharded and dist.is_initialized()))
        except Exception as exc:  # DCP raises its own CheckpointException, RuntimeError, ...
            raise CheckpointError(f"{path / SHARDED_DIR}: could not read the sharded checkpoint ({exc})") from None


def _sharded_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors listed by the shards' safetensors headers, global shape and dtype, on the meta
    device (nothing allocated)."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    try:
        metadata = HuggingFaceStorageReader(str(path / SHARDED_DIR)).read_metadata()
    except Exception as exc:
        raise CheckpointError(f"{path / SHARDED_DIR}: not a readable sharded checkpoint ({exc})") from None
    return {k: torch.empty(tuple(m.size), dtype=m.properties.dtype, device="meta")
            for k, m in metadata.state_dict_metadata.items() if hasattr(m, "size")}


def load_sharded_weights(config: TransformerConfig, path: Path) -> nn.Module:
    """The model ``config`` describes, filled from the shards at ``path`` in this one process (CPU).

    The shards' global shapes are checked against those ``config`` implies before anything is
    allocated, their dtypes (floating point for float weights) and values (no NaN or infinity) too; a
    mismatch raises ``CheckpointError`` listing it."""
    listed = {k: v for k, v in _sharded_tensors(path).items() if not k.startswith(_OPTIMIZER_PREFIX)}
    saved = {k: tuple(v.shape) for k, v in listed.items()}
    with torch.device("meta"):
        meta = build_model(config)
    tied = set(meta.state_dict()) - {n for n, _ in meta.named_parameters()} - {n for n, _ in meta.named_buffers()}
    expected = {k: tuple(t.shape) for k, t in meta.state_dict().items() if not (k in tied and k not in saved)}
    problems = _mismatches(expected, saved)
    if problems:
        raise CheckpointError(f"{path / SHARDED_DIR}: weights do not fit the model described by config.json: "
                              + "; ".join(problems))
    _refuse_values(path, bad_values(listed, meta.state_dict()))  # dtypes, from the headers
    if config.max_len > MAX_POSITIONS:
        raise CheckpointError(f"{path / CONFIG_FILE}: max_len {config.max_len} is above the limit of "
                              f"{MAX_POSITIONS} positions")
    model = build_model(config)
    state = model.state_dict()
    _sharded_load({k: v for k, v in state.items() if k in saved}, path)
    _refuse_values(path, bad_values({k: v for k, v in state.items() if k in saved}, state))  # NaN, infinities
    return model


def _refuse_values(path: Path, problem: str | None) -> None:
    if problem is not None:
        raise CheckpointError(f"{path / SHARDED_DIR}: unusable weights (damaged file?): {problem}")


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
