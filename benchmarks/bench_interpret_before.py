"""head_effects and patch on SmolLM2 (12 tokens, one thread): this tree's batched, started-at-layer
sweeps beside the one-pass-per-copy versions of an earlier commit, in the same process, interleaved.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_interpret_before.py [--before 69f2ce9] [--repeats 1]

The earlier ``ablation.py`` and ``patching.py`` are read with ``git show`` and run against this tree's
``attnlab`` (their helpers are unchanged); the two results are compared (max |difference|).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
from bench_interpret import twelve_tokens  # this folder is on the path when a benchmark runs

from attnlab import interpret
from attnlab.catalog import load
from attnlab.interpret import metrics

ROOT = Path(__file__).resolve().parents[1]


def module_at(rev: str, path: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"before_{Path(path).stem}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)  # our own code at an earlier commit
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="69f2ce9")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    old_ablation = module_at(args.before, "src/attnlab/interpret/ablation.py")
    old_patching = module_at(args.before, "src/attnlab/interpret/patching.py")
    loaded = load("smollm2")
    model = loaded.model.eval()
    ids = twelve_tokens("smollm2", loaded.tokenizer)
    with torch.no_grad():
        metric = metrics.token_logprob(int(model(ids)[0, -1].argmax()))
    corrupted = ids.flip(1)
    pairs = {
        "head_effects": (lambda m: m.head_effects(model, ids, metric).effects, old_ablation, interpret),
        "patch(resid)": (lambda m: m.patch(model, ids, corrupted, metric, where="resid").values, old_patching, interpret),
        "patch(head)": (lambda m: m.patch(model, ids, corrupted, metric, where="head").values, old_patching, interpret),
    }
    results: dict[str, torch.Tensor] = {}
    print(f"smollm2, {ids.shape[1]} tokens, 1 thread, median of {args.repeats}: before = {args.before}")
    for tool, (run, before, now) in pairs.items():
        times: dict[str, list[float]] = {"before": [], "now": []}
        for _ in range(args.repeats):  # interleaved, so that a change of the machine's load hits both
            for side, module in (("before", before), ("now", now)):
                start = time.perf_counter()
                results[side] = run(module)
                times[side].append(time.perf_counter() - start)
        diff = float((results["before"] - results["now"]).abs().max())
        t_before, t_now = statistics.median(times["before"]), statistics.median(times["now"])
        print(f"  {tool:14s} before {t_before:7.2f} s   now {t_now:7.2f} s   speed-up {t_before / t_now:5.2f}x   "
              f"max |difference| {diff:.1e}")


if __name__ == "__main__":
    main()
