"""heads-form: watch attention patterns emerge from noise while a model learns.

At initialisation every head attends almost uniformly (its rows have nearly maximal entropy). As the
character-level Shakespeare model (``preset("shakespeare-char")``) trains, heads specialise: some
lock onto the previous character, some park on the first token, others stay broad. This records, at
intervals, each head's mean attention entropy on fixed validation windows and the role that
``attnlab.inspect.roles`` detects on one probe window, together with the validation loss.

Everything is read from the model's own forward pass through its hook points (``run_with_cache``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from attnlab.experiments.common import (
    CharCorpus,
    Mode,
    check_mode,
    default_out,
    eval_lm_loss,
    finish,
    load_corpus,
    new_figure,
    pick,
    progress,
    save_figure,
    seed_everything,
)
from attnlab.inspect import run_with_cache
from attnlab.inspect.roles import ROLES, detect_roles
from attnlab.models import DecoderLM, preset
from attnlab.models.init import init_weights
from attnlab.train.step import train_step

NAME = "heads-form"
TITLE = "How attention heads form during training"
ROLE_COLOURS = {"previous-token": "tab:red", "first-token": "tab:blue", "same-token": "tab:green",
                "broad": "tab:grey", None: "white"}


def snapshot_steps(steps: int, count: int) -> list[int]:
    """Denser early (where patterns appear fast), sparser late: roughly geometric in the step number."""
    points = {0, steps}
    for i in range(1, count - 1):
        points.add(round(steps ** (i / (count - 1))))
    return sorted(p for p in points if 0 <= p <= steps)


@torch.no_grad()
def snapshot(model: DecoderLM, probe: torch.Tensor) -> dict[str, Any]:
    """Per layer and head: mean row entropy (nats) over the probe windows, row-sum error, role of window 0."""
    _, cache = run_with_cache(model, probe, names="*attn.hook_weights")
    layers = []
    for layer in range(model.config.n_layers):
        w = cache.attention(layer)  # (batch, heads, q_len, k_len)
        entropy = -(w * torch.log(w.clamp_min(1e-12))).sum(-1)  # (batch, heads, q_len)
        roles = detect_roles(w[:1], causal=True)
        layers.append({
            "entropy": entropy[:, :, 1:].mean(dim=(0, 2)).tolist(),  # row 0 sees one key: entropy 0 always
            "row_sum_error": float((w.sum(-1) - 1).abs().max()),
            "roles": [r.role for r in roles],
            "role_scores": [r.scores for r in roles],
        })
    return {"layers": layers}


def attention_maps(model: DecoderLM, window: torch.Tensor) -> torch.Tensor:
    _, cache = run_with_cache(model, window, names="*attn.hook_weights")
    return torch.stack([cache.attention(i)[0] for i in range(model.config.n_layers)])  # (layers, heads, q, k)


def run(mode: Mode = "quick", out: str | Path | None = None, *, data: str | Path | None = None,
        show_progress: bool = True, seed: int = 0) -> dict[str, Any]:
    """Train the Shakespeare preset from scratch on ``data`` (default: synthetic text), recording heads."""
    mode = check_mode(mode)
    started = time.perf_counter()
    out = Path(out) if out is not None else default_out(NAME)
    corpus: CharCorpus = load_corpus(data, n_synthetic=pick(mode, 20_000, 200_000, 400_000), seed=seed)
    steps, batch = pick(mode, 24, 500, 2000), 12
    seed_everything(seed)
    config = preset("shakespeare-char", vocab_size=corpus.vocab_size)
    if mode == "tiny":  # same shape of experiment, a smaller model
        config = config.replace(d_model=64, n_layers=2, d_ff=256)
    model = DecoderLM(config)
    init_weights(model, config)
    block = config.max_len
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    probe, _ = corpus.sampler("val", 8, block, seed + 30_000).next()
    schedule = snapshot_steps(steps, pick(mode, 4, 12, 14))
    batches = corpus.sampler("train", batch, block, seed)
    eval_batches = pick(mode, 2, 8, 16)

    snapshots = []
    maps_start = attention_maps(model, probe[:1])
    for step in progress(range(steps + 1), desc=NAME, enabled=show_progress):
        if step in schedule:
            snap = snapshot(model, probe)
            snap["step"] = step
            snap["val_loss"] = eval_lm_loss(model, corpus, block, eval_batches, 16, seed)
            snapshots.append(snap)
        if step == steps:
            break
        x, y = batches.next()
        train_step(model, opt, lambda x=x, y=y: F.cross_entropy(model(x).reshape(-1, corpus.vocab_size), y.reshape(-1)))
    maps_end = attention_maps(model, probe[:1])

    figures = [_plot_entropy(snapshots, config.n_layers, config.n_heads, block, out),
               _plot_maps(maps_start, maps_end, snapshots[-1]["step"], out),
               _plot_roles(snapshots, out)]
    first, last = snapshots[0], snapshots[-1]
    mean_entropy = [sum(sum(lay["entropy"]) for lay in s["layers"]) / (config.n_layers * config.n_heads)
                    for s in (first, last)]
    roles_end = [r for lay in last["layers"] for r in lay["roles"]]
    summary = [
        f"val loss {first['val_loss']:.3f} -> {last['val_loss']:.3f} after {steps} steps (batch {batch} x {block})",
        f"mean head entropy {mean_entropy[0]:.3f} -> {mean_entropy[1]:.3f} nats "
        f"(uniform over the visible keys averages {_uniform_entropy(block):.3f})",
        "roles at the end: " + ", ".join(f"{role or 'none'} {roles_end.count(role)}" for role in (*ROLES, None)),
    ]
    return finish(NAME, TITLE, mode, seed, started, out, figures=figures, summary=summary, corpus_file=data,
                  data={"corpus": corpus.source, "corpus_chars": len(corpus.train) + len(corpus.val),
                        "config": config.to_dict(), "steps": steps, "batch": batch, "snapshots": snapshots})


def _uniform_entropy(block: int) -> float:
    return sum(math.log(i + 1) for i in range(1, block)) / (block - 1)


def _plot_entropy(snapshots: list[dict[str, Any]], n_layers: int, n_heads: int, block: int, out: Path) -> str:
    fig, axes = new_figure(ncols=n_layers + 1, width=3.4, height=3.2)
    steps = [max(s["step"], 0.5) for s in snapshots]
    for layer in range(n_layers):
        ax = axes[0][layer]
        for head in range(n_heads):
            ax.plot(steps, [s["layers"][layer]["entropy"][head] for s in snapshots], marker=".", label=f"head {head}")
        ax.axhline(_uniform_entropy(block), color="grey", linestyle=":", label="uniform")
        ax.set(xscale="log", xlabel="step (0 drawn at 0.5)", title=f"layer {layer}", ylim=(0, None))
        if layer == 0:
            ax.set_ylabel("mean attention entropy (nats)")
            ax.legend(fontsize=7)
    ax = axes[0][n_layers]
    ax.plot(steps, [s["val_loss"] for s in snapshots], marker=".", color="black")
    ax.set(xscale="log", xlabel="step", title="validation loss")
    return save_figure(fig, out, "entropy.png")


def _plot_maps(start: torch.Tensor, end: torch.Tensor, end_step: int, out: Path) -> str:
    n_layers, n_heads = start.shape[:2]
    span = min(start.shape[-1], 32)
    fig, axes = new_figure(ncols=2 * n_heads, nrows=n_layers, width=1.5, height=1.5)
    for layer in range(n_layers):
        for head in range(n_heads):
            for col, maps in ((head, start), (n_heads + head, end)):
                ax = axes[layer][col]
                ax.imshow(maps[layer, head, :span, :span].numpy(), cmap="viridis", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if layer == 0:
                    ax.set_title(f"{'init' if maps is start else f'step {end_step}'} h{head}", fontsize=7)
            axes[layer][0].set_ylabel(f"layer {layer}", fontsize=7)
    return save_figure(fig, out, "attention_maps.png")


def _plot_roles(snapshots: list[dict[str, Any]], out: Path) -> str:
    from matplotlib.patches import Patch, Rectangle

    labels = [f"L{i}H{j}" for i, lay in enumerate(snapshots[0]["layers"]) for j in range(len(lay["roles"]))]
    fig, axes = new_figure(width=max(4.0, 0.45 * len(snapshots) + 2.5), height=0.28 * len(labels) + 1.6)
    ax = axes[0][0]
    for col, snap in enumerate(snapshots):
        roles = [r for lay in snap["layers"] for r in lay["roles"]]
        for row, role in enumerate(roles):
            ax.add_patch(Rectangle((col, row), 1, 1, facecolor=ROLE_COLOURS[role], edgecolor="lightgrey"))
    ax.set(xlim=(0, len(snapshots)), ylim=(len(labels), 0), xlabel="training step", title="detected head roles")
    ax.set_xticks([i + 0.5 for i in range(len(snapshots))], [str(s["step"]) for s in snapshots], rotation=90, fontsize=7)
    ax.set_yticks([i + 0.5 for i in range(len(labels))], labels, fontsize=7)
    ax.legend(handles=[Patch(facecolor=c, edgecolor="lightgrey", label=str(r or "none")) for r, c in ROLE_COLOURS.items()],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, out, "roles.png")

