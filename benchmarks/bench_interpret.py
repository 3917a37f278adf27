"""Latency of every attnlab.interpret tool on a 12-token input, one thread (issue 12's figures).

    .venv/bin/python benchmarks/bench_interpret.py [--models shakespeare-char,minilm,smollm2] [--repeats 3]

Goals: under 2 s per tool on the bundled decoder and on minilm, under 10 s on smollm2. Each tool
runs ``--repeats`` times after one warm-up; the median is printed. A tool a model's family does not
define (the logit lens on minilm, which has no vocabulary head; direct attributions and score
decompositions on a post-norm model) is reported as "n/a" with the reason. The machine may be
shared: quote the median of runs on an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from attnlab import interpret
from attnlab.catalog import load
from attnlab.interpret import metrics

SENTENCES = {
    "shakespeare-char": "To be, or no",  # 12 characters
    "minilm": "the cat sat on the mat because it was tired",
    "smollm2": "The capital of France is Paris, and the capital of",
}


def twelve_tokens(name: str, tokenizer) -> torch.Tensor:
    ids = tokenizer.encode(SENTENCES[name])
    ids = (ids * 12)[:12]
    return torch.tensor([ids])


def tools(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, Callable[[], object]]:
    lm = model.config.family != "encoder" or hasattr(model, "lm_head")
    if lm:
        with torch.no_grad():
            top = int(model(ids)[0, -1].argmax())
        metric = metrics.token_logprob(top)
        target: int | Callable = top
    else:
        def metric(hidden: torch.Tensor) -> torch.Tensor:
            return hidden[:, 0].norm(dim=-1)

        target, top = metric, 0
    corrupted = ids.flip(1)
    baseline = 0 if model.config.positions in ("rotary", "none") else None
    return {
        "logit_lens": lambda: interpret.logit_lens(model, ids, target=top),
        "head_effects": lambda: interpret.head_effects(model, ids, metric),
        "patch(resid)": lambda: interpret.patch(model, ids, corrupted, metric, where="resid"),
        "patch(head)": lambda: interpret.patch(model, ids, corrupted, metric, where="head"),
        "direct_logit_attribution": lambda: interpret.direct_logit_attribution(model, ids, top),
        "score_decomposition": lambda: interpret.score_decomposition(model, ids, 1, 0, 11, 3),
        "saliency(x-grad)": lambda: interpret.saliency(model, ids, target, method="input_x_gradient", baseline=baseline),
        "saliency(IG, 50)": lambda: interpret.saliency(model, ids, target, baseline=baseline),
        "detect_heads": lambda: interpret.detect_heads(model, seq_len=16, batch=4, low=4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="shakespeare-char,minilm,smollm2")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.models.split(","):
        loaded = load(name)
        model = loaded.model.eval()
        ids = twelve_tokens(name, loaded.tokenizer)
        print(f"{name} ({model.config.family}, {model.config.n_layers} layers x {model.config.n_heads} heads), "
              f"{ids.shape[1]} tokens, 1 thread")
        for tool, fn in tools(model, ids).items():
            try:
                fn()
            except ValueError as e:
                print(f"  {tool:26s}   n/a  ({str(e)[:70]})")
                continue
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            print(f"  {tool:26s} {statistics.median(times):7.3f} s")


if __name__ == "__main__":
    main()
