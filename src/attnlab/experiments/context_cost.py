"""context-cost: how time and memory of one attention layer grow with the context length.

The claim: attention compares every token with every other, so its cost grows with the square of
the context. This measures one ``attnlab.nn.MultiHeadAttention`` layer (width 384, 6 heads, batch 1,
bidirectional) forward and backward, with the explicit ``math`` backend (which materialises the
``(heads, n, n)`` weights) and the fused ``sdpa`` kernel (which never does), and fits the growth
exponent (the slope on log-log axes) of each curve.

Peak memory is measured with ``torch.profiler`` (``profile_memory=True``): every allocation and free
by PyTorch's CPU allocator is attributed to the operator that made it; summing those in operator
order gives the live bytes after each top-level operator, and the maximum is the peak *extra* memory
of the forward + backward pass (the layer's weights and input, allocated before, are not counted).
It is exact for tensors, it misses scratch memory an operator allocates and frees inside itself
(small for the fused kernel, which works block by block), and it is independent of what else runs on
the machine, which a process RSS reading is not. Profiling slows operators, so time is measured in a
separate, unprofiled pass.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from attnlab.experiments.common import (
    Mode,
    check_mode,
    default_out,
    finish,
    loglog_fit,
    median_time,
    new_figure,
    pick,
    progress,
    save_figure,
    seed_everything,
)
from attnlab.nn import MultiHeadAttention

NAME = "context-cost"
TITLE = "Cost of one attention layer as the context grows"
D_MODEL, N_HEADS = 384, 6
BACKENDS = ("math", "sdpa")


def peak_extra_bytes(fn: Any) -> int:
    """Peak live bytes allocated by PyTorch while ``fn()`` runs (see the module docstring)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.cpu_parent is None), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.cpu_memory_usage
        peak = max(peak, live)
    return peak


def _layer_and_step(backend: str, n: int, seed: int) -> Any:
    seed_everything(seed)
    layer = MultiHeadAttention(D_MODEL, N_HEADS, backend=backend)  # type: ignore[arg-type]
    x = torch.randn(1, n, D_MODEL, requires_grad=True)

    def forward() -> torch.Tensor:
        return layer(x)

    def forward_backward() -> None:
        layer(x).sum().backward()
        x.grad = None
        layer.zero_grad(set_to_none=True)

    return forward, forward_backward


def measure_time(backend: str, n: int, repeats: int, seed: int = 0) -> dict[str, float]:
    """Forward, backward and total seconds (medians) at ``n`` tokens."""
    forward, forward_backward = _layer_and_step(backend, n, seed)
    total = median_time(forward_backward, repeats, warmup=1)
    fwd = median_time(forward, repeats, warmup=0)
    return {"tokens": n, "backend": backend, "forward_s": fwd, "backward_s": max(total - fwd, 0.0), "total_s": total}


def measure_memory(backend: str, n: int, seed: int = 0) -> int:
    """Peak extra bytes of one forward + backward at ``n`` tokens.

    Run every timing before any profiling: after ``torch.profiler`` has run once, later small
    operators in the same process were measured up to 10x slower on this machine.
    """
    _, forward_backward = _layer_and_step(backend, n, seed)
    return peak_extra_bytes(forward_backward)


def run(mode: Mode = "quick", out: str | Path | None = None, *, show_progress: bool = True,
        max_tokens: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Measure both backends over a doubling range of lengths; write results.json and two plots."""
    mode = check_mode(mode)
    started = time.perf_counter()
    out = Path(out) if out is not None else default_out(NAME)
    top = max_tokens or pick(mode, 256, 2048, 8192)
    lengths = [n for n in (64, 128, 256, 512, 1024, 2048, 4096, 8192) if pick(mode, 64, 128, 128) <= n <= top]
    repeats = pick(mode, 1, 5, 3)
    jobs = [(b, n) for n in lengths for b in BACKENDS]
    bar = progress(None, total=2 * len(jobs), desc=NAME, enabled=show_progress)
    rows = []
    for backend, n in jobs:
        rows.append(measure_time(backend, n, repeats if n <= 2048 else 1, seed))
        bar.update()
    for row in rows:
        row["peak_bytes"] = measure_memory(row["backend"], row["tokens"], seed)
        bar.update()
    bar.close()

    fits: dict[str, dict[str, float]] = {}
    for backend in BACKENDS:
        mine = [r for r in rows if r["backend"] == backend]
        # Fit on the upper half of the range: at short lengths fixed costs (projections, call
        # overhead) hide the asymptotic growth the claim is about.
        upper = mine[len(mine) // 2 - 1:] if len(mine) >= 4 else mine
        fits[backend] = {
            "time_exponent": loglog_fit([r["tokens"] for r in upper], [r["total_s"] for r in upper])[0],
            "memory_exponent": loglog_fit([r["tokens"] for r in upper], [r["peak_bytes"] for r in upper])[0],
            "fit_from_tokens": upper[0]["tokens"],
        }

    fig, axes = new_figure(ncols=2, width=5.2)
    for ax, key, label, scale in ((axes[0][0], "total_s", "seconds (forward + backward)", 1.0),
                                  (axes[0][1], "peak_bytes", "peak extra memory (MB)", 1e-6)):
        for backend, marker in zip(BACKENDS, "os", strict=True):
            mine = [r for r in rows if r["backend"] == backend]
            exp = fits[backend]["time_exponent" if key == "total_s" else "memory_exponent"]
            ax.loglog([r["tokens"] for r in mine], [r[key] * scale for r in mine], marker=marker,
                      base=2, label=f"{backend}: slope {exp:.2f}")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="backend, fitted exponent")
    fig.suptitle(f"One attention layer (width {D_MODEL}, {N_HEADS} heads), CPU")
    figures = [save_figure(fig, out, "context_cost.png")]

    summary = [
        f"{b}: time ~ n^{fits[b]['time_exponent']:.2f}, peak memory ~ n^{fits[b]['memory_exponent']:.2f} "
        f"(fitted from {fits[b]['fit_from_tokens']} tokens)" for b in BACKENDS
    ]
    last = {b: next(r for r in reversed(rows) if r["backend"] == b) for b in BACKENDS}
    summary.append(
        f"at {lengths[-1]} tokens: math {last['math']['total_s']:.3f} s / {last['math']['peak_bytes'] / 1e6:.1f} MB, "
        f"sdpa {last['sdpa']['total_s']:.3f} s / {last['sdpa']['peak_bytes'] / 1e6:.1f} MB"
    )
    return finish(NAME, TITLE, mode, seed, started, out, figures=figures, summary=summary,
                  data={"d_model": D_MODEL, "n_heads": N_HEADS, "batch": 1, "rows": rows, "fits": fits},
                  notes=["memory: peak live bytes from torch.profiler allocation records (see module docstring)"])
