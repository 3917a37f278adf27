"""rnn-vs-transformer: parallelism and long-range memory, at equal parameter counts.

Two claims of the 2017 paper (section 4): a recurrent network must process a sequence one step after
another, while self-attention handles all positions at once; and a recurrent network must carry
information through every intermediate step, while attention connects any two positions directly.

(a) **throughput**: time per training step (forward, backward, Adam) and tokens per second of a
vanilla RNN, an LSTM, a GRU (PyTorch's own ``nn.RNN``/``nn.LSTM``/``nn.GRU``, the fastest
implementations available to them) and an attnlab Transformer decoder with the same number of
parameters, as the sequence grows.

(b) **long-range**: a delayed-copy task: at every position ``t >= N`` output the symbol seen ``N``
positions earlier. A recurrent model must hold the last ``N`` symbols in its state; attention can
look back at position ``t - N`` directly. Accuracy (on fresh sequences) as a function of ``N``.

(c) **language model**: the same character-level LM task on a text corpus for each model, trained
for the same number of steps on the same batches; validation loss against cumulative training
seconds (evaluation time is not counted). A step count, not a time budget, ends training, so every
loss repeats exactly; only the time axis depends on the machine and its load. Read the plot
vertically (which model is lower after the same seconds of training), not by the curves' ends.

Sizes per mode: ``quick`` is sized to take about a minute on an idle 2-core machine; ``full`` runs
the ranges the issue asks for (lengths 64 to 2,048, delays 2 to 128) in about a quarter of an hour.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.experiments.common import (
    Mode,
    check_mode,
    count_params,
    default_out,
    eval_lm_loss,
    finish,
    load_corpus,
    loglog_fit,
    median_time,
    new_figure,
    pick,
    progress,
    save_figure,
    seed_everything,
)
from attnlab.models import DecoderLM, TransformerConfig
from attnlab.models.init import init_weights
from attnlab.models.mode import eval_mode
from attnlab.train.step import train_step

NAME = "rnn-vs-transformer"
TITLE = "RNN, LSTM, GRU and Transformer at equal parameter counts"
KINDS = ("rnn", "lstm", "gru", "transformer")
COPY_VOCAB = 8  # symbols of the delayed-copy task: chance accuracy is 1/8


class RecurrentLM(nn.Module):
    """Embedding -> ``n_layers`` of ``nn.RNN``/``nn.LSTM``/``nn.GRU`` -> linear next-token head."""

    def __init__(self, kind: str, vocab_size: int, hidden: int, n_layers: int) -> None:
        super().__init__()
        cells = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
        if kind not in cells:
            raise ValueError(f"unknown recurrent kind {kind!r}; choose one of {tuple(cells)}")
        self.embed = nn.Embedding(vocab_size, hidden)
        self.rnn = cells[kind](hidden, hidden, num_layers=n_layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, input_ids: Tensor) -> Tensor:
        out, _ = self.rnn(self.embed(input_ids))
        return self.head(out)  # (batch, seq, vocab)


def transformer(vocab_size: int, d_model: int, n_layers: int, max_len: int) -> DecoderLM:
    """A small GPT-style decoder (GPT-2 init); rotary positions, so its size does not depend on ``max_len``."""
    config = TransformerConfig(
        family="decoder", vocab_size=vocab_size, d_model=d_model, n_heads=4, n_layers=n_layers,
        d_ff=4 * d_model, max_len=max_len, positions="rotary", dropout=0.0, tie_embeddings=True,
        name="rnn-vs-transformer",
    )
    model = DecoderLM(config)
    init_weights(model, config)
    return model


def matched_models(vocab_size: int, d_model: int, n_layers: int, max_len: int) -> dict[str, nn.Module]:
    """The Transformer and, per recurrent kind, the hidden size whose parameter count is closest to it."""
    models: dict[str, nn.Module] = {"transformer": transformer(vocab_size, d_model, n_layers, max_len)}
    target = count_params(models["transformer"])
    for kind in ("rnn", "lstm", "gru"):
        best = min(range(8, 8 * d_model), key=lambda h: abs(
            _recurrent_params(kind, vocab_size, h, n_layers) - target))
        models[kind] = RecurrentLM(kind, vocab_size, best, n_layers)
    return {k: models[k] for k in KINDS}


def _recurrent_params(kind: str, vocab: int, h: int, layers: int) -> int:
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    # embedding + per layer gates * (W_ih + W_hh + two biases) + head
    return vocab * h + layers * gates * (2 * h * h + 2 * h) + h * vocab + vocab


def lm_loss(model: nn.Module, ids: Tensor, targets: Tensor) -> Tensor:
    logits = model(ids)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def throughput(mode: Mode, seed: int, show_progress: bool, device: str | torch.device = "cpu") -> dict[str, Any]:
    """(a) Training-step time against sequence length for each model, on ``device``: on parallel
    hardware (a GPU) the Transformer's step processes every position at once, the recurrence cannot.
    Each timed step ends with ``float(loss)``, which waits for the device to finish."""
    lengths = pick(mode, [16, 32, 64], [64, 128, 256, 512, 1024], [64, 128, 256, 512, 1024, 2048])
    batch, vocab, d_model, n_layers = pick(mode, 2, 4, 8), 65, pick(mode, 32, 128, 128), 2
    repeats = pick(mode, 1, 2, 3)
    seed_everything(seed)
    models = {k: m.to(device) for k, m in matched_models(vocab, d_model, n_layers, max(lengths)).items()}
    rows = []
    jobs = [(kind, n) for n in lengths for kind in KINDS]
    for kind, n in progress(jobs, desc=f"{NAME} (a) throughput", enabled=show_progress):
        model = models[kind]
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        ids = torch.randint(0, vocab, (batch, n + 1), generator=torch.Generator().manual_seed(seed)).to(device)
        step_s = median_time(lambda m=model, o=opt, i=ids: train_step(m, o, lambda: lm_loss(m, i[:, :-1], i[:, 1:])),
                             repeats, warmup=1)
        rows.append({"model": kind, "seq_len": n, "batch": batch, "step_s": step_s,
                     "tokens_per_s": batch * n / step_s})
    params = {k: count_params(m) for k, m in models.items()}
    growth = {k: loglog_fit([r["seq_len"] for r in rows if r["model"] == k],
                            [r["step_s"] for r in rows if r["model"] == k])[0] for k in KINDS}
    return {"lengths": lengths, "batch": batch, "params": params, "rows": rows, "step_time_exponent": growth,
            "hidden": {k: m.rnn.hidden_size for k, m in models.items() if k != "transformer"},
            "d_model": d_model, "n_layers": n_layers, "device": str(device)}


def delayed_copy_batch(batch: int, delay: int, extra: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random symbols ``(batch, delay + extra)``; the target at ``t`` is the input at ``t - delay``.

    Positions before ``delay`` have nothing to copy and are ignored (-100) by the loss.
    """
    ids = torch.randint(0, COPY_VOCAB, (batch, delay + extra), generator=generator)
    targets = torch.full_like(ids, -100)
    targets[:, delay:] = ids[:, :-delay]
    return ids, targets


