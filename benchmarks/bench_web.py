"""Walkthrough latency: the attention route on the pretrained encoder, and page load time in Chromium.

    .venv/bin/python benchmarks/bench_web.py [--model minilm] [--requests 50] [--loads 10]

Starts the app with uvicorn on a free 127.0.0.1 port in this process, with ``--threads`` PyTorch
threads (default 1, as ``attnlab serve``). The attention route is called with a sentence that is exactly 12 tokens for
the model ("John gave the book to Sarah because she liked it" is [CLS] + 10 words + [SEP] for
MiniLM), after ``--warmup`` calls that load the model; each request is timed end to end over HTTP
(JSON of all 6 layers x 12 heads x 12 x 12 weights, head roles). Page load is navigation to
``body[data-ready=true]`` (modules loaded, model list and diagram fetched and drawn) in a fresh
browser context each time, with Debian's Chromium. Sequential requests; the machine is shared, so
quote medians.
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
import torch

from attnlab.web.app import create_app
from attnlab.web.serve import serve_in_thread

SENTENCE = "John gave the book to Sarah because she liked it"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def attention_latency(base: str, model: str, n: int, warmup: int) -> dict:
    with httpx.Client(base_url=base, timeout=120) as client:
        body = {"model": model, "text": SENTENCE}
        first = client.post("/api/attention", json=body)
        first.raise_for_status()
        n_tokens = len(first.json()["tokens"])
        for _ in range(warmup - 1):
            client.post("/api/attention", json=body).raise_for_status()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            r = client.post("/api/attention", json=body)
            times.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
        size = len(r.content)
    return {"model": model, "tokens": n_tokens, "requests": n, "p50_ms": percentile(times, 0.5),
            "p95_ms": percentile(times, 0.95), "response_kb": size / 1024}


def page_load(base: str, n: int) -> dict:
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        for _ in range(n + 1):
            context = browser.new_context()
            page = context.new_page()
            t = time.perf_counter()
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready=true]")
            times.append((time.perf_counter() - t) * 1000)
            context.close()
        browser.close()
    times = times[1:]  # the first load also starts the browser's renderer
    return {"loads": n, "p50_ms": percentile(times, 0.5), "p95_ms": percentile(times, 0.95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as `attnlab serve --threads` (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with serve_in_thread(create_app()) as base:
        result = {"attention": attention_latency(base, args.model, args.requests, args.warmup),
                  "page_load": page_load(base, args.loads)}
    a, pl = result["attention"], result["page_load"]
    print(f"attention route, {a['model']}, {a['tokens']} tokens, {a['requests']} sequential requests: "
          f"p50 {a['p50_ms']:.1f} ms, p95 {a['p95_ms']:.1f} ms ({a['response_kb']:.0f} KB JSON)")
    print(f"page load to ready ({pl['loads']} fresh contexts): p50 {pl['p50_ms']:.0f} ms, p95 {pl['p95_ms']:.0f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
