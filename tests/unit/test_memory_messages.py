"""Out-of-memory errors are recognised in the forms torch raises them and become words (issue 23 item 7)."""

from __future__ import annotations

import torch

import attnlab.train.memory as memory
from attnlab.cli import _message
from attnlab.models import preset
from attnlab.train.config import TrainConfig
from attnlab.train.memory import asked_bytes, training_out_of_memory

CPU_TEXT = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 40000000000 bytes. Error code 12 (Cannot allocate memory)")
CUDA_TEXT = ("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.2 GiB "
             "is free. Of the allocated memory 77.1 GiB is allocated by PyTorch")


def test_the_size_asked_for_is_read_from_torchs_cpu_and_cuda_errors() -> None:
    assert asked_bytes(RuntimeError(CPU_TEXT)) == 40_000_000_000
    assert asked_bytes(torch.OutOfMemoryError(CUDA_TEXT)) == int(2.5 * 2**30)
    assert asked_bytes(torch.OutOfMemoryError("out of memory")) == 0  # out of memory, size unknown
    assert asked_bytes(MemoryError()) == 0
    assert asked_bytes(RuntimeError("shape mismatch")) is None
    assert asked_bytes(ValueError(CPU_TEXT)) is None


def test_other_commands_name_the_size_not_the_allocator() -> None:
    assert _message(RuntimeError(CPU_TEXT)) == "out of memory: 40.0 GB asked for at once; use smaller sizes"
    assert _message(torch.OutOfMemoryError(CUDA_TEXT)) == "out of memory: 2.7 GB asked for at once; use smaller sizes"


def test_a_model_whose_training_state_nearly_fills_memory_gets_a_narrower_width(tmp_path, monkeypatch) -> None:
    """Out of memory while training a model whose weights, gradients and AdamW moments (16 bytes per
    parameter) take more than half the memory: the hint is a d_model whose state fits a quarter."""
    cfg = TrainConfig(data=str(tmp_path / "c.txt"), out=str(tmp_path / "run"), model_overrides={"d_model": 1024})
    config = preset(cfg.preset).replace(d_model=1024)
    n = memory._parameters(config)
    monkeypatch.setattr(memory, "machine_memory", lambda exc: int(n * 16 * 1.5))
    error = training_out_of_memory(RuntimeError(CPU_TEXT), cfg, config)
    text = str(error)
    assert text.startswith(f"out of memory: the run asked for 40.0 GB in one allocation, and this machine has "
                           f"{n * 24 / 1e9:,.1f} GB; the model has about {n:,} parameters, {n * 16 / 1e9:,.1f} GB"), text
    width = int(text.rsplit("--set d_model=", 1)[1].split(" ")[0])
    assert width % config.n_heads == 0 and width < 1024
    assert memory._parameters(config.replace(d_model=width, head_dim=None)) * 16 <= n * 16 * 1.5 / 4
