"""scaling: does validation loss fall as a power of model size, at a fixed token budget?

Kaplan et al. 2020 found that language-model loss falls as a power law in parameters N (without
embeddings) when data is not the bottleneck, and in training compute C ~ 6 N D FLOPs (D tokens: two
FLOPs per parameter per token forward, four backward). This trains four or more decoder sizes on the
same character corpus with the same seed, batches and number of tokens, and fits
``loss = a * N^(-alpha)`` by least squares on log-log axes.

With one fixed token budget for every size, C is proportional to N, so the fit against compute has
the same exponent; the loss-against-compute *curves* (evaluated during training) show the other
side: for a given compute, which size was the better buy. At toy budgets the largest models are
undertrained and the curve bends; the plot shows that rather than hiding it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from attnlab.experiments.common import (
    CharCorpus,
    Mode,
    check_mode,
    count_params,
    default_out,
    eval_lm_loss,
    finish,
    load_corpus,
    loglog_fit,
    new_figure,
    pick,
    progress,
    save_figure,
    seed_everything,
)
from attnlab.models import DecoderLM, TransformerConfig
from attnlab.models.init import init_weights
from attnlab.train.step import train_step

NAME = "scaling"
TITLE = "Validation loss against model size and compute"

# (d_model, n_layers): widths and depths grow together, as in the scaling-law papers.
SIZES = {
    "tiny": [(16, 1), (24, 1), (32, 2), (48, 2)],
    "quick": [(32, 1), (48, 2), (64, 2), (96, 3)],
    "full": [(32, 1), (48, 2), (64, 2), (96, 3), (128, 4), (192, 4)],
}


def non_embedding_params(model: DecoderLM) -> int:
    """Parameters outside the token and position tables (Kaplan et al.'s N)."""
    return count_params(model) - sum(p.numel() for p in model.embed.parameters())


def train_size(corpus: CharCorpus, d_model: int, n_layers: int, steps: int, batch: int, block: int,
               evals: int, seed: int) -> dict[str, Any]:
    seed_everything(seed)
    config = TransformerConfig(
        family="decoder", vocab_size=corpus.vocab_size, d_model=d_model, n_heads=max(2, d_model // 32),
        n_layers=n_layers, d_ff=4 * d_model, max_len=block, positions="learned", dropout=0.0,
        name=f"scaling-{d_model}x{n_layers}",
    )
    model = DecoderLM(config)
    init_weights(model, config)
    n = non_embedding_params(model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    batches = corpus.sampler("train", batch, block, seed)  # same batches for every size
    eval_at = sorted({round(steps * (i + 1) / evals) for i in range(evals)})
    curve = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        x, y = batches.next()
        train_step(model, opt, lambda x=x, y=y: F.cross_entropy(model(x).reshape(-1, corpus.vocab_size), y.reshape(-1)))
        if step in eval_at:
            tokens = step * batch * block
            curve.append({"step": step, "tokens": tokens, "flops": 6 * n * tokens,
                          "val_loss": eval_lm_loss(model, corpus, block, 8, 16, seed)})
    return {"d_model": d_model, "n_layers": n_layers, "n_heads": config.n_heads, "params": n,
            "params_total": count_params(model), "val_loss": curve[-1]["val_loss"], "flops": curve[-1]["flops"],
            "train_s": time.perf_counter() - started, "curve": curve}


def run(mode: Mode = "quick", out: str | Path | None = None, *, data: str | Path | None = None,
        show_progress: bool = True, seed: int = 0) -> dict[str, Any]:
    """Train every size on the same tokens; fit loss ~ N^-alpha; write results.json and a plot."""
    mode = check_mode(mode)
    started = time.perf_counter()
    out = Path(out) if out is not None else default_out(NAME)
    corpus = load_corpus(data, n_synthetic=pick(mode, 20_000, 200_000, 400_000), seed=seed)
    steps, batch, block = pick(mode, 20, 250, 600), pick(mode, 8, 16, 16), pick(mode, 32, 64, 64)
    runs = [train_size(corpus, d, layers, steps, batch, block, pick(mode, 2, 6, 8), seed)
            for d, layers in progress(SIZES[mode], desc=NAME, enabled=show_progress)]
    slope_n, intercept_n = loglog_fit([r["params"] for r in runs], [r["val_loss"] for r in runs])
    slope_c, intercept_c = loglog_fit([r["flops"] for r in runs], [r["val_loss"] for r in runs])
    fit = {"alpha_params": -slope_n, "a_params": float(torch.tensor(intercept_n).exp()),
           "alpha_compute": -slope_c, "a_compute": float(torch.tensor(intercept_c).exp())}

    figures = [plot(runs, fit, out)]

    xs = [r["params"] for r in runs]
    summary = [
        f"loss ~ {fit['a_params']:.2f} * N^-{fit['alpha_params']:.3f} over N = {xs[0]:,} .. {xs[-1]:,} "
        f"(Kaplan et al. 2020 report alpha_N ~ 0.076 for large models)",
        "final val loss: " + ", ".join(f"{r['params'] / 1e3:.0f}k {r['val_loss']:.3f}" for r in runs),
        f"corpus: {corpus.source}; {steps} steps x {batch} x {block} tokens per model",
    ]
    return finish(NAME, TITLE, mode, seed, started, out, figures=figures, summary=summary, corpus_file=data,
                  data={"corpus": corpus.source, "steps": steps, "batch": batch, "block": block, "runs": runs,
                        "fit": fit})


def plot(runs: list[dict[str, Any]], fit: dict[str, float], out: Path) -> str:
    """Draw ``scaling.png`` from the recorded runs (also usable on a saved results.json's data)."""
    fig, axes = new_figure(ncols=2, width=5.2)
    ax = axes[0][0]
    xs = [r["params"] for r in runs]
    ax.loglog(xs, [r["val_loss"] for r in runs], "o", label="trained models")
    ax.loglog(xs, [fit["a_params"] * x ** (-fit["alpha_params"]) for x in xs], "--",
              label=f"fit: {fit['a_params']:.2f} N^-{fit['alpha_params']:.3f}")
    ax.set(xlabel="parameters N (without embeddings)", ylabel="validation loss (nats/char)",
           title=f"same {runs[0]['curve'][-1]['tokens']:,} training tokens each")
    ax.legend()
    ax = axes[0][1]
    for r in runs:
        ax.loglog([c["flops"] for c in r["curve"]], [c["val_loss"] for c in r["curve"]], marker=".",
                  label=f"d{r['d_model']} L{r['n_layers']} ({r['params'] / 1e3:.0f}k)")
    ax.set(xlabel="training compute C = 6 N D (FLOPs)", ylabel="validation loss", title="loss against compute")
    ax.legend(fontsize=7)
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    for a in axes[0]:  # losses span less than a decade: label five plain values, not powers of ten
        a.grid(True, which="both", alpha=0.3)
        low, high = a.get_ylim()
        a.yaxis.set_major_locator(FixedLocator([low * (high / low) ** (i / 4) for i in range(5)]))
        a.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))
        a.yaxis.set_minor_formatter(NullFormatter())
        a.xaxis.set_minor_formatter(NullFormatter())
    return save_figure(fig, out, "scaling.png")
