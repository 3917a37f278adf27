"""positions: attention is blind to order until positional information is added.

Self-attention computes a weighted sum over a *set* of vectors: permute the input tokens and the
outputs are permuted the same way (permutation equivariance). So a model without positions cannot
answer any question about order. The 2017 paper adds sinusoidal positions (section 3.5); BERT/GPT-2
learn them; RoPE rotates queries and keys.

Two parts:

* **permutation demonstration**: an untrained encoder, one random input and one random permutation;
  the largest difference between ``encoder(permuted input)`` and ``permuted encoder(input)``. It is
  float rounding (~1e-6) without positions and of order one with any kind of positions.
* **which came first**: sequences of random filler tokens with one ``A`` and one ``B`` at random
  places; a small encoder classifier (the ``[CLS]`` token at position 0) is trained to say whether
  ``A`` precedes ``B``. Same model, seed and data for each of none / sinusoidal / learned / rotary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.experiments.common import (
    Mode,
    check_mode,
    default_out,
    finish,
    new_figure,
    pick,
    progress,
    save_figure,
    seed_everything,
)
from attnlab.models import EncoderForClassification, EncoderModel, TransformerConfig
from attnlab.models.mode import eval_mode
from attnlab.train.step import train_step

NAME = "positions"
TITLE = "Positional encodings: none, sinusoidal, learned, rotary"
KINDS = ("none", "sinusoidal", "learned", "rotary")
CLS, TOKEN_A, TOKEN_B, N_FILLER = 0, 1, 2, 13
VOCAB = 3 + N_FILLER


def config_for(positions: str, seq_len: int, d_model: int = 64, n_classes: int = 0) -> TransformerConfig:
    return TransformerConfig(
        family="encoder", vocab_size=VOCAB, d_model=d_model, n_heads=4, n_layers=2, d_ff=2 * d_model,
        max_len=seq_len, positions=positions, dropout=0.0, n_classes=n_classes,  # type: ignore[arg-type]
        name=f"positions-{positions}",
    )


def which_first_batch(batch: int, seq_len: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``[CLS] filler... A ... B ...`` sequences ``(batch, seq_len)`` and labels (1 if A comes first)."""
    ids = torch.randint(3, VOCAB, (batch, seq_len), generator=generator)
    ids[:, 0] = CLS
    # Two distinct places after [CLS]: the first two entries of a random permutation of 1..seq_len-1.
    places = torch.argsort(torch.rand(batch, seq_len - 1, generator=generator), dim=1)[:, :2] + 1
    rows = torch.arange(batch)
    ids[rows, places[:, 0]] = TOKEN_A
    ids[rows, places[:, 1]] = TOKEN_B
    return ids, (places[:, 0] < places[:, 1]).long()


@torch.no_grad()
def permutation_error(positions: str, seq_len: int, seed: int) -> float:
    """max |encoder(x[perm]) - encoder(x)[perm]| for an untrained encoder (0 up to rounding = equivariant)."""
    seed_everything(seed)
    encoder = EncoderModel(config_for(positions, seq_len), pooler=False).eval()
    x = torch.randint(0, VOCAB, (1, seq_len))
    perm = torch.randperm(seq_len)
    return float((encoder(x[:, perm]) - encoder(x)[:, perm]).abs().max())


@torch.no_grad()
def accuracy(model: torch.nn.Module, ids: Tensor, labels: Tensor) -> float:
    with eval_mode(model):
        return float((model(ids).argmax(-1) == labels).float().mean())


def train_which_first(positions: str, seq_len: int, steps: int, batch: int, eval_every: int,
                      seed: int) -> dict[str, Any]:
    seed_everything(seed)
    model = EncoderForClassification(config_for(positions, seq_len, n_classes=2))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    data = torch.Generator().manual_seed(seed)
    test_ids, test_labels = which_first_batch(1000, seq_len, torch.Generator().manual_seed(seed + 10_000))
    curve = []
    for step in range(1, steps + 1):
        ids, labels = which_first_batch(batch, seq_len, data)
        loss = train_step(model, opt, lambda i=ids, y=labels: F.cross_entropy(model(i), y))
        if step % eval_every == 0 or step == steps:  # the curve uses 250 held-out examples, the result all 1000
            curve.append({"step": step, "loss": loss, "accuracy": accuracy(model, test_ids[:250], test_labels[:250])})
    return {"positions": positions, "accuracy": accuracy(model, test_ids, test_labels), "curve": curve}


def run(mode: Mode = "quick", out: str | Path | None = None, *, show_progress: bool = True,
        seed: int = 0) -> dict[str, Any]:
    """Permutation demonstration + which-came-first training per positional encoding."""
    mode = check_mode(mode)
    started = time.perf_counter()
    out = Path(out) if out is not None else default_out(NAME)
    seq_len = pick(mode, 12, 16, 24)
    steps, batch = pick(mode, 30, 200, 1500), pick(mode, 32, 64, 64)
    eval_every = max(1, steps // pick(mode, 3, 20, 30))
    perm = {kind: permutation_error(kind, seq_len, seed) for kind in KINDS}
    runs = [train_which_first(kind, seq_len, steps, batch, eval_every, seed)
            for kind in progress(KINDS, desc=NAME, enabled=show_progress)]

    fig, axes = new_figure(ncols=2, width=5.2)
    for r in runs:
        axes[0][0].plot([c["step"] for c in r["curve"]], [c["accuracy"] for c in r["curve"]], marker=".",
                        label=f"{r['positions']} ({r['accuracy']:.2f})")
    axes[0][0].axhline(0.5, color="grey", linestyle=":", label="chance")
    axes[0][0].set(xlabel="training step", ylabel="held-out accuracy", ylim=(0.3, 1.02),
                   title=f"Did A come before B? ({seq_len} tokens)")
    axes[0][0].legend(title="positions (final)")
    axes[0][0].grid(True, alpha=0.3)
    ax = axes[0][1]
    ax.bar(list(perm), [max(v, 1e-9) for v in perm.values()], color=["tab:grey", "tab:orange", "tab:green", "tab:red"])
    ax.set_yscale("log")
    ax.set(ylabel="max |f(Px) - P f(x)|", title="Permutation test (untrained encoder)")
    for i, v in enumerate(perm.values()):
        ax.text(i, max(v, 1e-9), f"{v:.1e}", ha="center", va="bottom", fontsize=8)
    figures = [save_figure(fig, out, "positions.png")]

    summary = [
        "which-came-first accuracy: " + ", ".join(f"{r['positions']} {r['accuracy']:.3f}" for r in runs)
        + " (chance 0.5)",
        "permutation error max|f(Px) - P f(x)|: " + ", ".join(f"{k} {v:.1e}" for k, v in perm.items()),
    ]
    return finish(NAME, TITLE, mode, seed, started, out, figures=figures, summary=summary,
                  data={"seq_len": seq_len, "steps": steps, "batch": batch, "permutation_error": perm,
                        "runs": runs, "chance": 0.5})
