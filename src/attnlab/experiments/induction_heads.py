"""induction-heads: watch an induction head form, and the in-context learning it brings.

Olsson et al. 2022 ("In-context Learning and Induction Heads") found that models of two or more
layers go through a *phase change* early in training: within a short stretch of steps induction
heads appear (a head at a token attends to what followed that token's earlier occurrence, and copies
it), the loss curve bends, and the model starts to use its context: loss late in the context falls
below loss early in it (the in-context-learning score). One-layer models have no such phase change:
an induction head needs two heads in series (a previous-token head writes "what came before me"
into each position, the induction head's keys read it), and one layer has no series.

Here small decoders learn sequences of random tokens that contain one repeated span (its length and
both places drawn at random, so no fixed offset gives the answer away: only the earlier occurrence
of the current token does). Four models, each with the same seed, batches and steps:
attention-only (``attn_only=True``) and full (with MLPs), each with 2 layers and with 1 layer (the
control). At every snapshot the interpretability tools score every head: induction and
previous-token scores from ``attnlab.interpret.detect_heads`` (attention on random tokens repeated
twice), the in-context-learning score and the validation loss, overall and on the positions a
repeat makes predictable; and where the heads look instead (``where_heads_look``): in these runs the
2-layer model copies through a *shifted* circuit (first-layer heads 6-7 tokens back, last-layer heads
on the key 6 after the one the induction score reads), which the textbook score does not see.
"""

from __future__ import annotations

import math
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.experiments.common import (
    Mode,
    check_mode,
    count_params,
    default_out,
    finish,
    new_figure,
    pick,
    progress,
    save_figure,
    seed_everything,
)
from attnlab.inspect import run_with_cache
from attnlab.interpret import detect_heads, repeated_random_tokens
from attnlab.models import DecoderLM, TransformerConfig
from attnlab.models.init import init_weights
from attnlab.models.mode import eval_mode
from attnlab.train.step import train_step

NAME = "induction-heads"
TITLE = "Induction heads and the in-context-learning phase change"
#: A model "has an induction head" when one head puts at least this share of its attention on the
#: token after the earlier occurrence (``attnlab.interpret.detect``'s threshold; uniform attention
#: over the keys a query in the probe's second half sees scores 0.05-0.08 here).
BOUND = 0.4
MODELS = (("attn-only", 2), ("attn-only", 1), ("full", 2), ("full", 1))


def model_key(kind: str, layers: int) -> str:
    return f"{kind} {layers}L"


