"""Peak memory of BPE tokenizer training on a corpus that is one long line of ever-new words.

    .venv/bin/python benchmarks/bench_bpe_memory.py [--mb 50] [--vocab 1024]

Writes a single-line UTF-8 file of ``--mb`` megabytes of random lower-case words (1-10 letters,
seeded: nearly every word is new, the worst case for a BPE trainer, whose memory grows with the
distinct words it counts; ``--zipf N``: N words with Zipf frequencies, like ordinary text), then trains ``attnlab``'s byte-level BPE on it in a fresh process, exactly
as ``attnlab train --tokenizer bpe`` reads a corpus (``iter_text`` -> ``BPETokenizer.train``), and
reports that process's peak resident memory (``ru_maxrss``) before and after training. Prints one
JSON line: ``{"mb": .., "vocab": .., "rss_before_mb": .., "peak_mb": .., "grew_mb": .., "seconds": ..}``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from attnlab.tokenizers import BPETokenizer
from attnlab.train.data import iter_text
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
tok = BPETokenizer.train(iter_text([Path(sys.argv[1])]), vocab_size=int(sys.argv[2]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rss_before_mb": round(before / 1024, 1), "peak_mb": round(peak / 1024, 1),
                  "grew_mb": round((peak - before) / 1024, 1), "seconds": round(time.perf_counter() - start, 1),
                  "learnt": tok.vocab_size}))
"""


def write_random_line(path: Path, n_bytes: int, seed: int = 0, zipf: int = 0) -> Path:
    """``n_bytes`` (about) of random words separated by spaces, with no newline: one line. ``zipf=N``:
    drawn from N fixed words with Zipf frequencies (1/rank), like ordinary text; 0: every word new."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"

    def word() -> str:
        return "".join(rng.choices(letters, k=rng.randint(1, 10)))

    vocab = [word() for _ in range(zipf)]
    weights = [1 / rank for rank in range(1, zipf + 1)]
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < n_bytes:
            words = rng.choices(vocab, weights=weights, k=20_000) if zipf else [word() for _ in range(20_000)]
            chunk = " ".join(words) + " "
            f.write(chunk)
            written += len(chunk)
    return path


def measure(path: Path, vocab: int = 1024) -> dict:
    """Train in a fresh process on ``path``; its peak resident memory before and after training (MB)."""
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(vocab)], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="corpus size in megabytes (10^6 bytes)")
    parser.add_argument("--vocab", type=int, default=1024, help="BPE vocabulary size")
    parser.add_argument("--zipf", type=int, default=0, help="draw from N words with Zipf frequencies (0: all new)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_random_line(Path(tmp) / "one-line.txt", int(args.mb * 1e6), zipf=args.zipf)
        print(json.dumps({"mb": args.mb, "vocab": args.vocab, "zipf": args.zipf, **measure(path, args.vocab)}))


if __name__ == "__main__":
    main()