@torch.no_grad()
def copy_accuracy(model: nn.Module, delay: int, extra: int, seed: int, n: int = 256) -> float:
    ids, targets = delayed_copy_batch(n, delay, extra, torch.Generator().manual_seed(seed + 10_000))
    with eval_mode(model):
        pred = model(ids).argmax(-1)
    scored = targets != -100
    return float((pred[scored] == targets[scored]).float().mean())


def long_range(mode: Mode, seed: int, show_progress: bool) -> dict[str, Any]:
    delays = pick(mode, [2, 4], [4, 16, 48], [2, 4, 8, 16, 32, 64, 128])
    steps, batch = pick(mode, 30, 120, 400), pick(mode, 16, 32, 32)
    extra, d_model = pick(mode, 16, 16, 32), pick(mode, 32, 32, 64)
    rows = []
    jobs = [(kind, delay) for delay in delays for kind in KINDS]
    for kind, delay in progress(jobs, desc=f"{NAME} (b) long-range", enabled=show_progress):
        seed_everything(seed)
        model = matched_models(COPY_VOCAB, d_model, 2, max(delays) + extra)[kind]
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        started = time.perf_counter()
        losses = []
        for _ in range(steps):
            ids, targets = delayed_copy_batch(batch, delay, extra, gen)
            losses.append(train_step(model, opt, lambda m=model, i=ids, t=targets: lm_loss(m, i, t)))
        rows.append({"model": kind, "delay": delay, "accuracy": copy_accuracy(model, delay, extra, seed),
                     "final_loss": sum(losses[-10:]) / len(losses[-10:]), "params": count_params(model),
                     "train_s": time.perf_counter() - started})
    return {"delays": delays, "steps": steps, "batch": batch, "scored_positions": extra, "chance": 1 / COPY_VOCAB,
            "d_model": d_model, "rows": rows}


