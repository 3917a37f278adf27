"""Time to quality against nanoGPT: its own ``train.py``, then attnlab until it reaches the same validation loss.

    nice -n 5 .venv/bin/python benchmarks/bench_vs_nanogpt.py --nanogpt DIR --data tinyshakespeare.txt \\
        [--threads 2] [--seed 1337] [--iters 1000] [--batch-size 12] [--lr 3e-3] [--min-lr 3e-4] [--warmup 50] \\
        [--eval-interval 250] [--eval-iters 20] [--precision auto] [--optimizer adamw] [--compile] \\
        [--set positions=rotary --set activation=relu] [--smoke]

1. nanoGPT (``--nanogpt DIR``: a checkout with ``train.py``, ``model.py``, ``configurator.py``,
   ``config/train_shakespeare_char.py`` and ``data/shakespeare_char/prepare.py``; never part of
   attnlab) is copied to a temporary directory, ``--data`` is copied in as its ``input.txt``, its
   ``prepare.py`` runs, then its ``train.py`` on the Shakespeare-char CPU recipe: 4 layers, 4 heads,
   width 128, block 64, batch 12, ``--nanogpt-iters`` (2,000) iterations with the cosine schedule to
   the end, dropout 0, no compilation, evaluations every 250 iterations on 20 batches. Its wall time
   is the two processes' (start-up, data preparation, training, evaluations, checkpoints); its
   validation loss is the one it prints at the last iteration.
2. attnlab trains the same model shape (preset ``shakespeare-char``: pre-norm, GELU, no biases, tied
   embeddings, learned positions) with ``attnlab.train`` (``TrainConfig``/``train``) on the same text
   and the same split (the last 10% for validation) in a child process, with this recipe's levers:
   a higher peak learning rate and a shorter cosine run (``--iters``, ``--lr``, ``--min-lr``,
   ``--warmup``), the optimizer (``--optimizer adamw | muon``, attnlab's ``--optimizer``: Muon for the
   blocks' matrices, AdamW for the rest, on the same ``--lr``), fewer evaluations (``--eval-interval``;
   one always runs at the end), precision (``--precision auto`` takes bf16 only where
   ``attnlab.device.choose_precision`` measures that this model's own training step runs faster in
   it: a fast bf16 matmul, as on CPUs with AVX-512 BF16 or AMX, is not enough at this size), ``--compile``, and the architecture within the same shape
   (``--set FIELD=VALUE``, repeatable: a ``TransformerConfig`` field replaced in the preset, e.g.
   ``positions=rotary`` or ``activation=relu``; the layers, heads, width, feed-forward width and block
   stay nanoGPT's, and the JSON line gives both models' parameter counts).
   Its wall time runs from starting the child process to the end of the first evaluation whose
   loss is at or below nanoGPT's (the run up to that point is the same as one that stops there).

Both use ``--threads`` threads (``OMP_NUM_THREADS`` for nanoGPT's process, ``torch.set_num_threads``
for attnlab's). The validation losses are estimates on ``--eval-iters`` random batches (nanoGPT:
20), so they carry noise of about +-0.02; compare several seeds before calling a record.

The LAST line printed is a JSON object: ``nanogpt_wall_s``, ``nanogpt_val``, ``attnlab_wall_s``,
``attnlab_val``, ``ratio`` (attnlab / nanoGPT wall time), ``reached``, the command, seed, CPU flags,
threads, load average, and each evaluation's losses from both. ``--smoke`` runs a few iterations of
each (to check the script, not to measure anything). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NANOGPT_FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py",
                 "data/shakespeare_char/prepare.py")
PARAMS_LINE = re.compile(r"^number of parameters: ([0-9.]+)M", re.M)  # nanoGPT's count, position embeddings excluded
STEP_LINE = re.compile(r"^step (\d+): train loss ([0-9.]+), val loss ([0-9.]+)")




def model_field(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` of ``--set``, read and checked as ``attnlab train --set`` does, against the
    shakespeare-char preset, before nanoGPT's two minutes run."""
    from attnlab.train.config import check_model_overrides, parse_model_override

    try:
        name, value = parse_model_override(text)
        check_model_overrides("shakespeare-char", {name: value})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, value