def repeated_span_batch(batch: int, length: int, vocab: int, generator: torch.Generator,
                        span: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Sequences of random tokens in which one random span occurs twice in a row: ``[prefix, r, r, tail]``.

    Returns ``inputs`` and ``targets`` ``(batch, length)`` int64 (targets: the next token) and
    ``repeat`` ``(batch, length)`` bool: True where the target is predictable from the context (it
    lies in the second copy, after its first token). The span's length ``n`` is uniform in ``span``
    (inclusive), the prefix's in ``[0, length + 1 - 2n]``: the distance between the copies varies
    from row to row, so no fixed offset gives the answer away, only the earlier occurrence of the
    current token does. ``ValueError`` if two spans of the longest length do not fit.
    """
    lo, hi = span
    if not 2 <= lo <= hi or 2 * hi > length + 1:
        raise ValueError(f"span {span} must satisfy 2 <= min <= max and 2 * max <= length + 1 = {length + 1}")
    seq = torch.randint(0, vocab, (batch, length + 1), generator=generator)
    repeat = torch.zeros(batch, length + 1, dtype=torch.bool)
    for row in range(batch):
        n = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        a = int(torch.randint(0, length + 2 - 2 * n, (1,), generator=generator))
        seq[row, a + n:a + 2 * n] = seq[row, a:a + n]
        repeat[row, a + n + 1:a + 2 * n] = True
    return seq[:, :-1], seq[:, 1:], repeat[:, 1:]


@torch.no_grad()
def token_losses(model: DecoderLM, inputs: Tensor, targets: Tensor) -> Tensor:
    """Per-token next-token cross-entropy (nats), ``(batch, length)`` float32, in eval mode."""
    with eval_mode(model):
        logits = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           reduction="none").view_as(targets)


def icl_score(losses: Tensor, early: int, late: int) -> float:
    """Olsson et al.'s in-context-learning score: mean loss at position ``late`` minus at ``early``
    (each averaged over the batch and a window of +-10% of the context around it, since one position
    of a small batch is noisy). Negative: the model predicts later tokens better, using its context."""
    length = losses.shape[1]
    w = max(1, length // 10)

    def at(p: int) -> float:
        return float(losses[:, max(0, p - w):min(length, p + w + 1)].mean())

    return at(late) - at(early)


def snapshot(model: DecoderLM, val: tuple[Tensor, Tensor, Tensor], probe_len: int, seed: int,
             icl_at: tuple[int, int]) -> dict[str, Any]:
    """Every measured number of one model at one step: per-head induction and previous-token scores
    (``detect_heads`` on random tokens repeated twice), the last layer's best shifted attention
    (``where_heads_look``'s ``best_shift``: weight, head and ``d``), validation loss overall, on the predictable
    (repeated) and on the other positions, and the in-context-learning score."""
    found = detect_heads(model, seq_len=probe_len, batch=16, seed=seed, threshold=BOUND)
    shift = where_heads_look(model, probe_len, seed)["best_shift"]
    inputs, targets, repeat = val
    losses = token_losses(model, inputs, targets)
    induction = found.scores["induction"]  # (layers, heads)
    previous = found.scores["previous-token"]
    return {
        "induction": [[round(float(v), 5) for v in row] for row in induction],
        "previous_token": [[round(float(v), 5) for v in row] for row in previous],
        "best_induction": round(float(induction.max()), 5),
        "best_induction_head": _argmax_head(induction),
        "best_previous_token": round(float(previous.max()), 5),
        "best_shift": shift["weight"], "best_shift_head": shift["head"], "best_shift_d": shift["d"],
        "val_loss": round(float(losses.mean()), 5),
        "repeat_loss": round(float(losses[repeat].mean()), 5),
        "other_loss": round(float(losses[~repeat].mean()), 5),
        "icl_score": round(icl_score(losses, *icl_at), 5),
    }


def look_profiles(first: Tensor, last: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``where_heads_look``'s two grids from attention weights ``(batch, heads, 2n, 2n)`` on ``[r, r]`` (halves of
    ``n``): the last layer's mean attention on the key ``d`` after the token after the earlier occurrence and the
    first layer's ``d`` back, each ``(heads, n - 2)`` float for ``d = 0 .. n - 3``."""
    reach = n - 3
    q = torch.arange(n + 1, 2 * n)
    shifted = torch.stack([last[:, :, q, q - n + 1 + d].mean(dim=(0, 2)) for d in range(reach + 1)], dim=1)
    seen = torch.arange(reach, 2 * n)
    back = torch.stack([first[:, :, seen, seen - d].mean(dim=(0, 2)) for d in range(reach + 1)], dim=1)
    return shifted, back


@torch.no_grad()
def where_heads_look(model: DecoderLM, probe_len: int, seed: int) -> dict[str, Any]:
    """Where a 2-layer model's heads look on the induction probe (``detect_heads``' random tokens repeated twice,
    halves of ``probe_len``, batch 16, ``seed``), to tell an induction circuit from another way to copy.

    ``last_layer``: ``(heads, reach + 1)``: each last-layer head's mean attention, over the second copy's
    queries from its second token, on the key ``d`` positions after the token after the earlier occurrence
    (``d = 0``: the key the induction score reads). ``first_layer``: ``(heads, reach + 1)``: each first-layer
    head's mean attention ``d`` tokens back (``d = 0``: itself; ``d = 1``: the previous-token score's key),
    over the queries that see that far. ``reach = probe_len - 3`` keeps the shifted key at least two behind the
    query (``d = probe_len - 2`` would be the previous token). ``best_shift`` / ``best_offset``: the largest
    entry of each, as ``{"head", "d", "weight"}``. In a 1-layer model the first layer is the last.
    """
    layers = model.config.n_layers
    tokens = repeated_random_tokens(model.config.vocab_size, probe_len, 16, seed=seed)
    with eval_mode(model):
        _, cache = run_with_cache(model, tokens, names="*attn.hook_weights")
    shifted, back = look_profiles(cache.attention(0).float(), cache.attention(layers - 1).float(), probe_len)

    def best(grid: Tensor, layer: int) -> dict[str, Any]:
        i = int(grid.flatten().argmax())
        return {"head": f"L{layer}H{i // grid.shape[1]}", "d": i % grid.shape[1], "weight": round(float(grid.flatten()[i]), 5)}

    return {"probe_len": probe_len, "reach": probe_len - 3,
            "last_layer": [[round(float(v), 5) for v in row] for row in shifted],
            "first_layer": [[round(float(v), 5) for v in row] for row in back],
            "best_shift": best(shifted, layers - 1), "best_offset": best(back, 0)}


def _argmax_head(scores: Tensor) -> str:
    i = int(scores.flatten().argmax())
    return f"L{i // scores.shape[1]}H{i % scores.shape[1]}"


def phase_change(snapshots: list[dict[str, Any]], bound: float = BOUND) -> dict[str, Any] | None:
    """Where the best induction score first reaches ``bound``: the snapshot before and the one at it
    (steps and scores), and the validation loss, repeat loss and ICL score at both. ``None`` if it
    never does."""
    for before, at in pairwise(snapshots):
        if before["best_induction"] < bound <= at["best_induction"]:
            keys = ("step", "best_induction", "val_loss", "repeat_loss", "icl_score")
            return {"before": {k: before[k] for k in keys}, "after": {k: at[k] for k in keys},
                    "head": at["best_induction_head"]}
    return None


def _steepest(snapshots: list[dict[str, Any]], key: str, sign: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two consecutive snapshots between which ``sign * key`` grew fastest per step."""
    return max(pairwise(snapshots), key=lambda p: sign * (p[1][key] - p[0][key]) / max(1, p[1]["step"] - p[0]["step"]))


def steepest_loss_drop(snapshots: list[dict[str, Any]], key: str = "repeat_loss") -> dict[str, Any]:
    """The interval between snapshots where ``key`` (default: the loss on the repeated tokens) fell
    fastest per step: ``from_step``, ``to_step``, ``from_loss``, ``to_loss``, and the ICL score at both."""
    a, b = _steepest(snapshots, key, -1.0)
    return {"key": key, "from_step": a["step"], "to_step": b["step"], "from_loss": a[key], "to_loss": b[key],
            "from_icl": a["icl_score"], "to_icl": b["icl_score"]}


def fastest_rise(snapshots: list[dict[str, Any]], key: str = "best_induction") -> dict[str, Any]:
    """The interval between snapshots where ``key`` (the best induction score, or ``best_shift``) rose fastest per
    step (a head forming): ``from_step``, ``to_step``, ``key`` at both (``from_score``, ``to_score``) and its head
    at the second (``key + "_head"``), and the validation loss and the loss on the repeated tokens (nats) at both."""
    a, b = _steepest(snapshots, key, 1.0)
    return {"key": key, "from_step": a["step"], "to_step": b["step"], "from_score": a[key],
            "to_score": b[key], "head": b[f"{key}_head"], "d": b.get(f"{key}_d"),
            "from_val_loss": a["val_loss"], "to_val_loss": b["val_loss"],
            "from_repeat_loss": a["repeat_loss"], "to_repeat_loss": b["repeat_loss"]}


def _settings(mode: Mode) -> dict[str, Any]:
    return {
        "models": pick(mode, ["attn-only 2L", "attn-only 1L"], ["attn-only 2L", "attn-only 1L"],
                       [model_key(kind, layers) for kind, layers in MODELS]),
        "vocab": 32,
        "length": 32,
        "span": (6, 16),
        "d_model": 64,
        "n_heads": 4,
        "d_ff": 256,
        "positions": "rotary",
        "rope_theta": 10000.0,
        "steps": pick(mode, 60, 1200, 3000),
        "batch": 32,
        "lr": 1e-3,
        "every": pick(mode, 20, 50, 100),
    }


def train_model(kind: str, layers: int, s: dict[str, Any], seed: int, val: tuple[Tensor, Tensor, Tensor],
                show_progress: bool) -> dict[str, Any]:
    """Train one model on repeated-span batches with the shared init and optimizer step, snapshotting."""
    seed_everything(seed)
    config = TransformerConfig(
        family="decoder", vocab_size=s["vocab"], d_model=s["d_model"], n_heads=s["n_heads"], n_layers=layers,
        d_ff=s["d_ff"], max_len=s["length"], positions=s["positions"], rope_theta=s["rope_theta"], attn_only=kind == "attn-only",
        attention_backend="math", name=f"induction-{kind}-{layers}l",
    )
    model = DecoderLM(config)
    init_weights(model, config)
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=0.01)
    data = torch.Generator().manual_seed(seed)  # the same batches for every model
    probe_len = sum(s["span"]) // 2  # a span length the models were trained on
    icl_at = (s["length"] // 10, s["length"] - 1 - s["length"] // 10)
    snapshots: list[dict[str, Any]] = []
    train_losses: list[float] = []  # since the last snapshot
    for step in progress(range(s["steps"] + 1), desc=f"{NAME} {model_key(kind, layers)}", enabled=show_progress):
        if step % s["every"] == 0 or step == s["steps"]:
            mean_train = round(sum(train_losses) / len(train_losses), 5) if train_losses else None
            snapshots.append({"step": step, "train_loss": mean_train, **snapshot(model, val, probe_len, seed + 7, icl_at)})
            train_losses = []
        if step == s["steps"]:
            break
        x, y, _ = repeated_span_batch(s["batch"], s["length"], s["vocab"], data, s["span"])
        train_losses.append(train_step(model, opt, lambda x=x, y=y: F.cross_entropy(model(x).reshape(-1, s["vocab"]),
                                                                                      y.reshape(-1))))
    looks = where_heads_look(model, probe_len, seed + 7)
    return {"kind": kind, "layers": layers, "params": count_params(model), "config": config.to_dict(),
            "snapshots": snapshots, "where_heads_look": looks, "phase_change": phase_change(snapshots),
            "steepest_loss_drop": steepest_loss_drop(snapshots), "induction_jump": fastest_rise(snapshots),
            "shift_jump": fastest_rise(snapshots, "best_shift"),
            "icl_positions": list(icl_at), "probe_len": probe_len}


def run(mode: Mode = "quick", out: str | Path | None = None, *, show_progress: bool = True,
        seed: int = 0) -> dict[str, Any]:
    """Train the four models (attention-only and full, 2 layers and 1) and record their heads."""
    mode = check_mode(mode)
    started = time.perf_counter()
    out = Path(out) if out is not None else default_out(NAME)
    s = _settings(mode)
    val = repeated_span_batch(64, s["length"], s["vocab"], torch.Generator().manual_seed(seed + 10_000), s["span"])
    runs = {model_key(kind, layers): train_model(kind, layers, s, seed, val, show_progress)
            for kind, layers in MODELS if model_key(kind, layers) in s["models"]}
    figures = [_plot_phase_change(runs, s, out), _plot_heads(runs[model_key("attn-only", 2)], out)]
    summary = verdict(runs, s)
    return finish(NAME, TITLE, mode, seed, started, out, figures=figures, summary=summary,
                  data={"settings": {**s, "span": list(s["span"])}, "bound": BOUND,
                        "chance_loss": round(math.log(s["vocab"]), 5), "runs": runs})


def verdict(runs: dict[str, dict[str, Any]], s: dict[str, Any]) -> list[str]:
    """The summary sentences, each computed from the recorded numbers."""
    lines = []
    for kind in ("attn-only", "full"):
        if model_key(kind, 2) not in runs:
            continue
        two, one = runs[model_key(kind, 2)], runs[model_key(kind, 1)]
        pc = two["phase_change"]
        first, last = two["snapshots"][0], two["snapshots"][-1]
        if pc is None:
            lines.append(f"{kind}, 2 layers: no head reached an induction score of {BOUND} in {s['steps']} steps "
                         f"(best {max(x['best_induction'] for x in two['snapshots']):.2f}); loss on the repeated "
                         f"tokens ended at {last['repeat_loss']:.2f} nats; ICL score {first['icl_score']:+.2f} -> "
                         f"{last['icl_score']:+.2f}")
        else:
            b, a = pc["before"], pc["after"]
            lines.append(
                f"{kind}, 2 layers: the best induction score rose from {b['best_induction']:.2f} (step {b['step']}) "
                f"to {a['best_induction']:.2f} (step {a['step']}, head {pc['head']}) and ended at "
                f"{last['best_induction']:.2f}; loss on the repeated tokens {b['repeat_loss']:.2f} -> "
                f"{a['repeat_loss']:.2f} -> {last['repeat_loss']:.2f} nats; ICL score {first['icl_score']:+.2f} "
                f"-> {last['icl_score']:+.2f}")
        look, sj = two["where_heads_look"], two["shift_jump"]
        shift, off = look["best_shift"], look["best_offset"]
        how = ("the key the induction score reads" if shift["d"] == 0 else
               f"the key {shift['d']} after the one the induction score reads (the token after the earlier occurrence)")
        lines.append(
            f"{kind}, 2 layers, where its heads look at the end (random tokens repeated twice): the most attention of "
            f"a last-layer head, {shift['weight']:.2f} ({shift['head']}), is on {how}; the most of a first-layer head, "
            f"{off['weight']:.2f} ({off['head']}), is {off['d']} token{'s' if off['d'] != 1 else ''} back"
            + (f" (a shifted circuit: {off['d']} back from that key lies the token after the earlier occurrence, the "
               f"one to predict, so the two heads in series copy it while the induction score, which reads only the "
               f"unshifted key, stays low)" if shift["d"] == off["d"] > 0 else "")
            + f"; the last layer's best attention on one such key rose fastest between steps {sj['from_step']} and "
              f"{sj['to_step']} ({sj['from_score']:.2f} -> {sj['to_score']:.2f}, {sj['head']}, {sj['d']} after the "
              f"induction score's key)")
        drop = two["steepest_loss_drop"]
        lines.append(
            f"{kind}, 2 layers: the loss on the repeated tokens fell fastest between steps {drop['from_step']} and "
            f"{drop['to_step']} ({drop['from_loss']:.2f} -> {drop['to_loss']:.2f} nats; ICL score "
            f"{drop['from_icl']:+.2f} -> {drop['to_icl']:+.2f}), and ended at {last['repeat_loss']:.2f} against the "
            f"1-layer control's {one['snapshots'][-1]['repeat_loss']:.2f}")
        best_one = max(x["best_induction"] for x in one["snapshots"])
        lines.append(
            f"{kind}, 1 layer (control): best induction score at any snapshot {best_one:.2f} "
            f"({'below' if best_one < BOUND else 'not below'} {BOUND}); loss on the repeated tokens ended at "
            f"{one['snapshots'][-1]['repeat_loss']:.2f} nats (chance ln {s['vocab']} = {math.log(s['vocab']):.2f}); "
            f"ICL score {one['snapshots'][-1]['icl_score']:+.2f}; its head's best attention on a key after the "
            f"token after the earlier occurrence (any shift) at any snapshot {max(x['best_shift'] for x in one['snapshots']):.2f}")
    return lines


_STYLE = {"attn-only 2L": ("tab:red", "-"), "attn-only 1L": ("tab:red", ":"),
          "full 2L": ("tab:blue", "-"), "full 1L": ("tab:blue", ":")}


def _plot_phase_change(runs: dict[str, dict[str, Any]], s: dict[str, Any], out: Path) -> str:
    fig, axes = new_figure(ncols=1, nrows=4, width=7.0, height=2.1)
    panels = (("best_induction", "best induction score"), ("best_shift", "best attention,\nshifted key"),
              ("val_loss", "validation loss (nats)"), ("icl_score", "ICL score (nats)"))
    for row, (key, label) in enumerate(panels):
        ax = axes[row][0]
        for name, r in runs.items():
            colour, style = _STYLE[name]
            steps = [x["step"] for x in r["snapshots"]]
            ax.plot(steps, [x[key] for x in r["snapshots"]], color=colour, linestyle=style, marker=".", label=name)
            pc = r["phase_change"]
            if pc is not None and r["layers"] == 2:
                ax.axvspan(pc["before"]["step"], pc["after"]["step"], color=colour, alpha=0.12)
        if key == "best_induction":
            ax.axhline(BOUND, color="grey", linestyle="--", linewidth=0.8, label=f"bound {BOUND}")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7, ncol=3)
            ax.set_title(f"best induction score (dashed: the bound {BOUND}; shaded: where a 2-layer model first "
                         "reaches it)", fontsize=8)
        if key == "best_shift":
            ax.set_ylim(0, 1)
            ax.set_title("last layer's best attention on the key d after the induction score's key (any d >= 0)",
                         fontsize=8)
        if key == "val_loss":
            ax.axhline(math.log(s["vocab"]), color="grey", linestyle=":", linewidth=0.8)
        if key == "icl_score":
            ax.axhline(0, color="grey", linewidth=0.6)
            ax.set_xlabel("training step")
        ax.set_ylabel(label, fontsize=8)
    return save_figure(fig, out, "phase_change.png")


def _plot_heads(run: dict[str, Any], out: Path) -> str:
    snaps = run["snapshots"]
    steps = [x["step"] for x in snaps]
    layers, heads = len(snaps[0]["induction"]), len(snaps[0]["induction"][0])
    fig, axes = new_figure(ncols=layers, nrows=2, width=3.8, height=2.6)
    for row, key in enumerate(("previous_token", "induction")):
        for layer in range(layers):
            ax = axes[row][layer]
            for head in range(heads):
                ax.plot(steps, [x[key][layer][head] for x in snaps], label=f"L{layer}H{head}")
            ax.set(ylim=(0, 1), title=f"{key.replace('_', '-')} score, layer {layer}")
            ax.title.set_fontsize(8)
            if row == 1:
                ax.set_xlabel("training step")
            ax.legend(fontsize=6)
    return save_figure(fig, out, "heads.png")