def char_lm(mode: Mode, seed: int, data: str | Path | None, show_progress: bool) -> dict[str, Any]:
    corpus = load_corpus(data, n_synthetic=pick(mode, 20_000, 200_000, 400_000), seed=seed)
    steps, block, batch = pick(mode, 8, 80, 500), pick(mode, 32, 64, 128), 16
    d_model, evals = pick(mode, 32, 96, 128), pick(mode, 2, 8, 12)
    eval_at = {round(steps * (i + 1) / evals) for i in range(evals)}
    seed_everything(seed)
    models = matched_models(corpus.vocab_size, d_model, 2, block)
    rows = []
    for kind in progress(KINDS, desc=f"{NAME} (c) char LM", enabled=show_progress):
        seed_everything(seed)
        model = models[kind]
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        batches = corpus.sampler("train", batch, block, seed)  # the same batches for every model
        curve = [{"seconds": 0.0, "step": 0, "val_loss": eval_lm_loss(model, corpus, block, 4, 16, seed)}]
        spent = 0.0
        for step in range(1, steps + 1):
            x, y = batches.next()
            start = time.perf_counter()
            train_step(model, opt, lambda m=model, x=x, y=y: lm_loss(m, x, y))
            spent += time.perf_counter() - start
            if step in eval_at:
                curve.append({"seconds": spent, "step": step,
                              "val_loss": eval_lm_loss(model, corpus, block, 4, 16, seed)})
        rows.append({"model": kind, "params": count_params(model), "steps": steps, "train_s": spent,
                     "val_loss": curve[-1]["val_loss"], "curve": curve})
    # The fair comparison for "loss against wall-clock time": each model's loss at the last
    # evaluation it had reached when the quickest model finished.
    equal_s = min(r["train_s"] for r in rows)
    for r in rows:
        r["val_loss_at_equal_time"] = [p for p in r["curve"] if p["seconds"] <= equal_s][-1]["val_loss"]
    return {"corpus": corpus.source, "steps": steps, "block": block, "batch": batch, "d_model": d_model,
            "equal_time_s": equal_s, "rows": rows}