def nanogpt_command(iters: int, eval_interval: int) -> list[str]:
    """nanoGPT's Shakespeare-char CPU recipe (its ``config/train_shakespeare_char.py`` with the CPU overrides)."""
    return ["train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
            "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
            f"--max_iters={iters}", f"--lr_decay_iters={iters}", "--dropout=0.0", f"--eval_interval={eval_interval}"]


def run_nanogpt(checkout: Path, data: Path, iters: int, eval_interval: int, threads: int) -> dict:
    missing = [f for f in NANOGPT_FILES if not (checkout / f).is_file()]
    if missing:
        raise SystemExit(f"--nanogpt {checkout}: not a nanoGPT checkout (missing {', '.join(missing)})")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="bench-nanogpt-") as tmp:
        work = Path(tmp) / "nanoGPT"
        shutil.copytree(checkout, work, ignore=shutil.ignore_patterns(".git", "out-*", "*.bin", "*.pkl"))
        for path in work.rglob("*"):  # the source may be read-only; prepare.py and train.py write here
            path.chmod(path.stat().st_mode | 0o200)
        work.chmod(work.stat().st_mode | 0o200)
        shutil.copyfile(data, work / "data/shakespeare_char/input.txt")
        command = nanogpt_command(iters, eval_interval)
        start = time.perf_counter()
        subprocess.run([sys.executable, "prepare.py"], cwd=work / "data/shakespeare_char", env=env, check=True,
                       capture_output=True, text=True)
        proc = subprocess.run([sys.executable, *command, f"--out_dir={work / 'out'}"], cwd=work, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"nanoGPT's train.py failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    evals = {int(m[1]): {"train": float(m[2]), "val": float(m[3])}
             for m in (STEP_LINE.match(line) for line in proc.stdout.splitlines()) if m}
    if not evals:
        raise SystemExit(f"no 'step N: train loss .., val loss ..' lines in nanoGPT's output:\n{proc.stdout[-2000:]}")
    last = max(evals)
    params = PARAMS_LINE.search(proc.stdout)
    return {"wall_s": wall, "val": evals[last]["val"], "evals": evals, "command": " ".join(["python", *command]),
            "parameters": float(params[1]) * 1e6 if params else None}


def attnlab_child(args: argparse.Namespace) -> None:
    """Runs in its own process: train, then print per-evaluation losses with their wall-clock times."""
    import torch

    from attnlab.train.loop import TrainConfig, train
    from attnlab.weights.checkpoint import load_checkpoint, load_training_state

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-attnlab-") as out:
        # auto is decided by the training run itself: it times this model's own step in fp32 and bf16
        result = train(TrainConfig(
            data=str(args.data), out=out, iters=args.iters, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr, warmup=args.warmup,
            eval_interval=args.eval_interval, eval_iters=args.eval_iters, precision=args.precision,
            optimizer=args.optimizer, compile=args.compile, seed=args.seed, progress=False,
            model_overrides=dict(args.set),
        ))
        end = time.time()
        times = {int(row["step"]): float(row["time"]) for row in map(json.loads, (Path(out) / "metrics.jsonl")
                 .read_text().splitlines()) if "val_loss" in row}
        parameters = sum(p.numel() for p in load_checkpoint(Path(out) / "last").model.parameters())
        precision = load_training_state(Path(out) / "last").info["precision"]
    print(json.dumps({
        "precision": precision["name"], "precision_why": precision["reason"], "parameters": parameters,
        "evals": {step: {"val": val, "at_epoch_s": end - (result.seconds - times[step])}
                  for step, val in result.val_losses.items()},
    }))


