"""Train ``shakespeare-char`` and report validation loss and wall time (a benchmark, not a test).

    .venv/bin/python benchmarks/bench_train.py --data /path/to/tinyshakespeare.txt --iters 2000 [--precision bf16]

Validation is on the held-out last 10% of the text (nanoGPT's split), estimated on ``--eval-iters``
fixed batches. Wall time covers the whole ``train`` call: data preparation, training, evaluation and
checkpoints. The machine is shared, so quote medians of several runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from attnlab.train.loop import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-interval", type=int, default=500)
    ap.add_argument("--eval-iters", type=int, default=200)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or tempfile.mkdtemp(prefix="bench-train-")
    t0 = time.perf_counter()
    result = train(TrainConfig(
        data=args.data, out=out, iters=args.iters, lr=args.lr, min_lr=args.min_lr, warmup=args.warmup,
        eval_interval=args.eval_interval, eval_iters=args.eval_iters, precision=args.precision, compile=args.compile,
        progress=False,
    ))
    wall = time.perf_counter() - t0
    print(json.dumps({
        "iters": result.step, "val_loss": result.val_losses[result.step], "best_val": result.best_val,
        "wall_s": round(wall, 1), "precision": args.precision, "compile": args.compile, "lr": args.lr,
        "threads": torch.get_num_threads(), "val_curve": result.val_losses, "out": out,
    }))


if __name__ == "__main__":
    main()
