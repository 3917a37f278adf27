"""What every experiment shares: modes, seeding, timing, fitting, result files.

Experiments need only a few hundred optimizer steps on toy tasks: each calls ``attnlab.train.step.train_step``
(the optimizer step the web demo uses too) in a short loop, with no checkpoints, schedules or
resumption (that is ``attnlab.train``'s job).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from attnlab.models.mode import eval_mode
from attnlab.tokenizers import CharTokenizer
from attnlab.train.data import BlockSampler

Mode = Literal["tiny", "quick", "full"]
MODES: tuple[str, ...] = ("tiny", "quick", "full")
RESULTS_FILE = "results.json"


def check_mode(mode: str) -> Mode:
    """Reject an unknown mode with a message that lists the known ones."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    return mode  # type: ignore[return-value]


def pick(mode: Mode, tiny: Any, quick: Any, full: Any) -> Any:
    """The setting of the given mode (reads like a three-column table in each experiment)."""
    return {"tiny": tiny, "quick": quick, "full": full}[mode]


def seed_everything(seed: int) -> None:
    """Seed Python and PyTorch so that a run repeats exactly on the same CPU and thread count."""
    random.seed(seed)
    torch.manual_seed(seed)


def machine_info() -> dict[str, Any]:
    """Where the numbers came from; timings mean little without it."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones.

    The median, not the mean: on a shared machine a single slow outlier should not move the answer.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loglog_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares line through ``(log x, log y)``: returns ``(slope, intercept)``.

    The slope is the growth exponent: y ~ x^slope. Needs two or more positive points.
    """
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pts) < 2:
        raise ValueError("a log-log fit needs at least two positive points")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        raise ValueError("a log-log fit needs at least two distinct x values")
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return slope, my - slope * mx


def count_params(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once (tied embeddings)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            total += p.numel()
    return total


def progress(iterable: Iterable[Any] | None, *, total: int | None = None, desc: str = "", enabled: bool = True) -> Any:
    """A tqdm bar on stderr (silent when ``enabled`` is false, e.g. in tests)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.8) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)


def save_figure(fig: Any, out: Path, name: str) -> str:
    """Write ``fig`` as ``out/name`` (PNG, 110 dpi: small enough to commit) and close it."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def write_results(out: Path, result: dict[str, Any]) -> Path:
    """Write ``out/results.json`` (the index the web app and ``list_results`` read)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return path


def finish(name: str, title: str, mode: Mode, seed: int, started: float, out: Path, *, data: dict[str, Any],
           summary: list[str], figures: list[str], notes: list[str] | None = None,
           corpus_file: str | Path | None = None) -> dict[str, Any]:
    """Assemble the common result record, write it and return it.

    ``command`` repeats the run: timings and (through floating-point reduction order) trained
    numbers depend on the thread count, so it is always written out.
    """
    command = f"attnlab experiment {name}" + {"tiny": " (tiny mode, tests only)", "quick": " --quick", "full": ""}[mode]
    command += f" --threads {torch.get_num_threads()}"
    if corpus_file is not None:
        command += f" --data {corpus_file}"
    if seed != 0:
        command += f" --seed {seed}"
    result = {
        "experiment": name,
        "title": title,
        "mode": mode,
        "seed": seed,
        "command": command,
        "machine": machine_info(),
        "elapsed_s": round(time.perf_counter() - started, 2),
        "summary": summary,
        "notes": notes or [],
        "figures": figures,
        "data": data,
    }
    write_results(out, result)
    return result


def default_out(name: str) -> Path:
    return Path("runs") / "experiments" / name


# --- character corpora -------------------------------------------------------------------------

_SUBJECTS = ("the king", "a fool", "my lord", "the queen", "her brother", "this man", "the good duke", "our friend")
_VERBS = ("speaks to", "loves", "fears", "betrays", "follows", "waits for", "forgives", "remembers")
_OBJECTS = ("the crown", "his sword", "the night", "a letter", "the old house", "her mother", "the sea", "my honour")
_ENDINGS = (".", "!", "?", ", and so it is.", "; what then?")


def synthetic_text(n_chars: int, seed: int = 0) -> str:
    """A deterministic toy corpus of simple sentences (subject, verb, object), ``n_chars`` long.

    It has the structure that makes heads form (repeated words, spaces, punctuation) and needs no
    file, so tests and a bare ``attnlab experiment`` run everywhere. Pass ``--data`` for real text.
    """
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_chars:
        line = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_ENDINGS)}"
        line = line[0].upper() + line[1:] + ("\n" if rng.random() < 0.3 else " ")
        parts.append(line)
        size += len(line)
    return "".join(parts)[:n_chars]


@dataclass
class CharCorpus:
    """A text as character ids (``attnlab.train``'s ``CharTokenizer``), split 90/10 into train and
    validation; batches come from ``attnlab.train``'s ``BlockSampler``, as in ``attnlab train``."""

    source: str
    tokenizer: CharTokenizer
    train: np.ndarray
    val: np.ndarray

    @classmethod
    def from_text(cls, text: str, source: str) -> CharCorpus:
        if len(text) < 200:
            raise ValueError(f"corpus {source!r} is too short ({len(text)} characters); give at least 200")
        tokenizer = CharTokenizer.train([text])
        ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
        split = int(0.9 * len(ids))
        return cls(source, tokenizer, ids[:split], ids[split:])

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def sampler(self, split: str, batch: int, block: int, seed: int) -> BlockSampler:
        """Seeded random windows ``(batch, block)`` of ``split`` and their next-character targets."""
        return BlockSampler(self.train if split == "train" else self.val, block, batch, seed=seed, split=split)


def load_corpus(data: str | Path | None, n_synthetic: int, seed: int = 0) -> CharCorpus:
    """The file at ``data`` (UTF-8), or the synthetic corpus when none is given."""
    if data is None:
        return CharCorpus.from_text(synthetic_text(n_synthetic, seed), "synthetic")
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {str(path)!r} does not exist")
    return CharCorpus.from_text(path.read_text(encoding="utf-8"), path.name)


@torch.no_grad()
def eval_lm_loss(model: nn.Module, corpus: CharCorpus, block: int, batches: int, batch: int, seed: int) -> float:
    """Mean next-character cross-entropy on fixed validation windows (same windows every call)."""
    val = corpus.sampler("val", batch, block, seed + 20_000)
    losses = []
    with eval_mode(model):
        for _ in range(batches):
            x, y = val.next()
            logits = model(x)
            losses.append(float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))))
    return sum(losses) / len(losses)
