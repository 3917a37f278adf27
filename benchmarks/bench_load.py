"""The walkthrough under load: many clients, mixed routes, clients that give up, a model loading meanwhile.

    .venv/bin/python benchmarks/bench_load.py [--clients 30] [--seconds 30] [--heavy-model smollm2]

Starts the app with uvicorn on a free port of 127.0.0.1 (loopback only) in this process
(``attnlab.web.serve.serve_in_thread``, one PyTorch thread as ``attnlab serve``) and runs three shapes,
each bounded in time (``--seconds``) and in requests:

1. **mixed**: ``--clients`` clients, each sending requests one after another, drawn in turn from the
   routes below; every fourth client gives up on its Why requests after ``--give-up`` seconds (it
   closes the connection, as a closed tab does).
2. **abandoned flood**: ``--clients`` clients each send ``/api/why`` on ``--heavy-model`` and hang up at
   once; a probe client meanwhile times ``/api/attention`` on ``--fast-model`` (already loaded).
3. **load**: ``--heavy-model`` is unloaded and loaded again while the probe keeps timing the fast route.

Prints, per shape and route, the number of answers, p50 and p99 latency (ms), the answers that were
not 200 (by status) and the errors (no answer at all), and the process's resident memory (RSS: the
server runs in this process) at the start, at its peak, and after every model is unloaded. The
machine may be shared: quote the figures with the CPU they were measured on.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import torch
from bench_web import percentile  # benchmarks/ is on sys.path when run as a script

from attnlab import catalog as cat
from attnlab.web.app import create_app
from attnlab.web.serve import serve_in_thread

SENTENCE = "John gave the book to Sarah because she liked it"


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Recorder:
    """Latencies, statuses and errors per (shape, route), from many threads; tracks peak RSS."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.statuses: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.peak = rss_mb()

    def add(self, shape: str, route: str, seconds: float, status: int | str) -> None:
        with self.lock:
            if status == 200:
                self.times[(shape, route)].append(seconds * 1000)
            self.statuses[(shape, route)][status] += 1
            self.peak = max(self.peak, rss_mb())

    def rows(self) -> list[dict]:
        out = []
        for key in sorted(self.statuses):
            times, statuses = self.times.get(key, []), self.statuses[key]
            out.append({"shape": key[0], "route": key[1], "answers": len(times),
                        "p50_ms": percentile(times, 0.5) if times else None,
                        "p99_ms": percentile(times, 0.99) if times else None,
                        "not_200": {str(k): v for k, v in statuses.items() if k != 200 and not isinstance(k, str)},
                        "errors": {k: v for k, v in statuses.items() if isinstance(k, str)}})
        return out


def routes(fast: str, decoder: str, why_model: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("POST", "/api/attention", {"model": fast, "text": SENTENCE}),
        ("POST", "/api/next-token", {"model": decoder, "text": "The king said to his servants"}),
        ("POST", "/api/why", {"model": why_model, "text": "The king said to his", "layer": 1, "head": 1}),
        ("POST", "/api/positions", {"model": fast, "first": "the dog bit the man", "second": "the man bit the dog"}),
        ("POST", "/api/timeline/attention", {"model": "bible-bpe", "step": 0, "layer": 1, "head": 1}),
        ("GET", "/api/models", None),
    ]


def timed(client: httpx.Client, rec: Recorder, shape: str, method: str, path: str, body: dict | None) -> None:
    start = time.perf_counter()
    try:
        status: int | str = client.request(method, path, json=body).status_code
    except httpx.TimeoutException:
        status = "gave up"
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    rec.add(shape, path, time.perf_counter() - start, status)


def mixed(base: str, rec: Recorder, clients: int, seconds: float, give_up: float, per_client: int,
          menu: list[tuple[str, str, dict | None]]) -> None:
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        impatient = i % 4 == 3
        with httpx.Client(base_url=base, timeout=seconds + 60) as patient, \
                httpx.Client(base_url=base, timeout=give_up) as hasty:
            for method, path, body in itertools.islice(itertools.cycle(menu[i % len(menu):] + menu[:i % len(menu)]),
                                                       per_client):
                if time.monotonic() > stop:
                    return
                timed(hasty if impatient and path == "/api/why" else patient, rec, "mixed", method, path, body)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def abandon(base: str, path: str, body: dict) -> None:
    """Send one complete request and hang up without waiting for the answer."""
    url = urlsplit(base)
    data = json.dumps(body).encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)