def run_attnlab(args: argparse.Namespace, target: float) -> dict:
    child = [sys.executable, __file__, "--attnlab-child", "--data", str(args.data), "--threads", str(args.threads),
             "--seed", str(args.seed), "--iters", str(args.iters), "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--min-lr", str(args.min_lr),
             "--warmup", str(args.warmup), "--eval-interval", str(args.eval_interval), "--eval-iters",
             str(args.eval_iters), "--precision", args.precision, "--optimizer", args.optimizer,
             *(["--compile"] if args.compile else []), *(a for k, v in args.set for a in ("--set", f"{k}={v}"))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    started = time.time()
    proc = subprocess.run(child, env=env, capture_output=True, text=True)
    total = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"attnlab's run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    evals = {int(k): {"val": v["val"], "wall_s": v["at_epoch_s"] - started} for k, v in report["evals"].items()}
    hit = next((step for step in sorted(evals) if evals[step]["val"] <= target), None)
    step = hit if hit is not None else max(evals)
    return {"wall_s": evals[step]["wall_s"] if hit is not None else total, "val": evals[step]["val"],
            "step": step, "reached": hit is not None, "total_wall_s": total, "evals": evals,
            "precision": report["precision"], "precision_why": report["precision_why"], "parameters": report["parameters"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout (read only; copied to a temporary directory)")
    ap.add_argument("--data", type=Path, required=True, help="tinyshakespeare.txt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1337, help="attnlab's seed (nanoGPT's train.py fixes its own: 1337)")
    ap.add_argument("--nanogpt-iters", type=int, default=2000)
    ap.add_argument("--iters", type=int, default=1000, help="attnlab's steps (its cosine schedule ends here)")
    ap.add_argument("--batch-size", type=int, default=12, help="attnlab's sequences per step (nanoGPT's: 12); the "
                    "model shape stays nanoGPT's")
    ap.add_argument("--lr", type=float, default=3e-3, help="attnlab's peak learning rate (nanoGPT's: 1e-3)")
    ap.add_argument("--min-lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--eval-interval", type=int, default=250, help="attnlab evaluates every N steps and at the end")
    ap.add_argument("--eval-iters", type=int, default=20, help="batches per attnlab evaluation (nanoGPT's: 20)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "muon"],
                    help="attnlab's --optimizer (muon: Muon for the blocks' matrices, AdamW for the rest)")
    ap.add_argument("--compile", action="store_true", help="torch.compile attnlab's training step")
    ap.add_argument("--set", action="append", default=[], type=model_field, metavar="FIELD=VALUE",
                    help="replace a field of attnlab's model config (repeatable), e.g. positions=rotary, activation=relu")
    ap.add_argument("--smoke", action="store_true", help="20 iterations each: checks the script, measures nothing")
    ap.add_argument("--attnlab-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        args.nanogpt_iters, args.iters, args.eval_interval, args.warmup = 20, 20, 10, 5
    if not args.data.is_file():
        raise SystemExit(f"--data {args.data}: no such file")
    if args.attnlab_child:
        attnlab_child(args)
        return
    if args.nanogpt is None:
        raise SystemExit("--nanogpt DIR is required (a nanoGPT checkout)")
    from attnlab.device import cpu_flags  # reads /proc/cpuinfo; torch loads with it

    load = os.getloadavg()[0]
    print(f"load average {load:.2f} at the start; {os.cpu_count()} CPUs; {args.threads} thread(s)")
    nano = run_nanogpt(args.nanogpt, args.data, args.nanogpt_iters, 10 if args.smoke else 250, args.threads)
    print(f"nanoGPT: val {nano['val']:.4f} after {args.nanogpt_iters} iterations in {nano['wall_s']:.1f} s")
    ours = run_attnlab(args, nano["val"])
    print(f"attnlab ({args.optimizer}, {ours['precision']}: {ours['precision_why']}): val {ours['val']:.4f} at step "
          f"{ours['step']} after {ours['wall_s']:.1f} s ({'reached' if ours['reached'] else 'did NOT reach'} nanoGPT's "
          f"{nano['val']:.4f}; whole run {ours['total_wall_s']:.1f} s)")
    print(json.dumps({
        "nanogpt_wall_s": round(nano["wall_s"], 3), "nanogpt_val": nano["val"],
        "attnlab_wall_s": round(ours["wall_s"], 3), "attnlab_val": ours["val"],
        "ratio": round(ours["wall_s"] / nano["wall_s"], 4), "reached": ours["reached"], "attnlab_step": ours["step"],
        "attnlab_total_wall_s": round(ours["total_wall_s"], 2), "attnlab_precision": ours["precision"],
        "attnlab_optimizer": args.optimizer, "attnlab_model_overrides": dict(args.set),
        "attnlab_parameters": ours["parameters"], "nanogpt_parameters_without_positions": nano["parameters"],
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), "nanogpt_command": nano["command"],
        "seed": args.seed, "nanogpt_seed": 1337, "threads": args.threads, "cpu_flags": cpu_flags(),
        "load_average_start": load, "load_average_end": os.getloadavg()[0], "smoke": args.smoke,
        "nanogpt_evals": nano["evals"], "attnlab_evals": ours["evals"],
    }))


if __name__ == "__main__":
    main()
