"""Where a computation runs and in which precision: one place that decides, says why, and fails clearly.

``resolve_device("auto")`` picks CUDA when a CUDA GPU is visible, else Apple's MPS, else the CPU; an
explicit ``cuda``, ``cuda:N`` or ``mps`` that this machine cannot provide is a ``DeviceError`` naming what is
missing. ``choose_precision("auto", device, workload=...)`` picks bfloat16 autocast only where it pays: on
a CUDA GPU that supports bf16, and on a CPU where the caller's own work (a ``Workload``: one training step
of the model's real shape, say) runs measurably faster in bf16 autocast than in float32. A fast bf16
matmul is not enough: CPUs with AVX-512 BF16 or AMX multiply 512 x 512 matrices ~5x faster in bf16, yet a
small model's training step, dominated by the casts and element-wise work autocast adds, ran slower in bf16
than in fp32 there. The measurement (a few steps in each precision) is cached per workload shape, machine
(CPU model, instruction set, threads) and torch version in ``$XDG_CACHE_HOME/attnlab/precision.json``
(default ``~/.cache``), so later runs do not pay it again. It never changes the global random state.
``ATTNLAB_BF16_PROBE=fast|slow`` forces the outcome without measuring (bf16 or fp32), so that tests can
run under both on any CPU. float16 needs a gradient scaler and is only offered on CUDA.

The walkthrough and ``attnlab.inspect`` do not use this module: they stay in float32 so that every number
they show matches the reference implementation.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

DEVICE_HELP = "auto (CUDA if available, else MPS, else CPU) | cpu | cuda | cuda:N | mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: bf16 autocast is chosen on a CPU only when the measured work runs at least this many times faster in it
#: than in fp32 (a margin: smaller differences are within timing noise, and bf16 costs a little accuracy).
CPU_BF16_MIN_SPEEDUP = 1.1
#: The environment variable that forces the CPU probe's outcome: ``fast`` (bf16 pays) or ``slow`` (it does not).
PROBE_ENV = "ATTNLAB_BF16_PROBE"


class DeviceError(ValueError):
    """A device or precision this machine cannot provide; the message names what is missing."""


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` (or a ``torch.device``) -> an available device.

    Raises ``DeviceError`` for an unknown spelling, or a device this machine lacks (CUDA not available
    in this torch build or no GPU visible; GPU index out of range; MPS not built or not available).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not torch.backends.mps.is_built():
            raise DeviceError("--device mps: this torch build has no MPS (Apple GPU) support")
        if not _mps_available():
            raise DeviceError("--device mps: no Apple GPU is available on this machine")
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise DeviceError(f"--device {spec}: the GPU index must be a whole number (cuda:0, cuda:1, ...)")
        if torch.version.cuda is None:
            raise DeviceError(f"--device {spec}: this torch build has no CUDA support (torch {torch.__version__}); "
                              "install a CUDA build of torch or use --device cpu")
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {spec}: no CUDA GPU is visible (driver missing or CUDA_VISIBLE_DEVICES "
                              "empty); use --device cpu")
        index = int(index_text) if index_text else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"--device {spec}: GPU {index} does not exist; this machine has {count} (0 to {count - 1})")
        return torch.device("cuda", index)
    raise DeviceError(f"unknown device {spec!r}; choose {DEVICE_HELP}")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


@dataclass(frozen=True)
class Precision:
    """The chosen arithmetic: ``name`` (fp32, bf16, fp16), the autocast dtype (``None`` for fp32) and why."""

    name: str
    dtype: torch.dtype | None
    reason: str

    @property
    def needs_grad_scaler(self) -> bool:
        """float16 gradients underflow without loss scaling (bf16 has float32's exponent range and does not)."""
        return self.name == "fp16"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context for a forward pass on ``device`` (a no-op context for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def cpu_flags() -> list[str]:
    """The CPU's AVX-512 / AMX / VNNI flags (what decides the kernels' and bf16's speed); [] off Linux."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            line = next((line for line in f if line.startswith("flags")), "flags:")
    except OSError:
        return []
    return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx512", "amx", "avx_vnni")))


def cpu_description() -> str:
    """CPU model, instruction-set level torch dispatches to, and the flags that decide bf16 speed."""
    model, flags = platform.processor() or "cpu", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return (f"{model}; torch capability {torch.backends.cpu.get_cpu_capability()}; "
            f"flags {' '.join(shown) or 'none of avx2/avx512/amx'}")


@dataclass(frozen=True)
class Workload:
    """One unit of the work a precision is being chosen for, for ``choose_precision("auto")`` to time.

    ``step(autocast)`` runs it once (a training step's forward and backward, or an inference forward
    pass) with the context manager ``autocast`` around its forward pass (as the real work runs it), and
    leaves no trace (no optimizer step; gradients cleared). ``key`` names everything its cost depends on (the model's configuration and the batch
    shape), ``what`` names it in the log line (``"training step"``). ``step`` may draw random numbers
    (dropout): the probe restores the global generator afterwards.
    """

    key: str
    step: Callable[[contextlib.AbstractContextManager], object]
    what: str = "training step"


def time_workload(workload: Workload, device: torch.device, *, repeats: int = 3,
                  clock: Callable[[], float] = time.perf_counter) -> float:
    """fp32 seconds over bf16-autocast seconds of one ``workload.step()``: above 1, bf16 is faster.

    One warm-up call per precision, then ``repeats`` rounds alternating the two (so a load that comes
    and goes hits both alike); the fastest call of each counts (other processes only ever slow a call
    down). The CPU's global random state is the same afterwards as before.
    """
    autocast = {False: contextlib.nullcontext, True: lambda: torch.autocast(device.type, dtype=torch.bfloat16)}
    best = {False: float("inf"), True: float("inf")}
    with torch.random.fork_rng(devices=[]):
        for bf16 in (False, True):
            workload.step(autocast[bf16]())
        for _ in range(repeats):
            for bf16 in (False, True):
                start = clock()
                workload.step(autocast[bf16]())
                best[bf16] = min(best[bf16], clock() - start)
    return best[False] / max(best[True], 1e-12)


def bf16_matmul_speedup(size: int = 512, repeats: int = 3) -> float:
    """How many times faster a ``size`` x ``size`` bf16 matmul runs than an fp32 one on this CPU.

    The fastest of ``repeats`` calls per dtype after one warm-up (other processes only ever slow a call
    down, so the minimum is the steadiest estimate). Below 1: bf16 is emulated and slower. The inputs
    come from a private generator (the global one is left alone). Only a hint: a model's step can be
    slower in bf16 autocast where this is much faster (see the module docstring).
    """
    generator = torch.Generator().manual_seed(0)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, generator=generator).to(dtype)
        b = torch.randn(size, size, generator=generator).to(dtype)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        times[dtype] = best
    return times[torch.float32] / times[torch.bfloat16]


def cache_home() -> Path:
    """attnlab's folder in the user cache: ``$XDG_CACHE_HOME/attnlab`` (default ``~/.cache/attnlab``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attnlab"


def _cache_file() -> Path:
    return cache_home() / "precision.json"


def cpu_bf16_speedup(*, probe: Callable[[], float] = bf16_matmul_speedup, cache: Path | None = None,
                     key: str = "") -> tuple[float, bool]:
    """``(speedup, from_cache)``: ``probe()``'s bf16/fp32 speed ratio on this machine, probed once and cached.

    The cache key is ``key`` (what was measured: a workload's shape, or empty for the matmul probe),
    the CPU description, the thread count and the torch version: other work, another machine or another
    torch build probes again. An unreadable or unwritable cache is ignored.
    """
    path = cache or _cache_file()
    full_key = f"{key + ' | ' if key else ''}{cpu_description()} | threads {torch.get_num_threads()} | torch {torch.__version__}"
    entries: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            entries = {k: float(v) for k, v in loaded.items() if isinstance(v, (int, float))}
    if full_key in entries:
        return entries[full_key], True
    speedup = float(probe())
    entries[full_key] = speedup
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    return speedup, False


def _forced_outcome() -> str | None:
    value = os.environ.get(PROBE_ENV, "").strip().lower()
    if value in ("", "fast", "slow"):
        return value or None
    raise DeviceError(f"{PROBE_ENV}={os.environ[PROBE_ENV]!r}: use fast (bf16 pays), slow (it does not) or leave it unset")


def choose_precision(
    spec: str, device: torch.device, *, workload: Workload | None = None, probe: Callable[[], float] | None = None,
    cache: Path | None = None,
) -> Precision:
    """``auto`` | ``fp32`` | ``bf16`` | ``fp16`` for training or generation on ``device``; see the module docstring.

    On a CPU, ``auto`` measures ``workload`` (``time_workload``; ``probe`` replaces the measurement,
    e.g. with injected figures) and picks bf16 only from ``CPU_BF16_MIN_SPEEDUP`` times faster; without a
    workload it falls back on a matmul probe and says so. ``ATTNLAB_BF16_PROBE=fast|slow`` forces the
    outcome. The ``reason`` says what was measured. Raises ``DeviceError`` for an unknown name, fp16 off
    CUDA, bf16 on a CUDA GPU without bf16 support, or a bad ``ATTNLAB_BF16_PROBE``.
    """
    name = (spec or "auto").strip().lower()
    if name not in PRECISIONS:
        raise DeviceError(f"unknown precision {spec!r}; choose one of {', '.join(PRECISIONS)}")
    if name == "fp32":
        return Precision("fp32", None, "asked for (--precision fp32)")
    if name == "fp16":
        if device.type != "cuda":
            raise DeviceError("--precision fp16 needs a CUDA GPU (it trains with a gradient scaler there); "
                              "on this device use bf16 or fp32")
        return Precision("fp16", torch.float16, "asked for (--precision fp16), with a gradient scaler")
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            if name == "bf16":
                raise DeviceError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; "
                                  "use fp16 or fp32")
            return Precision("fp32", None, f"{torch.cuda.get_device_name(device)} has no bf16 support")
        why = "asked for (--precision bf16)" if name == "bf16" else f"{torch.cuda.get_device_name(device)} supports bf16"
        return Precision("bf16", torch.bfloat16, why)
    if name == "bf16":
        return Precision("bf16", torch.bfloat16, "asked for (--precision bf16)")
    if device.type == "mps":
        return Precision("fp32", None, "auto keeps fp32 on MPS (bf16 autocast support there varies by macOS version)")
    forced = _forced_outcome()
    if forced is not None:
        chosen = "bf16" if forced == "fast" else "fp32"
        return Precision(chosen, torch.bfloat16 if chosen == "bf16" else None,
                         f"{PROBE_ENV}={forced} forces {chosen} (nothing measured)")
    if workload is not None:
        speedup, cached = cpu_bf16_speedup(probe=probe or (lambda: time_workload(workload, device)), cache=cache,
                                           key=f"{workload.what}: {workload.key}")
        how = "measured, cached" if cached else "measured"
        if speedup >= CPU_BF16_MIN_SPEEDUP:
            return Precision("bf16", torch.bfloat16,
                             f"bf16: {speedup:.2f}x faster than fp32 on this model's {workload.what} ({how})")
        return Precision("fp32", None, f"bf16 autocast ran this model's {workload.what} at {speedup:.2f}x the fp32 "
                                       f"speed ({how}); bf16 is chosen from {CPU_BF16_MIN_SPEEDUP}x")
    speedup, cached = cpu_bf16_speedup(probe=probe or bf16_matmul_speedup, cache=cache)
    source = "cached probe" if cached else "probe"
    if speedup >= CPU_BF16_MIN_SPEEDUP:
        return Precision("bf16", torch.bfloat16, f"a bf16 matmul runs {speedup:.1f}x faster than fp32 on this CPU "
                                                 f"({source}; no workload of the model's was measured)")
    return Precision("fp32", None, f"a bf16 matmul runs at {speedup:.2f}x the fp32 speed on this CPU ({source}); "
                                   f"bf16 pays from {CPU_BF16_MIN_SPEEDUP}x")


# ------------------------------------------------------------------------------------- threads

#: torch's own default (the physical cores it may use), read before anything here changes it.
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def choose_threads(requested: int = 0, *, load: float | None = None, cores: int | None = None,
                   processes: int | None = None) -> tuple[int, str]:
    """``(threads, why)`` for ``torch.set_num_threads``: ``requested`` when it is above 0, else a choice
    that stays fast on a busy machine.

    OpenMP's worker threads wait for one another at the end of every parallel region, so one worker
    that the OS has descheduled (another process holds its core) stalls all of them: on a 2-core machine
    with one other busy process, 2 threads ran SmolLM2's prefill ~40x slower than 1. The automatic
    choice therefore leaves one core free (``cores - 1``, at least 1), takes fewer when the 1-minute load
    average says other processes are busy (``cores - load``), and shares the cores among the
    ``processes`` of a torchrun launch on this machine (``LOCAL_WORLD_SIZE``). ``OMP_NUM_THREADS``, when
    set, is used as given. ``cores`` defaults to torch's own default (physical cores), ``load`` to
    ``os.getloadavg()[0]``.
    """
    if requested > 0:
        return requested, "asked for (--threads)"
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    cores = cores or TORCH_DEFAULT_THREADS
    processes = processes or max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    free = int(cores - load)
    threads = max(1, min(cores - 1, free) // processes)
    why = f"auto: {cores} cores, load {load:.1f}"
    if processes > 1:
        why += f", {processes} processes on this machine"
    return threads, why + "; one core left free so a busy core cannot stall every thread"


def set_threads(requested: int = 0) -> str:
    """Apply ``choose_threads(requested)`` to torch; returns the line to log (``"threads 1 (why)"``)."""
    threads, why = choose_threads(requested)
    torch.set_num_threads(threads)
    return f"threads {threads} ({why})"