def probe(base: str, rec: Recorder, shape: str, fast: str, stop: threading.Event, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=seconds + 60) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            timed(client, rec, shape, "POST", "/api/attention", {"model": fast, "text": SENTENCE})
            time.sleep(0.2)


def flood(base: str, rec: Recorder, clients: int, seconds: float, fast: str, heavy: str) -> None:
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(base, rec, "abandoned flood", fast, stop, seconds))
    prober.start()
    body = {"model": heavy, "text": SENTENCE, "layer": 1, "head": 1}
    senders = [threading.Thread(target=abandon, args=(base, "/api/why", body)) for _ in range(clients)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    prober.join()


def load_during(base: str, rec: Recorder, seconds: float, fast: str, heavy: str) -> dict:
    httpx.delete(f"{base}/api/models/{heavy}", timeout=120)
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(base, rec, "model loading", fast, stop, seconds))
    prober.start()
    start = time.perf_counter()
    r = httpx.post(f"{base}/api/models/{heavy}/load", json={}, timeout=600)
    took = time.perf_counter() - start
    stop.set()
    prober.join()
    return {"load_status": r.status_code, "load_s": took}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=30.0, help="time bound of each shape")
    parser.add_argument("--per-client", type=int, default=6, help="requests per client in the mixed shape")
    parser.add_argument("--give-up", type=float, default=1.0, help="seconds after which impatient clients hang up")
    parser.add_argument("--fast-model", default="minilm")
    parser.add_argument("--decoder", default="bible-bpe", help="model of the next-token route in the mixed shape")
    parser.add_argument("--why-model", default="bible-bpe", help="model of the Why route in the mixed shape")
    parser.add_argument("--heavy-model", default="smollm2", help="model of the flood and of the load shape")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rec = Recorder()
    start_rss = rss_mb()
    extra: dict = {}
    app = create_app()
    with serve_in_thread(app, "127.0.0.1") as base:
        for model in (args.fast_model, args.decoder, args.heavy_model):
            httpx.post(f"{base}/api/models/{model}/load", json={}, timeout=600).raise_for_status()
        loaded_rss = rss_mb()
        menu = routes(args.fast_model, args.decoder, args.why_model)
        mixed(base, rec, args.clients, args.seconds, args.give_up, args.per_client, menu)
        flood(base, rec, args.clients, args.seconds, args.fast_model, args.heavy_model)
        extra["load"] = load_during(base, rec, args.seconds, args.fast_model, args.heavy_model)
        queue = app.state.heavy
        while queue.waiting or queue.running:  # let the flood's leftovers finish before measuring memory
            time.sleep(0.1)
        extra["heavy_queue"] = {"started": queue.started, "dropped": queue.dropped, "refused": queue.refused}
        for info in cat.catalog():
            httpx.delete(f"{base}/api/models/{info.name}", timeout=120)
        unloaded_rss = rss_mb()
    result = {"rows": rec.rows(), "rss_mb": {"start": start_rss, "models_loaded": loaded_rss, "peak": rec.peak,
                                             "after_unloading_all": unloaded_rss}, **extra,
              "clients": args.clients, "seconds": args.seconds, "threads": args.threads}
    print(f"{'shape':16s} {'route':26s} {'answers':>7s} {'p50 ms':>9s} {'p99 ms':>9s}  not 200 / errors")
    for row in result["rows"]:
        p50 = f"{row['p50_ms']:9.0f}" if row["p50_ms"] is not None else f"{'-':>9s}"
        p99 = f"{row['p99_ms']:9.0f}" if row["p99_ms"] is not None else f"{'-':>9s}"
        print(f"{row['shape']:16s} {row['route']:26s} {row['answers']:7d} {p50} {p99}  "
              f"{row['not_200'] or '-'} / {row['errors'] or '-'}")
    r = result["rss_mb"]
    print(f"RSS: start {r['start']:.0f} MB, models loaded {r['models_loaded']:.0f} MB, peak {r['peak']:.0f} MB, "
          f"after unloading every model {r['after_unloading_all']:.0f} MB")
    print(f"heavy queue: {extra['heavy_queue']}; {args.heavy_model} load while probing: {extra['load']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
