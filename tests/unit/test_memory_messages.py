"""Out-of-memory errors are recognised in the forms torch raises them and become words (issue 23 item 7)."""

from __future__ import annotations

import torch

from attnlab.cli import _message
from attnlab.train.memory import asked_bytes

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
