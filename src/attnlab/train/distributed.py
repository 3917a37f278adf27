"""Multi-process plumbing (DDP), kept out of the model code and out of the loop's arithmetic.

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``); with
those present we join the process group. Each process runs on one device: with CUDA (``--device auto``
or ``cuda``) rank ``r`` of a machine takes ``cuda:LOCAL_RANK`` and the group talks NCCL; on the CPU it
talks gloo. Without torchrun everything here is a no-op and the loop runs as a single process on the
device ``--device`` names.

Across machines (``torchrun --nnodes N``) nothing here assumes the processes share a machine: what all
ranks must agree on (the run's temporary names, the precision) is decided by rank 0 and sent to the
others (``broadcast_object``), never derived from process ids or timings that differ per machine.
A worker whose torchrun agent is killed (``kill -9`` leaves workers running: the agent starts them in
their own session) stops within about a second (``watch_launcher``) instead of training on.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from attnlab.device import DeviceError, resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # this process's device

    @property
    def is_main(self) -> bool:
        """Only the main rank writes checkpoints, metrics and the progress bar."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def rank_device(spec: str, local_rank: int, world_size: int) -> torch.device:
    """The device of one process: ``resolve_device(spec)``, except that under torchrun (``world_size`` > 1)
    a CUDA choice becomes ``cuda:LOCAL_RANK`` (one GPU per process). Raises ``DeviceError`` when this
    machine has fewer GPUs than processes, or for MPS under torchrun (one Apple GPU cannot be shared)."""
    device = resolve_device(spec)
    if world_size <= 1:
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise DeviceError(f"torchrun process {local_rank} of this machine needs cuda:{local_rank}, but it has "
                              f"{count} GPU(s): start at most {count} processes per machine (--nproc_per_node)")
        return torch.device("cuda", local_rank)
    if device.type == "mps":
        raise DeviceError("--device mps under torchrun: one Apple GPU cannot serve several processes; "
                          "use --device cpu or a single process")
    return device


def setup(device: str = "auto") -> DistEnv:
    """This process's rank and device; joins the process group (NCCL on CUDA, gloo on the CPU) when
    launched by ``torchrun`` with more than one process. Raises ``DeviceError`` (see ``rank_device``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    where = rank_device(device, local_rank, world)
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by a torchrun agent
        watch_launcher()
    if world <= 1:
        return DistEnv(device=where)
    env = DistEnv(int(os.environ["RANK"]), world, local_rank, where)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if where.type == "cuda" else "gloo")
    return env


def wrap(model: nn.Module, env: DistEnv, strategy: str = "ddp") -> nn.Module:
    """The model as the loop runs it; ``model`` must already be on ``env.device``.

    A single process gets ``model`` back. ``ddp``: a ``DistributedDataParallel`` wrapper that averages
    gradients across ranks during ``backward``. ``fsdp``: FSDP2's ``fully_shard`` applied to each
    Transformer block and then to the whole model, in place: every parameter becomes a ``DTensor``
    sharded across ranks (gathered for each block's forward and backward, gradients reduce-scattered
    and averaged), and ``model`` itself is returned. Build the optimizer after this call.
    """
    if not env.enabled:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        from attnlab.nn.layers import Block

        for module in list(model.modules()):
            if isinstance(module, Block):
                fully_shard(module)
        fully_shard(model)
        return model
    return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``wrap`` sharded ``model`` with FSDP."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module) -> Iterator[None]:
    model.set_requires_gradient_sync(False)  # type: ignore[operator]
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)  # type: ignore[operator]


def no_sync(runner: nn.Module, env: DistEnv) -> contextlib.AbstractContextManager:
    """Skip the gradient exchange for a micro-batch that is not the step's last (a no-op alone)."""
    if not env.enabled:
        return contextlib.nullcontext()
    runner = getattr(runner, "_orig_mod", runner)  # under torch.compile
    if isinstance(runner, DistributedDataParallel):
        return runner.no_sync()
    if is_sharded(runner):
        return _fsdp_no_sync(runner)
    return contextlib.nullcontext()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def mean(value: Tensor, env: DistEnv) -> Tensor:
    """The mean of ``value`` over ranks (for logging the global loss)."""
    if not env.enabled:
        return value
    return _all_reduce(value, env) / env.world_size


def sum(value: Tensor, env: DistEnv) -> Tensor:
    """The sum of ``value`` over ranks (for metrics over a sharded validation set)."""
    if not env.enabled:
        return value
    return _all_reduce(value, env)


def _all_reduce(value: Tensor, env: DistEnv, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    """All-reduced copy of ``value`` (NCCL reduces on the GPU, so it travels through ``env.device``),
    on ``value``'s own device."""
    moved = value.detach().clone().to(env.device)
    dist.all_reduce(moved, op=op)
    return moved.to(value.device)


def broadcast_flag(flag: bool, env: DistEnv) -> bool:
    """True on every rank if it is true on any (so all ranks stop together, e.g. on Ctrl-C)."""
    if not env.enabled:
        return flag
    return bool(_all_reduce(torch.tensor([1.0 if flag else 0.0]), env, dist.ReduceOp.MAX).item())


def broadcast_object(value: T, env: DistEnv) -> T:
    """Rank 0's ``value`` (any picklable object, e.g. a decision only rank 0 makes) on every rank;
    ``value`` itself in a single process."""
    if not env.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` in a single process)."""
    if not env.enabled:
        return [value]
    values: list[Any] = [None] * env.world_size
    dist.all_gather_object(values, value)
    return values


_watching: list[threading.Thread] = []


def watch_launcher(interval: float = 0.5) -> None:
    """Stop this process (exit status 1, one line on stderr) once its parent -- the torchrun agent that
    started it -- has ended, checked every ``interval`` seconds by a daemon thread.

    torchrun starts its workers in a session of their own, so a ``kill -9`` of the agent (or of its
    terminal's process group) leaves them training on, holding the run folder. The parent's end is seen
    as ``os.getppid()`` changing (the orphan is adopted by init or a subreaper); this works on Linux and
    macOS alike. Checkpoints are written to a temporary folder and swapped in, so stopping at any
    moment leaves the last complete checkpoint. Started once per process."""
    if _watching:
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        rank = os.environ.get("RANK", "?")
        print(f"attnlab: rank {rank} (process {os.getpid()}) stops: its torchrun agent (process {parent}) has ended",
              file=sys.stderr, flush=True)
        os._exit(1)

    thread = threading.Thread(target=watch, name="attnlab-watch-launcher", daemon=True)
    thread.start()
    _watching.append(thread)


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def teardown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()
