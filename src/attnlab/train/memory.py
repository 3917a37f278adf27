"""Out of memory, in words: the size that was asked for, what the machine has, and a smaller setting.

PyTorch reports a failed allocation as ``torch.OutOfMemoryError`` (CUDA: "Tried to allocate 2.00
GiB") or, on the CPU, as a plain ``RuntimeError`` carrying the allocator's text ("DefaultCPUAllocator:
can't allocate memory: you tried to allocate 40000000000 bytes"). ``asked_bytes`` recognises both;
``training_out_of_memory`` turns one raised by a training run into an ``OutOfMemory`` error whose one
line names the size and suggests a setting computed from the run's numbers: a narrower model when the
weights with their gradients and AdamW moments alone need more than half the memory, else a smaller
``--batch-size`` with ``--accum`` keeping the sequences per step. ``model_too_large`` estimates before
any work (on the meta device) whether those 16 bytes per parameter can fit at all.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

_CPU = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")
_CUDA = re.compile(r"Tried to allocate ([\d.]+) (GiB|MiB|KiB|B)")
_UNITS = {"GiB": 1 << 30, "MiB": 1 << 20, "KiB": 1 << 10, "B": 1}
_TRAINING_BYTES_PER_PARAMETER = 16  # float32 weights, gradients and AdamW's two moments
MAX_ACCUM = 4096  # --accum's upper bound


class OutOfMemory(RuntimeError):
    """A run that asked for more memory than the machine has; the message says how much and what to try."""

    exit_code = 1


def asked_bytes(exc: BaseException) -> int | None:
    """The bytes a failed allocation asked for; 0 when ``exc`` is out of memory of unknown size; None
    when ``exc`` is not an out-of-memory error."""
    torch = sys.modules.get("torch")
    oom = torch is not None and isinstance(exc, torch.OutOfMemoryError)
    if not (oom or isinstance(exc, RuntimeError | MemoryError)):
        return None
    text = str(exc)
    if (found := _CPU.search(text)) is not None:
        return int(found.group(1))
    if (found := _CUDA.search(text)) is not None:
        return int(float(found.group(1)) * _UNITS[found.group(2)])
    return 0 if oom or isinstance(exc, MemoryError) or "can't allocate memory" in text else None


def gigabytes(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def machine_memory(exc: BaseException) -> int | None:
    """The memory of the device that ran out: the current CUDA GPU's for a CUDA error, else this
    machine's physical memory (None where the platform does not say)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _parameters(config: Any) -> int:
    import torch

    from attnlab.models import build_model

    with torch.device("meta"):
        return sum(t.numel() for t in build_model(config).parameters())


def _narrower(config: Any, budget: float) -> tuple[int, int] | None:
    """The widest ``d_model`` (halving, a multiple of the heads) whose training state fits ``budget``
    bytes, and its parameter count; None when even the narrowest does not."""
    d_model, step = config.d_model, 2 * config.n_heads
    while d_model > step:
        d_model = max(step, d_model // 2 // step * step)
        smaller = config.replace(d_model=d_model, head_dim=None)
        n = _parameters(smaller)
        if n * _TRAINING_BYTES_PER_PARAMETER <= budget:
            return d_model, n
    return None


def device_memory(device: Any) -> int | None:
    """The memory a run on ``device`` (a ``torch.device``) has: the GPU's for CUDA, else this machine's."""
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return machine_memory(RuntimeError())


def model_too_large(cfg: Any, device: Any, world_size: int = 1) -> str | None:
    """Before any work: why the model of a run cannot be trained on ``device`` (its float32 weights,
    gradients and AdamW moments alone exceed the device's memory, per process for ``fsdp``), with a
    narrower ``d_model`` that fits, or None. Nothing is allocated (the model is built on the meta device)."""
    memory = device_memory(device)
    try:
        config = run_model_config(cfg)
    except Exception:  # a checkpoint that cannot say is reported by the run itself
        return None
    if memory is None:
        return None
    n_params = _parameters(config)
    share = world_size if cfg.strategy == "fsdp" else 1
    state = n_params * _TRAINING_BYTES_PER_PARAMETER / share
    if state <= memory:
        return None
    return (f"the model has {'' if cfg.resume else 'about '}{n_params:,} parameters, {gigabytes(state)} with their "
            f"gradients and AdamW moments in float32{' per process' if share > 1 else ''}, more than the "
            f"{gigabytes(memory)} of memory here; {_narrower_hint(config, memory * share / 4)}")


def _narrower_hint(config: Any, budget: float) -> str:
    smaller = _narrower(config, budget)
    if smaller is None:
        return "try fewer layers (--set n_layers=...) and a narrower model"
    return f"try --set d_model={smaller[0]} ({smaller[1]:,} parameters)"


def training_out_of_memory(exc: BaseException, cfg: Any, config: Any = None) -> OutOfMemory | None:
    """``exc`` as an ``OutOfMemory`` error naming the size asked for and a smaller setting to try, or
    None when ``exc`` is not out of memory. ``cfg`` is the run's ``TrainConfig``, ``config`` the model's
    ``TransformerConfig`` (default: ``run_model_config(cfg)``, whose vocabulary may be the preset's:
    the parameter count is then approximate)."""
    asked = asked_bytes(exc)
    if asked is None:
        return None
    if config is None:
        try:
            config = run_model_config(cfg)
        except Exception:  # the checkpoint cannot say: the batch is still worth naming
            config = None
    memory = machine_memory(exc)
    has = f", and this machine has {gigabytes(memory)}" if memory else ""
    head = f"out of memory: the run asked for {gigabytes(asked)} in one allocation{has}" if asked else \
        f"out of memory{has.replace(', and', ':')}"
    n_params = _parameters(config) if config is not None else 0
    state = n_params * _TRAINING_BYTES_PER_PARAMETER
    if memory and state > memory / 2:
        hint = _narrower_hint(config, memory / 4)
        about = "" if cfg.resume else "about "  # a fresh run's vocabulary is the preset's until its tokenizer is trained
        return OutOfMemory(f"{head}; the model has {about}{n_params:,} parameters, {gigabytes(state)} with their gradients "
                           f"and AdamW moments in float32; {hint}")
    if cfg.batch_size <= 1:
        return OutOfMemory(f"{head} at --batch-size 1; try a shorter context (--set max_len=...) or a narrower model")
    # the failed tensor grows with the batch; a step holds many such tensors: aim it at 1/16 of memory
    target = cfg.batch_size * memory / (16 * asked) if asked and memory else cfg.batch_size / 4
    batch = 1
    while batch * 2 <= min(target, cfg.batch_size // 2):
        batch *= 2
    per_step = cfg.batch_size * cfg.accum
    accum = min(MAX_ACCUM, -(-per_step // batch))
    return OutOfMemory(f"{head} (--batch-size {cfg.batch_size}); try --batch-size {batch} "
                       f"--accum {accum} ({batch * accum:,} sequences per step; the run had {per_step:,})")


def run_model_config(cfg: Any) -> Any:
    """The model config a run trains: the checkpoint's for ``--resume``, else the preset with ``--set``
    (its vocabulary is the preset's; the task may change it)."""
    from attnlab.models import preset
    from attnlab.weights.checkpoint import load_config

    if cfg.resume:
        return load_config(os.path.join(cfg.out, "last"))
    return preset(cfg.preset).replace(**cfg.model_overrides)