def run(mode: Mode = "quick", out: str | Path | None = None, *, data: str | Path | None = None,
        show_progress: bool = True, seed: int = 0, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Run (a) throughput (on ``device``), (b) long-range and (c) char LM (on the CPU); write results.json
    and three plots."""
    mode = check_mode(mode)
    started = time.perf_counter()
    out = Path(out) if out is not None else default_out(NAME)
    a = throughput(mode, seed, show_progress, device)
    b = long_range(mode, seed, show_progress)
    c = char_lm(mode, seed, data, show_progress)

    figures = plot(a, b, c, out)

    longest = max(a["lengths"])
    at_longest = {r["model"]: r for r in a["rows"] if r["seq_len"] == longest}
    summary = [
        "step time ~ length^slope: " + ", ".join(f"{k} {a['step_time_exponent'][k]:.2f}" for k in KINDS),
        f"tokens/s at {longest}: " + ", ".join(f"{k} {at_longest[k]['tokens_per_s']:.0f}" for k in KINDS),
        "delayed-copy accuracy (delay: " + ", ".join(str(d) for d in b["delays"]) + "): " + "; ".join(
            f"{k} " + " ".join(f"{r['accuracy']:.2f}" for r in b["rows"] if r["model"] == k) for k in KINDS),
        f"char-LM val loss after {c['steps']} steps: " + ", ".join(
            f"{r['model']} {r['val_loss']:.3f} ({r['train_s']:.0f} s)" for r in c["rows"]),
        f"char-LM val loss after {c['equal_time_s']:.0f} s (when the quickest finished): " + ", ".join(
            f"{r['model']} {r['val_loss_at_equal_time']:.3f}" for r in c["rows"]),
    ]
    return finish(NAME, TITLE, mode, seed, started, out, figures=figures, summary=summary, corpus_file=data,
                  data={"throughput": a, "long_range": b, "char_lm": c},
                  notes=["timings ((a), and the time axis of (c)) vary with the machine and its load; "
                         "every loss and accuracy repeats exactly for the same seed and thread count"])


def plot(a: dict[str, Any], b: dict[str, Any], c: dict[str, Any], out: Path) -> list[str]:
    """Draw the three figures from recorded data (also usable on a saved results.json's data)."""
    fig, axes = new_figure(ncols=2, width=5.2)
    for kind in KINDS:
        mine = [r for r in a["rows"] if r["model"] == kind]
        label = f"{kind} ({a['params'][kind] / 1e3:.0f}k params, slope {a['step_time_exponent'][kind]:.2f})"
        axes[0][0].loglog([r["seq_len"] for r in mine], [r["step_s"] for r in mine], marker="o", base=2, label=label)
        axes[0][1].semilogx([r["seq_len"] for r in mine], [r["tokens_per_s"] for r in mine], marker="o", base=2,
                            label=kind)
    axes[0][0].set(xlabel="sequence length", ylabel="seconds per training step", title=f"batch {a['batch']}")
    axes[0][1].set(xlabel="sequence length", ylabel="training tokens / second")
    for ax in axes[0]:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("(a) Training speed as the sequence grows (CPU)")
    figures = [save_figure(fig, out, "throughput.png")]

    fig, axes = new_figure(width=6.0)
    ax = axes[0][0]
    for kind in KINDS:
        mine = [r for r in b["rows"] if r["model"] == kind]
        ax.semilogx([r["delay"] for r in mine], [r["accuracy"] for r in mine], marker="o", base=2, label=kind)
    ax.axhline(b["chance"], color="grey", linestyle=":", label="chance")
    ax.set(xlabel="delay N (answer is the symbol N positions back)", ylabel="accuracy on fresh sequences",
           ylim=(0, 1.05), title=f"(b) Delayed copy after {b['steps']} steps, equal parameters")
    ax.grid(True, alpha=0.3)
    ax.legend()
    figures.append(save_figure(fig, out, "long_range.png"))

    fig, axes = new_figure(width=6.0)
    ax = axes[0][0]
    for r in c["rows"]:
        ax.plot([p["seconds"] for p in r["curve"]], [p["val_loss"] for p in r["curve"]], marker=".",
                label=f"{r['model']} ({r['train_s']:.0f} s)")
    ax.set(xlabel="training seconds (evaluation excluded)", ylabel="validation loss (nats/char)",
           title=f"(c) Character LM on {c['corpus']}\nequal parameters, {c['steps']} steps each")
    ax.grid(True, alpha=0.3)
    ax.legend()
    figures.append(save_figure(fig, out, "char_lm.png"))
    return figures
