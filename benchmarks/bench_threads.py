"""How many torch threads to use when the machine may be busy: 1 .. cores, idle and beside busy processes.

    .venv/bin/python benchmarks/bench_threads.py [--busy 1] [--repeats 5]

Times the forward pass of a GPT-2-shaped decoder (6 layers, width 384, batch 8 x 128 tokens, no
gradient) with each thread count, first on the idle machine, then while ``--busy`` other processes
spin on a core each (what a second job, a browser or a test run does to a shared machine). OpenMP
workers that wait on a descheduled sibling make the parallel case collapse; the figure shows whether
``attnlab.device.set_threads``'s automatic choice (cores minus one, fewer when the load average says
other processes are busy) holds up. Prints one JSON line: median milliseconds per pass.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time

import torch

from attnlab.device import cpu_description
from attnlab.models import TransformerConfig, build_model


def _spin(stop: mp.Event) -> None:  # type: ignore[valid-type]
    x = 0
    while not stop.is_set():
        x += 1


def _time(model: torch.nn.Module, ids: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        model(ids)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--busy", type=int, default=1, help="busy processes in the second round")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    config = TransformerConfig(family="decoder", vocab_size=65, d_model=384, n_heads=6, n_layers=6, d_ff=1536,
                               max_len=128)
    model = build_model(config).eval()
    ids = torch.randint(0, 65, (8, 128), generator=torch.Generator().manual_seed(0))
    result: dict[str, object] = {"cpu": cpu_description(), "cores": cores, "torch": torch.__version__,
                                 "load_average_start": os.getloadavg()[0]}
    for label, busy in (("idle", 0), (f"{args.busy}_busy", args.busy)):
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
        for p in spinners:
            p.start()
        time.sleep(0.5 if busy else 0)
        row = {}
        for threads in range(1, cores + 1):
            torch.set_num_threads(threads)
            row[f"{threads}_threads_ms"] = round(_time(model, ids, args.repeats), 1)
        stop.set()
        for p in spinners:
            p.join()
        result[label] = row
    print(json.dumps(result))


if __name__ == "__main__":
    main()
