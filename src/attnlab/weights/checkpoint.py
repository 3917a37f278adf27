"""Checkpoints: one directory a person can read, written so that a crash never destroys the last one.

Layout::

    model.safetensors        weights (tied weights stored once)
    config.json              the resolved TransformerConfig
    tokenizer.json           the tokenizer (``to_json``; reloaded with ``tokenizer_from_json``)
    training/state.json      step, schedule, data position, optimizer hyper-parameters (optional)
    training/tensors.safetensors   optimizer moments and RNG states (optional)
    attnlab-checkpoint.json  the marker: "attnlab wrote this folder" (format name and version)

Checkpoints hold no device: tensors are copied to the CPU before they are written and read onto the
CPU, and ``load_checkpoint(path, device=...)`` then moves the model, so a model trained on a GPU loads on
a laptop and the other way round.

Only safetensors and JSON are ever read, never pickle, so a checkpoint from a stranger cannot run
code. Before any tensor is allocated, the shapes the config implies (the model built on the meta
device, which allocates nothing) are checked against the shapes listed in the safetensors header, so
a ``config.json`` claiming ``vocab_size: 10000000000`` is refused instead of allocating terabytes.

A checkpoint is first written whole into a temporary sibling directory ``.<name>.tmp-<pid>`` and then
swapped in with ``os.replace``; a process killed (or a disk filling up) at any instant leaves the
previous checkpoint readable, either at its name or, during the swap's two renames, at ``.<name>.old``
(which ``load`` finds by itself). Temporary folders left by processes that no longer run (on this
machine) are removed at the next save into the same folder.

Sharded checkpoints (``train --strategy fsdp`` under torchrun): instead of ``model.safetensors`` the
folder holds ``sharded/``, one safetensors file per rank written by ``torch.distributed.checkpoint``
(DCP, with its Hugging Face safetensors storage: still no pickle) holding that rank's pieces of the
weights and of the AdamW moments; every rank writes its own piece, none holds the whole model.
``load_checkpoint`` recognises such a folder and consolidates it into one ordinary model in a single
process; ``attnlab export`` then writes it as a plain checkpoint (``attnlab.weights.sharded``).

Saving never replaces what attnlab did not write: an existing destination must be an attnlab
checkpoint (it holds the marker file, or, for checkpoints written before the marker existed, nothing
but checkpoint files) or an empty folder; a file, a link or any other folder is refused with a
``CheckpointError``. Nothing is written inside a checkpoint folder but the checkpoint itself: a
destination inside one (``last/export``) is refused, since the next save of ``last`` replaces it whole.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from attnlab.device import resolve_device
from attnlab.models import TransformerConfig, build_model
from attnlab.models.config import ConfigError
from attnlab.tokenizers import Tokenizer, tokenizer_from_json
from attnlab.weights.keymap import bad_values, layout_differences

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
STATE_FILE = "training/state.json"
TENSORS_FILE = "training/tensors.safetensors"
SHARDED_DIR = "sharded"
MARKER_FILE = "attnlab-checkpoint.json"
MARKER = {"format": "attnlab-checkpoint", "version": 1}
_CHECKPOINT_FILES = {MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, STATE_FILE, TENSORS_FILE, MARKER_FILE, "training"}
_OPTIMIZER_PREFIX = "optimizer."  # a sharded checkpoint's optimizer tensors, beside the weights in sharded/
MAX_POSITIONS = 1 << 18  # position tables/rotary caches are built from max_len before any weight is read
_TMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$")


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
    sharded: Path | None = None  # a sharded checkpoint: its optimizer state is read by load_sharded_state


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


def _mismatches(expected: dict[str, tuple], found: dict[str, tuple]) -> list[str]:
    """Missing, unexpected and wrongly shaped tensor names (``layout_differences``; first five of each,
    sorted), as readable phrases."""
    missing, unexpected, wrong_names = (sorted(names) for names in layout_differences(expected, found))
    wrong = [f"{k}: file {found[k]} vs model {expected[k]}" for k in wrong_names]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append("shape mismatch " + "; ".join(wrong[:5]))
    return problems


def load_weights(model: nn.Module, path: Path) -> None:
    """Copy ``path``'s tensors into ``model`` after checking names, shapes, dtypes (floating point for a
    float parameter) and values (no NaN or infinity); a ``CheckpointError`` lists what does not fit."""
    tensors = read_safetensors(path)
    expected, aliases = unique_state_dict(model)
    problems = _mismatches({k: tuple(v.shape) for k, v in expected.items()},
                           {k: tuple(v.shape) for k, v in tensors.items()})
    if problems:
        raise CheckpointError(f"{path}: weights do not fit the model described by config.json: " + "; ".join(problems))
    problem = bad_values(tensors, expected)
    if problem is not None:
        raise CheckpointError(f"{path}: unusable weights (damaged file?): {problem}")
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


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie or another user's counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>`` entries of ``folder`` whose process no longer runs; returns them.

    A save killed midway leaves such a folder behind (a full AdamW checkpoint of a 135M-parameter
    model is ~1.6 GB); the next save into the same folder clears them. Process ids are only
    meaningful on one machine: on a folder shared by several machines a live save elsewhere could
    carry a free local id, so run one writer per folder (as ``train`` does: rank 0 only).
    """
    removed = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        match = _TMP_NAME.match(entry.name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def is_checkpoint_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder attnlab wrote as a checkpoint: it holds the marker file, or
    (checkpoints from before the marker) only checkpoint files, with ``config.json`` among them."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    if (path / MARKER_FILE).is_file():
        return True
    names = set()
    for entry in path.iterdir():  # stops at the first foreign name: never walks a big folder
        names.add(entry.name)
        if entry.name not in _CHECKPOINT_FILES:
            return False
    training = path / "training"
    if training.is_dir() and not {f"training/{p.name}" for p in training.iterdir()} <= _CHECKPOINT_FILES:
        return False
    return CONFIG_FILE in names


def enclosing_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint folder ``path`` lies inside (links resolved), or None.

    A checkpoint folder holds only its own files and is replaced whole by its next save, so nothing
    may be written inside it: a folder counts when it holds the marker file, or (checkpoints from before
    the marker) only checkpoint files with ``config.json`` and ``model.safetensors`` among them.
    """
    for parent in Path(os.path.abspath(path)).resolve().parents:
        try:
            if is_checkpoint_dir(parent) and ((parent / MARKER_FILE).is_file() or (parent / MODEL_FILE).is_file()):
                return parent
        except OSError:  # a folder we may not list holds no checkpoint of ours
            continue
    return None


def check_destination(directory: str | Path) -> Path:
    """Refuse a checkpoint destination whose replacement would lose something attnlab did not write.

    Raises ``CheckpointError`` naming ``directory`` when it is a file, a link, a folder that is not
    an attnlab checkpoint (see ``is_checkpoint_dir``; an empty folder is fine), or when it lies inside a
    checkpoint folder (``enclosing_checkpoint``). Returns the path.
    """
    target = Path(directory)
    if target.is_symlink():
        raise CheckpointError(f"{target} is a symbolic link; attnlab does not replace it (choose another destination)")
    holder = enclosing_checkpoint(target)
    if holder is not None:
        raise CheckpointError(f"{target} is inside the checkpoint {holder}, which holds only its own files (and is "
                              f"replaced whole by its next save); choose a destination outside it")
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{target} is a file, not a checkpoint folder; attnlab does not replace it "
                              f"(choose another destination)")
    if target.is_dir() and any(target.iterdir()) and not is_checkpoint_dir(target):  # an empty folder loses nothing
        raise CheckpointError(f"{target} exists and is not an attnlab checkpoint (no {MARKER_FILE}); attnlab "
                              f"does not replace it (choose a new or empty destination)")
    return target


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    tokenizer: Tokenizer,
    training: TrainingState | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a complete checkpoint to ``directory``, replacing a previous *checkpoint* there atomically.

    ``dtype`` (e.g. ``torch.bfloat16``) stores floating-point weights smaller; loading casts them back
    to the model's dtype. Used for training snapshots, never for a checkpoint meant to resume.

    Raises ``CheckpointError`` when ``directory`` exists and is not an attnlab checkpoint (a file, a
    link, a folder of other things: nothing attnlab did not write is replaced), for a quantized model
    (``attnlab.quantize``: a checkpoint holds the float weights its config builds; nothing is
    written) or when writing fails (the previous checkpoint is then intact).
    """
    quantized = next((m.quant_path for m in model.modules() if getattr(m, "quant_path", None) is not None), None)
    if quantized is not None:  # the model's own mark, or any QuantizedLinear layer in it
        raise CheckpointError(
            f"cannot save a quantized model ({quantized}): a checkpoint holds float weights. Save the "
            f"float model it was quantized from, and quantize after loading (attnlab.quantize.quantize(model, "
            f"scheme), or `attnlab generate --checkpoint DIR --quantize int8`)"
        )
    target = Path(directory)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    config: TransformerConfig = model.config  # type: ignore[assignment]
    try:
        _prepare_destination(target, tmp)
        tensors, aliases = unique_state_dict(model)
        if dtype is not None:
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt", "aliases": json.dumps(aliases)})
        optimizer: dict[str, Any] = {}
        opt_tensors: dict[str, Tensor] = {}
        if training is not None and training.optimizer is not None:
            opt_tensors, optimizer["optimizer"] = _flatten_optimizer(training.optimizer)
        write_layout(tmp, config, tokenizer, training, optimizer, opt_tensors)
        _swap(tmp, target)
    except BaseException as exc:  # whatever the writer raised (safetensors' errors are no OSError), Ctrl-C too
        error = write_failure(target, tmp, exc)
        if error is exc:
            raise
        raise error from exc
    return target


def write_layout(tmp: Path, config: TransformerConfig, tokenizer: Tokenizer, training: TrainingState | None,
                 optimizer: dict[str, Any] | None = None, optimizer_tensors: dict[str, Tensor] | None = None) -> None:
    """Write everything of a checkpoint folder but its weights into ``tmp`` (the one writer of the layout,
    for plain and sharded checkpoints): ``config.json``, ``tokenizer.json``, with ``training`` its
    ``training/`` folder (``state.json``: ``{"info": ..., **optimizer}``, where ``optimizer`` is the
    optimizer's JSON section by name; ``tensors.safetensors``: ``training.tensors`` as ``state.*`` and
    ``optimizer_tensors``), then the marker; every file is flushed to disk. ``tmp`` is swapped in after."""
    _write_json(tmp / CONFIG_FILE, config.to_dict())
    (tmp / TOKENIZER_FILE).write_text(tokenizer.to_json(), encoding="utf-8")
    if training is not None:
        (tmp / "training").mkdir()
        extra = {f"state.{k}": v.detach().contiguous().cpu() for k, v in training.tensors.items()}
        extra.update(optimizer_tensors or {})
        save_file(extra, str(tmp / TENSORS_FILE))
        _write_json(tmp / STATE_FILE, {"info": training.info, **(optimizer or {})})
    _write_json(tmp / MARKER_FILE, MARKER)
    _fsync_tree(tmp)


def write_failure(target: Path, tmp: Path, exc: BaseException) -> BaseException:
    """Clean up after a save of ``target`` that failed with ``exc`` while writing ``tmp``; returns the
    error to raise.

    ``tmp`` is deleted. The error is ``exc`` itself when it is a ``CheckpointError`` or not an ``Exception``
    (Ctrl-C); any other error (``OSError``, safetensors' ``SafetensorError``, torch's ``RuntimeError``, ...)
    becomes a ``CheckpointError`` saying what failed and that the previous checkpoint (if any) is intact.
    Every writer (plain and sharded checkpoints, so ``export`` too) ends a failed save here."""
    shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(exc, CheckpointError) or not isinstance(exc, Exception):
        return exc
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _one_line(str(exc)) or type(exc).__name__
    io = re.search(r'IoError\(Os \{.*message: "([^"]+)"', reason)  # safetensors wraps the OS error in Rust's words
    reason = io.group(1) if io else reason
    kept = (f"; the previous checkpoint at {target} is intact"
            if target.is_dir() or (target.parent / f".{target.name}.old").is_dir() else "")
    return CheckpointError(f"could not write checkpoint {target} ({reason}){kept}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _swap(tmp: Path, target: Path) -> None:
    """Put the finished ``tmp`` at ``target``; the previous checkpoint stays readable at every instant."""
    old = target.parent / f".{target.name}.old"
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old.is_dir() and not target.exists():
            os.replace(old, target)  # the previous checkpoint goes back to its name
        raise
    shutil.rmtree(old, ignore_errors=True)


def _prepare_destination(target: Path, tmp: Path) -> None:
    """Check ``target`` (see ``check_destination``) and create an empty ``tmp`` beside it."""
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        target.rmdir()  # an empty folder holds nothing to lose
    check_destination(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"could not create {target.parent} ({exc.strerror or exc})") from None
    remove_stale_temporaries(target.parent)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()


def is_sharded(directory: str | Path) -> bool:
    """Whether ``directory`` holds a sharded checkpoint (``sharded/``, no ``model.safetensors``)."""
    path = Path(directory)
    return (path / SHARDED_DIR).is_dir() and not (path / MODEL_FILE).exists()


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


def check_shapes(config: TransformerConfig, weights: Path) -> None:
    """Compare the tensor shapes ``config`` implies with those in the safetensors header, allocating
    nothing: the model is built on the meta device and only the file's header is read.

    Raises ``CheckpointError`` naming the file, the tensor, both shapes and the config sizes when
    they disagree (e.g. a ``config.json`` whose ``vocab_size`` the weights do not have).
    """
    if not weights.is_file():
        raise CheckpointError(f"{weights}: file is missing")
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file (truncated or corrupt?): {exc}") from None
    layers = config.n_layers + (config.n_decoder_layers or 0)
    if layers > len(shapes):  # every layer holds tensors: more layers than tensors cannot fit the file
        raise CheckpointError(f"{weights}: config.json asks for {layers} layers but the file holds only "
                              f"{len(shapes)} tensors")
    if config.max_len > MAX_POSITIONS:
        raise CheckpointError(f"{weights.parent / CONFIG_FILE}: max_len {config.max_len} is above the limit of "
                              f"{MAX_POSITIONS} positions")
    with torch.device("meta"):
        meta = build_model(config).state_dict()
    expected = {k: tuple(t.shape) for k, t in meta.items() if k not in aliases}
    problems = _mismatches(expected, shapes)
    if problems:
        sizes = f"vocab_size={config.vocab_size}, d_model={config.d_model}, n_layers={config.n_layers}"
        raise CheckpointError(f"{weights}: weights do not fit the model described by config.json ({sizes}), "
                              f"checked before allocating: " + "; ".join(problems))


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


def load_config(directory: str | Path) -> TransformerConfig:
    """The checkpoint's ``TransformerConfig``; ``CheckpointError`` naming ``config.json`` if it is not one.

    A ``config.json`` without ``norm_bias`` was written before the field existed, when every LayerNorm
    had a bias whatever ``bias`` said: it is read with ``norm_bias`` true (for a LayerNorm model), the
    model its weights belong to.
    """
    path = resolve_checkpoint(directory) / CONFIG_FILE
    data = _read_json(path)
    if isinstance(data, dict) and "norm_bias" not in data:
        data["norm_bias"] = data.get("norm", "layernorm") == "layernorm"
    try:
        return TransformerConfig.from_dict(data)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Build the model described by ``config.json`` and fill it from ``model.safetensors`` (eval mode).

    The weights are read onto the CPU and the model then moved to ``device``: a spelling that
    ``attnlab.device.resolve_device`` accepts (``cpu``, ``auto``, ``cuda:1``, ...; one this machine lacks
    raises ``DeviceError`` before anything is read), or a ``torch.device`` used as given.
    """
    target = device if isinstance(device, torch.device) else resolve_device(device)
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
    if is_sharded(path):  # written by FSDP: consolidated here, in one process
        model = load_sharded_weights(config, path)
    else:
        check_shapes(config, path / MODEL_FILE)  # before build_model allocates anything
        model = build_model(config)
        load_weights(model, path / MODEL_FILE)
    if target.type != "cpu":
        model.to(target)
    model.eval()
    return Checkpoint(path=path, model=model, config=config, tokenizer=tokenizer)


def load_training_state(directory: str | Path) -> TrainingState:
    """The training state saved beside the weights (for ``--resume``).

    Its values are checked (``step`` an integer in range, ``best_val`` a loss that is not NaN, the
    schedule's and optimizer's numbers finite, tensors free of NaN and infinities): a damaged state
    raises ``CheckpointError`` naming the file and the value."""
    path = resolve_checkpoint(directory)
    meta = _read_json(path / STATE_FILE)
    tensors = read_safetensors(path / TENSORS_FILE)
    if not isinstance(meta, dict) or "info" not in meta:
        raise CheckpointError(f"{path / STATE_FILE}: has no 'info' section")
    problem = _bad_info(meta["info"]) or _bad_groups(meta)
    if problem is None:
        nonfinite = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        problem = f"tensor {nonfinite[0]!r} holds NaN or infinite values" if nonfinite else None
    if problem is not None:
        raise CheckpointError(f"{path / STATE_FILE}: {problem}; the training state is damaged (resume from another "
                              f"checkpoint)")
    if "sharded_optimizer" in meta:  # its tensors are read by load_sharded_optimizer, rank by rank
        state = {k.removeprefix("state."): v for k, v in tensors.items() if k.startswith("state.")}
        return TrainingState(info=meta["info"], tensors=state, sharded=path)
    state = {k.removeprefix("state."): v for k, v in tensors.items() if k.startswith("state.")}
    try:
        optimizer = _unflatten_optimizer(tensors, meta["optimizer"]) if "optimizer" in meta else None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path / STATE_FILE}: malformed 'optimizer' section ({exc!r})") from None
    return TrainingState(info=meta["info"], tensors=state, optimizer=optimizer)


STEP_MAX = 1 << 53  # a step counter JSON and float64 hold exactly


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bad_info(info: Any) -> str | None:
    """What is wrong with a training state's ``info`` values, or None: ``step`` must be an integer in
    [0, 2**53], ``best_val`` a number >= 0 that is not NaN (infinity: no validation yet), ``world_size``
    a positive integer, and every number of ``schedule`` finite and >= 0."""
    if not isinstance(info, dict):
        return f"'info' is {type(info).__name__}, not an object"
    step = info.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= STEP_MAX:
        return f"'step' is {step!r}; expected an integer in [0, {STEP_MAX}]"
    best = info.get("best_val", 0.0)
    if not _number(best) or math.isnan(best) or best < 0:
        return f"'best_val' is {best!r}; expected a number >= 0 (a loss)"
    world = info.get("world_size", 1)
    if not isinstance(world, int) or isinstance(world, bool) or world < 1:
        return f"'world_size' is {world!r}; expected a positive integer"
    schedule = info.get("schedule", {})
    if not isinstance(schedule, dict) or not all(_number(v) and math.isfinite(v) and v >= 0 for v in schedule.values()):
        return f"'schedule' is {schedule!r}; expected an object of finite numbers >= 0"
    return None


def _bad_groups(meta: dict[str, Any]) -> str | None:
    """What is wrong with the optimizer's hyper-parameters (every number finite), or None."""
    section = meta.get("optimizer") or meta.get("sharded_optimizer") or {}
    groups = section.get("param_groups", []) if isinstance(section, dict) else []
    for group in groups if isinstance(groups, list) else []:
        for key, value in (group.items() if isinstance(group, dict) else ()):
            values = value if isinstance(value, list) else [value]
            if any(_number(v) and not math.isfinite(v) for v in values):
                return f"optimizer setting {key!r} is {value!r}; expected finite numbers"
    return None


SNAPSHOTS_DIR = "snapshots"  # inside a run folder: one weights-only checkpoint per chosen step
_SNAPSHOT_STEP = re.compile(r"step[-_]?(\d+)$")


def snapshot_dir(run: str | Path, step: int) -> Path:
    """Where a run folder keeps its snapshot of ``step``: ``RUN/snapshots/step-000200`` (a checkpoint
    folder; ``attnlab train --snapshots`` and the web demo's timeline write them)."""
    return Path(run) / SNAPSHOTS_DIR / f"step-{step:06d}"


def snapshot_dirs(run: str | Path) -> dict[int, Path]:
    """``{training step: snapshot checkpoint folder}`` of a run folder (``snapshot_dir``'s names), in
    step order; empty when it has none."""
    root = Path(run) / SNAPSHOTS_DIR
    if not root.is_dir():
        return {}
    found = {int(m[1]): p for p in root.iterdir() if (m := re.fullmatch(r"step-(\d+)", p.name)) and p.is_dir()}
    return dict(sorted(found.items()))


def snapshot_weights(folder: str | Path) -> dict[int, Path]:
    """Snapshot weight files found anywhere under ``folder``, by training step, in step order: a snapshot
    checkpoint's ``step-<n>/model.safetensors`` (``snapshot_dir``) or a bare ``step_<n>.safetensors`` (``step<n>``, ``step-<n>`` too)."""
    found: dict[int, Path] = {}
    for path in sorted(Path(folder).rglob("*.safetensors")):
        match = _SNAPSHOT_STEP.search(path.parent.name if path.stem == "model" else path.stem)
        if match:
            found[int(match[1])] = path
    return dict(sorted(found.items()))


def rng_state() -> dict[str, Tensor]:
    """Torch's global CPU generator state (dropout, init), and the current CUDA GPU's when CUDA is in
    use (dropout on a GPU draws from it), to be saved in ``TrainingState.tensors``."""
    state = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["rng.cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(tensors: dict[str, Tensor]) -> None:
    """Restore ``rng_state()``'s generators; a CUDA state is applied only where CUDA is available."""
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
