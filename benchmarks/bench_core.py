"""Our core models beside Hugging Face, same config and weights: training step and encoder inference.

    .venv/bin/python benchmarks/bench_core.py [--quick] [--bf16 auto|on|off] [--threads N]

The same as ``attnlab bench``; see ``attnlab.bench`` for what is measured and how. The machine may
be shared: run it two or three times and quote the median ratios.
"""

from __future__ import annotations

import argparse

from attnlab.bench import FULL, QUICK, format_report, run_bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (a smoke run, not the quoted figures)")
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    print(format_report(run_bench(sizes, bf16=args.bf16, threads=args.threads), sizes))


if __name__ == "__main__":
    main()
