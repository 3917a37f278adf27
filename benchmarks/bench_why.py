"""Latency of the Why view on SmolLM2 (issue 26): the first view of a sentence and a click on another head,
before (every part exact at once, as the view computed it until the two stages) and after (the first stage:
attribution patching's estimate; then the exact stage), side by side in one run.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_why.py [--model smollm2] [--threads 2] [--repeats 1] [--clicks 5]

"before" runs the library calls the view made per sentence (the clean run, ``head_effects`` over every
head, the logit lens over every position, 50-step integrated gradients) and per click (the whole model
run with the head removed, a recording run for the focus row, the score decomposition); "after" calls
``web.why.why`` itself with ``stage="first"`` on a new sentence (cold), ``stage="first"`` on another
head of the same sentence (a click), and ``stage="exact"`` (the second request the page fires). First
views: medians of ``--repeats`` (each on a fresh sentence cache); clicks: medians of ``--clicks`` on
different heads, before and after interleaved (so a change in the machine's load hits both alike). Prints the CPU flags that matter for the figures.
Not a timed test: the machine may be shared; quote the ratios of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from attnlab import interpret
from attnlab.inspect import hook_name, run_with_cache
from attnlab.interpret import metrics
from attnlab.web import why
from attnlab.web.models import get_model

TEXT = "When Mary and John went to the store, John gave a drink to"  # 14 SmolLM2 tokens
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def before_first(loaded, x) -> None:
    model = loaded.model
    with torch.no_grad():
        clean = interpret.ablate(model, x, [])
        target = int(clean[0, -1].argmax())
        interpret.head_effects(model, x, metrics.token_logprob(target))
        interpret.logit_lens(model, x, k=why.TOP_K)
        interpret.saliency(model, x, target, baseline=0)


def before_click(loaded, x, layer: int, head: int) -> None:
    model = loaded.model
    with torch.no_grad():
        interpret.ablate(model, x, [(layer, head)])
        name = hook_name("decoder", layer, "attn.hook_weights")
        _, cache = run_with_cache(model, x, names=name, device="cpu")
        key = int(cache[name][0, head, -1].argmax())
        interpret.score_decomposition(model, x, layer, head, x.shape[1] - 1, key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--clicks", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split()
    print(f"CPU flags: {' '.join(f for f in FLAGS if f in flags) or 'none of ' + ', '.join(FLAGS)}; "
          f"{args.threads} threads; torch {torch.__version__}")
    loaded = get_model(args.model)
    x = torch.tensor([loaded.tokenizer.encode(TEXT)])
    print(f"{args.model}, {x.shape[1]} tokens: {TEXT!r}")
    rows: dict[str, list[float]] = {k: [] for k in ("before first", "before click", "after first", "after click",
                                                     "after exact")}
    ask = {"model": args.model, "text": TEXT}
    for _ in range(args.repeats):
        rows["before first"].append(seconds(lambda: before_first(loaded, x)) + seconds(lambda: before_click(loaded, x, 9, 4)))
        why._SENTENCES.clear()
        rows["after first"].append(seconds(lambda: why.why(why.WhyRequest(**ask, layer=9, head=4, stage="first"))))
    heads = [((7 * i + 3) % 30, (5 * i + 1) % 9) for i in range(args.clicks)]
    for layer, head in heads:
        rows["before click"].append(seconds(lambda: before_click(loaded, x, layer, head)))  # noqa: B023 (called at once)
        rows["after click"].append(seconds(lambda: why.why(why.WhyRequest(**ask, layer=layer, head=head, stage="first"))))  # noqa: B023
    rows["after exact"].append(seconds(lambda: why.why(why.WhyRequest(**ask, layer=3, head=1, stage="exact"))))
    for layer, head in heads[:2]:  # once the exact stage is done a click answers with the exact map at once
        rows["after click, exact kept"] = [*rows.get("after click, exact kept", []), seconds(
            lambda: why.why(why.WhyRequest(**ask, layer=layer, head=head, stage="first")))]  # noqa: B023
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{'':28s} {'before':>9s} {'after':>9s} {'after / before':>15s}")
    print(f"{'first view of a sentence':28s} {med['before first']:8.2f}s {med['after first']:8.2f}s "
          f"{med['after first'] / med['before first']:15.3f}")
    print(f"{'click on another head':28s} {med['before click']:8.2f}s {med['after click']:8.2f}s "
          f"{med['after click'] / med['before click']:15.3f}")
    print(f"{'exact stage (second request)':28s} {'-':>9s} {med['after exact']:8.2f}s")
    print(f"{'click, exact stage kept':28s} {'-':>9s} {med['after click, exact kept']:8.2f}s")
    body = why.why(why.WhyRequest(**ask, layer=3, head=1, stage="first"))
    for check in body.ledger:
        print(("ok  " if check.holds else "NO  ") + check.text)


if __name__ == "__main__":
    main()
